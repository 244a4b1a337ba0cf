package traffic

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/quic-go/quic-go"

	"github.com/ward-dlp/ward/classifiers/catalog"
)

// quicExchange runs a quic-go client against a quic-go server on 127.0.0.1 and returns
// the server port.
func quicExchange(t *testing.T, sni string, v quic.Version) uint16 {
	t.Helper()
	cert := testCert(t, sni)
	ln, err := quic.ListenAddr("127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h3"}},
		&quic.Config{Versions: []quic.Version{v}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept(context.Background())
		if err != nil {
			return
		}
		s, err := c.AcceptStream(context.Background())
		if err == nil {
			buf := make([]byte, 16)
			n, _ := s.Read(buf)
			_, _ = s.Write(buf[:n])
			s.Close()
		}
		time.Sleep(200 * time.Millisecond)
		_ = c.CloseWithError(0, "")
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, ln.Addr().String(), &tls.Config{ServerName: sni, InsecureSkipVerify: true, NextProtos: []string{"h3"}},
		&quic.Config{Versions: []quic.Version{v}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = s.Write([]byte("ping"))
	buf := make([]byte, 4)
	_, _ = s.Read(buf)
	_ = conn.CloseWithError(0, "")
	return ln.Addr().(*net.UDPAddr).AddrPort().Port()
}

// TestCaptureQUIC captures quic-go handshakes (v1 and v2) on lo. quic-go scrambles the
// ClientHello into out-of-order CRYPTO frames, and Go's post-quantum key share makes the
// ClientHello span two Initial packets: both must be reassembled to get the SNI.
func TestCaptureQUIC(t *testing.T) {
	requireRoot(t)
	cap := startCapture(t)
	p1 := quicExchange(t, "meet.google.com", quic.Version1)
	p2 := quicExchange(t, "claude.ai", quic.Version2)
	path := cap.stop()

	pol, err := catalog.ParsePolicy([]byte("version: 1\ndefault: unsanctioned\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	recs, dets, st := analyzeFile(t, path, pol, nil)
	for _, tc := range []struct {
		port              uint16
		sni, app, version string
	}{{p1, "meet.google.com", "google-meet", "v1"}, {p2, "claude.ai", "claude", "v2"}} {
		fl := findFlow(recs, "udp", fmt.Sprintf("127.0.0.1:%d", tc.port))
		if len(fl) != 1 {
			t.Fatalf("port %d: %d flows (stats %+v)", tc.port, len(fl), st)
		}
		f := fl[0]
		if f.Protocol != "quic" || f.SNI != tc.sni || f.App != tc.app || f.NameSource != SourceQUIC || f.QUICVersion != tc.version ||
			!strings.HasPrefix(f.JA4, "q13d") || !slices.Equal(f.ALPN, []string{"h3"}) || f.TLSVersion != "TLS 1.3" || f.TLSCipher == "" {
			t.Errorf("QUIC %s flow: %+v", tc.version, f)
		}
	}
	found := false
	for _, d := range dets {
		if d.Kind == DetectUnsanctionedApp && d.App == "claude" {
			found = true
		}
	}
	if !found {
		t.Errorf("no unsanctioned detection for claude: %+v", dets)
	}

	// Replay the v1 client's datagrams alone: the hello must need more than one Initial,
	// and must still be found when the first two datagrams arrive swapped.
	dgrams := clientDatagrams(t, path, p1)
	q := newQUICState()
	var scratch []byte
	need := 0
	for i, d := range dgrams {
		_ = q.datagram(0, d, &scratch)
		if q.hello != nil {
			need = i + 1
			break
		}
	}
	if need < 2 {
		t.Errorf("ClientHello complete after %d datagrams; expected the PQ hello to span at least two", need)
	}
	if len(dgrams) >= 2 {
		sw := append([][]byte{dgrams[1], dgrams[0]}, dgrams[2:]...)
		q2 := newQUICState()
		for _, d := range sw {
			_ = q2.datagram(0, d, &scratch)
		}
		if q2.hello == nil || q2.hello.SNI != "meet.google.com" {
			t.Errorf("swapped Initials: hello %+v err %v", q2.hello, q2.helloError)
		}
	}
	// Keep the first datagrams as fuzz seeds and regression input.
	if os.Getenv("WARD_WRITE_SEEDS") != "" && len(dgrams) >= 2 {
		_ = os.WriteFile("testdata/quic-client-initial-1.bin", dgrams[0], 0o644)
		_ = os.WriteFile("testdata/quic-client-initial-2.bin", dgrams[1], 0o644)
	}
}

// clientDatagrams extracts UDP payloads sent to port from a capture.
func clientDatagrams(t *testing.T, path string, port uint16) [][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out [][]byte
	src := gopacketSource(t, f)
	for p := range src.Packets() {
		if u, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP); ok && uint16(u.DstPort) == port {
			out = append(out, slices.Clone(u.Payload))
		}
	}
	return out
}

func gopacketSource(t *testing.T, f *os.File) *gopacket.PacketSource {
	t.Helper()
	r, err := newNgReaderForTest(f)
	if err != nil {
		t.Fatal(err)
	}
	return gopacket.NewPacketSource(r, layers.LinkTypeEthernet)
}

var _ = binary.BigEndian
