package part2

import (
	"bytes"
	"strings"

	"github.com/ward-dlp/ward/classifiers/engine"
)

// Notice finds the 42 CFR §2.32 redisclosure notice (1987, 2018, 2020 and 2024 wordings) in
// any text: letters, CDA or FHIR narrative, HL7 v2 NTE/Z-segments, JSON strings. Only a
// Part 2 program or a recipient of its records attaches the notice, so several of its
// fragments together mark the content as Part 2.
type Notice struct{ m *noticeMatcher }

// NewNotice returns the §2.32 notice detector.
func NewNotice() *Notice { return &Notice{m: newNoticeMatcher()} }

// Name implements engine.Detector.
func (*Notice) Name() string { return "part2.notice" }

// Interest implements engine.Detector. Every wording of the notice cites "42 CFR part 2"
// (or 42 C.F.R., 42CFRPart2), so the anchor is the "42" of the citation, confirmed in place
// by a CFR that follows it across whitespace, line breaks and escapes. Digits are far
// rarer than the letters of "cfr" in prose, which keeps the shared pass fast.
func (*Notice) Interest() engine.Interest {
	return engine.Interest{Literals: []string{"42"}, Confirm: citesCFR}
}

// citesCFR reports whether the "42" at off is the title of a CFR citation: not inside a
// longer number, followed within a few bytes of blanks, markup and escapes by "cfr" or
// "c.f.r" in any case.
func citesCFR(b []byte, off, _ int) bool {
	if off > 0 && (isDigitByte(b[off-1]) || b[off-1] == '.') {
		return false
	}
	i := off + 2
	end := min(len(b), i+24)
	for i < end {
		c := b[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == 0xa0 || c == 0xc2:
			i++
		case c == '\\' || c == '&' || c == '<':
			// \.br\ \X0A\ &nbsp; &#160; <br/>: skip to the closing byte.
			close := byte('\\')
			switch c {
			case '&':
				close = ';'
			case '<':
				close = '>'
			}
			j := bytes.IndexByte(b[i+1:end], close)
			if j < 0 {
				return false
			}
			i += j + 2
		case c == 'c' || c == 'C':
			rest := b[i:]
			return hasFold(rest, "cfr") || hasFold(rest, "c.f.r") || hasFold(rest, "c. f. r")
		default:
			return false
		}
	}
	return false
}

func hasFold(b []byte, lit string) bool {
	if len(b) < len(lit) {
		return false
	}
	for i := 0; i < len(lit); i++ {
		if lower(b[i]) != lit[i] {
			return false
		}
	}
	return true
}

func isDigitByte(c byte) bool { return '0' <= c && c <= '9' }

const (
	// noticeWindow is taken on each side of an anchor; the longest (2024) notice is ~1.8 KB.
	noticeWindow = 2048
	// maxNoticeCluster splits runs of nearby anchors so one long legal text cannot pool
	// fragments from pages apart.
	maxNoticeCluster = 16 << 10
)

// Detect implements engine.Detector: anchors closer than two windows form one cluster,
// each cluster is normalised and scored once.
func (d *Notice) Detect(s *engine.Scan, r *engine.Reporter) {
	var n normalizer
	n.track = true
	lo, hi := -1, -1
	flush := func() {
		if lo < 0 {
			return
		}
		n.reset()
		n.write(s.Content[lo:hi], lo)
		res := d.m.match(n.out)
		if res.score >= minNoticeScore {
			label := "notice"
			if res.version != "" {
				label = "notice-" + res.version
			}
			r.Label(engine.Part2, res.confidence(), n.offs[res.first], label, "42CFR2.32|"+label, res.evidence())
		}
	}
	for _, h := range s.Hits {
		wlo, whi := max(0, h.Off-noticeWindow), min(len(s.Content), h.Off+noticeWindow)
		if lo >= 0 && wlo <= hi && whi-lo <= maxNoticeCluster {
			hi = max(hi, whi)
			continue
		}
		flush()
		// A new cluster starts where the previous one ended, so no text is scored twice.
		lo, hi = max(wlo, hi), whi
	}
	flush()
}

// fragment is one invariant phrase group of the notice, in normalised form. A group counts
// once however many of its variants occur.
type fragment struct {
	name     string
	weight   int
	variants []string
}

