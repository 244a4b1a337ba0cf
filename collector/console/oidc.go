package console

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/ward-dlp/ward/collector/audit"
	"github.com/ward-dlp/ward/collector/console/account"
	"github.com/ward-dlp/ward/collector/store"
)

// OpenID Connect single sign-on: authorization code flow with PKCE (S256), a state bound to
// the browser that started the sign-in, a nonce checked in the ID token, and the ID token
// verified by go-oidc (signature against the provider's JWKS, issuer, audience = our client
// id, expiry). The provider authenticates the person, multi-factor included; Ward maps a
// claim (groups by default) to one role, creates the account at first sign-in, and refuses
// people whose claims map to no role. The session is the same as a local login's.

const (
	oidcStartPath    = "/login/oidc"
	oidcCallbackPath = "/login/oidc/callback"
	// oidcCookie holds only a random handle to the pending sign-in kept on the server. It
	// is SameSite=Lax because the provider's redirect back is a cross-site navigation, on
	// which Strict cookies are not sent.
	oidcCookie     = "__Host-ward-oidc"
	oidcPendingTTL = 10 * time.Minute
	maxOIDCPending = 10000
)

// oidcPending is one sign-in between the redirect to the provider and its callback.
type oidcPending struct {
	state, nonce, verifier, next string
	expires                      time.Time
}

// oidcLogin is the configured provider, discovered on first use (the console starts while
// the provider is unreachable, and says so at sign-in rather than at boot).
type oidcLogin struct {
	cfg    OIDCConfig
	secret string
	client *http.Client
	now    func() time.Time

	mu       sync.Mutex
	provider *oidc.Provider
	pending  map[string]oidcPending // by handle (the cookie's value)
}

func newOIDCLogin(cfg OIDCConfig, now func() time.Time) (*oidcLogin, error) {
	o := &oidcLogin{cfg: cfg, now: now, pending: map[string]oidcPending{}}
	if cfg.ClientSecretFile != "" {
		b, err := os.ReadFile(cfg.ClientSecretFile)
		if err != nil {
			return nil, fmt.Errorf("console.oidc.client_secret_file: %w", err)
		}
		o.secret = strings.TrimSpace(string(b))
	}
	tcfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("console.oidc.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("console.oidc.ca_file %s: no PEM certificates", cfg.CAFile)
		}
		tcfg.RootCAs = pool
	}
	o.client = &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{TLSClientConfig: tcfg, Proxy: http.ProxyFromEnvironment}}
	return o, nil
}

func (o *oidcLogin) ctx(parent context.Context) context.Context {
	return oidc.ClientContext(parent, o.client)
}

// discover returns the provider, fetching its discovery document once.
func (o *oidcLogin) discover(ctx context.Context) (*oidc.Provider, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.provider != nil {
		return o.provider, nil
	}
	// The provider keeps this context for fetching its keys later, so it must outlive the
	// request: only the HTTP client is taken from it.
	p, err := oidc.NewProvider(o.ctx(context.WithoutCancel(ctx)), o.cfg.Issuer)
	if err != nil {
		return nil, err
	}
	o.provider = p
	return p, nil
}

func (o *oidcLogin) oauth(p *oidc.Provider) *oauth2.Config {
	scopes := []string{oidc.ScopeOpenID}
	if len(o.cfg.Scopes) == 0 {
		scopes = append(scopes, "profile", "email")
	}
	for _, s := range o.cfg.Scopes {
		if s != oidc.ScopeOpenID {
			scopes = append(scopes, s)
		}
	}
	return &oauth2.Config{ClientID: o.cfg.ClientID, ClientSecret: o.secret, RedirectURL: o.cfg.RedirectURL,
		Endpoint: p.Endpoint(), Scopes: scopes}
}

func (o *oidcLogin) put(p oidcPending) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := o.now()
	if len(o.pending) >= maxOIDCPending {
		for k, v := range o.pending {
			if now.After(v.expires) {
				delete(o.pending, k)
			}
		}
	}
	if len(o.pending) >= maxOIDCPending {
		return "" // a flood of unfinished sign-ins; refuse new ones rather than grow
	}
	h := randomToken(32)
	o.pending[h] = p
	return h
}

// take removes and returns the pending sign-in of handle (single use).
func (o *oidcLogin) take(handle string) (oidcPending, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	p, ok := o.pending[handle]
	delete(o.pending, handle)
	if !ok || o.now().After(p.expires) {
		return oidcPending{}, false
	}
	return p, true
}

