package traffic

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
	"github.com/miekg/dns"

	"github.com/ward-dlp/ward/classifiers/traffic/synth"
)

// synthFrames returns the Ethernet frames a synth.Writer produced.
func synthFrames(t testing.TB, write func(w *synth.Writer)) [][]byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := synth.NewWriter(&buf, time.Unix(1_700_000_000, 0))
	if err != nil {
		t.Fatal(err)
	}
	write(w)
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	ng, err := newNgReaderForTest2(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for {
		d, _, err := ng.ReadPacketData()
		if err != nil {
			return out
		}
		out = append(out, d)
	}
}

func ipChecksum(h []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(h); i += 2 {
		s += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// fragmentFrame splits the IP payload of an Ethernet frame into fragments carrying size
// bytes each (a multiple of 8), the way a host's IP layer does: IPv4 header copies with
// offset and MF, or an IPv6 fragment header after the fixed header.
func fragmentFrame(t testing.TB, eth []byte, size int, id uint32) [][]byte {
	t.Helper()
	ip := eth[14:]
	var hdr, payload []byte
	v6 := ip[0]>>4 == 6
	if v6 {
		hdr, payload = ip[:40], ip[40:40+int(binary.BigEndian.Uint16(ip[4:]))]
	} else {
		ihl := int(ip[0]&0xf) * 4
		hdr, payload = ip[:ihl], ip[ihl:binary.BigEndian.Uint16(ip[2:])]
	}
	var out [][]byte
	for off := 0; off < len(payload); off += size {
		chunk := payload[off:min(off+size, len(payload))]
		more := off+size < len(payload)
		f := append([]byte{}, eth[:14]...)
		h := append([]byte{}, hdr...)
		if v6 {
			nh := h[6]
			h[6] = ipProtoFragment
			binary.BigEndian.PutUint16(h[4:], uint16(8+len(chunk)))
			fo := uint16(off/8) << 3
			if more {
				fo |= 1
			}
			fh := []byte{nh, 0, byte(fo >> 8), byte(fo), 0, 0, 0, 0}
			binary.BigEndian.PutUint32(fh[4:], id)
			h = append(h, fh...)
		} else {
			binary.BigEndian.PutUint16(h[2:], uint16(len(h)+len(chunk)))
			binary.BigEndian.PutUint16(h[4:], uint16(id))
			ff := uint16(off / 8)
			if more {
				ff |= 0x2000
			}
			binary.BigEndian.PutUint16(h[6:], ff)
			h[10], h[11] = 0, 0
			binary.BigEndian.PutUint16(h[10:], ipChecksum(h))
		}
		f = append(append(f, h...), chunk...)
		out = append(out, f)
	}
	return out
}

// bigDNSAnswer is a real DNS response (miekg/dns) for name with n A records from
// 198.51.100.1 up: with n = 80 it is ~1.3 KB, more than a 576-byte path carries whole.
func bigDNSAnswer(t testing.TB, name string, n int) []byte {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	m.Response = true
	for i := 0; i < n; i++ {
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: dns.Fqdn(name), Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300},
			A: net.IPv4(198, 51, 100, byte(1+i))})
	}
	m.Compress = false
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type fragCase struct {
	name  string
	order func(frags [][]byte) [][]byte
	ok    bool // the datagram must be reassembled
	check func(t *testing.T, st Stats)
}

