// Package engine is Ward's content-classification core: one cheap pass over the bytes finds
// anchors (case-insensitive literals and digit runs) for every detector at once, then each
// detector validates only around its own anchors and reports through a Reporter, which is the
// single place where matched values are masked and fingerprinted. Raw matched values never
// leave a detector call.
package engine

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
)

// DataClass is the kind of regulated data a match is about. The values mirror
// ward.v1.DataClass so the event stage converts with a plain cast, while this package stays
// free of transport types.
type DataClass int

const (
	// ClassUnspecified is never reported; it exists so the zero value is not a real class.
	ClassUnspecified DataClass = 0
	// Part2 is 42 CFR Part 2 substance-use-disorder records (ward.v1 DATA_CLASS_PART2).
	Part2 DataClass = 1
	// PHI is HIPAA protected health information (ward.v1 DATA_CLASS_PHI).
	PHI DataClass = 2
)

// String names the class for logs and test failures.
func (c DataClass) String() string {
	switch c {
	case Part2:
		return "Part2"
	case PHI:
		return "PHI"
	case ClassUnspecified:
		return "Unspecified"
	}
	return fmt.Sprintf("DataClass(%d)", int(c))
}

// Match is what one detector found in one piece of content, aggregated per (detector, class).
// It carries masks, keyed fingerprints and positions only, so it can be logged, spooled and
// shipped without re-exposing the data it describes.
type Match struct {
	// Detector names the detector, e.g. "part2.fhir-label" or "phi.ssn".
	Detector string
	// Class is the regulated class the occurrences belong to.
	Class DataClass
	// Confidence is the highest occurrence confidence, 0-100.
	Confidence int
	// Count is the number of occurrences, including those beyond the sample bounds.
	Count int
	// Offsets are byte offsets into the content of the first occurrences (Config.MaxOffsets).
	Offsets []int64
	// Masked are distinct masked samples (Config.MaxSamples), e.g. "***-**-6789" or a label code.
	Masked []string
	// Fingerprints are hex HMAC-SHA256(Config.FingerprintKey, normalised value), one per sample.
	Fingerprints []string
	// Evidence explains the strongest occurrence without quoting secret values.
	Evidence string
	// Version is the detector definition's version (0 for detectors without one), so a
	// finding can be tied to the rules that produced it.
	Version int `json:",omitempty"`
}

// Config bounds what the engine keeps and keys its fingerprints. It is read once at New.
type Config struct {
	// FingerprintKey is the tenant HMAC key; without it fingerprints of small value spaces
	// (SSNs are 10^9) could be reversed by brute force, so New refuses short keys.
	FingerprintKey []byte
	// MaxSamples bounds masked samples and fingerprints per match (default 5).
	MaxSamples int
	// MaxOffsets bounds offsets per match (default 16).
	MaxOffsets int
}

// MinKeyLen is the shortest fingerprint key New accepts (128 bits).
const MinKeyLen = 16

// maxHitsPerDetector bounds anchor hits kept per detector per call so adversarial content
// (a file of nothing but anchors) cannot make the scan allocate without limit.
const maxHitsPerDetector = 1 << 16

// maxDigitRun is the longest digit run recorded; identifiers are shorter, and longer runs
// only matter as boundaries, which detectors check against the content itself.
const maxDigitRun = 32

// Interest declares what a detector wants the shared pass to find for it.
type Interest struct {
	// Literals are ASCII-case-insensitive byte strings; they are a prefilter, so a detector
	// still validates everything it is handed.
	Literals []string
	// Exact are case-sensitive literals (XML element names, code-system URIs, ICD codes);
	// their hits carry Literal = len(Literals) + index. Exact literals are cheaper: only one
	// case of their rarest byte is swept.
	Exact []string
	// DigitRuns asks for the maximal runs of MinDigitRun to 32 ASCII digits. Shorter digit
	// groups (an SSN's area and group) are for the detector to read around a run.
	DigitRuns bool
	// Confirm, when set, is asked about every literal hit before it is recorded (literal
	// indexes Literals then Exact). It lets a detector with a short, common anchor ("42" of
	// "42 CFR") reject most hits in place instead of growing its hit list; it must be cheap,
	// look only near off, and be safe for concurrent use.
	Confirm func(content []byte, off, literal int) bool
	// Always runs the detector on every content, anchors or not: for detectors that judge
	// the whole text (document fingerprints). It costs a full pass of the detector's own,
	// so built-in anchor-driven detectors never set it.
	Always bool
}

