package part2

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ward-dlp/ward/classifiers/engine"
)

func newEngine(t testing.TB) *engine.Engine {
	t.Helper()
	e, err := engine.New(engine.Config{FingerprintKey: []byte("part2-test-key-0123456789")}, NewFHIRLabels(), NewCDA(), NewNotice())
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func find(ms []engine.Match, detector string) *engine.Match {
	for i := range ms {
		if ms[i].Detector == detector {
			return &ms[i]
		}
	}
	return nil
}

// want describes the expected Part 2 match of one detector on one fixture.
type want struct {
	detector   string
	confidence int
	count      int
	masked     string
	evidence   []string
}

func TestFixtures(t *testing.T) {
	const (
		act  = "system=http://terminology.hl7.org/CodeSystem/v3-ActCode"
		fhir = "part2.fhir-label"
	)
	cases := []struct {
		file  string
		wants []want // empty: no Part 2 match from any detector
	}{
		{"fhir-r4-bundle-pretty.json", []want{{fhir, 98, 1, "42CFRPart2", []string{act + " code=42CFRPart2 at entry[].resource.meta.security[]", "with confidentiality R"}}}},
		{"fhir-r4-bundle-min.json", []want{{fhir, 98, 1, "42CFRPart2", []string{act + " code=42CFRPart2 at entry[].resource.meta.security[]"}}}},
		{"fhir-r4.ndjson", []want{{fhir, 98, 2, "42CFRPart2", []string{act + " code=42CFRPart2 at meta.security[]"}}}},
		{"fhir-stu3-legacy-privacylaw.json", []want{{fhir, 98, 1, "42CFRPart2", []string{"system=http://hl7.org/fhir/v3/ActUSPrivacyLaw code=42CFRPart2", "with confidentiality R"}}}},
		{"fhir-docref-securitylabel.json", []want{{fhir, 93, 1, "ETH", []string{"system=urn:oid:2.16.840.1.113883.5.4 code=ETH at securityLabel[].coding[]", "with confidentiality R"}}}},
		{"fhir-consent-provision.json", []want{{fhir, 95, 1, "42CFRPart2CD", []string{"code=42CFRPart2CD at provision.securityLabel[]"}}}},
		{"fhir-inline-label.json", []want{{fhir, 90, 1, "OPIOIDUD", []string{"code=OPIOIDUD at code.extension[].valueCoding"}}}},
		// Decision: v2 table 0177 ETH ("alcohol/drug treatment patient", what the v2-to-FHIR
		// mapping of ORC-28 produces) is an explicit, system-qualified SUD flag: Part 2 at 80,
		// below ActCode's 90 because FHIR profiles do not name this table for labels.
		{"fhir-v2-0177-eth.json", []want{{fhir, 80, 1, "ETH", []string{"system=http://terminology.hl7.org/CodeSystem/v2-0177 code=ETH at entry[].resource.meta.security[]"}}}},
		{"crypto-price-feed.json", nil},
		// R alone, with "ETH" as a country and under a foreign system: restricted, not Part 2.
		{"fhir-patient-ethiopia-restricted.json", nil},
		{"ccda-r-notice-2018.xml", []want{
			{"part2.cda", 97, 1, "R+notice", []string{"confidentialityCode=R (2.16.840.1.113883.5.25) at ClinicalDocument/confidentialityCode", "version 2018", "DS4P privacy markings"}},
			{"part2.notice", 95, 1, "notice-2018", []string{"version 2018", "general-authorization"}},
		}},
		{"ccda-prefixed-section-r-eth-2020.xml", []want{
			{"part2.cda", 97, 1, "R+notice", []string{"at ClinicalDocument/component/structuredBody/component/section/confidentialityCode", "version 2020"}},
			{"part2.notice", 95, 1, "notice-2020", nil},
		}},
		// Decision: R without the notice or an SUD/Part 2 code is not Part 2 (R also covers
		// psychotherapy notes, HIV, VIP records).
		{"ccda-r-only.xml", nil},
		{"ccda-social-history-alcohol.xml", nil},
		{"letter-1987.txt", []want{{"part2.notice", 95, 1, "notice-1987", []string{"version 1987"}}}},
		{"letter-2018.txt", []want{{"part2.notice", 95, 1, "notice-2018", []string{"heading"}}}},
		{"letter-2020.txt", []want{{"part2.notice", 95, 1, "notice-2020", []string{"heading"}}}},
		{"letter-2024.txt", []want{{"part2.notice", 95, 1, "notice-2024", []string{"proceedings", "heading"}}}},
		{"letter-short-statement.txt", []want{{"part2.notice", 85, 1, "notice", []string{"citation,unauthorized-disclosure"}}}},
		{"hl7v2-mdm-znt-notice.hl7", []want{{"part2.notice", 95, 1, "notice-2018", nil}}},
	}
	e := newEngine(t)
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			content := fixture(t, c.file)
			ms := e.Classify(content)
			var part2 []string
			for _, m := range ms {
				if m.Class == engine.Part2 {
					part2 = append(part2, m.Detector)
				}
			}
			if len(part2) != len(c.wants) {
				t.Fatalf("Part 2 matches from %v, want %d: %+v", part2, len(c.wants), ms)
			}
			for _, w := range c.wants {
				m := find(ms, w.detector)
				if m == nil {
					t.Fatalf("no match from %s: %+v", w.detector, ms)
				}
				if m.Class != engine.Part2 || m.Confidence != w.confidence || m.Count != w.count {
					t.Errorf("%s: class %v confidence %d count %d, want Part2 %d %d (evidence %q)", w.detector, m.Class, m.Confidence, m.Count, w.confidence, w.count, m.Evidence)
				}
				if len(m.Masked) == 0 || m.Masked[0] != w.masked || len(m.Fingerprints) != len(m.Masked) || len(m.Fingerprints[0]) != 64 {
					t.Errorf("%s: samples %q fingerprints %q, want %q", w.detector, m.Masked, m.Fingerprints, w.masked)
				}
				for _, ev := range w.evidence {
					if !strings.Contains(m.Evidence, ev) {
						t.Errorf("%s: evidence %q lacks %q", w.detector, m.Evidence, ev)
					}
				}
				if len(m.Offsets) != min(m.Count, 16) {
					t.Errorf("%s: %d offsets for count %d", w.detector, len(m.Offsets), m.Count)
				}
				for _, off := range m.Offsets {
					checkOffset(t, w.detector, content, int(off))
				}
			}
		})
	}
}

