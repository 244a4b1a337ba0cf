package part2

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"

	"github.com/ward-dlp/ward/classifiers/engine"
)

// FHIRLabels finds Part 2 security labels in FHIR JSON: a Bundle, a single resource or
// NDJSON, complete or truncated (file writes arrive in pieces). A Coding counts only with a
// trusted system in the same JSON object, so Ethereum price feeds full of "ETH" stay quiet.
type FHIRLabels struct{}

// NewFHIRLabels returns the FHIR security-label detector.
func NewFHIRLabels() *FHIRLabels { return &FHIRLabels{} }

// Name implements engine.Detector.
func (*FHIRLabels) Name() string { return "part2.fhir-label" }

// Interest implements engine.Detector: a label cannot count without one of the trusted
// systems, and every one of them is an hl7.org URI or an HL7 OID (2.16.840.1.113883...).
// System strings are case-sensitive, so the anchors are exact.
func (*FHIRLabels) Interest() engine.Interest {
	return engine.Interest{Exact: []string{"hl7.org", "113883."}}
}

// Detect implements engine.Detector. One occurrence is reported per labelled resource.
func (*FHIRLabels) Detect(s *engine.Scan, r *engine.Reporter) {
	walk := walkFHIR
	if isXML(s.Content) {
		walk = walkFHIRXML
	}
	walk(s.Content, func(ls *labelSet) {
		conf, withR, ok := ls.verdict()
		if !ok {
			return
		}
		r.Label(engine.Part2, conf, ls.top.off, ls.top.code, ls.top.system+"|"+ls.top.code, ls.evidence(withR))
	})
}

const (
	maxJSONDepth = 128
	// maxJSONWork bounds re-parsing after resyncs to a small multiple of the input.
	maxJSONWork = 4
)

// jframe is one open JSON container.
type jframe struct {
	obj       bool
	name      string // key this container sits under in its parent ("[]" for array elements)
	key       string // current key, objects only
	expectKey bool
	start     int // offset of '{' or '['
	system    string
	code      string
	hasSys    bool
	hasCode   bool
	resource  bool
	labels    *labelSet
}

// walkFHIR streams every JSON value in content and calls emit with the labels of each
// resource (an object with resourceType, under "resource" or "contained", or a top-level
// value). After a syntax error it resyncs at the next line that opens a JSON value, which
// both continues NDJSON past a bad line and salvages the rest of a damaged document.
func walkFHIR(content []byte, emit func(*labelSet)) {
	w := fhirWalker{content: content, emit: emit}
	pos := skipBOM(content)
	budget := maxJSONWork*len(content) + 1024
	for pos < len(content) && budget > 0 {
		start := nextJSONLine(content, pos)
		if start < 0 {
			return
		}
		end := w.parse(start)
		budget -= end - start + 1
		// Continue on the line after the last good token (at least one line on).
		nl := bytes.IndexByte(content[max(end, start+1)-1:], '\n')
		if nl < 0 {
			return
		}
		pos = max(end, start+1) - 1 + nl + 1
	}
}

// isXML reports whether the first non-blank byte (after a BOM) is '<': FHIR XML rather than
// JSON or NDJSON.
func isXML(b []byte) bool {
	b = bytes.TrimLeft(b[skipBOM(b):], " \t\r\n")
	return len(b) > 0 && b[0] == '<'
}

func skipBOM(b []byte) int {
	if bytes.HasPrefix(b, []byte("\xef\xbb\xbf")) {
		return 3
	}
	return 0
}

// nextJSONLine returns the offset of the first '{' or '[' that is the first non-blank
// byte of a line at or after pos (pos counts as a line start), or -1.
func nextJSONLine(b []byte, pos int) int {
	for pos < len(b) {
		i := pos
		for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r') {
			i++
		}
		if i < len(b) && (b[i] == '{' || b[i] == '[') {
			return i
		}
		nl := bytes.IndexByte(b[i:], '\n')
		if nl < 0 {
			return -1
		}
		pos = i + nl + 1
	}
	return -1
}

