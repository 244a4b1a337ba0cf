// Package defs holds Ward's detector definitions as data: which detectors run, at what
// version and minimum confidence, and their tunables (context keywords, proximity windows,
// code lists). The built-in definitions are embedded (builtin.yaml); an organisation's
// override file can disable, re-tune or add detectors without a new binary, which is what
// lets policy evolve faster than releases. Files are decoded strictly (unknown keys are
// errors) and validated, and every error names the file and the entry.
package defs

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/ward-dlp/ward/classifiers/engine"
)

//go:embed builtin.yaml
var builtinYAML []byte

// SchemaVersion is the definitions file format this build reads. A file declares it in
// its top-level `version`; a newer file is refused rather than half-understood.
const SchemaVersion = 1

// Kinds of definitions.
const (
	// KindBuiltin tunes a detector implemented in Go (its id must be one the binary knows).
	KindBuiltin = "builtin"
	// KindPattern is a detector defined entirely in data: anchors, a value shape,
	// keywords and a class (see Pattern).
	KindPattern = "pattern"
)

// Limits on data-defined content, so a bad override cannot make the shared pass slow or
// the keyword matcher overflow.
const (
	maxKeywords = 64
	maxWindow   = 4096
	maxPattern  = 64
	maxCodes    = 100000
)

// File is one definitions document.
type File struct {
	// Version is the schema version (SchemaVersion).
	Version int `yaml:"version"`
	// Detectors are the definitions, one per detector id.
	Detectors []Definition `yaml:"detectors"`
}

// Definition is one detector's data. Fields a kind does not use must be empty.
type Definition struct {
	// ID is the stable detector id carried in findings and policy rules ("phi.ssn").
	ID string `yaml:"id"`
	// Version increases whenever the definition's behaviour changes, so a finding can be
	// tied to the rules that produced it.
	Version int `yaml:"version"`
	// Kind is KindBuiltin or KindPattern.
	Kind string `yaml:"kind"`
	// Class is "Part2" or "PHI": what the detector reports (informational for builtins
	// that report both, required for patterns).
	Class string `yaml:"class"`
	// Description says why the detector exists.
	Description string `yaml:"description,omitempty"`
	// Enabled turns the detector on or off; absent means on.
	Enabled *bool `yaml:"enabled,omitempty"`
	// MinConfidence drops occurrences below it before they are counted or combined.
	MinConfidence int `yaml:"min_confidence"`

	// Keywords are context words (ASCII, matched case-insensitively at word boundaries).
	Keywords []Keyword `yaml:"keywords,omitempty"`
	// AddKeywords, in an override, extends Keywords instead of replacing them.
	AddKeywords []Keyword `yaml:"add_keywords,omitempty"`
	// KeywordBefore and KeywordAfter bound how far (bytes) a keyword may sit from a value.
	KeywordBefore int `yaml:"keyword_before,omitempty"`
	KeywordAfter  int `yaml:"keyword_after,omitempty"`
	// Lists are named code or word lists a builtin reads (e.g. "hcpcs", "taxonomy").
	// Entries "H0005..H0015" expand to the inclusive range (same prefix and width).
	Lists map[string][]string `yaml:"lists,omitempty"`

	// MinOverlapPercent is the share of a fingerprinted document's fingerprints content
	// must hold to be reported (fingerprint detectors; 1..100).
	MinOverlapPercent int `yaml:"min_overlap_percent,omitempty"`

	// Pattern-kind fields.
	// Anchors are case-insensitive literals the shared pass finds; the value is looked for
	// from each anchor up to Window bytes on. Without anchors the pattern must contain a
	// run of at least four '#' and is anchored on digit runs.
	Anchors []string `yaml:"anchors,omitempty"`
	// Window is how far after an anchor the value may start (default 64).
	Window int `yaml:"window,omitempty"`
	// Pattern is the value's shape: '#' a digit, '@' an ASCII letter, '*' a letter or
	// digit, '\x' a literal x, anything else itself (case-sensitive).
	Pattern string `yaml:"pattern,omitempty"`
	// Checksum validates the value's digits: "" or "luhn".
	Checksum string `yaml:"checksum,omitempty"`
	// Confidence is reported with a keyword in range (or always, without keywords).
	Confidence int `yaml:"confidence,omitempty"`
	// ConfidenceWithoutKeyword is reported when keywords are defined but none is in
	// range; 0 means such values are not reported.
	ConfidenceWithoutKeyword int `yaml:"confidence_without_keyword,omitempty"`
}