var fragOrders = []fragCase{
	{name: "in-order", ok: true, order: func(f [][]byte) [][]byte { return f }},
	{name: "reversed", ok: true, order: func(f [][]byte) [][]byte { g := slices.Clone(f); slices.Reverse(g); return g }},
	{name: "duplicated", ok: true, order: func(f [][]byte) [][]byte {
		// every fragment twice, the last one first: exact repeats are ignored
		g := [][]byte{f[len(f)-1], f[len(f)-1]}
		for _, x := range f[:len(f)-1] {
			g = append(g, x, x)
		}
		return g
	}, check: func(t *testing.T, st Stats) {
		if st.FragDuplicates == 0 || st.FragOverlaps != 0 {
			t.Errorf("duplicates %d overlaps %d", st.FragDuplicates, st.FragOverlaps)
		}
	}},
	{name: "overlapping", ok: false, order: func(f [][]byte) [][]byte {
		// a crafted fragment rewrites bytes 8..15 of the first with other data
		return append([][]byte{f[0], overlapFragment(f[0])}, f[1:]...)
	}, check: func(t *testing.T, st Stats) {
		if st.FragOverlaps != 2 || st.FragReassembled != 0 { // the DNS and the QUIC datagram
			t.Errorf("overlaps %d reassembled %d", st.FragOverlaps, st.FragReassembled)
		}
	}},
	{name: "never-completed", ok: false, order: func(f [][]byte) [][]byte { return append([][]byte{f[0]}, f[2:]...) },
		check: func(t *testing.T, st Stats) {
			if st.FragTimeouts != 2 || st.FragReassembled != 0 {
				t.Errorf("timeouts %d reassembled %d", st.FragTimeouts, st.FragReassembled)
			}
		}},
}

// overlapFragment derives from the first fragment of a datagram one that starts at byte
// 8 and carries 16 bytes of different data (MF set).
func overlapFragment(first []byte) []byte {
	f := bytes.Clone(first)
	ip := f[14:]
	if ip[0]>>4 == 6 {
		binary.BigEndian.PutUint16(ip[4:], 8+16)
		fh := ip[40:48]
		binary.BigEndian.PutUint16(fh[2:], 1<<3|1)
		for i := 48; i < 64; i++ {
			ip[i] ^= 0xff
		}
		return f[:14+64]
	}
	ihl := int(ip[0]&0xf) * 4
	binary.BigEndian.PutUint16(ip[2:], uint16(ihl+16))
	binary.BigEndian.PutUint16(ip[6:], 0x2000|1)
	for i := ihl; i < ihl+16; i++ {
		ip[i] ^= 0xff
	}
	return f[:14+ihl+16]
}

