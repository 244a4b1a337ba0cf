package phi

import (
	"bytes"

	"github.com/ward-dlp/ward/classifiers/defs"
	"github.com/ward-dlp/ward/classifiers/engine"
)

// Phone finds North American phone numbers ((503) 555-2142, 503-555-2142, 503.555.2142,
// +1 503 555 2142) that follow the NANP rules (area and exchange 2-9xx, not N11) next to a
// phone keyword. A bare number is everywhere in clinical exports (clinic lines, fax
// covers), so without context it is not reported. 555-0100..0199 is reserved for fiction.
type Phone struct{ ctx keywordContext }

// NewPhone returns the phone detector with the built-in definition.
func NewPhone() *Phone { return NewPhoneFrom(defs.MustBuiltin("phi.phone")) }

// NewPhoneFrom returns the phone detector tuned by a validated definition.
func NewPhoneFrom(d defs.Definition) *Phone { return &Phone{ctx: newKeywordContext(d)} }

// Name implements engine.Detector.
// Local implements engine.Local: each occurrence is validated around one anchor.
func (*Phone) Local() bool { return true }

func (*Phone) Name() string { return "phi.phone" }

// Interest implements engine.Detector.
func (*Phone) Interest() engine.Interest { return engine.Interest{DigitRuns: true} }

// Detect implements engine.Detector.
func (d *Phone) Detect(s *engine.Scan, r *engine.Reporter) {
	b := s.Content
	kc := d.ctx.cursor(s)
	var norm [10]byte
	for _, run := range s.DigitRuns {
		start, end, ok := phoneAt(b, run, &norm)
		if !ok {
			continue
		}
		kw := kc.find(start, end)
		if kw < 0 {
			continue
		}
		r.Identifier(engine.PHI, 70, start, b[start:end], norm[:], "nanp phone keyword="+d.ctx.name(kw))
	}
}

// phoneAt reads a phone number that ends with the four-digit run (or is the ten-digit run).
func phoneAt(b []byte, run engine.Span, norm *[10]byte) (start, end int, ok bool) {
	end = run.End
	switch run.End - run.Start {
	case 10:
		start = run.Start
		copy(norm[:], b[start:end])
	case 4:
		st := run.Start
		if st < 8 {
			return 0, 0, false
		}
		sep := b[st-1]
		if sep != '-' && sep != '.' && sep != ' ' || digitsBefore(b, st-1) != 3 {
			return 0, 0, false
		}
		ex := st - 4
		copy(norm[3:6], b[ex:ex+3])
		copy(norm[6:], b[st:end])
		// Area: "(503) ", "(503)", "503-", "503.", "503 ".
		p := ex - 1
		switch {
		case p >= 4 && b[p] == ')' && digitsBefore(b, p) == 3 && b[p-4] == '(':
			start = p - 4
			copy(norm[:3], b[p-3:p])
		case p >= 5 && b[p] == ' ' && b[p-1] == ')' && digitsBefore(b, p-1) == 3 && b[p-5] == '(':
			start = p - 5
			copy(norm[:3], b[p-4:p-1])
		case p >= 3 && (b[p] == sep || b[p] == ' ' && sep == '-') && digitsBefore(b, p) == 3:
			start = p - 3
			copy(norm[:3], b[p-3:p])
		default:
			return 0, 0, false
		}
	default:
		return 0, 0, false
	}
	// Not part of something longer (an SSN group, an account number, a date).
	if start > 0 {
		c := b[start-1]
		if isLetter(c) || isDigit(c) || (c == '-' || c == '.' || c == '/') && start >= 2 && isDigit(b[start-2]) {
			return 0, 0, false
		}
	}
	if end < len(b) {
		c := b[end]
		if isLetter(c) || isDigit(c) || (c == '-' || c == '.' || c == '/') && end+1 < len(b) && isDigit(b[end+1]) {
			return 0, 0, false
		}
	}
	n := norm[:]
	if n[0] < '2' || n[3] < '2' || n[1] == '1' && n[2] == '1' || n[4] == '1' && n[5] == '1' || repeated(n) {
		return 0, 0, false
	}
	if string(n[3:6]) == "555" && n[6] == '0' && n[7] == '1' {
		return 0, 0, false // 555-0100..0199: fictional
	}
	if string(n) == "1234567890" || string(n[3:]) == "5551212" {
		return 0, 0, false
	}
	return start, end, true
}

// Email finds e-mail addresses (RFC 5321 dot-atom local part, a dotted domain with an
// alphabetic TLD). RFC 2606 example domains are samples. A keyword raises confidence; an
// address alone is reported low because most addresses in clinical files are staff's.
type Email struct{ ctx keywordContext }

// NewEmail returns the e-mail detector with the built-in definition.
func NewEmail() *Email { return NewEmailFrom(defs.MustBuiltin("phi.email")) }

// NewEmailFrom returns the e-mail detector tuned by a validated definition.
func NewEmailFrom(d defs.Definition) *Email { return &Email{ctx: newKeywordContext(d)} }

// Name implements engine.Detector.
func (*Email) Name() string { return "phi.email" }

// Interest implements engine.Detector.
func (*Email) Interest() engine.Interest { return engine.Interest{Exact: []string{"@"}} }

// Detect implements engine.Detector.
func (d *Email) Detect(s *engine.Scan, r *engine.Reporter) {
	b := s.Content
	kc := d.ctx.cursor(s)
	for _, h := range s.Hits {
		at := h.Off
		lo := at
		for lo > 0 && at-lo < 64 && isLocalByte(b[lo-1]) {
			lo--
		}
		for lo < at && b[lo] == '.' {
			lo++
		}
		if lo == at || b[at-1] == '.' {
			continue
		}
		hi, dots, lastDot := at+1, 0, -1
		for hi < len(b) && hi-at < 255 && (isLetter(b[hi]) || isDigit(b[hi]) || b[hi] == '-' || b[hi] == '.') {
			if b[hi] == '.' {
				dots++
				lastDot = hi
			}
			hi++
		}
		for hi > at+1 && b[hi-1] == '.' { // sentence full stop
			hi--
			dots--
			lastDot = bytes.LastIndexByte(b[at:hi], '.')
			if lastDot >= 0 {
				lastDot += at
			}
		}
		if dots < 1 || lastDot < 0 || hi-lastDot-1 < 2 || b[at+1] == '.' || b[at+1] == '-' {
			continue
		}
		tld := b[lastDot+1 : hi]
		alpha := true
		for _, c := range tld {
			alpha = alpha && isLetter(c)
		}
		if !alpha {
			continue
		}
		dom := bytes.ToLower(b[at+1 : hi])
		if exampleDomain(dom) {
			continue
		}
		norm := bytes.ToLower(b[lo:hi])
		conf, ev := 50, "email no keyword"
		if kw := kc.find(lo, hi); kw >= 0 {
			conf, ev = 70, "email keyword="+d.ctx.name(kw)
		}
		r.Identifier(engine.PHI, conf, lo, b[lo:hi], norm, ev)
	}
}

func isLocalByte(c byte) bool {
	return isLetter(c) || isDigit(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-'
}

func exampleDomain(d []byte) bool {
	for _, s := range [][]byte{[]byte("example.com"), []byte("example.org"), []byte("example.net")} {
		if bytes.Equal(d, s) || bytes.HasSuffix(d, append([]byte("."), s...)) {
			return true
		}
	}
	return bytes.HasSuffix(d, []byte(".example")) || bytes.HasSuffix(d, []byte(".test")) || bytes.HasSuffix(d, []byte(".invalid"))
}
