package engine

import (
	"bytes"
	"testing"
)

// BenchmarkPrefilter measures the shared pass alone: 30 anchors in three words plus digit
// runs, over text with no anchor.
func BenchmarkPrefilter(b *testing.B) {
	lits := []string{"ActCode", "PrivacyLaw", "113883.5.", "v2-0177", "v2/0177", "113883.18.92",
		"confidentialityCode", "disclos", "cfr", "c.f.r", "authoriz", "recipient of", "prohibition on",
		"ssn", "social security", "soc sec", "soc. sec", "ss#", "ss #", "113883.4.1"}
	d := &recorder{name: "d", lits: lits, runs: true}
	e, err := New(Config{FingerprintKey: testKey}, d)
	if err != nil {
		b.Fatal(err)
	}
	content := bytes.Repeat([]byte("Patient seen for follow-up of essential hypertension; BP 128/82, HR 76, afebrile. "), 1<<20/84)
	b.SetBytes(int64(len(content)))
	for b.Loop() {
		e.Classify(content)
	}
}
