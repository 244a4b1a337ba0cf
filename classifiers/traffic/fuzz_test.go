package traffic

import (
	"bytes"
	"crypto/tls"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/miekg/dns"

	"github.com/ward-dlp/ward/classifiers/catalog"
	"github.com/ward-dlp/ward/classifiers/traffic/synth"
)

// Seed corpora live in testdata/fuzz/<Target>/ (regenerate with WARD_WRITE_SEEDS=1 go test
// -run TestWriteFuzzSeeds); f.Add adds a few more in code.

func FuzzClientHello(f *testing.F) {
	f.Add([]byte{1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		ch, err := ParseClientHello(b, false)
		if err == nil {
			_ = ch.JA4('t')
			_ = ch.MaxVersion()
		}
		if ch, err := ParseClientHello(b, true); err == nil {
			_ = ch.JA4('d')
		}
		_, _, _ = tlsHandshake(b)
		_, _ = ParseServerHello(b, false)
		_, _ = dtlsClientHello(b)
	})
}

func FuzzQUICInitial(f *testing.F) {
	f.Add([]byte{0xc0, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0x41, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		q := newQUICState()
		var scratch []byte
		_ = q.datagram(0, b, &scratch)
		_ = q.datagram(1, b, &scratch)
		// a second datagram continuing the same state
		if len(b) > 40 {
			_ = q.datagram(0, b[len(b)/2:], &scratch)
		}
		_ = cryptoFrames(b, func(uint64, []byte) {})
	})
}

func FuzzDNS(f *testing.F) {
	f.Add([]byte{0, 1, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 1, 2, 3, 4})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseDNS(b)
		if err == nil && len(m.Question) > 255 {
			t.Fatalf("name longer than 255: %d", len(m.Question))
		}
		_ = echPublicName(b)
	})
}

func FuzzSTUN(f *testing.F) {
	f.Add(unhex(f, rfc5769IPv4Response))
	f.Add(unhex(f, rfc5769IPv6Response))
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, err := ParseSTUN(b, true); err == nil && m.Len > len(b) {
			t.Fatalf("length %d beyond input %d", m.Len, len(b))
		}
		_ = isChannelData(b)
		var tr rtpTracker
		tr.observe(b)
	})
}

func FuzzHTTPHost(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, _ := ParseHTTPHost(b)
		if h != "" && !validHostname([]byte(h)) && !bytes.Contains([]byte(h), []byte(":")) {
			t.Fatalf("invalid host %q returned", h)
		}
		_ = looksHTTP(b)
	})
}

// FuzzAnalyzer drives whole frames through the pipeline as several link types, then a
// TCP and UDP payload towards the ports with parsers, with one analyzer kept across
// inputs (state carries over like on a real tap).
func FuzzAnalyzer(f *testing.F) {
	cat, err := catalog.Builtin()
	if err != nil {
		f.Fatal(err)
	}
	a, err := New(Config{Catalog: cat, MaxFlows: 1024, OnRecord: func(FlowRecord) {}, OnDetection: func(Detection) {}})
	if err != nil {
		f.Fatal(err)
	}
	// IP fragments of a DNS answer (IPv4 and IPv6): the analyzer lives across inputs, so
	// fragments of different inputs meet in its reassembler.
	frames := synthFrames(f, func(w *synth.Writer) {
		ans := bigDNSAnswer(f, "www.dropbox.com", 40)
		_ = w.UDP(netip.MustParseAddrPort("10.0.0.53:53"), netip.MustParseAddrPort("10.0.0.7:3333"), ans)
		_ = w.UDP(netip.MustParseAddrPort("[2001:db8::53]:53"), netip.MustParseAddrPort("[2001:db8::7]:3333"), ans)
	})
	for _, fr := range frames {
		for _, frag := range fragmentFrame(f, fr, 256, 77) {
			f.Add(frag)
		}
	}
	var w bytes.Buffer
	ts := time.Unix(1_700_000_000, 0)
	f.Fuzz(func(t *testing.T, b []byte) {
		ts = ts.Add(time.Millisecond)
		for _, lt := range []layers.LinkType{layers.LinkTypeEthernet, layers.LinkTypeRaw, layers.LinkTypeLinuxSLL, layers.LinkTypeLinuxSLL2, layers.LinkTypeNull} {
			a.Packet(ts, lt, b)
		}
		// Same bytes as L4 payload on interesting ports.
		w.Reset()
		sw, err := synth.NewWriter(&w, ts)
		if err != nil {
			t.Fatal(err)
		}
		cl, _ := netip.ParseAddrPort("10.0.0.1:40000")
		for _, port := range []uint16{443, 53, 3478, 80, 853} {
			sv := netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), port)
			_ = sw.TCP(cl, sv, 1, 1, synth.TCPFlags{ACK: true}, b)
			_ = sw.UDP(cl, sv, b)
		}
		_ = sw.Flush()
		if _, err := ReadCapture(&w, a); err != nil {
			t.Fatal(err)
		}
		if a.Stats().Panics != 0 {
			t.Fatalf("analyzer panicked (recovered): %+v", a.Stats())
		}
	})
}

