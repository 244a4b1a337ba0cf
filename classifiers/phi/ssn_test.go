package phi

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/ward-dlp/ward/classifiers/engine"
)

func newEngine(t testing.TB) *engine.Engine {
	t.Helper()
	e, err := engine.New(engine.Config{FingerprintKey: []byte("phi-test-key-0123456789")}, NewSSN())
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func ssnMatch(t *testing.T, e *engine.Engine, content string) *engine.Match {
	t.Helper()
	var found *engine.Match
	for _, m := range e.Classify([]byte(content)) {
		if m.Detector == "phi.ssn" {
			if m.Class != engine.PHI {
				t.Fatalf("class %v", m.Class)
			}
			found = &m
		}
	}
	return found
}

func TestSSNCases(t *testing.T) {
	cases := []struct {
		name, in string
		conf     int // 0: no match
		masked   string
	}{
		{"dashed keyword", "SSN: 219-45-8765", 85, "***-**-8765"},
		{"spaced keyword", "Social Security No. 219 45 8765", 85, "*** ** 8765"},
		{"bare keyword", "ss# 219458765", 75, "*****8765"},
		{"bare camel keyword", `"patientSSN":"219458765"`, 75, "*****8765"},
		{"bare fhir system", `{"system":"http://hl7.org/fhir/sid/us-ssn","value":"219458765"}`, 75, "*****8765"},
		{"bare cda oid after", `<id extension="219458765" root="2.16.840.1.113883.4.1"/>`, 75, "*****8765"},
		{"dashed no keyword", "Guarantor id 219-45-8765 on file", 65, "***-**-8765"},
		{"spaced no keyword", "ref 219 45 8765.", 65, "*** ** 8765"},
		{"bare no keyword", "order 219458765", 0, ""},
		{"keyword too far", "SSN" + strings.Repeat(" ", 200) + "219458765", 0, ""},
		{"keyword inside word", "classname 219458765", 0, ""},
		{"oid of another id", `<id root="2.16.840.1.113883.4.12" extension="219458765"/>`, 0, ""},
		{"area 000", "SSN 000-45-8765", 0, ""},
		{"area 666", "SSN 666-45-8765", 0, ""},
		{"area 900", "SSN 900-45-8765", 0, ""},
		{"area 999", "SSN 999-45-8765", 0, ""},
		{"group 00", "SSN 219-00-8765", 0, ""},
		{"serial 0000", "SSN 219-45-0000", 0, ""},
		{"all same", "SSN 555-55-5555", 0, ""},
		{"woolworth", "SSN 078-05-1120", 0, ""},
		{"sequence", "SSN 123-45-6789", 0, ""},
		{"sample 219-09-9999", "SSN 219-09-9999", 0, ""},
		{"sample 987-65-4329", "SSN 987-65-4329", 0, ""},
		{"mixed delimiters", "SSN 219-45 8765", 0, ""},
		{"mixed delimiters 2", "SSN 219 45-8765", 0, ""},
		{"dot delimiters", "SSN 219.45.8765", 0, ""},
		{"double dash", "SSN 219--45--8765", 0, ""},
		{"longer run after", "SSN 219-45-87650", 0, ""},
		{"longer run before", "SSN 1219-45-8765", 0, ""},
		{"ten bare digits", "SSN 2194587651", 0, ""},
		{"eight bare digits", "SSN 21945876", 0, ""},
		{"phone prefix", "SSN 1-219-45-8765", 0, ""},
		{"account suffix", "SSN 219-45-8765-01", 0, ""},
		{"decimal", "SSN 0.219458765", 0, ""},
		{"date-like tail", "SSN 219-45-8765/2026", 0, ""},
		{"letters attached", "SSN A219-45-8765", 0, ""},
		{"letters after", "SSN 219-45-8765B", 0, ""},
		{"spaced inside digit groups", "SSN 12 219 45 8765", 0, ""},
		{"sentence end", "Her SSN is 219-45-8765.", 85, "***-**-8765"},
		{"at start of content", "219-45-8765 is the SSN", 85, "***-**-8765"},
		{"at end of content", "SSN 219-45-8765", 85, "***-**-8765"},
	}
	e := newEngine(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := ssnMatch(t, e, c.in)
			if c.conf == 0 {
				if m != nil {
					t.Fatalf("%q: unexpected %+v", c.in, m)
				}
				return
			}
			if m == nil {
				t.Fatalf("%q: no match", c.in)
			}
			if m.Confidence != c.conf || m.Count != 1 || len(m.Masked) != 1 || m.Masked[0] != c.masked {
				t.Fatalf("%q: got %+v, want confidence %d mask %q", c.in, m, c.conf, c.masked)
			}
			off := int(m.Offsets[0])
			if got := c.in[off : off+len(c.masked)]; !strings.HasSuffix(got, c.masked[len(c.masked)-4:]) || strings.ContainsAny(got[:1], "-. ") {
				t.Fatalf("%q: offset %d points at %q", c.in, off, got)
			}
		})
	}
}