// fragments are lower-case and single-spaced, as normalizer output.
var fragments = []fragment{
	{"citation", 1, []string{"42 cfr part 2", "42 c.f.r. part 2", "42 c.f.r part 2", "42 cfr part2", "42 c.f.r. part2", "42cfrpart2"}},
	{"unauthorized-disclosure", 2, []string{"prohibits unauthorized disclosure of these records", "prohibits unauthorized use or disclosure of these records"}},
	{"general-authorization", 2, []string{"general authorization for the release of medical or other information is not sufficient"}},
	{"disclosed-to-you", 2, []string{"disclosed to you from records protected", "disclosed to you is protected"}},
	{"further-disclosure", 2, []string{"prohibit you from making any further disclosure", "prohibit you from making any other use or disclosure", "prohibit you from using or disclosing this record"}},
	{"prosecute", 2, []string{"restrict any use of the information to criminally investigate or prosecute", "restrict any use of the information to investigate or prosecute"}},
	{"proceedings", 2, []string{"civil, criminal, administrative, or legislative proceedings"}},
	{"heading", 2, []string{"notice to recipient of substance use disorder records", "prohibition on redisclosure", "notice and copy of consent to accompany disclosure"}},
	{"confidentiality-rules", 1, []string{"protected by federal confidentiality rules"}},
	{"sud-patient", 1, []string{"alcohol or drug abuse patient", "any patient with a substance use disorder"}},
	{"written-consent", 1, []string{"expressly permitted by the written consent"}},
}

// versionMarkers are phrases only one wording of the notice has.
var versionMarkers = []struct{ version, phrase string }{
	{"1987", "criminally investigate or prosecute"},
	{"1987", "the person to whom it pertains"},
	{"1987", "alcohol or drug abuse patient"},
	{"2018", "information in this record that identifies a patient as having or having had"},
	{"2018", "disclosed to you from records protected by federal confidentiality rules (42 cfr part 2). the federal rules prohibit you from making any further disclosure of information"},
	{"2020", "further disclosure of this record unless further disclosure"},
	{"2024", "statement 1"},
	{"2024", "legislative proceedings"},
	{"2024", "covered entity or business associate"},
	{"2024", "testimony that describes the information"},
}

// minNoticeScore is one strong fragment (or a citation plus a weak one); a bare "42 CFR
// Part 2" citation is not the notice.
const minNoticeScore = 2

type noticeResult struct {
	score   int
	found   []string
	first   int // normalised offset of the earliest fragment
	version string
}

// phrase is one searchable string: a fragment variant (frag >= 0) or a version marker.
type phrase struct {
	text    []byte
	frag    int
	version string
}

// noticeMatcher finds fragment variants and version markers in normalised text in one
// pass: at each token start a 64 Ki-bit filter on the next four bytes rejects almost every
// position before the phrase table is consulted. It is built once per detector.
type noticeMatcher struct {
	filter [1024]uint64
	byKey  map[uint32][]phrase
}

func newNoticeMatcher() *noticeMatcher {
	m := &noticeMatcher{byKey: map[uint32][]phrase{}}
	add := func(p phrase) {
		k := key4(p.text)
		h := hashKey(k)
		m.filter[h>>6] |= 1 << (h & 63)
		m.byKey[k] = append(m.byKey[k], p)
	}
	for i, f := range fragments {
		for _, v := range f.variants {
			add(phrase{text: []byte(v), frag: i})
		}
	}
	for _, v := range versionMarkers {
		add(phrase{text: []byte(v.phrase), frag: -1, version: v.version})
	}
	return m
}

