package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/timestamppb"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/collector"
)

// TestEndToEnd runs a real collector, enrols and exports over mTLS like an agent, and drives
// wardctl's commands against it.
func TestEndToEnd(t *testing.T) {
	home := t.TempDir()
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
		return out.String(), err
	}
	var token string
	for deadline := time.Now().Add(10 * time.Second); ; {
		out, err := ctl("token", "create")
		if err == nil {
			token = strings.TrimSpace(out)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("collector not ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Enrol and export as an agent would.
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
	ev := &wardv1.Event{
		Id: uuid.Must(uuid.NewV7()).String(), AgentId: er.GetAgentId(), Seq: 1, Time: timestamppb.Now(),
		Host: &wardv1.Host{Hostname: "intake-01"},
		Payload: &wardv1.Event_Finding{Finding: &wardv1.Finding{
			DataClass: wardv1.DataClass_DATA_CLASS_PART2,
			Process:   &wardv1.Process{Pid: 77, Exe: "/usr/bin/rsync", User: "bob"},
			Target:    &wardv1.Finding_File{File: &wardv1.FileTarget{Path: "/mnt/share/sud-notes.xml", TargetKind: "share"}},
			Matches:   []*wardv1.Match{{Detector: "phi.ssn", MaskedSamples: []string{"***-**-6789"}}},
			Decision:  &wardv1.Decision{Severity: wardv1.Severity_SEVERITY_CRITICAL},
		}},
	}
	if _, err := agent.Export(ctx, &wardv1.ExportRequest{Events: []*wardv1.Event{ev}}); err != nil {
		t.Fatal(err)
	}

	out, err := ctl("events")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"TIME", "TARGET", "intake-01", "finding", "share", "PART2", "critical", "/mnt/share/sud-notes.xml", "/usr/bin/rsync[77]", "bob", "phi.ssn", "***-**-6789"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	out, err = ctl("events", "-o", "json", "--kind", "finding")
	if err != nil {
		t.Fatal(err)
	}
	var line eventLine
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &line); err != nil || line.RowID != 1 {
		t.Fatalf("json line %q: %v", out, err)
	}
	out, err = ctl("agents")
	if err != nil || !strings.Contains(out, er.GetAgentId()) || !strings.Contains(out, "active") {
		t.Fatalf("agents: %v\n%s", err, out)
	}
	if _, err := ctl("agents", "revoke", er.GetAgentId()); err != nil {
		t.Fatal(err)
	}
	if out, _ := ctl("agents"); !strings.Contains(out, "revoked") {
		t.Fatalf("agents after revoke:\n%s", out)
	}

	// Another home has no collector.
	var errb bytes.Buffer
	err = run(context.Background(), []string{"--home", t.TempDir(), "events"}, io.Discard, &errb)
	if err == nil || !strings.Contains(err.Error(), "is ward-collector running?") {
		t.Fatalf("no collector: %v", err)
	}
}
