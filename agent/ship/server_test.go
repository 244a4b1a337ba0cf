package ship_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
)

// testCA is a throwaway collector PKI.
type testCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	pool    *x509.CertPool
	server  tls.Certificate
	pemPath string
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test collector CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{cert: cert, key: key, pool: x509.NewCertPool()}
	ca.pool.AddCert(cert)

	skey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sder, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "collector"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}, cert, &skey.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	// The chain includes the CA so agents can check a CA pin during the handshake.
	ca.server = tls.Certificate{Certificate: [][]byte{sder, der}, PrivateKey: skey}
	ca.pemPath = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca.pemPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return ca
}

var serial = struct {
	sync.Mutex
	n int64
}{n: 100}

func (ca *testCA) sign(csrDER []byte, cn string, ttl time.Duration) ([]byte, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil || csr.CheckSignature() != nil {
		return nil, fmt.Errorf("bad CSR: %v", err)
	}
	serial.Lock()
	serial.n++
	sn := serial.n
	serial.Unlock()
	now := time.Now()
	return x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(sn), Subject: pkix.Name{CommonName: cn},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(ttl),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, ca.cert, csr.PublicKey, ca.key)
}

// testServer is a minimal AgentService like the collector's: TLS 1.3, client certs
// verified if given, Enroll without one, everything else with one, dedupe by (agent, seq).
type testServer struct {
	wardv1.UnimplementedAgentServiceServer
	t    *testing.T
	ca   *testCA
	addr string

	mu         sync.Mutex
	srv        *grpc.Server
	tokens     map[string]bool
	nextAgent  int
	certTTL    time.Duration
	received   map[string]map[uint64]bool // agent -> seq
	deliveries int                        // Export events including duplicates
	exports    int
	serials    []*big.Int // client certificate serial of each Export call
	// failNext makes the next Export calls fail with this status (count), for tests.
	failWith  *status.Status
	failCount int
	unauth    bool
}

func newTestServer(t *testing.T) *testServer {
	ts := &testServer{
		t: t, ca: newTestCA(t), tokens: map[string]bool{"good-token": true},
		certTTL: time.Hour, received: map[string]map[uint64]bool{},
	}
	ts.start()
	t.Cleanup(ts.stop)
	return ts
}

func (ts *testServer) start() {
	ts.t.Helper()
	addr := ts.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var lis net.Listener
	var err error
	for range 50 { // the old listener's port may take a moment to be reusable
		if lis, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		ts.t.Fatalf("listen %s: %v", addr, err)
	}
	ts.addr = lis.Addr().String()
	creds := credentials.NewTLS(&tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{ts.ca.server},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    ts.ca.pool,
	})
	srv := grpc.NewServer(grpc.Creds(creds),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second}))
	wardv1.RegisterAgentServiceServer(srv, ts)
	ts.mu.Lock()
	ts.srv = srv
	ts.mu.Unlock()
	go func() { _ = srv.Serve(lis) }()
}

func (ts *testServer) stop() {
	ts.mu.Lock()
	srv := ts.srv
	ts.srv = nil
	ts.mu.Unlock()
	if srv != nil {
		srv.Stop()
	}
}

// clientCert returns the verified client certificate, or Unauthenticated.
func clientCert(ctx context.Context) (*x509.Certificate, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "no peer")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 {
		return nil, status.Error(codes.Unauthenticated, "client certificate required")
	}
	return ti.State.VerifiedChains[0][0], nil
}

func (ts *testServer) Enroll(_ context.Context, req *wardv1.EnrollRequest) (*wardv1.EnrollResponse, error) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if !ts.tokens[req.Token] {
		return nil, status.Error(codes.PermissionDenied, "unknown token")
	}
	delete(ts.tokens, req.Token)
	ts.nextAgent++
	id := fmt.Sprintf("0190aaaa-0000-7000-8000-%012d", ts.nextAgent)
	der, err := ts.ca.sign(req.CsrDer, id, ts.certTTL)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return &wardv1.EnrollResponse{AgentId: id, CertificateDer: der, CaCertificateDer: ts.ca.cert.Raw, FingerprintKey: []byte("0123456789abcdef0123456789abcdef")}, nil
}

func (ts *testServer) RenewCertificate(ctx context.Context, req *wardv1.RenewCertificateRequest) (*wardv1.RenewCertificateResponse, error) {
	c, err := clientCert(ctx)
	if err != nil {
		return nil, err
	}
	ts.mu.Lock()
	ttl := ts.certTTL
	ts.mu.Unlock()
	der, err := ts.ca.sign(req.CsrDer, c.Subject.CommonName, ttl)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return &wardv1.RenewCertificateResponse{CertificateDer: der}, nil
}

func (ts *testServer) Export(ctx context.Context, req *wardv1.ExportRequest) (*wardv1.ExportResponse, error) {
	c, err := clientCert(ctx)
	if err != nil {
		return nil, err
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.exports++
	ts.serials = append(ts.serials, c.SerialNumber)
	if ts.unauth {
		return nil, status.Error(codes.Unauthenticated, "agent revoked")
	}
	if ts.failCount > 0 {
		ts.failCount--
		return nil, ts.failWith.Err()
	}
	agent := c.Subject.CommonName
	if ts.received[agent] == nil {
		ts.received[agent] = map[uint64]bool{}
	}
	resp := &wardv1.ExportResponse{}
	for _, ev := range req.Events {
		if ev.AgentId != agent {
			resp.Rejected++
		} else {
			ts.deliveries++
			ts.received[agent][ev.Seq] = true
		}
		n := len(resp.Acked)
		if n > 0 && resp.Acked[n-1].Last+1 == ev.Seq {
			resp.Acked[n-1].Last = ev.Seq
		} else {
			resp.Acked = append(resp.Acked, &wardv1.SeqRange{First: ev.Seq, Last: ev.Seq})
		}
	}
	return resp, nil
}

func (ts *testServer) receivedCount(agent string) int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return len(ts.received[agent])
}

func (ts *testServer) throttle(n int, delay time.Duration) {
	st := status.New(codes.ResourceExhausted, "slow down")
	if delay > 0 {
		st, _ = st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(delay)})
	}
	ts.mu.Lock()
	ts.failWith, ts.failCount = st, n
	ts.mu.Unlock()
}

func (ts *testServer) setUnauth(v bool) {
	ts.mu.Lock()
	ts.unauth = v
	ts.mu.Unlock()
}