func key4(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

func hashKey(k uint32) uint32 { return (k * 0x9e3779b1) >> 16 }

// match scores normalised text against the fragment groups and guesses the version.
func (m *noticeMatcher) match(norm []byte) noticeResult {
	res := noticeResult{first: -1}
	var pos [16]int // per fragment group; len(fragments) <= 16 is checked by a test
	for i := range pos {
		pos[i] = -1
	}
	votes := map[string]int{}
	for i := 0; i+4 <= len(norm); i++ {
		if i > 0 && isWordByte(norm[i-1]) {
			continue
		}
		k := key4(norm[i:])
		if h := hashKey(k); m.filter[h>>6]&(1<<(h&63)) == 0 {
			continue
		}
		for _, p := range m.byKey[k] {
			if !bytes.HasPrefix(norm[i:], p.text) {
				continue
			}
			if p.frag < 0 {
				votes[p.version]++
			} else if pos[p.frag] < 0 {
				pos[p.frag] = i
			}
		}
	}
	for fi, f := range fragments {
		if pos[fi] < 0 {
			continue
		}
		res.score += f.weight
		res.found = append(res.found, f.name)
		if res.first < 0 || pos[fi] < res.first {
			res.first = pos[fi]
		}
	}
	if res.score < minNoticeScore {
		return res
	}
	best := 0
	for _, v := range []string{"1987", "2018", "2020", "2024"} { // ties go to the newer text
		if votes[v] > 0 && votes[v] >= best {
			best, res.version = votes[v], v
		}
	}
	return res
}

func isWordByte(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z'
}

// confidence maps the score: the full notice (6+) 95, most of it 90, the short statement
// "42 CFR part 2 prohibits unauthorized disclosure of these records" (3) 85, one strong
// fragment alone 70.
func (res noticeResult) confidence() int {
	switch {
	case res.score >= 6:
		return 95
	case res.score >= 4:
		return 90
	case res.score >= 3:
		return 85
	case res.score >= 2:
		return 70
	}
	return 0
}

func (res noticeResult) evidence() string {
	v := "unknown"
	if res.version != "" {
		v = res.version
	}
	return "42 CFR 2.32 notice (version " + v + ") fragments=" + strings.Join(res.found, ",")
}

// normalizer folds text to the form fragments are written in: ASCII lower case, markup
// tags and HL7/JSON/XML escapes removed or decoded, any whitespace run (line breaks, NBSP,
// <br/>, \.br\) collapsed to one space. With track set it records, per output byte, the
// content offset it came from, so matches point back into the original.
type normalizer struct {
	out   []byte
	offs  []int
	track bool
	space bool // last emitted byte was a space (or nothing emitted yet)
}

func (n *normalizer) reset() {
	n.out, n.offs, n.space = n.out[:0], n.offs[:0], true
}

func (n *normalizer) emit(c byte, off int) {
	if c == ' ' {
		if n.space {
			return
		}
		n.space = true
	} else {
		n.space = false
	}
	n.out = append(n.out, lower(c))
	if n.track {
		n.offs = append(n.offs, off)
	}
}

// maxTag bounds how far '<' looks for its '>' so stray '<' in prose cost little.
const maxTag = 512

// write normalises src, whose first byte is at content offset base.
func (n *normalizer) write(src []byte, base int) {
	gt := -1 // offset of the next '>' at or after the last '<' seen; len(src) when none
	for i := 0; i < len(src); {
		c := src[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			n.emit(' ', base+i)
			i++
		case c == 0xc2 && i+1 < len(src) && src[i+1] == 0xa0: // UTF-8 NBSP
			n.emit(' ', base+i)
			i += 2
		case c == '<' && i+1 < len(src) && isTagStart(src[i+1]):
			// Searching forward once per '>' keeps "<a<a<a..." linear.
			if gt < i {
				gt = len(src)
				if j := bytes.IndexByte(src[i+1:], '>'); j >= 0 {
					gt = i + 1 + j
				}
			}
			if gt < len(src) && gt-i < maxTag {
				n.emit(' ', base+i)
				i = gt + 1
				continue
			}
			n.emit(c, base+i)
			i++
		case c == '&':
			r, l := decodeEntity(src[i:])
			n.emit(r, base+i)
			i += l
		case c == '\\':
			r, l := decodeEscape(src[i:])
			if r != 0 {
				n.emit(r, base+i)
			}
			i += l
		default:
			n.emit(c, base+i)
			i++
		}
	}
}

func isTagStart(c byte) bool {
	return c == '/' || c == '!' || c == '?' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// entities are the XML/HTML entities that occur in notice text; others are kept verbatim.
var entities = []struct {
	name string
	r    byte
}{
	{"&nbsp;", ' '}, {"&#160;", ' '}, {"&#xa0;", ' '}, {"&#10;", ' '}, {"&#13;", ' '}, {"&#xa;", ' '}, {"&#xd;", ' '},
	{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}, {"&#39;", '\''},
}

func decodeEntity(b []byte) (byte, int) {
	for _, e := range entities {
		if len(b) >= len(e.name) && strings.EqualFold(string(b[:len(e.name)]), e.name) {
			return e.r, len(e.name)
		}
	}
	return '&', 1
}

// decodeEscape handles HL7 v2 escapes (\.br\ \F\ \S\ \T\ \R\ \E\ \H\ \N\ \X..\ and the
// formatting commands) and JSON string escapes (\n \r \t \" \/ \\ \uXXXX). HL7 escapes are
// upper case or start with '.', JSON's are lower case, so the two do not collide. It returns
// the byte to emit (0 for none) and the length consumed.
func decodeEscape(b []byte) (byte, int) {
	if len(b) < 2 {
		return '\\', 1
	}
	// HL7: \X\ with a closing backslash within a short distance.
	if end := bytes.IndexByte(b[1:min(len(b), 16)], '\\'); end >= 1 {
		body := b[1 : 1+end]
		switch {
		case body[0] == '.': // \.br\ \.sp\ \.in+4\ \.ce\ ...: all formatting, all whitespace
			return ' ', end + 2
		case len(body) == 1:
			switch body[0] {
			case 'F':
				return '|', 3
			case 'S':
				return '^', 3
			case 'T':
				return '&', 3
			case 'R':
				return '~', 3
			case 'E':
				return '\\', 3
			case 'H', 'N':
				return 0, 3
			}
		case body[0] == 'X' || body[0] == 'Z' || body[0] == 'C' || body[0] == 'M':
			if isHL7Hex(body[1:]) {
				return ' ', end + 2
			}
		}
	}
	switch b[1] {
	case 'n', 'r', 't', 'f', 'b':
		return ' ', 2
	case '"', '/', '\\':
		return b[1], 2
	case 'u':
		if len(b) >= 6 {
			switch strings.ToLower(string(b[2:6])) {
			case "00a0", "000a", "000d", "0009", "2028", "2029":
				return ' ', 6
			case "003c":
				return '<', 6
			case "003e":
				return '>', 6
			case "0026":
				return '&', 6
			}
		}
	}
	return '\\', 1
}

func isHL7Hex(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}
