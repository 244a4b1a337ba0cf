package engine

import (
	"bytes"
	"fmt"
	"math/bits"
	"slices"

	"github.com/ward-dlp/ward/classifiers/engine/teddy"
)

// prefilter finds every detector's literals and the long digit runs in one pass over the
// content, without touching most bytes in Go code.
//
// On CPUs with AVX2 that pass is teddy's: all literals and all digits are found together
// by one vector pass writing candidate and digit bitmaps, candidates are verified exactly,
// and digit runs are read off the bitmap (scanTeddy). Elsewhere the sweeps below do it
// with the Go runtime's vectorised bytes.IndexByte, one pass per distinct byte; a scalar
// Teddy loop is slower than those sweeps.
//
// Each literal is represented by one "rare byte": the position in it whose byte is least
// frequent in clinical text (byteCost), preferring bytes other literals already chose so
// that the set of distinct bytes stays small. The scan is then one bytes.IndexByte sweep per
// distinct byte (SIMD in the Go runtime, tens of GB/s when the byte is rare); each
// occurrence is verified against the literals that chose that byte at that position. A
// case-insensitive literal whose rare byte is a letter sweeps both cases. Digit runs are
// found by probing every fourth byte (a run of four or more digits always contains a probe)
// and growing the run around a digit probe.
//
// (A word-at-a-time pass over all upper-case letters, replacing the upper-case sweeps, was
// measured slower on clinical prose: upper-case letters are too common there; see
// docs/benchmarks-classifiers.md.)
type prefilter struct {
	td       *teddy.Matcher // nil without a SIMD kernel: the sweeps run instead
	lits     []pfLit
	sweeps   []pfSweep
	wantRuns []bool // per detector
	always   []bool // per detector
	anyRuns  bool
}

// pfLit is one distinct literal (folded when case-insensitive) and its subscribers.
type pfLit struct {
	text []byte
	fold bool
	pos  int // index of the rare byte in text
	subs []pfSub
}

type pfSub struct {
	det, local int
	confirm    func(content []byte, off, literal int) bool
}

// pfSweep is one byte value searched with IndexByte and the literals anchored on it.
type pfSweep struct {
	b    byte
	lits []int32
	// pair is the offset (+1 or -1, 0 for none) of a neighbour byte every literal of the
	// sweep constrains, and allow the neighbour bytes they accept (fold-aware): most
	// occurrences of a common anchor byte fail this one-byte test and never reach verify.
	pair  int
	allow [4]uint64
}

func (s *pfSweep) allows(content []byte, at int) bool {
	j := at + s.pair
	if s.pair == 0 {
		return true
	}
	if j < 0 || j >= len(content) {
		return false
	}
	c := content[j]
	return s.allow[c>>6]&(1<<(c&63)) != 0
}

// byteCost is an estimate of how often each byte occurs in clinical documents, per 10 000
// bytes (English letter frequencies scaled by prose, digits and punctuation from notes and
// exports). Only the ranking matters: it decides which byte of a literal is swept.
func byteCost(c byte) int {
	const lowerFreq = "" + // a..z
		"\x41\x0c\x16\x22\x64\x12\x10\x31\x39\x02\x06\x20\x14\x37\x3c\x0f\x01\x31\x33\x4b\x16\x08\x13\x02\x10\x01"
	switch {
	case 'a' <= c && c <= 'z':
		return int(lowerFreq[c-'a']) * 10
	case 'A' <= c && c <= 'Z':
		// Sentence starts and clinical abbreviations (BP, HR, LDL, GAD-7, RTC, eGFR)
		// make most capitals common; measured on the benchmark prose, L, R and D occur
		// about 45 times per 10 000 bytes.
		switch c {
		case 'T', 'S', 'A', 'I', 'P', 'C', 'M', 'H', 'R', 'B', 'D', 'N', 'L', 'G', 'F', 'E', 'W':
			return 40
		case 'Q', 'Z', 'X', 'J', 'K', 'Y', 'V', 'U', 'O':
			return 3
		}
		return 10
	case '0' <= c && c <= '9':
		if c <= '2' {
			return 60
		}
		return 40
	case c == ' ':
		return 1600
	case c == '\n' || c == '\r' || c == '\t':
		return 200
	case c == '.' || c == ',':
		return 100
	case c == '/' || c == '-':
		// Dates (08/30/2026, 2026-09-14), doses (16/4 mg), blood pressures (128/82),
		// hyphenated words (follow-up): measured about 75 per 10 000 bytes.
		return 75
	case c == ':' || c == '(' || c == ')' || c == '"' || c == '\'':
		return 30
	case c == '|' || c == '@' || c == '#' || c == '^' || c == '~' || c == '\\' || c == '_' || c == '{' || c == '}' || c == '[' || c == ']':
		return 3
	case c >= 0x80:
		return 10
	}
	return 5
}

