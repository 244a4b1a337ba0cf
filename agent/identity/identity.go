// Package identity is the agent's enrolment state: the private key it generated (which never
// leaves the host), the client certificate the collector issued for it, the collector CA it
// trusts, its agent_id, and the fleet fingerprint key.
//
// Files in the state directory (0700; every file 0600):
//
//	identity.json     agent_id, collector address, server name; written last, so its
//	                  presence means enrolment completed
//	client.pem        certificate and private key in one file, so renewal swaps both with
//	                  one atomic rename and a crash can never pair a key with the wrong cert
//	ca.pem            the collector CA, verified at enrolment against --ca-file or the pin
//	fingerprint.key   HMAC key for fingerprints of matched values
package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"
)

// ErrNotEnrolled is returned by Load when the state directory holds no completed enrolment.
var ErrNotEnrolled = errors.New("agent is not enrolled: run ward-agent enroll --collector HOST:PORT --token TOKEN")

const (
	identityFile    = "identity.json"
	clientFile      = "client.pem"
	caFile          = "ca.pem"
	fingerprintFile = "fingerprint.key"
)

type identityRecord struct {
	AgentID    string    `json:"agent_id"`
	Collector  string    `json:"collector"`
	ServerName string    `json:"server_name,omitempty"`
	EnrolledAt time.Time `json:"enrolled_at"`
}

// Identity is a loaded enrolment. Its TLS configuration always presents the current
// certificate, so a renewal takes effect for every new connection without a restart.
type Identity struct {
	dir        string
	log        *slog.Logger
	now        func() time.Time
	agentID    string
	collector  string
	serverName string
	ca         *x509.Certificate
	roots      *x509.CertPool
	fpKey      []byte

	mu   sync.RWMutex
	cert *tls.Certificate // Leaf set
}

// Option adjusts Load and Enroll.
type Option func(*options)

type options struct {
	log        *slog.Logger
	now        func() time.Time
	serverName string
}

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithClock sets the clock used for renewal decisions (tests).
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithServerName overrides the name the collector's certificate is checked against.
func WithServerName(name string) Option { return func(o *options) { o.serverName = name } }

func buildOptions(opts []Option) options {
	o := options{log: slog.Default(), now: time.Now}
	for _, f := range opts {
		f(&o)
	}
	return o
}

// Load reads the enrolment in dir. It returns an error wrapping ErrNotEnrolled when there
// is none, and a descriptive error when files are damaged or do not belong together.
func Load(dir string, opts ...Option) (*Identity, error) {
	o := buildOptions(opts)
	b, err := os.ReadFile(filepath.Join(dir, identityFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w (no enrolment in %s)", ErrNotEnrolled, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("identity: read %s: %w", identityFile, err)
	}
	var rec identityRecord
	if err := json.Unmarshal(b, &rec); err != nil || rec.AgentID == "" {
		return nil, fmt.Errorf("identity: %s in %s is damaged; re-enrol: %v", identityFile, dir, err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, caFile))
	if err != nil {
		return nil, fmt.Errorf("identity: read CA: %w", err)
	}
	cas, err := parseCertsPEM(caPEM)
	if err != nil || len(cas) != 1 {
		return nil, fmt.Errorf("identity: %s holds no single CA certificate: %v", caFile, err)
	}
	fp, err := os.ReadFile(filepath.Join(dir, fingerprintFile))
	if err != nil {
		return nil, fmt.Errorf("identity: read fingerprint key: %w", err)
	}
	clientPEM, err := os.ReadFile(filepath.Join(dir, clientFile))
	if err != nil {
		return nil, fmt.Errorf("identity: read client certificate: %w", err)
	}
	cert, err := tls.X509KeyPair(clientPEM, clientPEM)
	if err != nil {
		return nil, fmt.Errorf("identity: %s: %w", clientFile, err)
	}
	id := newIdentity(dir, o, rec, cas[0], fp)
	if err := id.checkClientCert(cert.Leaf); err != nil {
		return nil, fmt.Errorf("identity: stored certificate: %w", err)
	}
	id.cert = &cert
	if o.now().After(cert.Leaf.NotAfter) {
		id.log.Error("client certificate has expired; the collector will refuse it: re-enrol",
			"agent_id", id.agentID, "not_after", cert.Leaf.NotAfter)
	}
	return id, nil
}

func newIdentity(dir string, o options, rec identityRecord, ca *x509.Certificate, fp []byte) *Identity {
	sn := o.serverName
	if sn == "" {
		sn = rec.ServerName
	}
	if sn == "" {
		sn = hostOf(rec.Collector)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	return &Identity{
		dir:        dir,
		log:        o.log.With("component", "identity"),
		now:        o.now,
		agentID:    rec.AgentID,
		collector:  rec.Collector,
		serverName: sn,
		ca:         ca,
		roots:      roots,
		fpKey:      fp,
	}
}

// hostOf returns the host part of host:port (or the whole string if it has no port).
func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// AgentID is the collector-assigned identity; every event must carry it.
func (id *Identity) AgentID() string { return id.agentID }

// Collector is the address enrolled against.
func (id *Identity) Collector() string { return id.collector }

// ServerName is the name the collector's certificate is verified against.
func (id *Identity) ServerName() string { return id.serverName }

// FingerprintKey is the fleet HMAC key for fingerprints of matched values.
func (id *Identity) FingerprintKey() []byte { return slices.Clone(id.fpKey) }

// CA is the collector CA this agent trusts.
func (id *Identity) CA() *x509.Certificate { return id.ca }

// Certificate is the current client certificate.
func (id *Identity) Certificate() *x509.Certificate {
	id.mu.RLock()
	defer id.mu.RUnlock()
	return id.cert.Leaf
}

// TLSConfig verifies the collector against the stored CA (TLS 1.3 only) and presents the
// current client certificate, looked up per handshake so renewals apply to new connections.
func (id *Identity) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    id.roots,
		ServerName: id.serverName,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			id.mu.RLock()
			defer id.mu.RUnlock()
			return id.cert, nil
		},
	}
}

