package part2

import (
	"bytes"
	"encoding/xml"
	"io"
)

// xframe is one open FHIR XML element.
type xframe struct {
	name      string
	system    string
	code      string
	hasSys    bool
	hasCode   bool
	resource  bool
	labels    *labelSet
	off       int
	pathBytes int
}

// walkFHIRXML finds Codings in FHIR XML (<security><system value=".."/><code value=".."/>
// </security>, also under securityLabel, coding and extensions) and emits the label set of
// each resource: the root element and each child of <resource> or <contained>. Like the
// JSON walker it judges truncated documents on what they showed, never resolves entities
// and bounds depth.
func walkFHIRXML(content []byte, emit func(*labelSet)) {
	start := bytes.IndexByte(content, '<')
	if start < 0 {
		return
	}
	dec := xml.NewDecoder(bytes.NewReader(content[start:]))
	dec.Strict = false
	dec.CharsetReader = func(_ string, in io.Reader) (io.Reader, error) { return in, nil }
	var stack []xframe
	var path []byte
	pop := func() {
		n := len(stack)
		f := &stack[n-1]
		if f.hasSys && f.hasCode {
			if sig, system, code := classify(f.system, f.code); sig != sigNone {
				path = path[:0]
				for i := 1; i < n; i++ {
					if i > 1 {
						path = append(path, '.')
					}
					path = pathSegment(path, stack[i].name)
					if len(path) > 200 {
						break
					}
				}
				owner := 0
				for j := n - 2; j > 0; j-- {
					if stack[j].resource {
						owner = j
						break
					}
				}
				if n >= 2 {
					o := &stack[owner]
					if o.labels == nil {
						o.labels = &labelSet{}
					}
					o.labels.add(coding{sig: sig, system: system, code: code, path: string(path), off: f.off})
				}
			}
		}
		if f.labels != nil {
			emit(f.labels)
		}
		stack = stack[:n-1]
	}
	for {
		before := start + int(dec.InputOffset())
		tok, err := dec.RawToken()
		if err != nil {
			break
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if len(stack) >= maxXMLDepth {
				goto done
			}
			f := xframe{name: t.Name.Local, off: before}
			if n := len(stack); n == 0 {
				f.resource = true
			} else if p := stack[n-1].name; p == "resource" || p == "contained" {
				f.resource = true
			}
			if n := len(stack); n > 0 && (t.Name.Local == "system" || t.Name.Local == "code") {
				for _, a := range t.Attr {
					if a.Name.Local == "value" {
						p := &stack[n-1]
						if t.Name.Local == "system" {
							p.system, p.hasSys = a.Value, true
						} else {
							p.code, p.hasCode = a.Value, true
						}
					}
				}
			}
			stack = append(stack, f)
		case xml.EndElement:
			if len(stack) > 0 {
				pop()
			}
		}
	}
done:
	for len(stack) > 0 {
		pop()
	}
}