// sweepPenalty is the cost of adding one more IndexByte sweep, in byteCost units: a sweep
// over a byte that never occurs still reads the whole content once.
const sweepPenalty = 50

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func upper(c byte) byte {
	if 'a' <= c && c <= 'z' {
		return c - 'a' + 'A'
	}
	return c
}

func isASCIILetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

func newPrefilter(interests []Interest) (*prefilter, error) {
	p := &prefilter{wantRuns: make([]bool, len(interests)), always: make([]bool, len(interests))}
	ids := map[string]int{}
	add := func(d, local int, l string, fold bool, confirm func([]byte, int, int) bool) error {
		if len(l) == 0 || len(l) > 64 {
			return fmt.Errorf("detector %d literal %d: length %d not in 1..64", d, local, len(l))
		}
		f := []byte(l)
		key := "x" + l
		if fold {
			f = bytes.ToLower(f)
			key = "f" + string(f)
		}
		id, ok := ids[key]
		if !ok {
			id = len(p.lits)
			ids[key] = id
			p.lits = append(p.lits, pfLit{text: f, fold: fold})
		}
		p.lits[id].subs = append(p.lits[id].subs, pfSub{det: d, local: local, confirm: confirm})
		return nil
	}
	for d, in := range interests {
		p.wantRuns[d] = in.DigitRuns
		p.always[d] = in.Always
		p.anyRuns = p.anyRuns || in.DigitRuns
		for j, l := range in.Literals {
			if err := add(d, j, l, true, in.Confirm); err != nil {
				return nil, err
			}
		}
		for j, l := range in.Exact {
			if err := add(d, len(in.Literals)+j, l, false, in.Confirm); err != nil {
				return nil, err
			}
		}
	}
	p.plan()
	p.pairFilters()
	tl := make([]teddy.Literal, len(p.lits))
	for i, l := range p.lits {
		tl[i] = teddy.Literal{Text: string(l.text), Fold: l.fold}
	}
	td, err := teddy.New(tl, teddy.Options{})
	if err != nil {
		return nil, err
	}
	if td.SIMD() {
		p.td = td
	}
	return p, nil
}

// plan chooses each literal's rare byte. Literals are placed rarest-first so that later,
// more common ones can join a sweep that already exists instead of opening a new one.
func (p *prefilter) plan() {
	cost := func(l *pfLit, i int) int {
		c := l.text[i]
		if l.fold && isASCIILetter(c) {
			return byteCost(lower(c)) + byteCost(upper(c))
		}
		return byteCost(c)
	}
	best := func(l *pfLit) (int, int) {
		bi, bc := 0, 1<<30
		for i := range l.text {
			if c := cost(l, i); c < bc {
				bi, bc = i, c
			}
		}
		return bi, bc
	}
	order := make([]int, len(p.lits))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		_, ca := best(&p.lits[a])
		_, cb := best(&p.lits[b])
		return ca - cb
	})
	sweepOf := map[byte]int{}
	open := func(b byte) int {
		if s, ok := sweepOf[b]; ok && s >= 0 {
			return s
		}
		sweepOf[b] = len(p.sweeps)
		p.sweeps = append(p.sweeps, pfSweep{b: b})
		return len(p.sweeps) - 1
	}
	// Two rounds: the second re-places every literal knowing which sweeps the first round
	// opened, so a literal placed early can still join a sweep opened after it.
	for round := 0; round < 2; round++ {
		if round == 1 {
			used := map[byte]bool{}
			for _, s := range p.sweeps {
				used[s.b] = true
			}
			p.sweeps = p.sweeps[:0]
			clear(sweepOf)
			for b := range used {
				sweepOf[b] = -1 // known to be worth opening; created on first use
			}
		}
		p.placeAll(order, cost, sweepOf, open)
	}
}