// checkOffset asserts an offset points at what was matched: a JSON coding object or XML
// element carrying a trusted system, or the start of a notice fragment.
func checkOffset(t *testing.T, detector string, content []byte, off int) {
	t.Helper()
	if off < 0 || off >= len(content) {
		t.Fatalf("%s: offset %d out of range", detector, off)
	}
	switch detector {
	case "part2.fhir-label":
		end := bytes.IndexByte(content[off:], '}')
		if content[off] != '{' || end < 0 || !bytes.Contains(content[off:off+end], []byte(`"system"`)) {
			t.Errorf("%s: offset %d is not a coding object: %.60q", detector, off, content[off:])
		}
	case "part2.cda":
		if !bytes.HasPrefix(content[off:], []byte("<")) || !bytes.Contains(content[off:min(len(content), off+120)], []byte("2.16.840.1.113883.5.")) {
			t.Errorf("%s: offset %d is not a coded element: %.60q", detector, off, content[off:])
		}
	case "part2.notice":
		var n normalizer
		n.reset()
		n.write(content[off:min(len(content), off+400)], off)
		ok := false
		for _, f := range fragments {
			for _, v := range f.variants {
				ok = ok || bytes.HasPrefix(n.out, []byte(v))
			}
		}
		if !ok {
			t.Errorf("%s: offset %d does not start a fragment: %.60q", detector, off, content[off:])
		}
	}
}

