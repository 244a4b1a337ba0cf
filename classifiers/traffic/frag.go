package traffic

import (
	"bytes"
	"net/netip"
)

// IP fragment reassembly for IPv4 and IPv6 (RFC 791, RFC 8200 §4.5). A DNS answer with
// many records or a QUIC Initial sent over a small-MTU path arrives as IP fragments;
// only the first carries the UDP header, so without reassembly the name in it is lost.
//
// Policy, chosen to match what a Linux receiver (and RFC 5722) does, so Ward sees the
// datagram the endpoint sees and overlap tricks cannot show Ward one payload and the host
// another:
//   - A fragment that lies entirely within bytes already received and repeats them
//     byte for byte is a duplicate (RFC 8200 allows dropping exact duplicates): it is
//     counted and ignored, the datagram goes on.
//   - Any other overlap, for IPv4 as for IPv6, abandons the datagram: its bytes are freed
//     and later fragments of it are discarded until its timeout (no "first wins" or "last
//     wins" guess).
//   - A datagram is bounded to 65,535 bytes of fragmentable payload; non-final fragments
//     must carry a multiple of 8 bytes; the final fragment fixes the length and must agree
//     with everything else received.
//   - At most maxDatagrams datagrams and maxBytes buffered bytes are pending; beyond
//     either the oldest is dropped. Pending datagrams expire timeout after their first
//     fragment (packet time).

// maxFragPayload is the largest fragmentable part of one datagram: the IPv4 total length
// and IPv6 payload length fields are 16 bits.
const maxFragPayload = 65535

// maxFragHoles bounds the received ranges of one datagram; fragments arriving in order
// keep a single range, so many disjoint ranges mean a crafted stream.
const maxFragHoles = 64

// fragPiece is one fragment as decoded from its IP header.
type fragPiece struct {
	v6        bool
	id        uint32
	proto     uint8 // IPv4 protocol, or the IPv6 fragment header's Next Header
	off       int   // byte offset of data in the fragmentable part
	more      bool  // more fragments follow
	hdrLen    int   // bytes before data in this fragment (IP header, extensions, fragment header)
	data      []byte
	truncated bool // the capture cut the fragment short
}

// fragKey identifies a datagram under reassembly: (src, dst, protocol, ID) for IPv4
// (RFC 791), (src, dst, ID) for IPv6 (RFC 8200), where proto stays zero.
type fragKey struct {
	src, dst netip.Addr
	id       uint32
	proto    uint8
	v6       bool
}

type fragDatagram struct {
	key       fragKey
	buf       []byte
	have      []span // sorted, disjoint, non-adjacent received ranges
	total     int    // length of the fragmentable part; -1 until the last fragment
	nextHdr   uint8  // transport (or next extension) from the offset-0 fragment
	hdrLen    int    // header bytes of the offset-0 fragment (for the datagram's size)
	haveFirst bool
	dead      bool // abandoned (overlap, bad size): later fragments are dropped
	start     int64
	prev      *fragDatagram
	next      *fragDatagram
}

// reassembler holds the datagrams being reassembled, oldest first.
type reassembler struct {
	m            map[fragKey]*fragDatagram
	head, tail   *fragDatagram
	bytes        int
	maxDatagrams int
	maxBytes     int
	timeout      int64
}

func newReassembler(maxDatagrams, maxBytes int, timeout int64) reassembler {
	return reassembler{m: make(map[fragKey]*fragDatagram), maxDatagrams: maxDatagrams, maxBytes: maxBytes, timeout: timeout}
}

func (r *reassembler) unlinkList(d *fragDatagram) {
	if d.prev != nil {
		d.prev.next = d.next
	} else {
		r.head = d.next
	}
	if d.next != nil {
		d.next.prev = d.prev
	} else {
		r.tail = d.prev
	}
	d.prev, d.next = nil, nil
}

// drop forgets a datagram entirely.
func (r *reassembler) drop(d *fragDatagram) {
	r.unlinkList(d)
	delete(r.m, d.key)
	r.bytes -= cap(d.buf)
	d.buf, d.have = nil, nil
}

// kill abandons a datagram but remembers its key until it times out, so the rest of its
// fragments are discarded instead of starting a new (partial, misleading) datagram.
func (r *reassembler) kill(d *fragDatagram) {
	r.bytes -= cap(d.buf)
	d.buf, d.have, d.dead = nil, nil, true
}

