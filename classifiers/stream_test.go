package classifiers

import (
	"math/rand/v2"
	"os"
	"testing"

	"github.com/ward-dlp/ward/classifiers/engine"
)

// TestStreamMatchesWhole feeds content in random chunks through small overlapping windows
// and checks that identifier detectors find exactly what one whole-content pass finds,
// including occurrences that straddle chunk and window boundaries.
func TestStreamMatchesWhole(t *testing.T) {
	e := newDefault(t)
	intake, err := os.ReadFile("phi/testdata/intake-form.txt")
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for _, content := range [][]byte{phiDense(64 << 10), intake, policy(32 << 10)} {
		want := byDetector(e.Classify(content))
		for _, win := range []int{512, 1000, 4096} {
			s, err := e.NewStream(engine.StreamConfig{Window: win, Overlap: 400})
			if err != nil {
				t.Fatal(err)
			}
			for p := content; len(p) > 0; {
				n := min(len(p), 1+rng.IntN(700))
				if _, err := s.Write(p[:n]); err != nil {
					t.Fatal(err)
				}
				p = p[n:]
			}
			got := byDetector(s.Close())
			for _, det := range []string{"phi.ssn", "phi.dob", "phi.mrn", "phi.phone", "phi.address"} {
				w, g := want[det], got[det]
				if w.Count != g.Count || len(w.Offsets) != len(g.Offsets) {
					t.Fatalf("window %d %s: stream %d %v, whole %d %v", win, det, g.Count, g.Offsets, w.Count, w.Offsets)
				}
				for i := range w.Offsets {
					if w.Offsets[i] != g.Offsets[i] {
						t.Fatalf("window %d %s: offsets %v, want %v", win, det, g.Offsets, w.Offsets)
					}
				}
			}
			if _, err := s.Write([]byte("x")); err == nil {
				t.Fatal("write after close accepted")
			}
		}
	}
	if _, err := e.NewStream(engine.StreamConfig{Window: 100, Overlap: 100}); err == nil {
		t.Fatal("overlap >= window accepted")
	}
}

func byDetector(ms []engine.Match) map[string]engine.Match {
	out := map[string]engine.Match{}
	for _, m := range ms {
		out[m.Detector] = m
	}
	return out
}

// FuzzStream checks that chunked classification never panics, keeps offsets inside the
// stream, and counts validated SSNs exactly as the whole-content pass does.
func FuzzStream(f *testing.F) {
	f.Add([]byte("SSN 219-45-8765 and 529 63 1184\nDOB: 04/12/1985"), uint8(7))
	f.Add(phiDense(2048), uint8(200))
	f.Add([]byte("MSH|^~\\&|A\rORC|||||||||||||||||||||||||||ETH^^HL70177\r"), uint8(3))
	e := newDefault(f)
	f.Fuzz(func(t *testing.T, content []byte, chunk uint8) {
		s, err := e.NewStream(engine.StreamConfig{Window: 512, Overlap: 256})
		if err != nil {
			t.Fatal(err)
		}
		step := int(chunk) + 1
		for p := content; len(p) > 0; {
			n := min(step, len(p))
			s.Write(p[:n])
			p = p[n:]
		}
		got := byDetector(s.Close())
		for _, m := range got {
			for _, o := range m.Offsets {
				if o < 0 || o >= int64(len(content)) {
					t.Fatalf("offset %d outside %d: %+v", o, len(content), m)
				}
			}
		}
		want := byDetector(e.Classify(content))
		if got["phi.ssn"].Count != want["phi.ssn"].Count {
			t.Fatalf("ssn: stream %d, whole %d", got["phi.ssn"].Count, want["phi.ssn"].Count)
		}
	})
}
