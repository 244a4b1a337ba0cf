// Package enroll is the collector's local certificate authority and enrolment logic.
//
// The collector runs its own small CA instead of relying on a public or enterprise PKI:
// agents trust only this CA (they receive it at enrolment), the collector trusts only client
// certificates it issued, and nothing else needs to be deployed in a small clinic. Agents keep
// their private keys; the collector only ever sees CSRs.
package enroll

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// Files in the PKI directory.
const (
	CACertFile         = "ca.crt"
	caKeyFile          = "ca.key"
	serverCertFile     = "server.crt"
	serverKeyFile      = "server.key"
	fingerprintKeyFile = "fingerprint.key"
)

// AgentURIPrefix prefixes the agent_id in the URI SAN of agent certificates.
const AgentURIPrefix = "spiffe://ward/agent/"

// Options configures the authority.
type Options struct {
	// ExtraSANs are added to the server certificate (DNS names or IP addresses), besides
	// localhost, 127.0.0.1, ::1 and the hostname.
	ExtraSANs []string
	// CATTL is the lifetime of a new CA; default 10 years.
	CATTL time.Duration
	// ServerCertTTL is the lifetime of server certificates; default 90 days. A certificate is
	// renewed when less than a third of its lifetime remains or its SANs changed.
	ServerCertTTL time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Authority is the collector's CA with its current server certificate and the fleet's
// fingerprint key. It is safe for concurrent use.
type Authority struct {
	dir    string
	opts   Options
	log    *slog.Logger
	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
	fpKey  []byte
	pool   *x509.CertPool

	mu     sync.Mutex
	server *tls.Certificate
}

// OpenAuthority loads the PKI from dir, creating whatever is missing: the CA (only on first
// start; an existing CA is never replaced, since every agent pins it), the fingerprint key,
// and a server certificate (also when the current one is near expiry or lacks a wanted SAN).
func OpenAuthority(dir string, opts Options, log *slog.Logger) (*Authority, error) {
	if opts.CATTL <= 0 {
		opts.CATTL = 10 * 365 * 24 * time.Hour
	}
	if opts.ServerCertTTL <= 0 {
		opts.ServerCertTTL = 90 * 24 * time.Hour
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("enroll: create PKI directory %s: %w", dir, err)
	}
	// MkdirAll leaves an existing directory's mode alone; the keys must not be listable.
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("enroll: chmod PKI directory %s: %w", dir, err)
	}
	a := &Authority{dir: dir, opts: opts, log: log}
	if err := a.loadOrCreateCA(); err != nil {
		return nil, err
	}
	if err := a.loadOrCreateFingerprintKey(); err != nil {
		return nil, err
	}
	a.pool = x509.NewCertPool()
	a.pool.AddCert(a.caCert)
	if err := a.loadServerCert(); err != nil {
		return nil, err
	}
	if _, err := a.serverCertificate(); err != nil {
		return nil, err
	}
	return a, nil
}

// CACertPath is the CA certificate file, for operators and for the ready log line.
func (a *Authority) CACertPath() string { return filepath.Join(a.dir, CACertFile) }

// CACertDER returns the CA certificate.
func (a *Authority) CACertDER() []byte { return slices.Clone(a.caCert.Raw) }

// CAPool returns a pool holding only the CA: what client certificates are verified against.
func (a *Authority) CAPool() *x509.CertPool { return a.pool }

// FingerprintKey returns the fleet's HMAC key for evidence fingerprints.
func (a *Authority) FingerprintKey() []byte { return slices.Clone(a.fpKey) }

// ServerTLSConfig returns the TLS configuration of the agent listener: TLS 1.3 only, the
// server certificate renewed on the fly, and client certificates verified against the CA
// when presented. Presenting none is allowed at the TLS layer so Enroll can work; the RPC
// layer requires a certificate for everything else.
func (a *Authority) ServerTLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: tls.VerifyClientCertIfGiven,
		ClientCAs:  a.pool,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return a.serverCertificate()
		},
		NextProtos: []string{"h2"},
	}
}