// TestFragmentedDNSAndQUIC: a DNS answer and a QUIC Initial, each split into IP
// fragments (IPv4 and IPv6), in order, reversed, duplicated, overlapping and incomplete.
// Reassembled, the DNS answer names a later flow to one of its addresses and the QUIC
// ClientHello yields its SNI; overlapping or incomplete datagrams yield nothing and are
// counted.
func TestFragmentedDNSAndQUIC(t *testing.T) {
	hello, err := synth.QUICClientHello(&tls.Config{ServerName: "www.dropbox.com", NextProtos: []string{"h3"}, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	initial, err := synth.QUICInitial(1, []byte{9, 8, 7, 6, 5, 4, 3, 2}, nil, 0, false, []synth.CryptoFrame{{Offset: 0, Data: hello}})
	if err != nil {
		t.Fatal(err)
	}
	answer := bigDNSAnswer(t, "www.wetransfer.com", 80)
	for _, fam := range []struct{ client, resolver, quicServer string }{
		{"10.0.0.7", "10.0.0.53", "192.0.2.80"},
		{"2001:db8::7", "2001:db8::53", "2001:db8::80"},
	} {
		cl, res := netip.MustParseAddr(fam.client), netip.MustParseAddr(fam.resolver)
		frames := synthFrames(t, func(w *synth.Writer) {
			_ = w.UDP(netip.AddrPortFrom(res, 53), netip.AddrPortFrom(cl, 33333), answer)
			_ = w.UDP(netip.AddrPortFrom(cl, 44444), netip.MustParseAddrPort(net.JoinHostPort(fam.quicServer, "443")), initial)
			// a later connection to an answered address, with no name of its own
			_ = w.TCP(netip.MustParseAddrPort("10.0.0.8:40000"), netip.MustParseAddrPort("198.51.100.42:443"), 1, 0, synth.TCPFlags{SYN: true}, nil)
		})
		dnsFrags := fragmentFrame(t, frames[0], 512, 0x1234)
		quicFrags := fragmentFrame(t, frames[1], 400, 0xabcdef)
		if len(dnsFrags) < 3 || len(quicFrags) < 3 {
			t.Fatalf("want at least 3 fragments, got %d and %d", len(dnsFrags), len(quicFrags))
		}
		for _, tc := range fragOrders {
			t.Run(fam.client+"/"+tc.name, func(t *testing.T) {
				a, col := newTestAnalyzer(t, "", nil)
				ts := time.Unix(1_700_000_000, 0)
				feed := func(fs [][]byte) {
					for _, f := range fs {
						ts = ts.Add(time.Millisecond)
						a.Packet(ts, layers.LinkTypeEthernet, f)
					}
				}
				feed(tc.order(dnsFrags))
				feed(tc.order(quicFrags))
				ts = ts.Add(time.Minute) // past the reassembly timeout: pending datagrams expire
				feed(frames[2:])
				a.Flush()
				st := a.Stats()
				if st.Panics != 0 || st.DecodeErrors != 0 {
					t.Fatalf("stats %+v", st)
				}
				var dnsRec, quicRec, later *FlowRecord
				for i, r := range col.recs {
					switch r.Client.Port() {
					case 33333:
						dnsRec = &col.recs[i]
					case 44444:
						quicRec = &col.recs[i]
					case 40000:
						later = &col.recs[i]
					}
				}
				if !tc.ok {
					if dnsRec != nil || quicRec != nil || later == nil || later.Name != "" {
						t.Errorf("an unreassembled datagram produced records: dns %+v quic %+v later %+v", dnsRec, quicRec, later)
					}
				} else {
					if st.FragReassembled != 2 {
						t.Errorf("reassembled %d datagrams, want 2 (stats %+v)", st.FragReassembled, st)
					}
					if dnsRec == nil || dnsRec.DNSQuery != "www.wetransfer.com" || dnsRec.BytesDown != uint64(len(frames[0])-14) {
						t.Errorf("dns flow: %+v (want %d bytes down)", dnsRec, len(frames[0])-14)
					}
					if quicRec == nil || quicRec.SNI != "www.dropbox.com" || quicRec.App != "dropbox" || quicRec.QUICVersion != "v1" {
						t.Errorf("quic flow: %+v", quicRec)
					}
					if later == nil || later.Name != "www.wetransfer.com" || later.NameSource != SourceDNS {
						t.Errorf("flow to an answered address: %+v", later)
					}
				}
				if st.Fragments == 0 {
					t.Error("fragments not counted")
				}
				if tc.check != nil {
					tc.check(t, st)
				}
			})
		}
	}
}

// piece builds a fragment for the reassembler unit tests.
func piece(id uint32, off int, more bool, data []byte) fragPiece {
	return fragPiece{id: id, proto: 17, off: off, more: more, hdrLen: 20, data: data}
}

// TestReassemblerRules pins the policy: duplicates, overlaps, sizes, bounds and expiry.
func TestReassemblerRules(t *testing.T) {
	src, dst := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	seq := func(n int, seed byte) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = seed + byte(i)
		}
		return b
	}
	data := seq(64, 1)
	newR := func() reassembler { return newReassembler(4, 1<<20, int64(30*time.Second)) }

	t.Run("complete out of order", func(t *testing.T) {
		r, st := newR(), Stats{}
		if d := r.add(piece(1, 32, false, data[32:]), src, dst, 0, &st); d != nil {
			t.Fatal("complete too early")
		}
		if d := r.add(piece(1, 16, true, data[16:32]), src, dst, 0, &st); d != nil {
			t.Fatal("complete too early")
		}
		d := r.add(piece(1, 0, true, data[:16]), src, dst, 0, &st)
		if d == nil || !bytes.Equal(d.buf[:d.total], data) || d.nextHdr != 17 || st.FragReassembled != 1 || len(r.m) != 0 || r.bytes != 0 {
			t.Fatalf("d %+v st %+v pending %d bytes %d", d, st, len(r.m), r.bytes)
		}
	})
	t.Run("partial overlap with equal bytes is still an overlap", func(t *testing.T) {
		r, st := newR(), Stats{}
		r.add(piece(1, 0, true, data[:16]), src, dst, 0, &st)
		r.add(piece(1, 8, true, data[8:24]), src, dst, 0, &st)
		if d := r.add(piece(1, 24, false, data[24:]), src, dst, 0, &st); d != nil || st.FragOverlaps != 1 {
			t.Fatalf("overlap accepted: %+v", st)
		}
		// the datagram stays dead: a clean retransmission of the rest does not revive it
		if d := r.add(piece(1, 16, true, data[16:24]), src, dst, 0, &st); d != nil {
			t.Fatal("dead datagram completed")
		}
	})
	t.Run("conflicting ends", func(t *testing.T) {
		r, st := newR(), Stats{}
		r.add(piece(1, 32, false, data[32:40]), src, dst, 0, &st)
		r.add(piece(1, 48, false, data[48:56]), src, dst, 0, &st)
		if st.FragOverlaps != 1 {
			t.Fatalf("two different ends: %+v", st)
		}
		r, st = newR(), Stats{}
		r.add(piece(1, 32, false, data[32:]), src, dst, 0, &st)
		r.add(piece(1, 48, false, data[48:56]), src, dst, 0, &st) // repeats bytes, claims another end
		if st.FragOverlaps != 1 || st.FragDuplicates != 0 {
			t.Fatalf("an end inside the data: %+v", st)
		}
	})
	t.Run("data beyond the end", func(t *testing.T) {
		r, st := newR(), Stats{}
		r.add(piece(1, 32, false, data[32:48]), src, dst, 0, &st)
		r.add(piece(1, 48, true, data[48:56]), src, dst, 0, &st)
		if st.FragOverlaps != 1 {
			t.Fatalf("fragment past the last one: %+v", st)
		}
	})
	t.Run("invalid sizes", func(t *testing.T) {
		r, st := newR(), Stats{}
		r.add(piece(1, 0, true, data[:12]), src, dst, 0, &st)      // not a multiple of 8
		r.add(piece(2, 0, true, nil), src, dst, 0, &st)            // empty, more to come
		r.add(piece(3, 65528, false, data[:16]), src, dst, 0, &st) // past 64 KiB
		r.add(fragPiece{id: 4, data: data, truncated: true}, src, dst, 0, &st)
		if st.FragInvalid != 4 || r.bytes != 0 {
			t.Fatalf("invalid %d bytes %d", st.FragInvalid, r.bytes)
		}
	})
	t.Run("bounds and expiry", func(t *testing.T) {
		r, st := newR(), Stats{}
		for id := uint32(0); id < 10; id++ {
			r.add(piece(id, 8, true, data[:8]), src, dst, int64(id)*int64(time.Second), &st)
		}
		if len(r.m) != 4 || st.FragEvicted != 6 {
			t.Fatalf("pending %d evicted %d", len(r.m), st.FragEvicted)
		}
		r.expire(int64(40*time.Second), &st) // ids 6..9 started at 6..9 s
		if len(r.m) != 0 || st.FragTimeouts != 4 || r.bytes != 0 || r.head != nil || r.tail != nil {
			t.Fatalf("pending %d timeouts %d bytes %d", len(r.m), st.FragTimeouts, r.bytes)
		}
		small := newReassembler(100, 4096, int64(time.Minute))
		for id := uint32(0); id < 8; id++ {
			small.add(piece(id, 0, true, seq(1024, byte(id))), src, dst, 0, &st)
			if small.bytes > 4096 {
				t.Fatalf("buffered %d bytes past the 4096 bound", small.bytes)
			}
		}
	})
	t.Run("keys", func(t *testing.T) {
		r, st := newR(), Stats{}
		// same ID from another source, or (IPv4) another protocol, is another datagram
		r.add(piece(7, 0, true, data[:16]), src, dst, 0, &st)
		r.add(piece(7, 0, true, data[16:32]), dst, src, 0, &st)
		p := piece(7, 0, true, data[16:32])
		p.proto = 6
		r.add(p, src, dst, 0, &st)
		if len(r.m) != 3 || st.FragOverlaps != 0 {
			t.Fatalf("pending %d overlaps %d", len(r.m), st.FragOverlaps)
		}
	})
}

