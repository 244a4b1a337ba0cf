package traffic

// prefixBuf reassembles the first bytes of a byte stream (a TCP direction or a QUIC CRYPTO
// stream) from pieces placed by offset, in any order, with overlaps and retransmissions.
// It is bounded: bytes at or beyond limit are dropped and counted as overflow. Only the
// contiguous prefix is ever parsed, so a missing piece means "no answer", never a guess.
type prefixBuf struct {
	buf      []byte
	have     []span // sorted, non-overlapping, non-adjacent received ranges
	limit    int
	overflow bool
}

type span struct{ lo, hi int }

// maxSpans bounds the bookkeeping of holes; an attacker sending many tiny disjoint pieces
// gets the buffer marked overflowed instead of unbounded work.
const maxSpans = 32

func newPrefixBuf(limit int) *prefixBuf { return &prefixBuf{limit: limit} }

// reserve makes room for n bytes (capped at limit) ahead of time, when a message header
// announced its length: growing the buffer piece by piece would copy the earlier pieces,
// by then cold in cache, once per growth.
func (p *prefixBuf) reserve(n int) {
	n = min(n, p.limit)
	if n > cap(p.buf) {
		nb := make([]byte, len(p.buf), n)
		copy(nb, p.buf)
		p.buf = nb
	}
}

// add places data at offset off. It reports false when the piece could not be kept.
func (p *prefixBuf) add(off int, data []byte) bool {
	if off < 0 || len(data) == 0 {
		return len(data) == 0
	}
	if off >= p.limit {
		p.overflow = true
		return false
	}
	end := off + len(data)
	if end > p.limit {
		p.overflow = true
		end = p.limit
		data = data[:end-off]
	}
	if end > len(p.buf) {
		if end > cap(p.buf) {
			n := make([]byte, end, max(end, min(2*cap(p.buf), p.limit)))
			copy(n, p.buf)
			p.buf = n
		} else {
			p.buf = p.buf[:end]
		}
	}
	copy(p.buf[off:end], data)
	// merge [off,end) into have
	lo, hi := off, end
	out := p.have[:0:0]
	inserted := false
	for _, s := range p.have {
		switch {
		case s.hi < lo:
			out = append(out, s)
		case s.lo > hi:
			if !inserted {
				out = append(out, span{lo, hi})
				inserted = true
			}
			out = append(out, s)
		default:
			lo, hi = min(lo, s.lo), max(hi, s.hi)
		}
	}
	if !inserted {
		out = append(out, span{lo, hi})
	}
	if len(out) > maxSpans {
		p.overflow = true
		out = out[:maxSpans]
	}
	p.have = out
	return true
}

// contiguous returns the bytes received without a hole from offset 0.
func (p *prefixBuf) contiguous() []byte {
	if len(p.have) == 0 || p.have[0].lo != 0 {
		return nil
	}
	return p.buf[:p.have[0].hi]
}
