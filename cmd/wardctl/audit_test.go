package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"golang.org/x/mod/sumdb/tlog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/timestamppb"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/collector"
	"github.com/ward-dlp/ward/collector/sinks"
	"github.com/ward-dlp/ward/collector/sinks/core"
	"github.com/ward-dlp/ward/collector/sinks/webhook"
)

// socHook is a TLS receiver standing in for a SIEM's HTTP intake: it refuses with 400 while
// refuse is set and records the OCSF events it accepts.
type socHook struct {
	mu     sync.Mutex
	refuse bool
	uids   map[string]bool
	checks []map[string]any // audit checkpoints received (class 1008)
}

func (h *socHook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.refuse {
		http.Error(w, `{"error":"field ward.matches not in schema"}`, http.StatusBadRequest)
		return
	}
	var b struct {
		Events []map[string]any `json:"events"`
	}
	_ = json.Unmarshal(body, &b)
	for _, e := range b.Events {
		if e["class_uid"] == float64(1008) {
			h.checks = append(h.checks, e)
			continue
		}
		h.uids[e["metadata"].(map[string]any)["uid"].(string)] = true
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *socHook) state() (int, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.uids), len(h.checks)
}

// TestAuditAndDeadLettersEndToEnd drives a real collector: administrative actions and event
// reads land in the audit log, which verifies; a SIEM refusal dead-letters findings, which
// wardctl lists and replays; the signed checkpoint reaches the SIEM; a row altered in SQLite
// is named by verify, and a truncation is caught against a checkpoint kept outside.
func TestAuditAndDeadLettersEndToEnd(t *testing.T) {
	home := t.TempDir()
	hook := &socHook{refuse: true, uids: map[string]bool{}}
	srv := httptest.NewTLSServer(hook)
	defer srv.Close()
	caFile := filepath.Join(home, "soc-ca.pem")
	secretFile := filepath.Join(home, "hook.secret")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(secretFile, []byte("0123456789abcdef0123456789abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	cfg := collector.Defaults(home)
	cfg.Listen = addr
	cfg.Sinks = []sinks.Config{{Name: "soc", Type: sinks.TypeWebhook,
		Batch:   sinks.BatchConfig{MaxWait: 10 * time.Millisecond},
		Retry:   sinks.RetryConfig{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond},
		Webhook: &webhook.Config{URL: srv.URL + "/ingest", SecretFile: secretFile, TLS: core.TLSConfig{CAFile: caFile}}}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- collector.Run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	ctl := func(args ...string) (string, error) {
		var out, errb bytes.Buffer
		err := run(context.Background(), append([]string{"--home", home}, args...), &out, &errb)
		return out.String() + errb.String(), err
	}
	must := func(args ...string) string {
		t.Helper()
		out, err := ctl(args...)
		if err != nil {
			t.Fatalf("wardctl %v: %v\n%s", args, err, out)
		}
		return out
	}
	eventually := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(15 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	var token string
	eventually("the collector", func() bool {
		out, err := ctl("token", "create")
		token = strings.SplitN(out, "\n", 2)[0]
		return err == nil
	})

	// Enrol and export two findings, as an agent.
	caPEM, err := os.ReadFile(filepath.Join(home, "collector", "pki", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	dial := func(cert *tls.Certificate) wardv1.AgentServiceClient {
		tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13, ServerName: "localhost"}
		if cert != nil {
			tc.Certificates = []tls.Certificate{*cert}
		}
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cc.Close() })
		return wardv1.NewAgentServiceClient(cc)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	er, err := dial(nil).Enroll(ctx, &wardv1.EnrollRequest{Token: token, CsrDer: csr, Hostname: "intake-01"})
	if err != nil {
		t.Fatal(err)
	}
	agent := dial(&tls.Certificate{Certificate: [][]byte{er.GetCertificateDer()}, PrivateKey: key})
	var ids []string
	var evs []*wardv1.Event
	for seq := uint64(1); seq <= 2; seq++ {
		ev := &wardv1.Event{Id: uuid.Must(uuid.NewV7()).String(), AgentId: er.GetAgentId(), Seq: seq, Time: timestamppb.Now(),
			Host: &wardv1.Host{Hostname: "intake-01"},
			Payload: &wardv1.Event_Finding{Finding: &wardv1.Finding{DataClass: wardv1.DataClass_DATA_CLASS_PART2,
				Process:  &wardv1.Process{Pid: 77, Exe: "/usr/bin/rsync", User: "bob", Args: []string{"rsync", "078-05-1120"}},
				Target:   &wardv1.Finding_File{File: &wardv1.FileTarget{Path: "/mnt/share/sud-notes.xml"}},
				Matches:  []*wardv1.Match{{Detector: "phi.ssn", MaskedSamples: []string{"***-**-1120"}}},
				Decision: &wardv1.Decision{Severity: wardv1.Severity_SEVERITY_HIGH}}}}
		ids, evs = append(ids, ev.GetId()), append(evs, ev)
	}
	if _, err := agent.Export(ctx, &wardv1.ExportRequest{Events: evs}); err != nil {
		t.Fatal(err)
	}

	// The SIEM refuses: both findings become dead letters with the reason.
	eventually("dead letters", func() bool {
		out, _ := ctl("sinks", "dead-letters", "--sink", "soc", "-o", "json")
		return strings.Count(out, "\n") == 2
	})
	out := must("sinks", "dead-letters")
	for _, want := range []string{"soc", ids[0], ids[1], "finding", "HTTP 400", "not in schema"} {
		if !strings.Contains(out, want) {
			t.Errorf("dead-letters table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "***-**-1120") || strings.Contains(out, "078-05-1120") || strings.Contains(out, "sud-notes") {
		t.Errorf("dead-letter listing shows event content:\n%s", out)
	}
	if out := must("sinks", "status"); !strings.Contains(out, "soc") || !strings.Contains(out, "HTTP 400") && !strings.Contains(out, "  2  ") {
		t.Errorf("status:\n%s", out)
	}

	// The SIEM is fixed; replay everything.
	hook.mu.Lock()
	hook.refuse = false
	hook.mu.Unlock()
	if _, err := ctl("sinks", "replay", "--sink", "soc"); err == nil {
		t.Fatal("replay without --id or --all was accepted")
	}
	if _, err := ctl("sinks", "replay", "--sink", "nope", "--all"); err == nil || !strings.Contains(err.Error(), "not configured") {
		t.Fatalf("replay to an unknown sink: %v", err)
	}
	if out := must("sinks", "replay", "--sink", "soc", "--all"); !strings.Contains(out, "2 dead letters of soc queued again") {
		t.Fatalf("replay: %s", out)
	}
	eventually("the replayed findings", func() bool { n, _ := hook.state(); return n == 2 })
	eventually("the status", func() bool {
		out := must("sinks", "status", "-o", "json")
		var s sinkSummary
		if err := json.Unmarshal([]byte(out), &s); err != nil {
			t.Fatalf("%v: %q", err, out)
		}
		return s.Delivered == 2 && s.DeadLetters == 0 && s.Depth == 0
	})

	must("events")
	must("agents", "revoke", er.GetAgentId())
	out = must("audit", "list")
	for _, want := range []string{"collector.start", "enrollment_token.create", "sink.replay", "events.read", "agent.revoke", er.GetAgentId(), "unix:"} {
		if !strings.Contains(out, want) {
			t.Errorf("audit list lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, token) {
		t.Error("the enrolment token is in the audit log")
	}
	outside := filepath.Join(t.TempDir(), "siem.checkpoint")
	must("audit", "checkpoint", "-o", outside)
	eventually("the checkpoint at the SIEM", func() bool { _, c := hook.state(); return c >= 1 })
	if out := must("audit", "verify", "--checkpoint", outside); !strings.Contains(out, "audit log verified") {
		t.Fatalf("verify: %s", out)
	}

	// Alter one row directly in SQLite: verify names it.
	db, err := sql.Open("sqlite", "file:"+filepath.Join(home, "collector", "ward.db")+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var idx int64
	var orig []byte
	if err := db.QueryRow(`SELECT idx, record FROM audit_log WHERE CAST(record AS TEXT) LIKE '%agent.revoke%'`).Scan(&idx, &orig); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE audit_log SET record = ? WHERE idx = ?`, bytes.Replace(orig, []byte(`"success"`), []byte(`"failure"`), 1), idx); err != nil {
		t.Fatal(err)
	}
	_, err = ctl("audit", "verify")
	if err == nil || !strings.Contains(err.Error(), "entry "+itoa(idx)+": altered") {
		t.Fatalf("verify after altering entry %d: %v", idx, err)
	}
	if _, err := db.Exec(`UPDATE audit_log SET record = ? WHERE idx = ?`, orig, idx); err != nil {
		t.Fatal(err)
	}
	must("audit", "verify")

	// Truncate the newest entries with their hashes and checkpoints: consistent in itself,
	// caught by the checkpoint the SIEM holds.
	cut := idx - 1
	for _, q := range []string{`DELETE FROM audit_log WHERE idx >= ?`, `DELETE FROM audit_hashes WHERE id >= ?`, `DELETE FROM audit_checkpoints WHERE size > ?`} {
		arg := cut
		if strings.Contains(q, "audit_hashes") {
			arg = tlog.StoredHashIndex(0, cut)
		}
		if _, err := db.Exec(q, arg); err != nil {
			t.Fatal(err)
		}
	}
	_, err = ctl("audit", "verify", "--checkpoint", outside)
	if err == nil || !strings.Contains(err.Error(), "entry "+itoa(cut)+": missing") || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("verify after truncation: %v", err)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
