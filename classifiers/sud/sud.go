// Package sud finds untagged substance-use-disorder evidence: diagnosis, procedure and
// medication codes from the CMS SAMHSA claim-suppression list and the MOUD vocabularies, and
// opioid-treatment-program taxonomy codes. Alone they say "SUD-related" (reported as PHI,
// detector sud.codes); next to patient identifiers, the Probable combiner says "probable
// Part 2 record". Tobacco (F17, 305.1) is not protected and never counts.
package sud

import (
	"strings"

	"github.com/ward-dlp/ward/classifiers/defs"
	"github.com/ward-dlp/ward/classifiers/engine"
)

// Confidence tiers. Alone, SUD evidence is health information without an identity, so it
// stays below the usual reporting threshold (60): it is evidence for Probable and for
// policy, not a finding by itself.
const (
	confCode = 55 // a validated code in code form or with a code-system context
	confWeak = 45 // a code shape that is also a key name or part number ("F10")
	confName = 40 // an MOUD medication name (pain and other uses are common)
)

// Codes is the untagged SUD evidence detector. Its code lists and context words are data
// (definition sud.codes) so an organisation can follow list updates without a release.
type Codes struct {
	// medications are MOUD names (generic and brand) matched in any case at word
	// boundaries: "started methadone", "SUBOXONE 8/2", "Vivitrol". They are case-folded
	// prefilter literals, which the vector pass finds at no extra cost per byte.
	// medicationsExact are matched as spelled (an organisation's override may need a name
	// that is also a common word in another case).
	medications, medicationsExact   []string
	hcpcs, snomed, rxnorm, taxonomy *codeSet
	// codeContext, snomedContext and rxnormContext are lower-case words that make a bare
	// number a code: within keyword_before bytes before it or keyword_after after.
	codeContext, snomedContext, rxnormContext *defs.KeywordSet
	before, after                             int
}

// NewCodes returns the SUD code detector with the built-in definition.
func NewCodes() *Codes { return NewCodesFrom(defs.MustBuiltin("sud.codes")) }

// NewCodesFrom returns the SUD code detector from a validated definition: lists hcpcs,
// snomed, rxnorm, taxonomy, medications, medications_exact, snomed_context and
// rxnorm_context; keywords are the code-context words.
func NewCodesFrom(d defs.Definition) *Codes {
	set := func(name string) *codeSet {
		cs := &codeSet{m: map[string]bool{}}
		for _, c := range d.List(name) {
			cs.add(c)
		}
		return cs
	}
	lower := func(l []string) []string {
		out := make([]string, len(l))
		for i, s := range l {
			out[i] = strings.ToLower(s)
		}
		return out
	}
	c := &Codes{
		medications: lower(d.List("medications")), medicationsExact: d.List("medications_exact"),
		hcpcs: set("hcpcs"), snomed: set("snomed"), rxnorm: set("rxnorm"), taxonomy: set("taxonomy"),
		snomedContext: defs.NewSubstringSet(lower(d.List("snomed_context"))),
		rxnormContext: defs.NewSubstringSet(lower(d.List("rxnorm_context"))),
		before:        max(d.KeywordBefore, 1), after: d.KeywordAfter,
	}
	var words []string
	for _, k := range d.Keywords {
		words = append(words, k.Text)
	}
	c.codeContext = defs.NewSubstringSet(words)
	return c
}

// Local implements engine.Local: each code or name is validated around its own anchor.
func (*Codes) Local() bool { return true }

// Name implements engine.Detector.
func (*Codes) Name() string { return "sud.codes" }

// anchorKind says what a case-sensitive anchor starts.
type anchorKind uint8

const (
	anchorICD10 anchorKind = iota
	anchorPCS
	anchorDRG
	anchorICD9
)

