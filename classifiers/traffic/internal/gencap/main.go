// Command gencap writes a large synthetic pcapng for Ward's network benchmark: many
// concurrent TLS (post-quantum ClientHellos split over two segments), QUIC v1 (hello over
// two Initials plus a server Initial), DNS, HTTP and STUN/RTP sessions with bulk data,
// interleaved like a busy clinic uplink. The flow structure, names, addresses, sizes and
// order are fixed by -seed; only key-share bytes inside the hellos vary between runs.
package main

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/crypto/cryptobyte"

	"github.com/ward-dlp/ward/classifiers/catalog"
	"github.com/ward-dlp/ward/classifiers/traffic/synth"
)

func main() {
	out := flag.String("o", "bench.pcapng", "output pcapng")
	packets := flag.Int("packets", 1_000_000, "frames to write")
	seed := flag.Uint64("seed", 1, "generator seed")
	concurrent := flag.Int("concurrent", 2000, "sessions interleaved at once")
	flag.Parse()
	if err := run(*out, *packets, *seed, *concurrent); err != nil {
		slog.Error("gencap", "err", err)
		os.Exit(1)
	}
}

type session struct {
	steps []func() error
	i     int
}

type gen struct {
	w     *synth.Writer
	rng   *rand.Rand
	names []string
	tls   map[string][]byte // cached ClientHello records per name (generation speed)
	quic  map[string][]byte
	sh    []byte
	qsh   []byte
}

func run(path string, n int, seed uint64, concurrent int) error {
	cat, err := catalog.Builtin()
	if err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 4<<20)
	w, err := synth.NewWriter(bw, time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC))
	if err != nil {
		return err
	}
	g := &gen{w: w, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), tls: map[string][]byte{}, quic: map[string][]byte{}}
	for _, a := range cat.Apps() {
		for _, d := range a.Domains {
			g.names = append(g.names, "www."+d, d)
		}
	}
	for i := 0; i < 200; i++ {
		g.names = append(g.names, fmt.Sprintf("host%d.example-%d.com", i, i%17))
	}
	g.sh = serverHello()
	g.qsh = g.sh
	var active []*session
	for w.Frames < n {
		for len(active) < concurrent {
			active = append(active, g.newSession())
		}
		k := g.rng.IntN(len(active))
		s := active[k]
		if err := s.steps[s.i](); err != nil {
			return err
		}
		s.i++
		w.Now = w.Now.Add(time.Duration(5+g.rng.IntN(20)) * time.Microsecond)
		if s.i == len(s.steps) {
			active[k] = active[len(active)-1]
			active = active[:len(active)-1]
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "gencap: wrote %d frames to %s\n", w.Frames, path)
	return nil
}

func serverHello() []byte {
	var b cryptobyte.Builder
	b.AddUint8(2)
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint16(0x0303)
		b.AddBytes(make([]byte, 32))
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(make([]byte, 32)) })
		b.AddUint16(0x1301)
		b.AddUint8(0)
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			b.AddUint16(0x002b)
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint16(0x0304) })
			b.AddUint16(0x0033)
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
				b.AddUint16(0x001d)
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(make([]byte, 32)) })
			})
		})
	})
	return b.BytesOrPanic()
}

func (g *gen) addr(v6 bool, clientSide bool) netip.Addr {
	if v6 {
		var a [16]byte
		a[0], a[1] = 0x20, 0x01
		a[2], a[3] = 0x0d, 0xb8
		if clientSide {
			a[4] = 1
		}
		binary.BigEndian.PutUint64(a[8:], g.rng.Uint64()%50000)
		return netip.AddrFrom16(a)
	}
	if clientSide {
		return netip.AddrFrom4([4]byte{10, 20, byte(g.rng.IntN(4)), byte(1 + g.rng.IntN(250))})
	}
	return netip.AddrFrom4([4]byte{byte(100 + g.rng.IntN(100)), byte(g.rng.IntN(256)), byte(g.rng.IntN(256)), byte(1 + g.rng.IntN(250))})
}

