package netcap

import (
	"encoding/binary"
	"net/netip"
	"time"

	"github.com/ward-dlp/ward/agent/tlsplain"
	capprobe "github.com/ward-dlp/ward/bpf/netcap"
	tlsprobe "github.com/ward-dlp/ward/bpf/tlsplain"
	"github.com/ward-dlp/ward/classifiers/engine"
)

// PlainConfig configures payload sampling of plaintext TCP sends.
type PlainConfig struct {
	// Engine classifies the payload; required.
	Engine *engine.Engine
	// Tracker bounds the open sessions and their budgets, as for TLS plaintext.
	Tracker tlsplain.TrackerConfig
	// Done receives every finished sample, on the Joiner's goroutine. Done.Library is 0
	// (no TLS library); Done.Conn is the socket cookie.
	Done func(tlsplain.Done)
}

// PlainStats are the sampler's counters, for health events.
type PlainStats struct {
	Segments   uint64 // egress TCP segments with payload that were classified
	Bytes      uint64 // payload bytes classified
	Encrypted  uint64 // flows skipped because their first payload was a TLS record
	Gaps       uint64 // payload missing between captured segments (not captured, or lost)
	Retransmit uint64 // bytes already seen (retransmissions) that were skipped
	Sessions   uint64 // samples finished
}

// plainSampler feeds the payload the kernel captured at the start of each outbound TCP flow
// to the content classifiers, through the same per-connection tracker (one engine.Stream
// per socket) as TLS plaintext, so an HTTP POST or a raw TCP upload of a record is judged
// like the same bytes sent through OpenSSL. TLS flows are skipped (their plaintext comes
// from the library hooks, and ciphertext classifies as nothing); UDP is not sampled
// (QUIC/DTLS are encrypted, and a datagram's capture budget is a few packets).
type plainSampler struct {
	cfg   PlainConfig
	tr    *tlsplain.Tracker
	socks gens[uint64, *plainSock]
	stats PlainStats
	// proc names the process owning a socket cookie (0 when unknown).
	proc func(cookie uint64) (pid, uid uint32, comm string)
	// owners keeps the owner of sockets already closed whose sample is still open: the
	// joiner forgets a socket's process when its flow ends, the sample ends when idle.
	owners gens[uint64, owner]
}

type owner struct {
	pid, uid uint32
	comm     string
}

// plainSock is what the sampler keeps per socket between segments.
type plainSock struct {
	skip bool   // TLS: ignore the socket
	next uint32 // TCP sequence number of the next payload byte not yet classified
}

func newPlainSampler(cfg PlainConfig, maxSockets int) *plainSampler {
	return &plainSampler{cfg: cfg, tr: tlsplain.NewTracker(cfg.Engine, cfg.Tracker),
		socks: newGens[uint64, *plainSock](maxSockets), owners: newGens[uint64, owner](max(maxSockets/16, 64))}
}

// looksTLS reports whether a flow's first payload is a TLS record (handshake, alert, change
// cipher spec, application data: types 20..23, version 3.x).
func looksTLS(p []byte) bool {
	return len(p) >= 3 && p[0] >= 20 && p[0] <= 23 && p[1] == 3 && p[2] <= 4
}

