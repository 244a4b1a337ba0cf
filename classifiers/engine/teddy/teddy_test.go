package teddy

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// alphabet mixes letters of both cases, digits and the bytes next to them in the nibble
// tables ('/' ':' '@' '[' '`' '{'), so windows and folds are exercised at their edges.
const alphabet = "abzABZ0189/:@[`{ .-\x00\xff\xc1"

func randText(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[rng.IntN(len(alphabet))]
	}
	return b
}

func randLits(rng *rand.Rand) []Literal {
	var ls []Literal
	for range 1 + rng.IntN(30) {
		ls = append(ls, Literal{Text: string(randText(rng, 1+rng.IntN(6))), Fold: rng.IntN(2) == 0})
	}
	return ls
}

// naive returns every (literal, start) in data, ordered by start then literal.
func naive(lits []Literal, data []byte) []Match {
	var out []Match
	for s := range data {
		for i, l := range lits {
			if s+len(l.Text) > len(data) {
				continue
			}
			w := data[s : s+len(l.Text)]
			if l.Fold && bytes.Equal(foldASCII(w), foldASCII([]byte(l.Text))) || !l.Fold && string(w) == l.Text {
				out = append(out, Match{i, s})
			}
		}
	}
	return out
}

// foldASCII lower-cases ASCII letters only (bytes.EqualFold takes invalid UTF-8 bytes as
// one rune and would call them equal).
func foldASCII(b []byte) []byte {
	o := make([]byte, len(b))
	for i, c := range b {
		o[i] = lower(c)
	}
	return o
}

// scanAll runs the bitmap pass over data in blocks of words and verifies every candidate.
func scanAll(m *Matcher, data []byte, words int) (ms []Match, digits []int) {
	cw, dw := make([]uint64, words), make([]uint64, words)
	for base := 0; base < len(data); base += 64 * words {
		n := m.Bitmaps(data, base, cw, dw)
		for w := range words {
			for c := cw[w]; c != 0; c &= c - 1 {
				i := base + 64*w + trailingZeros(c)
				if i >= base+n {
					panic("candidate past the covered positions")
				}
				ms = m.MatchAt(data, i, ms)
			}
			for d := dw[w]; d != 0; d &= d - 1 {
				digits = append(digits, base+64*w+trailingZeros(d))
			}
		}
	}
	slices.SortFunc(ms, func(a, b Match) int {
		if a.Start != b.Start {
			return a.Start - b.Start
		}
		return a.Literal - b.Literal
	})
	return ms, digits
}

func naiveDigits(data []byte) []int {
	var out []int
	for i, c := range data {
		if '0' <= c && c <= '9' {
			out = append(out, i)
		}
	}
	return out
}

func check(t *testing.T, lits []Literal, data []byte) {
	t.Helper()
	want := naive(lits, data)
	wantD := naiveDigits(data)
	for _, opts := range []Options{{}, {NoSIMD: true}} {
		m, err := New(lits, opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, words := range []int{1, 3, 64} {
			got, gotD := scanAll(m, data, words)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("simd=%v words=%d lits %+v data %q:\n got %v\nwant %v", m.SIMD(), words, lits, data, got, want)
			}
			if fmt.Sprint(gotD) != fmt.Sprint(wantD) {
				t.Fatalf("simd=%v digits %v, want %v", m.SIMD(), gotD, wantD)
			}
		}
	}
}

// TestMatchesNaive compares both kernels (the SIMD one where the CPU has it) with a naive
// search for random literal sets over random text, in several block sizes.
func TestMatchesNaive(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 300 {
		check(t, randLits(rng), randText(rng, rng.IntN(700)))
	}
}

// TestKernelsAgree compares the SIMD and Go bitmaps word for word (not only the verified
// matches) at every alignment and length near block edges.
func TestKernelsAgree(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for range 100 {
		lits := randLits(rng)
		simd, _ := New(lits, Options{})
		gen, _ := New(lits, Options{NoSIMD: true})
		if !simd.SIMD() {
			t.Skip("no SIMD kernel on this CPU")
		}
		data := randText(rng, 300)
		for from := range 70 {
			for _, end := range []int{from + 63, from + 64, from + 65, from + 66, from + 130, 300} {
				d := data[:min(end, len(data))]
				a, ad := make([]uint64, 4), make([]uint64, 4)
				b, bd := make([]uint64, 4), make([]uint64, 4)
				na := simd.Bitmaps(d, from, a, ad)
				nb := gen.Bitmaps(d, from, b, bd)
				if na != nb || !slices.Equal(a, b) || !slices.Equal(ad, bd) {
					t.Fatalf("from %d end %d: simd %d %x %x, go %d %x %x", from, end, na, a, ad, nb, b, bd)
				}
			}
		}
	}
}

