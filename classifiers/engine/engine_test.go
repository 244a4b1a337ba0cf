package engine

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
)

var testKey = []byte("engine-test-key-0123456789")

// recorder is a detector that records what the engine handed it.
type recorder struct {
	name   string
	lits   []string
	exact  []string
	runs   bool
	hits   []Hit
	spans  []Span
	report func(s *Scan, r *Reporter)
}

func (d *recorder) Name() string { return d.name }
func (d *recorder) Interest() Interest {
	return Interest{Literals: d.lits, Exact: d.exact, DigitRuns: d.runs}
}
func (d *recorder) Detect(s *Scan, r *Reporter) {
	d.hits = append(d.hits[:0], s.Hits...)
	d.spans = append(d.spans[:0], s.DigitRuns...)
	if d.report != nil {
		d.report(s, r)
	}
}

func TestNewValidates(t *testing.T) {
	d := &recorder{name: "d", lits: []string{"x"}}
	cases := []struct {
		cfg  Config
		dets []Detector
	}{
		{Config{FingerprintKey: []byte("short")}, []Detector{d}},
		{Config{FingerprintKey: testKey, MaxSamples: -1}, []Detector{d}},
		{Config{FingerprintKey: testKey}, nil},
		{Config{FingerprintKey: testKey}, []Detector{d, &recorder{name: "d"}}},
		{Config{FingerprintKey: testKey}, []Detector{nil}},
		{Config{FingerprintKey: testKey}, []Detector{&recorder{name: "e", lits: []string{""}}}},
		{Config{FingerprintKey: testKey}, []Detector{&recorder{name: "e", lits: []string{strings.Repeat("a", 65)}}}},
	}
	for i, c := range cases {
		if _, err := New(c.cfg, c.dets...); err == nil {
			t.Errorf("case %d: New accepted %+v", i, c)
		}
	}
}

// TestPrefilterMatchesNaive compares both shared passes (teddy's vector pass and the
// IndexByte sweeps) with a naive case-insensitive search for random literal sets over
// random text, hits and digit runs.
func TestPrefilterMatchesNaive(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	// Upper-case letters and their neighbours (@ [ ` {) and high-bit bytes whose low
	// seven bits are letters exercise the word-at-a-time upper-case pass.
	alpha := "abAB12-. Zz@[`{\xc1\xdaY0123456789"
	randStr := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = alpha[rng.IntN(len(alpha))]
		}
		return string(b)
	}
	for round := range 200 {
		var dets []Detector
		var recs []*recorder
		for d := range 1 + rng.IntN(4) {
			r := &recorder{name: fmt.Sprint("d", d), runs: rng.IntN(2) == 0}
			for range 1 + rng.IntN(12) {
				r.lits = append(r.lits, randStr(1+rng.IntN(20)))
			}
			for range rng.IntN(6) {
				r.exact = append(r.exact, randStr(1+rng.IntN(8)))
			}
			dets = append(dets, r)
			recs = append(recs, r)
		}
		e, err := New(Config{FingerprintKey: testKey}, dets...)
		if err != nil {
			t.Fatal(err)
		}
		n := rng.IntN(3000)
		if round%8 == 0 {
			n = 16<<10 + rng.IntN(8000) // large enough for the dense-byte pass
		}
		content := []byte(randStr(n))
		lc := make([]byte, len(content)) // ASCII folding only, as literals are matched
		for i, c := range content {
			lc[i] = lower(c)
		}
		// Both passes: the SIMD one (where the CPU has it) and the sweeps.
		for pass := range 2 {
			if pass == 1 {
				e.pf.td = nil
			}
			e.Classify(content)
			for _, r := range recs {
				var want []Hit
				for off := range content {
					for li, l := range r.lits {
						if bytes.HasPrefix(lc[off:], []byte(strings.ToLower(l))) {
							want = append(want, Hit{li, off})
						}
					}
					for li, l := range r.exact {
						if bytes.HasPrefix(content[off:], []byte(l)) {
							want = append(want, Hit{len(r.lits) + li, off})
						}
					}
				}
				if !sameHits(r.hits, want) {
					t.Fatalf("round %d pass %d %s lits %q: hits %v, want %v", round, pass, r.name, r.lits, r.hits, want)
				}
				if r.runs && len(want) > 0 || r.runs && len(naiveRuns(content)) > 0 {
					if fmt.Sprint(r.spans) != fmt.Sprint(naiveRuns(content)) {
						t.Fatalf("round %d pass %d: runs %v, want %v", round, pass, r.spans, naiveRuns(content))
					}
				}
			}
		}
	}
}

