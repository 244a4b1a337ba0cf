// Package phi detects validated HIPAA identifiers. Every detector validates structure and
// boundaries before reporting, because bare digit patterns are everywhere in clinical text
// (dates, phone numbers, lab values, order numbers).
package phi

import (
	"github.com/ward-dlp/ward/classifiers/defs"
	"github.com/ward-dlp/ward/classifiers/engine"
)

// SSN finds US Social Security numbers: ddd-dd-dddd and ddd dd dddd anywhere, nine bare
// digits only near a keyword. Confidence follows the Purview tiers: formatted with a
// keyword 85, bare with a keyword 75, formatted alone 65.
type SSN struct {
	// evidence[format][keyword+1] is prebuilt so reporting allocates nothing per number.
	evidence [3][]string
	ctx      keywordContext
}

// ssnFormats name the accepted shapes, indexing SSN.evidence.
var ssnFormats = [3]string{"ddd-dd-dddd", "ddd dd dddd", "ddddddddd"}

// NewSSN returns the SSN detector with the built-in definition.
func NewSSN() *SSN { return NewSSNFrom(defs.MustBuiltin("phi.ssn")) }

// NewSSNFrom returns the SSN detector tuned by a validated definition (keywords and
// keyword_before/after).
func NewSSNFrom(def defs.Definition) *SSN {
	d := &SSN{ctx: newKeywordContext(def)}
	for f, name := range ssnFormats {
		d.evidence[f] = append(d.evidence[f], "format="+name+" no keyword")
		for k := range d.ctx.own {
			d.evidence[f] = append(d.evidence[f], "format="+name+" keyword="+d.ctx.name(k))
		}
	}
	return d
}

// Name implements engine.Detector.
// Local implements engine.Local: each occurrence is validated around one anchor.
func (*SSN) Local() bool { return true }

func (*SSN) Name() string { return "phi.ssn" }

// Interest implements engine.Detector. Keywords are not anchors: they are looked up only
// around a valid number, which is far rarer than the letters "ssn" in prose.
func (*SSN) Interest() engine.Interest { return engine.Interest{DigitRuns: true} }

// Detect implements engine.Detector. Every SSN ends in a four-digit serial or is nine bare
// digits, so each digit run of four or nine is a candidate; the area and group are read
// back from the run.
func (d *SSN) Detect(s *engine.Scan, r *engine.Reporter) {
	b := s.Content
	kc := d.ctx.cursor(s)
	var norm [9]byte
	for _, run := range s.DigitRuns {
		var start, end, format int
		switch run.End - run.Start {
		case 4:
			// ddd?dd?dddd with ? one of '-' or ' ', the same both times.
			st := run.Start
			if st < 7 {
				continue
			}
			d2, d1 := b[st-1], b[st-4]
			if d1 != d2 || (d1 != '-' && d1 != ' ') || digitsBefore(b, st-1) != 2 || digitsBefore(b, st-4) != 3 {
				continue
			}
			start, end = st-7, run.End
			if d1 == ' ' {
				format = 1
			}
			copy(norm[0:3], b[start:start+3])
			copy(norm[3:5], b[start+4:start+6])
			copy(norm[5:9], b[st:run.End])
		case 9:
			start, end, format = run.Start, run.End, 2
			copy(norm[:], b[start:end])
		default:
			continue
		}
		if !bounded(b, start, end, format != 0) || !validSSN(norm) {
			continue
		}
		kw := kc.find(start, end)
		conf := 0
		switch {
		case format == 2 && kw < 0:
			continue // nine bare digits are an order number until something says otherwise
		case format == 2:
			conf = 75
		case kw >= 0:
			conf = 85
		default:
			conf = 65
		}
		ev := d.evidence[format][kw+1]
		r.Identifier(engine.PHI, conf, start, b[start:end], norm[:], ev)
	}
}

// bounded rejects numbers that are part of something longer: letters or digits touching
// the match, or a '-', '.', '/' (and for spaced forms a space) followed by another
// digit group, as in phone numbers, dates, decimals and account numbers.
func bounded(b []byte, start, end int, spaced bool) bool {
	if start > 0 {
		c := b[start-1]
		if isLetter(c) || isDigit(c) {
			return false
		}
		if (isJoiner(c) || spaced && c == ' ') && start >= 2 && isDigit(b[start-2]) {
			return false
		}
	}
	if end < len(b) {
		c := b[end]
		if isLetter(c) || isDigit(c) {
			return false
		}
		if (isJoiner(c) || spaced && c == ' ') && end+1 < len(b) && isDigit(b[end+1]) {
			return false
		}
	}
	return true
}

// validSSN applies the SSA's assignment rules to nine digits.
func validSSN(d [9]byte) bool {
	area := int(d[0]-'0')*100 + int(d[1]-'0')*10 + int(d[2]-'0')
	if area == 0 || area == 666 || area >= 900 {
		return false
	}
	if d[3] == '0' && d[4] == '0' {
		return false
	}
	if d[5] == '0' && d[6] == '0' && d[7] == '0' && d[8] == '0' {
		return false
	}
	same := true
	for _, c := range d[1:] {
		same = same && c == d[0]
	}
	if same {
		return false
	}
	switch string(d[:]) {
	case "078051120", "123456789", "219099999": // wallet insert, advertising, documentation samples
		return false
	}
	return string(d[:8]) != "98765432" // 987-65-4320..4329, reserved for advertising
}

func isDigit(c byte) bool  { return '0' <= c && c <= '9' }
func isLower(c byte) bool  { return 'a' <= c && c <= 'z' }
func isUpper(c byte) bool  { return 'A' <= c && c <= 'Z' }
func isLetter(c byte) bool { return isLower(c) || isUpper(c) }
func isJoiner(c byte) bool { return c == '-' || c == '.' || c == '/' }
