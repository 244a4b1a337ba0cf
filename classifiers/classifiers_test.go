package classifiers

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/ward-dlp/ward/classifiers/engine"
)

func newDefault(t testing.TB) *engine.Engine {
	t.Helper()
	e, err := Default(engine.Config{FingerprintKey: []byte("classifiers-test-key-01")})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// ssnShape finds anything SSN-like in fixtures, so the leak check needs no list to keep
// in sync with the fixtures.
var ssnShape = regexp.MustCompile(`\b\d{3}[- ]?\d{2}[- ]?\d{4}\b`)

// TestFixturesLeakNothing runs the default engine over every fixture and checks that no
// SSN-shaped value of the input appears anywhere in the printed matches, in any shape.
func TestFixturesLeakNothing(t *testing.T) {
	e := newDefault(t)
	files, err := filepath.Glob("*/testdata/*.*")
	if err != nil || len(files) < 15 {
		t.Fatalf("fixtures: %v %v", files, err)
	}
	total := 0
	for _, f := range files {
		content, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		ms := e.Classify(content)
		dump := fmt.Sprintf("%+v", ms)
		for _, raw := range ssnShape.FindAllString(string(content), -1) {
			d := strings.NewReplacer("-", "", " ", "").Replace(raw)
			for _, s := range []string{raw, d, d[:3] + "-" + d[3:5] + "-" + d[5:], d[:3] + " " + d[3:5] + " " + d[5:]} {
				if strings.Contains(dump, s) {
					t.Errorf("%s: %q leaked as %q in %s", f, raw, s, dump)
				}
			}
		}
		for _, m := range ms {
			if m.Detector == "phi.ssn" {
				total += m.Count
			}
		}
	}
	// The FHIR bundles carry the patient's SSN (pretty, minified, NDJSON) and the intake
	// form four: the scan above must have had real matches to look at.
	if total != 7 {
		t.Errorf("only %d PHI occurrences across fixtures", total)
	}
}

func TestBundleCarriesBothClasses(t *testing.T) {
	content, err := os.ReadFile("part2/testdata/fhir-r4-bundle-pretty.json")
	if err != nil {
		t.Fatal(err)
	}
	ms := newDefault(t).Classify(content)
	byDet := map[string]engine.Match{}
	for _, m := range ms {
		byDet[m.Detector] = m
	}
	if ms[0].Detector != "part2.fhir-label" || ms[0].Class != engine.Part2 || byDet["phi.ssn"].Masked[0] != "***-**-8765" ||
		byDet["phi.dob"].Masked[0] != "**/**/1985" || byDet["sud.codes"].Class != engine.PHI {
		t.Fatalf("got %+v", ms)
	}
	// The bundle's OUD diagnosis with the patient's SSN and DOB is also a probable Part 2
	// record on its own, without the label.
	if p := byDet["part2.probable-record"]; p.Class != engine.Part2 || p.Confidence != 80 {
		t.Fatalf("probable record: %+v", p)
	}
}

// sentences are clinical prose without any finding; some carry anchor words ("disclosed",
// "authorization", "CFR") and digits so the benchmark pays for windows and runs.
var sentences = []string{
	"Patient seen for follow-up of essential hypertension; BP 128/82, HR 76, afebrile.",
	"Reports improved sleep since starting trazodone 50 mg at bedtime on 2026-09-14.",
	"Patient disclosed increased stress at work and occasional alcohol use on weekends.",
	"PHQ-9 score 11 today, down from 16 on 08/30/2026; GAD-7 score 9.",
	"Discussed coping strategies, behavioural activation and sleep hygiene in detail.",
	"Prior authorization for the CT abdomen was submitted to the payer on 10/01/2026.",
	"Labs: Na 139, K 4.1, Cr 0.92, eGFR 88, A1c 5.8%, LDL 112 mg/dL.",
	"Plan: continue lisinopril 10 mg daily, recheck BMP in 3 months, RTC 4-6 weeks.",
	"Call back number on file; patient prefers morning appointments after 9:30.",
	"Wound on left forearm healing well, 2.1 x 0.8 cm, no erythema or drainage.",
	"Counselled on diet and exercise; target 150 minutes of moderate activity weekly.",
}

// citations is compliance prose that cites the CFR every few hundred bytes: the worst
// case for the notice detector, whose windows then cover the whole text.
var citations = []string{
	"Clinic policy binder references HIPAA 45 CFR 164 and state law for record requests.",
	"Staff complete annual training on 42 CFR Part 2 consent requirements and on HIPAA.",
	"Release-of-information requests are logged, reviewed and answered within 30 days.",
	"Recipients of disclosed records are reminded of their obligations in the cover letter.",
}

func prose(size int) []byte { return text(size, sentences, 7) }

func policy(size int) []byte { return text(size, append(slices.Clone(sentences[:4]), citations...), 8) }

func text(size int, sentences []string, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, seed))
	var b strings.Builder
	for b.Len() < size {
		for range 4 + rng.IntN(4) {
			b.WriteString(sentences[rng.IntN(len(sentences))])
			b.WriteByte(' ')
		}
		b.WriteString("\n\n")
	}
	return []byte(b.String()[:size])
}

