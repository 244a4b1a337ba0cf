package defs

import (
	"math/rand/v2"
	"testing"
)

// TestCursorMatchesScans checks Cursor.Find and Cursor.Last, and the vector Find and
// Last, against the scalar scans for random keyword sets, texts and window
// sequences that mostly move forward, sometimes back, with overlapping windows and
// enough keywords to overflow the occurrence buffer.
func TestCursorMatchesScans(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	const alpha = "ssnSSN dob DOB#:.-1234 xX"
	word := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = alpha[rng.IntN(len(alpha))]
		}
		return string(b)
	}
	for round := range 300 {
		var kws []Keyword
		for range 1 + rng.IntN(8) {
			w := word(1 + rng.IntN(4))
			kws = append(kws, Keyword{Text: lowerASCII(w), Name: w})
		}
		ks := NewKeywordSet(kws)
		scalar := NewKeywordSet(kws)
		scalar.vec = nil
		b := []byte(word(rng.IntN(3000)))
		c := ks.Cursor(b)
		pos := 0
		for q := range 200 {
			if rng.IntN(10) == 0 {
				pos -= rng.IntN(300)
			} else {
				pos += rng.IntN(60)
			}
			lo, hi := pos-rng.IntN(130), pos+rng.IntN(70)
			if got, want := c.Find(lo, hi), scalar.Find(b, lo, hi); got != want {
				t.Fatalf("round %d query %d: Find(%d,%d) = %d, want %d (keywords %q)", round, q, lo, hi, got, want, kws)
			}
			gk, gs := c.Last(lo, hi)
			wk, ws := scalar.Last(b, lo, hi)
			if gk != wk || gs != ws {
				t.Fatalf("round %d query %d: Last(%d,%d) = %d@%d, want %d@%d", round, q, lo, hi, gk, gs, wk, ws)
			}
			// The vector window searches on their own.
			if got, want := ks.Find(b, lo, hi), scalar.Find(b, lo, hi); got != want {
				t.Fatalf("round %d: vector Find(%d,%d) = %d, want %d", round, lo, hi, got, want)
			}
			if vk, vs := ks.Last(b, lo, hi); vk != wk || vs != ws {
				t.Fatalf("round %d: vector Last(%d,%d) = %d@%d, want %d@%d", round, lo, hi, vk, vs, wk, ws)
			}
		}
	}
}

func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
