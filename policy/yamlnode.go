package policy

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// PosError is a problem at a place in a policy file. Its message reads file:line:column:
// message, as compilers print them, so editors and CI logs link straight to the spot.
type PosError struct {
	File   string
	Line   int
	Column int // 0 when the YAML parser reported only a line
	Msg    string
}

func (e *PosError) Error() string {
	if e.Column > 0 {
		return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Column, e.Msg)
	}
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

// ErrorList is every problem found in one file, in file order. Lint reports them all at once
// so a reviewer fixes a bundle in one pass.
type ErrorList []*PosError

func (l ErrorList) Error() string {
	var b strings.Builder
	for i, e := range l {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// maxErrors bounds how many problems one file reports, so hostile input cannot make the
// error list itself huge.
const maxErrors = 50

// decoder walks a yaml.v3 node tree strictly: unknown and duplicate keys, aliases, wrong
// kinds and out-of-range values are errors with positions; every problem is collected.
type decoder struct {
	file string
	src  []byte
	errs ErrorList
}

func (d *decoder) errf(n *yaml.Node, format string, args ...any) {
	if len(d.errs) >= maxErrors {
		return
	}
	e := &PosError{File: d.file, Msg: fmt.Sprintf(format, args...)}
	if n != nil {
		e.Line, e.Column = n.Line, n.Column
	}
	d.errs = append(d.errs, e)
}

func (d *decoder) errAt(line, col int, format string, args ...any) {
	if len(d.errs) >= maxErrors {
		return
	}
	d.errs = append(d.errs, &PosError{File: d.file, Line: line, Column: col, Msg: fmt.Sprintf(format, args...)})
}

var yamlLineRe = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// parseYAML parses src into a document node, turning the parser's "yaml: line N: msg" into a
// positioned error.
func (d *decoder) parseYAML() (*yaml.Node, bool) {
	var doc yaml.Node
	err := yaml.Unmarshal(d.src, &doc)
	if err != nil {
		msg := err.Error()
		if m := yamlLineRe.FindStringSubmatch(msg); m != nil {
			line, _ := strconv.Atoi(m[1])
			d.errAt(line, 0, "%s", m[2])
		} else {
			d.errAt(0, 0, "%s", strings.TrimPrefix(msg, "yaml: "))
		}
		return nil, false
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		d.errAt(1, 1, "empty policy: want a mapping with name, version and rules")
		return nil, false
	}
	return doc.Content[0], true
}

// kindName names node kinds in errors the way a policy author thinks of them.
func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "null"
		}
		return "a scalar"
	case yaml.AliasNode:
		return "an alias"
	}
	return "a document"
}