// Keyword is one context word and the name evidence shows for it (the text itself when
// no name is given). YAML accepts "ssn" or {text: "social security", name: social-security}.
type Keyword struct {
	Text string `yaml:"text"`
	Name string `yaml:"name"`
}

// UnmarshalYAML accepts the scalar shorthand.
func (k *Keyword) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		k.Text, k.Name = n.Value, ""
		return nil
	}
	type plain Keyword
	var p plain
	if err := n.Decode(&p); err != nil {
		return err
	}
	*k = Keyword(p)
	return nil
}

// IsEnabled reports whether the detector should run.
func (d *Definition) IsEnabled() bool { return d.Enabled == nil || *d.Enabled }

// DataClass converts Class.
func (d *Definition) DataClass() engine.DataClass {
	switch d.Class {
	case "Part2":
		return engine.Part2
	case "PHI":
		return engine.PHI
	}
	return engine.ClassUnspecified
}

// List returns a named list with ranges expanded (validated at load).
func (d *Definition) List(name string) []string {
	out, _ := expandList(d.Lists[name])
	return out
}

// Set is a validated, merged set of definitions in file order.
type Set struct {
	defs []Definition
}

// Definitions returns the definitions in order (copies; changing them changes nothing).
func (s *Set) Definitions() []Definition { return slices.Clone(s.defs) }

// Get returns the definition with id.
func (s *Set) Get(id string) (Definition, bool) {
	for _, d := range s.defs {
		if d.ID == id {
			return d, true
		}
	}
	return Definition{}, false
}

// Builtin parses the embedded definitions.
func Builtin() (*Set, error) {
	return Parse("builtin.yaml", bytes.NewReader(builtinYAML))
}

// MustBuiltin is Builtin for the detector packages' default constructors: the embedded
// file is a constant of the build and TestBuiltin validates it, so failing here is a
// programming error.
func MustBuiltin(id string) Definition {
	s, err := Builtin()
	if err != nil {
		panic(err)
	}
	d, ok := s.Get(id)
	if !ok {
		panic("defs: no built-in definition for " + id)
	}
	return d
}

// Parse reads and validates one complete definitions file.
func Parse(name string, r io.Reader) (*Set, error) {
	f, _, err := decode(name, r)
	if err != nil {
		return nil, err
	}
	s := &Set{}
	seen := map[string]bool{}
	for i := range f.Detectors {
		d := f.Detectors[i]
		if err := validate(&d); err != nil {
			return nil, entryErr(name, i, d.ID, err)
		}
		if seen[d.ID] {
			return nil, entryErr(name, i, d.ID, errors.New("duplicate id"))
		}
		seen[d.ID] = true
		s.defs = append(s.defs, d)
	}
	return s, nil
}

