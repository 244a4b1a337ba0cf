package phi

import (
	"bytes"

	"github.com/ward-dlp/ward/classifiers/defs"
	"github.com/ward-dlp/ward/classifiers/engine"
)

// DOB finds dates of birth: a calendar-valid date (04/12/1985, 4-12-85, 1985-04-12,
// 12.04.1985, "April 12, 1985") within a short window after a birth keyword. Dates alone
// are everywhere in clinical text (visits, orders) and are not reported.
type DOB struct{ ctx keywordContext }

// NewDOB returns the date-of-birth detector with the built-in definition.
func NewDOB() *DOB { return NewDOBFrom(defs.MustBuiltin("phi.dob")) }

// NewDOBFrom returns the date-of-birth detector tuned by a validated definition.
func NewDOBFrom(d defs.Definition) *DOB { return &DOB{ctx: newKeywordContext(d)} }

// Name implements engine.Detector.
// Local implements engine.Local: each occurrence is validated around one anchor.
func (*DOB) Local() bool { return true }

func (*DOB) Name() string { return "phi.dob" }

// Interest implements engine.Detector: four-digit years and compact dates come from the
// digit runs; dates with two-digit years are read after a "DOB" or "D.O.B" label.
func (*DOB) Interest() engine.Interest {
	return engine.Interest{DigitRuns: true, Literals: []string{"dob", "d.o.b"}}
}

// Detect implements engine.Detector. A keyword vouches for the first date after it only:
// "DOB: 01/02/1970, visit 03/04/2024" reports the birth date, not the visit.
func (d *DOB) Detect(s *engine.Scan, r *engine.Reporter) {
	b := s.Content
	kh := d.ctx.cursor(s)
	reported := -1
	try := func(st, en int, ymd [8]byte) {
		if st <= reported {
			return
		}
		k, _, kend := kh.last(st-d.ctx.before, st)
		if k < 0 || kend > st || dateBetween(b, kend, st) {
			return
		}
		reported = st
		r.Identifier(engine.PHI, 80, st, yearOnly(ymd), ymd[:], "date keyword="+d.ctx.name(k))
	}
	// Two-digit-year dates ("D.O.B 4/12/85") are read only right after a label; dates
	// with a four-digit year are found from their year's run, so each date has exactly
	// one anchor (what engine.Local promises).
	labels := s.Hits
	nextLabel := func(before int) {
		for len(labels) > 0 && labels[0].Off < before {
			if st, en, ymd, ok := dateAfter(b, labels[0].Off, 24); ok && longestDigits(b[st:en]) < 4 {
				try(st, en, ymd)
			}
			labels = labels[1:]
		}
	}
	for _, run := range s.DigitRuns {
		n := run.End - run.Start
		if n != 4 && n != 8 {
			continue
		}
		nextLabel(run.Start)
		// Both forms start with a year of 1900..2099 (dateAround, compactDate): SSN
		// serials, phone line numbers and lab values are dropped before the keyword
		// question, which costs more than these two bytes.
		if c0, c1 := b[run.Start], b[run.Start+1]; !(c0 == '1' && c1 == '9' || c0 == '2' && c1 == '0') {
			continue
		}
		// A date containing this run starts at most dateLead bytes before it, so a birth
		// keyword must be before that: most dates in notes (visits, orders) have none and
		// are not parsed at all.
		if !kh.anyIn(run.Start-dateLead-d.ctx.before, run.Start) {
			continue
		}
		if n == 8 {
			// yyyymmdd: CDA birthTime, X12 DMG*D8, HL7 v2 PID-7.
			if ymd, ok := compactDate(b[run.Start:run.End]); ok {
				try(run.Start, run.End, ymd)
			}
			continue
		}
		if st, en, ymd, ok := dateAround(b, run); ok {
			try(st, en, ymd)
		}
	}
	nextLabel(len(b) + 1)
}

