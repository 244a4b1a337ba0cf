package phi

import "math/bits"

// keyword is a context word: lit is lower-case ASCII; name is what evidence shows.
type keyword struct{ lit, name string }

// keywordSet is a list of keywords compiled for window searches: first[c] has bit k set
// when keyword k starts with byte c (either case), so a window is read once, byte by byte,
// and only plausible starts are compared.
type keywordSet struct {
	kws   []keyword
	first [256]uint32
}

// newKeywordSet compiles at most 32 keywords.
func newKeywordSet(kws []keyword) *keywordSet {
	if len(kws) > 32 {
		panic("phi: more than 32 keywords in a set") // programming error in a constant table
	}
	ks := &keywordSet{kws: kws}
	for k, kw := range kws {
		c := kw.lit[0]
		ks.first[c] |= 1 << k
		if 'a' <= c && c <= 'z' {
			ks.first[c-'a'+'A'] |= 1 << k
		}
	}
	return ks
}

// findKeyword returns the index of the keyword nearest the start of b[lo:hi] (any
// keyword), ASCII-case-insensitively, or -1. A keyword counts at a word boundary, or after
// a lower-case letter when it starts upper-case ("patientSSN"), and may be followed by 's'
// ("SSNs"). Keywords that end in a digit (OIDs) must not run on into a longer OID.
func findKeyword(b []byte, lo, hi int, ks *keywordSet) int {
	lo, hi = max(lo, 0), min(hi, len(b))
	for i := lo; i < hi; i++ {
		m := ks.first[b[i]]
		for m != 0 {
			k := bits.TrailingZeros32(m)
			m &= m - 1
			lit := ks.kws[k].lit
			if i+len(lit) <= len(b) && foldedPrefix(b[i:], lit) && keywordBounded(b, i, i+len(lit), lit) {
				return k
			}
		}
	}
	return -1
}

func foldedPrefix(b []byte, lit string) bool {
	for j := 0; j < len(lit); j++ {
		if lowerByte(b[j]) != lit[j] {
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

func lowerByte(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// digitsBefore counts the ASCII digits immediately before b[end].
func digitsBefore(b []byte, end int) int {
	n := 0
	for end-n > 0 && isDigit(b[end-n-1]) {
		n++
	}
	return n
}

// luhnOK checks the Luhn mod-10 digit of s (ASCII digits), with prefix digits prepended.
func luhnOK(prefix, s string) bool {
	all := prefix + s
	sum, dbl := 0, false
	for i := len(all) - 1; i >= 0; i-- {
		d := int(all[i] - '0')
		if dbl {
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
		dbl = !dbl
	}
	return sum%10 == 0
}

// repeated reports whether s is one character repeated (placeholder values).
func repeated(s []byte) bool {
	for _, c := range s[1:] {
		if c != s[0] {
			return false
		}
	}
	return true
}
