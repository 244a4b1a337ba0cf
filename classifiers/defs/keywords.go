package defs

import "math/bits"

// KeywordSet is a keyword list compiled for window searches: first[c] has bit k set when
// keyword k starts with byte c (either case), so a window is read once and only plausible
// starts are compared. Detectors build one per definition at construction.
type KeywordSet struct {
	kws    []Keyword
	first  [256]uint64
	second [256]uint64 // bit k when keyword k's second byte is c (either case) or it has none
	substr bool        // match anywhere, not only at word boundaries
}

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
