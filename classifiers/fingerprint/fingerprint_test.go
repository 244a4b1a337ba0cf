package fingerprint

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/ward-dlp/ward/classifiers/engine"
)

var key = []byte("fingerprint-test-key-0001")

func params() Params { return Params{K: DefaultK, W: DefaultW} }

func loadDoc(t testing.TB) string {
	b, err := os.ReadFile("testdata/discharge-summary-part2.txt")
	if err != nil {
		t.Fatal(err)
	}
	docText = string(b)
	return docText
}

// narrative returns the document without its §2.32 notice (the label a copy would lose).
func narrative(doc string) string {
	i := strings.Index(doc, "This record which has been disclosed")
	return doc[:i]
}

// rewrap joins the words of s into lines of width columns, as a mail client or a copy
// into another editor does.
func rewrap(s string, width int) string {
	var b strings.Builder
	col := 0
	for _, w := range strings.Fields(s) {
		if col+len(w) > width && col > 0 {
			b.WriteString("\r\n")
			col = 0
		} else if col > 0 {
			b.WriteByte(' ')
			col++
		}
		b.WriteString(w)
		col += len(w)
	}
	return b.String()
}

// excerpt returns a contiguous run of the words of s, starting at fraction from of s and
// as long as fraction frac of the whole labelled document (so "35%" is 35% of what was
// indexed, not of the narrative).
func excerpt(s string, from, frac float64) string {
	w := strings.Fields(s)
	total := len(strings.Fields(docText))
	a := int(float64(len(w)) * from)
	n := int(float64(total) * frac)
	return strings.Join(w[a:min(len(w), a+n)], " ")
}

// docText is the labelled document, read once by TestMain-free lazy loading in loadDoc.
var docText string

func newIndex(t testing.TB, docs ...string) *Index {
	t.Helper()
	x, err := NewIndex(key, params())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range docs {
		if _, _, _, err := x.Add([]byte(d)); err != nil {
			t.Fatal(err)
		}
	}
	return x
}

func classify(t testing.TB, x *Index, content string) []engine.Match {
	t.Helper()
	d, err := NewDetector(x, 0)
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.New(engine.Config{FingerprintKey: key}, d)
	if err != nil {
		t.Fatal(err)
	}
	return e.Classify([]byte(content))
}

const otherNote = `RIVERBEND RECOVERY CENTER - OPIOID TREATMENT PROGRAM
DISCHARGE SUMMARY (SYNTHETIC TEST RECORD)

Patient: Jordan P. Example    MRN: RB-0051177    DOB: 11/02/1990
Admission: 2026-02-02    Discharge: 2026-03-20    Level of care: ASAM 3.5 -> 2.1

Reason for admission
Mr. Example is a 35-year-old man who self-referred after losing his warehouse job for
repeated absences; he has used methamphetamine and alcohol since his discharge from the
Army in 2014, with two prior detox admissions and no maintenance treatment.

Hospital course
Alcohol withdrawal was managed with a symptom-triggered chlordiazepoxide protocol; CIWA
peaked at 14 on day two. Contingency management for stimulant use began in week two and
he earned vouchers for eleven consecutive negative screens. Sleep improved with
trazodone. Liver enzymes were twice the upper limit of normal and trending down.

Psychosocial
He lives alone in a studio near the Gateway transit center and has reconnected with his
older brother, a welder in Gresham, who drove him to the family session.

Discharge plan
Intensive outpatient three evenings a week, weekly contingency management visits, and a
VA appointment for his PTSD evaluation on April 2.

This record which has been disclosed to you is protected by federal confidentiality
rules (42 CFR part 2). The federal rules prohibit you from making any further disclosure
of this record unless further disclosure is expressly permitted by the written consent
of the individual whose information is being disclosed in this record or, is otherwise
permitted by 42 CFR part 2.
`

