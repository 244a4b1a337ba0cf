package defs

import (
	"bytes"
	"os"
	"testing"
)

// FuzzDefinitions: any override file either loads into definitions that validate and
// build, or fails with an error naming the file; never a panic.
func FuzzDefinitions(f *testing.F) {
	org, err := os.ReadFile("testdata/org-overrides.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(org)
	f.Add(builtinYAML)
	f.Add([]byte("version: 1\ndetectors:\n  - {id: org.x, version: 1, kind: pattern, class: PHI, pattern: 'A\\\\-###-####', confidence: 80}\n"))
	f.Add([]byte("version: 1\ndetectors:\n  - id: sud.codes\n    lists: {hcpcs: [H0001..H0009]}\n"))
	f.Add([]byte("version: 1\ndetectors: &a [*a]\n"))
	base, err := Builtin()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := base.Override("fuzz.yaml", bytes.NewReader(data))
		if err != nil {
			if !bytes.Contains([]byte(err.Error()), []byte("fuzz.yaml")) {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		for _, d := range s.Definitions() {
			if err := validate(&d); err != nil {
				t.Fatalf("loaded definition %s does not validate: %v", d.ID, err)
			}
			if d.Kind == KindPattern {
				if _, err := NewPattern(d); err != nil {
					t.Fatalf("loaded pattern %s does not build: %v", d.ID, err)
				}
			}
		}
	})
}