// phiDense is a roster export: an SSN (valid, in varying shapes) on every line among
// phones, dates and member numbers.
func phiDense(size int) []byte {
	rng := rand.New(rand.NewPCG(9, 9))
	var b strings.Builder
	b.WriteString("last,first,dob,ssn,phone,member_id,note\n")
	for b.Len() < size {
		area, group, serial := 100+rng.IntN(565), 10+rng.IntN(89), 1000+rng.IntN(8999)
		ssn := fmt.Sprintf("%03d-%02d-%04d", area, group, serial)
		if rng.IntN(3) == 0 {
			ssn = fmt.Sprintf("%03d %02d %04d", area, group, serial)
		}
		fmt.Fprintf(&b, "Sample%d,Jordan,%02d/%02d/19%02d,%s,(503) 555-%04d,M%09d,SSN verified at intake\n",
			rng.IntN(1000), 1+rng.IntN(12), 1+rng.IntN(28), 40+rng.IntN(60), ssn, rng.IntN(10000), rng.IntN(1e9))
	}
	return []byte(b.String()[:size])
}

func TestBenchmarkCorpora(t *testing.T) {
	e := newDefault(t)
	if ms := e.Classify(prose(1 << 20)); len(ms) != 0 {
		t.Fatalf("prose corpus has findings: %+v", ms)
	}
	if ms := e.Classify(policy(1 << 20)); len(ms) != 0 {
		t.Fatalf("policy corpus has findings: %+v", ms)
	}
	ms := e.Classify(phiDense(1 << 20))
	if len(ms) != 1 || ms[0].Count < 10000 || ms[0].Confidence != 85 {
		t.Fatalf("dense corpus: %+v", ms)
	}
}

func BenchmarkClassifyProse(b *testing.B) {
	benchmark(b, prose(1<<20))
}

func BenchmarkClassifyPolicyCitations(b *testing.B) {
	benchmark(b, policy(1<<20))
}

func BenchmarkClassifyPHIDense(b *testing.B) {
	benchmark(b, phiDense(1<<20))
}

func BenchmarkClassifyFHIRBundle(b *testing.B) {
	content, err := os.ReadFile("part2/testdata/fhir-r4-bundle-pretty.json")
	if err != nil {
		b.Fatal(err)
	}
	benchmark(b, content)
}

func benchmark(b *testing.B, content []byte) {
	e := newDefault(b)
	b.ReportAllocs()
	cpuLoop(b, len(content), func() { e.Classify(content) })
}

// FuzzClassify checks the engine's invariants on arbitrary input: no detector panics,
// matches are well-formed and bounded, offsets are inside the content, SSN samples
// never show more than four digits.
func FuzzClassify(f *testing.F) {
	files, _ := filepath.Glob("*/testdata/*.*")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil && len(b) < 8<<10 {
			f.Add(b)
		}
	}
	e := newDefault(f)
	f.Fuzz(func(t *testing.T, content []byte) {
		ms := e.Classify(content)
		if p := e.Stats().DetectorPanics; p != 0 {
			t.Fatalf("%d detector panics", p)
		}
		for _, m := range ms {
			if m.Count < 1 || m.Confidence < 0 || m.Confidence > 100 || len(m.Masked) != len(m.Fingerprints) ||
				len(m.Masked) > 5 || len(m.Offsets) > 16 || len(m.Offsets) > m.Count {
				t.Fatalf("malformed %+v", m)
			}
			for _, o := range m.Offsets {
				if o < 0 || o >= int64(len(content)) {
					t.Fatalf("offset %d outside %d bytes: %+v", o, len(content), m)
				}
			}
			if m.Detector == "phi.ssn" {
				for _, s := range m.Masked {
					if n := strings.Count(s, "*"); n != 5 {
						t.Fatalf("SSN sample %q shows more than four digits", s)
					}
				}
			}
		}
	})
}
