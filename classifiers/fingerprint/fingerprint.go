// Package fingerprint finds partial copies of known Part 2 documents that carry no label:
// files found labelled at rest are fingerprinted with winnowing (Schleimer, Wilkerson and
// Aiken, "Winnowing: Local Algorithms for Document Fingerprinting", SIGMOD 2003), and later
// content that shares enough of a document's fingerprints is reported as Part 2 even when
// the copy is an excerpt, re-wrapped, or stripped of its notice and security labels.
//
// Text is normalised first (case folded; whitespace, punctuation and markup dropped) so
// that re-wrapping and re-formatting do not change fingerprints. Every k-gram of the
// normalised text is hashed with a rolling hash whose byte table is derived from the
// tenant key; winnowing keeps the minimum hash of every window of w consecutive k-grams,
// which guarantees that any shared run of at least w+k-1 normalised characters yields a
// shared fingerprint. The stored value of a fingerprint is an AES-based keyed PRF of the
// selected hash, so an index file reveals nothing about the text without the key (not
// even which k-grams are common).
package fingerprint

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"unicode"
	"unicode/utf8"
)

// Default parameters. K = 40 normalised characters is about seven words: shorter shared
// runs are common phrases ("patient reports that she has been"), longer ones are copying.
// W = 24 keeps about one k-gram in twelve and guarantees detection of any shared run of
// 63 normalised characters (about ten words).
const (
	DefaultK = 40
	DefaultW = 24
)

// MinFingerprints is the fewest fingerprints a document needs to be indexed: shorter texts
// (a heading, a signature block) are boilerplate shared by unrelated documents.
const MinFingerprints = 8

// Params are the winnowing parameters; an index records them and content is hashed with
// the index's.
type Params struct {
	K, W int
}

func (p Params) valid() error {
	if p.K < 8 || p.K > 256 || p.W < 2 || p.W > 256 {
		return fmt.Errorf("fingerprint: k=%d w=%d: want k in 8..256 and w in 2..256", p.K, p.W)
	}
	return nil
}

// Hasher computes keyed winnowed fingerprints. It is immutable and safe for concurrent use.
type Hasher struct {
	p     Params
	table [256]uint64
	prf   cipher.Block
	idKey []byte
	check [32]byte
	rotK  int // rotation that removes a byte k positions back
}

// NewHasher derives the hash table, the PRF key, the document-id key and the key check
// from key (at least 16 bytes).
func NewHasher(key []byte, p Params) (*Hasher, error) {
	if len(key) < 16 {
		return nil, fmt.Errorf("fingerprint: key is %d bytes, need at least 16", len(key))
	}
	if err := p.valid(); err != nil {
		return nil, err
	}
	sub := func(label string) []byte {
		m := hmac.New(sha256.New, key)
		m.Write([]byte("ward fingerprint v1 " + label))
		return m.Sum(nil)
	}
	h := &Hasher{p: p, idKey: sub("document id"), rotK: p.K % 64}
	blk, err := aes.NewCipher(sub("prf")[:16])
	if err != nil {
		return nil, fmt.Errorf("fingerprint: %w", err)
	}
	h.prf = blk
	copy(h.check[:], sub("key check"))
	// The rolling-hash table: 256 pseudo-random words from the key (AES in counter mode).
	var in, out [16]byte
	for i := range h.table {
		binary.BigEndian.PutUint64(in[8:], uint64(i))
		h.prf.Encrypt(out[:], in[:])
		h.table[i] = binary.LittleEndian.Uint64(out[:8])
	}
	return h, nil
}

// Params returns the winnowing parameters.
func (h *Hasher) Params() Params { return h.p }

// Normalise appends to dst the text of src with ASCII and Unicode letters and digits kept
// (lower-cased), and whitespace, punctuation, control bytes, XML/HTML tags and character
// entities dropped; pos (when not nil) receives, per output byte, the offset in src it
// came from. Invalid UTF-8 bytes are dropped.
func Normalise(dst []byte, pos []int32, src []byte) ([]byte, []int32) {
	for i := 0; i < len(src); {
		c := src[i]
		if c < utf8.RuneSelf {
			switch {
			case 'a' <= c && c <= 'z' || '0' <= c && c <= '9':
				dst = append(dst, c)
			case 'A' <= c && c <= 'Z':
				dst = append(dst, c+'a'-'A')
			case c == '<':
				i = max(i+1, skipTag(src, i))
				continue
			case c == '&':
				i = max(i+1, skipEntity(src, i))
				continue
			default:
				i++
				continue
			}
			if pos != nil {
				pos = append(pos, int32(i))
			}
			i++
			continue
		}
		r, n := utf8.DecodeRune(src[i:])
		if r != utf8.RuneError && (unicode.IsLetter(r) || unicode.IsDigit(r)) {
			l := unicode.ToLower(r)
			before := len(dst)
			dst = utf8.AppendRune(dst, l)
			if pos != nil {
				for range len(dst) - before {
					pos = append(pos, int32(i))
				}
			}
		}
		i += n
	}
	return dst, pos
}

