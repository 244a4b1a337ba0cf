// Package part2 detects 42 CFR Part 2 status: FHIR security labels, C-CDA confidentiality
// markings and the §2.32 redisclosure notice. A Part 2 label is authoritative even when the
// record shows no substance-use content, so labels and notices are matched on their own.
package part2

import "strings"

// codeSystem is a terminology that can carry a Part 2 signal.
type codeSystem int

const (
	sysNone codeSystem = iota
	sysActCode
	sysPrivacyLaw      // deprecated ActUSPrivacyLaw, old home of 42CFRPart2
	sysConfidentiality // v3-Confidentiality (U L M N R V)
	sysV2Table0177     // HL7 v2 table 0177, where ETH = alcohol/drug treatment patient
)

// systems maps every spelling of the systems we trust, FHIR URIs and bare OIDs (CDA
// codeSystem attributes carry the OID without "urn:oid:"; FHIR uses the prefix).
var systems = map[string]codeSystem{
	"http://terminology.hl7.org/CodeSystem/v3-ActCode":          sysActCode,
	"http://hl7.org/fhir/v3/ActCode":                            sysActCode,
	"2.16.840.1.113883.5.4":                                     sysActCode,
	"2.16.840.1.113883.5.1063":                                  sysActCode, // ObservationValue: DS4P CDA security observation values
	"http://terminology.hl7.org/CodeSystem/v3-ActUSPrivacyLaw":  sysPrivacyLaw,
	"http://hl7.org/fhir/v3/ActUSPrivacyLaw":                    sysPrivacyLaw,
	"2.16.840.1.113883.5.1138":                                  sysPrivacyLaw,
	"http://terminology.hl7.org/CodeSystem/v3-Confidentiality":  sysConfidentiality,
	"http://hl7.org/fhir/v3/Confidentiality":                    sysConfidentiality,
	"2.16.840.1.113883.5.25":                                    sysConfidentiality,
	"http://terminology.hl7.org/CodeSystem/v2-0177":             sysV2Table0177,
	"http://hl7.org/fhir/v2/0177":                               sysV2Table0177,
	"2.16.840.1.113883.18.92":                                   sysV2Table0177,
	"http://terminology.hl7.org/CodeSystem/v3-ObservationValue": sysActCode,
}

// signal is what one coding says about Part 2, in increasing strength.
type signal int

const (
	sigNone        signal = iota
	sigConfR              // Confidentiality R: Part 2 only next to an SUD or law code
	sigRefrain            // NORDSCLCD and friends: no redisclosure, not SUD-specific
	sigMark               // RedisclosureProhibitionMark: the §2.32 mark itself
	sigV2ETH              // v2 table 0177 ETH: alcohol/drug treatment patient
	sigSensitivity        // ETH, SUD, ETHUD, OPIOIDUD
	sigLaw                // 42CFRPart2, 42CFRPart2CD
)

// actCode holds the ActCode concepts that signal Part 2, keyed by lower-cased code, with
// their canonical spelling (evidence never echoes content bytes).
var actCode = map[string]struct {
	sig   signal
	canon string
}{
	"42cfrpart2":                  {sigLaw, "42CFRPart2"},
	"42cfrpart2cd":                {sigLaw, "42CFRPart2CD"},
	"eth":                         {sigSensitivity, "ETH"},
	"sud":                         {sigSensitivity, "SUD"},
	"ethud":                       {sigSensitivity, "ETHUD"},
	"opioidud":                    {sigSensitivity, "OPIOIDUD"},
	"nordsclcd":                   {sigRefrain, "NORDSCLCD"},
	"nordsclcds":                  {sigRefrain, "NORDSCLCDS"},
	"nodsclcd":                    {sigRefrain, "NODSCLCD"},
	"nodsclcds":                   {sigRefrain, "NODSCLCDS"},
	"nordslcd":                    {sigRefrain, "NORDSLCD"}, // retired typo that still occurs
	"redisclosureprohibitionmark": {sigMark, "RedisclosureProhibitionMark"},
}

// classify says what a coding means for Part 2. Codes compare ASCII-case-insensitively
// (a sloppy "42cfrpart2" next to the right system is still the label); systems exactly,
// after trimming, because the system is what tells "ETH" the label from "ETH" the coin.
// It returns the canonical system and code spellings for evidence.
func classify(system, code string) (sig signal, canonSystem, canonCode string) {
	canonSystem = strings.TrimSpace(system)
	sys := systems[strings.TrimPrefix(canonSystem, "urn:oid:")]
	code = strings.ToLower(strings.TrimSpace(code))
	switch sys {
	case sysActCode:
		if c, ok := actCode[code]; ok {
			return c.sig, canonSystem, c.canon
		}
	case sysPrivacyLaw:
		if code == "42cfrpart2" {
			return sigLaw, canonSystem, "42CFRPart2"
		}
	case sysConfidentiality:
		if code == "r" {
			return sigConfR, canonSystem, "R"
		}
	case sysV2Table0177:
		if code == "eth" {
			return sigV2ETH, canonSystem, "ETH"
		}
	}
	return sigNone, "", ""
}

// coding is one counted label occurrence. system and code are public terminology.
type coding struct {
	sig          signal
	system, code string
	path         string
	off          int
}

// labelSet gathers the labels of one resource (FHIR) or document (CDA), because
// Confidentiality R only counts in the company of an SUD or law code on the same resource.
type labelSet struct {
	top   coding // strongest non-R signal
	confR bool
	n     int
}

func (ls *labelSet) add(c coding) {
	ls.n++
	if c.sig == sigConfR {
		ls.confR = true
		return
	}
	if c.sig > ls.top.sig {
		ls.top = c
	}
}

// verdict scores the set: a law code 95, a sensitivity code 90, v2 ETH 80, the
// redisclosure mark 80, a refrain code alone 70; R adds 3 next to a law or SUD code.
func (ls *labelSet) verdict() (confidence int, withR bool, ok bool) {
	switch ls.top.sig {
	case sigLaw:
		confidence = 95
	case sigSensitivity:
		confidence = 90
	case sigV2ETH, sigMark:
		confidence = 80
	case sigRefrain:
		return 70, false, true
	default:
		return 0, false, false
	}
	if ls.confR && ls.top.sig != sigMark {
		return confidence + 3, true, true
	}
	return confidence, false, true
}

// evidence describes the strongest coding; all of it is public terminology.
func (ls *labelSet) evidence(withR bool) string {
	var b strings.Builder
	b.WriteString("system=")
	b.WriteString(ls.top.system)
	b.WriteString(" code=")
	b.WriteString(ls.top.code)
	if ls.top.path != "" {
		b.WriteString(" at ")
		b.WriteString(ls.top.path)
	}
	if withR {
		b.WriteString(" with confidentiality R")
	}
	return b.String()
}

// pathSegment makes a content-supplied element or key name safe for evidence: ASCII
// letters, '_' and '-' only (never digits, so no identifier can ride along), at most 40.
func pathSegment(dst []byte, name string) []byte {
	n := 0
	for i := 0; i < len(name) && n < 40; i++ {
		c := name[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '_' || c == '-' {
			dst = append(dst, c)
			n++
		}
	}
	return dst
}