func (a *Authority) loadOrCreateCA() error {
	certPath, keyPath := filepath.Join(a.dir, CACertFile), filepath.Join(a.dir, caKeyFile)
	cert, key, err := loadPair(certPath, keyPath)
	switch {
	case err == nil:
		if !cert.IsCA {
			return fmt.Errorf("enroll: %s is not a CA certificate", certPath)
		}
		a.caCert, a.caKey = cert, key
		return nil
	case !errors.Is(err, os.ErrNotExist):
		return err
	}
	if exists(certPath) || exists(keyPath) {
		return fmt.Errorf("enroll: only one of %s and %s exists; refusing to create a new CA over a half-present one", certPath, keyPath)
	}
	key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("enroll: generate CA key: %w", err)
	}
	now := a.opts.Now()
	host, _ := os.Hostname()
	tmpl := &x509.Certificate{
		SerialNumber:          mustSerial(),
		Subject:               pkix.Name{Organization: []string{"Ward"}, CommonName: "Ward collector CA " + host},
		NotBefore:             now.Add(-5 * time.Minute),
		NotAfter:              now.Add(a.opts.CATTL),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SubjectKeyId:          keyID(&key.PublicKey),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("enroll: create CA certificate: %w", err)
	}
	cert, err = x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("enroll: parse new CA certificate: %w", err)
	}
	// Key first: a crash between the two writes leaves a key without a certificate, which the
	// half-present check above reports instead of silently minting a second CA.
	if err := writeKey(keyPath, key); err != nil {
		return err
	}
	if err := writePEM(certPath, "CERTIFICATE", der); err != nil {
		return err
	}
	a.caCert, a.caKey = cert, key
	a.log.Info("created collector CA", "cert", certPath, "expires", cert.NotAfter)
	return nil
}

func (a *Authority) loadOrCreateFingerprintKey() error {
	path := filepath.Join(a.dir, fingerprintKeyFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if len(b) != 32 {
			return fmt.Errorf("enroll: fingerprint key %s has %d bytes, want 32", path, len(b))
		}
		a.fpKey = b
		return nil
	case !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("enroll: read fingerprint key: %w", err)
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("enroll: generate fingerprint key: %w", err)
	}
	if err := writeFileAtomic(path, key); err != nil {
		return err
	}
	a.fpKey = key
	a.log.Info("created fleet fingerprint key", "path", path)
	return nil
}

func (a *Authority) loadServerCert() error {
	cert, key, err := loadPair(filepath.Join(a.dir, serverCertFile), filepath.Join(a.dir, serverKeyFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		a.log.Warn("ignoring unreadable server certificate; a new one will be issued", "err", err)
		return nil
	}
	// The CA travels in the chain so agents enrolling with a CA pin can check it during the
	// handshake, before they send their token.
	a.server = &tls.Certificate{Certificate: [][]byte{cert.Raw, a.caCert.Raw}, PrivateKey: key, Leaf: cert}
	return nil
}

// serverCertificate returns the current server certificate, issuing a new one first when it
// is missing, not from this CA, near expiry, or lacks a wanted SAN.
func (a *Authority) serverCertificate() (*tls.Certificate, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.opts.Now()
	dns, ips := a.wantedSANs()
	if c := a.server; c != nil {
		leaf := c.Leaf
		life := leaf.NotAfter.Sub(leaf.NotBefore)
		fresh := leaf.NotAfter.Sub(now) > life/3 && now.After(leaf.NotBefore)
		if fresh && leaf.CheckSignatureFrom(a.caCert) == nil && coversSANs(leaf, dns, ips) {
			return c, nil
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("enroll: generate server key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: mustSerial(),
		Subject:      pkix.Name{Organization: []string{"Ward"}, CommonName: "ward-collector"},
		NotBefore:    now.Add(-5 * time.Minute),
		NotAfter:     now.Add(a.opts.ServerCertTTL),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     dns,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.caCert, &key.PublicKey, a.caKey)
	if err != nil {
		return nil, fmt.Errorf("enroll: create server certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("enroll: parse server certificate: %w", err)
	}
	if err := writeKey(filepath.Join(a.dir, serverKeyFile), key); err != nil {
		return nil, err
	}
	if err := writePEM(filepath.Join(a.dir, serverCertFile), "CERTIFICATE", der); err != nil {
		return nil, err
	}
	a.server = &tls.Certificate{Certificate: [][]byte{der, a.caCert.Raw}, PrivateKey: key, Leaf: leaf}
	a.log.Info("issued collector server certificate", "dns", dns, "ips", ips, "expires", leaf.NotAfter)
	return a.server, nil
}

func (a *Authority) wantedSANs() (dns []string, ips []net.IP) {
	names := []string{"localhost", "127.0.0.1", "::1"}
	if h, err := os.Hostname(); err == nil && h != "" {
		names = append(names, h)
	}
	names = append(names, a.opts.ExtraSANs...)
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			if !slices.ContainsFunc(ips, ip.Equal) {
				ips = append(ips, ip)
			}
		} else if n != "" && !slices.Contains(dns, n) {
			dns = append(dns, n)
		}
	}
	return dns, ips
}

func coversSANs(c *x509.Certificate, dns []string, ips []net.IP) bool {
	for _, d := range dns {
		if !slices.Contains(c.DNSNames, d) {
			return false
		}
	}
	for _, ip := range ips {
		if !slices.ContainsFunc(c.IPAddresses, ip.Equal) {
			return false
		}
	}
	return true
}

// ErrBadCSR wraps every reason a certificate request is refused.
var ErrBadCSR = errors.New("invalid certificate request")

// ParseCSR parses a DER PKCS#10 request and checks its self-signature (proof that the agent
// holds the private key) and that the key is of an acceptable type and strength.
func ParseCSR(der []byte) (*x509.CertificateRequest, error) {
	if len(der) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrBadCSR)
	}
	if len(der) > 16<<10 {
		return nil, fmt.Errorf("%w: %d bytes is too large", ErrBadCSR, len(der))
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature does not verify: %v", ErrBadCSR, err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return nil, fmt.Errorf("%w: ECDSA curve %s not accepted (use P-256 or P-384)", ErrBadCSR, k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("%w: RSA key of %d bits is too small", ErrBadCSR, k.N.BitLen())
		}
	default:
		return nil, fmt.Errorf("%w: unsupported key type %T", ErrBadCSR, csr.PublicKey)
	}
	return csr, nil
}