func (g *gen) tlsHello(name string) []byte {
	if h, ok := g.tls[name]; ok {
		return h
	}
	h, err := synth.TLSClientHello(&tls.Config{ServerName: name, NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		panic(err)
	}
	g.tls[name] = h
	return h
}

func (g *gen) quicHello(name string) []byte {
	if h, ok := g.quic[name]; ok {
		return h
	}
	h, err := synth.QUICClientHello(&tls.Config{ServerName: name, NextProtos: []string{"h3"}, MinVersion: tls.VersionTLS13})
	if err != nil {
		panic(err)
	}
	g.quic[name] = h
	return h
}

var resolver = netip.MustParseAddrPort("10.20.255.53:53")

// dnsSteps resolves name to ip from client.
func (g *gen) dnsSteps(client netip.Addr, name string, ip netip.Addr) []func() error {
	cl := netip.AddrPortFrom(client, uint16(20000+g.rng.IntN(40000)))
	q := new(dns.Msg)
	qt := dns.TypeA
	if ip.Is6() {
		qt = dns.TypeAAAA
	}
	q.SetQuestion(dns.Fqdn(name), qt)
	q.Id = uint16(g.rng.Uint32())
	r := new(dns.Msg)
	r.SetReply(q)
	if ip.Is6() {
		r.Answer = append(r.Answer, &dns.AAAA{Hdr: dns.RR_Header{Name: dns.Fqdn(name), Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: 300}, AAAA: ip.AsSlice()})
	} else {
		r.Answer = append(r.Answer, &dns.A{Hdr: dns.RR_Header{Name: dns.Fqdn(name), Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300}, A: ip.AsSlice()})
	}
	qb, _ := q.Pack()
	rb, _ := r.Pack()
	res := resolver
	if client.Is6() {
		res = netip.MustParseAddrPort("[2001:db8:1::53]:53")
	}
	return []func() error{
		func() error { return g.w.UDP(cl, res, qb) },
		func() error { return g.w.UDP(res, cl, rb) },
	}
}

func (g *gen) newSession() *session {
	v6 := g.rng.IntN(5) == 0
	client := g.addr(v6, true)
	server := g.addr(v6, false)
	name := g.names[g.rng.IntN(len(g.names))]
	s := &session{}
	switch k := g.rng.IntN(100); {
	case k < 45:
		s.steps = append(g.dnsSteps(client, name, server), g.tcpTLS(client, server, name)...)
	case k < 70:
		s.steps = append(g.dnsSteps(client, name, server), g.quicSession(client, server, name)...)
	case k < 82:
		s.steps = g.dnsSteps(client, name, server)
	case k < 92:
		s.steps = g.httpSession(client, server, name)
	default:
		s.steps = g.mediaSession(client, server)
	}
	return s
}

func (g *gen) tcpTLS(client, server netip.Addr, name string) []func() error {
	cl := netip.AddrPortFrom(client, uint16(20000+g.rng.IntN(40000)))
	sv := netip.AddrPortFrom(server, 443)
	hello := g.tlsHello(name)
	cseq, sseq := g.rng.Uint32(), g.rng.Uint32()
	w := g.w
	var steps []func() error
	seg := func(from, to netip.AddrPort, seq, ack *uint32, fl synth.TCPFlags, data []byte) {
		steps = append(steps, func() error {
			err := w.TCP(from, to, *seq, *ack, fl, data)
			*seq += uint32(len(data))
			if fl.SYN || fl.FIN {
				*seq++
			}
			return err
		})
	}
	seg(cl, sv, &cseq, &sseq, synth.TCPFlags{SYN: true}, nil)
	seg(sv, cl, &sseq, &cseq, synth.TCPFlags{SYN: true, ACK: true}, nil)
	seg(cl, sv, &cseq, &sseq, synth.TCPFlags{ACK: true}, nil)
	for off := 0; off < len(hello); off += 1448 {
		seg(cl, sv, &cseq, &sseq, synth.TCPFlags{ACK: true, PSH: true}, hello[off:min(off+1448, len(hello))])
	}
	shRec := append([]byte{22, 3, 3, byte(len(g.sh) >> 8), byte(len(g.sh))}, g.sh...)
	seg(sv, cl, &sseq, &cseq, synth.TCPFlags{ACK: true, PSH: true}, shRec)
	data := appData(1448, g.rng)
	up, down := 2+g.rng.IntN(10), 5+g.rng.IntN(40)
	for i := 0; i < max(up, down); i++ {
		if i < down {
			seg(sv, cl, &sseq, &cseq, synth.TCPFlags{ACK: true}, data)
		}
		if i < up {
			seg(cl, sv, &cseq, &sseq, synth.TCPFlags{ACK: true}, data[:200+g.rng.IntN(1200)])
		} else if i%2 == 0 {
			seg(cl, sv, &cseq, &sseq, synth.TCPFlags{ACK: true}, nil)
		}
	}
	seg(cl, sv, &cseq, &sseq, synth.TCPFlags{FIN: true, ACK: true}, nil)
	seg(sv, cl, &sseq, &cseq, synth.TCPFlags{FIN: true, ACK: true}, nil)
	seg(cl, sv, &cseq, &sseq, synth.TCPFlags{ACK: true}, nil)
	return steps
}

func appData(n int, rng *rand.Rand) []byte {
	b := make([]byte, n)
	b[0], b[1], b[2] = 23, 3, 3
	binary.BigEndian.PutUint16(b[3:], uint16(n-5))
	for i := 5; i < n; i++ {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func (g *gen) quicSession(client, server netip.Addr, name string) []func() error {
	cl := netip.AddrPortFrom(client, uint16(20000+g.rng.IntN(40000)))
	sv := netip.AddrPortFrom(server, 443)
	hello := g.quicHello(name)
	dcid := make([]byte, 8)
	binary.BigEndian.PutUint64(dcid, g.rng.Uint64())
	scid := []byte{byte(g.rng.Uint32()), 1, 2, 3}
	split := min(1100, len(hello))
	p1, err := synth.QUICInitial(1, dcid, scid, 0, false, []synth.CryptoFrame{{Offset: 0, Data: hello[:split]}})
	if err != nil {
		panic(err)
	}
	pkts := [][2]any{{true, p1}}
	if split < len(hello) {
		p2, _ := synth.QUICInitial(1, dcid, scid, 1, false, []synth.CryptoFrame{{Offset: split, Data: hello[split:]}})
		pkts = append(pkts, [2]any{true, p2})
	}
	s1, _ := synth.QUICInitialKeyed(1, dcid, scid, []byte{7, 7, 7, 7, 7, 7, 7, 7}, 0, true, []synth.CryptoFrame{{Offset: 0, Data: g.qsh}})
	pkts = append(pkts, [2]any{false, s1})
	short := make([]byte, 1200)
	for i := range short {
		short[i] = byte(g.rng.Uint32())
	}
	short[0] = 0x40 | short[0]&0x3f
	up, down := 3+g.rng.IntN(10), 10+g.rng.IntN(50)
	for i := 0; i < max(up, down); i++ {
		if i < down {
			pkts = append(pkts, [2]any{false, short})
		}
		if i < up {
			pkts = append(pkts, [2]any{true, short[:60+g.rng.IntN(300)]})
		}
	}
	var steps []func() error
	for _, p := range pkts {
		fromClient, b := p[0].(bool), p[1].([]byte)
		steps = append(steps, func() error {
			if fromClient {
				return g.w.UDP(cl, sv, b)
			}
			return g.w.UDP(sv, cl, b)
		})
	}
	return steps
}

func (g *gen) httpSession(client, server netip.Addr, name string) []func() error {
	cl := netip.AddrPortFrom(client, uint16(20000+g.rng.IntN(40000)))
	sv := netip.AddrPortFrom(server, 80)
	req := []byte("GET /index.html HTTP/1.1\r\nHost: " + name + "\r\nUser-Agent: curl/8.14\r\nAccept: */*\r\n\r\n")
	resp := append([]byte("HTTP/1.1 200 OK\r\nContent-Length: 8000\r\n\r\n"), make([]byte, 1400)...)
	c, s := g.rng.Uint32(), g.rng.Uint32()
	return []func() error{
		func() error { return g.w.TCP(cl, sv, c, 0, synth.TCPFlags{SYN: true}, nil) },
		func() error { return g.w.TCP(sv, cl, s, c+1, synth.TCPFlags{SYN: true, ACK: true}, nil) },
		func() error { return g.w.TCP(cl, sv, c+1, s+1, synth.TCPFlags{ACK: true, PSH: true}, req) },
		func() error { return g.w.TCP(sv, cl, s+1, c+1+uint32(len(req)), synth.TCPFlags{ACK: true}, resp) },
		func() error {
			return g.w.TCP(sv, cl, s+1+uint32(len(resp)), c+1+uint32(len(req)), synth.TCPFlags{ACK: true, FIN: true}, resp[:600])
		},
		func() error {
			return g.w.TCP(cl, sv, c+1+uint32(len(req)), s+2+uint32(len(resp))+600, synth.TCPFlags{ACK: true, FIN: true}, nil)
		},
	}
}

func (g *gen) mediaSession(client, server netip.Addr) []func() error {
	cl := netip.AddrPortFrom(client, uint16(50000+g.rng.IntN(10000)))
	sv := netip.AddrPortFrom(server, 3478)
	req := make([]byte, 20)
	binary.BigEndian.PutUint16(req, 1)
	binary.BigEndian.PutUint32(req[4:], 0x2112A442)
	steps := []func() error{func() error { return g.w.UDP(cl, sv, req) }}
	rtp := make([]byte, 160)
	rtp[0], rtp[1] = 0x80, 111
	ssrc := g.rng.Uint32()
	for i := 0; i < 100; i++ {
		steps = append(steps, func() error {
			binary.BigEndian.PutUint16(rtp[2:], uint16(i))
			binary.BigEndian.PutUint32(rtp[8:], ssrc)
			return g.w.UDP(cl, sv, rtp)
		})
	}
	return steps
}
