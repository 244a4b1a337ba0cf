// Package console is Ward's web console: the SOC analyst's events and evidence, the
// compliance auditor's shadow-IT views and reports, the administrator's fleet and app
// sanctioning, over HTTPS from the collector. Server-rendered HTML with a small embedded
// script for live updates; every asset is embedded, nothing is loaded from the network.
//
// Security model: local accounts (argon2id passwords, TOTP for everyone, hashed recovery
// codes) or OIDC single sign-on; database-backed sessions with idle and absolute timeouts in
// __Host- cookies (Secure, HttpOnly, SameSite=Strict); a synchronizer CSRF token on every
// state change on top of Go's cross-origin protection; per-address rate limiting and
// per-account lockout; a strict Content-Security-Policy without inline script. Every route
// names one permission and the server checks it for every request; every view of
// evidence, every export and every administrative action goes to the audit log.
package console

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/ward-dlp/ward/classifiers/catalog"
	"github.com/ward-dlp/ward/collector/audit"
	"github.com/ward-dlp/ward/collector/console/account"
	"github.com/ward-dlp/ward/collector/enroll"
	collectorpolicy "github.com/ward-dlp/ward/collector/policy"
	"github.com/ward-dlp/ward/collector/store"
)

// Auditor records audited actions; *audit.Log implements it.
type Auditor interface {
	Record(ctx context.Context, e audit.Entry) error
}

// Options are the console's collaborators.
type Options struct {
	Config Config
	Store  *store.Store
	// Enroller creates enrolment tokens for admins; nil hides that action.
	Enroller *enroll.Enroller
	// Auditor receives every audited action. Required: a console that cannot audit refuses
	// to show evidence.
	Auditor Auditor
	// AuditVerifier checks the audit log's signed checkpoints for the audit view; nil shows
	// the log without verification.
	AuditVerifier note.Verifier
	// Sealer protects TOTP secrets at rest.
	Sealer *account.Sealer
	// FactsKey keys user pseudonyms in the facts index (store.UserKey).
	FactsKey []byte
	// Catalog names apps; nil means the built-in catalog.
	Catalog *catalog.Catalog
	// StateDir is the collector's state directory (default place of the sanctioning file).
	StateDir string
	// GetCertificate serves the collector CA's certificate when Config has no cert_file.
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// Sanctioner signs the console's app decisions for agents; nil: decisions are stored
	// and written to the sanctioning file only.
	Sanctioner *collectorpolicy.Sanctioner
	// Params are the argon2id parameters; zero means account.DefaultParams.
	Params  account.Params
	Version string
	Log     *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Server is the console.
type Server struct {
	cfg      Config
	st       *store.Store
	enr      *enroll.Enroller
	audit    Auditor
	verifier note.Verifier
	sealer   *account.Sealer
	factsKey []byte
	cat      *catalog.Catalog
	params   account.Params
	version  string
	log      *slog.Logger
	now      func() time.Time
	getCert  func(*tls.ClientHelloInfo) (*tls.Certificate, error)

	sanctionedFile string
	sanctionMu     sync.Mutex
	sanctioner     *collectorpolicy.Sanctioner
	oidc           *oidcLogin // nil without console.oidc

	pages   *template.Template
	routes  []Route
	limiter *limiter
	// hashing bounds concurrent argon2id computations (64 MiB each).
	hashing chan struct{}
	// dummyHash is verified against for unknown users, so a login for a name that does not
	// exist costs the same as one that does.
	dummyHash string
}

// Route is one endpoint and the permission it needs. Public routes have Perm "".
type Route struct {
	Pattern string
	Perm    Perm
	// Stage is the login stage a public-but-session route needs (mfa, enrol).
	Stage   string
	handler http.HandlerFunc
}

// New builds the console.
func New(o Options) (*Server, error) {
	if o.Store == nil || o.Auditor == nil || o.Sealer == nil {
		return nil, errors.New("console: store, auditor and sealer are required")
	}
	if len(o.FactsKey) < 16 {
		return nil, errors.New("console: facts key must be at least 16 bytes")
	}
	cfg := o.Config.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, st: o.Store, enr: o.Enroller, audit: o.Auditor, verifier: o.AuditVerifier, sealer: o.Sealer,
		factsKey: o.FactsKey, cat: o.Catalog, params: o.Params, version: o.Version, log: o.Log, now: o.Now,
		getCert: o.GetCertificate, hashing: make(chan struct{}, 2), sanctioner: o.Sanctioner}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.params == (account.Params{}) {
		s.params = account.DefaultParams
	}
	if s.cat == nil {
		c, err := catalog.Builtin()
		if err != nil {
			return nil, err
		}
		s.cat = c
	}
	s.sanctionedFile = cfg.SanctionedFile
	if s.sanctionedFile == "" {
		s.sanctionedFile = filepath.Join(o.StateDir, "sanctioned-apps.yaml")
	}
	s.limiter = newLimiter(cfg.LoginRatePerMinute, time.Minute)
	if cfg.OIDC.Enabled() {
		o, err := newOIDCLogin(cfg.OIDC, s.now)
		if err != nil {
			return nil, err
		}
		s.oidc = o
	}
	pw, err := account.NewPassword()
	if err != nil {
		return nil, err
	}
	if s.dummyHash, err = account.HashPassword(pw, s.params); err != nil {
		return nil, err
	}
	if s.pages, err = parseTemplates(); err != nil {
		return nil, err
	}
	s.routes = s.buildRoutes()
	return s, nil
}