// Hit is one occurrence of one of a detector's literals.
type Hit struct {
	// Literal indexes the detector's Interest.Literals.
	Literal int
	// Off is the byte offset of the literal's first byte.
	Off int
}

// Span is a half-open byte range [Start, End) of the content.
type Span struct{ Start, End int }

// Scan is the input of one detector call: the content and the anchors found in it.
// Everything in it is only valid during the call.
type Scan struct {
	// Content is the whole classified content; detectors must not retain or modify it.
	Content []byte
	// Hits are the detector's literal hits in offset order (bounded; see Truncated).
	Hits []Hit
	// DigitRuns are the maximal digit runs in offset order, when the detector asked for them;
	// the slice is shared between detectors and must not be modified.
	DigitRuns []Span
	// Truncated is set when more hits existed than were kept.
	Truncated bool
}

// Detector finds one kind of regulated data. Implementations must be safe for concurrent
// use (keep per-call state on the stack) and must report values only through the Reporter.
type Detector interface {
	// Name is the stable detector id carried in Match.Detector and in policy rules.
	Name() string
	// Interest is consulted once, at New.
	Interest() Interest
	// Detect validates around the anchors in s and reports occurrences to r.
	Detect(s *Scan, r *Reporter)
}

// Tuned is implemented by detectors built from versioned definitions (classifiers/defs).
// The engine drops their occurrences below MinConfidence before counting, sampling or
// combining them, and stamps Version on their matches.
type Tuned interface {
	MinConfidence() int
	Version() int
}

// Local is implemented by detectors whose every occurrence is anchored on one hit or one
// digit run and validated within a bounded window of the content around it, with no state
// carried from one anchor to the next. The engine may then call Detect several times for
// one content, each time with the anchors of one consecutive segment (Content is always
// the whole content) and the same Reporter, so that a large content is validated segment
// by segment while the segment is still in the CPU cache instead of every detector
// walking all of it after the shared pass.
type Local interface {
	Detector
	// Local reports whether the detector is local (a wrapper may forward to one that is not).
	Local() bool
}

// Combiner is a detector that runs after all others and sees their matches: it turns
// co-occurrence (SUD codes next to patient identifiers) into a finding of its own. It is
// called for every content, with or without hits of its own.
type Combiner interface {
	Detector
	// Combine reports through r what the matches found so far imply together.
	Combine(found []Match, r *Reporter)
}

// Stats are monotonic counters of work the engine had to drop or recover from; the agent's
// health stage ships them so that silent blind spots are visible at the collector.
type Stats struct {
	// DetectorPanics counts detector calls that panicked; their partial reports are discarded.
	DetectorPanics uint64
	// HitsDropped counts anchor hits beyond the per-detector bound.
	HitsDropped uint64
}

// Engine runs a fixed set of detectors over content. It is immutable after New and safe for
// concurrent use.
type Engine struct {
	cfg       Config
	detectors []Detector
	tuning    []tuning // per detector
	combiners []Combiner
	ctuning   []tuning // per combiner
	pf        *prefilter
	local     []bool // per detector: Local, and neither Always nor a Combiner
	anyLocal  bool
	keepRuns  bool // a detector that is not Local wants digit runs
	scratch   sync.Pool
	panics    atomic.Uint64
	dropped   atomic.Uint64
}