// segment handles one captured egress TCP segment of socket cookie. l4 is the TCP header
// and what was captured after it; payloadLen is the segment's payload length on the wire
// (more than was captured when the packet was cut at the snap length).
func (s *plainSampler) segment(p capprobe.Packet, local, remote netip.AddrPort, l4 []byte, payloadLen int) {
	payload := l4[int(l4[12]>>4)*4:]
	if payloadLen <= 0 || len(payload) == 0 {
		return
	}
	payloadLen = max(payloadLen, len(payload))
	seq := binary.BigEndian.Uint32(l4[4:])
	st, ok := s.socks.get(p.Cookie)
	if !ok {
		st = &plainSock{next: seq}
		if looksTLS(payload) {
			st.skip = true
			s.stats.Encrypted++
		}
		s.socks.put(p.Cookie, st)
	}
	if st.skip {
		return
	}
	end := seq + uint32(payloadLen)
	// Sequence arithmetic is modulo 2^32: d < 0 means the segment starts with bytes already
	// classified (a retransmission).
	d := int32(seq - st.next)
	skipped := 0
	if d < 0 {
		old := int(-d)
		if old >= len(payload) {
			s.stats.Retransmit += uint64(min(old, payloadLen))
			if int32(end-st.next) > 0 {
				st.next = end
			}
			return
		}
		s.stats.Retransmit += uint64(old)
		payload, skipped = payload[old:], old
	}
	base := tlsprobe.Data{Time: p.Time, Conn: p.Cookie,
		Socket: tlsprobe.Socket{Cookie: p.Cookie, FD: -1, Local: local, Remote: remote}, SocketResolved: true}
	if d > 0 {
		// Bytes were sent that the capture did not see (past the packet budget, or lost):
		// classify what follows, and say the sample is incomplete.
		s.stats.Gaps++
		g := base
		g.Total, g.ReadFailed = uint32(d), true
		s.emit(s.tr.Apply(g))
	}
	seg := base
	seg.Total, seg.Bytes = uint32(payloadLen-skipped), payload
	seg.Truncated = len(payload) < payloadLen-skipped // cut at the snap length
	s.emit(s.tr.Apply(seg))
	s.stats.Segments++
	s.stats.Bytes += uint64(len(payload))
	if int32(end-st.next) > 0 {
		st.next = end
	}
}

// emit hands finished samples on, naming the socket's process: the connect record that
// says who owns the socket travels in another ring buffer and may be read after the first
// segments, so the process is looked up when the sample ends, not when it starts.
func (s *plainSampler) emit(ds []tlsplain.Done) {
	for _, d := range ds {
		s.stats.Sessions++
		if o, ok := s.owners.get(d.Conn); ok {
			d.PID, d.UID, d.Comm = o.pid, o.uid, o.comm
			s.owners.del(d.Conn)
		} else if s.proc != nil {
			d.PID, d.UID, d.Comm = s.proc(d.Conn)
		}
		if s.cfg.Done != nil {
			s.cfg.Done(d)
		}
	}
}

// tick reports samples idle for the tracker's idle time.
func (s *plainSampler) tick(now time.Time) { s.emit(s.tr.Tick(now)) }

// closed forgets a finished socket's sequence state and remembers its owner for the sample,
// which ends when it goes idle.
func (s *plainSampler) closed(cookie uint64) {
	st, ok := s.socks.get(cookie)
	if !ok {
		return
	}
	s.socks.del(cookie)
	if !st.skip && s.proc != nil {
		if pid, uid, comm := s.proc(cookie); pid != 0 {
			s.owners.put(cookie, owner{pid, uid, comm})
		}
	}
}

// flush reports every open sample.
func (s *plainSampler) flush() { s.emit(s.tr.Flush()) }

// tcpSegment returns the TCP header and captured payload of an IPv4/IPv6 packet (no IPv6
// extension headers, as parse) and the payload length on the wire from the packet length.
func tcpSegment(b []byte, wireLen uint32) (l4 []byte, payloadLen int, ok bool) {
	var ipLen int
	switch {
	case len(b) >= 20 && b[0]>>4 == 4 && b[9] == 6:
		ipLen = int(b[0]&0x0f) * 4
	case len(b) >= 40 && b[0]>>4 == 6 && b[6] == 6:
		ipLen = 40
	default:
		return nil, 0, false
	}
	if ipLen < 20 || len(b) < ipLen+20 {
		return nil, 0, false
	}
	l4 = b[ipLen:]
	hl := int(l4[12]>>4) * 4
	if hl < 20 || hl > len(l4) {
		return nil, 0, false
	}
	return l4, int(wireLen) - ipLen - hl, true
}
