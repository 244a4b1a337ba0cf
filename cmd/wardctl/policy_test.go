package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/ward-dlp/ward/agent/policysync"
	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/collector"
	"github.com/ward-dlp/ward/policy"
)

// TestPolicyLifecycle drives the whole distribution path with real parts: wardctl makes a
// key, lints, tests, signs and pushes; a real collector stores the bundle and serves it over
// mTLS; an agent's policysync fetches, verifies and applies it and reports the version,
// which wardctl agents and policy status then show.
func TestPolicyLifecycle(t *testing.T) {
	home, work := t.TempDir(), t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	cfg := collector.Defaults(home)
	cfg.Listen = addr
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
	var token string
	for deadline := time.Now().Add(10 * time.Second); ; {
		out, err := ctl("token", "create")
		if err == nil {
			token = strings.Fields(out)[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("collector not ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Author: key, policy, lint, test, sign.
	key := filepath.Join(work, "policy.key")
	out, err := ctl("policy", "keygen", "-o", key, "--name", "clinic")
	if err != nil {
		t.Fatalf("keygen: %v %s", err, out)
	}
	vkey := strings.Fields(out)[0]
	if !strings.HasPrefix(vkey, "clinic+") {
		t.Fatalf("verifier key %q", vkey)
	}
	if st, _ := os.Stat(key); st.Mode().Perm() != 0o600 {
		t.Fatalf("signing key mode %v", st.Mode())
	}
	if out, err := ctl("policy", "keygen", "-o", key); err == nil {
		t.Fatalf("keygen overwrote a key: %s", out)
	}
	pol := filepath.Join(work, "clinic.yaml")
	if out, err := ctl("policy", "init", "-o", pol); err != nil {
		t.Fatalf("init: %v %s", err, out)
	}
	src, _ := os.ReadFile(pol)
	src = bytes.Replace(src, []byte("version: 1\n"), []byte("version: 2\n"), 1)
	if err := os.WriteFile(pol, src, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := ctl("policy", "lint", pol); err != nil || !strings.Contains(out, "ok: behavioural-health-default v2") {
		t.Fatalf("lint: %v %s", err, out)
	}
	broken := filepath.Join(work, "broken.yaml")
	os.WriteFile(broken, bytes.Replace(src, []byte(`destination.kind == "removable-media"'`), []byte(`destination.knd == "removable-media"'`), 1), 0o644)
	if out, err := ctl("policy", "lint", broken); err == nil || !strings.Contains(out, "broken.yaml:") || !strings.Contains(out, "undeclared reference") {
		t.Fatalf("lint of a broken policy: %v %s", err, out)
	}
	fixtures := filepath.Join(work, "fixtures.yaml")
	os.WriteFile(fixtures, []byte(`events:
  - name: USB copy of SUD notes
    input:
      data.classes: {part2: 95}
      destination.kind: removable-media
      user.name: alice
    expect: {rule: part2-removable-media, action: block}
  - name: PHI pasted into ChatGPT
    input:
      event.kind: network
      data.classes: {phi: 80}
      destination.kind: network-app
      destination.domain: chatgpt.com
    expect: {outcome: block}
  - name: plain write
    input:
      destination.kind: watched-path
    expect: {rule: none}
`), 0o644)
	out, err = ctl("policy", "test", pol, fixtures)
	if err != nil || !strings.Contains(out, "USB copy of SUD notes: block rule=part2-removable-media severity=critical") ||
		!strings.Contains(out, "ok") || !strings.Contains(out, "3 events with behavioural-health-default v2") {
		t.Fatalf("policy test: %v\n%s", err, out)
	}
	wrong := filepath.Join(work, "wrong.yaml")
	os.WriteFile(wrong, []byte("events:\n  - input: {data.classes: {phi: 90}}\n    expect: {rule: part2-removable-media}\n"), 0o644)
	if out, err := ctl("policy", "test", pol, wrong); err == nil || !strings.Contains(out, "FAIL: rule audit-record, expected part2-removable-media") {
		t.Fatalf("policy test with a wrong expectation: %v\n%s", err, out)
	}
	bundle := filepath.Join(work, "clinic-v2.bundle")
	if out, err := ctl("policy", "sign", "--key", key, "--expires", "30d", "-o", bundle, pol); err != nil {
		t.Fatalf("sign: %v %s", err, out)
	}
	if out, err := ctl("policy", "lint", bundle); err != nil || !strings.Contains(out, "signed for group default") {
		t.Fatalf("lint bundle: %v %s", err, out)
	}

	// Push: accepted once; the same version, a tampered bundle and a plain YAML are refused.
	if out, err := ctl("policy", "push", bundle); err != nil || !strings.Contains(out, "pushed behavioural-health-default v2 to group default") {
		t.Fatalf("push: %v %s", err, out)
	}
	if out, err := ctl("policy", "push", bundle); err == nil || !strings.Contains(out+err.Error(), "HTTP 409") {
		t.Fatalf("second push of v2: %v %s", err, out)
	}
	b, _ := os.ReadFile(bundle)
	tampered := filepath.Join(work, "tampered.bundle")
	os.WriteFile(tampered, bytes.Replace(b, []byte("version: 2"), []byte("version: 3"), 1), 0o644)
	if out, err := ctl("policy", "push", tampered); err == nil || !strings.Contains(err.Error(), "payload does not match") {
		t.Fatalf("push of a tampered bundle: %v %s", err, out)
	}
	if _, err := ctl("policy", "push", pol); err == nil {
		t.Fatal("pushed an unsigned policy")
	}

	// An agent enrols, polls over mTLS, verifies with the pinned key and applies v2.
	caPEM, _ := os.ReadFile(filepath.Join(home, "collector", "pki", "ca.crt"))
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
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k)
	er, err := dial(nil).Enroll(ctx, &wardv1.EnrollRequest{Token: token, CsrDer: csr, Hostname: "therapy-03"})
	if err != nil {
		t.Fatal(err)
	}
	agentClient := dial(&tls.Certificate{Certificate: [][]byte{er.GetCertificateDer()}, PrivateKey: k})
	sync, err := policysync.New(policysync.Config{Dir: t.TempDir(), Keys: []string{vkey}, Group: "default", PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithCancel(ctx)
	sdone := make(chan struct{})
	go func() { _ = sync.Run(sctx, agentClient); close(sdone) }()
	t.Cleanup(func() { scancel(); <-sdone })
	for deadline := time.Now().Add(10 * time.Second); sync.Version() != 2; {
		if time.Now().After(deadline) {
			t.Fatalf("agent did not apply v2: %v", sync.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
	d := sync.Policy().Evaluate(&policy.Input{Classes: map[policy.Class]int{policy.ClassPart2: 95}, Destination: policy.Destination{Kind: policy.DestRemovableMedia}})
	if d.Version != "2" || d.RuleID != "part2-removable-media" {
		t.Fatalf("decision under v2: %s v%s", d, d.Version)
	}
	// The collector shows which agent runs which version (reported on the next poll).
	for deadline := time.Now().Add(10 * time.Second); ; {
		out, err := ctl("agents")
		if err == nil && strings.Contains(out, "default/v2") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("wardctl agents does not show default/v2: %v\n%s", err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out, err := ctl("policy", "status"); err != nil || !strings.Contains(out, "v2: 1") {
		t.Fatalf("policy status: %v\n%s", err, out)
	}

	// A bundle signed by another key reaches the agent but is refused; the agent keeps v2 and
	// the refusal shows at the collector.
	otherKey := filepath.Join(work, "other.key")
	if _, err := ctl("policy", "keygen", "-o", otherKey); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(pol, bytes.Replace(src, []byte("version: 2\n"), []byte("version: 3\n"), 1), 0o644)
	rogue := filepath.Join(work, "rogue.bundle")
	if out, err := ctl("policy", "sign", "--key", otherKey, "-o", rogue, pol); err != nil {
		t.Fatalf("sign: %v %s", err, out)
	}
	if out, err := ctl("policy", "push", rogue); err != nil {
		t.Fatalf("push rogue: %v %s", err, out)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		out, _ := ctl("agents")
		if strings.Contains(out, "default/v2 (refused a bundle)") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("refusal not reported: %v\n%s", sync.Status(), out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if sync.Version() != 2 || !strings.Contains(sync.Status().GetLastError(), "signature") {
		t.Fatalf("agent after rogue bundle: %v", sync.Status())
	}
	scancel()
	<-sdone

	// Hostile polls: a bad group is refused, absurd versions and a huge error are bounded.
	if _, err := agentClient.FetchPolicy(ctx, &wardv1.FetchPolicyRequest{TargetGroup: "../etc/passwd"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad group: %v", err)
	}
	resp, err := agentClient.FetchPolicy(ctx, &wardv1.FetchPolicyRequest{TargetGroup: "default", CurrentVersion: 1<<64 - 1,
		RejectedVersion: 1<<64 - 1, LastError: strings.Repeat("é", 1<<18), CurrentSha256: strings.Repeat("z", 1<<16)})
	if err != nil || resp.GetBundle() != nil || resp.GetLatestVersion() != 3 {
		t.Fatalf("hostile poll: %v %v", resp, err)
	}
	out, err = ctl("agents", "-o", "json")
	if err != nil || len(out) > 4096 || !strings.Contains(out, `"version":9223372036854775807`) {
		t.Fatalf("hostile report stored unbounded or wrong (%d bytes): %v\n%.500s", len(out), err, out)
	}
	// An unauthenticated caller cannot poll.
	if _, err := dial(nil).FetchPolicy(ctx, &wardv1.FetchPolicyRequest{TargetGroup: "default"}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("poll without a client certificate: %v", err)
	}
}
