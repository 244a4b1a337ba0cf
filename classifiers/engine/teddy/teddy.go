// Package teddy finds a set of short literals, and the ASCII digits, in one pass over the
// bytes: a Teddy-style multi-literal prefilter (as in Hyperscan and Rust's aho-corasick).
//
// Every literal is reduced to a three-byte window of itself (the rarest one in clinical
// text) and the literals are grouped into eight buckets. For each window position, two
// 16-entry tables give, per low and per high nibble of a byte, the buckets whose literals
// accept that nibble there; a byte position is a candidate when the AND over the three
// window bytes of both nibble lookups leaves a bucket bit set. On amd64 with AVX2 this is
// six VPSHUFB per 32 bytes (plus a digit test in the same registers), writing one bit per
// byte into candidate and digit bitmaps; elsewhere, and for the last bytes of a buffer, a
// table-driven Go loop computes the same bitmaps. Candidates are then verified exactly
// (MatchAt), so the bucket grouping only decides how many false candidates there are.
//
// ASCII case folding costs nothing here: 'a' and 'A' share their low nibble, so a folded
// letter only widens its high-nibble set (4|6 or 5|7).
package teddy

import (
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"strings"
)

// Width is the number of bytes of each literal the masks test.
const Width = 3

// Buckets is how many literal groups the masks distinguish (one bit of a byte each).
const Buckets = 8

// Literal is one byte string to find.
type Literal struct {
	// Text is the literal (1..64 bytes).
	Text string
	// Fold matches ASCII letters in either case.
	Fold bool
}

// Match is one literal found: its index in the literals given to New and its start offset.
type Match struct {
	Literal int
	Start   int
}

// Masks is the nibble-table form the SIMD kernel reads: for window position k, lo[k][n]
// and hi[k][n] hold the buckets accepting low (high) nibble n at that position.
type Masks struct {
	tab [2 * Width][16]byte // lo0 hi0 lo1 hi1 lo2 hi2
}

// Matcher is a compiled literal set. It is immutable and safe for concurrent use.
type Matcher struct {
	masks Masks
	// byteTab[k][c] is the bucket set byte c passes at window position k (the same AND of
	// nibble lookups the kernel does), for the Go kernel and candidate verification.
	byteTab [Width][256]byte
	lits    []lit
	buckets [Buckets][]int32 // literal indexes per bucket
	// pairs[b] has bit pairHash(x, y) for the first two window bytes (folded) of bucket
	// b's literals, all bits for a bucket holding a one-byte literal: the nibble tables
	// accept cross-products ("52" for a bucket of "42" and "ubl"), this rejects most of
	// them with one test before any literal is compared.
	pairs  [Buckets][pairBits / 64]uint64
	maxPos int // largest window offset of any literal
	simd   bool
}

type lit struct {
	text []byte // lower-cased when fold
	fold bool
	pos  int // offset of the window in text
	// The up to four literal bytes from the window on, as a little-endian word: a
	// candidate passes when (word at the window | fold) & care == want, one compare that
	// rejects most of a bucket's literals before the full comparison.
	want, care, foldBits uint32
}

// Options change how a Matcher runs; the zero value picks the fastest kernel the CPU has.
type Options struct {
	// NoSIMD forces the Go kernel (tests compare both; also a fallback switch).
	NoSIMD bool
	// Prefix puts every literal's window at its start, so a candidate's position is the
	// literal's start: a caller that scans a range gets exactly the matches starting in it.
	Prefix bool
}

// New compiles literals. An empty set is valid and finds nothing but digits.
func New(literals []Literal, opts Options) (*Matcher, error) {
	m := &Matcher{simd: haveSIMD && !opts.NoSIMD}
	for i, l := range literals {
		if len(l.Text) == 0 || len(l.Text) > 64 {
			return nil, fmt.Errorf("teddy: literal %d: length %d not in 1..64", i, len(l.Text))
		}
		t := []byte(l.Text)
		if l.Fold {
			for j, c := range t {
				t[j] = lower(c)
			}
		}
		m.lits = append(m.lits, lit{text: t, fold: l.Fold})
	}
	if len(m.lits) > 1<<16 {
		return nil, errors.New("teddy: too many literals")
	}
	m.plan(opts.Prefix)
	return m, nil
}

