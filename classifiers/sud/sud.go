// Package sud finds untagged substance-use-disorder evidence: diagnosis, procedure and
// medication codes from the CMS SAMHSA claim-suppression list and the MOUD vocabularies, and
// opioid-treatment-program taxonomy codes. Alone they say "SUD-related" (reported as PHI,
// detector sud.codes); next to patient identifiers, the Probable combiner says "probable
// Part 2 record". Tobacco (F17, 305.1) is not protected and never counts.
package sud

import (
	"strings"

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

// Codes is the untagged SUD evidence detector.
type Codes struct{}

// NewCodes returns the SUD code detector.
func NewCodes() *Codes { return &Codes{} }

// Name implements engine.Detector.
func (*Codes) Name() string { return "sud.codes" }

// anchors are case-sensitive code prefixes and keywords; each is validated in place.
var anchors = []string{
	"F1", "F55", "R78", "Z71", "HZ", // ICD-10-CM / ICD-10-PCS
	"DRG",           // MS-DRG 522, 523, 895-897
	"ICD-9", "ICD9", // ICD-9-CM 291-305 only with this context
}

// medications are MOUD names (generic and brand). Names with a rare letter (x, z) are
// matched in any case; the others only capitalised or upper-case, as medication lists and
// orders write them: their letters are all common in prose, and a case-insensitive anchor
// on them would cost the shared pass more than every other detector together. Lower-case
// "methadone" in narrative is therefore not seen (see docs/benchmarks-classifiers.md).
var medications = []string{"suboxone", "subutex", "zubsolv", "brixadi", "naltrexone", "lofexidine"}

// medicationsExact are the case-sensitive spellings of the common-letter MOUD names.
var medicationsExact = []string{
	"Buprenorphine", "BUPRENORPHINE", "Methadone", "METHADONE", "Methadose", "Dolophine", "DOLOPHINE",
	"Sublocade", "SUBLOCADE", "Vivitrol", "VIVITROL", "Bunavail", "Lucemyra",
}

// Interest implements engine.Detector.
func (*Codes) Interest() engine.Interest {
	return engine.Interest{Literals: medications, Exact: append(append([]string{}, medicationsExact...), anchors...), DigitRuns: true}
}

// medicationName returns the MOUD name of hit literal i, or "".
func medicationName(i int) string {
	switch {
	case i < len(medications):
		return medications[i]
	case i < len(medications)+len(medicationsExact):
		return strings.ToLower(medicationsExact[i-len(medications)])
	}
	return ""
}

// hcpcs are the HCPCS/CPT codes of the SAMHSA list (42 CFR 425.708), letter+4 digits.
var hcpcs = func() map[string]bool {
	m := map[string]bool{}
	rng := func(p string, lo, hi int) {
		for i := lo; i <= hi; i++ {
			m[p+pad4(i)] = true
		}
	}
	rng("H", 5, 15)
	for _, c := range []string{"H0020", "H0034", "H0047", "H0050", "H2035", "H2036", "S9475", "G2011", "G9562", "G9578", "G9584",
		"G9621", "J0570", "M1034", "M1035", "Q9991", "Q9992", "G2172", "G1028", "G2215", "G2216", "G0137", "99408", "99409"} {
		m[c] = true
	}
	rng("T", 1006, 1012)
	rng("G", 2067, 2080)
	rng("G", 2086, 2088)
	rng("G", 532, 536)
	return m
}()

func pad4(i int) string {
	return string([]byte{byte('0' + i/1000%10), byte('0' + i/100%10), byte('0' + i/10%10), byte('0' + i%10)})
}

// snomed are SNOMED CT SUD disorder concepts; only counted with a SNOMED context.
var snomed = map[string]bool{
	"5602001": true, "6525002": true, "7200002": true, "55680006": true, "56876005": true, "61480009": true,
	"60112009": true, "266707007": true, "1149222004": true, "425741009": true, "75544000": true, "66590003": true,
}

// rxnorm are MOUD ingredients (buprenorphine, methadone, naltrexone, buprenorphine/naloxone).
var rxnorm = map[string]bool{"1819": true, "6813": true, "7243": true, "352364": true}

// taxonomy are NUCC provider taxonomy codes of SUD treatment settings and specialties.
var taxonomy = map[string]bool{
	"261QM2800X": true, "261QR0405X": true, "324500000X": true, "3245S0500X": true, "276400000X": true,
	"101YA0400X": true, "103TA0400X": true, "163WA0400X": true, "2084P0802X": true, "2084A0401X": true,
	"207QA0401X": true, "207RA0401X": true, "2083A0300X": true, "207LA0401X": true,
}

var codeContext = []string{"icd", "dx", "diagnos", "hcpcs", "cpt", "procedure", "claim", "hi*", "sv1", "sv2", "2.16.840.1.113883.6."}

// Detect implements engine.Detector.
func (*Codes) Detect(s *engine.Scan, r *engine.Reporter) {
	b := s.Content
	for _, h := range s.Hits {
		if name := medicationName(h.Literal); name != "" {
			if wordAt(b, h.Off, len(name)) {
				r.Label(engine.PHI, confName, h.Off, "moud:"+name, "moud|"+name, "SUD-related: MOUD medication "+name)
			}
			continue
		}
		a := anchors[h.Literal-len(medications)-len(medicationsExact)]
		switch a {
		case "F1", "F55", "R78", "Z71":
			if code, end, ok := icd10(b, h.Off); ok {
				// An undotted "F10" alone is as likely a key or form name: below the
				// threshold at which Probable uses it.
				conf := confWeak
				if hasDot(b[h.Off:end]) || near(b, h.Off, codeContext) {
					conf = confCode
				}
				r.Label(engine.PHI, conf, h.Off, "icd10:"+code, "icd10|"+code, "SUD-related: ICD-10-CM "+code)
			}
		case "HZ":
			if end := h.Off + 7; end <= len(b) && pcs(b[h.Off:end]) && boundary(b, h.Off, end) {
				code := string(b[h.Off:end])
				r.Label(engine.PHI, confCode, h.Off, "icd10pcs:"+code, "icd10pcs|"+code, "SUD-related: ICD-10-PCS "+code)
			}
		case "DRG":
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
		case "ICD-9", "ICD9":
			icd9(b, h.Off, r)
		}
	}
	for _, run := range s.DigitRuns {
		st, en := run.Start, run.End
		n := en - st
		switch {
		case n == 4 && st > 0 && isUpper(b[st-1]) && boundary(b, st-1, en):
			if code := string(b[st-1 : en]); hcpcs[code] {
				conf := confWeak + 5
				if near(b, st, codeContext) {
					conf = confCode
				}
				r.Label(engine.PHI, conf, st-1, "hcpcs:"+code, "hcpcs|"+code, "SUD-related: HCPCS "+code)
			}
		case n == 5 && boundary(b, st, en) && hcpcs[string(b[st:en])] && near(b, st, codeContext):
			code := string(b[st:en])
			r.Label(engine.PHI, confCode, st, "cpt:"+code, "cpt|"+code, "SUD-related: CPT "+code)
		case n >= 4 && n <= 10 && boundary(b, st, en) && snomed[string(b[st:en])] && near(b, st, []string{"snomed", "sct", "113883.6.96"}):
			code := string(b[st:en])
			r.Label(engine.PHI, confCode, st, "snomed:"+code, "snomed|"+code, "SUD-related: SNOMED CT "+code)
		case n >= 4 && n <= 6 && boundary(b, st, en) && rxnorm[string(b[st:en])] && near(b, st, []string{"rxnorm", "rxcui", "113883.6.88"}):
			code := string(b[st:en])
			r.Label(engine.PHI, confWeak+5, st, "rxnorm:"+code, "rxnorm|"+code, "SUD-related: RxNorm MOUD "+code)
		default:
			// Taxonomy codes: ten characters ending in X that contain this run.
			lo := st
			for lo > 0 && st-lo < 6 && (isDigit(b[lo-1]) || isUpper(b[lo-1])) {
				lo--
			}
			for i := lo; i <= st; i++ {
				if i+10 <= len(b) && b[i+9] == 'X' && boundary(b, i, i+10) && taxonomy[string(b[i:i+10])] {
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

// near reports whether one of the lower-case words occurs within 200 bytes before off or
// 60 after (a code-system name, a claim segment, a column header).
func near(b []byte, off int, words []string) bool {
	lo, hi := max(0, off-200), min(len(b), off+60)
	var buf [260]byte
	w := buf[:hi-lo]
	for i, c := range b[lo:hi] {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		w[i] = c
	}
	for _, k := range words {
		if indexOf(w, k) >= 0 {
			return true
		}
	}
	return false
}

func indexOf(w []byte, k string) int {
	for i := 0; i+len(k) <= len(w); i++ {
		if string(w[i:i+len(k)]) == k {
			return i
		}
	}
	return -1
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