// anchors are case-sensitive code prefixes and keywords; each is validated in place. The
// ICD-10 and PCS prefixes carry their first digit (F10..F19 without F17, HZ2..HZ9): three
// bytes are far rarer in prose than "F1" or "HZ" ("HR 76", "FL 1"), which keeps them from
// widening the prefilter's candidate buckets.
var anchors = []struct {
	text string
	kind anchorKind
}{
	{"F10", anchorICD10}, {"F11", anchorICD10}, {"F12", anchorICD10}, {"F13", anchorICD10}, {"F14", anchorICD10},
	{"F15", anchorICD10}, {"F16", anchorICD10}, {"F18", anchorICD10}, {"F19", anchorICD10},
	{"F55", anchorICD10}, {"R78", anchorICD10}, {"Z71", anchorICD10}, // ICD-10-CM
	{"HZ2", anchorPCS}, {"HZ3", anchorPCS}, {"HZ4", anchorPCS}, {"HZ5", anchorPCS}, {"HZ6", anchorPCS},
	{"HZ8", anchorPCS}, {"HZ9", anchorPCS}, // ICD-10-PCS
	{"DRG", anchorDRG},                          // MS-DRG 522, 523, 895-897
	{"ICD-9", anchorICD9}, {"ICD9", anchorICD9}, // ICD-9-CM 291-305 only with this context
}

// Interest implements engine.Detector.
func (c *Codes) Interest() engine.Interest {
	exact := append([]string{}, c.medicationsExact...)
	for _, a := range anchors {
		exact = append(exact, a.text)
	}
	return engine.Interest{Literals: c.medications, Exact: exact, DigitRuns: true}
}

// medicationName returns the MOUD name of hit literal i, or "".
func (c *Codes) medicationName(i int) string {
	switch {
	case i < len(c.medications):
		return c.medications[i]
	case i < len(c.medications)+len(c.medicationsExact):
		return strings.ToLower(c.medicationsExact[i-len(c.medications)])
	}
	return ""
}

