package classifiers

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sort"
	"testing"

	"github.com/ward-dlp/ward/classifiers/engine"
)

// evalMinConfidence is the reporting threshold the evaluation scores at (ward scan's
// default).
const evalMinConfidence = 60

// TestEvaluation classifies the labelled documents of testdata/eval/manifest.json and
// prints precision and recall per class. Run `go test ./classifiers -run Evaluation -v`.
// It fails only when a class's precision or recall drops below the floor, so the figures
// are computed, printed and regress loudly, but are not pinned to constants.
func TestEvaluation(t *testing.T) {
	raw, err := os.ReadFile("testdata/eval/manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	var man struct {
		Documents map[string][]string `json:"documents"`
	}
	if err := json.Unmarshal(raw, &man); err != nil {
		t.Fatalf("manifest: %v", err)
	}
	e := newDefault(t)
	type counts struct{ tp, fp, fn int }
	per := map[string]*counts{"Part2": {}, "PHI": {}}
	files := make([]string, 0, len(man.Documents))
	for f := range man.Documents {
		files = append(files, f)
	}
	sort.Strings(files)
	for _, f := range files {
		want := man.Documents[f]
		content, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, m := range e.Classify(content) {
			if m.Confidence >= evalMinConfidence {
				got[m.Class.String()] = true
			}
		}
		for cls, c := range per {
			w := slices.Contains(want, cls)
			switch {
			case w && got[cls]:
				c.tp++
			case w:
				c.fn++
				t.Logf("miss: %s should be %s", f, cls)
			case got[cls]:
				c.fp++
				t.Logf("false positive: %s is not %s", f, cls)
			}
		}
	}
	fmt.Printf("%-6s %4s %4s %4s %9s %7s\n", "class", "tp", "fp", "fn", "precision", "recall")
	for _, cls := range []string{"Part2", "PHI"} {
		c := per[cls]
		p := float64(c.tp) / float64(max(1, c.tp+c.fp))
		r := float64(c.tp) / float64(max(1, c.tp+c.fn))
		fmt.Printf("%-6s %4d %4d %4d %9.2f %7.2f\n", cls, c.tp, c.fp, c.fn, p, r)
		if p < 0.8 || r < 0.8 {
			t.Errorf("%s: precision %.2f recall %.2f below 0.80", cls, p, r)
		}
	}
	_ = engine.Part2
}
