package part2

import (
	"bytes"
	"os"
	"path/filepath"
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