// longestDigits is the length of the longest run of ASCII digits in b.
func longestDigits(b []byte) int {
	best, n := 0, 0
	for _, c := range b {
		if isDigit(c) {
			n++
			best = max(best, n)
		} else {
			n = 0
		}
	}
	return best
}

// dateBetween reports whether a date (any form DOB reads) starts and ends in b[from:to].
func dateBetween(b []byte, from, to int) bool {
	for i := max(from, 0); i < to; i++ {
		if !isDigit(b[i]) || i > 0 && isDigit(b[i-1]) {
			continue
		}
		if _, en, _, ok := numericDate(b, i); ok && en <= to {
			return true
		}
		switch n := digitsAfter(b, i); {
		case n == 8 && i+8 <= to:
			if _, ok := compactDate(b[i : i+8]); ok {
				return true
			}
		case n == 4 && i+4 <= to:
			if _, en, _, ok := dateAround(b, engine.Span{Start: i, End: i + 4}); ok && en <= to {
				return true
			}
		}
	}
	return false
}

// dateLead bounds how far before its year (or ISO start) a date begins ("September 30, ").
const dateLead = 24

// dateAfter finds the first date starting within n bytes after off.
func dateAfter(b []byte, off, n int) (int, int, [8]byte, bool) {
	end := min(len(b), off+n)
	for i := off; i < end; i++ {
		if !isDigit(b[i]) || i > 0 && isDigit(b[i-1]) {
			continue
		}
		if st, en, ymd, ok := numericDate(b, i); ok {
			return st, en, ymd, true
		}
	}
	return 0, 0, [8]byte{}, false
}

// DateAround reads a calendar-valid date that contains the digit run (as its year, or the
// year of an ISO date) and returns its span and yyyymmdd form. EDM uses it to pair dates
// with surnames.
func DateAround(b []byte, run engine.Span) (start, end int, ymd [8]byte, ok bool) {
	return dateAround(b, run)
}

// ParseDate normalises one date string (the forms DOB accepts) to yyyymmdd.
func ParseDate(s string) ([8]byte, bool) {
	b := []byte(s)
	if _, end, ymd, ok := numericDate(b, 0); ok && end == len(b) {
		return ymd, true
	}
	return [8]byte{}, false
}

// dateAround reads a date containing the four-digit run: as its year (m/d/yyyy, d.m.yyyy,
// "Month d, yyyy") or its start (yyyy-mm-dd).
func dateAround(b []byte, run engine.Span) (int, int, [8]byte, bool) {
	st := run.Start
	y := b[st:run.End]
	if !(y[0] == '1' && y[1] == '9' || y[0] == '2' && y[1] == '0') {
		return 0, 0, [8]byte{}, false
	}
	if st, en, ymd, ok := numericDate(b, st); ok {
		return st, en, ymd, true
	}
	if st >= 4 && (b[st-1] == '/' || b[st-1] == '-' || b[st-1] == '.') {
		// Walk back over "dd<sep>mm<sep>" or "mm<sep>dd<sep>".
		p := st - 1
		n1 := digitsBefore(b, p)
		if n1 >= 1 && n1 <= 2 && p-n1-1 >= 1 && b[p-n1-1] == b[p] {
			n2 := digitsBefore(b, p-n1-1)
			if n2 >= 1 && n2 <= 2 {
				if s, en, ymd, ok := numericDate(b, p-n1-1-n2); ok && en == run.End {
					return s, en, ymd, true
				}
			}
		}
	}
	// "April 12, 1985" / "12 April 1985".
	if st >= 2 && b[st-1] == ' ' {
		lo := max(0, st-24)
		w := bytes.ToLower(b[lo:st])
		for mi, m := range months {
			if i := bytes.LastIndex(w, []byte(m)); i >= 0 {
				var ymd [8]byte
				copy(ymd[:4], y)
				ymd[4], ymd[5] = byte('0'+(mi+1)/10), byte('0'+(mi+1)%10)
				ymd[6], ymd[7] = '0', '0'
				for j := i + len(m); j < len(w)-1; j++ {
					if isDigit(w[j]) {
						d := int(w[j] - '0')
						if j+1 < len(w) && isDigit(w[j+1]) {
							d = d*10 + int(w[j+1]-'0')
						}
						if d >= 1 && d <= 31 {
							ymd[6], ymd[7] = byte('0'+d/10), byte('0'+d%10)
						}
						break
					}
				}
				return lo + i, run.End, ymd, true
			}
		}
	}
	return 0, 0, [8]byte{}, false
}

