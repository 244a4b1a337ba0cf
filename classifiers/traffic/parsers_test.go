package traffic

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/crypto/cryptobyte"
)

// buildClientHello assembles a ClientHello handshake message the way a browser lays it out.
func buildClientHello(t testing.TB, ciphers []uint16, exts []uint16, sni string, alpn []string, versions, sigs []uint16) []byte {
	t.Helper()
	var b cryptobyte.Builder
	b.AddUint8(hsClientHello)
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint16(0x0303)
		b.AddBytes(make([]byte, 32))
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(make([]byte, 32)) })
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			for _, c := range ciphers {
				b.AddUint16(c)
			}
		})
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint8(0) })
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			for _, e := range exts {
				b.AddUint16(e)
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
					switch e {
					case extServerName:
						b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
							b.AddUint8(0)
							b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(sni)) })
						})
					case extALPN:
						b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
							for _, p := range alpn {
								b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(p)) })
							}
						})
					case extSupportedVersions:
						b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) {
							for _, v := range versions {
								b.AddUint16(v)
							}
						})
					case extSignatureAlgs:
						b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
							for _, s := range sigs {
								b.AddUint16(s)
							}
						})
					}
				})
			}
		})
	})
	out, err := b.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestJA4SpecExample reproduces the Chrome example of the FoxIO JA4 specification
// (t13d1516h2_8daaf6152771_e5627efa2ab1), with GREASE values sprinkled in as Chrome sends
// them and the extensions in a permuted order (JA4 sorts).
func TestJA4SpecExample(t *testing.T) {
	ciphers := []uint16{0x0a0a, 0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013, 0xc014, 0x009c, 0x009d, 0x002f, 0x0035}
	exts := []uint16{0x1a1a, 0x0033, 0x0010, 0x4469, 0x0017, 0x002d, 0x000d, 0x0005, 0x0023, 0x0012, 0x002b, 0xff01, 0x000b, 0x0000, 0x0015, 0x001b, 0x000a, 0x2a2a}
	sigs := []uint16{0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601}
	msg := buildClientHello(t, ciphers, exts, "www.example.com", []string{"h2", "http/1.1"}, []uint16{0x3a3a, 0x0304, 0x0303}, sigs)
	ch, err := ParseClientHello(msg, false)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ch.JA4('t'), "t13d1516h2_8daaf6152771_e5627efa2ab1"; got != want {
		t.Fatalf("JA4 = %s, want %s", got, want)
	}
	if ch.SNI != "www.example.com" || !slices.Equal(ch.ALPN, []string{"h2", "http/1.1"}) {
		t.Fatalf("sni %q alpn %v", ch.SNI, ch.ALPN)
	}
	// Same hello over QUIC without SNI: protocol letter, 'i', and counts change only.
	noSNI := buildClientHello(t, ciphers, slices.DeleteFunc(slices.Clone(exts), func(e uint16) bool { return e == 0 }), "", []string{"h3"}, []uint16{0x0304}, sigs)
	ch2, err := ParseClientHello(noSNI, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := ch2.JA4('q'); !strings.HasPrefix(got, "q13i1515h3_8daaf6152771_e5627efa2ab1") {
		t.Fatalf("JA4 without SNI = %s", got)
	}
}

func TestJA4EdgeCases(t *testing.T) {
	// No ciphers, no extensions, non-alphanumeric ALPN: zero hashes and hex ALPN chars.
	ch := &ClientHello{LegacyVersion: 0x0303, ALPN: []string{"\xab\xcd"}, Extensions: []uint16{extALPN}}
	if got, want := ch.JA4('t'), "t12i0001ad_000000000000_000000000000"; got != want {
		t.Fatalf("got %s want %s", got, want)
	}
	ch = &ClientHello{LegacyVersion: 0x0301}
	if got, want := ch.JA4('t'), "t10i000000_000000000000_000000000000"; got != want {
		t.Fatalf("got %s want %s", got, want)
	}
}

// realClientHello captures the first flight of Go's TLS client (which offers the
// X25519MLKEM768 post-quantum key share, ~1.3 KB) through a pipe.
func realClientHello(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	c, s := net.Pipe()
	go func() {
		_ = tls.Client(c, cfg).Handshake()
	}()
	defer c.Close()
	defer s.Close()
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(s, hdr); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, binary.BigEndian.Uint16(hdr[3:]))
	if _, err := io.ReadFull(s, body); err != nil {
		t.Fatal(err)
	}
	return append(hdr, body...)
}