// skipTag returns the offset after a markup tag starting at src[i] == '<' ("<w:t>",
// "</p>", "<!-- -->", "<?xml ?>"), or i when it is not one (a "<" in prose: "BP < 90").
func skipTag(src []byte, i int) int {
	if i+1 >= len(src) {
		return i
	}
	c := src[i+1]
	if !(c == '/' || c == '!' || c == '?' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
		return i
	}
	end := min(len(src), i+4096)
	for j := i + 1; j < end; j++ {
		switch src[j] {
		case '>':
			return j + 1
		case '<':
			return i
		}
	}
	return i
}

// skipEntity returns the offset after "&amp;", "&#160;", "&#x2019;", or i.
func skipEntity(src []byte, i int) int {
	end := min(len(src), i+12)
	for j := i + 1; j < end; j++ {
		c := src[j]
		switch {
		case c == ';':
			if j > i+1 {
				return j + 1
			}
			return i
		case c == '#' && j == i+1, 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		default:
			return i
		}
	}
	return i
}

// Print is one selected fingerprint: its keyed value and the offset (in the normalised
// text) of the k-gram it came from.
type Print struct {
	Value uint64
	Pos   int
}

// Winnow appends to dst the winnowed fingerprints of normalised text norm (robust
// winnowing: the rightmost minimal hash of each window, recorded once per position).
// The values are keyed; two texts share a value exactly when they share the k-gram
// (up to 2^-64 collisions).
func (h *Hasher) Winnow(dst []Print, norm []byte) []Print {
	k, w := h.p.K, h.p.W
	if len(norm) < k {
		return dst
	}
	// Rolling buzhash: hash(i) covers norm[i:i+k].
	var rh uint64
	for _, c := range norm[:k] {
		rh = bits.RotateLeft64(rh, 1) ^ h.table[c]
	}
	n := len(norm) - k + 1
	// Monotonic deque of candidate minima over the last w hashes (indexes into ring).
	type cand struct {
		v   uint64
		pos int
	}
	dq := make([]cand, 0, w+1)
	head := 0
	last := -1
	for i := 0; i < n; i++ {
		if i > 0 {
			out, in := norm[i-1], norm[i+k-1]
			rh = bits.RotateLeft64(rh, 1) ^ bits.RotateLeft64(h.table[out], h.rotK) ^ h.table[in]
		}
		// Robust winnowing picks the rightmost minimum: pop candidates >= the new hash.
		for len(dq) > head && dq[len(dq)-1].v >= rh {
			dq = dq[:len(dq)-1]
		}
		dq = append(dq, cand{rh, i})
		if dq[head].pos <= i-w {
			head++
		}
		if head > w { // compact the deque's dead prefix
			dq = append(dq[:0], dq[head:]...)
			head = 0
		}
		if i >= w-1 {
			m := dq[head]
			if m.pos != last {
				last = m.pos
				dst = append(dst, Print{Value: h.keyed(m.v), Pos: m.pos})
			}
		}
	}
	if n < w && n > 0 {
		// Shorter than one window: the text's minimum is its only fingerprint.
		m := dq[head]
		dst = append(dst, Print{Value: h.keyed(m.v), Pos: m.pos})
	}
	return dst
}

// keyed is the stored value of a selected hash: AES_k(v) truncated to 64 bits, a PRF, so
// equal k-grams compare equal but nothing about them can be computed without the key.
func (h *Hasher) keyed(v uint64) uint64 {
	var in, out [16]byte
	in[0] = 1 // domain-separates from the table derivation
	binary.BigEndian.PutUint64(in[8:], v)
	h.prf.Encrypt(out[:], in[:])
	return binary.LittleEndian.Uint64(out[:8])
}

// DocID is the keyed identity of a document's content: the same bytes added twice (from
// two paths) are one document, and the id reveals neither the path nor the content.
func (h *Hasher) DocID(content []byte) [16]byte {
	d := sha256.Sum256(content)
	m := hmac.New(sha256.New, h.idKey)
	m.Write(d[:])
	var id [16]byte
	copy(id[:], m.Sum(nil))
	return id
}

// ErrTooShort is returned when a document yields fewer than MinFingerprints fingerprints.
var ErrTooShort = errors.New("fingerprint: document too short to fingerprint")

// Set returns the distinct fingerprint values of content, sorted.
func (h *Hasher) Set(content []byte) []uint64 {
	norm, _ := Normalise(make([]byte, 0, len(content)), nil, content)
	prints := h.Winnow(nil, norm)
	vals := make([]uint64, len(prints))
	for i, p := range prints {
		vals[i] = p.Value
	}
	return sortDedup(vals)
}
