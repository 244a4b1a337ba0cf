package api

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/collector/enroll"
	"github.com/ward-dlp/ward/collector/store"
)

type harness struct {
	srv    *Server
	store  *store.Store
	enr    *enroll.Enroller
	sock   string
	client *http.Client
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func unixClient(sock string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
}

// start runs the API on a real unix socket in dir; sockDir lets a test loosen directory modes.
func start(t *testing.T, sockDir string) *harness {
	t.Helper()
	dir := t.TempDir()
	ca, err := enroll.OpenAuthority(filepath.Join(dir, "pki"), enroll.Options{}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(context.Background(), filepath.Join(dir, "ward.db"))
	if err != nil {
		t.Fatal(err)
	}
	enr := enroll.NewEnroller(ca, st, 0, 0, quietLog())
	if sockDir == "" {
		sockDir = filepath.Join(dir, "collector")
	}
	sock := filepath.Join(sockDir, "admin.sock")
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := New(st, enr, "test", quietLog())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l, time.Second) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		_ = st.Close()
	})
	return &harness{srv: srv, store: st, enr: enr, sock: sock, client: unixClient(sock)}
}

func (h *harness) do(t *testing.T, method, path string, body any) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://ward"+path, rd)
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func (h *harness) enrolAgent(t *testing.T) string {
	t.Helper()
	tok, _, err := h.enr.CreateToken(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	id, err := h.enr.Enroll(context.Background(), enroll.Request{Token: tok, CSRDER: csr, Hostname: "intake-01"})
	if err != nil {
		t.Fatal(err)
	}
	return id.AgentID
}

// ssnFinding is a finding as an agent reports it: the SSN appears only masked and keyed.
func ssnFinding(agentID string, seq uint64) *wardv1.Event {
	return &wardv1.Event{
		Id:      uuid.Must(uuid.NewV7()).String(),
		AgentId: agentID,
		Seq:     seq,
		Time:    timestamppb.New(time.Date(2026, 5, 1, 9, 30, 0, 0, time.UTC)),
		Host:    &wardv1.Host{Hostname: "intake-01", MachineId: "m-1"},
		Payload: &wardv1.Event_Finding{Finding: &wardv1.Finding{
			DataClass:  wardv1.DataClass_DATA_CLASS_PHI,
			Confidence: 95,
			Process:    &wardv1.Process{Pid: 4242, Exe: "/usr/bin/cp", User: "alice"},
			Target:     &wardv1.Finding_File{File: &wardv1.FileTarget{Path: "/media/usb/intake.csv", Size: 2048}},
			Matches: []*wardv1.Match{{
				Detector:      "phi.ssn",
				DataClass:     wardv1.DataClass_DATA_CLASS_PHI,
				Confidence:    95,
				Count:         1,
				Offsets:       []uint64{118},
				MaskedSamples: []string{"***-**-6789"},
				Fingerprints:  []string{"3f1c2a9be0d44f7f9a1b6c5d2e8f7a6b3c4d5e6f708192a3b4c5d6e7f8091a2b"},
			}},
			Decision: &wardv1.Decision{Action: wardv1.Action_ACTION_ALERT, Severity: wardv1.Severity_SEVERITY_HIGH,
				RuleId: "phi-to-removable", ComplianceTags: []string{"HIPAA 164.312(b)"}},
		}},
	}
}

func (h *harness) insert(t *testing.T, evs ...*wardv1.Event) {
	t.Helper()
	var recs []store.Record
	for _, ev := range evs {
		r, err := store.RecordFromEvent(ev)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	if _, err := h.store.InsertEvents(context.Background(), evs[0].GetAgentId(), recs, time.Now()); err != nil {
		t.Fatal(err)
	}
}

func TestSocketModeAndHealth(t *testing.T) {
	h := start(t, "")
	fi, err := os.Stat(h.sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, want 0600", fi.Mode().Perm())
	}
	resp, body := h.do(t, "GET", "/v1/healthz", nil)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"ok"`) {
		t.Fatalf("healthz %d %s", resp.StatusCode, body)
	}
	// A second listener on a live socket is refused, not stolen.
	if _, err := Listen(h.sock); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second Listen: %v", err)
	}
}

// TestEventsRoundTrip also checks the raw-value rule: the only form of the SSN anywhere in
// the output is the agent's mask.
func TestEventsRoundTrip(t *testing.T) {
	h := start(t, "")
	id := h.enrolAgent(t)
	orig := []*wardv1.Event{ssnFinding(id, 1), ssnFinding(id, 2)}
	h.insert(t, orig...)

	resp, body := h.do(t, "GET", "/v1/events?kind=finding&limit=10", nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("GET /v1/events: %d %s", resp.StatusCode, body)
	}
	lines := strings.Split(strings.TrimSpace(string(body)), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2:\n%s", len(lines), body)
	}
	for i, l := range lines {
		var line EventLine
		if err := json.Unmarshal([]byte(l), &line); err != nil {
			t.Fatal(err)
		}
		ev := &wardv1.Event{}
		if err := protojson.Unmarshal(line.Event, ev); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(ev, orig[i]) {
			t.Fatalf("line %d does not round-trip:\n%s", i, l)
		}
		if line.RowID != int64(i+1) || line.ReceivedAt.IsZero() {
			t.Fatalf("metadata %+v", line)
		}
	}
	if !strings.Contains(string(body), `"masked_samples":["***-**-6789"]`) {
		t.Fatalf("masked sample missing:\n%s", body)
	}
	if strings.Contains(string(body), "123-45-6789") || strings.Contains(string(body), "123456789") {
		t.Fatal("output contains an unmasked SSN")
	}
	// Filters and cursors.
	_, body = h.do(t, "GET", "/v1/events?after=1", nil)
	if n := strings.Count(string(body), "\n"); n != 1 {
		t.Fatalf("after=1 gave %d lines", n)
	}
	_, body = h.do(t, "GET", "/v1/events?kind=health", nil)
	if len(body) != 0 {
		t.Fatalf("kind=health gave %s", body)
	}
	if resp, _ := h.do(t, "GET", "/v1/events?kind=bogus", nil); resp.StatusCode != 400 {
		t.Fatalf("bad kind: %d", resp.StatusCode)
	}
}

func TestFollowStreamsNewEvent(t *testing.T) {
	h := start(t, "")
	id := h.enrolAgent(t)
	h.insert(t, ssnFinding(id, 1)) // existing events are not replayed without after=

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://ward/v1/events/follow", nil)
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("follow: %d", resp.StatusCode)
	}
	h.insert(t, ssnFinding(id, 2))
	sc := bufio.NewScanner(resp.Body)
	if !sc.Scan() {
		t.Fatalf("no line: %v", sc.Err())
	}
	var line EventLine
	if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
		t.Fatal(err)
	}
	ev := &wardv1.Event{}
	if err := protojson.Unmarshal(line.Event, ev); err != nil {
		t.Fatal(err)
	}
	if ev.GetSeq() != 2 || line.RowID != 2 {
		t.Fatalf("followed seq %d rowid %d, want 2/2", ev.GetSeq(), line.RowID)
	}
}

func TestTokensAndAgents(t *testing.T) {
	h := start(t, "")
	resp, body := h.do(t, "POST", "/v1/enrollment-tokens", map[string]string{"ttl": "30m"})
	if resp.StatusCode != 201 {
		t.Fatalf("create token: %d %s", resp.StatusCode, body)
	}
	var tr TokenResponse
	if err := json.Unmarshal(body, &tr); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tr.Token, enroll.TokenPrefix) || time.Until(tr.ExpiresAt) > 31*time.Minute {
		t.Fatalf("token %+v", tr)
	}
	if resp, _ := h.do(t, "POST", "/v1/enrollment-tokens", nil); resp.StatusCode != 201 {
		t.Fatalf("token with default ttl: %d", resp.StatusCode)
	}
	if resp, _ := h.do(t, "POST", "/v1/enrollment-tokens", map[string]string{"ttl": "9000h"}); resp.StatusCode != 400 {
		t.Fatalf("overlong ttl: %d", resp.StatusCode)
	}

	id := h.enrolAgent(t)
	_, body = h.do(t, "GET", "/v1/agents", nil)
	var ar AgentsResponse
	if err := json.Unmarshal(body, &ar); err != nil || len(ar.Agents) != 1 || ar.Agents[0].ID != id {
		t.Fatalf("agents: %s %v", body, err)
	}
	resp, body = h.do(t, "POST", "/v1/agents/"+id+"/revoke", nil)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"revoked":true`) {
		t.Fatalf("revoke: %d %s", resp.StatusCode, body)
	}
	if resp, _ := h.do(t, "POST", "/v1/agents/nope/revoke", nil); resp.StatusCode != 404 {
		t.Fatalf("revoke unknown: %d", resp.StatusCode)
	}
}

// TestPeerCredRefusal runs the real socket with an allow-list that excludes the test's own
// uid: the kernel-reported uid, not the socket's mode, is what refuses.
func TestPeerCredRefusal(t *testing.T) {
	h := start(t, "")
	h.srv.allowed = map[uint32]bool{4_000_000: true}
	resp, body := h.do(t, "GET", "/v1/healthz", nil)
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("refused peer got %d %s", resp.StatusCode, body)
	}
}

