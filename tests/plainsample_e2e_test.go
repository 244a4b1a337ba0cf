package tests

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
)

// TestPlainHTTPPostIsAFinding: curl POSTs the Part 2 bundle over plain HTTP to a local
// listener. No TLS library is involved; the packets the capture probe copied at the start of
// the flow are classified, and the collector stores a network finding attributed to curl,
// with no TLS library named and no raw SSN anywhere.
func TestPlainHTTPPostIsAFinding(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not installed")
	}
	// A snap length that holds the whole request (headers and the 2.4 KiB bundle travel in
	// one loopback segment): the default 2048 would classify a cut sample.
	w := startWard(t, "--config", writeConfig(t, "network:\n  capture:\n    snap: 4096\n"))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan int64, 1)
	srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		got <- n
		fmt.Fprintln(rw, "stored")
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	port := ln.Addr().(*net.TCPAddr).Port

	doc, err := filepath.Abs("testdata/fhir-part2-bundle.json")
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(doc)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(curl, "-sS", "--http1.1", "-H", "Content-Type: application/fhir+json",
		"--data-binary", "@"+doc, fmt.Sprintf("http://127.0.0.1:%d/fhir/Bundle", port))
	if out, err := cmd.CombinedOutput(); err != nil || string(out) != "stored\n" {
		t.Fatalf("curl: %v %q", err, out)
	}
	if n := <-got; n != st.Size() {
		t.Fatalf("server received %d bytes, want %d", n, st.Size())
	}
	pid := cmd.ProcessState.Pid()
	exe, _ := filepath.EvalSymlinks(curl)
	evs := w.waitFor(30*time.Second, "curl's plaintext finding", func(evs []stored) bool { return networkFinding(evs, pid) != nil })
	f := networkFinding(evs, pid).GetFinding()
	nt := f.GetNetwork()
	if nt.GetRemoteAddress() != "127.0.0.1" || int(nt.GetRemotePort()) != port || nt.GetTransport() != "tcp" ||
		nt.GetDirection() != wardv1.NetworkTarget_DIRECTION_SEND {
		t.Errorf("target %v", nt)
	}
	if nt.GetTlsLibrary() != "" {
		t.Errorf("TLS library %q named for a plaintext flow", nt.GetTlsLibrary())
	}
	if int64(nt.GetBytesInspected()) < st.Size() {
		t.Errorf("bytes inspected %d, want at least the %d-byte document", nt.GetBytesInspected(), st.Size())
	}
	if nt.GetSni() != "127.0.0.1" {
		t.Errorf("server name %q, want the HTTP Host", nt.GetSni())
	}
	if f.GetDataClass() != wardv1.DataClass_DATA_CLASS_PART2 {
		t.Errorf("data class %v; matches %v", f.GetDataClass(), f.GetMatches())
	}
	if p := f.GetProcess(); p.GetExe() != exe || p.GetUid() != uint32(os.Getuid()) || p.GetUser() == "" {
		t.Errorf("process exe %q uid %d user %q, want %s", p.GetExe(), p.GetUid(), p.GetUser(), exe)
	}
	// The default pack blocks Part 2 to an unknown app; the packets had left when they were
	// classified, so the agent alerts and says why.
	if d := f.GetDecision(); d.GetRuleId() != "part2-unsanctioned-destination" || d.GetActionTaken() != wardv1.Action_ACTION_ALERT ||
		!strings.Contains(d.GetEnforcement(), "plaintext sample") {
		t.Errorf("decision %v", d)
	}
	w.stop()
	assertNoRaw(t, w.home, fixtureSSNs...)
}