// Detect implements engine.Detector.
func (c *Codes) Detect(s *engine.Scan, r *engine.Reporter) {
	b := s.Content
	codeCtx := contextCursor{c.codeContext, b, c.before, c.after}
	snomedCtx := contextCursor{c.snomedContext, b, c.before, c.after}
	rxnormCtx := contextCursor{c.rxnormContext, b, c.before, c.after}
	for _, h := range s.Hits {
		if name := c.medicationName(h.Literal); name != "" {
			if wordAt(b, h.Off, len(name)) {
				r.Label(engine.PHI, confName, h.Off, "moud:"+name, "moud|"+name, "SUD-related: MOUD medication "+name)
			}
			continue
		}
		switch anchors[h.Literal-len(c.medications)-len(c.medicationsExact)].kind {
		case anchorICD10:
			if code, end, ok := icd10(b, h.Off); ok {
				// An undotted "F10" alone is as likely a key or form name: below the
				// threshold at which Probable uses it.
				conf := confWeak
				if hasDot(b[h.Off:end]) || codeCtx.near(h.Off) {
					conf = confCode
				}
				r.Label(engine.PHI, conf, h.Off, "icd10:"+code, "icd10|"+code, "SUD-related: ICD-10-CM "+code)
			}
		case anchorPCS:
			if end := h.Off + 7; end <= len(b) && pcs(b[h.Off:end]) && boundary(b, h.Off, end) {
				code := string(b[h.Off:end])
				r.Label(engine.PHI, confCode, h.Off, "icd10pcs:"+code, "icd10pcs|"+code, "SUD-related: ICD-10-PCS "+code)
			}
		case anchorDRG:
			for i := h.Off + 3; i < min(len(b), h.Off+20); i++ {
				if isDigit(b[i]) && !isDigit(b[i-1]) {
					if i+3 <= len(b) && (i+3 == len(b) || !isDigit(b[i+3])) {
						switch string(b[i : i+3]) {
						case "522", "523", "895", "896", "897":
							code := string(b[i : i+3])
							r.Label(engine.PHI, confCode, i, "drg:"+code, "ms-drg|"+code, "SUD-related: MS-DRG "+code)
						}
					}
					break
				}
			}
		case anchorICD9:
			icd9(b, h.Off, r)
		}
	}
	for _, run := range s.DigitRuns {
		st, en := run.Start, run.End
		n := en - st
		switch {
		case n == 4 && st > 0 && isUpper(b[st-1]) && boundary(b, st-1, en):
			if c.hcpcs.hasBytes(b[st-1 : en]) {
				code := string(b[st-1 : en])
				conf := confWeak + 5
				if codeCtx.near(st) {
					conf = confCode
				}
				r.Label(engine.PHI, conf, st-1, "hcpcs:"+code, "hcpcs|"+code, "SUD-related: HCPCS "+code)
			}
		case n == 5 && c.hcpcs.hasBytes(b[st:en]) && boundary(b, st, en) && codeCtx.near(st):
			code := string(b[st:en])
			r.Label(engine.PHI, confCode, st, "cpt:"+code, "cpt|"+code, "SUD-related: CPT "+code)
		case n >= 4 && n <= 10 && c.snomed.hasBytes(b[st:en]) && boundary(b, st, en) && snomedCtx.near(st):
			code := string(b[st:en])
			r.Label(engine.PHI, confCode, st, "snomed:"+code, "snomed|"+code, "SUD-related: SNOMED CT "+code)
		case n >= 4 && n <= 6 && c.rxnorm.hasBytes(b[st:en]) && boundary(b, st, en) && rxnormCtx.near(st):
			code := string(b[st:en])
			r.Label(engine.PHI, confWeak+5, st, "rxnorm:"+code, "rxnorm|"+code, "SUD-related: RxNorm MOUD "+code)
		case en < len(b) && isUpper(b[en]):
			// Taxonomy codes: ten characters ending in X that contain this run, so an
			// upper-case letter (at the latest the X) follows it.
			lo := st
			for lo > 0 && st-lo < 6 && (isDigit(b[lo-1]) || isUpper(b[lo-1])) {
				lo--
			}
			for i := lo; i <= st; i++ {
				if i+10 <= len(b) && b[i+9] == 'X' && boundary(b, i, i+10) && c.taxonomy.hasBytes(b[i:i+10]) {
					code := string(b[i : i+10])
					r.Label(engine.PHI, confCode, i, "taxonomy:"+code, "nucc|"+code, "SUD-related: NUCC taxonomy "+code+" (SUD treatment provider)")
					break
				}
			}
		}
	}
}

// icd10 validates an ICD-10-CM SUD code at off: F10-F16, F18, F19, F55, R78.0, Z71.41,
// Z71.51, dotted or not, with the category's letter not inside a word.
func icd10(b []byte, off int) (string, int, bool) {
	if off > 0 && (isLetter(b[off-1]) || isDigit(b[off-1])) || off+3 > len(b) {
		return "", 0, false
	}
	cat := string(b[off : off+3])
	if !isDigit(b[off+1]) || !isDigit(b[off+2]) {
		return "", 0, false
	}
	switch cat {
	case "F10", "F11", "F12", "F13", "F14", "F15", "F16", "F18", "F19", "F55", "R78", "Z71":
	default:
		return "", 0, false // F17 is nicotine: not protected
	}
	end := off + 3
	sub := []byte{}
	if end < len(b) && b[end] == '.' {
		j := end + 1
		for j < len(b) && j-end <= 4 && (isDigit(b[j]) || isUpper(b[j])) {
			sub = append(sub, b[j])
			j++
		}
		if len(sub) > 0 {
			end = j
		}
	} else {
		j := end
		for j < len(b) && j-end < 4 && (isDigit(b[j]) || isUpper(b[j])) {
			sub = append(sub, b[j])
			j++
		}
		end = j
	}
	if end < len(b) && (isLetter(b[end]) || isDigit(b[end])) {
		return "", 0, false
	}
	switch cat {
	case "R78":
		if len(sub) == 0 || sub[0] != '0' {
			return "", 0, false // only R78.0, alcohol in blood
		}
	case "Z71":
		if len(sub) < 2 || sub[0] != '4' && sub[0] != '5' || sub[1] != '1' {
			return "", 0, false // Z71.41, Z71.51
		}
	}
	code := cat
	if len(sub) > 0 {
		code += "." + string(sub)
	}
	return code, end, true
}