// Override applies an organisation's file on top of s and returns the result (s is not
// changed). An entry whose id exists changes only the fields it sets (keywords and lists
// are replaced as a whole; add_keywords appends); a new id adds a detector and must be
// complete.
func (s *Set) Override(name string, r io.Reader) (*Set, error) {
	_, nodes, err := decode(name, r)
	if err != nil {
		return nil, err
	}
	out := &Set{defs: slices.Clone(s.defs)}
	for i, n := range nodes {
		var head struct {
			ID string `yaml:"id"`
		}
		if err := n.Decode(&head); err != nil || head.ID == "" {
			return nil, entryErr(name, i, "", fmt.Errorf("line %d: entry without an id", n.Line))
		}
		j := slices.IndexFunc(out.defs, func(d Definition) bool { return d.ID == head.ID })
		var d Definition
		if j >= 0 {
			d = cloneDef(out.defs[j])
			// Decoding into the existing value changes only the keys present.
			var ov Definition
			if err := n.Decode(&ov); err != nil {
				return nil, entryErr(name, i, head.ID, fmt.Errorf("line %d: %w", n.Line, err))
			}
			if err := n.Decode(&d); err != nil {
				return nil, entryErr(name, i, head.ID, fmt.Errorf("line %d: %w", n.Line, err))
			}
			if ov.Kind != "" && ov.Kind != out.defs[j].Kind {
				return nil, entryErr(name, i, head.ID, fmt.Errorf("line %d: kind cannot change from %q to %q", n.Line, out.defs[j].Kind, ov.Kind))
			}
			if ov.Lists != nil {
				// yaml merges maps key by key; a list named in the override replaces the
				// built-in list, other lists stay.
				merged := map[string][]string{}
				for k, v := range out.defs[j].Lists {
					merged[k] = v
				}
				for k, v := range ov.Lists {
					merged[k] = v
				}
				d.Lists = merged
			}
		} else if err := n.Decode(&d); err != nil {
			return nil, entryErr(name, i, head.ID, fmt.Errorf("line %d: %w", n.Line, err))
		}
		d.Keywords = append(d.Keywords, d.AddKeywords...)
		d.AddKeywords = nil
		if err := validate(&d); err != nil {
			return nil, entryErr(name, i, head.ID, fmt.Errorf("line %d: %w", n.Line, err))
		}
		if j >= 0 {
			out.defs[j] = d
		} else {
			out.defs = append(out.defs, d)
		}
	}
	return out, nil
}

func cloneDef(d Definition) Definition {
	d.Keywords = slices.Clone(d.Keywords)
	d.Anchors = slices.Clone(d.Anchors)
	if d.Enabled != nil {
		e := *d.Enabled
		d.Enabled = &e
	}
	if d.Lists != nil {
		m := make(map[string][]string, len(d.Lists))
		for k, v := range d.Lists {
			m[k] = slices.Clone(v)
		}
		d.Lists = m
	}
	return d
}

// decode reads a file strictly (unknown keys are errors) and also returns each detector
// entry's node, for overrides that must know which keys were set.
func decode(name string, r io.Reader) (*File, []*yaml.Node, error) {
	raw, err := io.ReadAll(io.LimitReader(r, 16<<20+1))
	if err != nil {
		return nil, nil, fmt.Errorf("defs: reading %s: %w", name, err)
	}
	if len(raw) > 16<<20 {
		return nil, nil, fmt.Errorf("defs: %s: larger than 16 MiB", name)
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	var f File
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil, fmt.Errorf("defs: %s: empty file", name)
		}
		return nil, nil, fmt.Errorf("defs: %s: %w", name, err)
	}
	if f.Version != SchemaVersion {
		return nil, nil, fmt.Errorf("defs: %s: version %d, this build reads version %d", name, f.Version, SchemaVersion)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, nil, fmt.Errorf("defs: %s: %w", name, err)
	}
	var nodes []*yaml.Node
	if len(doc.Content) == 1 && doc.Content[0].Kind == yaml.MappingNode {
		m := doc.Content[0]
		for i := 0; i+1 < len(m.Content); i += 2 {
			if m.Content[i].Value == "detectors" && m.Content[i+1].Kind == yaml.SequenceNode {
				nodes = m.Content[i+1].Content
			}
		}
	}
	if len(nodes) != len(f.Detectors) {
		return nil, nil, fmt.Errorf("defs: %s: detectors must be a list of mappings", name)
	}
	return &f, nodes, nil
}

func entryErr(file string, i int, id string, err error) error {
	if id == "" {
		return fmt.Errorf("defs: %s: detectors[%d]: %w", file, i, err)
	}
	return fmt.Errorf("defs: %s: detectors[%d] %q: %w", file, i, id, err)
}

