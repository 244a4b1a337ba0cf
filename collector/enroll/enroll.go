package enroll

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/ward-dlp/ward/collector/store"
)

// TokenPrefix marks Ward enrolment tokens so secret scanners and humans recognise them.
const TokenPrefix = "wardet_"

// Errors of Enroll, wrapping the store's token errors so callers can tell them apart.
var (
	ErrTokenUnknown = store.ErrTokenUnknown
	ErrTokenUsed    = store.ErrTokenUsed
	ErrTokenExpired = store.ErrTokenExpired
)

// Enroller issues enrolment tokens and turns a token plus a CSR into an agent identity.
type Enroller struct {
	ca       *Authority
	store    *store.Store
	log      *slog.Logger
	tokenTTL time.Duration
	certTTL  time.Duration
	now      func() time.Time
}

// NewEnroller builds an Enroller. tokenTTL is the default token lifetime (1 h when zero);
// certTTL the lifetime of agent certificates (30 days when zero).
func NewEnroller(ca *Authority, st *store.Store, tokenTTL, certTTL time.Duration, log *slog.Logger) *Enroller {
	if tokenTTL <= 0 {
		tokenTTL = time.Hour
	}
	if certTTL <= 0 {
		certTTL = 30 * 24 * time.Hour
	}
	return &Enroller{ca: ca, store: st, log: log, tokenTTL: tokenTTL, certTTL: certTTL, now: ca.opts.Now}
}

// Authority returns the CA the enroller signs with.
func (e *Enroller) Authority() *Authority { return e.ca }

// CreateToken makes a new single-use token valid for ttl (the default when zero). The token
// is returned once and only its SHA-256 is stored: a stolen database enrols nobody.
// Hashing without a salt is sound here because the token is 256 random bits.
func (e *Enroller) CreateToken(ctx context.Context, ttl time.Duration) (token string, expires time.Time, err error) {
	if ttl <= 0 {
		ttl = e.tokenTTL
	}
	if ttl > MaxTokenTTL {
		return "", time.Time{}, fmt.Errorf("enroll: %w: %s is longer than %s", ErrTTLTooLong, ttl, MaxTokenTTL)
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return "", time.Time{}, fmt.Errorf("enroll: generate token: %w", err)
	}
	token = TokenPrefix + base64.RawURLEncoding.EncodeToString(secret)
	now := e.now()
	expires = now.Add(ttl)
	if err := e.store.AddToken(ctx, HashToken(token), now, expires); err != nil {
		return "", time.Time{}, fmt.Errorf("enroll: %w", err)
	}
	e.log.Info("created enrolment token", "expires", expires)
	return token, expires, nil
}

// HashToken is how tokens are stored and looked up.
func HashToken(token string) []byte {
	sum := sha256.Sum256([]byte(strings.TrimSpace(token)))
	return sum[:]
}

// Request is what an agent presents to enrol.
type Request struct {
	Token        string
	CSRDER       []byte
	Hostname     string
	MachineID    string
	AgentVersion string
}

// Identity is what an enrolled agent receives.
type Identity struct {
	AgentID        string
	CertificateDER []byte
	CADER          []byte
	FingerprintKey []byte
}

// Enroll checks the CSR, consumes the token and records the agent, and signs its certificate,
// all or nothing: the token is consumed in the same transaction that records the agent, and
// that transaction commits only if signing succeeded.
func (e *Enroller) Enroll(ctx context.Context, req Request) (Identity, error) {
	if req.Token == "" {
		return Identity{}, fmt.Errorf("enroll: %w: empty token", ErrTokenUnknown)
	}
	csr, err := ParseCSR(req.CSRDER)
	if err != nil {
		return Identity{}, fmt.Errorf("enroll: %w", err)
	}
	id, err := uuid.NewV7()
	if err != nil {
		return Identity{}, fmt.Errorf("enroll: new agent id: %w", err)
	}
	agentID := id.String()
	var certDER []byte
	agent := store.Agent{
		ID:        agentID,
		Hostname:  bound(req.Hostname, 255),
		MachineID: bound(req.MachineID, 128),
		Version:   bound(req.AgentVersion, 64),
	}
	err = e.store.EnrollAgent(ctx, HashToken(req.Token), e.now(), agent, func() error {
		var err error
		certDER, err = e.ca.IssueClientCert(csr, agentID, e.certTTL)
		return err
	})
	if err != nil {
		return Identity{}, fmt.Errorf("enroll: %w", err)
	}
	e.log.Info("agent enrolled", "agent_id", agentID, "hostname", agent.Hostname, "machine_id", agent.MachineID, "version", agent.Version)
	return Identity{
		AgentID:        agentID,
		CertificateDER: certDER,
		CADER:          e.ca.CACertDER(),
		FingerprintKey: e.ca.FingerprintKey(),
	}, nil
}

// Renew issues a new certificate for an already authenticated, non-revoked agent.
func (e *Enroller) Renew(ctx context.Context, agentID string, csrDER []byte) ([]byte, error) {
	csr, err := ParseCSR(csrDER)
	if err != nil {
		return nil, fmt.Errorf("enroll: renew %s: %w", agentID, err)
	}
	a, err := e.store.Agent(ctx, agentID)
	if err != nil {
		return nil, fmt.Errorf("enroll: renew: %w", err)
	}
	if a.Revoked {
		return nil, fmt.Errorf("enroll: renew %s: %w", agentID, ErrRevoked)
	}
	der, err := e.ca.IssueClientCert(csr, agentID, e.certTTL)
	if err != nil {
		return nil, fmt.Errorf("enroll: renew: %w", err)
	}
	if err := e.store.TouchAgent(ctx, agentID, e.now()); err != nil {
		return nil, fmt.Errorf("enroll: renew: %w", err)
	}
	e.log.Info("agent certificate renewed", "agent_id", agentID)
	return der, nil
}

// MaxTokenTTL bounds token lifetimes: a token is a bearer secret, and long-lived ones end up
// in wikis and install scripts.
const MaxTokenTTL = 7 * 24 * time.Hour

// ErrTTLTooLong is returned for token lifetimes above MaxTokenTTL.
var ErrTTLTooLong = errors.New("enrolment token lifetime too long")

// ErrRevoked is returned for revoked agents.
var ErrRevoked = errors.New("agent has been revoked")

// bound cuts agent-supplied strings so a hostile agent cannot bloat the agents table.
func bound(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	return strings.ToValidUTF8(s, "")
}