// oidcStart sends the browser to the provider.
func (s *Server) oidcStart(w http.ResponseWriter, r *http.Request) {
	if s.oidc == nil {
		s.notFound(w, r)
		return
	}
	if !s.limiter.allow(clientAddr(r), s.now()) {
		s.showLogin(w, r, http.StatusTooManyRequests, "too many sign-in attempts from this address; wait a minute")
		return
	}
	p, err := s.oidc.discover(r.Context())
	if err != nil {
		s.log.Error("OIDC discovery", "issuer", s.cfg.OIDC.Issuer, "err", err)
		s.showLogin(w, r, http.StatusBadGateway, "single sign-on is unavailable (the identity provider did not answer); try again or sign in with a local account")
		return
	}
	pend := oidcPending{state: randomToken(32), nonce: randomToken(32), verifier: oauth2.GenerateVerifier(),
		next: safeNext(r.URL.Query().Get("next")), expires: s.now().Add(oidcPendingTTL)}
	h := s.oidc.put(pend)
	if h == "" {
		s.showLogin(w, r, http.StatusServiceUnavailable, "too many unfinished sign-ins; try again in a few minutes")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: oidcCookie, Value: h, Path: "/", Secure: true, HttpOnly: true,
		SameSite: http.SameSiteLaxMode, MaxAge: int(oidcPendingTTL / time.Second)})
	http.Redirect(w, r, s.oidc.oauth(p).AuthCodeURL(pend.state, oidc.Nonce(pend.nonce), oauth2.S256ChallengeOption(pend.verifier)),
		http.StatusFound)
}

// oidcRefuse ends a failed callback: audited, the reason logged, a generic message shown.
func (s *Server) oidcRefuse(w http.ResponseWriter, r *http.Request, code int, object, reason, msg string) {
	_ = s.record(r.Context(), nil, "console.login", object, audit.OutcomeFailure, map[string]string{"method": "oidc", "reason": reason})
	s.log.Warn("OIDC sign-in refused", "reason", reason, "address", clientAddr(r))
	s.showLogin(w, r, code, msg)
}

