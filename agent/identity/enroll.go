package identity

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
)

// EnrollConfig says whom to enrol with and how to recognise them on first contact.
type EnrollConfig struct {
	// Collector is host:port.
	Collector string
	// Token is the single-use enrolment token.
	Token string
	// CAFile is a PEM file with the collector CA (e.g. what `make run` writes locally).
	CAFile string
	// CAPin is "sha256:<hex>" of the collector CA's SubjectPublicKeyInfo, for fleet
	// installs where shipping a file is awkward. The collector must send its CA
	// certificate in its TLS chain for the pin to be checked during the handshake.
	CAPin string
	// ServerName overrides the name checked in the collector certificate; default the
	// host part of Collector.
	ServerName string
	// Hostname, MachineID and AgentVersion are reported to the collector; Hostname and
	// MachineID default to this host's.
	Hostname     string
	MachineID    string
	AgentVersion string
	// Timeout bounds the enrolment call; default 30 s.
	Timeout time.Duration
}

// Enroll generates a key, obtains a certificate from the collector with a token, and stores
// the new identity in dir (replacing any previous one). The collector is authenticated
// before the token is sent: by normal chain verification against CAFile, or by the CA pin.
func Enroll(ctx context.Context, dir string, cfg EnrollConfig, opts ...Option) (*Identity, error) {
	o := buildOptions(opts)
	if cfg.Collector == "" || cfg.Token == "" {
		return nil, errors.New("identity: enrol: collector address and token are required")
	}
	if cfg.CAFile == "" && cfg.CAPin == "" {
		return nil, errors.New("identity: enrol: the collector must be authenticated on first contact: give --ca-file or --ca-pin")
	}
	if cfg.ServerName == "" {
		cfg.ServerName = o.serverName
	}
	serverName := cfg.ServerName
	if serverName == "" {
		serverName = hostOf(cfg.Collector)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS13, ServerName: serverName}
	var pin []byte
	var fileCAs []*x509.Certificate
	if cfg.CAPin != "" {
		var err error
		if pin, err = parsePin(cfg.CAPin); err != nil {
			return nil, fmt.Errorf("identity: enrol: %w", err)
		}
		// Chain verification is done by pinVerifier instead of against system roots.
		tlsCfg.InsecureSkipVerify = true
		tlsCfg.VerifyPeerCertificate = pinVerifier(pin, serverName)
	}
	if cfg.CAFile != "" {
		b, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("identity: enrol: read CA file: %w", err)
		}
		if fileCAs, err = parseCertsPEM(b); err != nil {
			return nil, fmt.Errorf("identity: enrol: CA file %s: %w", cfg.CAFile, err)
		}
		if pin == nil {
			tlsCfg.RootCAs = x509.NewCertPool()
			for _, c := range fileCAs {
				tlsCfg.RootCAs.AddCert(c)
			}
		}
	}
	if cfg.Hostname == "" {
		cfg.Hostname, _ = os.Hostname()
	}
	if cfg.MachineID == "" {
		if b, err := os.ReadFile("/etc/machine-id"); err == nil {
			cfg.MachineID = strings.TrimSpace(string(b))
		}
	}

	key, csr, err := newKeyAndCSR(cfg.Hostname)
	if err != nil {
		return nil, fmt.Errorf("identity: enrol: %w", err)
	}
	conn, err := grpc.NewClient(cfg.Collector, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		return nil, fmt.Errorf("identity: enrol: connect %s: %w", cfg.Collector, err)
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	resp, err := wardv1.NewAgentServiceClient(conn).Enroll(cctx, &wardv1.EnrollRequest{
		Token:        cfg.Token,
		CsrDer:       csr,
		Hostname:     cfg.Hostname,
		MachineId:    cfg.MachineID,
		AgentVersion: cfg.AgentVersion,
	})
	if err != nil {
		return nil, fmt.Errorf("identity: enrol with %s: %w", cfg.Collector, err)
	}

	// The response must name the CA we authenticated the collector with.
	ca, err := x509.ParseCertificate(resp.GetCaCertificateDer())
	if err != nil {
		return nil, fmt.Errorf("identity: enrol: collector sent an unparsable CA certificate: %w", err)
	}
	if !ca.IsCA {
		return nil, errors.New("identity: enrol: collector's CA certificate is not a CA")
	}
	if pin != nil && !bytes.Equal(spkiHash(ca), pin) {
		return nil, fmt.Errorf("identity: enrol: collector's CA %s does not match the pin %s", CAPin(ca), cfg.CAPin)
	}
	if fileCAs != nil && !containsCert(fileCAs, ca) {
		return nil, fmt.Errorf("identity: enrol: collector's CA is not the one in %s", cfg.CAFile)
	}
	if resp.GetAgentId() == "" || len(resp.GetFingerprintKey()) == 0 {
		return nil, errors.New("identity: enrol: collector response lacks agent_id or fingerprint key")
	}
	cert, err := parseIssued(resp.GetCertificateDer(), key)
	if err != nil {
		return nil, fmt.Errorf("identity: enrol: %w", err)
	}
	rec := identityRecord{
		AgentID:    resp.GetAgentId(),
		Collector:  cfg.Collector,
		ServerName: cfg.ServerName,
		EnrolledAt: o.now().UTC(),
	}
	id := newIdentity(dir, o, rec, ca, resp.GetFingerprintKey())
	if err := id.checkClientCert(cert.Leaf); err != nil {
		return nil, fmt.Errorf("identity: enrol: issued %w", err)
	}
	id.cert = cert
	if err := id.save(rec, cert, key); err != nil {
		return nil, err
	}
	id.log.Info("enrolled", "agent_id", rec.AgentID, "collector", cfg.Collector,
		"ca", CAPin(ca), "cert_expires", cert.Leaf.NotAfter)
	return id, nil
}