func TestValidSSN(t *testing.T) {
	valid := []string{"219458765", "001010001", "665999999", "899999998", "078051121", "772654319"}
	invalid := []string{"000458765", "666458765", "900458765", "999458765", "219008765", "219450000", "111111111", "078051120", "123456789", "219099999", "987654320", "987654325"}
	for _, s := range valid {
		if !validSSN([9]byte([]byte(s))) {
			t.Errorf("%s: rejected", s)
		}
	}
	for _, s := range invalid {
		if validSSN([9]byte([]byte(s))) {
			t.Errorf("%s: accepted", s)
		}
	}
}

// TestIntakeForm runs a realistic form: SSNs in three shapes, one of them repeated, and
// the numbers around them that must not count.
func TestIntakeForm(t *testing.T) {
	content, err := os.ReadFile("testdata/intake-form.txt")
	if err != nil {
		t.Fatal(err)
	}
	// Repeat the patient SSN: it must count twice but be sampled once.
	content = append(content, []byte("\nConfirm SSN 219-45-8765 on page 3.\n")...)
	e := newEngine(t)
	ms := e.Classify(content)
	if len(ms) != 1 {
		t.Fatalf("want one match, got %+v", ms)
	}
	m := ms[0]
	// 219-45-8765 twice (keyword), 529 63 1184 (keyword), 741062938 (keyword, bare) and the
	// SSN-shaped employee number 604-27-3519 (formatted, no keyword: 65). Everything else on
	// the form is a phone, date, accession, claim or member number and must not count.
	if m.Count != 5 || m.Confidence != 85 {
		t.Errorf("count %d confidence %d, want 5 and 85", m.Count, m.Confidence)
	}
	wantMasks := []string{"***-**-8765", "*** ** 1184", "*****2938", "***-**-3519"}
	if fmt.Sprint(m.Masked) != fmt.Sprint(wantMasks) || len(m.Fingerprints) != len(wantMasks) {
		t.Errorf("masked %q fingerprints %d, want %q", m.Masked, len(m.Fingerprints), wantMasks)
	}
	for _, off := range m.Offsets {
		digits := strings.Map(func(r rune) rune {
			if r >= '0' && r <= '9' {
				return r
			}
			return -1
		}, string(content[off:off+11]))
		if len(digits) < 9 {
			t.Errorf("offset %d points at %q", off, content[off:off+11])
		}
	}
	assertNoRaw(t, ms, "219-45-8765", "529 63 1184", "741062938", "604273519", "312584097", "604-27-3519")
}

// assertNoRaw scans the whole printed match list for each raw value in every shape.
func assertNoRaw(t *testing.T, ms []engine.Match, raws ...string) {
	t.Helper()
	dump := fmt.Sprintf("%+v", ms)
	for _, raw := range raws {
		digits := strings.NewReplacer("-", "", " ", "").Replace(raw)
		shapes := []string{raw, digits, digits[:3] + "-" + digits[3:5] + "-" + digits[5:], digits[:3] + " " + digits[3:5] + " " + digits[5:], digits[:5]}
		for _, s := range shapes {
			if strings.Contains(dump, s) {
				t.Errorf("raw value %q (as %q) leaked into %s", raw, s, dump)
			}
		}
	}
}

// TestFingerprintsAreKeyed: same value, same key, same fingerprint across shapes; another
// key, another fingerprint.
func TestFingerprintsAreKeyed(t *testing.T) {
	e1 := newEngine(t)
	e2, err := engine.New(engine.Config{FingerprintKey: []byte("another-tenant-key-000")}, NewSSN())
	if err != nil {
		t.Fatal(err)
	}
	a := ssnMatch(t, e1, "SSN 219-45-8765")
	b := ssnMatch(t, e1, "SSN 219 45 8765")
	c := ssnMatch(t, e2, "SSN 219-45-8765")
	if a.Fingerprints[0] != b.Fingerprints[0] {
		t.Error("fingerprint depends on the shape")
	}
	if a.Fingerprints[0] == c.Fingerprints[0] {
		t.Error("fingerprint does not depend on the key")
	}
}