func TestGoClientHello(t *testing.T) {
	rec := realClientHello(t, &tls.Config{ServerName: "Chat.OpenAI.com", NextProtos: []string{"h2", "http/1.1"}})
	msg, complete, err := tlsHandshake(rec)
	if err != nil || !complete {
		t.Fatalf("handshake: complete=%v err=%v", complete, err)
	}
	ch, err := ParseClientHello(msg, false)
	if err != nil {
		t.Fatal(err)
	}
	if ch.SNI != "chat.openai.com" || ch.MaxVersion() != 0x0304 || ch.ALPN[0] != "h2" {
		t.Fatalf("parsed %+v", ch)
	}
	if !slices.Contains(ch.KeyShareGroups, 0x11ec) {
		t.Errorf("Go's default key shares %x lack X25519MLKEM768", ch.KeyShareGroups)
	}
	if ja4 := ch.JA4('t'); !strings.HasPrefix(ja4, "t13d") || !strings.Contains(ja4, "h2_") {
		t.Errorf("JA4 %s", ja4)
	}
	// Every truncation is incomplete or an error, never a panic or a wrong SNI.
	for i := 0; i < len(rec); i++ {
		m, ok, err := tlsHandshake(rec[:i])
		if ok {
			t.Fatalf("prefix %d reported complete", i)
		}
		_ = m
		_ = err
	}
	// Split into three records (legal, seen from some middleboxes).
	body := msg
	var split []byte
	for len(body) > 0 {
		n := min(len(body), 500)
		split = append(split, 22, 3, 1, byte(n>>8), byte(n))
		split = append(split, body[:n]...)
		body = body[n:]
	}
	m2, ok, err := tlsHandshake(split)
	if err != nil || !ok || !bytes.Equal(m2, msg) {
		t.Fatalf("multi-record reassembly: ok=%v err=%v", ok, err)
	}
}