// TestTruncatedBundle cuts the bundle at every byte: once the labelled resource's
// security array is complete the label must be found, and never before its code appears.
func TestTruncatedBundle(t *testing.T) {
	e := newEngine(t)
	for _, name := range []string{"fhir-r4-bundle-pretty.json", "fhir-r4-bundle-min.json"} {
		content := fixture(t, name)
		codeAt := bytes.Index(content, []byte(`"42CFRPart2"`))
		sec := bytes.Index(content[codeAt:], []byte("]")) + codeAt + 1
		if codeAt < 0 || sec <= codeAt {
			t.Fatal("fixture lost its label")
		}
		for cut := 1; cut <= len(content); cut++ {
			m := find(e.Classify(content[:cut]), "part2.fhir-label")
			switch {
			case cut < codeAt && m != nil:
				t.Fatalf("%s cut %d: label found before it appears: %+v", name, cut, m)
			case cut >= sec && (m == nil || m.Confidence < 95):
				t.Fatalf("%s cut %d: label lost after its security array (%d): %+v", name, cut, sec, m)
			}
		}
	}
}

// TestNDJSONResync checks that a damaged line does not hide labels on later lines.
func TestNDJSONResync(t *testing.T) {
	lines := bytes.SplitAfter(fixture(t, "fhir-r4.ndjson"), []byte("\n"))
	var b bytes.Buffer
	for i, l := range lines {
		if i == 1 {
			b.WriteString(`{"resourceType":"Observation","status":"fin` + "\n") // truncated line
			b.WriteString("not json at all\n")
		}
		b.Write(l)
	}
	m := find(newEngine(t).Classify(b.Bytes()), "part2.fhir-label")
	if m == nil || m.Count != 2 {
		t.Fatalf("want both labelled resources after a bad line, got %+v", m)
	}
}

// TestLabelsNeedTheirSystem pins the rule that a code counts only with a trusted system in
// the same object: the same codes split across objects, or with near-miss systems, are not
// Part 2.
func TestLabelsNeedTheirSystem(t *testing.T) {
	e := newEngine(t)
	for _, doc := range []string{
		`{"meta":{"security":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode"},{"code":"42CFRPart2"}]}}`,
		`{"meta":{"security":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","display":"42CFRPart2"}]}}`,
		`{"meta":{"security":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCodeX","code":"ETH"}]}}`,
		`{"meta":{"security":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ActUSPrivacyLaw","code":"ETH"}]}}`,
		`{"meta":{"security":[{"system":"http://terminology.hl7.org/CodeSystem/v3-Confidentiality","code":"R"}]}}`,
		`{"meta":{"security":[{"system":"http://terminology.hl7.org/CodeSystem/v2-0177","code":"PSY"}]}}`,
		`{"system":{"code":"42CFRPart2"},"note":"v3-ActCode"}`,
	} {
		if ms := e.Classify([]byte(doc)); len(ms) != 0 {
			t.Errorf("%s: got %+v", doc, ms)
		}
	}
	// R belongs to the resource it sits on: a restricted Bundle does not lift an entry's
	// ETH, and the entry's ETH with its own R does.
	bundle := `{"resourceType":"Bundle","meta":{"security":[{"system":"http://terminology.hl7.org/CodeSystem/v3-Confidentiality","code":"R"}]},` +
		`"entry":[{"resource":{"resourceType":"Observation","meta":{"security":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"ETH"}]}}},` +
		`{"resource":{"resourceType":"Observation","meta":{"security":[{"code":"ETH","system":"http://terminology.hl7.org/CodeSystem/v3-ActCode"},{"code":"R","system":"urn:oid:2.16.840.1.113883.5.25"}]}}}]}`
	m := find(e.Classify([]byte(bundle)), "part2.fhir-label")
	if m == nil || m.Count != 2 || m.Confidence != 93 {
		t.Fatalf("got %+v, want two resources, best 93", m)
	}
}