func TestLastIsLastStart(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for range 500 {
		lits := randLits(rng)
		data := randText(rng, rng.IntN(400))
		m, err := New(lits, Options{})
		if err != nil {
			t.Fatal(err)
		}
		from, to := rng.IntN(len(data)+1), rng.IntN(len(data)+1)
		var want *Match
		for _, x := range naive(lits, data) {
			if x.Start < from || x.Start >= to {
				continue
			}
			if want == nil || x.Start > want.Start || len(lits[x.Literal].Text) > len(lits[want.Literal].Text) {
				want = &x
			}
		}
		got, ok := m.Last(data, from, to)
		if ok != (want != nil) || ok && got != *want {
			t.Fatalf("Last(%d,%d) in %q for %+v = %v %v, want %v", from, to, data, lits, got, ok, want)
		}
	}
}

func TestFindIsFirstStart(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for range 500 {
		lits := randLits(rng)
		data := randText(rng, rng.IntN(400))
		m, err := New(lits, Options{})
		if err != nil {
			t.Fatal(err)
		}
		from, to := rng.IntN(len(data)+1), rng.IntN(len(data)+1)
		var want *Match
		for _, x := range naive(lits, data) {
			if x.Start >= from && x.Start < to {
				want = &x
				break
			}
		}
		got, ok := m.Find(data, from, to)
		if ok != (want != nil) || ok && got != *want {
			t.Fatalf("Find(%d,%d) in %q for %+v = %v %v, want %v", from, to, data, lits, got, ok, want)
		}
	}
}

// TestClinicalRate checks that a realistic anchor set stays a rare candidate in prose:
// the bucket planner is what keeps the verify loop off the profile.
func TestClinicalRate(t *testing.T) {
	var lits []Literal
	for _, s := range []string{"hl7.org", "113883.", "MSH|", "MBI", "Medicare", "MEDICARE", "@", "DOB", "D.O.B", "Dob",
		"F10", "F11", "F12", "F13", "F14", "F15", "F16", "F18", "F19", "F55", "R78", "Z71",
		"HZ3", "HZ4", "HZ5", "HZ8", "HZ9", "HZ2ZZZZ", "HZ63ZZZ", "DRG", "ICD-9", "ICD9"} {
		lits = append(lits, Literal{Text: s})
	}
	for _, s := range []string{"42", "buprenorphine", "methadone", "naltrexone", "suboxone", "vivitrol", "sublocade"} {
		lits = append(lits, Literal{Text: s, Fold: true})
	}
	m, err := New(lits, Options{})
	if err != nil {
		t.Fatal(err)
	}
	prose := []byte(strings.Repeat("Patient seen for follow-up of essential hypertension; BP 128/82, HR 76, afebrile. "+
		"Discussed coping strategies, behavioural activation and sleep hygiene in detail. ", 200))
	ms, _ := scanAll(m, prose, 64)
	if len(ms) != 0 {
		t.Fatalf("matches in clean prose: %v", ms)
	}
	cands := 0
	cw, dw := make([]uint64, 64), make([]uint64, 64)
	for base := 0; base < len(prose); base += 4096 {
		m.Bitmaps(prose, base, cw, dw)
		for _, c := range cw {
			cands += onesCount(c)
		}
	}
	if r := float64(cands) / float64(len(prose)); r > 0.01 {
		t.Errorf("candidate rate %.4f in prose (estimate %.4f)", r, m.Rate())
	}
}

func TestNewRejects(t *testing.T) {
	for _, l := range []Literal{{Text: ""}, {Text: strings.Repeat("x", 65)}} {
		if _, err := New([]Literal{l}, Options{}); err == nil {
			t.Errorf("New accepted %q", l.Text)
		}
	}
}

// FuzzKernels checks both kernels and the verifier against the naive search on fuzzed
// text, with a literal set derived from the input.
func FuzzKernels(f *testing.F) {
	f.Add([]byte("DOB: 01/02/1970 hl7.org 113883.4.1"), "dob|113883.|42", uint8(0x5))
	f.Add([]byte("Methadone 40 mg; SUBOXONE 8/2; Vivitrol"), "methadone|suboxone|vivitrol|F1", uint8(0x7))
	f.Fuzz(func(t *testing.T, data []byte, lits string, folds uint8) {
		var ls []Literal
		for i, s := range strings.Split(lits, "|") {
			if s == "" || len(s) > 64 || len(ls) >= 40 {
				continue
			}
			ls = append(ls, Literal{Text: s, Fold: folds&(1<<(i%8)) != 0})
		}
		if len(data) > 4096 {
			data = data[:4096]
		}
		check(t, ls, data)
	})
}