func TestPartialCopiesFound(t *testing.T) {
	doc := loadDoc(t)
	x := newIndex(t, doc, otherNote)
	text := narrative(doc)
	cases := map[string]string{
		"35% middle, rewrapped":        rewrap(excerpt(text, 0.3, 0.35), 58),
		"40% start, upper-cased":       strings.ToUpper(rewrap(excerpt(text, 0, 0.4), 72)),
		"50% end, in a DOCX paragraph": "<w:p><w:r><w:t xml:space=\"preserve\">" + strings.ReplaceAll(excerpt(text, 0.4, 0.5), "'", "&apos;") + "</w:t></w:r></w:p>",
		"two 20% pieces in an e-mail":  "Hi, see below.\n\n> " + rewrap(excerpt(text, 0.05, 0.2), 60) + "\n\nand later:\n\n> " + rewrap(excerpt(text, 0.6, 0.2), 60) + "\n-- \nsent from my phone",
		"35% with punctuation changes": strings.NewReplacer(",", "", ";", ".", "-", " ", "/", " ").Replace(excerpt(text, 0.2, 0.35)),
	}
	for name, c := range cases {
		ms := classify(t, x, c)
		if len(ms) != 1 || ms[0].Detector != DetectorName || ms[0].Class != engine.Part2 || ms[0].Confidence < 80 {
			t.Errorf("%s: not found as a copy: %+v", name, ms)
			continue
		}
		t.Logf("%s: %s", name, ms[0].Evidence)
		if strings.Contains(ms[0].Evidence, "Testpatient") || len(ms[0].Masked) != 1 || !strings.HasPrefix(ms[0].Masked[0], "fpdoc:") {
			t.Errorf("%s: evidence %q masked %v", name, ms[0].Evidence, ms[0].Masked)
		}
		if len(ms[0].Offsets) != 1 || int(ms[0].Offsets[0]) >= len(c) {
			t.Errorf("%s: offsets %v outside content", name, ms[0].Offsets)
		}
	}
}

func TestUnrelatedNotFound(t *testing.T) {
	doc := loadDoc(t)
	x := newIndex(t, doc)
	cases := map[string]string{
		// Same clinic template, same §2.32 notice, another patient's story.
		"same template and notice": otherNote,
		// A 15% excerpt is below the 30% threshold.
		"15% excerpt":    excerpt(narrative(doc), 0.3, 0.15),
		"general prose":  strings.Repeat("Patient seen for follow-up; BP 128/82, HR 74. Continue current plan and return in four weeks. ", 60),
		"empty":          "",
		"shorter than k": "buprenorphine",
	}
	for name, c := range cases {
		if ms := classify(t, x, c); len(ms) != 0 {
			t.Errorf("%s: reported %+v", name, ms)
		}
	}
}

func TestNormalise(t *testing.T) {
	for in, want := range map[string]string{
		"Hello,  World!\r\n":                          "helloworld",
		"<w:t xml:space=\"preserve\">Dose</w:t> 16/4": "dose164",
		"BP < 90 &amp; HR > 100":                      "bp90hr100",
		"Ärztin ÉCOLE naïve":                          "ärztinécolenaïve",
		"a\xffb":                                      "ab",
		"<!-- note --> <?xml version='1.0'?>x":        "x",
		"&#x2019;s &nbsp;q":                           "sq",
		"unterminated <tag and & more":                "unterminatedtagandmore",
	} {
		got, pos := Normalise(nil, []int32{}, []byte(in))
		if string(got) != want {
			t.Errorf("Normalise(%q) = %q, want %q", in, got, want)
		}
		if len(pos) != len(got) {
			t.Errorf("%q: %d positions for %d bytes", in, len(pos), len(got))
		}
	}
}

// TestWinnowGuarantee: any shared run of w+k-1 normalised bytes yields a shared
// fingerprint, whatever surrounds it.
func TestWinnowGuarantee(t *testing.T) {
	h, err := NewHasher(key, params())
	if err != nil {
		t.Fatal(err)
	}
	norm, _ := Normalise(nil, nil, []byte(loadDoc(t)))
	all := map[uint64]bool{}
	for _, p := range h.Winnow(nil, norm) {
		all[p.Value] = true
	}
	t.Logf("%d bytes normalised, %d fingerprints (density %.3f)", len(norm), len(all), float64(len(all))/float64(len(norm)))
	span := DefaultW + DefaultK - 1
	for start := 0; start+span <= len(norm); start += 7 {
		sub := append([]byte("zzzzqqqq"), norm[start:start+span]...)
		shared := false
		for _, p := range h.Winnow(nil, sub) {
			shared = shared || all[p.Value]
		}
		if !shared {
			t.Fatalf("run at %d of %d bytes shares no fingerprint", start, span)
		}
	}
	// Keyed: another key gives unrelated values.
	h2, _ := NewHasher([]byte("another-key-0000000001"), params())
	for _, p := range h2.Winnow(nil, norm) {
		if all[p.Value] {
			t.Fatal("values do not depend on the key")
		}
	}
}