// save writes all files; identity.json goes last so a crash leaves "not enrolled".
func (id *Identity) save(rec identityRecord, cert *tls.Certificate, key *ecdsa.PrivateKey) error {
	if err := os.MkdirAll(id.dir, 0o700); err != nil {
		return fmt.Errorf("identity: create state dir: %w", err)
	}
	if err := os.Chmod(id.dir, 0o700); err != nil {
		return fmt.Errorf("identity: chmod state dir: %w", err)
	}
	// Remove the completion marker first: a crash mid-way must not load a mixed identity.
	if err := os.Remove(filepath.Join(id.dir, identityFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("identity: remove old enrolment: %w", err)
	}
	cp, err := clientPEM(cert.Certificate[0], key)
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	recJSON, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return fmt.Errorf("identity: marshal identity: %w", err)
	}
	files := []struct {
		name string
		data []byte
	}{
		{caFile, pemCert(id.ca.Raw)},
		{fingerprintFile, id.fpKey},
		{clientFile, cp},
		{identityFile, append(recJSON, '\n')},
	}
	for _, f := range files {
		if err := writeFileAtomic(id.dir, f.name, f.data); err != nil {
			return fmt.Errorf("identity: %w", err)
		}
	}
	return nil
}

func containsCert(cs []*x509.Certificate, c *x509.Certificate) bool {
	for _, x := range cs {
		if x.Equal(c) {
			return true
		}
	}
	return false
}

// pinVerifier authenticates the collector on first contact without a CA file: the chain it
// presents must contain a CA certificate whose SPKI hashes to the pin, and the server
// certificate must verify up to that CA for serverName.
func pinVerifier(pin []byte, serverName string) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return errors.New("collector presented no certificate")
		}
		certs := make([]*x509.Certificate, len(raw))
		for i, r := range raw {
			c, err := x509.ParseCertificate(r)
			if err != nil {
				return fmt.Errorf("collector certificate %d: %w", i, err)
			}
			certs[i] = c
		}
		roots, inter := x509.NewCertPool(), x509.NewCertPool()
		found := false
		for _, c := range certs {
			if c.IsCA && bytes.Equal(spkiHash(c), pin) {
				roots.AddCert(c)
				found = true
			} else {
				inter.AddCert(c)
			}
		}
		if !found {
			return fmt.Errorf("collector's TLS chain has no CA matching the pin sha256:%x (wrong pin, wrong collector, or the collector does not send its CA certificate in the chain)", pin)
		}
		if _, err := certs[0].Verify(x509.VerifyOptions{
			Roots:         roots,
			Intermediates: inter,
			DNSName:       serverName,
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}); err != nil {
			return fmt.Errorf("collector certificate does not verify up to the pinned CA: %w", err)
		}
		return nil
	}
}
