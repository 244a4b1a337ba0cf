package defs

import (
	"math/bits"

	"github.com/ward-dlp/ward/classifiers/engine/teddy"
)

// KeywordSet is a keyword list compiled for window searches: first[c] has bit k set when
// keyword k starts with byte c (either case), so a window is read once and only plausible
// starts are compared. Detectors build one per definition at construction.
type KeywordSet struct {
	kws    []Keyword
	first  [256]uint64
	second [256]uint64 // bit k when keyword k's second byte is c (either case) or it has none
	substr bool        // match anywhere, not only at word boundaries
	// vec finds keyword candidates in a window with the vector kernel (nil without one):
	// windows are tens to hundreds of bytes, read a block at a time instead of byte by byte.
	vec *teddy.Matcher
}

// vecMinWindow is the shortest window worth a vector search; shorter ones are scanned.
const vecMinWindow = 24

// NewSubstringSet compiles lower-case words matched anywhere, also inside longer words
// ("diagnos" in "Diagnosis", "icd" in "ICD-10-CM"): code-system context words.
func NewSubstringSet(words []string) *KeywordSet {
	kws := make([]Keyword, 0, len(words))
	for _, w := range words {
		if w != "" {
			kws = append(kws, Keyword{Text: w, Name: w})
		}
	}
	ks := NewKeywordSet(kws)
	ks.substr = true
	return ks
}

// NewKeywordSet compiles validated keywords (lower-case, at most 64).
func NewKeywordSet(kws []Keyword) *KeywordSet {
	ks := &KeywordSet{kws: kws[:min(len(kws), maxKeywords)]}
	for k, kw := range ks.kws {
		c := kw.Text[0]
		ks.first[c] |= 1 << k
		if 'a' <= c && c <= 'z' {
			ks.first[c-'a'+'A'] |= 1 << k
		}
		if len(kw.Text) < 2 {
			for i := range ks.second {
				ks.second[i] |= 1 << k
			}
			continue
		}
		c = kw.Text[1]
		ks.second[c] |= 1 << k
		if 'a' <= c && c <= 'z' {
			ks.second[c-'a'+'A'] |= 1 << k
		}
	}
	if len(ks.kws) > 0 {
		lits := make([]teddy.Literal, len(ks.kws))
		for k, kw := range ks.kws {
			lits[k] = teddy.Literal{Text: kw.Text, Fold: true}
		}
		if m, err := teddy.New(lits, teddy.Options{Prefix: true}); err == nil && m.SIMD() {
			ks.vec = m
		}
	}
	return ks
}

// Len is the number of keywords.
func (ks *KeywordSet) Len() int { return len(ks.kws) }

// Name is keyword k's evidence name.
func (ks *KeywordSet) Name(k int) string { return ks.kws[k].Name }

// Find returns the index of the keyword nearest the start of b[lo:hi] (any keyword),
// ASCII-case-insensitively, or -1. A keyword counts at a word boundary, or after a
// lower-case letter when it starts upper-case ("patientSSN"), and may be followed by 's'
// ("SSNs"). Keywords that end in a digit (OIDs) must not run on into a longer OID.
func (ks *KeywordSet) Find(b []byte, lo, hi int) int {
	lo, hi = max(lo, 0), min(hi, len(b))
	if ks.vec != nil && hi-lo >= vecMinWindow {
		for lo < hi {
			m, ok := ks.vec.Find(b, lo, hi)
			if !ok {
				return -1
			}
			if k := ks.at(b, m.Start); k >= 0 {
				return k
			}
			lo = m.Start + 1
		}
		return -1
	}
	for i := lo; i < hi; i++ {
		m := ks.first[b[i]]
		if m == 0 {
			continue
		}
		if i+1 < len(b) {
			m &= ks.second[b[i+1]] // the second byte rules out most starts
		}
		for m != 0 {
			k := bits.TrailingZeros64(m)
			m &= m - 1
			lit := ks.kws[k].Text
			if i+len(lit) <= len(b) && foldedPrefix(b[i:], lit) && (ks.substr || keywordBounded(b, i, i+len(lit), lit)) {
				return k
			}
		}
	}
	return -1
}

func foldedPrefix(b []byte, lit string) bool {
	for j := 0; j < len(lit); j++ {
		c := b[j]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lit[j] {
			return false
		}
	}
	return true
}