// oidcCallback completes the code flow and signs the person in.
func (s *Server) oidcCallback(w http.ResponseWriter, r *http.Request) {
	if s.oidc == nil {
		s.notFound(w, r)
		return
	}
	ctx := r.Context()
	c, err := r.Cookie(oidcCookie)
	http.SetCookie(w, &http.Cookie{Name: oidcCookie, Value: "", Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode, MaxAge: -1})
	if err != nil {
		s.oidcRefuse(w, r, http.StatusBadRequest, "oidc", "no pending sign-in cookie", "the single sign-on attempt expired; try again")
		return
	}
	pend, ok := s.oidc.take(c.Value)
	q := r.URL.Query()
	switch {
	case !ok:
		s.oidcRefuse(w, r, http.StatusBadRequest, "oidc", "unknown or expired sign-in", "the single sign-on attempt expired; try again")
		return
	case subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(pend.state)) != 1:
		s.oidcRefuse(w, r, http.StatusBadRequest, "oidc", "state mismatch", "the single sign-on answer does not belong to this browser; try again")
		return
	case q.Get("error") != "":
		s.oidcRefuse(w, r, http.StatusUnauthorized, "oidc", "provider error: "+boundName(q.Get("error")), "the identity provider refused the sign-in")
		return
	case q.Get("code") == "":
		s.oidcRefuse(w, r, http.StatusBadRequest, "oidc", "no code", "the identity provider sent no authorization code")
		return
	}
	p, err := s.oidc.discover(ctx)
	if err != nil {
		s.showLogin(w, r, http.StatusBadGateway, "single sign-on is unavailable (the identity provider did not answer)")
		return
	}
	octx := s.oidc.ctx(ctx)
	tok, err := s.oidc.oauth(p).Exchange(octx, q.Get("code"), oauth2.VerifierOption(pend.verifier))
	if err != nil {
		s.oidcRefuse(w, r, http.StatusUnauthorized, "oidc", "code exchange failed: "+boundName(err.Error()), "the identity provider did not confirm the sign-in")
		return
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		s.oidcRefuse(w, r, http.StatusUnauthorized, "oidc", "no ID token", "the identity provider sent no ID token")
		return
	}
	idt, err := p.VerifierContext(octx, &oidc.Config{ClientID: s.cfg.OIDC.ClientID, Now: s.now}).Verify(octx, raw)
	if err != nil {
		s.oidcRefuse(w, r, http.StatusUnauthorized, "oidc", "ID token refused: "+boundName(err.Error()), "the identity provider's answer did not verify")
		return
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(pend.nonce)) != 1 {
		s.oidcRefuse(w, r, http.StatusUnauthorized, "oidc", "nonce mismatch", "the identity provider's answer did not verify")
		return
	}
	if idt.AccessTokenHash != "" {
		if err := idt.VerifyAccessToken(tok.AccessToken); err != nil {
			s.oidcRefuse(w, r, http.StatusUnauthorized, "oidc", "at_hash mismatch", "the identity provider's answer did not verify")
			return
		}
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		s.oidcRefuse(w, r, http.StatusUnauthorized, "oidc", "claims unreadable", "the identity provider's answer did not verify")
		return
	}
	subject := idt.Issuer + "|" + idt.Subject
	name := s.oidcUsername(claims, idt.Subject)
	role, why := s.oidcRole(claims)
	object := "user:" + boundName(name)
	if role == "" {
		s.oidcRefuse(w, r, http.StatusForbidden, object, why, "your account has no Ward role; ask an administrator to add you to a Ward group at the identity provider")
		return
	}
	u, err := s.st.ConsoleUserByOIDC(ctx, subject)
	switch {
	case errors.Is(err, store.ErrUserUnknown):
		id, cerr := s.st.CreateConsoleUser(ctx, store.ConsoleUser{Username: name, Role: string(role), OIDCSubject: subject}, s.now())
		if errors.Is(cerr, store.ErrUserExists) {
			s.oidcRefuse(w, r, http.StatusConflict, object, "user name taken by another account",
				"a Ward account with your user name already exists; ask an administrator")
			return
		}
		if cerr == nil {
			u, err = s.st.ConsoleUserByID(ctx, id)
		} else {
			err = cerr
		}
		if err == nil {
			s.recordUser(ctx, u, "console.user_create", audit.OutcomeSuccess, map[string]string{"method": "oidc", "role": string(role), "issuer": idt.Issuer})
		}
	case err == nil && u.Role != string(role):
		// The role follows the provider's groups: a change there takes effect at sign-in.
		if err = s.st.SetConsoleUserRole(ctx, u.ID, string(role)); err == nil {
			s.recordUser(ctx, u, "console.role_change", audit.OutcomeSuccess, map[string]string{"from": u.Role, "to": string(role), "method": "oidc"})
			u.Role = string(role)
		}
	}
	if err != nil {
		s.log.Error("OIDC account", "err", err)
		s.showLogin(w, r, http.StatusInternalServerError, "sign-in failed; see the collector log")
		return
	}
	if u.Disabled {
		s.recordUser(ctx, u, "console.login", audit.OutcomeDenied, map[string]string{"method": "oidc", "reason": "disabled"})
		s.showLogin(w, r, http.StatusForbidden, "this Ward account is disabled")
		return
	}
	s.completeLogin(w, r, u, "oidc", pend.next)
}

func (s *Server) oidcUsername(claims map[string]any, sub string) string {
	for _, k := range []string{s.cfg.OIDC.UsernameClaim, "preferred_username", "email"} {
		if v, ok := claims[k].(string); k != "" && ok && strings.TrimSpace(v) != "" {
			return boundName(strings.TrimSpace(v))
		}
	}
	return boundName(sub)
}

// oidcRole maps the role claim to exactly one role; why says why none was chosen.
func (s *Server) oidcRole(claims map[string]any) (account.Role, string) {
	key := s.cfg.OIDC.RoleClaim
	if key == "" {
		key = "groups"
	}
	var values []string
	switch v := claims[key].(type) {
	case string:
		values = []string{v}
	case []any:
		for _, x := range v {
			if s, ok := x.(string); ok {
				values = append(values, s)
			}
		}
	}
	var roles []string
	for _, v := range values {
		if r, ok := s.cfg.OIDC.Roles[v]; ok && !slices.Contains(roles, r) {
			roles = append(roles, r)
		}
	}
	sort.Strings(roles)
	switch len(roles) {
	case 0:
		return "", fmt.Sprintf("no value of claim %q maps to a role", key)
	case 1:
		r, err := account.ParseRole(roles[0])
		if err != nil {
			return "", err.Error()
		}
		return r, ""
	}
	return "", fmt.Sprintf("claim %q maps to several roles (%s); Ward keeps duties separate and does not pick one", key, strings.Join(roles, ", "))
}