// TestAtomicFragment: an IPv6 fragment header with offset 0 and M clear (RFC 6946) is
// processed as the whole packet, without touching the reassembler.
func TestAtomicFragment(t *testing.T) {
	frames := synthFrames(t, func(w *synth.Writer) {
		_ = w.UDP(netip.MustParseAddrPort("[2001:db8::53]:53"), netip.MustParseAddrPort("[2001:db8::7]:33333"), bigDNSAnswer(t, "www.dropbox.com", 2))
	})
	f := fragmentFrame(t, frames[0], 1<<16, 99)
	if len(f) != 1 {
		t.Fatalf("%d fragments", len(f))
	}
	a, col := newTestAnalyzer(t, "", nil)
	a.Packet(time.Unix(1_700_000_000, 0), layers.LinkTypeEthernet, f[0])
	a.Flush()
	if st := a.Stats(); len(col.recs) != 1 || col.recs[0].DNSQuery != "www.dropbox.com" || st.Fragments != 0 || len(a.frags.m) != 0 {
		t.Fatalf("records %+v stats %+v", col.recs, st)
	}
}

// fragOp is one step of a FuzzReassembler input, 5 bytes on the wire:
// [id:2 v6:1 more:1 advance:4] [offset/8 : 16, high 3 bits ignored] [len low 8] [len high 3, fill 5].
// Fragment data is generated from fill and the offset, so equal fills give equal bytes
// (duplicates) and different fills conflicting ones (overlaps).
type fragOp struct {
	id      uint8
	v6      bool
	more    bool
	advance uint8 // ×100 ms of packet time before this fragment
	off8    uint16
	length  int
	fill    uint8
}