func keywordBounded(b []byte, start, end int, lit string) bool {
	last := lit[len(lit)-1]
	if start > 0 && isLetter(lit[0]) {
		p := b[start-1]
		if isLetter(p) && !(isLower(p) && isUpper(b[start])) {
			return false
		}
	}
	if end < len(b) {
		c := b[end]
		switch {
		case isDigit(last):
			if isDigit(c) || c == '.' && end+1 < len(b) && isDigit(b[end+1]) {
				return false
			}
		case isLetter(last):
			if (c == 's' || c == 'S') && end+1 < len(b) && isLetter(b[end+1]) {
				return false
			}
			if isLetter(c) && c != 's' && c != 'S' {
				// camelCase continuation ("mrnValue") is fine, lower-case run-on is not.
				if !(isLower(b[end-1]) && isUpper(c)) {
					return false
				}
			}
		}
	}
	return true
}

func isDigit(c byte) bool  { return '0' <= c && c <= '9' }
func isLower(c byte) bool  { return 'a' <= c && c <= 'z' }
func isUpper(c byte) bool  { return 'A' <= c && c <= 'Z' }
func isLetter(c byte) bool { return isLower(c) || isUpper(c) }

// TextLen is the length of keyword k's text.
func (ks *KeywordSet) TextLen(k int) int { return len(ks.kws[k].Text) }

// counts reports whether keyword k is at b[i:] (ASCII case-insensitively) and counts
// there under Find's boundary rules.
func (ks *KeywordSet) counts(b []byte, i, k int) bool {
	lit := ks.kws[k].Text
	return i >= 0 && i+len(lit) <= len(b) && foldedPrefix(b[i:], lit) && (ks.substr || keywordBounded(b, i, i+len(lit), lit))
}

// Last returns the keyword starting last in b[lo:hi] and its start, or -1, -1: Find from
// the other end (the longest keyword at that start).
func (ks *KeywordSet) Last(b []byte, lo, hi int) (k, start int) {
	lo, hi = max(lo, 0), min(hi, len(b))
	if ks.vec != nil && hi-lo >= vecMinWindow {
		for lo < hi {
			m, ok := ks.vec.Last(b, lo, hi)
			if !ok {
				return -1, -1
			}
			if k := ks.longestAt(b, m.Start); k >= 0 {
				return k, m.Start
			}
			hi = m.Start
		}
		return -1, -1
	}
	for i := hi - 1; i >= lo; i-- {
		if ks.first[b[i]] == 0 {
			continue
		}
		if k := ks.longestAt(b, i); k >= 0 {
			return k, i
		}
	}
	return -1, -1
}

// at returns the lowest-index keyword that counts at b[i:], or -1.
func (ks *KeywordSet) at(b []byte, i int) int {
	m := ks.first[b[i]]
	if i+1 < len(b) {
		m &= ks.second[b[i+1]]
	}
	for ; m != 0; m &= m - 1 {
		if k := bits.TrailingZeros64(m); ks.counts(b, i, k) {
			return k
		}
	}
	return -1
}

// longestAt returns the longest keyword that counts at b[i:], or -1.
func (ks *KeywordSet) longestAt(b []byte, i int) int {
	best := -1
	m := ks.first[b[i]]
	if i+1 < len(b) {
		m &= ks.second[b[i+1]]
	}
	for ; m != 0; m &= m - 1 {
		if k := bits.TrailingZeros64(m); ks.counts(b, i, k) && (best < 0 || len(ks.kws[k].Text) > len(ks.kws[best].Text)) {
			best = k
		}
	}
	return best
}

// Cursor answers one detector's keyword questions about one content whose windows move
// forward (detectors walk digit runs in offset order). With the vector kernel it reads
// ahead (the window asked about, then twice as much each time the questions keep coming,
// up to cursorAheadMax bytes) and keeps the keyword starts found, so
// overlapping windows (every line of a roster asks about the line before) read each byte
// once and a question costs a look-up; without it, or when the occurrence buffer
// overflows, it answers by scanning like Find and Last. A Cursor is a value for the
// stack of one Detect call.
type Cursor struct {
	ks     *KeywordSet
	b      []byte
	lo, hi int // keyword starts in [lo, hi) are all in occ[h:n]
	ahead  int // bytes read by the last extension: doubles while questions keep coming
	h, n   int
	occ    [cursorOcc]occurrence
	// Bitmap buffers, here so an extension does not zero a kilobyte of stack each time.
	cw, dw [cursorAheadMax / 64]uint64
}