// SIMD reports whether the vector kernel is in use.
func (m *Matcher) SIMD() bool { return m.simd }

// nibbleSets is what one bucket (or one literal) accepts at each window position.
type nibbleSets struct {
	lo, hi [Width]uint16
}

func (a nibbleSets) union(b nibbleSets) nibbleSets {
	for k := range Width {
		a.lo[k] |= b.lo[k]
		a.hi[k] |= b.hi[k]
	}
	return a
}

// rate estimates the share of byte positions of clinical text at which sets pass, taking
// the window bytes as independent.
func (s nibbleSets) rate() float64 {
	r := 1.0
	for k := range Width {
		p := 0.0
		for h := s.hi[k]; h != 0; h &= h - 1 {
			row := &freqByNibbles[bits.TrailingZeros16(h)]
			p += row[0][s.lo[k]&0xff] + row[1][s.lo[k]>>8]
		}
		r *= p
	}
	return r
}

// freqByNibbles[hi][half][mask] sums freq over the bytes with high nibble hi and a low
// nibble in half*8 + the bits of mask: a set's rate in 32 look-ups instead of 256 tests.
var freqByNibbles = func() (t [16][2][256]float64) {
	for hi := range 16 {
		for half := range 2 {
			for m := range 256 {
				for n := range 8 {
					if m&(1<<n) != 0 {
						t[hi][half][m] += freq[hi<<4|(half*8+n)]
					}
				}
			}
		}
	}
	return t
}()

// window returns the nibble sets of l's window at pos.
func (l *lit) window(pos int) nibbleSets {
	var s nibbleSets
	for k := range Width {
		if pos+k >= len(l.text) {
			s.lo[k], s.hi[k] = 0xffff, 0xffff // shorter than Width: anything follows
			continue
		}
		c := l.text[pos+k]
		s.lo[k] |= 1 << (c & 15)
		s.hi[k] |= 1 << (c >> 4)
		if l.fold && 'a' <= c && c <= 'z' {
			s.hi[k] |= 1 << ((c - 32) >> 4)
		}
	}
	return s
}

// plan picks each literal's window and groups the literals into buckets: every literal
// starts alone, and the pair of groups whose union adds the least estimated candidate rate
// is merged until Buckets groups remain.
func (m *Matcher) plan(prefix bool) {
	type group struct {
		sets nibbleSets
		lits []int32
	}
	var gs []group
	for i := range m.lits {
		l := &m.lits[i]
		best, bestRate := 0, 2.0
		for pos := 0; pos+min(Width, len(l.text)) <= len(l.text) && (pos == 0 || !prefix); pos++ {
			if r := l.window(pos).rate(); r < bestRate {
				best, bestRate = pos, r
			}
		}
		l.pos = best
		m.maxPos = max(m.maxPos, best)
		for k := 0; k < 4 && best+k < len(l.text); k++ {
			c := l.text[best+k]
			l.want |= uint32(c) << (8 * k)
			l.care |= 0xff << (8 * k)
			if l.fold && 'a' <= c && c <= 'z' {
				l.foldBits |= 0x20 << (8 * k)
			}
		}
		gs = append(gs, group{sets: l.window(best), lits: []int32{int32(i)}})
	}
	rates := make([]float64, len(gs))
	for i := range gs {
		rates[i] = gs[i].sets.rate()
	}
	// cost[i][j] (i < j) is what merging groups i and j adds; only the merged group's row
	// and column change per step.
	cost := make([][]float64, len(gs))
	// Verification work is what a bucket's candidates cost: its rate times the literals
	// checked per candidate (plus one for the candidate itself).
	work := func(r float64, n int) float64 { return r * float64(n+1) }
	pair := func(i, j int) float64 {
		return work(gs[i].sets.union(gs[j].sets).rate(), len(gs[i].lits)+len(gs[j].lits)) -
			work(rates[i], len(gs[i].lits)) - work(rates[j], len(gs[j].lits))
	}
	for i := range gs {
		cost[i] = make([]float64, len(gs))
		for j := i + 1; j < len(gs); j++ {
			cost[i][j] = pair(i, j)
		}
	}
	for len(gs) > Buckets {
		bi, bj, bc := 0, 1, 2.0
		for i := range gs {
			for j := i + 1; j < len(gs); j++ {
				if c := cost[i][j]; c < bc {
					bi, bj, bc = i, j, c
				}
			}
		}
		gs[bi].sets = gs[bi].sets.union(gs[bj].sets)
		gs[bi].lits = append(gs[bi].lits, gs[bj].lits...)
		rates[bi] = gs[bi].sets.rate()
		gs = slices.Delete(gs, bj, bj+1)
		rates = slices.Delete(rates, bj, bj+1)
		cost = slices.Delete(cost, bj, bj+1)
		for i := range cost {
			cost[i] = slices.Delete(cost[i], bj, bj+1)
		}
		for i := range gs {
			switch {
			case i < bi:
				cost[i][bi] = pair(i, bi)
			case i > bi:
				cost[bi][i] = pair(bi, i)
			}
		}
	}
	for b, g := range gs {
		m.buckets[b] = g.lits
		for _, id := range g.lits {
			l := &m.lits[id]
			if l.pos+1 >= len(l.text) {
				for w := range m.pairs[b] {
					m.pairs[b][w] = ^uint64(0)
				}
				continue
			}
			h := pairHash(l.text[l.pos], l.text[l.pos+1])
			m.pairs[b][h>>6] |= 1 << (h & 63)
		}
		bit := byte(1) << b
		for k := range Width {
			for n := range 16 {
				if g.sets.lo[k]&(1<<n) != 0 {
					m.masks.tab[2*k][n] |= bit
				}
				if g.sets.hi[k]&(1<<n) != 0 {
					m.masks.tab[2*k+1][n] |= bit
				}
			}
		}
	}
	for k := range Width {
		for c := range 256 {
			m.byteTab[k][c] = m.masks.tab[2*k][c&15] & m.masks.tab[2*k+1][c>>4]
		}
	}
}

