package part2

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func addFixtures(f *testing.F, pattern string) {
	files, err := filepath.Glob(filepath.Join("testdata", pattern))
	if err != nil {
		f.Fatal(err)
	}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		// Keep seeds small: the fuzzer minimises what it finds, and big inputs make that slow.
		b = b[:min(len(b), 8<<10)]
		f.Add(b)
		f.Add(b[:len(b)/2]) // truncated writes are a real case
	}
}

// FuzzFHIRWalker: any input, no panic; every emitted label set is a real Part 2 signal
// with its offset inside the content pointing at an object.
func FuzzFHIRWalker(f *testing.F) {
	addFixtures(f, "*.json")
	addFixtures(f, "*.ndjson")
	f.Fuzz(func(t *testing.T, content []byte) {
		walkFHIR(content, func(ls *labelSet) {
			if ls.n == 0 {
				t.Fatal("empty label set emitted")
			}
			if ls.top.sig == sigNone {
				return // R alone: emitted, then rejected by verdict
			}
			if ls.top.off < 0 || ls.top.off >= len(content) || content[ls.top.off] != '{' {
				t.Fatalf("label offset %d does not point at an object", ls.top.off)
			}
			if _, _, ok := ls.verdict(); !ok || ls.top.code == "" || ls.top.system == "" {
				t.Fatalf("bad label set %+v", ls)
			}
		})
	})
}

// FuzzCDAWalker: any input, no panic, offsets inside the content.
func FuzzCDAWalker(f *testing.F) {
	addFixtures(f, "*.xml")
	f.Add([]byte(`<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><ClinicalDocument><confidentialityCode code="R" codeSystem="2.16.840.1.113883.5.25"/>&e;</ClinicalDocument>`))
	m := newNoticeMatcher()
	f.Fuzz(func(t *testing.T, content []byte) {
		res := walkCDA(content, m)
		if res.rOff >= len(content) || res.rOff < -1 {
			t.Fatalf("R offset %d outside %d bytes", res.rOff, len(content))
		}
		if res.labels.top.sig != sigNone && (res.labels.top.off < 0 || res.labels.top.off >= len(content) || content[res.labels.top.off] != '<') {
			t.Fatalf("label offset %d does not point at an element", res.labels.top.off)
		}
		if res.notice.score > 0 && res.notice.first < 0 {
			t.Fatalf("notice score %d without a position", res.notice.score)
		}
	})
}

// FuzzNormalize checks the normaliser's contract: lower case, single spaces, never longer
// than its input, and one in-range, non-decreasing source offset per output byte.
func FuzzNormalize(f *testing.F) {
	addFixtures(f, "*.txt")
	addFixtures(f, "*.hl7")
	f.Add([]byte(`a\.br\b\X00A7\c\F\d\E\\e\u00a0f&nbsp;g<br/>h<`))
	f.Fuzz(func(t *testing.T, src []byte) {
		var n normalizer
		n.track = true
		n.reset()
		const base = 1000
		n.write(src, base)
		if len(n.out) > len(src) || len(n.offs) != len(n.out) {
			t.Fatalf("out %d offs %d src %d", len(n.out), len(n.offs), len(src))
		}
		if bytes.Contains(n.out, []byte("  ")) || bytes.ContainsAny(n.out, "ABCDEFGHIJKLMNOPQRSTUVWXYZ\t\n\r") {
			t.Fatalf("not normalised: %q", n.out)
		}
		for i, o := range n.offs {
			if o < base || o >= base+len(src) || i > 0 && o <= n.offs[i-1] {
				t.Fatalf("offset %d at %d (src %d bytes)", o, i, len(src))
			}
		}
		m := newNoticeMatcher()
		if res := m.match(n.out); res.score > 0 && (res.first < 0 || res.first >= len(n.out)) {
			t.Fatalf("match position %d outside %d", res.first, len(n.out))
		}
	})
}

// FuzzHL7v2Message: any message bytes, no panic; every emitted label is a Part 2 signal
// with a code and a system, positioned inside the message's segment offsets.
func FuzzHL7v2Message(f *testing.F) {
	addFixtures(f, "*.hl7")
	f.Add([]byte("MSH|^~\\&|A|B|C|D|20260101||ORM^O01|1|P|2.9||||||||||||||R^Restricted^HL70952\rORC|NW||||||||||||||||||||||||||ETH^alcohol/drug^HL70177~R\r"))
	f.Add([]byte("MSH|^~\\&\rARV|1|A|PSY^^HL70717|||\r"))
	f.Add([]byte("MSH^^^^"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		const base = 100
		ls := hl7Message(msg, base)
		conf, _, ok := ls.verdict()
		if !ok {
			return
		}
		if conf < 0 || conf > 100 || ls.top.code == "" || ls.top.system == "" {
			t.Fatalf("bad verdict %d %+v", conf, ls.top)
		}
		if ls.top.off < base || ls.top.off >= base+len(msg) {
			t.Fatalf("label offset %d outside [%d, %d)", ls.top.off, base, base+len(msg))
		}
	})
}

// FuzzFHIRXMLWalker: any input, no panic, no entity expansion; an emitted Part 2 label
// set has a code and a system and points at an element of the content.
func FuzzFHIRXMLWalker(f *testing.F) {
	addFixtures(f, "fhir-xml-*.xml")
	f.Add([]byte(`<Bundle xmlns="http://hl7.org/fhir"><entry><resource><Patient><meta><security><system value="http://terminology.hl7.org/CodeSystem/v3-ActCode"/><code value="42CFRPart2"/></security></meta></Patient></resource></entry></Bundle>`))
	f.Add([]byte(`<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]><Consent><provision><securityLabel><system value="&b;"/><code value="R"/></securityLabel></provision></Consent>`))
	f.Add([]byte(strings.Repeat("<a>", 5000)))
	f.Fuzz(func(t *testing.T, content []byte) {
		walkFHIRXML(content, func(ls *labelSet) {
			if ls.n == 0 {
				t.Fatal("empty label set emitted")
			}
			if ls.top.sig == sigNone {
				return
			}
			if _, _, ok := ls.verdict(); ok && (ls.top.code == "" || ls.top.system == "") {
				t.Fatalf("label without code or system: %+v", ls.top)
			}
			if ls.top.off < 0 || ls.top.off >= len(content) || content[ls.top.off] != '<' {
				t.Fatalf("label offset %d does not point at an element", ls.top.off)
			}
		})
	})
}
