package part2

import (
	"bytes"
	"strings"

	"github.com/ward-dlp/ward/classifiers/engine"
)

// HL7v2 finds Part 2 markings in HL7 v2 messages: security codes in MSH-26/27/28 (v2.9)
// and ARV (v2.6+), confidentiality ETH (table 0177: alcohol/drug treatment patient) in
// ORC-28 and OM1-30, and TXA-18 R next to an SUD code. A code counts only with its coding
// system (a CWE's third component) or in a field whose table defines it. Notices in
// Z-segments and NTEs are found by the notice detector, which decodes HL7 escapes.
type HL7v2 struct{}

// NewHL7v2 returns the HL7 v2 detector.
func NewHL7v2() *HL7v2 { return &HL7v2{} }

// Name implements engine.Detector.
func (*HL7v2) Name() string { return "part2.hl7v2" }

// Interest implements engine.Detector: every message starts with an MSH segment.
func (*HL7v2) Interest() engine.Interest { return engine.Interest{Exact: []string{"MSH|"}} }

// v2Systems are coding-system names used in v2 CWE components for the same terminologies.
var v2Systems = map[string]codeSystem{
	"HL70177": sysV2Table0177, "HL7-0177": sysV2Table0177,
	"ACTCODE": sysActCode, "V3-ACTCODE": sysActCode, "HL7ACTCODE": sysActCode,
	"HL70952": sysConfidentiality, "CONFIDENTIALITY": sysConfidentiality, "V3-CONFIDENTIALITY": sysConfidentiality,
	"ACTUSPRIVACYLAW": sysPrivacyLaw,
}

// maxHL7Message bounds one message's parse.
const maxHL7Message = 4 << 20

// Detect implements engine.Detector: one occurrence per labelled message.
func (*HL7v2) Detect(s *engine.Scan, r *engine.Reporter) {
	b := s.Content
	for i, h := range s.Hits {
		if h.Off > 0 && b[h.Off-1] != '\r' && b[h.Off-1] != '\n' && b[h.Off-1] != 0x0b {
			continue // MSH must start a segment (0x0b is the MLLP start block)
		}
		end := len(b)
		if i+1 < len(s.Hits) {
			end = s.Hits[i+1].Off
		}
		end = min(end, h.Off+maxHL7Message)
		ls := hl7Message(b[h.Off:end], h.Off)
		conf, withR, ok := ls.verdict()
		if !ok {
			continue
		}
		r.Label(engine.Part2, conf, ls.top.off, ls.top.code, ls.top.system+"|"+ls.top.code, ls.evidence(withR))
	}
}

// hl7Message scans the segments of one message.
func hl7Message(msg []byte, base int) *labelSet {
	ls := &labelSet{}
	if len(msg) < 8 {
		return ls
	}
	fs, cs := msg[3], msg[4]
	if fs == cs || isWordByte(lower(fs)) || isWordByte(lower(cs)) {
		return ls
	}
	off := 0
	for off < len(msg) {
		e := bytes.IndexAny(msg[off:], "\r\n")
		seg := msg[off:]
		if e >= 0 {
			seg = msg[off : off+e]
		}
		if len(seg) >= 3 {
			fields := bytes.Split(seg, []byte{fs})
			name := string(fields[0])
			// MSH-n is fields[n-1]: MSH-1 is the separator itself.
			at := func(n int) []byte {
				if name == "MSH" {
					n--
				}
				if n < len(fields) {
					return fields[n]
				}
				return nil
			}
			switch name {
			case "MSH":
				for _, n := range []int{26, 27, 28} {
					hl7Codes(ls, at(n), msg[5], cs, sysNone, name, n, base+off)
				}
			case "ARV":
				for n := 3; n <= 8; n++ {
					hl7Codes(ls, at(n), msg[5], cs, sysNone, name, n, base+off)
				}
			case "ORC":
				hl7Codes(ls, at(28), msg[5], cs, sysV2Table0177, name, 28, base+off)
			case "OM1":
				hl7Codes(ls, at(30), msg[5], cs, sysV2Table0177, name, 30, base+off)
			case "TXA":
				hl7Codes(ls, at(18), msg[5], cs, sysConfidentiality, name, 18, base+off)
			}
		}
		if e < 0 {
			break
		}
		off += e + 1
	}
	return ls
}

// hl7Codes reads each repetition of a CWE field: code^text^system^altCode^altText^altSystem.
// A code without a system counts only when the field's own table (def) defines it.
func hl7Codes(ls *labelSet, field []byte, rep, cs byte, def codeSystem, seg string, n, off int) {
	if len(field) == 0 {
		return
	}
	for _, cwe := range bytes.Split(field, []byte{rep}) {
		comps := bytes.Split(cwe, []byte{cs})
		get := func(i int) string {
			if i < len(comps) {
				return strings.TrimSpace(string(comps[i]))
			}
			return ""
		}
		for _, pair := range [][2]int{{0, 2}, {3, 5}} {
			code, system := get(pair[0]), get(pair[1])
			if code == "" {
				continue
			}
			sig, sys, canon := hl7Classify(system, code, def)
			if sig != sigNone {
				ls.add(coding{sig: sig, system: sys, code: canon, path: seg + "-" + itoa(n), off: off})
			}
		}
	}
}

func hl7Classify(system, code string, def codeSystem) (signal, string, string) {
	if system != "" {
		if sig, sys, canon := classify(system, code); sig != sigNone {
			return sig, sys, canon
		}
		s, ok := v2Systems[strings.ToUpper(system)]
		if !ok {
			return sigNone, "", ""
		}
		def = s
	}
	var probe string
	switch def {
	case sysV2Table0177:
		probe = "2.16.840.1.113883.18.92"
	case sysActCode:
		probe = "2.16.840.1.113883.5.4"
	case sysConfidentiality:
		probe = "2.16.840.1.113883.5.25"
	case sysPrivacyLaw:
		probe = "2.16.840.1.113883.5.1138"
	default:
		return sigNone, "", ""
	}
	sig, _, canon := classify(probe, code)
	name := "HL7 v2 table"
	if system != "" {
		name = system
	}
	return sig, name, canon
}

func itoa(n int) string {
	if n < 10 {
		return string([]byte{byte('0' + n)})
	}
	return string([]byte{byte('0' + n/10), byte('0' + n%10)})
}