func TestServerHello(t *testing.T) {
	// TLS 1.2 ServerHello: version 0303, cipher c02f, no supported_versions.
	var b cryptobyte.Builder
	b.AddUint8(hsServerHello)
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint16(0x0303)
		b.AddBytes(make([]byte, 32))
		b.AddUint8(0)
		b.AddUint16(0xc02f)
		b.AddUint8(0)
	})
	sh, err := ParseServerHello(b.BytesOrPanic(), false)
	if err != nil || sh.Version != 0x0303 || sh.Cipher != 0xc02f {
		t.Fatalf("%+v %v", sh, err)
	}
	var b3 cryptobyte.Builder
	b3.AddUint8(hsServerHello)
	b3.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint16(0x0303)
		b.AddBytes(helloRetryRandom[:])
		b.AddUint8(0)
		b.AddUint16(0x1301)
		b.AddUint8(0)
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			b.AddUint16(extSupportedVersions)
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint16(0x0304) })
		})
	})
	sh, err = ParseServerHello(b3.BytesOrPanic(), false)
	if err != nil || sh.Version != 0x0304 || !sh.HelloRetry {
		t.Fatalf("%+v %v", sh, err)
	}
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestQUICInitialKeys checks key derivation against RFC 9001 Appendix A.1 and RFC 9369
// Appendix A.1 (DCID 0x8394c8f03e515708).
func TestQUICInitialKeys(t *testing.T) {
	dcid := unhex(t, "8394c8f03e515708")
	for _, tc := range []struct {
		qv                   *quicVersion
		ckey, civ, chp       string
		skey, siv, shp       string
		clientSecretV1Prefix string
	}{
		{&qvV1, "1f369613dd76d5467730efcbe3b1a22d", "fa044b2f42a3fd3b46fb255c", "9f50449e04a0e810283a1e9933adedd2",
			"cf3a5331653c364c88f0f379b6067e37", "0ac1493ca1905853b0bba03e", "c206b8d9b9f0f37644430b490eeaa314", "c00cf151ca5be075"},
		{&qvV2, "8b1a0bc121284290a29e0971b5cd045d", "91f73e2351d8fa91660e909f", "45b95e15235d6f45a6b19cbcb0294ba9",
			"82db637861d55e1d011f19ea71d5d2a7", "dd13c276499c0249d3310652", "edf6d05c83121201b436e16877593c3a", ""},
	} {
		cs, ss := initialSecrets(tc.qv, dcid)
		if tc.clientSecretV1Prefix != "" && !strings.HasPrefix(hex.EncodeToString(cs), tc.clientSecretV1Prefix) {
			t.Errorf("%s client secret %x", tc.qv.name, cs)
		}
		for _, d := range []struct {
			secret       []byte
			key, iv, hpk string
		}{{cs, tc.ckey, tc.civ, tc.chp}, {ss, tc.skey, tc.siv, tc.shp}} {
			if got := hex.EncodeToString(hkdfExpandLabel(d.secret, tc.qv.labelPrefix+"key", 16)); got != d.key {
				t.Errorf("%s key %s want %s", tc.qv.name, got, d.key)
			}
			if got := hex.EncodeToString(hkdfExpandLabel(d.secret, tc.qv.labelPrefix+"iv", 12)); got != d.iv {
				t.Errorf("%s iv %s want %s", tc.qv.name, got, d.iv)
			}
			if got := hex.EncodeToString(hkdfExpandLabel(d.secret, tc.qv.labelPrefix+"hp", 16)); got != d.hpk {
				t.Errorf("%s hp %s want %s", tc.qv.name, got, d.hpk)
			}
		}
	}
	for v, want := range map[uint32]string{1: "v1", 0x6b3343cf: "v2", 0xff00001d: "draft-29", 0xff000017: "draft-23", 0xfaceb001: "mvfst-22", 0xfaceb002: "mvfst-23"} {
		if got := QUICVersionName(v); got != want {
			t.Errorf("version %#x = %s want %s", v, got, want)
		}
	}
	if lookupQUICVersion(0x1a2a3a4a) != nil || lookupQUICVersion(0) != nil {
		t.Error("GREASE or negotiation version accepted")
	}
}

func TestDecodePN(t *testing.T) {
	// RFC 9000 §A.3 example: largest 0xa82f30ea, truncated 0x9b32 (2 bytes) → 0xa82f9b32.
	if got := decodePN(0xa82f30ea, 0x9b32, 2); got != 0xa82f9b32 {
		t.Fatalf("got %#x", got)
	}
	if got := decodePN(-1, 0, 1); got != 0 {
		t.Fatalf("first packet: %d", got)
	}
}

func TestPrefixBuf(t *testing.T) {
	p := newPrefixBuf(64)
	p.add(10, []byte("klmnopqrst"))
	p.add(30, []byte("EFG"))
	if p.contiguous() != nil {
		t.Fatal("hole reported as contiguous")
	}
	p.add(0, []byte("abcdefghij"))
	p.add(5, []byte("fghijklm")) // overlap
	if got := string(p.contiguous()); got != "abcdefghijklmnopqrst" {
		t.Fatalf("got %q", got)
	}
	p.add(20, []byte("uvwxyzABCD"))
	if got := string(p.contiguous()); got != "abcdefghijklmnopqrstuvwxyzABCDEFG" {
		t.Fatalf("got %q", got)
	}
	p.add(60, []byte("0123456789"))
	if !p.overflow {
		t.Fatal("overflow not marked")
	}
	q := newPrefixBuf(1 << 20)
	for i := 0; i < 1000; i++ {
		q.add(i*10+5, []byte("x"))
	}
	if len(q.have) > maxSpans || !q.overflow {
		t.Fatalf("spans %d overflow %v", len(q.have), q.overflow)
	}
}