func (o fragOp) encode(b []byte) []byte {
	h := o.id&3 | o.advance<<4
	if o.v6 {
		h |= 4
	}
	if o.more {
		h |= 8
	}
	return append(b, h, byte(o.off8>>8), byte(o.off8), byte(o.length), byte(o.length>>8)&7|o.fill<<3)
}

func decodeFragOp(b []byte) fragOp {
	return fragOp{id: b[0] & 3, v6: b[0]&4 != 0, more: b[0]&8 != 0, advance: b[0] >> 4,
		off8: binary.BigEndian.Uint16(b[1:]) & 0x1fff, length: int(b[3]) | int(b[4]&7)<<8, fill: b[4] >> 3}
}

func (o fragOp) data() []byte {
	d := make([]byte, o.length)
	for i := range d {
		d[i] = o.fill*37 + byte(int(o.off8)*8+i)
	}
	return d
}

// fragSeeds are op sequences for the corpus: complete in order and reversed, duplicated,
// overlapping, conflicting ends, never completed, oversized, and a flood past the bounds.
func fragSeeds() map[string][]byte {
	seq := func(ops ...fragOp) []byte {
		var b []byte
		for _, o := range ops {
			b = o.encode(b)
		}
		return b
	}
	three := []fragOp{{off8: 0, length: 512, more: true}, {off8: 64, length: 512, more: true}, {off8: 128, length: 100}}
	flood := []fragOp{}
	for i := 0; i < 40; i++ {
		flood = append(flood, fragOp{id: uint8(i), v6: i%2 == 0, off8: uint16(i * 100), length: 1024, more: true, advance: 1})
	}
	return map[string][]byte{
		"in-order":    seq(three...),
		"reversed":    seq(three[2], three[1], three[0]),
		"duplicated":  seq(three[0], three[0], three[2], three[1], three[1]),
		"overlap":     seq(three[0], fragOp{off8: 1, length: 16, more: true, fill: 1}, three[1], three[2]),
		"overlap-v6":  seq(fragOp{v6: true, length: 64, more: true}, fragOp{v6: true, off8: 4, length: 64, more: true, fill: 3}, fragOp{v6: true, off8: 8, length: 8}),
		"two-ends":    seq(three[2], fragOp{off8: 130, length: 8}, three[0], three[1]),
		"incomplete":  seq(three[0], three[2], fragOp{id: 1, advance: 15, length: 8}, fragOp{id: 2, advance: 15, length: 8}),
		"oversized":   seq(fragOp{off8: 8190, length: 2000}, fragOp{length: 8, more: true}),
		"interleaved": seq(three[0], fragOp{id: 1, v6: true, length: 8, more: true}, three[1], fragOp{id: 1, v6: true, off8: 1, length: 3}, three[2]),
		"flood":       seq(flood...),
	}
}