// TestWriteFuzzSeeds regenerates testdata/fuzz seeds from real protocol messages.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("WARD_WRITE_SEEDS") == "" {
		t.Skip("set WARD_WRITE_SEEDS=1 to regenerate fuzz seed corpora")
	}
	write := func(target, name string, b []byte) {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		var s bytes.Buffer
		s.WriteString("go test fuzz v1\n[]byte(")
		s.WriteString(goQuote(b))
		s.WriteString(")\n")
		if err := os.WriteFile(filepath.Join(dir, name), s.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rec, err := synth.TLSClientHello(&tls.Config{ServerName: "chatgpt.com", NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range fragSeeds() {
		write("FuzzReassembler", name, b)
	}
	write("FuzzClientHello", "go-pq-hello", rec[5:])
	write("FuzzClientHello", "go-record", rec)
	write("FuzzClientHello", "ja4-spec", buildClientHello(t, []uint16{0x1301, 0xc02b}, []uint16{0, 0x10, 0x2b, 0x0d, 0xfe0d}, "a.example", []string{"h2"}, []uint16{0x0304}, []uint16{0x0403}))
	qh, err := synth.QUICClientHello(&tls.Config{ServerName: "meet.google.com", NextProtos: []string{"h3"}, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range []uint32{1, 0x6b3343cf, 0xff00001d} {
		p, err := synth.QUICInitial(v, []byte{1, 2, 3, 4, 5, 6, 7, 8}, []byte{5}, 0, false, []synth.CryptoFrame{{Offset: 0, Data: qh[:600]}})
		if err != nil {
			t.Fatal(err)
		}
		write("FuzzQUICInitial", []string{"v1", "v2", "draft29"}[i], p)
	}
	for _, n := range []string{"quic-client-initial-1.bin", "quic-client-initial-2.bin"} {
		if b, err := os.ReadFile(filepath.Join("testdata", n)); err == nil {
			write("FuzzQUICInitial", "quic-go-"+n, b)
		}
	}
	write("FuzzSTUN", "rfc5769-v4", unhex(t, rfc5769IPv4Response))
	write("FuzzSTUN", "rfc5769-v6", unhex(t, rfc5769IPv6Response))
	write("FuzzHTTPHost", "get", []byte("GET /x HTTP/1.1\r\nHost: www.dropbox.com\r\nAccept: */*\r\n\r\n"))
	write("FuzzHTTPHost", "connect", []byte("CONNECT api.openai.com:443 HTTP/1.1\r\n\r\n"))
	dm := new(dns.Msg)
	dm.SetQuestion("zoom.us.", dns.TypeA)
	dm.Response, dm.Compress = true, true
	dm.Answer = []dns.RR{
		&dns.CNAME{Hdr: dns.RR_Header{Name: "zoom.us.", Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 30}, Target: "edge.zoom.us."},
		&dns.A{Hdr: dns.RR_Header{Name: "edge.zoom.us.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 30}, A: []byte{170, 114, 1, 1}},
	}
	write("FuzzDNS", "cname-a", packDNS(t, dm))
	hm := new(dns.Msg)
	hm.SetQuestion("claude.ai.", dns.TypeHTTPS)
	hm.Response = true
	hm.Answer = []dns.RR{&dns.HTTPS{SVCB: dns.SVCB{Hdr: dns.RR_Header{Name: "claude.ai.", Rrtype: dns.TypeHTTPS, Class: dns.ClassINET, Ttl: 300},
		Priority: 1, Target: ".", Value: []dns.SVCBKeyValue{&dns.SVCBECHConfig{ECH: echConfigList("public.example")},
			&dns.SVCBIPv6Hint{Hint: []net.IP{net.ParseIP("2001:db8::1")}}}}}}
	write("FuzzDNS", "https-ech", packDNS(t, hm))
	var buf bytes.Buffer
	sw, _ := synth.NewWriter(&buf, time.Unix(1_700_000_000, 0))
	_ = sw.TCP(netip.MustParseAddrPort("10.0.0.1:4000"), netip.MustParseAddrPort("192.0.2.1:443"), 1, 1, synth.TCPFlags{ACK: true}, rec)
	_ = sw.Flush()
	ng, _ := newNgReaderForTest2(bytes.NewReader(buf.Bytes()))
	frame, _, _ := ng.ReadPacketData()
	write("FuzzAnalyzer", "eth-tls", frame)
	write("FuzzAnalyzer", "quic", func() []byte {
		p, _ := synth.QUICInitial(1, []byte{1, 2, 3, 4, 5, 6, 7, 8}, nil, 0, false, []synth.CryptoFrame{{Offset: 0, Data: qh}})
		return p
	}())
	write("FuzzAnalyzer", "stun", unhex(t, rfc5769IPv4Response))
	write("FuzzCaptureImage", "pcapng-mixed", mixedCapture(t))
	var pc bytes.Buffer
	pw := pcapgo.NewWriterNanos(&pc)
	_ = pw.WriteFileHeader(65535, layers.LinkTypeLinuxSLL)
	sll := append([]byte{0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x08, 0x00}, frame[14:]...)
	_ = pw.WritePacket(gopacket.CaptureInfo{Timestamp: time.Unix(1_700_000_000, 5), CaptureLength: len(sll), Length: len(sll)}, sll)
	write("FuzzCaptureImage", "pcap-ns-sll", pc.Bytes())
}

func goQuote(b []byte) string {
	var s bytes.Buffer
	s.WriteByte('"')
	for _, c := range b {
		switch {
		case c == '"' || c == '\\':
			s.WriteByte('\\')
			s.WriteByte(c)
		case c >= 0x20 && c < 0x7f:
			s.WriteByte(c)
		default:
			s.WriteString(`\x`)
			s.WriteByte("0123456789abcdef"[c>>4])
			s.WriteByte("0123456789abcdef"[c&15])
		}
	}
	s.WriteByte('"')
	return s.String()
}