func TestNoticeNegatives(t *testing.T) {
	e := newEngine(t)
	for _, doc := range []string{
		"Our privacy policy follows HIPAA and 42 CFR Part 2 where applicable.",
		"Patient disclosed alcohol use of 2-3 drinks per week; no authorization forms signed today.",
		"Social history: Alcohol use - occasional. Drug use - denies. Tobacco - never.",
		strings.Repeat("disclosed cfr authorization ", 400),
	} {
		if ms := e.Classify([]byte(doc)); len(ms) != 0 {
			t.Errorf("%.60q: got %+v", doc, ms)
		}
	}
}

func TestNormalize(t *testing.T) {
	cases := []struct{ in, out string }{
		{"42 CFR\r\n  Part 2", "42 cfr part 2"},
		{"prohibits unauthorized<br/>disclosure of these<BR />\nrecords", "prohibits unauthorized disclosure of these records"},
		{`further\.br\disclosure\X00A7\ a\F\b\E\c\H\bold\N\`, `further disclosure a|b\cbold`},
		{`"line one\nline two \"q\" \u00a0x"`, `"line one line two "q" x"`},
		{"a&nbsp;&amp;&#160;b &copy;", "a & b &copy;"},
		{"x\u00a0\u00a0y", "x y"},
		{"a < b and c<d", "a < b and c<d"}, // "<d" with no closing ">" is text
		{"trailing\\", "trailing\\"},
	}
	for _, c := range cases {
		var n normalizer
		n.track = true
		n.reset()
		n.write([]byte(c.in), 0)
		if string(n.out) != c.out {
			t.Errorf("normalize(%q) = %q, want %q", c.in, n.out, c.out)
		}
		if len(n.offs) != len(n.out) {
			t.Errorf("normalize(%q): %d offsets for %d bytes", c.in, len(n.offs), len(n.out))
		}
	}
}

func TestNoticeAcrossEveryLineBreak(t *testing.T) {
	// Re-wrap the 2018 letter at every width from 20 to 120: the score must not move.
	base := fixture(t, "letter-2018.txt")
	flat := strings.Join(strings.Fields(string(base)), " ")
	e := newEngine(t)
	for width := 20; width <= 120; width += 7 {
		var b strings.Builder
		col := 0
		for _, w := range strings.Fields(flat) {
			if col+len(w) > width {
				b.WriteString("\n")
				col = 0
			} else if col > 0 {
				b.WriteString(" ")
			}
			b.WriteString(w)
			col += len(w) + 1
		}
		m := find(e.Classify([]byte(b.String())), "part2.notice")
		if m == nil || m.Confidence != 95 || m.Masked[0] != "notice-2018" {
			t.Fatalf("width %d: %+v", width, m)
		}
	}
}

func ExampleNewFHIRLabels() {
	e, err := engine.New(engine.Config{FingerprintKey: []byte("example-key-0123456789")}, NewFHIRLabels())
	if err != nil {
		panic(err)
	}
	ms := e.Classify([]byte(`{"resourceType":"Condition","meta":{"security":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"42CFRPart2"}]}}`))
	fmt.Println(ms[0].Detector, ms[0].Class, ms[0].Confidence, ms[0].Masked, ms[0].Evidence)
	// Output: part2.fhir-label Part2 95 [42CFRPart2] system=http://terminology.hl7.org/CodeSystem/v3-ActCode code=42CFRPart2 at meta.security[]
}

func TestFragmentTableFits(t *testing.T) {
	if len(fragments) > 16 {
		t.Fatalf("%d fragment groups; noticeMatcher.match keeps 16", len(fragments))
	}
	for _, f := range fragments {
		for _, v := range f.variants {
			var n normalizer
			n.reset()
			n.write([]byte(v), 0)
			if string(n.out) != v || len(v) < 4 {
				t.Errorf("variant %q is not in normalised form (or shorter than 4)", v)
			}
		}
	}
	for _, v := range versionMarkers {
		if len(v.phrase) < 4 {
			t.Errorf("marker %q shorter than 4", v.phrase)
		}
	}
}