// FuzzReassembler drives the reassembler with arbitrary fragment sequences (several
// datagrams, both families, packet time moving on) under small bounds, and checks its
// invariants after every step: memory and datagram bounds hold, the byte accounting and
// the age list agree with the table, and a completed datagram has its announced length
// and contains the fragment that completed it.
func FuzzReassembler(f *testing.F) {
	for _, s := range fragSeeds() {
		f.Add(s)
	}
	src4, dst4 := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	src6, dst6 := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
	f.Fuzz(func(t *testing.T, b []byte) {
		r := newReassembler(8, 64<<10, int64(time.Second))
		var st Stats
		now := int64(0)
		for ; len(b) >= 5; b = b[5:] {
			o := decodeFragOp(b)
			now += int64(o.advance) * int64(100*time.Millisecond)
			r.expire(now, &st)
			p := fragPiece{v6: o.v6, id: uint32(o.id), proto: 17, off: int(o.off8) * 8, more: o.more, hdrLen: 20, data: o.data()}
			src, dst := src4, dst4
			if o.v6 {
				src, dst = src6, dst6
			}
			if d := r.add(p, src, dst, now, &st); d != nil {
				end := p.off + len(p.data)
				if d.total <= 0 || d.total > maxFragPayload || len(d.buf) < d.total || end > d.total || !bytes.Equal(d.buf[p.off:end], p.data) || !d.haveFirst {
					t.Fatalf("completed datagram: total %d buf %d piece [%d,%d)", d.total, len(d.buf), p.off, end)
				}
				if _, ok := r.m[d.key]; ok {
					t.Fatal("completed datagram still pending")
				}
			}
			n, sum := 0, 0
			for d := r.head; d != nil; d = d.next {
				n++
				sum += cap(d.buf)
				if r.m[d.key] != d {
					t.Fatal("age list and table disagree")
				}
				if len(d.have) > maxFragHoles {
					t.Fatalf("%d holes", len(d.have))
				}
				for i, s := range d.have {
					if s.lo >= s.hi || s.hi > len(d.buf) || i > 0 && d.have[i-1].hi >= s.lo {
						t.Fatalf("spans %v over %d bytes", d.have, len(d.buf))
					}
				}
			}
			if n != len(r.m) || sum != r.bytes || r.bytes > r.maxBytes || len(r.m) > r.maxDatagrams {
				t.Fatalf("list %d table %d bytes %d/%d (max %d)", n, len(r.m), sum, r.bytes, r.maxBytes)
			}
		}
	})
}
