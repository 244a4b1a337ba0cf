package part2

import (
	"bytes"
	"encoding/xml"
	"io"
	"strings"

	"github.com/ward-dlp/ward/classifiers/engine"
)

// CDA finds Part 2 markings in C-CDA / CDA R2 documents: DS4P security observations with
// Part 2 codes, and confidentialityCode R (document or section) together with the §2.32
// notice in the document's text. R alone only says "restricted" (psychotherapy notes, HIV,
// VIP...) and is not reported.
type CDA struct{ m *noticeMatcher }

// NewCDA returns the C-CDA detector.
func NewCDA() *CDA { return &CDA{m: newNoticeMatcher()} }

// Name implements engine.Detector.
func (*CDA) Name() string { return "part2.cda" }

// Interest implements engine.Detector: every C-CDA carries HL7 OIDs (templateId roots,
// the confidentialityCode system 2.16.840.1.113883.5.25), so one exact anchor finds them.
func (*CDA) Interest() engine.Interest {
	return engine.Interest{Exact: []string{"113883."}}
}

// Detect implements engine.Detector. A CDA file is one document: one occurrence at most.
func (d *CDA) Detect(s *engine.Scan, r *engine.Reporter) {
	res := walkCDA(s.Content, d.m)
	conf, withR, ok := res.labels.verdict()
	ev := ""
	label, norm, off := "", "", -1
	if ok {
		ev = res.labels.evidence(withR)
		label, norm, off = res.labels.top.code, res.labels.top.system+"|"+res.labels.top.code, res.labels.top.off
	}
	// confidentialityCode R plus the notice marks Part 2 even without an SUD code.
	if res.rOff >= 0 && res.notice.score >= minNoticeScore {
		c := 90 // R with part of the notice
		if res.notice.score >= 4 {
			c = 95 // R with (most of) the notice
		}
		if res.privacySection {
			c += 2
		}
		if c > conf {
			conf, label, norm, off = c, "R+notice", "2.16.840.1.113883.5.25|R+42CFR2.32", res.rOff
			ev = "confidentialityCode=R (2.16.840.1.113883.5.25) at " + res.rPath + " with " + res.notice.evidence()
			if res.privacySection {
				ev += " in DS4P privacy markings section"
			}
		}
	}
	if conf > 0 {
		r.Label(engine.Part2, conf, off, label, norm, ev)
	}
}

const (
	maxXMLDepth = 256
	// maxCDAText bounds the narrative kept for notice matching.
	maxCDAText = 1 << 20
)

// cdaResult is what one walk saw.
type cdaResult struct {
	labels         labelSet
	rOff           int // offset of the first confidentialityCode R, or -1
	rPath          string
	notice         noticeResult
	privacySection bool
}

// walkCDA streams the XML tokens of content. It never resolves entities or fetches DTDs
// (encoding/xml does neither), keeps going in non-strict mode, and on error or truncation
// judges what it has read so far.
func walkCDA(content []byte, m *noticeMatcher) cdaResult {
	res := cdaResult{rOff: -1}
	start := bytes.IndexByte(content, '<')
	if start < 0 {
		return res
	}
	dec := xml.NewDecoder(bytes.NewReader(content[start:]))
	dec.Strict = false
	dec.CharsetReader = func(_ string, in io.Reader) (io.Reader, error) { return in, nil }
	var (
		stack []string
		text  normalizer
		path  []byte
	)
	text.reset()
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
			stack = append(stack, t.Name.Local)
			cdaElement(&res, t, stack, before, &path)
			if len(text.out) < maxCDAText {
				text.emit(' ', before)
			}
		case xml.EndElement:
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
			if len(text.out) < maxCDAText {
				text.emit(' ', before)
			}
		case xml.CharData:
			if len(text.out) < maxCDAText {
				text.write(t, before)
			}
		}
	}
done:
	res.notice = m.match(text.out)
	return res
}

// cdaElement inspects one start tag: any code/codeSystem pair (security observation
// values, confidentialityCode), and the DS4P Privacy Markings section identifiers.
func cdaElement(res *cdaResult, t xml.StartElement, stack []string, off int, path *[]byte) {
	var code, system, root string
	for _, a := range t.Attr {
		switch a.Name.Local {
		case "code":
			code = a.Value
		case "codeSystem":
			system = a.Value
		case "root":
			root = a.Value
		}
	}
	switch {
	case t.Name.Local == "templateId" && strings.TrimSpace(root) == "2.16.840.1.113883.3.3251.1.5":
		res.privacySection = true
	case t.Name.Local == "code" && strings.TrimSpace(code) == "57017-6" && len(stack) >= 2 && stack[len(stack)-2] == "section":
		res.privacySection = true
	}
	if code == "" || system == "" {
		return
	}
	sig, sys, canon := classify(system, code)
	if sig == sigNone {
		return
	}
	*path = (*path)[:0]
	for i, name := range stack {
		if i > 0 {
			*path = append(*path, '/')
		}
		*path = pathSegment(*path, name)
		if len(*path) > 200 {
			break
		}
	}
	p := string(*path)
	if sig == sigConfR && res.rOff < 0 {
		res.rOff, res.rPath = off, p
	}
	res.labels.add(coding{sig: sig, system: sys, code: canon, path: p, off: off})
}