// TestPeerCredNonRootProcess connects from a real process running as nobody. It needs root
// (to switch uid) and loosens the socket's file modes so that only SO_PEERCRED stands between
// that process and the API.
func TestPeerCredNonRootProcess(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to start a helper as another uid")
	}
	const nobody = 65534
	open, err := os.MkdirTemp("", "ward-api-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(open) })
	if err := os.Chmod(open, 0o755); err != nil {
		t.Fatal(err)
	}
	h := start(t, filepath.Join(open, "collector"))
	if err := os.Chmod(filepath.Dir(h.sock), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(h.sock, 0o666); err != nil {
		t.Fatal(err)
	}
	// The go test binary lives in a 0700 build directory; copy it where nobody can run it.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(open, "api.test")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestHelperClient$")
	cmd.Env = append(os.Environ(), "WARD_API_HELPER_SOCKET="+h.sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "STATUS 403") {
		t.Fatalf("non-root peer was not refused:\n%s", out)
	}
	// And root still gets in through the same loosened socket.
	if resp, _ := h.do(t, "GET", "/v1/healthz", nil); resp.StatusCode != 200 {
		t.Fatalf("root: %d", resp.StatusCode)
	}
}

// TestHelperClient is the helper process of TestPeerCredNonRootProcess.
func TestHelperClient(t *testing.T) {
	sock := os.Getenv("WARD_API_HELPER_SOCKET")
	if sock == "" {
		t.Skip("helper process only")
	}
	resp, err := unixClient(sock).Get("http://ward/v1/agents")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	fmt.Printf("uid %d STATUS %d\n", os.Getuid(), resp.StatusCode)
}
