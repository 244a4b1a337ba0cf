package phi

import (
	"bytes"

	"github.com/ward-dlp/ward/classifiers/defs"
	"github.com/ward-dlp/ward/classifiers/engine"
)

// NPI finds National Provider Identifiers: ten digits starting 1 or 2 whose Luhn check over
// "80840"+NPI holds. One random ten-digit string in ten passes that check, so an NPI is
// reported only next to a keyword or its identifier system (Presidio and Macie do the same).
type NPI struct{ ctx keywordContext }

// NewNPI returns the NPI detector with the built-in definition.
func NewNPI() *NPI { return NewNPIFrom(defs.MustBuiltin("phi.npi")) }

// NewNPIFrom returns the NPI detector tuned by a validated definition.
func NewNPIFrom(d defs.Definition) *NPI { return &NPI{ctx: newKeywordContext(d)} }

// Name implements engine.Detector.
// Local implements engine.Local: each occurrence is validated around one anchor.
func (*NPI) Local() bool { return true }

func (*NPI) Name() string { return "phi.npi" }

// Interest implements engine.Detector.
func (*NPI) Interest() engine.Interest { return engine.Interest{DigitRuns: true} }

// npiSamples are documentation and placeholder NPIs that pass the check digit.
var npiSamples = map[string]bool{"1234567893": true, "1111111112": true, "2222222224": true}

// Detect implements engine.Detector.
func (d *NPI) Detect(s *engine.Scan, r *engine.Reporter) {
	b := s.Content
	kc := d.ctx.cursor(s)
	for _, run := range s.DigitRuns {
		if run.End-run.Start != 10 || !bounded(b, run.Start, run.End, false) {
			continue
		}
		v := b[run.Start:run.End]
		if v[0] != '1' && v[0] != '2' || repeated(v[1:9]) || npiSamples[string(v)] || !luhnOK("80840", string(v)) {
			continue
		}
		kw := kc.find(run.Start, run.End)
		if kw < 0 {
			continue
		}
		r.Identifier(engine.PHI, 80, run.Start, v, v, "npi luhn(80840) ok keyword="+d.ctx.name(kw))
	}
}

// DEA finds DEA registration numbers: a registrant-type letter, a second letter (the
// registrant's initial, or 9 for business names), seven digits with the check digit
// (d1+d3+d5) + 2(d2+d4+d6) ≡ d7 (mod 10). Like Macie, it needs a keyword nearby. An 'X'
// type marks a DATA-waived (buprenorphine) prescriber, which the evidence says.
type DEA struct{ ctx keywordContext }

// NewDEA returns the DEA number detector with the built-in definition.
func NewDEA() *DEA { return NewDEAFrom(defs.MustBuiltin("phi.dea")) }

// NewDEAFrom returns the DEA detector tuned by a validated definition.
func NewDEAFrom(d defs.Definition) *DEA { return &DEA{ctx: newKeywordContext(d)} }

// Name implements engine.Detector.
// Local implements engine.Local: each occurrence is validated around one anchor.
func (*DEA) Local() bool { return true }

func (*DEA) Name() string { return "phi.dea" }

// Interest implements engine.Detector.
func (*DEA) Interest() engine.Interest { return engine.Interest{DigitRuns: true} }

// deaTypes are the DEA registrant type letters in use.
const deaTypes = "ABCDEFGHJKLMPRSTUX"

// Detect implements engine.Detector.
func (d *DEA) Detect(s *engine.Scan, r *engine.Reporter) {
	b := s.Content
	kc := d.ctx.cursor(s)
	for _, run := range s.DigitRuns {
		st := run.Start
		if run.End-st != 7 || st < 2 {
			continue
		}
		t, n := b[st-2], b[st-1]
		if bytes.IndexByte([]byte(deaTypes), t) < 0 || !(isUpper(n) || n == '9') {
			continue
		}
		if st >= 3 && (isLetter(b[st-3]) || isDigit(b[st-3])) || run.End < len(b) && (isLetter(b[run.End]) || isDigit(b[run.End])) {
			continue
		}
		g := b[st:run.End]
		sum := int(g[0]-'0') + int(g[2]-'0') + int(g[4]-'0') + 2*(int(g[1]-'0')+int(g[3]-'0')+int(g[5]-'0'))
		if sum%10 != int(g[6]-'0') || repeated(g[:6]) {
			continue
		}
		v := b[st-2 : run.End]
		if string(v) == "AB1234563" || string(v) == "BB1388568" { // documentation samples
			continue
		}
		kw := kc.find(st-2, run.End)
		if kw < 0 {
			continue
		}
		ev := "dea check digit ok keyword=" + d.ctx.name(kw)
		if t == 'X' {
			ev += " type=X (DATA-waived buprenorphine prescriber)"
		}
		r.Identifier(engine.PHI, 85, st-2, v, v, ev)
	}
}