// Rate is the estimated share of clinical-text positions that are candidates (for tests
// and tuning).
func (m *Matcher) Rate() float64 {
	r := 0.0
	for b := range Buckets {
		var s nibbleSets
		for k := range Width {
			for n := range 16 {
				if m.masks.tab[2*k][n]&(1<<b) != 0 {
					s.lo[k] |= 1 << n
				}
				if m.masks.tab[2*k+1][n]&(1<<b) != 0 {
					s.hi[k] |= 1 << n
				}
			}
		}
		if len(m.buckets[b]) > 0 {
			r += s.rate()
		}
	}
	return r
}

// Bitmaps marks, for the positions from, from+1, ... of data, candidate window starts in
// cands and ASCII digits in digits: bit j of word w is position from+64w+j. It covers
// min(len(data)-from, 64*len(cands)) positions, returns that count, and leaves the bits
// of positions past it zero. len(digits) must be at least len(cands).
func (m *Matcher) Bitmaps(data []byte, from int, cands, digits []uint64) int {
	n := min(len(data)-from, 64*len(cands))
	if n <= 0 {
		return 0
	}
	done := 0
	if m.simd {
		// The kernel reads Width-1 bytes past each block.
		blocks := min(n, len(data)-from-(Width-1)) / 64
		if blocks > 0 {
			bitmapsSIMD(&m.masks, &data[from], blocks, &cands[0], &digits[0])
			done = 64 * blocks
		}
	}
	m.bitmapsGo(data, from+done, from+n, cands[done/64:], digits[done/64:])
	w := (n + 63) / 64
	clear(cands[w:])
	clear(digits[w:len(cands)])
	return n
}

// bitmapsGo is the portable kernel for positions [from, to): window bytes past the end of
// data accept everything, as for a literal shorter than Width.
func (m *Matcher) bitmapsGo(data []byte, from, to int, cands, digits []uint64) {
	words := (to - from + 63) / 64
	clear(cands[:words])
	clear(digits[:words])
	t0, t1, t2 := &m.byteTab[0], &m.byteTab[1], &m.byteTab[2]
	safe := min(to, len(data)-(Width-1)) // positions whose whole window is in data
	i := from
	for ; i < safe; i++ {
		c := data[i]
		if t0[c]&t1[data[i+1]]&t2[data[i+2]] != 0 {
			cands[(i-from)>>6] |= 1 << ((i - from) & 63)
		}
		if c-'0' < 10 {
			digits[(i-from)>>6] |= 1 << ((i - from) & 63)
		}
	}
	for ; i < to; i++ {
		c := data[i]
		acc := t0[c]
		if i+1 < len(data) {
			acc &= t1[data[i+1]]
		}
		if i+2 < len(data) {
			acc &= t2[data[i+2]]
		}
		if acc != 0 {
			cands[(i-from)>>6] |= 1 << ((i - from) & 63)
		}
		if c-'0' < 10 {
			digits[(i-from)>>6] |= 1 << ((i - from) & 63)
		}
	}
}

