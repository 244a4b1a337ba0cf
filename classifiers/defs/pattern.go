package defs

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/ward-dlp/ward/classifiers/engine"
)

// Pattern is a detector defined entirely in data (kind: pattern): an organisation's own
// identifiers (client numbers, member ids, case numbers) found after literal anchors or
// around digit runs, shaped by a small pattern language, optionally Luhn-checked and
// confirmed by context keywords. Values are reported through the engine's Reporter like
// every other identifier: masked and keyed-fingerprinted, never raw.
type Pattern struct {
	def      Definition
	class    engine.DataClass
	shape    []patItem
	anchors  []string
	kws      *KeywordSet
	runGroup int // offset of the longest digit group (digit-run anchoring), -1 with anchors
	runLen   int
	evKw     []string
	evNoKw   string
}

type patItem struct {
	kind byte // '#', '@', '*' or 0 for a literal
	lit  byte
}

// NewPattern compiles a validated pattern definition.
func NewPattern(d Definition) (*Pattern, error) {
	if err := validatePattern(&d); err != nil {
		return nil, fmt.Errorf("defs: %s: %w", d.ID, err)
	}
	shape, _ := parseShape(d.Pattern)
	p := &Pattern{def: d, class: d.DataClass(), shape: shape, anchors: d.Anchors, kws: NewKeywordSet(d.Keywords), runGroup: -1}
	if len(d.Anchors) == 0 {
		p.runGroup, p.runLen = longestDigitGroup(shape)
	}
	for k := range d.Keywords {
		p.evKw = append(p.evKw, "pattern "+d.ID+" keyword="+p.kws.Name(k))
	}
	p.evNoKw = "pattern " + d.ID + " no keyword"
	return p, nil
}

// Name implements engine.Detector.
func (p *Pattern) Name() string { return p.def.ID }

// Interest implements engine.Detector.
func (p *Pattern) Interest() engine.Interest {
	if len(p.anchors) > 0 {
		return engine.Interest{Literals: p.anchors}
	}
	return engine.Interest{DigitRuns: true}
}

// Detect implements engine.Detector.
func (p *Pattern) Detect(s *engine.Scan, r *engine.Reporter) {
	b := s.Content
	next := 0
	if len(p.anchors) > 0 {
		for _, h := range s.Hits {
			from := max(h.Off, next)
			end := min(len(b), h.Off+len(p.anchors[h.Literal])+p.def.Window)
			for i := from; i <= end-len(p.shape); i++ {
				if p.at(b, i) {
					if p.report(b, i, r) {
						next = i + len(p.shape)
					}
					break
				}
			}
		}
		return
	}
	for _, run := range s.DigitRuns {
		if run.End-run.Start != p.runLen {
			continue
		}
		i := run.Start - p.runGroup
		if i < next || i < 0 || i+len(p.shape) > len(b) || !p.at(b, i) {
			continue
		}
		if p.report(b, i, r) {
			next = i + len(p.shape)
		}
	}
}

// at reports whether a bounded value of the pattern's shape starts at i.
func (p *Pattern) at(b []byte, i int) bool {
	if i > 0 && isAlnum(b[i-1]) && isAlnum(b[i]) {
		return false
	}
	for k, it := range p.shape {
		if i+k >= len(b) {
			return false
		}
		c := b[i+k]
		switch it.kind {
		case '#':
			if !isDigit(c) {
				return false
			}
		case '@':
			if !isLetter(c) {
				return false
			}
		case '*':
			if !isAlnum(c) {
				return false
			}
		default:
			if c != it.lit {
				return false
			}
		}
	}
	e := i + len(p.shape)
	if e < len(b) && isAlnum(b[e]) && isAlnum(b[e-1]) {
		return false
	}
	if p.def.Checksum == "luhn" && !luhn(b[i:e]) {
		return false
	}
	return true
}