func packDNS(t testing.TB, m *dns.Msg) []byte {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseDNS(t *testing.T) {
	m := new(dns.Msg)
	m.SetQuestion("Zoom.US.", dns.TypeA)
	m.Response = true
	m.Compress = true
	m.Answer = []dns.RR{
		&dns.CNAME{Hdr: dns.RR_Header{Name: "zoom.us.", Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 30}, Target: "zoom.us.cdn.example.net."},
		&dns.A{Hdr: dns.RR_Header{Name: "zoom.us.cdn.example.net.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300}, A: net.ParseIP("170.114.52.2")},
		&dns.AAAA{Hdr: dns.RR_Header{Name: "zoom.us.cdn.example.net.", Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: 300}, AAAA: net.ParseIP("2600:1f18::1")},
	}
	got, err := ParseDNS(packDNS(t, m))
	if err != nil {
		t.Fatal(err)
	}
	if got.Question != "zoom.us" || !got.Response || len(got.Answers) != 3 || got.Answers[0].Target != "zoom.us.cdn.example.net" ||
		got.Answers[1].Addr != netip.MustParseAddr("170.114.52.2") || got.Answers[2].Addr != netip.MustParseAddr("2600:1f18::1") {
		t.Fatalf("%+v", got)
	}
	// HTTPS record with ECH and address hints (RFC 9460).
	ech := echConfigList("cloudflare-ech.com")
	h := new(dns.Msg)
	h.SetQuestion("crypto.example.", dns.TypeHTTPS)
	h.Response = true
	h.Answer = []dns.RR{&dns.HTTPS{SVCB: dns.SVCB{Hdr: dns.RR_Header{Name: "crypto.example.", Rrtype: dns.TypeHTTPS, Class: dns.ClassINET, Ttl: 300},
		Priority: 1, Target: ".", Value: []dns.SVCBKeyValue{
			&dns.SVCBAlpn{Alpn: []string{"h3", "h2"}},
			&dns.SVCBIPv4Hint{Hint: []net.IP{net.ParseIP("104.16.1.1").To4()}},
			&dns.SVCBECHConfig{ECH: ech},
		}}}}
	got, err = ParseDNS(packDNS(t, h))
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Answers) != 2 || !got.Answers[0].ECH || got.Answers[0].ECHPublicName != "cloudflare-ech.com" || got.Answers[1].Addr != netip.MustParseAddr("104.16.1.1") {
		t.Fatalf("%+v", got.Answers)
	}
	// A compression loop and a forward pointer are rejected, not followed.
	loop := packDNS(t, m)
	loop[12], loop[13] = 0xc0, 12
	if _, err := ParseDNS(loop); err == nil {
		t.Fatal("self-pointing name accepted")
	}
}

// echConfigList builds a draft-ietf-tls-esni ECHConfigList with one X25519 config.
func echConfigList(publicName string) []byte {
	var b cryptobyte.Builder
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint16(extECH)
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			b.AddUint8(7)       // config_id
			b.AddUint16(0x0020) // DHKEM(X25519)
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(make([]byte, 32)) })
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint16(1); b.AddUint16(1) })
			b.AddUint8(0)
			b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(publicName)) })
			b.AddUint16(0)
		})
	})
	return b.BytesOrPanic()
}

// RFC 5769 §2.2 sample IPv4 response (XOR-MAPPED-ADDRESS 192.0.2.1:32853, SOFTWARE).
const rfc5769IPv4Response = "0101003c2112a442b7e7a701bc34d686fa87dfae" +
	"8022000b7465737420766563746f7220" +
	"002000080001a147e112a643" +
	"000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7" +
	"80280004c07d4c96"

// RFC 5769 §2.3 sample IPv6 response (2001:db8:1234:5678:11:2233:4455:6677 port 32853).
const rfc5769IPv6Response = "010100482112a442b7e7a701bc34d686fa87dfae" +
	"8022000b7465737420766563746f7220" +
	"002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d9" +
	"00080014a382954e4be67bf11784c97c8292c275bfe3ed41" +
	"80280004c8fb0b4c"