// MatchAt appends to out the literals present whose window starts at data[i] (a candidate
// from Bitmaps), in bucket order.
func (m *Matcher) MatchAt(data []byte, i int, out []Match) []Match {
	var word uint32
	var acc byte
	if i+4 <= len(data) {
		word = uint32(data[i]) | uint32(data[i+1])<<8 | uint32(data[i+2])<<16 | uint32(data[i+3])<<24
		acc = m.byteTab[0][data[i]] & m.byteTab[1][data[i+1]] & m.byteTab[2][data[i+2]]
	} else {
		acc = m.byteTab[0][data[i]]
		for k := 1; k < 4 && i+k < len(data); k++ {
			word |= uint32(data[i+k]) << (8 * k)
			if k < Width {
				acc &= m.byteTab[k][data[i+k]]
			}
		}
		word |= uint32(data[i])
	}
	if acc != 0 && i+1 < len(data) {
		h := pairHash(data[i], data[i+1])
		for t := acc; t != 0; t &= t - 1 {
			if b := bits.TrailingZeros8(t); m.pairs[b][h>>6]&(1<<(h&63)) == 0 {
				acc &^= 1 << b
			}
		}
	}
	for acc != 0 {
		b := bits.TrailingZeros8(acc)
		acc &= acc - 1
		for _, id := range m.buckets[b] {
			l := &m.lits[id]
			// Bytes past the end of data are zero in word; a literal needing them fails
			// the bounds test below.
			if (word|l.foldBits)&l.care != l.want {
				continue
			}
			s := i - l.pos
			if s < 0 || s+len(l.text) > len(data) {
				continue
			}
			if len(l.text) > 4 || l.pos > 0 {
				if l.fold {
					if !hasFoldedPrefix(data[s:], l.text) {
						continue
					}
				} else if string(data[s:s+len(l.text)]) != string(l.text) {
					continue
				}
			}
			out = append(out, Match{Literal: int(id), Start: s})
		}
	}
	return out
}

// Find returns the match with the lowest start in [from, to) (the lowest literal index
// among those at that start), or ok false. It is for short searches (keyword windows); a
// whole-buffer pass should use Bitmaps and MatchAt.
func (m *Matcher) Find(data []byte, from, to int) (Match, bool) {
	from, to = max(from, 0), min(to, len(data))
	var cw, dw [4]uint64
	var buf [8]Match
	best := Match{Start: -1}
	// A literal starting at s has its window at s+pos, so windows are read up to
	// to-1+maxPos, and after a match at s no later window can start an earlier match once
	// past s+maxPos.
	last := min(len(data), to+m.maxPos)
	for base := from; base < last; base += 64 * len(cw) {
		n := m.window(data, base, last, cw[:], dw[:])
		for w := range (n + 63) / 64 {
			for c := cw[w]; c != 0; c &= c - 1 {
				i := base + 64*w + bits.TrailingZeros64(c)
				if best.Start >= 0 && i > best.Start+m.maxPos {
					return best, true
				}
				for _, x := range m.MatchAt(data, i, buf[:0]) {
					if x.Start >= from && x.Start < to && (best.Start < 0 || x.Start < best.Start || x.Start == best.Start && x.Literal < best.Literal) {
						best = x
					}
				}
			}
		}
	}
	return best, best.Start >= 0
}

