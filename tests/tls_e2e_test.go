package tests

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
)

// tlsPeer is a local HTTPS server (Go crypto/tls on 127.0.0.1) that counts the bytes each
// request carried, so a test knows the client really sent the document.
func tlsPeer(t *testing.T) (*httptest.Server, int, chan int64) {
	t.Helper()
	got := make(chan int64, 16)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		got <- n
		_, _ = io.WriteString(w, "stored\n")
	}))
	srv.EnableHTTP2 = false
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, srv.Listener.Addr().(*net.TCPAddr).Port, got
}

// waitLogLine waits until the agent's log has a line containing every part.
func (w *ward) waitLogLine(timeout time.Duration, parts ...string) {
	w.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, line := range strings.Split(w.readLog("agent.log"), "\n") {
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(line, p)
			}
			if ok {
				return
			}
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("agent log has no line with %q after %s", parts, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func networkFinding(evs []stored, pid int) *wardv1.Event {
	for _, ev := range findings(evs) {
		if ev.GetFinding().GetNetwork() != nil && int(ev.GetFinding().GetProcess().GetPid()) == pid {
			return ev
		}
	}
	return nil
}

func flowOf(evs []stored, pid, port int) *wardv1.NetworkFlow {
	for _, s := range evs {
		if f := s.Event.GetFlow(); f != nil && int(f.GetProcess().GetPid()) == pid && int(f.GetRemotePort()) == port {
			return f
		}
	}
	return nil
}

// checkTLSFinding asserts the common shape of a Part 2 finding made in TLS plaintext.
func checkTLSFinding(t *testing.T, ev *wardv1.Event, port int, lib, exe string, minBytes int64) {
	t.Helper()
	f := ev.GetFinding()
	nt := f.GetNetwork()
	if nt.GetRemoteAddress() != "127.0.0.1" || int(nt.GetRemotePort()) != port || nt.GetTransport() != "tcp" {
		t.Errorf("target %s %s:%d, want tcp 127.0.0.1:%d", nt.GetTransport(), nt.GetRemoteAddress(), nt.GetRemotePort(), port)
	}
	if nt.GetTlsLibrary() != lib || nt.GetDirection() != wardv1.NetworkTarget_DIRECTION_SEND {
		t.Errorf("library %q direction %v, want %s send", nt.GetTlsLibrary(), nt.GetDirection(), lib)
	}
	if int64(nt.GetBytesInspected()) < minBytes {
		t.Errorf("bytes inspected %d, want at least the %d-byte document", nt.GetBytesInspected(), minBytes)
	}
	if nt.GetSni() != "127.0.0.1" {
		t.Errorf("server name %q, want the Host the client addressed (127.0.0.1)", nt.GetSni())
	}
	if f.GetDataClass() != wardv1.DataClass_DATA_CLASS_PART2 {
		t.Errorf("data class %v, want PART2; matches %v", f.GetDataClass(), f.GetMatches())
	}
	p := f.GetProcess()
	me, _ := user.Current()
	if p.GetExe() != exe || p.GetUid() != uint32(os.Getuid()) || p.GetUser() != me.Username {
		t.Errorf("process exe %q uid %d user %q, want %s run by %s", p.GetExe(), p.GetUid(), p.GetUser(), exe, me.Username)
	}
	// Unknown app, not sanctioned: the default pack blocks Part 2 to it; the agent cannot
	// stop bytes the library already sent, so it alerts and says why.
	d := f.GetDecision()
	if d.GetRuleId() != "part2-unsanctioned-destination" || d.GetAction() != wardv1.Action_ACTION_BLOCK ||
		d.GetActionTaken() != wardv1.Action_ACTION_ALERT || !strings.Contains(d.GetEnforcement(), "TLS plaintext") {
		t.Errorf("decision %v", d)
	}
	masked := false
	for _, m := range f.GetMatches() {
		for _, s := range m.GetMaskedSamples() {
			masked = masked || strings.HasPrefix(s, "***-**-")
		}
	}
	if !masked {
		t.Errorf("no masked SSN among %v", f.GetMatches())
	}
}

// TestCurlPostOverTLSIsAFinding: curl (OpenSSL from the distribution) POSTs a Part 2 FHIR
// bundle over HTTPS to a local server. The uprobes on libssl see the request before it is
// encrypted; the agent classifies it with its destination and the collector stores a
// finding whose target is 127.0.0.1:port, attributed to curl's pid, exe and user. The
// connection's flow record says its plaintext was inspected, and no raw SSN is anywhere.
func TestCurlPostOverTLSIsAFinding(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not installed")
	}
	w := startWard(t)
	w.waitLogLine(60*time.Second, `msg="hooked TLS library"`, "library=openssl", "libssl.so")
	_, port, got := tlsPeer(t)
	doc, err := filepath.Abs("testdata/fhir-part2-bundle.json")
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(doc)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(curl, "-sS", "-k", "--http1.1", "-H", "Content-Type: application/fhir+json",
		"--data-binary", "@"+doc, fmt.Sprintf("https://127.0.0.1:%d/fhir/Bundle", port))
	if out, err := cmd.CombinedOutput(); err != nil || string(out) != "stored\n" {
		t.Fatalf("curl: %v %q", err, out)
	}
	if n := <-got; n != st.Size() {
		t.Fatalf("server received %d bytes, want %d", n, st.Size())
	}
	pid := cmd.ProcessState.Pid()
	exe, _ := filepath.EvalSymlinks(curl)
	evs := w.waitFor(60*time.Second, "curl's TLS finding and flow", func(evs []stored) bool {
		return networkFinding(evs, pid) != nil && flowOf(evs, pid, port) != nil
	})
	checkTLSFinding(t, networkFinding(evs, pid), port, "openssl", exe, st.Size())
	if fl := flowOf(evs, pid, port); !fl.GetTlsPlaintextSeen() || fl.GetTlsLibrary() != "openssl" || fl.GetTlsUninspectableReason() != "" {
		t.Errorf("flow TLS fields: seen %v library %q reason %q", fl.GetTlsPlaintextSeen(), fl.GetTlsLibrary(), fl.GetTlsUninspectableReason())
	}
	table, err := w.ctl("events")
	if err != nil {
		t.Fatal(err)
	}
	w.stop()
	for _, raw := range fixtureSSNs {
		if strings.Contains(table, raw) {
			t.Errorf("raw SSN %q in wardctl output", raw)
		}
	}
	assertNoRaw(t, w.home, fixtureSSNs...)
}

// goClientSource is a TLS client like any Go program: net/http over crypto/tls.
const goClientSource = `package main

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
)

func main() {
	if len(os.Args) == 2 && os.Args[1] == "version" {
		fmt.Println("tlsclient 1")
		return
	}
	body, err := os.ReadFile(os.Args[2])
	if err != nil {
		panic(err)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := c.Post(os.Args[1], "application/fhir+json", bytes.NewReader(body))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	io.Copy(os.Stdout, resp.Body)
	resp.Body.Close()
}
`

// TestGoTLSClientIsAFinding: a Go program (built here, stripped like release builds) posts
// the bundle with net/http. The agent finds crypto/tls.(*Conn).Write through .gopclntab and
// hooks the executable when it first runs; from then on every run of it is covered (the
// first run of a never-seen binary races the hook, so the test runs it once to get it
// hooked, as any first launch would).
func TestGoTLSClientIsAFinding(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(goClientSource), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module tlsclient\n\ngo 1.26\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "tlsclient")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, ".")
	build.Dir = dir
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the Go client: %v\n%s", err, out)
	}
	w := startWard(t)
	w.waitLogLine(60*time.Second, `msg="TLS discovery done"`)
	if out, err := exec.Command(bin, "version").CombinedOutput(); err != nil {
		t.Fatalf("%s version: %v %s", bin, err, out)
	}
	w.waitLogLine(60*time.Second, `msg="hooked TLS library"`, "library=go-crypto-tls", bin)
	_, port, got := tlsPeer(t)
	doc, _ := filepath.Abs("testdata/fhir-part2-bundle.json")
	st, err := os.Stat(doc)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, fmt.Sprintf("https://127.0.0.1:%d/fhir/Bundle", port), doc)
	if out, err := cmd.CombinedOutput(); err != nil || string(out) != "stored\n" {
		t.Fatalf("go client: %v %q", err, out)
	}
	if n := <-got; n != st.Size() {
		t.Fatalf("server received %d bytes, want %d", n, st.Size())
	}
	pid := cmd.ProcessState.Pid()
	evs := w.waitFor(60*time.Second, "the Go client's TLS finding", func(evs []stored) bool {
		return networkFinding(evs, pid) != nil
	})
	checkTLSFinding(t, networkFinding(evs, pid), port, "go-crypto-tls", bin, st.Size())
	w.stop()
	assertNoRaw(t, w.home, fixtureSSNs...)
}