// pairFilters sets each sweep's neighbour-byte filter.
func (p *prefilter) pairFilters() {
	for si := range p.sweeps {
		sw := &p.sweeps[si]
		for _, off := range []int{1, -1} {
			ok := true
			var allow [4]uint64
			for _, id := range sw.lits {
				l := &p.lits[id]
				j := l.pos + off
				if j < 0 || j >= len(l.text) {
					ok = false
					break
				}
				c := l.text[j]
				allow[c>>6] |= 1 << (c & 63)
				if l.fold && isASCIILetter(c) {
					u := upper(c)
					allow[u>>6] |= 1 << (u & 63)
				}
			}
			if ok {
				sw.pair, sw.allow = off, allow
				break
			}
		}
	}
}

func (p *prefilter) placeAll(order []int, cost func(*pfLit, int) int, sweepOf map[byte]int, open func(byte) int) {
	for _, id := range order {
		l := &p.lits[id]
		bi, bc := 0, 1<<30
		for i := range l.text {
			c := cost(l, i)
			variants := []byte{l.text[i]}
			if l.fold && isASCIILetter(l.text[i]) {
				variants = []byte{lower(l.text[i]), upper(l.text[i])}
			}
			for _, v := range variants {
				if _, ok := sweepOf[v]; !ok {
					c += sweepPenalty
				}
			}
			if c < bc {
				bi, bc = i, c
			}
		}
		l.pos = bi
		c := l.text[bi]
		if l.fold && isASCIILetter(c) {
			s := open(lower(c))
			p.sweeps[s].lits = append(p.sweeps[s].lits, int32(id))
			s = open(upper(c))
			p.sweeps[s].lits = append(p.sweeps[s].lits, int32(id))
		} else {
			s := open(c)
			p.sweeps[s].lits = append(p.sweeps[s].lits, int32(id))
		}
	}
}

// scratch is the per-call working memory, pooled by the engine.
type scratch struct {
	hits      [][]Hit
	truncated []bool
	runs      []Span
	dropped   int
}

func newScratch(nDet int) *scratch {
	return &scratch{hits: make([][]Hit, nDet), truncated: make([]bool, nDet)}
}

// maxPooledRuns stops one digit-heavy file from pinning a large run buffer in the pool.
const maxPooledRuns = 1 << 18

func (s *scratch) reset() {
	if cap(s.runs) > maxPooledRuns {
		s.runs = nil
	}
	for i := range s.hits {
		s.hits[i] = s.hits[i][:0]
		s.truncated[i] = false
	}
	s.runs = s.runs[:0]
	s.dropped = 0
}

func (p *prefilter) scan(content []byte, sc *scratch) {
	if p.td != nil {
		var st teddyState
		p.scanTeddy(content, 0, len(content), &st, sc)
	} else {
		p.scanSweeps(content, sc)
	}
	for d := range sc.hits {
		sortHits(sc.hits[d])
	}
}

// sortHits restores offset order: both passes deliver hits out of it (by byte value, or
// by window position when literals' windows sit at different offsets).
func sortHits(h []Hit) {
	if !slices.IsSortedFunc(h, cmpHit) {
		slices.SortStableFunc(h, cmpHit)
	}
}

