package ingest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/collector/enroll"
	"github.com/ward-dlp/ward/collector/store"
)

type harness struct {
	addr  string
	enr   *enroll.Enroller
	store *store.Store
	ca    *x509.CertPool
	svc   *Service
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func startServer(t *testing.T, limits Limits) *harness {
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
	svc := New(enr, st, limits, quietLog())
	srv := svc.NewGRPCServer()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		_ = st.Close()
	})
	return &harness{addr: lis.Addr().String(), enr: enr, store: st, ca: ca.CAPool(), svc: svc}
}

// dial connects like an agent: pinning the collector CA, with an optional client certificate.
func (h *harness) dial(t *testing.T, cert *tls.Certificate, opts ...grpc.DialOption) (wardv1.AgentServiceClient, *grpc.ClientConn) {
	t.Helper()
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: h.ca, ServerName: "localhost"}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	cc, err := grpc.NewClient(h.addr, append(opts, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return wardv1.NewAgentServiceClient(cc), cc
}

// enrolAgent runs the real enrolment RPC and returns the agent's identity.
func (h *harness) enrolAgent(t *testing.T) (string, *tls.Certificate) {
	t.Helper()
	ctx := context.Background()
	tok, _, err := h.enr.CreateToken(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	client, _ := h.dial(t, nil)
	resp, err := client.Enroll(ctx, &wardv1.EnrollRequest{Token: tok, CsrDer: csr, Hostname: "intake-01", MachineId: "m-1", AgentVersion: "test"})
	if err != nil {
		t.Fatalf("enrol: %v", err)
	}
	if len(resp.GetFingerprintKey()) != 32 || len(resp.GetCaCertificateDer()) == 0 {
		t.Fatalf("enrol response lacks key material: %v", resp)
	}
	return resp.GetAgentId(), &tls.Certificate{Certificate: [][]byte{resp.GetCertificateDer()}, PrivateKey: key}
}

func event(agentID string, seq uint64) *wardv1.Event {
	return &wardv1.Event{
		Id:      uuid.Must(uuid.NewV7()).String(),
		AgentId: agentID,
		Seq:     seq,
		Time:    timestamppb.Now(),
		Host:    &wardv1.Host{Hostname: "intake-01"},
		Payload: &wardv1.Event_File{File: &wardv1.FileActivity{
			Kind: wardv1.FileActivity_KIND_WRITE_CLOSED, Path: "/home/alice/notes.txt", BytesWritten: 12,
			Process: &wardv1.Process{Pid: 10, Exe: "/usr/bin/vim", User: "alice"},
		}},
	}
}

func batch(agentID string, seqs ...uint64) *wardv1.ExportRequest {
	req := &wardv1.ExportRequest{}
	for _, s := range seqs {
		req.Events = append(req.Events, event(agentID, s))
	}
	return req
}

func code(err error) codes.Code { return status.Code(err) }

func TestEnrolExportDuplicate(t *testing.T) {
	h := startServer(t, Limits{})
	ctx := context.Background()
	id, cert := h.enrolAgent(t)
	client, _ := h.dial(t, cert)

	req := batch(id, 1, 2, 3, 7)
	for i := range 2 {
		resp, err := client.Export(ctx, req)
		if err != nil {
			t.Fatalf("export #%d: %v", i, err)
		}
		acked := resp.GetAcked()
		if len(acked) != 2 || acked[0].GetFirst() != 1 || acked[0].GetLast() != 3 || acked[1].GetFirst() != 7 || acked[1].GetLast() != 7 {
			t.Fatalf("export #%d acked %v", i, acked)
		}
	}
	stored, err := h.store.ListEvents(ctx, store.Filter{AgentID: id})
	if err != nil {
		t.Fatal(err)
	}
	if len(stored) != 4 {
		t.Fatalf("stored %d events, want 4 (duplicates stored once)", len(stored))
	}
	a, _ := h.store.Agent(ctx, id)
	if a.LastSeen == nil {
		t.Fatal("last_seen not set")
	}

	// Renewal over the authenticated channel keeps the identity.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	rr, err := client.RenewCertificate(ctx, &wardv1.RenewCertificateRequest{CsrDer: csr})
	if err != nil {
		t.Fatal(err)
	}
	renewed, _ := x509.ParseCertificate(rr.GetCertificateDer())
	if renewed.Subject.CommonName != id {
		t.Fatalf("renewed for %q", renewed.Subject.CommonName)
	}
	client2, _ := h.dial(t, &tls.Certificate{Certificate: [][]byte{rr.GetCertificateDer()}, PrivateKey: key})
	if _, err := client2.Export(ctx, batch(id, 8)); err != nil {
		t.Fatalf("export with renewed certificate: %v", err)
	}
}

func TestMalformedEventsRejectedButAcked(t *testing.T) {
	h := startServer(t, Limits{MaxEventBytes: 2048})
	ctx := context.Background()
	id, cert := h.enrolAgent(t)
	client, _ := h.dial(t, cert)

	req := batch(id, 1, 2, 3, 4, 5)
	req.Events[1].Id = "not-a-uuid"
	req.Events[2].Payload = nil
	req.Events[3].Payload = &wardv1.Event_Health{Health: &wardv1.Health{Drops: map[string]uint64{strings.Repeat("x", 4096): 1}}}
	req.Events = append(req.Events, &wardv1.Event{Id: uuid.NewString(), AgentId: id, Seq: 0, Time: timestamppb.Now(),
		Payload: &wardv1.Event_Health{Health: &wardv1.Health{}}})
	resp, err := client.Export(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetRejected() != 4 || len(resp.GetAcked()) != 1 || resp.GetAcked()[0].GetFirst() != 1 || resp.GetAcked()[0].GetLast() != 5 {
		t.Fatalf("response %v", resp)
	}
	if !strings.Contains(resp.GetErrorMessage(), "not a UUID") {
		t.Fatalf("error message %q", resp.GetErrorMessage())
	}
	stored, _ := h.store.ListEvents(ctx, store.Filter{})
	if len(stored) != 2 {
		t.Fatalf("stored %d, want 2 valid events", len(stored))
	}

	if _, err := client.Export(ctx, batch(id, make([]uint64, 1001)...)); code(err) != codes.InvalidArgument {
		t.Fatalf("oversized batch: %v", err)
	}
}

func TestImpersonationRefused(t *testing.T) {
	h := startServer(t, Limits{})
	ctx := context.Background()
	id1, cert1 := h.enrolAgent(t)
	id2, _ := h.enrolAgent(t)
	client, _ := h.dial(t, cert1)
	req := batch(id1, 1, 2)
	req.Events = append(req.Events, event(id2, 3))
	_, err := client.Export(ctx, req)
	if code(err) != codes.PermissionDenied {
		t.Fatalf("export as another agent: %v, want PermissionDenied", err)
	}
	if stored, _ := h.store.ListEvents(ctx, store.Filter{}); len(stored) != 0 {
		t.Fatalf("%d events of a refused batch were stored", len(stored))
	}
}

func TestUnauthenticated(t *testing.T) {
	h := startServer(t, Limits{})
	ctx := context.Background()
	id, cert := h.enrolAgent(t)

	t.Run("no certificate", func(t *testing.T) {
		client, _ := h.dial(t, nil)
		if _, err := client.Export(ctx, batch(id, 1)); code(err) != codes.Unauthenticated {
			t.Fatalf("export without certificate: %v", err)
		}
		if _, err := client.RenewCertificate(ctx, &wardv1.RenewCertificateRequest{}); code(err) != codes.Unauthenticated {
			t.Fatalf("renew without certificate: %v", err)
		}
	})

	t.Run("foreign CA", func(t *testing.T) {
		other, err := enroll.OpenAuthority(filepath.Join(t.TempDir(), "pki"), enroll.Options{}, quietLog())
		if err != nil {
			t.Fatal(err)
		}
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		csrDER, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
		csr, _ := x509.ParseCertificateRequest(csrDER)
		der, err := other.IssueClientCert(csr, id, time.Hour) // same agent id, wrong CA
		if err != nil {
			t.Fatal(err)
		}
		client, _ := h.dial(t, &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key})
		_, err = client.Export(ctx, batch(id, 1))
		t.Logf("foreign CA: %v", err)
		if c := code(err); c != codes.Unavailable && c != codes.Unauthenticated {
			t.Fatalf("export with foreign certificate: %v", err)
		}
	})

	t.Run("revoked", func(t *testing.T) {
		client, _ := h.dial(t, cert)
		if _, err := client.Export(ctx, batch(id, 1)); err != nil {
			t.Fatal(err)
		}
		if err := h.store.RevokeAgent(ctx, id, time.Now()); err != nil {
			t.Fatal(err)
		}
		// Same connection: revocation takes effect on the next call.
		if _, err := client.Export(ctx, batch(id, 2)); code(err) != codes.Unauthenticated {
			t.Fatalf("export after revoke: %v", err)
		}
	})
}

// rawCodec sends bytes as they are, to put garbage on the wire.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, errors.New("rawCodec: want *[]byte")
	}
	return *b, nil
}
func (rawCodec) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return errors.New("rawCodec: want *[]byte")
	}
	*b = append((*b)[:0], data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

func TestHostileInput(t *testing.T) {
	h := startServer(t, Limits{MaxMessageBytes: 64 << 10})
	ctx := context.Background()
	id, cert := h.enrolAgent(t)
	_, cc := h.dial(t, cert)

	garbage := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x0a, 0xff}
	var out []byte
	err := cc.Invoke(ctx, wardv1.AgentService_Export_FullMethodName, &garbage, &out, grpc.ForceCodec(rawCodec{}))
	if err == nil {
		t.Fatal("garbage proto accepted")
	}
	t.Logf("garbage: %v", err)

	huge := make([]byte, 128<<10)
	err = cc.Invoke(ctx, wardv1.AgentService_Export_FullMethodName, &huge, &out, grpc.ForceCodec(rawCodec{}))
	if code(err) != codes.ResourceExhausted {
		t.Fatalf("oversized message: %v, want ResourceExhausted", err)
	}

	// Plain TCP garbage instead of a TLS handshake.
	conn, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = conn.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\x01\x02"))
	_ = conn.Close()

	// The server still serves the next client.
	client, _ := h.dial(t, cert)
	if _, err := client.Export(ctx, batch(id, 1)); err != nil {
		t.Fatalf("server did not survive hostile input: %v", err)
	}
}

func TestEnrolErrors(t *testing.T) {
	h := startServer(t, Limits{})
	ctx := context.Background()
	client, _ := h.dial(t, nil)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	tok, _, _ := h.enr.CreateToken(ctx, 0)
	if _, err := client.Enroll(ctx, &wardv1.EnrollRequest{Token: tok, CsrDer: []byte("junk")}); code(err) != codes.InvalidArgument {
		t.Fatalf("junk CSR: %v", err)
	}
	if _, err := client.Enroll(ctx, &wardv1.EnrollRequest{Token: tok, CsrDer: csr}); err != nil {
		t.Fatal(err)
	}
	_, err := client.Enroll(ctx, &wardv1.EnrollRequest{Token: tok, CsrDer: csr})
	if code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "already been used") {
		t.Fatalf("reused token: %v", err)
	}
}
