package traffic

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/crypto/cryptobyte"

	"github.com/ward-dlp/ward/classifiers/catalog"
)

// echConfig builds one ECHConfig (draft-ietf-tls-esni §4) for an X25519 public key.
func echConfig(pub []byte, publicName string) []byte {
	var b cryptobyte.Builder
	b.AddUint16(extECH)
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint8(7)
		b.AddUint16(0x0020) // DHKEM(X25519, HKDF-SHA256)
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(pub) })
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint16(1); b.AddUint16(1) })
		b.AddUint8(0)
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(publicName)) })
		b.AddUint16(0)
	})
	return b.BytesOrPanic()
}

// dnsServer answers from a fixed zone on 127.0.0.1 (UDP); it stands in for the clinic's
// resolver so dig produces real queries and answers on the wire.
func dnsServer(t *testing.T, zone map[string][]dns.RR) string {
	t.Helper()
	// Port 53 on a loopback address of our own: the analyzer (like every DNS tap) knows
	// DNS by its port.
	var pc net.PacketConn
	var err error
	for i := 0; i < 20; i++ {
		addr := fmt.Sprintf("127.53.%d.%d:53", 1+mrand.IntN(250), 1+mrand.IntN(250))
		if pc, err = net.ListenPacket("udp", addr); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		for _, rr := range zone[strings.ToLower(q.Name)] {
			if rr.Header().Rrtype == q.Qtype || rr.Header().Rrtype == dns.TypeCNAME {
				m.Answer = append(m.Answer, rr)
			}
		}
		_ = w.WriteMsg(m)
	})}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return pc.LocalAddr().String()
}

func rr(t *testing.T, s string) dns.RR {
	t.Helper()
	r, err := dns.NewRR(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func dig(t *testing.T, digPath, server, name, qtype string) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(server)
	out, err := exec.Command(digPath, "@"+host, "-p", port, "+tries=1", "+time=3", "+short", name, qtype).CombinedOutput()
	if err != nil {
		t.Fatalf("dig %s %s: %v\n%s", name, qtype, err, out)
	}
	return string(out)
}

// TestCaptureDNSNamingECHAndDoH: dig resolves names against a local resolver; a later
// connection without any name on the wire is named from the answer; a real ECH handshake
// (Go client and server, config published in an HTTPS record) is recognised by its outer
// public name and named from DNS; a DoH endpoint is flagged.
func TestCaptureDNSNamingECHAndDoH(t *testing.T) {
	requireRoot(t)
	digPath := needTool(t, "dig", "bind9-dnsutils")
	curl := needTool(t, "curl", "curl")
	echKey, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cfgBytes := echConfig(echKey.PublicKey().Bytes(), "public.example")
	list := binary.BigEndian.AppendUint16(nil, uint16(len(cfgBytes)))
	list = append(list, cfgBytes...)
	https := &dns.HTTPS{SVCB: dns.SVCB{Hdr: dns.RR_Header{Name: "claude.ai.", Rrtype: dns.TypeHTTPS, Class: dns.ClassINET, Ttl: 300},
		Priority: 1, Target: ".", Value: []dns.SVCBKeyValue{&dns.SVCBAlpn{Alpn: []string{"h2"}}, &dns.SVCBECHConfig{ECH: list}}}}
	resolver := dnsServer(t, map[string][]dns.RR{
		"zoom.us.":   {rr(t, "zoom.us. 30 IN CNAME zoom.us.edge.example.net."), rr(t, "zoom.us.edge.example.net. 60 IN A 127.0.0.2")},
		"claude.ai.": {rr(t, "claude.ai. 300 IN A 127.0.0.4"), https},
	})
	cert := testCert(t, "claude.ai", "public.example", "dns.google")
	// Plain TCP service on 127.0.0.2 (no TLS, no Host: nothing names it but DNS).
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			buf := make([]byte, 16)
			_, _ = c.Read(buf)
			c.Close()
		}
	}()
	echPort := tlsServer(t, "127.0.0.4:0", &tls.Config{Certificates: []tls.Certificate{cert},
		EncryptedClientHelloKeys: []tls.EncryptedClientHelloKey{{Config: cfgBytes, PrivateKey: echKey.Bytes()}}})
	dohPort := tlsServer(t, "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})

	cap := startCapture(t)
	if out := dig(t, digPath, resolver, "zoom.us", "A"); !strings.Contains(out, "127.0.0.2") {
		t.Fatalf("dig zoom.us: %q", out)
	}
	dig(t, digPath, resolver, "claude.ai", "HTTPS")
	dig(t, digPath, resolver, "claude.ai", "A")
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c.Write([]byte("hello"))
	c.Close()
	ec, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.4:%d", echPort), &tls.Config{ServerName: "claude.ai", InsecureSkipVerify: true,
		EncryptedClientHelloConfigList: list, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatalf("ECH handshake: %v", err)
	}
	if !ec.ConnectionState().ECHAccepted {
		t.Fatal("server did not accept ECH")
	}
	ec.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, curl, "-sk", "--http1.1", "--resolve", fmt.Sprintf("dns.google:%d:127.0.0.1", dohPort),
		fmt.Sprintf("https://dns.google:%d/dns-query?name=example.com", dohPort)).CombinedOutput(); err != nil {
		t.Fatalf("curl DoH: %v\n%s", err, out)
	}
	path := cap.stop()

	pol, err := catalog.ParsePolicy([]byte("version: 1\ndefault: monitored\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	recs, dets, st := analyzeFile(t, path, pol, nil)
	if st.DNSMessages < 6 {
		t.Errorf("dns messages %d", st.DNSMessages)
	}
	plain := findFlow(recs, "tcp", ln.Addr().String())
	if len(plain) != 1 || plain[0].App != "zoom" || plain[0].NameSource != SourceDNS || plain[0].Name != "zoom.us" {
		t.Errorf("DNS-named flow: %+v", plain)
	}
	ech := findFlow(recs, "tcp", fmt.Sprintf("127.0.0.4:%d", echPort))
	if len(ech) != 1 || !ech[0].ECH || ech[0].SNI != "public.example" || ech[0].Name != "claude.ai" || ech[0].NameSource != SourceDNS || ech[0].App != "claude" {
		t.Errorf("ECH flow: %+v", ech)
	}
	doh := findFlow(recs, "tcp", fmt.Sprintf("127.0.0.1:%d", dohPort))
	if len(doh) != 1 || doh[0].App != "google-public-dns" || doh[0].Category != "doh" {
		t.Errorf("DoH flow: %+v", doh)
	}
	var dnsFlows int
	for _, r := range recs {
		if r.Protocol == "dns" && r.Server.String() == resolver {
			dnsFlows++
			if r.DNSQuery == "" {
				t.Errorf("DNS flow without query: %+v", r)
			}
		}
	}
	if dnsFlows != 3 {
		t.Errorf("want 3 dig flows, got %d", dnsFlows)
	}
	got := map[DetectionKind]string{}
	for _, d := range dets {
		got[d.Kind] = d.App
	}
	if got[DetectECH] != "claude" || got[DetectHiddenDNS] != "google-public-dns" {
		t.Errorf("detections: %+v", dets)
	}
}