// validate checks one merged definition and fills defaults.
func validate(d *Definition) error {
	if !validID(d.ID) {
		return fmt.Errorf("id %q: want lower-case words joined by '.', '-' or '_' (e.g. org.client-id)", d.ID)
	}
	if d.Version < 1 {
		return fmt.Errorf("version %d: must be at least 1", d.Version)
	}
	if d.MinConfidence < 0 || d.MinConfidence > 100 {
		return fmt.Errorf("min_confidence %d: not in 0..100", d.MinConfidence)
	}
	if d.Class != "" && d.DataClass() == engine.ClassUnspecified {
		return fmt.Errorf("class %q: want Part2 or PHI", d.Class)
	}
	if len(d.Keywords) > maxKeywords {
		return fmt.Errorf("%d keywords: at most %d", len(d.Keywords), maxKeywords)
	}
	for i := range d.Keywords {
		k := &d.Keywords[i]
		if k.Text == "" || len(k.Text) > 64 || !printableASCII(k.Text) {
			return fmt.Errorf("keyword %d %q: want 1..64 printable ASCII characters", i, k.Text)
		}
		k.Text = strings.ToLower(k.Text)
		if k.Name == "" {
			k.Name = strings.ReplaceAll(k.Text, " ", "-")
		}
	}
	for _, w := range []struct {
		n string
		v int
	}{{"keyword_before", d.KeywordBefore}, {"keyword_after", d.KeywordAfter}, {"window", d.Window}} {
		if w.v < 0 || w.v > maxWindow {
			return fmt.Errorf("%s %d: not in 0..%d", w.n, w.v, maxWindow)
		}
	}
	if d.MinOverlapPercent < 0 || d.MinOverlapPercent > 100 {
		return fmt.Errorf("min_overlap_percent %d: not in 1..100", d.MinOverlapPercent)
	}
	if len(d.Lists) > 32 {
		return fmt.Errorf("%d lists: at most 32", len(d.Lists))
	}
	n := 0
	for name, l := range d.Lists {
		ex, err := expandList(l)
		if err != nil {
			return fmt.Errorf("list %s: %w", name, err)
		}
		n += len(ex)
	}
	if n > maxCodes {
		return fmt.Errorf("lists hold %d entries: at most %d", n, maxCodes)
	}
	switch d.Kind {
	case KindBuiltin:
		if len(d.Anchors) > 0 || d.Pattern != "" || d.Checksum != "" || d.Confidence != 0 || d.ConfidenceWithoutKeyword != 0 {
			return errors.New("anchors, pattern, checksum and confidence are for kind pattern")
		}
	case KindPattern:
		return validatePattern(d)
	default:
		return fmt.Errorf("kind %q: want %s or %s", d.Kind, KindBuiltin, KindPattern)
	}
	return nil
}

func validID(id string) bool {
	if id == "" || len(id) > 64 || !isLowerAlnum(id[0]) {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !isLowerAlnum(c) && c != '.' && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

func isLowerAlnum(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' }

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// expandList expands "P0005..P0015" ranges: both ends share the non-digit prefix and the
// digit width.
func expandList(l []string) ([]string, error) {
	var out []string
	for _, e := range l {
		lo, hi, ok := strings.Cut(e, "..")
		if !ok {
			if e == "" || len(e) > 64 || !printableASCII(e) {
				return nil, fmt.Errorf("entry %q: want 1..64 printable ASCII characters", e)
			}
			if len(out) >= maxCodes {
				return nil, fmt.Errorf("list grows past %d entries", maxCodes)
			}
			out = append(out, e)
			continue
		}
		pl, nl := splitDigits(lo)
		ph, nh := splitDigits(hi)
		if pl != ph || len(nl) != len(nh) || nl == "" || len(nl) > 9 {
			return nil, fmt.Errorf("range %q: ends need the same prefix and digit width", e)
		}
		a, _ := strconv.Atoi(nl)
		b, _ := strconv.Atoi(nh)
		if b < a || b-a+len(out) > maxCodes {
			return nil, fmt.Errorf("range %q: empty, or the list grows past %d entries", e, maxCodes)
		}
		for v := a; v <= b; v++ {
			out = append(out, fmt.Sprintf("%s%0*d", pl, len(nl), v))
		}
	}
	return out, nil
}

func splitDigits(s string) (prefix, digits string) {
	i := len(s)
	for i > 0 && '0' <= s[i-1] && s[i-1] <= '9' {
		i--
	}
	return s[:i], s[i:]
}
