package enroll

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ward-dlp/ward/collector/store"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// NewCSR makes a P-256 key and a CSR for it, as an agent would.
func newCSR(t *testing.T) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "ignored"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
}

type fixture struct {
	dir   string
	ca    *Authority
	store *store.Store
	enr   *Enroller
	now   time.Time
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir(), now: time.Now()}
	clock := func() time.Time { return f.now }
	var err error
	f.ca, err = OpenAuthority(filepath.Join(f.dir, "pki"), Options{ExtraSANs: []string{"collector.clinic.example", "10.0.0.5"}, Now: clock}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	f.store, err = store.Open(context.Background(), filepath.Join(f.dir, "ward.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.store.Close() })
	f.enr = NewEnroller(f.ca, f.store, time.Hour, 30*24*time.Hour, quietLog())
	return f
}

func TestEnrollIssuesVerifiableClientCert(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	tok, exp, err := f.enr.CreateToken(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, TokenPrefix) || exp.Sub(f.now) != time.Hour {
		t.Fatalf("token %q expires %v", tok, exp)
	}
	csr, key := newCSR(t)
	id, err := f.enr.Enroll(ctx, Request{Token: tok, CSRDER: csr, Hostname: "intake-01", MachineID: "m1", AgentVersion: "0.1.0"})
	if err != nil {
		t.Fatal(err)
	}
	if len(id.FingerprintKey) != 32 {
		t.Fatalf("fingerprint key of %d bytes", len(id.FingerprintKey))
	}
	cert, err := x509.ParseCertificate(id.CertificateDER)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(id.CADER)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("client cert does not verify for client auth: %v", err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Fatal("client cert is usable for server auth")
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		t.Fatal("certificate is not for the CSR's key")
	}
	got, err := AgentIDFromCert(cert)
	if err != nil || got != id.AgentID {
		t.Fatalf("AgentIDFromCert = %q, %v; want %q", got, err, id.AgentID)
	}
	if d := cert.NotAfter.Sub(f.now); d < 29*24*time.Hour || d > 30*24*time.Hour {
		t.Fatalf("validity %v", d)
	}
	a, err := f.store.Agent(ctx, id.AgentID)
	if err != nil || a.Hostname != "intake-01" || a.MachineID != "m1" {
		t.Fatalf("agent row %+v, %v", a, err)
	}

	// Renewal keeps the identity, with the new key.
	csr2, key2 := newCSR(t)
	der, err := f.enr.Renew(ctx, id.AgentID, csr2)
	if err != nil {
		t.Fatal(err)
	}
	renewed, _ := x509.ParseCertificate(der)
	if renewed.Subject.CommonName != id.AgentID || !key2.PublicKey.Equal(renewed.PublicKey) {
		t.Fatal("renewed certificate has the wrong identity or key")
	}
	if err := f.store.RevokeAgent(ctx, id.AgentID, f.now); err != nil {
		t.Fatal(err)
	}
	if _, err := f.enr.Renew(ctx, id.AgentID, csr2); !errors.Is(err, ErrRevoked) {
		t.Fatalf("renew after revoke: %v", err)
	}
}

func TestTokenSingleUse(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	tok, _, err := f.enr.CreateToken(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := newCSR(t)
	if _, err := f.enr.Enroll(ctx, Request{Token: tok, CSRDER: csr}); err != nil {
		t.Fatal(err)
	}
	_, err = f.enr.Enroll(ctx, Request{Token: tok, CSRDER: csr})
	if !errors.Is(err, ErrTokenUsed) {
		t.Fatalf("second use: %v, want ErrTokenUsed", err)
	}
	if !strings.Contains(err.Error(), "already been used") {
		t.Fatalf("error is not clear: %v", err)
	}
	if _, err := f.enr.Enroll(ctx, Request{Token: TokenPrefix + "made-up", CSRDER: csr}); !errors.Is(err, ErrTokenUnknown) {
		t.Fatalf("unknown token: %v", err)
	}
}

func TestTokenExpired(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	tok, _, err := f.enr.CreateToken(ctx, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	f.now = f.now.Add(11 * time.Minute)
	csr, _ := newCSR(t)
	if _, err := f.enr.Enroll(ctx, Request{Token: tok, CSRDER: csr}); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("expired token: %v, want ErrTokenExpired", err)
	}
	if _, _, err := f.enr.CreateToken(ctx, 30*24*time.Hour); err == nil {
		t.Fatal("a month-long token was accepted")
	}
}

func TestBadCSRRefused(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	tok, _, err := f.enr.CreateToken(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := newCSR(t)
	bad := bytes.Clone(csr)
	bad[len(bad)-3] ^= 0xff // inside the signature
	for name, der := range map[string][]byte{"bad signature": bad, "garbage": []byte("not a csr"), "empty": nil} {
		if _, err := f.enr.Enroll(ctx, Request{Token: tok, CSRDER: der}); !errors.Is(err, ErrBadCSR) {
			t.Errorf("%s: %v, want ErrBadCSR", name, err)
		}
	}
	// A refused CSR does not burn the token.
	if _, err := f.enr.Enroll(ctx, Request{Token: tok, CSRDER: csr}); err != nil {
		t.Fatalf("token unusable after a refused CSR: %v", err)
	}
}

func TestPKIFilesAndReload(t *testing.T) {
	f := newFixture(t)
	pki := filepath.Join(f.dir, "pki")
	fi, err := os.Stat(pki)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("pki dir mode %v, %v", fi.Mode().Perm(), err)
	}
	for _, name := range []string{CACertFile, caKeyFile, serverCertFile, serverKeyFile, fingerprintKeyFile} {
		fi, err := os.Stat(filepath.Join(pki, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", name, fi.Mode().Perm())
		}
	}
	srv, err := f.ca.serverCertificate()
	if err != nil {
		t.Fatal(err)
	}
	leaf := srv.Leaf
	for _, name := range []string{"localhost", "collector.clinic.example", "127.0.0.1", "::1", "10.0.0.5"} {
		if err := leaf.VerifyHostname(name); err != nil {
			t.Errorf("server cert: %v", err)
		}
	}

	// Reopening keeps the CA, the key and the (still fresh) server certificate.
	again, err := OpenAuthority(pki, Options{ExtraSANs: []string{"collector.clinic.example", "10.0.0.5"}, Now: func() time.Time { return f.now }}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.CACertDER(), f.ca.CACertDER()) || !bytes.Equal(again.FingerprintKey(), f.ca.FingerprintKey()) {
		t.Fatal("reopen changed the CA or the fingerprint key")
	}
	srv2, _ := again.serverCertificate()
	if !bytes.Equal(srv2.Leaf.Raw, leaf.Raw) {
		t.Fatal("reopen reissued a fresh server certificate")
	}

	// Near expiry, the next handshake gets a new certificate.
	f.now = leaf.NotAfter.Add(-24 * time.Hour)
	srv3, err := f.ca.serverCertificate()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(srv3.Leaf.Raw, leaf.Raw) || !srv3.Leaf.NotAfter.After(leaf.NotAfter) {
		t.Fatal("server certificate not renewed near expiry")
	}
	// A new SAN also triggers reissue.
	more, err := OpenAuthority(pki, Options{ExtraSANs: []string{"ward.internal"}, Now: func() time.Time { return f.now }}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	srv4, _ := more.serverCertificate()
	if err := srv4.Leaf.VerifyHostname("ward.internal"); err != nil {
		t.Fatal(err)
	}
}
