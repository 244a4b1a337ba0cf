package traffic

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ward-dlp/ward/classifiers/catalog"
)

// tlsServer accepts TLS on addr, answers HTTP/1.1 and drains uploads.
func tlsServer(t *testing.T, addr string, cfg *tls.Config) (port uint16) {
	t.Helper()
	ln, err := tls.Listen("tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(20 * time.Second))
				buf := make([]byte, 64<<10)
				n, err := c.Read(buf)
				if err != nil {
					return
				}
				if strings.HasPrefix(string(buf[:n]), "GET ") {
					fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
					return
				}
				_, _ = io.Copy(io.Discard, c)
			}(c)
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort().Port()
}

// TestCaptureTLSClients runs real TLS clients (curl, openssl s_client, Go with a tiny MSS
// so the post-quantum ClientHello spans several TCP segments) against a local server,
// captures lo and checks the flow records and detections built from the capture.
func TestCaptureTLSClients(t *testing.T) {
	requireRoot(t)
	curl := needTool(t, "curl", "curl")
	openssl := needTool(t, "openssl", "openssl")
	cert := testCert(t, "chatgpt.com", "doxy.me", "www.dropbox.com")
	port := tlsServer(t, "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}})
	cap := startCapture(t)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// curl with a chosen SNI.
	if out, err := exec.CommandContext(ctx, curl, "-sk", "--http1.1", "--resolve", fmt.Sprintf("chatgpt.com:%d:127.0.0.1", port),
		fmt.Sprintf("https://chatgpt.com:%d/", port)).CombinedOutput(); err != nil {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	// openssl s_client forced to TLS 1.2 towards a telehealth name.
	cmd := exec.CommandContext(ctx, openssl, "s_client", "-connect", fmt.Sprintf("127.0.0.1:%d", port), "-servername", "doxy.me", "-tls1_2")
	cmd.Stdin = strings.NewReader("")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("openssl s_client: %v\n%s", err, out)
	}
	// Go client, MSS 200: the ClientHello (X25519MLKEM768 share) needs many segments;
	// then a 12 MiB upload to an unsanctioned storage app.
	d := net.Dialer{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_MAXSEG, 200) })
		if err != nil {
			return err
		}
		return serr
	}}
	raw, err := d.DialContext(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	localPort := raw.LocalAddr().(*net.TCPAddr).Port
	tc := tls.Client(raw, &tls.Config{ServerName: "www.dropbox.com", InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for i := 0; i < 12; i++ {
		if _, err := tc.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	tc.Close()
	path := cap.stop()

	pol, err := catalog.ParsePolicy([]byte("version: 1\ndefault: monitored\napps:\n  dropbox: {status: unsanctioned}\n  doxy-me: {status: sanctioned}\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	recs, dets, st := analyzeFile(t, path, pol, nil)
	flows := findFlow(recs, "tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if len(flows) != 3 {
		t.Fatalf("want 3 TLS flows to port %d, got %d: %+v (stats %+v)", port, len(flows), flows, st)
	}
	bySNI := map[string]FlowRecord{}
	for _, f := range flows {
		bySNI[f.SNI] = f
	}
	c := bySNI["chatgpt.com"]
	if c.App != "chatgpt" || c.Category != "generative_ai" || c.NameSource != SourceSNI || c.TLSVersion != "TLS 1.3" ||
		!strings.HasPrefix(c.JA4, "t13d") || c.Status != catalog.Monitored || c.PacketsUp == 0 || c.PacketsDown == 0 {
		t.Errorf("curl flow: %+v", c)
	}
	o := bySNI["doxy.me"]
	if o.App != "doxy-me" || o.TLSVersion != "TLS 1.2" || o.TLSCipher == "" || !strings.HasPrefix(o.JA4, "t12d") {
		t.Errorf("openssl flow: %+v", o)
	}
	g := bySNI["www.dropbox.com"]
	if g.App != "dropbox" || g.Status != catalog.Unsanctioned || g.Client.Port() != uint16(localPort) || g.BytesUp < 12<<20 || g.TLSVersion != "TLS 1.3" {
		t.Errorf("segmented Go flow: %+v", g)
	}
	kinds := map[DetectionKind]Detection{}
	for _, d := range dets {
		kinds[d.Kind] = d
	}
	if d, ok := kinds[DetectWeakTLS]; !ok || d.App != "doxy-me" {
		t.Errorf("no weak TLS detection for the TLS 1.2 telehealth flow: %+v", dets)
	}
	if d, ok := kinds[DetectBulkUpload]; !ok || d.App != "dropbox" {
		t.Errorf("no bulk upload detection: %+v", dets)
	}
	if d, ok := kinds[DetectUnsanctionedApp]; !ok || d.App != "dropbox" {
		t.Errorf("no unsanctioned app detection: %+v", dets)
	}
	if st.TLSClientHellos < 3 {
		t.Errorf("stats %+v", st)
	}
}