// Last returns the match with the highest start in [from, to) (the longest literal among
// those at that start, then the lowest index), or ok false.
func (m *Matcher) Last(data []byte, from, to int) (Match, bool) {
	from, to = max(from, 0), min(to, len(data))
	var cw, dw [4]uint64
	var buf [8]Match
	best := Match{Start: -1}
	last := min(len(data), to+m.maxPos)
	for base := from; base < last; base += 64 * len(cw) {
		n := m.window(data, base, last, cw[:], dw[:])
		for w := range (n + 63) / 64 {
			for c := cw[w]; c != 0; c &= c - 1 {
				for _, x := range m.MatchAt(data, base+64*w+bits.TrailingZeros64(c), buf[:0]) {
					if x.Start < from || x.Start >= to {
						continue
					}
					if x.Start > best.Start {
						best = x
						continue
					}
					if x.Start == best.Start {
						lx, lb := len(m.lits[x.Literal].text), len(m.lits[best.Literal].text)
						if lx > lb || lx == lb && x.Literal < best.Literal {
							best = x
						}
					}
				}
			}
		}
	}
	return best, best.Start >= 0
}

// window fills the bitmaps for positions base.. up to last (at most 64*len(cw)) and
// returns how many it covers. It lets the kernel read whole blocks past last when data
// has them (a short window costs one vector block, not a byte loop), then drops the
// candidates past last.
func (m *Matcher) window(data []byte, base, last int, cw, dw []uint64) int {
	want := min(last-base, 64*len(cw))
	if want <= 0 {
		return 0
	}
	end := min(len(data), base+(want+63)/64*64+Width-1)
	n := min(m.Bitmaps(data[:end], base, cw, dw), want)
	w := (n + 63) / 64
	if r := n % 64; r != 0 {
		cw[w-1] &= 1<<r - 1
	}
	return n
}

// pairBits is the size of a bucket's pair filter.
const pairBits = 4096

// pairHash maps two bytes, ASCII case folded, to a bit of a pair filter.
func pairHash(x, y byte) uint32 {
	return (uint32(lower(x))*0x9e5 ^ uint32(lower(y))*0x3b1) % pairBits
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

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

// freq is the share of each byte value in clinical documents (notes, exports, messages):
// English letter frequencies scaled by prose, digits and punctuation from notes and
// exports. Only the ranking matters: it decides windows and bucket groups.
var freq = func() [256]float64 {
	var f [256]float64
	const lowerFreq = "" + // a..z, per 10 000 bytes / 10
		"\x41\x0c\x16\x22\x64\x12\x10\x31\x39\x02\x06\x20\x14\x37\x3c\x0f\x01\x31\x33\x4b\x16\x08\x13\x02\x10\x01"
	for c := range 256 {
		var w float64
		switch b := byte(c); {
		case 'a' <= b && b <= 'z':
			w = float64(lowerFreq[b-'a']) * 10
		case 'A' <= b && b <= 'Z':
			// Sentence starts and clinical abbreviations (BP, HR, LDL, GAD-7, RTC, eGFR)
			// make most capitals common: L, R and D about 45 per 10 000 bytes of notes.
			w = 40
			if strings.IndexByte("QZXJKYVUO", b) >= 0 {
				w = 3
			}
		case '0' <= b && b <= '9':
			// Vitals, doses, dates and times in notes; identifiers, dates and amounts
			// make up a quarter of a roster export or an HL7 feed. Weighted between the
			// two, so digit windows are not taken for rare.
			w = 100
			if b <= '2' {
				w = 140
			}
		case b == ' ':
			w = 1600
		case b == '\n' || b == '\r' || b == '\t':
			w = 200
		case b == '.' || b == ',':
			w = 100
		case b == '/' || b == '-':
			w = 75
		case b == ':' || b == '(' || b == ')' || b == '"' || b == '\'' || b == '<' || b == '>' || b == '=':
			w = 30
		case b < 0x20 || b >= 0x80:
			w = 1
		default:
			w = 5
		}
		f[c] = w
	}
	sum := 0.0
	for _, w := range f {
		sum += w
	}
	for c := range f {
		f[c] /= sum
	}
	return f
}()

// String lists the buckets and their literals' windows, for tuning.
func (m *Matcher) String() string {
	var b strings.Builder
	for i, ids := range m.buckets {
		fmt.Fprintf(&b, "bucket %d:", i)
		for _, id := range ids {
			l := &m.lits[id]
			fmt.Fprintf(&b, " %q", l.text[l.pos:min(len(l.text), l.pos+Width)])
		}
		b.WriteByte('\n')
	}
	return b.String()
}