// IssueClientCert signs a client certificate for agentID with the CSR's public key. Only the
// key is taken from the CSR: the identity (CN and URI SAN) is the collector's choice, so an
// agent cannot ask for another identity.
func (a *Authority) IssueClientCert(csr *x509.CertificateRequest, agentID string, ttl time.Duration) ([]byte, error) {
	u, err := url.Parse(AgentURIPrefix + agentID)
	if err != nil {
		return nil, fmt.Errorf("enroll: agent URI for %q: %w", agentID, err)
	}
	now := a.opts.Now()
	notAfter := now.Add(ttl)
	if notAfter.After(a.caCert.NotAfter) {
		notAfter = a.caCert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: mustSerial(),
		Subject:      pkix.Name{Organization: []string{"Ward agents"}, CommonName: agentID},
		NotBefore:    now.Add(-5 * time.Minute),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{u},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.caCert, csr.PublicKey, a.caKey)
	if err != nil {
		return nil, fmt.Errorf("enroll: sign client certificate for %s: %w", agentID, err)
	}
	return der, nil
}

// AgentIDFromCert extracts the agent identity from a verified client certificate: the common
// name, which must agree with the URI SAN.
func AgentIDFromCert(c *x509.Certificate) (string, error) {
	id := c.Subject.CommonName
	if id == "" {
		return "", errors.New("client certificate has no common name")
	}
	for _, u := range c.URIs {
		if u.String() == AgentURIPrefix+id {
			return id, nil
		}
	}
	return "", fmt.Errorf("client certificate for %q lacks the URI SAN %s%s", id, AgentURIPrefix, id)
}

func mustSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err)) // crypto/rand does not fail on Linux
	}
	return n.Add(n, big.NewInt(1))
}

func keyID(pub crypto.PublicKey) []byte {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	sum := sha256.Sum256(der)
	return sum[:20]
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func loadPair(certPath, keyPath string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	cb, err := os.ReadFile(certPath)
	if err != nil {
		return nil, nil, fmt.Errorf("enroll: read %s: %w", certPath, err)
	}
	kb, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, fmt.Errorf("enroll: read %s: %w", keyPath, err)
	}
	cblock, _ := pem.Decode(cb)
	if cblock == nil || cblock.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("enroll: %s: no PEM certificate", certPath)
	}
	cert, err := x509.ParseCertificate(cblock.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("enroll: parse %s: %w", certPath, err)
	}
	kblock, _ := pem.Decode(kb)
	if kblock == nil {
		return nil, nil, fmt.Errorf("enroll: %s: no PEM key", keyPath)
	}
	k, err := x509.ParsePKCS8PrivateKey(kblock.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("enroll: parse %s: %w", keyPath, err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, nil, fmt.Errorf("enroll: %s holds a %T, want an ECDSA key", keyPath, k)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, nil, fmt.Errorf("enroll: %s does not match %s", keyPath, certPath)
	}
	return cert, key, nil
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("enroll: marshal key for %s: %w", path, err)
	}
	return writePEM(path, "PRIVATE KEY", der)
}

func writePEM(path, typ string, der []byte) error {
	return writeFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
}

// writeFileAtomic writes a 0600 file via a temporary file and rename, so a crash never
// leaves a truncated key or certificate behind.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("enroll: write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if err := tmp.Chmod(0o600); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("enroll: write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("enroll: write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("enroll: sync %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("enroll: write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("enroll: write %s: %w", path, err)
	}
	return nil
}