// TestGnuTLSClientIsAFinding: gnutls-cli (GnuTLS from the distribution) sends an HTTP POST
// of the bundle; the gnutls_record_send uprobe sees it.
func TestGnuTLSClientIsAFinding(t *testing.T) {
	cli, err := exec.LookPath("gnutls-cli")
	if err != nil {
		t.Skip("gnutls-cli not installed (Debian: gnutls-bin; scripts/deps.sh test installs it)")
	}
	w := startWard(t)
	w.waitLogLine(60*time.Second, `msg="hooked TLS library"`, "library=gnutls")
	_, port, got := tlsPeer(t)
	body, err := os.ReadFile("testdata/fhir-part2-bundle.json")
	if err != nil {
		t.Fatal(err)
	}
	req := fmt.Sprintf("POST /fhir/Bundle HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/fhir+json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
	cmd := exec.Command(cli, "--insecure", "--port", strconv.Itoa(port), "127.0.0.1")
	cmd.Stdin = strings.NewReader(req)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	select {
	case n := <-got:
		if n != int64(len(body)) {
			t.Fatalf("server received %d bytes, want %d", n, len(body))
		}
	case <-time.After(20 * time.Second):
		t.Fatal("gnutls-cli never delivered the request")
	}
	exe, _ := filepath.EvalSymlinks(cli)
	evs := w.waitFor(60*time.Second, "gnutls-cli's TLS finding", func(evs []stored) bool {
		return networkFinding(evs, cmd.Process.Pid) != nil
	})
	checkTLSFinding(t, networkFinding(evs, cmd.Process.Pid), port, "gnutls", exe, int64(len(body)))
}

const staticClientSource = `#include <openssl/ssl.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
	if (argc != 3) return 2;
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	if (connect(s, (struct sockaddr *)&a, sizeof(a)) < 0) { perror("connect"); return 1; }
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	SSL *ssl = SSL_new(ctx);
	SSL_set_fd(ssl, s);
	if (SSL_connect(ssl) != 1) { fprintf(stderr, "handshake failed\n"); return 1; }
	static char body[1 << 20];
	FILE *f = fopen(argv[2], "rb");
	size_t n = fread(body, 1, sizeof(body), f);
	char head[256];
	int h = snprintf(head, sizeof(head), "POST /static HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n", n);
	SSL_write(ssl, head, h);
	SSL_write(ssl, body, (int)n);
	char buf[4096];
	while (SSL_read(ssl, buf, sizeof(buf)) > 0) {}
	close(s);
	return 0;
}
`

// TestStaticTLSClientIsReportedUninspectable: a client with OpenSSL linked statically and
// stripped has no TLS function to hook. It still sends the document; the agent cannot see
// the plaintext and must say so in the connection's flow record instead of staying silent.
func TestStaticTLSClientIsReportedUninspectable(t *testing.T) {
	needRoot(t)
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Skip("no C compiler")
	}
	if _, err := os.Stat("/usr/lib/x86_64-linux-gnu/libssl.a"); err != nil {
		t.Skip("static OpenSSL (libssl-dev) not installed")
	}
	dir := t.TempDir()
	src, bin := filepath.Join(dir, "client.c"), filepath.Join(dir, "staticclient")
	if err := os.WriteFile(src, []byte(staticClientSource), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(cc, "-O1", "-static", "-s", "-o", bin, src, "-lssl", "-lcrypto", "-lpthread").CombinedOutput(); err != nil {
		t.Skipf("cannot link a static OpenSSL client: %v\n%s", err, out)
	}
	w := startWard(t)
	w.waitLogLine(60*time.Second, `msg="TLS discovery done"`)
	_, port, got := tlsPeer(t)
	cmd := exec.Command(bin, strconv.Itoa(port), "testdata/fhir-part2-bundle.json")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("static client: %v %s", err, out)
	}
	if n := <-got; n <= 0 {
		t.Fatalf("server received %d bytes", n)
	}
	pid := cmd.ProcessState.Pid()
	evs := w.waitFor(60*time.Second, "the static client's flow", func(evs []stored) bool {
		return flowOf(evs, pid, port) != nil
	})
	fl := flowOf(evs, pid, port)
	if fl.GetTlsPlaintextSeen() || fl.GetTlsLibrary() != "openssl" ||
		!strings.Contains(fl.GetTlsUninspectableReason(), "statically linked openssl without symbols") {
		t.Errorf("flow TLS fields: seen %v library %q reason %q", fl.GetTlsPlaintextSeen(), fl.GetTlsLibrary(), fl.GetTlsUninspectableReason())
	}
	if ev := networkFinding(evs, pid); ev != nil {
		t.Errorf("a finding for a client whose plaintext cannot be seen: %v", ev)
	}
}