// New validates cfg, applies defaults and compiles the detectors' anchors into one prefilter.
func New(cfg Config, detectors ...Detector) (*Engine, error) {
	if len(cfg.FingerprintKey) < MinKeyLen {
		return nil, fmt.Errorf("engine: fingerprint key is %d bytes, need at least %d", len(cfg.FingerprintKey), MinKeyLen)
	}
	if cfg.MaxSamples < 0 || cfg.MaxOffsets < 0 {
		return nil, errors.New("engine: MaxSamples and MaxOffsets must not be negative")
	}
	if cfg.MaxSamples == 0 {
		cfg.MaxSamples = 5
	}
	if cfg.MaxOffsets == 0 {
		cfg.MaxOffsets = 16
	}
	cfg.FingerprintKey = slices.Clone(cfg.FingerprintKey)
	if len(detectors) == 0 {
		return nil, errors.New("engine: no detectors")
	}
	seen := make(map[string]bool, len(detectors))
	interests := make([]Interest, len(detectors))
	for i, d := range detectors {
		if d == nil {
			return nil, fmt.Errorf("engine: detector %d is nil", i)
		}
		name := d.Name()
		if name == "" || seen[name] {
			return nil, fmt.Errorf("engine: detector %d: name %q is empty or duplicated", i, name)
		}
		seen[name] = true
		interests[i] = d.Interest()
	}
	pf, err := newPrefilter(interests)
	if err != nil {
		return nil, fmt.Errorf("engine: compiling anchors: %w", err)
	}
	e := &Engine{cfg: cfg, detectors: slices.Clone(detectors), pf: pf}
	for i, d := range detectors {
		t := tuningOf(d)
		e.tuning = append(e.tuning, t)
		c, isCombiner := d.(Combiner)
		if isCombiner {
			e.combiners = append(e.combiners, c)
			e.ctuning = append(e.ctuning, t)
		}
		l, ok := d.(Local)
		local := ok && l.Local() && !isCombiner && !interests[i].Always
		e.local = append(e.local, local)
		e.anyLocal = e.anyLocal || local
		e.keepRuns = e.keepRuns || !local && interests[i].DigitRuns
	}
	e.scratch.New = func() any { return newScratch(len(detectors)) }
	return e, nil
}

// Stats returns the engine's drop and recovery counters.
func (e *Engine) Stats() Stats {
	return Stats{DetectorPanics: e.panics.Load(), HitsDropped: e.dropped.Load()}
}

// Classify returns the matches in content, strongest class first. It never panics: a
// detector that does is counted in Stats and contributes nothing.
func (e *Engine) Classify(content []byte) []Match {
	return e.classify(content, nil, true)
}

// classify runs the detectors, reporting only occurrences whose offset is in own (all when
// nil), and the combiners when combine is set.
func (e *Engine) classify(content []byte, own *Span, combine bool) []Match {
	sc := e.scratch.Get().(*scratch)
	defer e.scratch.Put(sc)
	sc.reset()
	if e.pf.td != nil && e.anyLocal && len(content) >= 2*segmentSize {
		return e.classifySegmented(content, own, combine, sc)
	}
	e.pf.scan(content, sc)
	if sc.dropped > 0 {
		e.dropped.Add(uint64(sc.dropped))
	}
	var out []Match
	for i, d := range e.detectors {
		want := e.pf.wantRuns[i]
		if len(sc.hits[i]) == 0 && !(want && len(sc.runs) > 0) && !e.pf.always[i] {
			continue
		}
		s := Scan{Content: content, Hits: sc.hits[i], Truncated: sc.truncated[i]}
		if want {
			s.DigitRuns = sc.runs
		}
		r := Reporter{detector: d.Name(), cfg: &e.cfg, own: own, tuning: e.tuning[i]}
		if e.run(d, &s, &r) {
			out = r.appendMatches(out)
		}
	}
	if combine && len(out) > 0 {
		out = e.combine(out)
	}
	slices.SortStableFunc(out, compareMatches)
	return out
}

// segmentSize is how much content the shared pass covers before the local detectors
// validate its anchors: small enough to stay in L2 between the two (with the bitmaps, hit
// lists and the detectors' own reads; 128 KiB measured faster than 64 and 256 KiB on a
// 512 KiB L2).
const segmentSize = 128 << 10

