package classifiers

import (
	"fmt"
	"strings"
	"testing"

	"github.com/ward-dlp/ward/classifiers/engine"
)

// notLocal hides engine.Local, so the engine classifies in one piece.
type notLocal struct{ engine.Detector }

func (notLocal) Local() bool          { return false }
func (d notLocal) MinConfidence() int { return d.Detector.(engine.Tuned).MinConfidence() }
func (d notLocal) Version() int       { return d.Detector.(engine.Tuned).Version() }

// TestSegmentedClassifyIsWhole checks that validating a large content segment by segment
// (engine.Local) reports exactly what one whole pass reports, with identifiers planted
// across every segment boundary.
func TestSegmentedClassifyIsWhole(t *testing.T) {
	const seg = 128 << 10 // engine.segmentSize
	planted := []string{
		"SSN 219-45-8765 on file",
		"Patient DOB: 04/12/85 per intake; D.O.B 1985-04-12",
		"MRN: HSR-0048-8812 DOB: 01/02/1970, visit 03/04/2024",
		"Dx F11.20 opioid use disorder; started buprenorphine; SUBOXONE 8/2",
		"NPI 1245319599, DEA AB1234563 prescriber; ph: (503) 555-2142",
		"Address: 1200 Harbor St, Portland, OR 97201",
	}
	var b strings.Builder
	for b.Len() < 3*seg+1000 {
		b.Write(prose(seg - 200))
		for _, p := range planted {
			b.WriteString(" " + p + " ")
		}
		b.Write(phiDense(4000))
	}
	content := []byte(b.String())
	// Also cut identifiers exactly at each boundary.
	for k := 1; k*seg < len(content); k++ {
		for off, p := range map[int]string{-7: "123-45-6789", -3: "MRN 00482913", -10: "DOB: 4/12/85"} {
			copy(content[k*seg+off:], p)
		}
	}
	cfg := engine.Config{FingerprintKey: []byte("classifiers-test-key-01")}
	seg1, err := Default(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var whole []engine.Detector
	locals := 0
	for _, d := range Detectors() {
		if l, ok := d.(engine.Local); ok && l.Local() {
			locals++
		}
		if _, ok := d.(engine.Combiner); ok {
			whole = append(whole, d)
			continue
		}
		whole = append(whole, notLocal{d})
	}
	if locals < 8 {
		t.Fatalf("only %d local detectors: the test would not segment", locals)
	}
	one, err := engine.New(cfg, whole...)
	if err != nil {
		t.Fatal(err)
	}
	got, want := seg1.Classify(content), one.Classify(content)
	if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
		t.Fatalf("segmented:\n%+v\nwhole:\n%+v", got, want)
	}
	if len(got) < 8 {
		t.Fatalf("too few detectors fired: %+v", got)
	}
}