// TransportCredentials wraps TLSConfig for grpc.NewClient.
func (id *Identity) TransportCredentials() credentials.TransportCredentials {
	return credentials.NewTLS(id.TLSConfig())
}

// checkClientCert makes sure a certificate chains to our CA, is for client auth, and names
// this agent.
func (id *Identity) checkClientCert(c *x509.Certificate) error {
	if c.Subject.CommonName != id.agentID {
		return fmt.Errorf("certificate is for %q, not agent %q", c.Subject.CommonName, id.agentID)
	}
	_, err := c.Verify(x509.VerifyOptions{
		Roots:       id.roots,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		CurrentTime: c.NotBefore.Add(time.Second), // validity is checked separately: an expired cert still loads
	})
	if err != nil {
		return fmt.Errorf("certificate does not chain to the stored collector CA: %w", err)
	}
	return nil
}

// CAPin formats the pin of a CA certificate: sha256 over its SubjectPublicKeyInfo, as
// accepted by Enroll. Pinning the key rather than the certificate survives CA re-issuance
// with the same key.
func CAPin(ca *x509.Certificate) string {
	sum := sha256.Sum256(ca.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// parsePin accepts "sha256:<64 hex digits>".
func parsePin(pin string) ([]byte, error) {
	h, ok := strings.CutPrefix(strings.TrimSpace(pin), "sha256:")
	if !ok {
		return nil, fmt.Errorf("CA pin %q: want sha256:<hex of the CA's SubjectPublicKeyInfo hash>", pin)
	}
	b, err := hex.DecodeString(strings.ToLower(h))
	if err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("CA pin %q: want 64 hex digits after sha256:", pin)
	}
	return b, nil
}

func spkiHash(c *x509.Certificate) []byte {
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return sum[:]
}

func parseCertsPEM(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return out, nil
}

// newKeyAndCSR makes a fresh P-256 key and a CSR for it. The subject is informational:
// the collector names the certificate after the agent_id it assigns.
func newKeyAndCSR(hostname string) (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: hostname},
	}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create CSR: %w", err)
	}
	return key, csr, nil
}

// clientPEM encodes certificate and key together for client.pem.
func clientPEM(certDER []byte, key *ecdsa.PrivateKey) ([]byte, error) {
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal key: %w", err)
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER})
	return append(out, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})...), nil
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// parseIssued checks that certDER is for key and returns it as a tls.Certificate.
func parseIssued(certDER []byte, key *ecdsa.PrivateKey) (*tls.Certificate, error) {
	c, err := x509.ParseCertificate(certDER)
	if err != nil {
		return nil, fmt.Errorf("parse issued certificate: %w", err)
	}
	pub, ok := c.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(&key.PublicKey) {
		return nil, errors.New("issued certificate is not for the key this agent generated")
	}
	return &tls.Certificate{Certificate: [][]byte{certDER}, PrivateKey: key, Leaf: c}, nil
}

// writeFileAtomic writes name in dir via a temporary file, fsync and rename, so readers
// see the old or the new content, never a mix.
func writeFileAtomic(dir, name string, data []byte) error {
	tmp, err := os.CreateTemp(dir, "."+name+".*.tmp")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("write %s: sync dir: %w", name, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("write %s: sync dir: %w", name, err)
	}
	return nil
}