// teddyState carries the digit-run state of scanTeddy from one range to the next.
type teddyState struct {
	prev uint64 // digit bitmap word before the range
	next int    // digit runs ending before next have been recorded
}

// teddyBlock is how many bitmap words one kernel call fills (4 KiB of content), small
// enough to stay in L1 with the content it describes.
const teddyBlock = 64

// scanTeddy verifies every candidate of the vector pass and reads the digit runs off its
// digit bitmap: a run of MinDigitRun digits ends at every set bit of d & d<<1 & d<<2 &
// d<<3 (carrying the previous word's top bits), and each such run is grown in the content
// once.
//
// It covers window positions [from, to); from is 0 or where the previous range ended, and
// to is a multiple of 64 or len(content).
func (p *prefilter) scanTeddy(content []byte, from, to int, st *teddyState, sc *scratch) {
	var cw, dw [teddyBlock]uint64
	var buf [16]teddy.Match
	prev, next := st.prev, st.next
	defer func() { st.prev, st.next = prev, next }()
	for base := from; base < to; base += 64 * teddyBlock {
		words := min(teddyBlock, (to-base+63)/64)
		n := min(p.td.Bitmaps(content, base, cw[:words], dw[:words]), to-base)
		for w := range (n + 63) / 64 {
			at := base + 64*w
			for c := cw[w]; c != 0; c &= c - 1 {
				for _, m := range p.td.MatchAt(content, at+bits.TrailingZeros64(c), buf[:0]) {
					p.record(&p.lits[m.Literal], m.Start, content, sc)
				}
			}
			if !p.anyRuns {
				continue
			}
			d := dw[w]
			e4 := d & (d<<1 | prev>>63) & (d<<2 | prev>>62) & (d<<3 | prev>>61)
			prev = d
			if next > at {
				if next-at >= 64 {
					continue
				}
				e4 &^= 1<<(next-at) - 1
			}
			for e4 != 0 {
				i := at + bits.TrailingZeros64(e4)
				s, e := i-3, i+1
				for s > 0 && content[s-1]-'0' < 10 {
					s--
				}
				for e < len(content) && content[e]-'0' < 10 {
					e++
				}
				if e-s <= maxDigitRun {
					sc.runs = append(sc.runs, Span{s, e})
				}
				next = e
				if e-at >= 64 {
					break
				}
				e4 &^= 1<<(e-at) - 1
			}
		}
	}
}

// scanSweeps is the portable pass: one IndexByte sweep per distinct anchor byte, dense
// bytes in one table pass, then the digit runs.
func (p *prefilter) scanSweeps(content []byte, sc *scratch) {
	var dense [256]uint8 // sweep index + 1 of bytes too common for their own sweep
	anyDense := false
	if len(content) >= denseMinContent {
		hist := sampleHistogram(content)
		for si := range p.sweeps {
			if hist[p.sweeps[si].b] > denseSampleHits && si < 255 {
				dense[p.sweeps[si].b] = uint8(si + 1)
				anyDense = true
			}
		}
	}
	for si := range p.sweeps {
		if dense[p.sweeps[si].b] == 0 {
			p.sweep(&p.sweeps[si], content, sc)
		}
	}
	if anyDense {
		p.densePass(&dense, content, sc)
	}
	if p.anyRuns {
		digitRuns(content, sc)
	}
}

func cmpHit(a, b Hit) int { return a.Off - b.Off }

// sweep finds every occurrence of one byte and verifies the literals anchored on it.
func (p *prefilter) sweep(s *pfSweep, content []byte, sc *scratch) {
	base := 0
	for {
		i := bytes.IndexByte(content[base:], s.b)
		if i < 0 {
			return
		}
		at := base + i
		base = at + 1
		if s.allows(content, at) {
			p.verify(s.lits, at, content, sc)
		}
	}
}