func TestParseSTUN(t *testing.T) {
	m, err := ParseSTUN(unhex(t, rfc5769IPv4Response), false)
	if err != nil {
		t.Fatal(err)
	}
	if m.Method != 1 || m.Class != 2 || m.Software != "test vector" || len(m.Mapped) != 1 || m.Mapped[0] != netip.MustParseAddrPort("192.0.2.1:32853") {
		t.Fatalf("%+v", m)
	}
	m, err = ParseSTUN(unhex(t, rfc5769IPv6Response), false)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Mapped) != 1 || m.Mapped[0] != netip.MustParseAddrPort("[2001:db8:1234:5678:11:2233:4455:6677]:32853") {
		t.Fatalf("%+v", m.Mapped)
	}
	// RFC 3489 binding request (no cookie) only where the port says STUN.
	classic := make([]byte, 20)
	classic[1] = 1
	if _, err := ParseSTUN(classic, false); err == nil {
		t.Fatal("cookie-less message accepted without port context")
	}
	if m, err := ParseSTUN(classic, true); err != nil || !m.Classic {
		t.Fatalf("classic: %v %+v", err, m)
	}
}

func TestRTPTracker(t *testing.T) {
	var tr rtpTracker
	pkt := func(seq uint16) []byte {
		b := make([]byte, 172)
		b[0], b[1] = 0x80, 111 // V=2, Opus
		binary.BigEndian.PutUint16(b[2:], seq)
		binary.BigEndian.PutUint32(b[8:], 0xdeadbeef)
		return b
	}
	for i := uint16(0); i < 4; i++ {
		tr.observe(pkt(65534 + i)) // wraps
	}
	if tr.hits < rtpHits {
		t.Fatalf("hits %d", tr.hits)
	}
	var tr2 rtpTracker
	for _, s := range []uint16{5, 900, 3, 40000} {
		tr2.observe(pkt(s))
	}
	if tr2.hits != 0 {
		t.Fatalf("random sequence numbers counted as a stream: %d", tr2.hits)
	}
	rr := []byte{0x81, 201, 0, 7, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	if k, _, _, _ := classifyRTP(rr); k != kindRTCP {
		t.Fatalf("RTCP RR classified %v", k)
	}
}

func TestHTTPHost(t *testing.T) {
	for in, want := range map[string]string{
		"GET / HTTP/1.1\r\nUser-Agent: x\r\nHost: Example.COM:8080\r\n\r\n":       "example.com",
		"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n": "api.openai.com",
		"POST /x HTTP/1.0\r\n\r\n":                         "",
		"GET / HTTP/1.1\r\nhost: [2001:db8::1]:80\r\n\r\n": "2001:db8::1",
		"GET / HTTP/1.1\r\nHost: evil\x1b[31m.com\r\n\r\n": "",
	} {
		if got, complete := ParseHTTPHost([]byte(in)); got != want || !complete {
			t.Errorf("%q: got %q complete=%v, want %q", in, got, complete, want)
		}
	}
	if _, complete := ParseHTTPHost([]byte("GET / HTTP/1.1\r\nAccept: */*\r\n")); complete {
		t.Error("unfinished head reported complete")
	}
}

var _ = time.Second

// TestHMACSHA256 compares the stack HMAC of the QUIC key schedule with crypto/hmac for
// every key and message length it may see, and beyond (the fallback path).
func TestHMACSHA256(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for kl := 0; kl <= 80; kl += 5 {
		for ml := 0; ml <= 200; ml += 7 {
			key, msg := make([]byte, kl), make([]byte, ml)
			for i := range key {
				key[i] = byte(rng.Uint32())
			}
			for i := range msg {
				msg[i] = byte(rng.Uint32())
			}
			m := hmac.New(sha256.New, key)
			m.Write(msg)
			if got := hmacSHA256(key, msg); !bytes.Equal(got[:], m.Sum(nil)) {
				t.Fatalf("key %d msg %d: %x, want %x", kl, ml, got, m.Sum(nil))
			}
		}
	}
}