// sameHits compares as multisets ordered by offset (same-offset order is unspecified).
func sameHits(got, want []Hit) bool {
	if len(got) != len(want) {
		return false
	}
	key := func(h []Hit) map[Hit]int {
		m := map[Hit]int{}
		for _, x := range h {
			m[x]++
		}
		return m
	}
	for i := 1; i < len(got); i++ {
		if got[i].Off < got[i-1].Off {
			return false
		}
	}
	return fmt.Sprint(key(got)) == fmt.Sprint(key(want))
}

func naiveRuns(b []byte) []Span {
	var out []Span
	for i := 0; i < len(b); {
		if b[i] < '0' || b[i] > '9' {
			i++
			continue
		}
		j := i
		for j < len(b) && b[j] >= '0' && b[j] <= '9' {
			j++
		}
		if j-i >= MinDigitRun && j-i <= maxDigitRun {
			out = append(out, Span{i, j})
		}
		i = j
	}
	return out
}

func TestMask(t *testing.T) {
	cases := map[string]string{
		"123-45-6789":   "***-**-6789",
		"123 45 6789":   "*** ** 6789",
		"123456789":     "*****6789",
		"1EG4-TE5-MK73": "****-***-MK73",
		"12":            "12",
		"ab\x00\xff12":  "ab??12",
	}
	for in, want := range cases {
		if got := mask([]byte(in)); got != want {
			t.Errorf("mask(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestReporterBounds checks aggregation: count everything, keep bounded offsets and
// distinct samples, take evidence from the strongest occurrence.
func TestReporterBounds(t *testing.T) {
	d := &recorder{name: "ids", lits: []string{"id:"}, report: func(s *Scan, r *Reporter) {
		for i, h := range s.Hits {
			v := s.Content[h.Off+3 : h.Off+7]
			r.Identifier(PHI, 50+i, h.Off, v, v, fmt.Sprint("occurrence ", i))
		}
		r.Label(Part2, 90, 0, "LBL", "sys|LBL", "label")
		r.Identifier(ClassUnspecified, 99, 0, []byte("x"), []byte("x"), "dropped")
	}}
	e, err := New(Config{FingerprintKey: testKey, MaxSamples: 3, MaxOffsets: 4}, d)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	vals := []string{"1111", "2222", "1111", "3333", "4444", "5555", "1111"}
	for _, v := range vals {
		b.WriteString("id:" + v + " ")
	}
	ms := e.Classify([]byte(b.String()))
	if len(ms) != 2 || ms[0].Class != Part2 || ms[1].Class != PHI {
		t.Fatalf("got %+v", ms)
	}
	m := ms[1]
	if m.Count != len(vals) || len(m.Offsets) != 4 || m.Offsets[1] != 8 {
		t.Errorf("count %d offsets %v", m.Count, m.Offsets)
	}
	if fmt.Sprint(m.Masked) != "[1111 2222 3333]" || len(m.Fingerprints) != 3 {
		t.Errorf("samples %v", m.Masked)
	}
	if m.Confidence != 56 || m.Evidence != "occurrence 6" {
		t.Errorf("confidence %d evidence %q", m.Confidence, m.Evidence)
	}
}

type panicker struct{}

func (panicker) Name() string                { return "boom" }
func (panicker) Interest() Interest          { return Interest{Literals: []string{"x"}} }
func (panicker) Detect(s *Scan, r *Reporter) { r.Label(PHI, 1, 0, "a", "a", "a"); panic("boom") }

func TestPanicIsContained(t *testing.T) {
	ok := &recorder{name: "ok", lits: []string{"x"}, report: func(s *Scan, r *Reporter) { r.Label(PHI, 10, 0, "x", "x", "x") }}
	e, err := New(Config{FingerprintKey: testKey}, panicker{}, ok)
	if err != nil {
		t.Fatal(err)
	}
	ms := e.Classify([]byte("x"))
	if len(ms) != 1 || ms[0].Detector != "ok" || e.Stats().DetectorPanics != 1 {
		t.Fatalf("got %+v stats %+v", ms, e.Stats())
	}
}

func TestHitsAreBounded(t *testing.T) {
	d := &recorder{name: "d", lits: []string{"a"}}
	e, err := New(Config{FingerprintKey: testKey}, d)
	if err != nil {
		t.Fatal(err)
	}
	e.Classify(bytes.Repeat([]byte("a"), maxHitsPerDetector+10))
	if len(d.hits) != maxHitsPerDetector || e.Stats().HitsDropped != 10 {
		t.Fatalf("hits %d stats %+v", len(d.hits), e.Stats())
	}
}

// TestConcurrentClassify runs one engine from many goroutines (meaningful under -race).
func TestConcurrentClassify(t *testing.T) {
	det := detectorFunc{"d", func(s *Scan, r *Reporter) {
		for _, h := range s.Hits {
			r.Identifier(PHI, 70, h.Off, s.Content[h.Off:h.Off+6], s.Content[h.Off:h.Off+6], "e")
		}
	}}
	e, err := New(Config{FingerprintKey: testKey}, det)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			content := []byte(strings.Repeat(fmt.Sprintf("key%03d ", g), 100))
			for range 200 {
				ms := e.Classify(content)
				if len(ms) != 1 || ms[0].Count != 100 || ms[0].Masked[0] != fmt.Sprintf("**y%03d", g) {
					t.Errorf("goroutine %d: %+v", g, ms)
					return
				}
			}
		})
	}
	wg.Wait()
}

type detectorFunc struct {
	name string
	f    func(*Scan, *Reporter)
}

func (d detectorFunc) Name() string                { return d.name }
func (d detectorFunc) Interest() Interest          { return Interest{Literals: []string{"key"}} }
func (d detectorFunc) Detect(s *Scan, r *Reporter) { d.f(s, r) }

// TestConfirmFiltersHits checks that a detector's Confirm sees every candidate and that
// rejected hits never reach Detect.
func TestConfirmFiltersHits(t *testing.T) {
	d := &confirmer{recorder: recorder{name: "c", lits: []string{"42"}}}
	e, err := New(Config{FingerprintKey: testKey}, d)
	if err != nil {
		t.Fatal(err)
	}
	e.Classify([]byte("142 42 CFR 42x 42 cfr"))
	if fmt.Sprint(d.hits) != "[{0 4} {0 15}]" {
		t.Fatalf("hits %v", d.hits)
	}
}

type confirmer struct{ recorder }

func (d *confirmer) Interest() Interest {
	return Interest{Literals: d.lits, Confirm: func(b []byte, off, lit int) bool {
		return (off == 0 || b[off-1] == ' ') && bytes.HasPrefix(bytes.ToLower(b[off+2:]), []byte(" cfr"))
	}}
}

// localRecorder is a Local detector that accumulates what every call handed it.
type localRecorder struct {
	recorder
	calls int
}

func (d *localRecorder) Local() bool { return true }
func (d *localRecorder) Detect(s *Scan, r *Reporter) {
	d.calls++
	d.hits = append(d.hits, s.Hits...)
	d.spans = append(d.spans, s.DigitRuns...)
}

// TestSegmentsCoverEverything checks that a Local detector, called once per segment of a
// large content, is handed every hit and digit run exactly once, including those that
// straddle segment boundaries.
func TestSegmentsCoverEverything(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	content := make([]byte, 3*segmentSize+777)
	for i := range content {
		content[i] = "ab 0123456789xyzAB-"[rng.IntN(19)]
	}
	for k := 1; k*segmentSize < len(content); k++ {
		copy(content[k*segmentSize-3:], "xyzab1234567")
	}
	d := &localRecorder{recorder: recorder{name: "l", lits: []string{"xyzab", "b1"}, exact: []string{"AB-"}, runs: true}}
	e, err := New(Config{FingerprintKey: testKey}, d)
	if err != nil {
		t.Fatal(err)
	}
	if e.pf.td == nil {
		t.Skip("no SIMD pass: contents are not segmented")
	}
	e.Classify(content)
	if d.calls < 4 {
		t.Fatalf("%d calls: not segmented", d.calls)
	}
	var want []Hit
	for off := range content {
		for li, l := range d.lits {
			if bytes.HasPrefix(bytes.ToLower(content[off:min(len(content), off+len(l))]), []byte(l)) {
				want = append(want, Hit{li, off})
			}
		}
		if bytes.HasPrefix(content[off:], []byte("AB-")) {
			want = append(want, Hit{2, off})
		}
	}
	if !sameHits(d.hits, want) {
		t.Fatalf("segmented hits differ: %d, want %d", len(d.hits), len(want))
	}
	if fmt.Sprint(d.spans) != fmt.Sprint(naiveRuns(content)) {
		t.Fatalf("segmented runs differ: %d, want %d", len(d.spans), len(naiveRuns(content)))
	}
}