type fhirWalker struct {
	content []byte
	emit    func(*labelSet)
	stack   []jframe
	path    []byte
}

// parse decodes values from content[start:] until EOF or an error, flushing open frames so
// a truncated document still yields the labels it already showed. It returns the offset
// just after the last token read.
func (w *fhirWalker) parse(start int) int {
	dec := json.NewDecoder(bytes.NewReader(w.content[start:]))
	dec.UseNumber()
	w.stack = w.stack[:0]
	last := start
	defer w.flush()
	for {
		tok, err := dec.Token()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return len(w.content)
			}
			return last
		}
		off := start + int(dec.InputOffset())
		last = off
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{', '[':
				if len(w.stack) >= maxJSONDepth {
					return last
				}
				w.push(t == '{', off-1)
			case '}', ']':
				w.pop()
			}
		case string:
			w.str(t)
		default:
			w.scalar()
		}
	}
}

func (w *fhirWalker) push(obj bool, start int) {
	f := jframe{obj: obj, start: start, expectKey: obj}
	if n := len(w.stack); n > 0 {
		p := &w.stack[n-1]
		if p.obj {
			f.name = p.key
			p.expectKey = true
		} else {
			f.name = "[]"
		}
		switch {
		case f.name == "resource":
			f.resource = obj
		case f.name == "[]" && p.name == "contained":
			f.resource = obj
		}
	} else {
		f.resource = true // a top-level value is the resource (or the Bundle) itself
	}
	w.stack = append(w.stack, f)
}

func (w *fhirWalker) str(s string) {
	n := len(w.stack)
	if n == 0 {
		return
	}
	f := &w.stack[n-1]
	if !f.obj {
		return
	}
	if f.expectKey {
		f.key = s
		f.expectKey = false
		return
	}
	switch f.key {
	case "system":
		f.system, f.hasSys = s, true
	case "code":
		f.code, f.hasCode = s, true
	case "resourceType":
		f.resource = true
	}
	f.expectKey = true
}

func (w *fhirWalker) scalar() {
	if n := len(w.stack); n > 0 && w.stack[n-1].obj {
		w.stack[n-1].expectKey = true
	}
}

// pop closes the top container: a Coding adds its label to the nearest enclosing resource,
// and a resource hands its label set to emit.
func (w *fhirWalker) pop() {
	n := len(w.stack)
	if n == 0 {
		return
	}
	f := &w.stack[n-1]
	if f.obj && f.hasSys && f.hasCode {
		if sig, system, code := classify(f.system, f.code); sig != sigNone {
			w.owner(n - 2).add(coding{sig: sig, system: system, code: code, path: w.pathOf(n - 1), off: f.start})
		}
	}
	// Only resource frames and the bottom frame own label sets (see owner).
	if f.labels != nil {
		w.emit(f.labels)
	}
	w.stack = w.stack[:n-1]
}

// owner returns the label set of the nearest resource frame at or below index i (the
// bottom frame when none is marked), creating it on first use.
func (w *fhirWalker) owner(i int) *labelSet {
	j := max(i, 0)
	for ; j > 0; j-- {
		if w.stack[j].resource {
			break
		}
	}
	if j >= len(w.stack) {
		j = len(w.stack) - 1
	}
	f := &w.stack[j]
	if f.labels == nil {
		f.labels = &labelSet{}
	}
	return f.labels
}

// pathOf renders the keys down to frame i, e.g. "entry[].resource.meta.security[]".
func (w *fhirWalker) pathOf(i int) string {
	w.path = w.path[:0]
	for j := 1; j <= i; j++ {
		name := w.stack[j].name
		if name == "[]" {
			w.path = append(w.path, "[]"...)
			continue
		}
		if len(w.path) > 0 {
			w.path = append(w.path, '.')
		}
		w.path = pathSegment(w.path, name)
		if len(w.path) > 200 {
			break
		}
	}
	return string(w.path)
}

// flush closes whatever a truncated or malformed document left open.
func (w *fhirWalker) flush() {
	for len(w.stack) > 0 {
		w.pop()
	}
}
