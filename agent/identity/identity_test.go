package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParsePin(t *testing.T) {
	good := "sha256:" + strings.Repeat("0a", 32)
	if b, err := parsePin(good); err != nil || len(b) != 32 {
		t.Fatalf("parsePin(%q) = %x, %v", good, b, err)
	}
	if _, err := parsePin(strings.ToUpper(good[7:])); err == nil {
		t.Error("pin without sha256: prefix accepted")
	}
	for _, bad := range []string{"sha256:", "sha256:zz", "sha256:" + strings.Repeat("0a", 31), "sha1:" + strings.Repeat("0a", 32)} {
		if _, err := parsePin(bad); err == nil {
			t.Errorf("parsePin(%q) accepted", bad)
		}
	}
}

func TestLoadNotEnrolled(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "missing"))
	if !errors.Is(err, ErrNotEnrolled) {
		t.Fatalf("err = %v", err)
	}
	if !strings.Contains(err.Error(), "run ward-agent enroll --collector HOST:PORT --token TOKEN") {
		t.Fatalf("error does not tell the operator what to do: %v", err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, identityFile), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir); err == nil || errors.Is(err, ErrNotEnrolled) || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("damaged identity: %v", err)
	}
}

func TestHostOf(t *testing.T) {
	for in, want := range map[string]string{
		"collector.clinic.local:8443": "collector.clinic.local",
		"127.0.0.1:1":                 "127.0.0.1",
		"[::1]:8443":                  "::1",
		"collector":                   "collector",
	} {
		if got := hostOf(in); got != want {
			t.Errorf("hostOf(%q) = %q, want %q", in, got, want)
		}
	}
}

type pki struct {
	ca, leaf []byte
	caCert   *x509.Certificate
}

func newPKI(t *testing.T) pki {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	skey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2),
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), DNSNames: []string{"collector.local"},
		IPAddresses: []net.IP{net.ParseIP("10.0.0.5")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, caCert, &skey.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pki{ca: caDER, leaf: leaf, caCert: caCert}
}

func TestPinVerifier(t *testing.T) {
	p, other := newPKI(t), newPKI(t)
	pin, _ := parsePin(CAPin(p.caCert))
	if err := pinVerifier(pin, "collector.local")([][]byte{p.leaf, p.ca}, nil); err != nil {
		t.Fatalf("right pin, full chain: %v", err)
	}
	if err := pinVerifier(pin, "10.0.0.5")([][]byte{p.leaf, p.ca}, nil); err != nil {
		t.Fatalf("IP server name: %v", err)
	}
	if err := pinVerifier(pin, "evil.local")([][]byte{p.leaf, p.ca}, nil); err == nil {
		t.Fatal("wrong server name accepted")
	}
	if err := pinVerifier(pin, "collector.local")([][]byte{p.leaf}, nil); err == nil || !strings.Contains(err.Error(), "chain") {
		t.Fatalf("leaf-only chain: %v", err)
	}
	// A chain from another CA that carries our CA certificate alongside must not pass.
	if err := pinVerifier(pin, "collector.local")([][]byte{other.leaf, p.ca}, nil); err == nil {
		t.Fatal("leaf of another CA accepted because the pinned CA was appended")
	}
	otherPin, _ := parsePin(CAPin(other.caCert))
	if err := pinVerifier(otherPin, "collector.local")([][]byte{p.leaf, p.ca}, nil); err == nil {
		t.Fatal("wrong pin accepted")
	}
}