// Routes lists every endpoint with its permission (the authorization tests walk it).
func (s *Server) Routes() []Route { return append([]Route(nil), s.routes...) }

// Handler is the console's HTTP handler.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, r := range s.routes {
		mux.Handle(r.Pattern, s.guard(r))
	}
	// Anything else is a 404 with the console's headers, not Go's default text.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" {
			s.home(w, r)
			return
		}
		s.notFound(w, r)
	})
	cop := http.NewCrossOriginProtection()
	return s.securityHeaders(cop.Handler(mux))
}

// TLSConfig is the console listener's TLS configuration.
func (s *Server) TLSConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}
	switch {
	case s.cfg.CertFile != "":
		kp := &keyPair{cert: s.cfg.CertFile, key: s.cfg.KeyFile}
		if _, err := kp.get(nil); err != nil {
			return nil, err
		}
		cfg.GetCertificate = kp.get
	case s.getCert != nil:
		cfg.GetCertificate = s.getCert
	default:
		return nil, errors.New("console: no certificate: set console.cert_file/key_file")
	}
	return cfg, nil
}

// keyPair reloads a certificate from disk when its file changes, so a renewed certificate is
// served without a restart.
type keyPair struct {
	cert, key string
	mu        sync.Mutex
	mtime     time.Time
	c         *tls.Certificate
}

func (k *keyPair) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	fi, err := os.Stat(k.cert)
	if err != nil {
		if k.c != nil {
			return k.c, nil
		}
		return nil, fmt.Errorf("console: certificate: %w", err)
	}
	if k.c != nil && fi.ModTime().Equal(k.mtime) {
		return k.c, nil
	}
	c, err := tls.LoadX509KeyPair(k.cert, k.key)
	if err != nil {
		if k.c != nil {
			return k.c, nil
		}
		return nil, fmt.Errorf("console: load certificate: %w", err)
	}
	k.c, k.mtime = &c, fi.ModTime()
	return k.c, nil
}

// Serve serves HTTPS on l until ctx ends, then shuts down within grace. It also purges
// expired sessions periodically.
func (s *Server) Serve(ctx context.Context, l net.Listener, grace time.Duration) error {
	tcfg, err := s.TLSConfig()
	if err != nil {
		return err
	}
	hs := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      5 * time.Minute, // report downloads
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		TLSConfig:         tcfg,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.ServeTLS(l, "", "") }()
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for {
		select {
		case err := <-errc:
			return fmt.Errorf("console: serve: %w", err)
		case <-tick.C:
			if _, err := s.st.PurgeConsoleSessions(ctx, s.now(), s.cfg.IdleTimeout); err != nil && ctx.Err() == nil {
				s.log.Warn("purging console sessions", "err", err)
			}
			continue
		case <-ctx.Done():
		}
		break
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		_ = hs.Close()
		return fmt.Errorf("console: shutdown: %w", err)
	}
	return nil
}

// cspPolicy allows nothing but the console's own origin: no inline script or style, no
// frames, no plugins, forms only to itself.
const cspPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"

func (s *Server) securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", cspPolicy)
		h.Set("Strict-Transport-Security", "max-age=31536000")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()")
		if len(r.URL.Path) < 8 || r.URL.Path[:8] != "/static/" {
			h.Set("Cache-Control", "no-store")
		}
		next.ServeHTTP(w, r)
	})
}

func hashID(id string) []byte {
	h := sha256.Sum256([]byte(id))
	return h[:]
}
