package engine

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"hash"
)

// Reporter collects one detector's occurrences during one Classify call. It is the only
// place that turns matched values into masks and keyed fingerprints, so raw values cannot
// leak through a detector's own formatting.
type Reporter struct {
	detector string
	cfg      *Config
	// own is the half-open range of offsets this call reports (streaming windows overlap,
	// and an occurrence belongs to exactly one of them); nil for all.
	own     *Span
	tuning  tuning
	mac     hash.Hash
	buckets []bucket
	sum     [sha256.Size]byte
}

// bucket aggregates the occurrences of one class.
type bucket struct {
	class    DataClass
	count    int
	conf     int
	evidence string
	offsets  []int64
	masked   []string
	fps      []string
}

// Identifier reports a secret identifier (SSN, MRN...) at byte offset off. raw is the value
// as it appears in the content and is only used to build the shape-preserving mask;
// normalised is what gets fingerprinted (e.g. digits only). Neither is retained. evidence
// must not contain the value.
func (r *Reporter) Identifier(class DataClass, confidence int, off int, raw, normalised []byte, evidence string) {
	b := r.bucket(class, confidence, off, evidence)
	if b == nil || len(b.masked) >= r.cfg.MaxSamples {
		return
	}
	r.sample(b, mask(raw), normalised)
}

// Label reports a public marker (a security-label code, a notice version) at byte offset
// off. label is shown as-is; normalised (e.g. "system|code") is fingerprinted so the
// collector can group occurrences without parsing evidence strings.
func (r *Reporter) Label(class DataClass, confidence int, off int, label, normalised, evidence string) {
	b := r.bucket(class, confidence, off, evidence)
	if b == nil || len(b.masked) >= r.cfg.MaxSamples {
		return
	}
	r.sample(b, label, []byte(normalised))
}

func (r *Reporter) bucket(class DataClass, confidence, off int, evidence string) *bucket {
	if class == ClassUnspecified {
		return nil
	}
	if r.own != nil && off >= 0 && (off < r.own.Start || off >= r.own.End) {
		return nil
	}
	confidence = max(0, min(100, confidence))
	if confidence < r.tuning.min {
		return nil
	}
	var b *bucket
	for i := range r.buckets {
		if r.buckets[i].class == class {
			b = &r.buckets[i]
			break
		}
	}
	if b == nil {
		r.buckets = append(r.buckets, bucket{class: class, conf: -1})
		b = &r.buckets[len(r.buckets)-1]
	}
	b.count++
	if confidence > b.conf {
		b.conf = confidence
		b.evidence = evidence
	}
	if len(b.offsets) < r.cfg.MaxOffsets && off >= 0 {
		b.offsets = append(b.offsets, int64(off))
	}
	return b
}

// sample adds a masked sample unless its fingerprint is already sampled, so a value repeated
// a thousand times yields Count 1000 but one sample.
func (r *Reporter) sample(b *bucket, masked string, normalised []byte) {
	if r.mac == nil {
		r.mac = hmac.New(sha256.New, r.cfg.FingerprintKey)
	}
	r.mac.Reset()
	r.mac.Write(normalised)
	fp := hex.EncodeToString(r.mac.Sum(r.sum[:0]))
	for _, f := range b.fps {
		if f == fp {
			return
		}
	}
	b.masked = append(b.masked, masked)
	b.fps = append(b.fps, fp)
}

func (r *Reporter) appendMatches(out []Match) []Match {
	for _, b := range r.buckets {
		out = append(out, Match{
			Detector:     r.detector,
			Class:        b.class,
			Confidence:   b.conf,
			Count:        b.count,
			Offsets:      b.offsets,
			Masked:       b.masked,
			Fingerprints: b.fps,
			Evidence:     b.evidence,
			Version:      r.tuning.version,
		})
	}
	return out
}

// mask keeps the last four significant characters (ASCII letters and digits) of raw and
// stars the others, leaving delimiters in place: "123-45-6789" becomes "***-**-6789".
// Non-ASCII and control bytes become '?' so a mask is always printable ASCII.
func mask(raw []byte) string {
	sig := 0
	for _, c := range raw {
		if isAlnum(c) {
			sig++
		}
	}
	out := make([]byte, len(raw))
	seen := 0
	for i, c := range raw {
		switch {
		case isAlnum(c):
			seen++
			if sig-seen < 4 {
				out[i] = c
			} else {
				out[i] = '*'
			}
		case c >= 0x20 && c < 0x7f:
			out[i] = c
		default:
			out[i] = '?'
		}
	}
	return string(out)
}

func isAlnum(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}