func (p *Pattern) report(b []byte, i int, r *engine.Reporter) bool {
	e := i + len(p.shape)
	conf, ev := p.def.Confidence, p.evNoKw
	if p.kws.Len() > 0 {
		kw := p.kws.Find(b, i-p.def.KeywordBefore, e+p.def.KeywordAfter)
		if kw < 0 {
			if p.def.ConfidenceWithoutKeyword == 0 {
				return false
			}
			conf = p.def.ConfidenceWithoutKeyword
		} else {
			ev = p.evKw[kw]
		}
	}
	r.Identifier(p.class, conf, i, b[i:e], bytes.ToUpper(b[i:e]), ev)
	return true
}

func validatePattern(d *Definition) error {
	if d.DataClass() == engine.ClassUnspecified {
		return errors.New("class: a pattern detector needs Part2 or PHI")
	}
	if d.Confidence < 1 || d.Confidence > 100 || d.ConfidenceWithoutKeyword < 0 || d.ConfidenceWithoutKeyword > 100 {
		return errors.New("confidence must be 1..100 and confidence_without_keyword 0..100")
	}
	if d.ConfidenceWithoutKeyword > 0 && len(d.Keywords) == 0 {
		return errors.New("confidence_without_keyword needs keywords")
	}
	if d.Checksum != "" && d.Checksum != "luhn" {
		return fmt.Errorf("checksum %q: want luhn or nothing", d.Checksum)
	}
	if len(d.Lists) > 0 || d.MinOverlapPercent != 0 {
		return errors.New("lists and min_overlap_percent are for builtin detectors")
	}
	shape, err := parseShape(d.Pattern)
	if err != nil {
		return err
	}
	for i, a := range d.Anchors {
		if len(a) < 2 || len(a) > 64 || !printableASCII(a) {
			return fmt.Errorf("anchor %d %q: want 2..64 printable ASCII characters", i, a)
		}
	}
	if d.Window == 0 {
		d.Window = 64
	}
	if len(d.Anchors) == 0 {
		if _, n := longestDigitGroup(shape); n < engine.MinDigitRun {
			return fmt.Errorf("pattern %q: without anchors it needs a run of at least %d '#' to anchor on", d.Pattern, engine.MinDigitRun)
		}
	}
	return nil
}

func parseShape(s string) ([]patItem, error) {
	var out []patItem
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\':
			if i+1 == len(s) {
				return nil, fmt.Errorf("pattern %q: trailing backslash", s)
			}
			i++
			out = append(out, patItem{lit: s[i]})
		case c == '#' || c == '@' || c == '*':
			out = append(out, patItem{kind: c})
		case c < 0x20 || c > 0x7e:
			return nil, fmt.Errorf("pattern %q: only printable ASCII", s)
		default:
			out = append(out, patItem{lit: c})
		}
	}
	if len(out) < 4 || len(out) > maxPattern {
		return nil, fmt.Errorf("pattern %q: want 4..%d positions", s, maxPattern)
	}
	nVar := 0
	for _, it := range out {
		if it.kind != 0 {
			nVar++
		}
	}
	if nVar < 4 {
		return nil, fmt.Errorf("pattern %q: fewer than four variable positions is not an identifier", s)
	}
	return out, nil
}

// longestDigitGroup returns the offset and length of the longest run of '#' that cannot
// be extended by neighbouring digits ('*' or a literal digit next to it would make the
// content's digit run longer than the group, so such groups do not count).
func longestDigitGroup(shape []patItem) (off, n int) {
	for i := 0; i < len(shape); {
		if shape[i].kind != '#' {
			i++
			continue
		}
		j := i
		for j < len(shape) && shape[j].kind == '#' {
			j++
		}
		digitish := func(k int) bool {
			return k >= 0 && k < len(shape) && (shape[k].kind == '*' || shape[k].kind == 0 && isDigit(shape[k].lit))
		}
		if !digitish(i-1) && !digitish(j) && j-i > n {
			off, n = i, j-i
		}
		i = j
	}
	return off, n
}

func luhn(v []byte) bool {
	sum, dbl, n := 0, false, 0
	for i := len(v) - 1; i >= 0; i-- {
		if !isDigit(v[i]) {
			continue
		}
		d := int(v[i] - '0')
		if dbl {
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
		dbl = !dbl
		n++
	}
	return n > 1 && sum%10 == 0
}

func isAlnum(c byte) bool { return isDigit(c) || isLetter(c) }
