package defs

import (
	"os"
	"strings"
	"testing"

	"github.com/ward-dlp/ward/classifiers/engine"
)

func TestBuiltinDefinitions(t *testing.T) {
	s, err := Builtin()
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, d := range s.Definitions() {
		ids[d.ID] = true
		if d.Kind != KindBuiltin || d.DataClass() == engine.ClassUnspecified || d.Description == "" {
			t.Errorf("%s: kind %q class %q description %q", d.ID, d.Kind, d.Class, d.Description)
		}
	}
	for _, id := range []string{"part2.fhir-label", "part2.cda", "part2.notice", "part2.hl7v2", "phi.ssn", "phi.npi", "phi.dea",
		"phi.mbi", "phi.phone", "phi.email", "phi.dob", "phi.mrn", "phi.address", "sud.codes", "part2.probable-record",
		"edm.part2-patient", "fingerprint.part2-document"} {
		if !ids[id] {
			t.Errorf("no built-in definition for %s", id)
		}
	}
	sud, _ := s.Get("sud.codes")
	hc := sud.List("hcpcs")
	for _, c := range []string{"H0005", "H0010", "H0015", "T1006", "T1012", "G2067", "G2080", "G0532", "G0536", "99408"} {
		if !strings.Contains(","+strings.Join(hc, ",")+",", ","+c+",") {
			t.Errorf("hcpcs list lacks %s (range expansion)", c)
		}
	}
	if strings.Contains(strings.Join(hc, ","), "H0016") || strings.Contains(strings.Join(hc, ","), "G0531") {
		t.Error("range expanded past its end")
	}
}

func TestOverride(t *testing.T) {
	base, err := Builtin()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("testdata/org-overrides.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s, err := base.Override("org-overrides.yaml", f)
	if err != nil {
		t.Fatal(err)
	}
	ph, _ := s.Get("phi.phone")
	if ph.IsEnabled() || len(ph.Keywords) == 0 || ph.KeywordBefore != 48 {
		t.Errorf("phone: enabled=%v, tunables must survive a partial override: %+v", ph.IsEnabled(), ph)
	}
	ssn, _ := s.Get("phi.ssn")
	if ssn.Version != 3 || ssn.Keywords[0].Text != "ssn" || ssn.Keywords[len(ssn.Keywords)-1].Name != "taxpayer-id" {
		t.Errorf("ssn keywords not extended: %+v", ssn.Keywords)
	}
	orig, _ := base.Get("phi.ssn")
	if len(orig.Keywords) != len(ssn.Keywords)-1 || orig.Version != 2 {
		t.Error("override changed the base set")
	}
	em, _ := s.Get("phi.email")
	if em.MinConfidence != 60 || em.Version != 2 || em.KeywordBefore != 64 {
		t.Errorf("email: %+v", em)
	}
	c, ok := s.Get("org.client-id")
	if !ok || c.Kind != KindPattern || c.Window != 64 {
		t.Errorf("org.client-id: %+v (window default 64)", c)
	}
}

// TestErrorsNameFileAndEntry: every kind of bad input is an error that says where.
func TestErrorsNameFileAndEntry(t *testing.T) {
	cases := map[string]struct{ yaml, want string }{
		"unknown key":   {"version: 1\ndetectors:\n  - id: phi.ssn\n    keywrods: [x]\n", "keywrods"},
		"schema":        {"version: 2\ndetectors: []\n", "version 2"},
		"no id":         {"version: 1\ndetectors:\n  - enabled: false\n", "without an id"},
		"kind change":   {"version: 1\ndetectors:\n  - id: phi.ssn\n    kind: pattern\n", `detectors[0] "phi.ssn"`},
		"bad class":     {"version: 1\ndetectors:\n  - {id: org.x, version: 1, kind: pattern, class: PII, pattern: '######', confidence: 80}\n", `class "PII"`},
		"short pattern": {"version: 1\ndetectors:\n  - {id: org.x, version: 1, kind: pattern, class: PHI, pattern: '##', confidence: 80}\n", "4.."},
		"unanchored":    {"version: 1\ndetectors:\n  - {id: org.x, version: 1, kind: pattern, class: PHI, pattern: 'AB-@@@##', confidence: 80}\n", "needs a run"},
		"bad id":        {"version: 1\ndetectors:\n  - {id: 'Org X', version: 1, kind: pattern, class: PHI, pattern: '######', confidence: 80}\n", "id"},
		"confidence":    {"version: 1\ndetectors:\n  - {id: org.x, version: 1, kind: pattern, class: PHI, pattern: '######', confidence: 101}\n", "confidence"},
		"bad range":     {"version: 1\ndetectors:\n  - id: sud.codes\n    lists: {hcpcs: [H0005..G0010]}\n", "range"},
		"window":        {"version: 1\ndetectors:\n  - id: phi.ssn\n    keyword_before: 100000\n", "keyword_before"},
		"too many kws":  {"version: 1\ndetectors:\n  - id: phi.ssn\n    keywords: [" + strings.Repeat("a,", 70) + "a]\n", "keywords"},
		"new no kind":   {"version: 1\ndetectors:\n  - id: org.new\n    version: 1\n", "kind"},
		"checksum":      {"version: 1\ndetectors:\n  - {id: org.x, version: 1, kind: pattern, class: PHI, pattern: '######', confidence: 80, checksum: crc}\n", "checksum"},
		"not yaml":      {"version: 1\ndetectors: {a: [}\n", "org.yaml"},
		"empty":         {"", "empty"},
	}
	base, err := Builtin()
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range cases {
		_, err := base.Override("org.yaml", strings.NewReader(c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "org.yaml") {
			t.Errorf("%s: error %v, want one naming org.yaml and containing %q", name, err, c.want)
		}
	}
	if _, err := Parse("dup.yaml", strings.NewReader("version: 1\ndetectors:\n  - {id: org.x, version: 1, kind: pattern, class: PHI, pattern: '######', confidence: 80}\n  - {id: org.x, version: 1, kind: pattern, class: PHI, pattern: '######', confidence: 80}\n")); err == nil || !strings.Contains(err.Error(), "duplicate") {
		t.Errorf("duplicate id: %v", err)
	}
}

func TestPatternShapes(t *testing.T) {
	off, n := longestDigitGroup(mustShape(t, "RB ######## #"))
	if off != 3 || n != 8 {
		t.Errorf("group %d,%d", off, n)
	}
	if _, n := longestDigitGroup(mustShape(t, "*######")); n != 0 {
		t.Errorf("a group next to '*' cannot anchor on an exact digit run, got %d", n)
	}
	if !luhn([]byte("RB 79927398 713")) || luhn([]byte("RB 79927398 710")) {
		t.Error("luhn")
	}
}

func mustShape(t *testing.T, s string) []patItem {
	t.Helper()
	p, err := parseShape(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestKeywordSet(t *testing.T) {
	ks := NewKeywordSet([]Keyword{{Text: "ssn", Name: "ssn"}, {Text: "113883.4.1", Name: "oid"}})
	for s, want := range map[string]int{
		"patient SSN: x": 0, "patientSSN x": 0, "SSNs": 0, "lessn": -1, "ssnumber": -1,
		"root=2.16.840.1.113883.4.1 ": 1, "2.16.840.1.113883.4.12": -1, "2.16.840.1.113883.4.1.5": -1,
	} {
		if got := ks.Find([]byte(s), 0, len(s)); got != want {
			t.Errorf("%q: %d, want %d", s, got, want)
		}
	}
}