// yearOnly is the shape a date of birth is masked to: HIPAA Safe Harbor lets the year
// stand, while month and day (the last four digits of most formats) must not.
func yearOnly(ymd [8]byte) []byte {
	return append([]byte("**/**/"), ymd[:4]...)
}

// YearOnly is yearOnly for EDM's surname+DOB matches.
func YearOnly(ymd [8]byte) []byte { return yearOnly(ymd) }

var months = []string{"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}

// numericDate parses yyyy-mm-dd, m/d/yyyy, m/d/yy, d.m.yyyy starting at i into yyyymmdd.
func numericDate(b []byte, i int) (int, int, [8]byte, bool) {
	var ymd [8]byte
	num := func(j, maxLen int) (int, int) {
		v, n := 0, 0
		for j+n < len(b) && n < maxLen && isDigit(b[j+n]) {
			v = v*10 + int(b[j+n]-'0')
			n++
		}
		return v, n
	}
	a, na := num(i, 4)
	if na == 0 || i+na >= len(b) {
		return 0, 0, ymd, false
	}
	sep := b[i+na]
	if sep != '/' && sep != '-' && sep != '.' {
		return 0, 0, ymd, false
	}
	m, nm := num(i+na+1, 2)
	if nm == 0 || i+na+1+nm >= len(b) || b[i+na+1+nm] != sep {
		return 0, 0, ymd, false
	}
	c, nc := num(i+na+1+nm+1, 4)
	end := i + na + 1 + nm + 1 + nc
	if end < len(b) && (isDigit(b[end]) || isLetter(b[end])) {
		return 0, 0, ymd, false
	}
	var y, mo, d int
	switch {
	case na == 4 && nc >= 1 && nc <= 2:
		y, mo, d = a, m, c
	case na <= 2 && (nc == 4 || nc == 2):
		y, mo, d = c, a, m
		if sep == '.' { // European day.month.year
			mo, d = m, a
		}
		if nc == 2 {
			y += 1900
			if c < 30 {
				y += 100
			}
		}
	default:
		return 0, 0, ymd, false
	}
	if y < 1900 || y > 2099 || mo < 1 || mo > 12 || d < 1 || d > daysIn(mo, y) {
		return 0, 0, ymd, false
	}
	put := func(at, v, n int) {
		for k := n - 1; k >= 0; k-- {
			ymd[at+k] = byte('0' + v%10)
			v /= 10
		}
	}
	put(0, y, 4)
	put(4, mo, 2)
	put(6, d, 2)
	return i, end, ymd, true
}

// compactDate validates yyyymmdd.
func compactDate(d []byte) ([8]byte, bool) {
	var ymd [8]byte
	copy(ymd[:], d)
	n := func(i, j int) int {
		v := 0
		for _, c := range d[i:j] {
			v = v*10 + int(c-'0')
		}
		return v
	}
	y, m, dd := n(0, 4), n(4, 6), n(6, 8)
	if y < 1900 || y > 2099 || m < 1 || m > 12 || dd < 1 || dd > daysIn(m, y) {
		return ymd, false
	}
	return ymd, true
}

func daysIn(m, y int) int {
	switch m {
	case 2:
		if y%4 == 0 && (y%100 != 0 || y%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// MRN finds medical record numbers: a token of digits (optionally with a letter prefix and
// dashes, "HSR-0048812") right after an MRN keyword. MRN formats are per-organisation, so
// the keyword is the evidence; EDM matches the clinic's own MRNs without one.
type MRN struct{ ctx keywordContext }

// NewMRN returns the MRN detector with the built-in definition.
func NewMRN() *MRN { return NewMRNFrom(defs.MustBuiltin("phi.mrn")) }

// NewMRNFrom returns the MRN detector tuned by a validated definition.
func NewMRNFrom(d defs.Definition) *MRN { return &MRN{ctx: newKeywordContext(d)} }

// Name implements engine.Detector.
// Local implements engine.Local: each occurrence is validated around one anchor.
func (*MRN) Local() bool { return true }

func (*MRN) Name() string { return "phi.mrn" }

// Interest implements engine.Detector.
func (*MRN) Interest() engine.Interest { return engine.Interest{DigitRuns: true} }

// Detect implements engine.Detector. The keyword vouches for the first identifier after it
// only: in "MRN: 00482913 DOB: 01/02/1970" the year is not an MRN.
func (d *MRN) Detect(s *engine.Scan, r *engine.Reporter) {
	b := s.Content
	kh := d.ctx.cursor(s)
	for _, run := range s.DigitRuns {
		// Most runs in notes are dates: a run right after or before a '/' or '.' between
		// digits is a date component and is rejected before any keyword search; for the
		// others, a keyword must start within 24 bytes (the longest token lead) plus
		// keyword_before before the run.
		st, en := run.Start, run.End
		if st >= 2 && (b[st-1] == '/' || b[st-1] == '.') && isDigit(b[st-2]) ||
			en+1 < len(b) && (b[en] == '/' || b[en] == '.') && isDigit(b[en+1]) ||
			!kh.anyIn(st-24-d.ctx.before, st) {
			continue
		}
		lo, hi := st, en
		for lo > 0 && hi-lo < 24 && (isLetter(b[lo-1]) || isDigit(b[lo-1]) || b[lo-1] == '-' && lo >= 2 && (isLetter(b[lo-2]) || isDigit(b[lo-2]))) {
			lo--
		}
		for hi < len(b) && hi-lo < 24 && (isDigit(b[hi]) || isUpper(b[hi]) || b[hi] == '-' && hi+1 < len(b) && isDigit(b[hi+1])) {
			hi++
		}
		// A token with two runs ("0048-8812") is reported from its first: runs are
		// anchors of their own (engine.Local), the token is one identifier.
		if hi-lo > 20 || hi < len(b) && (isLetter(b[hi]) || isDigit(b[hi])) || longestDigits(b[lo:run.Start]) >= engine.MinDigitRun {
			continue
		}
		letters := 0
		for _, c := range b[lo:hi] {
			if isLetter(c) {
				letters++
			}
		}
		if letters > 4 || partOfDate(b, lo, hi) {
			continue
		}
		k, _, kend := kh.last(lo-d.ctx.before, lo)
		if k < 0 || kend > lo || hasDigit(b[kend:lo]) {
			continue
		}
		norm := bytes.ToUpper(bytes.ReplaceAll(b[lo:hi], []byte("-"), nil))
		r.Identifier(engine.PHI, 75, lo, b[lo:hi], norm, "mrn keyword="+d.ctx.name(k))
	}
}

// partOfDate reports whether the token b[lo:hi] is a date or a component of one
// ("1970-01-02", the year of "01/02/1970", the day of "02/01.").
func partOfDate(b []byte, lo, hi int) bool {
	if lo >= 2 && (b[lo-1] == '/' || b[lo-1] == '.') && isDigit(b[lo-2]) {
		return true
	}
	if hi+1 < len(b) && (b[hi] == '/' || b[hi] == '.') && isDigit(b[hi+1]) {
		return true
	}
	// A whole date as the token ("2026-09-14"): it has a '-' between digits.
	if bytes.IndexByte(b[lo:hi], '-') < 0 {
		return false
	}
	_, en, _, ok := numericDate(b, lo)
	return ok && en == hi
}

func hasDigit(b []byte) bool {
	for _, c := range b {
		if isDigit(c) {
			return true
		}
	}
	return false
}

// Address finds US postal addresses: a ZIP (or ZIP+4) after a state code, with a street
// line (number, name, suffix) before it. The ZIP run anchors it; the street line is what
// makes it an address rather than a city name in a letterhead.
type Address struct {
	ctx      keywordContext
	suffixes *defs.KeywordSet
}

// NewAddress returns the address detector with the built-in definition.
func NewAddress() *Address { return NewAddressFrom(defs.MustBuiltin("phi.address")) }

// NewAddressFrom returns the address detector tuned by a validated definition: keywords
// raise confidence, list "street_suffixes" says what makes a line a street line.
func NewAddressFrom(d defs.Definition) *Address {
	var sfx []defs.Keyword
	for _, s := range d.List("street_suffixes") {
		name := "street"
		if bytes.Contains([]byte(s), []byte("box")) {
			name = "po-box"
		}
		sfx = append(sfx, defs.Keyword{Text: string(bytes.ToLower([]byte(s))), Name: name})
	}
	return &Address{ctx: newKeywordContext(d), suffixes: defs.NewKeywordSet(sfx)}
}

// Name implements engine.Detector.
// Local implements engine.Local: each occurrence is validated around one anchor.
func (*Address) Local() bool { return true }

func (*Address) Name() string { return "phi.address" }

// Interest implements engine.Detector.
func (*Address) Interest() engine.Interest { return engine.Interest{DigitRuns: true} }

const usStates = "AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY PR GU VI AS MP "

// Detect implements engine.Detector.
func (d *Address) Detect(s *engine.Scan, r *engine.Reporter) {
	b := s.Content
	kc := d.ctx.cursor(s)
	for _, run := range s.DigitRuns {
		st := run.Start
		if run.End-st != 5 || st < 4 {
			continue
		}
		end := run.End
		if end+5 <= len(b) && b[end] == '-' && digitsAfter(b, end+1) == 4 {
			end += 5
		}
		if end < len(b) && (isLetter(b[end]) || isDigit(b[end])) {
			continue
		}
		p := st - 1
		for p > 0 && b[p] == ' ' && st-p < 3 {
			p--
		}
		if p < 2 || !isUpper(b[p]) || !isUpper(b[p-1]) || p >= 2 && isLetter(b[p-2]) {
			continue
		}
		if !bytes.Contains([]byte(usStates), []byte{b[p-1], b[p], ' '}) {
			continue
		}
		// A street number starting the line, within 100 bytes before the state.
		lineStart := p - 1
		for lineStart > 0 && p-lineStart < 100 && b[lineStart-1] != '\n' && b[lineStart-1] != '|' && b[lineStart-1] != '"' && b[lineStart-1] != '>' {
			lineStart--
		}
		if d.suffixes.Find(b, lineStart, p) < 0 {
			continue
		}
		num := -1
		for i := lineStart; i < p-1; i++ {
			if isDigit(b[i]) && (i == lineStart || !isDigit(b[i-1]) && !isLetter(b[i-1])) {
				j := i
				for j < p && isDigit(b[j]) {
					j++
				}
				if j-i <= 6 && j < p && b[j] == ' ' {
					num = i
					break
				}
			}
		}
		if num < 0 {
			continue
		}
		conf, ev := 70, "street line state zip"
		if kw := kc.find(num, end); kw >= 0 {
			conf, ev = 80, "street line state zip keyword="+d.ctx.name(kw)
		}
		norm := bytes.ToLower(b[num:end])
		r.Identifier(engine.PHI, conf, num, b[num:end], norm, ev)
	}
}

func digitsAfter(b []byte, i int) int {
	n := 0
	for i+n < len(b) && isDigit(b[i+n]) {
		n++
	}
	return n
}