// expire drops datagrams older than the timeout.
func (r *reassembler) expire(now int64, st *Stats) {
	for d := r.head; d != nil && now-d.start > r.timeout; d = r.head {
		if !d.dead {
			st.FragTimeouts++
		}
		r.drop(d)
	}
}

// add files one fragment. It returns the datagram when this fragment completed it; the
// caller uses d.buf[:d.total] before the next call to add.
func (r *reassembler) add(p fragPiece, src, dst netip.Addr, now int64, st *Stats) *fragDatagram {
	end := p.off + len(p.data)
	switch {
	case p.truncated, // the capture lost bytes of it: the datagram cannot be rebuilt
		p.more && (len(p.data) == 0 || len(p.data)%8 != 0):
		st.FragInvalid++
		return nil
	}
	k := fragKey{src: src, dst: dst, id: p.id, v6: p.v6}
	if !p.v6 {
		k.proto = p.proto
	}
	d := r.m[k]
	if d == nil {
		if len(r.m) >= r.maxDatagrams {
			st.FragEvicted++
			r.drop(r.head)
		}
		d = &fragDatagram{key: k, total: -1, start: now}
		r.m[k] = d
		if r.tail != nil {
			r.tail.next, d.prev = d, r.tail
		} else {
			r.head = d
		}
		r.tail = d
	}
	if d.dead {
		return nil
	}
	if end > maxFragPayload {
		st.FragInvalid++ // "ping of death": the datagram would exceed 64 KiB
		r.kill(d)
		return nil
	}
	// Overlap with bytes already held: an exact repeat is a duplicate, anything else
	// abandons the datagram.
	for _, s := range d.have {
		if p.off < s.hi && end > s.lo {
			if p.off >= s.lo && end <= s.hi && bytes.Equal(d.buf[p.off:end], p.data) && (p.more || d.total == end) {
				st.FragDuplicates++
				return nil
			}
			st.FragOverlaps++
			r.kill(d)
			return nil
		}
	}
	if !p.more {
		if d.total >= 0 && d.total != end || len(d.have) > 0 && d.have[len(d.have)-1].hi > end {
			st.FragOverlaps++ // two different ends: same ambiguity as an overlap
			r.kill(d)
			return nil
		}
		d.total = end
	} else if d.total >= 0 && end > d.total {
		st.FragOverlaps++
		r.kill(d)
		return nil
	}
	if p.off == 0 {
		d.haveFirst, d.nextHdr, d.hdrLen = true, p.proto, p.hdrLen
	}
	if len(p.data) > 0 { // an empty last fragment only fixes the length
		if end > cap(d.buf) {
			need := max(end, min(2*cap(d.buf), maxFragPayload))
			if d.total >= 0 {
				need = max(end, d.total)
			}
			grow := need - cap(d.buf)
			for r.bytes+grow > r.maxBytes && r.head != nil && r.head != d {
				st.FragEvicted++
				r.drop(r.head)
			}
			if r.bytes+grow > r.maxBytes {
				st.FragEvicted++
				r.drop(d)
				return nil
			}
			nb := make([]byte, end, need)
			copy(nb, d.buf)
			r.bytes += grow
			d.buf = nb
		} else if end > len(d.buf) {
			d.buf = d.buf[:end]
		}
		copy(d.buf[p.off:end], p.data)
		d.have = insertSpan(d.have, p.off, end)
		if len(d.have) > maxFragHoles {
			st.FragInvalid++
			r.kill(d)
			return nil
		}
	}
	if d.haveFirst && d.total >= 0 && len(d.have) == 1 && d.have[0].lo == 0 && d.have[0].hi == d.total {
		st.FragReassembled++
		buf := d.buf
		r.drop(d)
		d.buf = buf // no longer accounted: the caller parses it and lets it go
		return d
	}
	return nil
}

// insertSpan merges [lo,hi) into sorted disjoint spans (the caller rejected overlaps,
// so it only joins with adjacent neighbours).
func insertSpan(have []span, lo, hi int) []span {
	i := 0
	for i < len(have) && have[i].hi < lo {
		i++
	}
	switch {
	case i < len(have) && have[i].hi == lo:
		have[i].hi = hi
		if i+1 < len(have) && have[i+1].lo == hi {
			have[i].hi = have[i+1].hi
			have = append(have[:i+1], have[i+2:]...)
		}
	case i < len(have) && have[i].lo == hi:
		have[i].lo = lo
	default:
		have = append(have, span{})
		copy(have[i+1:], have[i:])
		have[i] = span{lo, hi}
	}
	return have
}