type occurrence struct {
	start int
	first int // Find's keyword at start
}

const (
	cursorAheadMax = 4096
	cursorOcc      = 128
)

// Cursor starts a cursor over b.
func (ks *KeywordSet) Cursor(b []byte) Cursor { return Cursor{ks: ks, b: b} }

// Find is ks.Find(b, lo, hi).
func (c *Cursor) Find(lo, hi int) int {
	lo, hi = max(lo, 0), min(hi, len(c.b))
	if lo >= hi {
		return -1
	}
	// Inside the range already read: the common case, kept small enough to inline.
	if !(c.ks.vec != nil && lo >= c.lo && hi <= c.hi) && !c.cover(lo, hi) {
		return c.ks.Find(c.b, lo, hi)
	}
	// Windows move forward: occurrences before lo are not asked about again, and
	// skipping them here keeps the look-up short however much was read ahead.
	for c.h < c.n && c.occ[c.h].start < lo {
		c.h++
	}
	c.lo = lo
	if c.h < c.n && c.occ[c.h].start < hi {
		return c.occ[c.h].first
	}
	return -1
}

// Last is ks.Last(b, lo, hi).
func (c *Cursor) Last(lo, hi int) (k, start int) {
	lo, hi = max(lo, 0), min(hi, len(c.b))
	if lo >= hi {
		return -1, -1
	}
	if !(c.ks.vec != nil && lo >= c.lo && hi <= c.hi) && !c.cover(lo, hi) {
		return c.ks.Last(c.b, lo, hi)
	}
	for i := c.n - 1; i >= c.h; i-- {
		o := c.occ[i]
		if o.start < lo {
			break
		}
		if o.start < hi {
			return c.ks.longestAt(c.b, o.start), o.start
		}
	}
	return -1, -1
}

// cover makes [lo, hi) part of the scanned range, reading ahead, and reports whether it is.
func (c *Cursor) cover(lo, hi int) bool {
	if c.ks.vec == nil {
		return false
	}
	if lo < c.lo || lo > c.hi+(hi-lo) {
		// Moved back, or skipped ahead by more than a window (sparse questions, as in
		// prose): start over and read only what is asked, as a window search would. A
		// shorter gap (the windows of consecutive roster lines) is read through instead,
		// so the reads keep growing.
		c.lo, c.hi, c.h, c.n, c.ahead = lo, lo, 0, 0, 0
	}
	if hi <= c.hi {
		return true
	}
	c.ahead = min(max(2*c.ahead, (hi-c.hi+63)&^63), cursorAheadMax)
	// Occurrences before lo will not be asked about again.
	for c.h < c.n && c.occ[c.h].start < lo {
		c.h++
	}
	c.n = copy(c.occ[:], c.occ[c.h:c.n])
	c.h, c.lo = 0, lo
	for c.hi < hi {
		base := c.hi
		end := min(len(c.b), base+c.ahead)
		// Whole blocks, and the kernel may read Width-1 bytes past them; candidates past
		// end are dropped.
		cw := c.cw[:(end-base+63)/64]
		n := min(c.ks.vec.Bitmaps(c.b[:min(len(c.b), base+64*len(cw)+teddy.Width-1)], base, cw, c.dw[:len(cw)]), end-base)
		for w := range (n + 63) / 64 {
			cand := cw[w]
			if r := n - 64*w; r < 64 {
				cand &= 1<<r - 1
			}
			for ; cand != 0; cand &= cand - 1 {
				// Windows are prefixes, so a candidate is a keyword start to check.
				i := base + 64*w + bits.TrailingZeros64(cand)
				f := c.ks.at(c.b, i)
				if f < 0 {
					continue
				}
				if c.n == len(c.occ) {
					// Full: the range ends before this start.
					c.hi = i
					return hi <= c.hi
				}
				c.occ[c.n] = occurrence{start: i, first: f}
				c.n++
			}
		}
		c.hi = end
	}
	return true
}