// fields checks that n is a mapping whose keys are all in allowed and returns key → value.
// required keys that are missing are reported at the mapping.
func (d *decoder) fields(n *yaml.Node, what string, allowed []string, required ...string) map[string]*yaml.Node {
	if n.Kind == yaml.AliasNode {
		d.errf(n, "%s: YAML aliases are not allowed in policies (write the value out)", what)
		return nil
	}
	if n.Kind != yaml.MappingNode {
		d.errf(n, "%s: want a mapping, got %s", what, kindName(n))
		return nil
	}
	out := make(map[string]*yaml.Node, len(n.Content)/2)
	present := make(map[string]bool, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.errf(k, "%s: keys must be plain words", what)
			continue
		}
		if k.Value == "<<" {
			d.errf(k, "%s: YAML merge keys are not allowed in policies", what)
			continue
		}
		if !contains(allowed, k.Value) {
			d.errf(k, "%s: unknown key %q%s", what, k.Value, suggest(k.Value, allowed))
			continue
		}
		if present[k.Value] {
			d.errf(k, "%s: key %q given twice", what, k.Value)
			continue
		}
		present[k.Value] = true
		if v.Kind == yaml.AliasNode {
			d.errf(v, "%s.%s: YAML aliases are not allowed in policies (write the value out)", what, k.Value)
			continue
		}
		out[k.Value] = v
	}
	for _, r := range required {
		if !present[r] {
			d.errf(n, "%s: missing required key %q", what, r)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// suggest offers the closest allowed key for a misspelt one.
func suggest(got string, allowed []string) string {
	best, bestD := "", 3
	for _, a := range allowed {
		if dist := editDistance(strings.ToLower(got), a); dist < bestD {
			best, bestD = a, dist
		}
	}
	if best == "" {
		sorted := append([]string(nil), allowed...)
		sort.Strings(sorted)
		return " (want one of " + strings.Join(sorted, ", ") + ")"
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 99
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := 1
			if a[i-1] == b[j-1] {
				c = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+c)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func (d *decoder) scalar(n *yaml.Node, what string) (string, bool) {
	if n == nil {
		return "", false
	}
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		d.errf(n, "%s: want a value, got %s", what, kindName(n))
		return "", false
	}
	return n.Value, true
}

// str decodes a string of at most maxLen bytes.
func (d *decoder) str(n *yaml.Node, what string, maxLen int) string {
	s, ok := d.scalar(n, what)
	if !ok {
		return ""
	}
	if len(s) > maxLen {
		d.errf(n, "%s: %d bytes is longer than the %d allowed", what, len(s), maxLen)
		return ""
	}
	if strings.ContainsAny(s, "\x00") {
		d.errf(n, "%s: NUL bytes are not allowed", what)
		return ""
	}
	return s
}

// ident decodes an identifier: lower-case letters, digits, '-', '_' and '.'.
func (d *decoder) ident(n *yaml.Node, what string) string {
	s := d.str(n, what, 128)
	if s == "" {
		if n != nil && n.Kind == yaml.ScalarNode {
			d.errf(n, "%s: must not be empty", what)
		}
		return ""
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			d.errf(n, "%s: %q may use only a-z, 0-9, '-', '_' and '.'", what, s)
			return ""
		}
	}
	return s
}

func (d *decoder) boolean(n *yaml.Node, what string) bool {
	s, ok := d.scalar(n, what)
	if !ok {
		return false
	}
	switch s {
	case "true":
		return true
	case "false":
		return false
	}
	d.errf(n, "%s: want true or false, got %q", what, s)
	return false
}

func (d *decoder) integer(n *yaml.Node, what string, lo, hi int64) int64 {
	s, ok := d.scalar(n, what)
	if !ok {
		return 0
	}
	v, err := strconv.ParseInt(strings.ReplaceAll(s, "_", ""), 10, 64)
	if err != nil || v < lo || v > hi {
		d.errf(n, "%s: want a whole number from %d to %d, got %q", what, lo, hi, s)
		return 0
	}
	return v
}

func (d *decoder) uinteger(n *yaml.Node, what string) uint64 {
	s, ok := d.scalar(n, what)
	if !ok {
		return 0
	}
	v, err := strconv.ParseUint(strings.ReplaceAll(s, "_", ""), 10, 64)
	if err != nil || v == 0 || v > math.MaxInt64 {
		d.errf(n, "%s: want a positive whole number, got %q", what, s)
		return 0
	}
	return v
}

// byteSize accepts 1048576, 512KiB, 100MiB, 2GiB, 10MB.
func (d *decoder) byteSize(n *yaml.Node, what string) int64 {
	s, ok := d.scalar(n, what)
	if !ok {
		return 0
	}
	units := []struct {
		suf string
		mul int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1}}
	num, mul := strings.TrimSpace(s), int64(1)
	for _, u := range units {
		if strings.HasSuffix(num, u.suf) {
			num, mul = strings.TrimSpace(strings.TrimSuffix(num, u.suf)), u.mul
			break
		}
	}
	v, err := strconv.ParseInt(num, 10, 64)
	if err != nil || v <= 0 || v > math.MaxInt64/mul {
		d.errf(n, "%s: want a positive size like 1048576, 512KiB or 100MiB, got %q", what, s)
		return 0
	}
	return v * mul
}

func (d *decoder) duration(n *yaml.Node, what string, lo, hi time.Duration) time.Duration {
	s, ok := d.scalar(n, what)
	if !ok {
		return 0
	}
	v, err := parseDuration(s)
	if err != nil || v < lo || v > hi {
		d.errf(n, "%s: want a duration from %s to %s like 15m, 1h or 7d, got %q", what, lo, hi, s)
		return 0
	}
	return v
}

// parseDuration is time.ParseDuration plus a trailing-days form ("7d").
func parseDuration(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 || n > 36500 {
			return 0, errors.New("bad day count")
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	return time.ParseDuration(s)
}

// timestamp accepts RFC 3339 times and plain dates (midnight UTC).
func (d *decoder) timestamp(n *yaml.Node, what string) time.Time {
	s, ok := d.scalar(n, what)
	if !ok {
		return time.Time{}
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t.UTC()
	}
	if t, err := time.Parse("2006-01-02", s); err == nil {
		return t.UTC()
	}
	d.errf(n, "%s: want an RFC 3339 time or a date (2027-01-31), got %q", what, s)
	return time.Time{}
}

// list returns the items of a sequence, at most maxItems.
func (d *decoder) list(n *yaml.Node, what string, maxItems int) []*yaml.Node {
	if n == nil {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		d.errf(n, "%s: want a list, got %s", what, kindName(n))
		return nil
	}
	if len(n.Content) > maxItems {
		d.errf(n, "%s: %d items is more than the %d allowed", what, len(n.Content), maxItems)
		return nil
	}
	for _, it := range n.Content {
		if it.Kind == yaml.AliasNode {
			d.errf(it, "%s: YAML aliases are not allowed in policies (write the value out)", what)
			return nil
		}
	}
	return n.Content
}

// strList decodes a list of strings (a single scalar is a list of one).
func (d *decoder) strList(n *yaml.Node, what string, maxItems, maxLen int) []string {
	if n == nil {
		return nil
	}
	if n.Kind == yaml.ScalarNode && n.Tag != "!!null" {
		return []string{d.str(n, what, maxLen)}
	}
	items := d.list(n, what, maxItems)
	out := make([]string, 0, len(items))
	for i, it := range items {
		if s := d.str(it, fmt.Sprintf("%s[%d]", what, i), maxLen); s != "" {
			out = append(out, s)
		}
	}
	return out
}
