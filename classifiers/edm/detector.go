package edm

import (
	"github.com/ward-dlp/ward/classifiers/engine"
	"github.com/ward-dlp/ward/classifiers/phi"
)

// Detector reports content that names a known Part 2 patient: an SSN or MRN token, or a
// surname within a short window of a date of birth, whose keyed hash is in the index. It
// needs no keyword: the organisation's own roster is the evidence.
type Detector struct{ x *Index }

// NewDetector returns the EDM detector over a loaded index.
func NewDetector(x *Index) *Detector { return &Detector{x: x} }

// Name implements engine.Detector.
func (*Detector) Name() string { return "edm.part2-patient" }

// Interest implements engine.Detector: every SSN, MRN and year contains a long digit run.
func (*Detector) Interest() engine.Interest { return engine.Interest{DigitRuns: true} }

// nameWindow is how far from a date a surname may sit.
const nameWindow = 80

// Detect implements engine.Detector.
func (d *Detector) Detect(s *engine.Scan, r *engine.Reporter) {
	b := s.Content
	lastTok := -1
	for _, run := range s.DigitRuns {
		// Token: maximal run of letters, digits and inner dashes/spaces-free separators.
		lo, hi := run.Start, run.End
		for lo > 0 && run.Start-lo < 20 && (isAlnum(b[lo-1]) || b[lo-1] == '-' && lo >= 2 && isAlnum(b[lo-2])) {
			lo--
		}
		for hi < len(b) && hi-run.End < 20 && (isAlnum(b[hi]) || b[hi] == '-' && hi+1 < len(b) && isAlnum(b[hi+1])) {
			hi++
		}
		if lo > lastTok {
			lastTok = hi
			tok := string(b[lo:hi])
			if n, ok := NormSSN(tok); ok && d.x.Contains(KindSSN, n) {
				r.Identifier(engine.Part2, 95, lo, b[lo:hi], n, "edm ssn of a known Part 2 patient")
				continue
			}
			if n, ok := NormMRN(tok); ok && d.x.Contains(KindMRN, n) {
				r.Identifier(engine.Part2, 90, lo, b[lo:hi], n, "edm mrn of a known Part 2 patient")
				continue
			}
			// Spaced SSN: "219 45 8765" ends at this run.
			if run.End-run.Start == 4 && run.Start >= 7 {
				st := run.Start - 7
				if n, ok := NormSSN(string(b[st:run.End])); ok && d.x.Contains(KindSSN, n) {
					r.Identifier(engine.Part2, 95, st, b[st:run.End], n, "edm ssn of a known Part 2 patient")
					continue
				}
			}
		}
		if st, en, ymd, ok := phi.DateAround(b, run); ok {
			d.nameNear(b, st, en, ymd, r)
		}
	}
}

// nameNear hashes each word around a date with the date and reports the first hit.
func (d *Detector) nameNear(b []byte, st, en int, ymd [8]byte, r *engine.Reporter) {
	lo, hi := max(0, st-nameWindow), min(len(b), en+nameWindow)
	for i := lo; i < hi; {
		if !isLetter(b[i]) || i > 0 && isLetter(b[i-1]) {
			i++
			continue
		}
		j := i
		for j < len(b) && (isLetter(b[j]) || b[j] == '\'' || b[j] == '-' && j+1 < len(b) && isLetter(b[j+1])) {
			j++
		}
		if j-i >= 2 && j-i <= 40 && isUpperByte(b[i]) {
			sn := NormSurname(string(b[i:j]))
			if d.x.Contains(KindNameDOB, NormNameDOB(sn, ymd)) {
				r.Identifier(engine.Part2, 90, st, phi.YearOnly(ymd), NormNameDOB(sn, ymd), "edm surname+dob of a known Part 2 patient")
				return
			}
		}
		i = j
	}
}

func isLetter(c byte) bool    { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
func isUpperByte(c byte) bool { return 'A' <= c && c <= 'Z' }
func isAlnum(c byte) bool     { return isLetter(c) || '0' <= c && c <= '9' }
