package engine

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/bits"
	"slices"
)

// prefilter finds every detector's literals and the digit runs in one pass.
//
// Literals are reduced to short keys (their first K bytes, K chosen at build time so that
// all keys fit one or two 64-bit words) and the keys are run through a multi-pattern
// Shift-And automaton: each key owns a run of bits, and one shift/or/and per word per byte
// advances all of them at once, branch-free until a key completes. A completed key is
// verified against the full literals that start with it. The full engine can replace this
// with Aho-Corasick or a SIMD prefilter behind the same scan().
type prefilter struct {
	words    []pfWord
	keys     []pfKey
	lits     []pfLit
	wantRuns []bool // per detector
	anyRuns  bool
}

// pfWord is one 64-bit lane of the automaton.
type pfWord struct {
	mask   [256]uint64 // bit i set when a byte may appear at position i of its key
	start  uint64      // first bit of each key
	end    uint64      // last bit of each key
	endKey [64]int32   // key id by end bit
}

// pfKey is a literal prefix and the literals sharing it.
type pfKey struct {
	n    int
	lits []int32
}

// pfLit is one distinct (case-folded) literal and the detectors subscribed to it.
type pfLit struct {
	text []byte
	subs []pfSub
}

type pfSub struct{ det, local int }

const (
	// maxKeyLen and minKeyLen bound the key length; shorter keys fit fewer words but
	// verify more often.
	maxKeyLen = 8
	minKeyLen = 3
	// targetWords is the automaton width the key length is shortened to fit, if it can.
	targetWords = 1
)

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func newPrefilter(interests []Interest) (*prefilter, error) {
	p := &prefilter{wantRuns: make([]bool, len(interests))}
	ids := map[string]int{}
	for d, in := range interests {
		p.wantRuns[d] = in.DigitRuns
		p.anyRuns = p.anyRuns || in.DigitRuns
		for j, l := range in.Literals {
			if len(l) == 0 || len(l) > 64 {
				return nil, fmt.Errorf("detector %d literal %d: length %d not in 1..64", d, j, len(l))
			}
			f := bytes.ToLower([]byte(l))
			id, ok := ids[string(f)]
			if !ok {
				id = len(p.lits)
				ids[string(f)] = id
				p.lits = append(p.lits, pfLit{text: f})
			}
			p.lits[id].subs = append(p.lits[id].subs, pfSub{det: d, local: j})
		}
	}
	k := maxKeyLen
	for k > minKeyLen && p.layout(k, false) > targetWords {
		k--
	}
	p.layout(k, true)
	return p, nil
}

// layout assigns keys of length at most k to words and returns how many words they take;
// with build set it also fills the automaton.
func (p *prefilter) layout(k int, build bool) int {
	keyIDs := map[string]int{}
	var keys []pfKey
	var texts []string
	for id, l := range p.lits {
		t := string(l.text[:min(k, len(l.text))])
		kid, ok := keyIDs[t]
		if !ok {
			kid = len(keys)
			keyIDs[t] = kid
			keys = append(keys, pfKey{n: len(t)})
			texts = append(texts, t)
		}
		keys[kid].lits = append(keys[kid].lits, int32(id))
	}
	var words []pfWord
	used := 64 // force a new word first
	for id, t := range texts {
		if used+len(t) > 64 {
			words = append(words, pfWord{})
			used = 0
		}
		w := &words[len(words)-1]
		w.start |= 1 << used
		for i := 0; i < len(t); i++ {
			c := t[i]
			w.mask[c] |= 1 << (used + i)
			if 'a' <= c && c <= 'z' {
				w.mask[c-'a'+'A'] |= 1 << (used + i)
			}
		}
		endBit := used + len(t) - 1
		w.end |= 1 << endBit
		w.endKey[endBit] = int32(id)
		used += len(t)
	}
	if build {
		p.words, p.keys = words, keys
	}
	return len(words)
}

// scratch is the per-call working memory, pooled by the engine.
type scratch struct {
	hits      [][]Hit
	truncated []bool
	runs      []Span
	dropped   int
	state     []uint64
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
	if len(p.words) == 1 {
		p.scan1(content, sc)
	} else {
		p.scanN(content, sc)
	}
	if p.anyRuns {
		p.digitRuns(content, sc)
	}
	// Hits arrive in order of their key's last byte; literals of different lengths can
	// invert start order, so restore it (the check is linear, the sort usually skipped).
	for d := range sc.hits {
		if h := sc.hits[d]; !slices.IsSortedFunc(h, cmpHit) {
			slices.SortStableFunc(h, cmpHit)
		}
	}
}

func cmpHit(a, b Hit) int { return a.Off - b.Off }

// scan1 is the one-word automaton with its state in a register.
func (p *prefilter) scan1(content []byte, sc *scratch) {
	w := &p.words[0]
	var s uint64
	for i, c := range content {
		s = ((s << 1) | w.start) & w.mask[c]
		if s&w.end != 0 {
			p.emit(w, s&w.end, i, content, sc)
		}
	}
}

// scanN runs any number of words.
func (p *prefilter) scanN(content []byte, sc *scratch) {
	if cap(sc.state) < len(p.words) {
		sc.state = make([]uint64, len(p.words))
	}
	state := sc.state[:len(p.words)]
	clear(state)
	for i, c := range content {
		for w := range p.words {
			pw := &p.words[w]
			s := ((state[w] << 1) | pw.start) & pw.mask[c]
			state[w] = s
			if e := s & pw.end; e != 0 {
				p.emit(pw, e, i, content, sc)
			}
		}
	}
}

// digitRuns records maximal runs of ASCII digits. It is a separate loop that skips eight
// digit-free bytes at a time (SWAR), cheaper than a branch in the automaton loop.
func (p *prefilter) digitRuns(content []byte, sc *scratch) {
	i := 0
	for i < len(content) {
		for i+8 <= len(content) && !hasDigit(binary.LittleEndian.Uint64(content[i:])) {
			i += 8
		}
		if i >= len(content) {
			break
		}
		if content[i]-'0' >= 10 {
			i++
			continue
		}
		j := i + 1
		for j < len(content) && content[j]-'0' < 10 {
			j++
		}
		if j-i <= maxDigitRun {
			sc.runs = append(sc.runs, Span{i, j})
		}
		i = j
	}
}

// hasDigit reports whether any byte of x is an ASCII digit ('0' < b+1 && b < '9'+1),
// with the "has byte between" bit trick; bytes >= 0x80 never count.
func hasDigit(x uint64) bool {
	const (
		ones = 0x0101010101010101
		low7 = ones * 127
		high = ones * 128
		m    = '0' - 1
		n    = '9' + 1
	)
	return (ones*(127+n)-(x&low7))&^x&((x&low7)+ones*(127-m))&high != 0
}

// emit verifies the literals behind each completed key (ending at byte i) and hands
// confirmed hits to their detectors.
func (p *prefilter) emit(pw *pfWord, e uint64, i int, content []byte, sc *scratch) {
	for e != 0 {
		b := bits.TrailingZeros64(e)
		e &= e - 1
		k := &p.keys[pw.endKey[b]]
		off := i - k.n + 1
		for _, id := range k.lits {
			l := &p.lits[id]
			if len(l.text) > k.n && !hasFoldedPrefix(content[off:], l.text) {
				continue
			}
			for _, sub := range l.subs {
				if len(sc.hits[sub.det]) >= maxHitsPerDetector {
					sc.truncated[sub.det] = true
					sc.dropped++
					continue
				}
				sc.hits[sub.det] = append(sc.hits[sub.det], Hit{Literal: sub.local, Off: off})
			}
		}
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