// Dense sweeps. bytes.IndexByte costs a call and a SIMD set-up per occurrence, which is
// cheap for a byte every few hundred bytes and expensive for one every few bytes (digits
// in a roster export, '/' in a table of dates). Before the sweeps, a sample of the content
// is counted; the sweep bytes common in it are found together by one table-driven pass
// instead, whose cost does not depend on how often they occur.
const (
	denseMinContent = 16 << 10 // smaller contents are not worth sampling
	denseSampleSize = 64       // bytes per sample chunk
	denseSamples    = 64       // chunks, spread over the content (4 KiB in all)
	denseSampleHits = 4096 / 48
)

// sampleHistogram counts bytes in denseSamples chunks spread evenly over content.
func sampleHistogram(content []byte) *[256]int {
	var h [256]int
	step := (len(content) - denseSampleSize) / (denseSamples - 1)
	for k := range denseSamples {
		for _, c := range content[k*step : k*step+denseSampleSize] {
			h[c]++
		}
	}
	return &h
}

// densePass verifies the dense sweeps' literals at every occurrence of their bytes, in one
// pass over content.
func (p *prefilter) densePass(dense *[256]uint8, content []byte, sc *scratch) {
	for at, c := range content {
		if t := dense[c]; t != 0 {
			s := &p.sweeps[t-1]
			if s.allows(content, at) {
				p.verify(s.lits, at, content, sc)
			}
		}
	}
}

// verify checks the literals anchored at content[at] and records those present.
func (p *prefilter) verify(ids []int32, at int, content []byte, sc *scratch) {
	for _, id := range ids {
		l := &p.lits[id]
		off := at - l.pos
		if off < 0 || off+len(l.text) > len(content) {
			continue
		}
		if l.fold {
			if !hasFoldedPrefix(content[off:], l.text) {
				continue
			}
		} else if !bytes.HasPrefix(content[off:], l.text) {
			continue
		}
		p.record(l, off, content, sc)
	}
}

func (p *prefilter) record(l *pfLit, off int, content []byte, sc *scratch) {
	for _, sub := range l.subs {
		if sub.confirm != nil && !sub.confirm(content, off, sub.local) {
			continue
		}
		if len(sc.hits[sub.det]) >= maxHitsPerDetector {
			sc.truncated[sub.det] = true
			sc.dropped++
			continue
		}
		sc.hits[sub.det] = append(sc.hits[sub.det], Hit{Literal: sub.local, Off: off})
	}
}

// MinDigitRun is the shortest digit run the shared pass reports. Every identifier that can
// be reported without a label or keyword anchor (SSN serials, NPIs, phone line numbers,
// years, HCPCS and taxonomy codes, MRNs) contains a run at least this long, so detectors
// look at shorter groups only around one.
const MinDigitRun = 4

// digitRuns records maximal runs of MinDigitRun..maxDigitRun ASCII digits. It probes every
// MinDigitRun-th byte: a run that long always covers a probe, and prose without long
// numbers costs one compare per four bytes.
func digitRuns(content []byte, sc *scratch) {
	n := len(content)
	for i := MinDigitRun - 1; i < n; i += MinDigitRun {
		if content[i]-'0' >= 10 {
			continue
		}
		s, e := i, i+1
		for s > 0 && content[s-1]-'0' < 10 {
			s--
		}
		for e < n && content[e]-'0' < 10 {
			e++
		}
		if l := e - s; l >= MinDigitRun && l <= maxDigitRun {
			sc.runs = append(sc.runs, Span{s, e})
		}
		// content[e] is not a digit; the next run starts after it, and any run of
		// MinDigitRun digits from there on covers e+MinDigitRun.
		i = e
	}
}

// hasFoldedPrefix reports whether b starts with the lower-case literal l, ignoring ASCII case.
func hasFoldedPrefix(b, l []byte) bool {
	if len(b) < len(l) {
		return false
	}
	for i, c := range l {
		if lower(b[i]) != c {
			return false
		}
	}
	return true
}