// MBI finds Medicare Beneficiary Identifiers (11 characters, C A AN N A AN N A A N N, with
// cosmetic dashes after the 4th and 7th). The format has no check digit, so it is only
// looked for right after a Medicare keyword or the FHIR us-mbi system.
type MBI struct {
	anchors []string
	window  int
}

// NewMBI returns the MBI detector with the built-in definition.
func NewMBI() *MBI { return NewMBIFrom(defs.MustBuiltin("phi.mbi")) }

// NewMBIFrom returns the MBI detector tuned by a validated definition: list "anchors"
// (case-sensitive keywords the identifier follows) and keyword_after (how far after one
// the identifier may start).
func NewMBIFrom(d defs.Definition) *MBI {
	return &MBI{anchors: d.List("anchors"), window: max(d.KeywordAfter, 16)}
}

// Name implements engine.Detector.
func (*MBI) Name() string { return "phi.mbi" }

// Interest implements engine.Detector. The anchors are case-sensitive: the built-in
// spellings are how forms, claims and FHIR write them, and exact anchors keep the shared
// pass cheap.
func (d *MBI) Interest() engine.Interest { return engine.Interest{Exact: d.anchors} }

// Detect implements engine.Detector.
func (d *MBI) Detect(s *engine.Scan, r *engine.Reporter) {
	b := s.Content
	next := 0
	for _, h := range s.Hits {
		from := max(h.Off, next)
		end := min(len(b), h.Off+d.window)
		for i := from; i < end; i++ {
			if b[i] < '1' || b[i] > '9' || i > 0 && (isLetter(b[i-1]) || isDigit(b[i-1])) {
				continue
			}
			var norm [11]byte
			n, ok := readMBI(b[i:], &norm)
			if !ok || string(norm[:]) == "1EG4TE5MK73" { // CMS documentation sample
				continue
			}
			r.Identifier(engine.PHI, 85, i, b[i:i+n], norm[:], "mbi format keyword="+d.anchors[h.Literal])
			next = i + n
			break
		}
	}
}

// readMBI parses an MBI at the start of b (dashed or not, upper case) into norm and
// returns its length in b.
func readMBI(b []byte, norm *[11]byte) (int, bool) {
	const (
		num = iota
		alpha
		alnum
		first
	)
	shape := [11]int{first, alpha, alnum, num, alpha, alnum, num, alpha, alpha, num, num}
	j, k := 0, 0
	for k < 11 {
		if j >= len(b) {
			return 0, false
		}
		c := b[j]
		if (k == 4 || k == 7) && c == '-' {
			j++
			continue
		}
		okc := false
		switch shape[k] {
		case first:
			okc = c >= '1' && c <= '9'
		case num:
			okc = isDigit(c)
		case alpha:
			okc = mbiLetter(c)
		case alnum:
			okc = isDigit(c) || mbiLetter(c)
		}
		if !okc {
			return 0, false
		}
		norm[k] = c
		j, k = j+1, k+1
	}
	if j < len(b) && (isLetter(b[j]) || isDigit(b[j]) || b[j] == '-' && j+1 < len(b) && isDigit(b[j+1])) {
		return 0, false
	}
	// Dashes are all or nothing.
	if j != 11 && j != 13 {
		return 0, false
	}
	return j, true
}

// mbiLetter is an upper-case letter MBIs use (no S L O I B Z).
func mbiLetter(c byte) bool {
	return isUpper(c) && c != 'S' && c != 'L' && c != 'O' && c != 'I' && c != 'B' && c != 'Z'
}