// icd9 reports ICD-9-CM SUD codes (291, 292, 303, 304, 305 except 305.1 tobacco) in the
// 160 bytes after an ICD-9 marker.
func icd9(b []byte, off int, r *engine.Reporter) {
	end := min(len(b), off+160)
	for i := off + 4; i+3 <= end; i++ {
		if !isDigit(b[i]) || isDigit(b[i-1]) || b[i-1] == '.' || i+3 < len(b) && isDigit(b[i+3]) {
			continue
		}
		c := string(b[i : i+3])
		switch c {
		case "291", "292", "303", "304", "305":
		default:
			continue
		}
		if c == "305" && i+5 <= len(b) && b[i+3] == '.' && b[i+4] == '1' {
			continue
		}
		r.Label(engine.PHI, confCode, i, "icd9:"+c, "icd9|"+c, "SUD-related: ICD-9-CM "+c)
	}
}

func pcs(c []byte) bool {
	// HZ2ZZZZ HZ3* HZ4* HZ5* HZ63ZZZ HZ8* HZ9*: all seven characters upper-case alphanumerics.
	for _, x := range c {
		if !isDigit(x) && !isUpper(x) {
			return false
		}
	}
	switch c[2] {
	case '3', '4', '5', '8', '9':
		return true
	case '2':
		return string(c) == "HZ2ZZZZ"
	case '6':
		return string(c) == "HZ63ZZZ"
	}
	return false
}

func hasDot(b []byte) bool {
	for _, c := range b {
		if c == '.' {
			return true
		}
	}
	return false
}

// codeSet is a code list with a length and first-two-bytes precheck: most digit runs in a
// document are dates, phone numbers and amounts ("1967" shares its length and first byte
// with RxNorm 1819, not its first two bytes), rejected before hashing.
type codeSet struct {
	m     map[string]bool
	lens  uint64
	pairs [256][4]uint64 // pairs[v[0]] has bit v[1] (0 for one-byte codes)
}

func (cs *codeSet) add(c string) {
	cs.m[c] = true
	if len(c) < 64 {
		cs.lens |= 1 << len(c)
	}
	var second byte
	if len(c) > 1 {
		second = c[1]
	}
	cs.pairs[c[0]][second>>6] |= 1 << (second & 63)
}

func (cs *codeSet) hasBytes(v []byte) bool {
	if len(v) == 0 || len(v) >= 64 || cs.lens&(1<<len(v)) == 0 {
		return false
	}
	var second byte
	if len(v) > 1 {
		second = v[1]
	}
	return cs.pairs[v[0]][second>>6]&(1<<(second&63)) != 0 && cs.m[string(v)]
}

// contextCursor says whether a context word (a code-system name, a claim segment, a
// column header) occurs within before bytes before an offset or after bytes after it.
type contextCursor struct {
	set           *defs.KeywordSet
	b             []byte
	before, after int
}

func (cc *contextCursor) near(off int) bool {
	return cc.set.Find(cc.b, off-cc.before, off+cc.after) >= 0
}

func wordAt(b []byte, off, n int) bool {
	return (off == 0 || !isLetter(b[off-1])) && (off+n >= len(b) || !isLetter(b[off+n]) || b[off+n] == 's')
}

func boundary(b []byte, start, end int) bool {
	if start > 0 && (isLetter(b[start-1]) || isDigit(b[start-1])) {
		return false
	}
	return end >= len(b) || !isLetter(b[end]) && !isDigit(b[end])
}

func isDigit(c byte) bool  { return '0' <= c && c <= '9' }
func isUpper(c byte) bool  { return 'A' <= c && c <= 'Z' }
func isLetter(c byte) bool { return isUpper(c) || 'a' <= c && c <= 'z' }