func TestIndexFile(t *testing.T) {
	doc := loadDoc(t)
	x := newIndex(t, doc)
	if _, _, added, err := x.Add([]byte(doc)); added || err != nil {
		t.Errorf("same content added twice: %v %v", added, err)
	}
	if _, _, _, err := x.Add([]byte("too short to matter, really")); !errors.Is(err, ErrTooShort) {
		t.Errorf("short document: %v", err)
	}
	var buf bytes.Buffer
	if _, err := x.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	file := buf.Bytes()
	// Nothing of the text is in the file: no 6-byte piece of the normalised text, and no
	// word of the document.
	norm, _ := Normalise(nil, nil, []byte(doc))
	for i := 0; i+6 <= len(norm); i++ {
		if bytes.Contains(file, norm[i:i+6]) {
			t.Fatalf("index holds document text %q", norm[i:i+6])
		}
	}
	for _, w := range []string{"Testpatient", "RB-0048812", "03/14/1979", "fentanyl"} {
		if bytes.Contains(bytes.ToLower(file), bytes.ToLower([]byte(w))) {
			t.Fatalf("index holds %q", w)
		}
	}
	y, err := Load(bytes.NewReader(file), key)
	if err != nil {
		t.Fatal(err)
	}
	if y.Len() != 1 || len(y.Docs()[0].Values) != len(x.Docs()[0].Values) {
		t.Fatalf("round trip: %d docs", y.Len())
	}
	if ms := classify(t, y, excerpt(narrative(doc), 0.4, 0.4)); len(ms) != 1 {
		t.Errorf("loaded index does not match: %+v", ms)
	}
	if _, err := Load(bytes.NewReader(file), []byte("the-wrong-key-000000001")); !errors.Is(err, ErrWrongKey) {
		t.Errorf("wrong key: %v", err)
	}
	bad := bytes.Clone(file)
	bad[len(bad)/2] ^= 1
	if _, err := Load(bytes.NewReader(bad), key); err == nil {
		t.Error("corrupted index accepted")
	}
	if _, err := Load(bytes.NewReader(file[:len(file)-40]), key); err == nil {
		t.Error("truncated index accepted")
	}
	if _, err := NewIndex([]byte("short"), params()); err == nil {
		t.Error("short key accepted")
	}
	if _, err := NewDetector(y, 1.5); err == nil {
		t.Error("overlap 1.5 accepted")
	}
}

func FuzzNormaliseWinnow(f *testing.F) {
	f.Add([]byte(loadDoc(f)))
	f.Add([]byte("<w:t>x</w:t>&amp;&#x20;<"))
	f.Add([]byte("\xff\xfe<\x00a\x00"))
	h, err := NewHasher(key, Params{K: 8, W: 4})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		norm, pos := Normalise(nil, []int32{}, in)
		if len(pos) != len(norm) {
			t.Fatalf("%d positions for %d bytes", len(pos), len(norm))
		}
		for i, p := range pos {
			if p < 0 || int(p) >= len(in) || i > 0 && p < pos[i-1] {
				t.Fatalf("position %d = %d not increasing inside %d bytes", i, p, len(in))
			}
		}
		again, _ := Normalise(nil, nil, norm)
		if !bytes.Equal(again, norm) {
			t.Fatalf("normalising twice changes the text: %q -> %q", norm, again)
		}
		prints := h.Winnow(nil, norm)
		last := -1
		for _, p := range prints {
			if p.Pos <= last || p.Pos+8 > len(norm) {
				t.Fatalf("fingerprint position %d after %d in %d bytes", p.Pos, last, len(norm))
			}
			last = p.Pos
		}
		// Every window of w consecutive k-grams holds a selected fingerprint: the first is
		// within the first window, the last within the last, and gaps are at most w.
		if n := len(norm) - 8 + 1; n >= 4 {
			if len(prints) == 0 || prints[0].Pos > 3 || prints[len(prints)-1].Pos < n-4 {
				t.Fatalf("windows at the ends without a fingerprint (%d k-grams)", n)
			}
			for i := 1; i < len(prints); i++ {
				if prints[i].Pos-prints[i-1].Pos > 4 {
					t.Fatalf("gap of %d k-grams between fingerprints", prints[i].Pos-prints[i-1].Pos)
				}
			}
		}
	})
}