// classifySegmented is classify for large contents: the shared pass runs one segment at a
// time, and Local detectors validate each segment's anchors right after it; the others
// run once at the end with all their anchors, as in classify.
func (e *Engine) classifySegmented(content []byte, own *Span, combine bool, sc *scratch) []Match {
	reps := make([]*Reporter, len(e.detectors))
	failed := make([]bool, len(e.detectors))
	var st teddyState
	runsFrom := 0
	for seg := 0; seg < len(content); seg += segmentSize {
		e.pf.scanTeddy(content, seg, min(len(content), seg+segmentSize), &st, sc)
		runs := sc.runs[runsFrom:]
		runsFrom = len(sc.runs)
		for i, d := range e.detectors {
			if !e.local[i] || failed[i] {
				continue
			}
			want := e.pf.wantRuns[i]
			if len(sc.hits[i]) == 0 && !(want && len(runs) > 0) {
				continue
			}
			sortHits(sc.hits[i])
			s := Scan{Content: content, Hits: sc.hits[i], Truncated: sc.truncated[i]}
			if want {
				s.DigitRuns = runs
			}
			if reps[i] == nil {
				reps[i] = &Reporter{detector: d.Name(), cfg: &e.cfg, own: own, tuning: e.tuning[i]}
			}
			failed[i] = !e.run(d, &s, reps[i])
			sc.hits[i] = sc.hits[i][:0]
		}
		if !e.keepRuns {
			// Nobody needs this segment's runs again: reuse the buffer, which then stays
			// small and in cache.
			sc.runs, runsFrom = sc.runs[:0], 0
		}
	}
	if sc.dropped > 0 {
		e.dropped.Add(uint64(sc.dropped))
	}
	var out []Match
	for i, d := range e.detectors {
		if e.local[i] {
			if reps[i] != nil && !failed[i] {
				out = reps[i].appendMatches(out)
			}
			continue
		}
		sortHits(sc.hits[i])
		want := e.pf.wantRuns[i]
		if len(sc.hits[i]) == 0 && !(want && len(sc.runs) > 0) && !e.pf.always[i] {
			continue
		}
		s := Scan{Content: content, Hits: sc.hits[i], Truncated: sc.truncated[i]}
		if want {
			s.DigitRuns = sc.runs
		}
		r := Reporter{detector: d.Name(), cfg: &e.cfg, own: own, tuning: e.tuning[i]}
		if e.run(d, &s, &r) {
			out = r.appendMatches(out)
		}
	}
	if combine && len(out) > 0 {
		out = e.combine(out)
	}
	slices.SortStableFunc(out, compareMatches)
	return out
}

// combine appends the combiners' matches to out.
func (e *Engine) combine(out []Match) []Match {
	{
		n := len(out)
		for i, c := range e.combiners {
			r := Reporter{detector: c.Name(), cfg: &e.cfg, tuning: e.ctuning[i]}
			if e.runCombine(c, out[:n], &r) {
				out = r.appendMatches(out)
			}
		}
	}
	return out
}

// tuning is what the engine applies to a Tuned detector's reports.
type tuning struct{ min, version int }

func tuningOf(d Detector) tuning {
	if t, ok := d.(Tuned); ok {
		return tuning{min: max(0, min(100, t.MinConfidence())), version: t.Version()}
	}
	return tuning{}
}

// run calls one detector, converting a panic into a counted, discarded result.
func (e *Engine) run(d Detector, s *Scan, r *Reporter) (ok bool) {
	defer func() {
		if recover() != nil {
			e.panics.Add(1)
			ok = false
		}
	}()
	d.Detect(s, r)
	return true
}

// runCombine is run for a Combiner.
func (e *Engine) runCombine(c Combiner, found []Match, r *Reporter) (ok bool) {
	defer func() {
		if recover() != nil {
			e.panics.Add(1)
			ok = false
		}
	}()
	c.Combine(found, r)
	return true
}

// compareMatches orders Part 2 before PHI (the stricter regime first), then by confidence.
func compareMatches(a, b Match) int {
	rank := func(c DataClass) int {
		if c == Part2 {
			return 0
		}
		return 1
	}
	if d := rank(a.Class) - rank(b.Class); d != 0 {
		return d
	}
	if a.Confidence != b.Confidence {
		return b.Confidence - a.Confidence
	}
	if a.Detector < b.Detector {
		return -1
	}
	if a.Detector > b.Detector {
		return 1
	}
	return int(a.Class) - int(b.Class)
}
