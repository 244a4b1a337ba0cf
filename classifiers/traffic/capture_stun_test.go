package traffic

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ward-dlp/ward/classifiers/catalog"
)

func stunBindingRequest() []byte {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b, 0x0001)
	binary.BigEndian.PutUint32(b[4:], stunMagicCookie)
	_, _ = rand.Read(b[8:])
	return b
}

// TestCaptureSTUNAndMedia runs coturn's turnserver and turnutils_stunclient, then a
// WebRTC-style client: a binding request from one socket, followed by RTP from the same
// socket to a peer. The STUN server was looked up as stun.zoom.us, so the STUN flow is
// Zoom; its XOR-MAPPED-ADDRESS names the later media flow, which carries a call's worth of
// packets outside the clinic's sanctioned Zoom tenant: a consumer video call.
func TestCaptureSTUNAndMedia(t *testing.T) {
	requireRoot(t)
	digPath := needTool(t, "dig", "bind9-dnsutils")
	turnserver := needTool(t, "turnserver", "coturn")
	stunclient := needTool(t, "turnutils_stunclient", "coturn")
	stunIP := fmt.Sprintf("127.78.%d.%d", 1+mrand.IntN(250), 1+mrand.IntN(250))
	stunPort := 20000 + mrand.IntN(20000)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv := exec.CommandContext(ctx, turnserver, "-n", "--listening-ip", stunIP, "--listening-port", fmt.Sprint(stunPort),
		"--no-tls", "--no-dtls", "--no-cli", "--log-file", "stdout", "--simple-log", "--no-tcp")
	var srvOut strings.Builder
	srv.Stdout, srv.Stderr = &srvOut, &srvOut
	if err := srv.Start(); err != nil {
		t.Fatalf("turnserver: %v", err)
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	resolver := dnsServer(t, map[string][]dns.RR{"stun.zoom.us.": {rr(t, "stun.zoom.us. 60 IN A "+stunIP)}})

	// Wait until the server answers binding requests.
	sock, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	srvAddr := &net.UDPAddr{IP: net.ParseIP(stunIP), Port: stunPort}
	ready := false
	probe, _ := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP("127.0.0.1")})
	for i := 0; i < 50 && !ready; i++ {
		_, _ = probe.WriteToUDP(stunBindingRequest(), srvAddr)
		_ = probe.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		buf := make([]byte, 1500)
		if n, _, err := probe.ReadFromUDP(buf); err == nil && n >= 20 {
			ready = true
		}
	}
	probe.Close()
	if !ready {
		t.Skipf("turnserver did not answer on %v: %s", srvAddr, srvOut.String())
	}
	peer, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(fmt.Sprintf("127.79.%d.%d", 1+mrand.IntN(250), 1+mrand.IntN(250)))})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()

	cap := startCapture(t)
	dig(t, digPath, resolver, "stun.zoom.us", "A")
	if out, err := exec.CommandContext(ctx, stunclient, "-p", fmt.Sprint(stunPort), stunIP).CombinedOutput(); err != nil {
		t.Fatalf("turnutils_stunclient: %v\n%s", err, out)
	}
	if _, err := sock.WriteToUDP(stunBindingRequest(), srvAddr); err != nil {
		t.Fatal(err)
	}
	_ = sock.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 1500)
	if _, _, err := sock.ReadFromUDP(buf); err != nil {
		t.Fatalf("binding response: %v", err)
	}
	rtp := make([]byte, 500)
	rtp[0], rtp[1] = 0x80, 96
	binary.BigEndian.PutUint32(rtp[8:], 0x1234abcd)
	for i := 0; i < 600; i++ {
		binary.BigEndian.PutUint16(rtp[2:], uint16(1000+i))
		binary.BigEndian.PutUint32(rtp[4:], uint32(i*3000))
		if _, err := sock.WriteToUDP(rtp, peer.LocalAddr().(*net.UDPAddr)); err != nil {
			t.Fatal(err)
		}
		if i%50 == 0 {
			time.Sleep(2 * time.Millisecond)
		}
	}
	path := cap.stop()

	pol, err := catalog.ParsePolicy([]byte("version: 1\ndefault: monitored\napps:\n  zoom: {status: sanctioned, tenants: [clinic.zoom.us]}\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	recs, dets, st := analyzeFile(t, path, pol, nil)
	stun := findFlow(recs, "udp", fmt.Sprintf("%s:%d", stunIP, stunPort))
	if len(stun) < 2 {
		t.Fatalf("want STUN flows from turnutils_stunclient and the media client, got %+v (stats %+v)", stun, st)
	}
	for _, f := range stun {
		if f.Protocol != "stun" || f.App != "zoom" || f.NameSource != SourceDNS {
			t.Errorf("STUN flow: %+v", f)
		}
	}
	media := findFlow(recs, "udp", peer.LocalAddr().String())
	if len(media) != 1 || media[0].Protocol != "rtp" || media[0].App != "zoom" || media[0].NameSource != SourceSTUN ||
		media[0].Status != catalog.Unsanctioned || media[0].PacketsUp < 600 {
		t.Fatalf("media flow: %+v", media)
	}
	found := false
	for _, d := range dets {
		if d.Kind == DetectConsumerVideo && d.App == "zoom" {
			found = true
		}
	}
	if !found {
		t.Errorf("no consumer video call detection: %+v", dets)
	}
}
