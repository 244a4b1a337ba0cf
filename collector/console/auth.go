package console

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"image/png"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"

	"github.com/ward-dlp/ward/collector/audit"
	"github.com/ward-dlp/ward/collector/console/account"
	"github.com/ward-dlp/ward/collector/store"
)

// Session stages: a password (or nothing yet) proven, waiting for the second factor or for
// enrolment; or a complete login.
const (
	stageMFA   = "mfa"
	stageEnrol = "enrol"
	stageFull  = "full"
)

const (
	sessionCookie = "__Host-ward-session"
	loginCookie   = "__Host-ward-login"
	// pendingTTL bounds the time between the password and the second factor.
	pendingTTL = 5 * time.Minute
)

// principal is the signed-in user of a request.
type principal struct {
	user    store.ConsoleUser
	role    account.Role
	session store.ConsoleSession
}

type principalKey struct{}

func principalFrom(ctx context.Context) *principal {
	p, _ := ctx.Value(principalKey{}).(*principal)
	return p
}

func isAPI(r *http.Request) bool { return strings.HasPrefix(r.URL.Path, "/api/") }

func randomToken(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("console: crypto/rand failed: %v", err)) // the OS RNG does not fail on Linux
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// loadSession resolves the session cookie; ok is false when there is no live session.
func (s *Server) loadSession(r *http.Request) (*principal, bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" || len(c.Value) > 128 {
		return nil, false
	}
	ctx := r.Context()
	cs, err := s.st.ConsoleSessionByHash(ctx, hashID(c.Value))
	if err != nil {
		return nil, false
	}
	now := s.now()
	if !now.Before(cs.ExpiresAt) || (cs.Stage == stageFull && now.Sub(cs.LastSeen) >= s.cfg.IdleTimeout) {
		_ = s.st.DeleteConsoleSession(ctx, cs.IDHash)
		return nil, false
	}
	u, err := s.st.ConsoleUserByID(ctx, cs.UserID)
	if err != nil || u.Disabled {
		_ = s.st.DeleteConsoleSession(ctx, cs.IDHash)
		return nil, false
	}
	role, err := account.ParseRole(u.Role)
	if err != nil {
		return nil, false
	}
	// Touch at most every few seconds: a page and its polls should not each be a write.
	if cs.Stage == stageFull && now.Sub(cs.LastSeen) > 5*time.Second {
		if err := s.st.TouchConsoleSession(ctx, cs.IDHash, now); err != nil {
			s.log.Warn("touch console session", "err", err)
		}
	}
	return &principal{user: u, role: role, session: cs}, true
}

// guard enforces a route's permission (and CSRF for state changes) before its handler.
func (s *Server) guard(rt Route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rt.Perm == "" && rt.Stage == "" {
			rt.handler(w, r)
			return
		}
		p, ok := s.loadSession(r)
		if rt.Stage != "" {
			if !ok || p.session.Stage != rt.Stage {
				http.Redirect(w, r, "/login", http.StatusSeeOther)
				return
			}
		} else if !ok || p.session.Stage != stageFull {
			if isAPI(r) {
				writeError(w, http.StatusUnauthorized, "sign in first")
				return
			}
			http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		ctx := context.WithValue(r.Context(), principalKey{}, p)
		r = r.WithContext(ctx)
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			if !s.checkCSRF(r, p.session.CSRF) {
				s.record(ctx, p, "console.csrf", r.URL.Path, audit.OutcomeDenied, nil)
				s.deny(w, r, http.StatusForbidden, "missing or wrong CSRF token; reload the page")
				return
			}
		}
		if rt.Stage == "" && !Allowed(p.role, rt.Perm) {
			s.record(ctx, p, "console.denied", r.Method+" "+r.URL.Path, audit.OutcomeDenied, map[string]string{"permission": string(rt.Perm)})
			s.deny(w, r, http.StatusForbidden, fmt.Sprintf("the %s role may not do this (%s)", p.role, rt.Perm))
			return
		}
		rt.handler(w, r)
	})
}

// checkCSRF accepts the token from the X-CSRF-Token header (scripts) or the csrf form field.
func (s *Server) checkCSRF(r *http.Request, want string) bool {
	got := r.Header.Get("X-CSRF-Token")
	if got == "" {
		ct := r.Header.Get("Content-Type")
		if strings.HasPrefix(ct, "application/x-www-form-urlencoded") || strings.HasPrefix(ct, "multipart/form-data") {
			r.Body = http.MaxBytesReader(nil, r.Body, 64<<10)
			got = r.PostFormValue("csrf")
		}
	}
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

func (s *Server) deny(w http.ResponseWriter, r *http.Request, code int, msg string) {
	if isAPI(r) {
		writeError(w, code, msg)
		return
	}
	s.render(w, r, code, "error", map[string]any{"Title": http.StatusText(code), "Message": msg})
}

func (s *Server) notFound(w http.ResponseWriter, r *http.Request) {
	s.deny(w, r, http.StatusNotFound, "no such page")
}

// record writes an audit entry for the signed-in user; failures are logged (and for
// evidence views, handled by the caller, which must not show what it could not audit).
func (s *Server) record(ctx context.Context, p *principal, action, object, outcome string, details map[string]string) error {
	e := audit.Entry{Time: s.now(), Action: action, Object: object, Outcome: outcome, Details: details}
	if p != nil {
		e.Actor = audit.Actor{Type: audit.ActorConsole, ID: strconv.FormatInt(p.user.ID, 10), Name: p.user.Username}
	} else {
		e.Actor = audit.Actor{Type: audit.ActorConsole, ID: "-", Name: "anonymous"}
	}
	if err := s.audit.Record(ctx, e); err != nil {
		s.log.Error("audit record failed", "action", action, "err", err)
		return err
	}
	return nil
}

func (s *Server) recordUser(ctx context.Context, u store.ConsoleUser, action, outcome string, details map[string]string) {
	e := audit.Entry{Time: s.now(), Action: action, Object: "user:" + u.Username, Outcome: outcome, Details: details,
		Actor: audit.Actor{Type: audit.ActorConsole, ID: strconv.FormatInt(u.ID, 10), Name: u.Username}}
	if err := s.audit.Record(ctx, e); err != nil {
		s.log.Error("audit record failed", "action", action, "err", err)
	}
}

func (s *Server) setCookie(w http.ResponseWriter, name, value string, maxAge time.Duration) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: "/", Secure: true, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, MaxAge: int(maxAge / time.Second)})
}

func (s *Server) clearCookie(w http.ResponseWriter, name string) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: "/", Secure: true, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, MaxAge: -1})
}

// startSession creates a session at stage for u and sets its cookie.
func (s *Server) startSession(w http.ResponseWriter, r *http.Request, u store.ConsoleUser, stage string) error {
	id := randomToken(32)
	now := s.now()
	ttl := s.cfg.AbsoluteTimeout
	if stage != stageFull {
		ttl = pendingTTL
	}
	ua := r.UserAgent()
	if len(ua) > 256 {
		ua = ua[:256]
	}
	err := s.st.CreateConsoleSession(r.Context(), store.ConsoleSession{IDHash: hashID(id), UserID: u.ID, Stage: stage,
		CSRF: randomToken(32), CreatedAt: now, LastSeen: now, ExpiresAt: now.Add(ttl), Remote: clientAddr(r), UserAgent: ua})
	if err != nil {
		return err
	}
	s.setCookie(w, sessionCookie, id, ttl)
	return nil
}

// endSession deletes the request's session, if any.
func (s *Server) endSession(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(sessionCookie); err == nil {
		_ = s.st.DeleteConsoleSession(r.Context(), hashID(c.Value))
	}
	s.clearCookie(w, sessionCookie)
}

// limiter is a per-address token bucket for login attempts.
type limiter struct {
	mu      sync.Mutex
	rate    float64 // tokens per second
	burst   float64
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(perWindow int, window time.Duration) *limiter {
	return &limiter{rate: float64(perWindow) / window.Seconds(), burst: float64(perWindow), buckets: map[string]*bucket{}}
}

func (l *limiter) allow(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buckets) > 10000 { // forget idle addresses rather than grow without bound
		for k, b := range l.buckets {
			if now.Sub(b.last) > time.Hour {
				delete(l.buckets, k)
			}
		}
	}
	b := l.buckets[key]
	if b == nil {
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// verifyPassword runs argon2id with bounded concurrency.
func (s *Server) verifyPassword(ctx context.Context, pw, hash string) (ok, rehash bool, err error) {
	select {
	case s.hashing <- struct{}{}:
	case <-ctx.Done():
		return false, false, ctx.Err()
	}
	defer func() { <-s.hashing }()
	return account.VerifyPassword(pw, hash, s.params)
}

func (s *Server) hashPassword(ctx context.Context, pw string) (string, error) {
	select {
	case s.hashing <- struct{}{}:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	defer func() { <-s.hashing }()
	return account.HashPassword(pw, s.params)
}

// loginPage shows the sign-in form with a login-CSRF token bound to a cookie.
func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	s.showLogin(w, r, http.StatusOK, "")
}

func (s *Server) showLogin(w http.ResponseWriter, r *http.Request, code int, msg string) {
	tok := randomToken(24)
	s.setCookie(w, loginCookie, tok, 30*time.Minute)
	next := r.URL.Query().Get("next")
	if next == "" {
		next = r.PostFormValue("next")
	}
	data := map[string]any{"Title": "Sign in", "LoginCSRF": tok, "Error": msg, "Next": safeNext(next)}
	if s.oidc != nil {
		name := s.cfg.OIDC.DisplayName
		if name == "" {
			name = "single sign-on"
		}
		data["SSO"] = name
	}
	s.render(w, r, code, "login", data)
}

// safeNext keeps only local paths, so the login cannot redirect elsewhere.
func safeNext(n string) string {
	if n == "" || !strings.HasPrefix(n, "/") || strings.HasPrefix(n, "//") || strings.HasPrefix(n, "/\\") {
		return ""
	}
	return n
}

const genericLoginError = "wrong user name or password, or the account is locked"

func (s *Server) loginSubmit(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		s.showLogin(w, r, http.StatusBadRequest, "bad form")
		return
	}
	c, err := r.Cookie(loginCookie)
	if err != nil || subtle.ConstantTimeCompare([]byte(c.Value), []byte(r.PostFormValue("login_csrf"))) != 1 {
		s.showLogin(w, r, http.StatusForbidden, "the sign-in form expired; try again")
		return
	}
	ctx := r.Context()
	now := s.now()
	if !s.limiter.allow(clientAddr(r), now) {
		s.record(ctx, nil, "console.login", "address:"+clientAddr(r), audit.OutcomeDenied, map[string]string{"reason": "rate limited"})
		s.showLogin(w, r, http.StatusTooManyRequests, "too many sign-in attempts from this address; wait a minute")
		return
	}
	name, pw := r.PostFormValue("username"), r.PostFormValue("password")
	u, uerr := s.st.ConsoleUserByName(ctx, name)
	hash := s.dummyHash
	if uerr == nil && u.PasswordHash != "" {
		hash = u.PasswordHash
	}
	ok, rehash, verr := s.verifyPassword(ctx, pw, hash)
	switch {
	case uerr != nil:
		s.record(ctx, nil, "console.login", "user:"+boundName(name), audit.OutcomeFailure, map[string]string{"reason": "unknown user"})
		s.showLogin(w, r, http.StatusUnauthorized, genericLoginError)
		return
	case u.Disabled:
		s.recordUser(ctx, u, "console.login", audit.OutcomeDenied, map[string]string{"reason": "disabled"})
		s.showLogin(w, r, http.StatusUnauthorized, genericLoginError)
		return
	case now.Before(u.LockedUntil):
		s.recordUser(ctx, u, "console.login", audit.OutcomeDenied, map[string]string{"reason": "locked"})
		s.showLogin(w, r, http.StatusUnauthorized, genericLoginError)
		return
	case verr != nil || !ok:
		s.loginFailed(ctx, u, "wrong password")
		s.showLogin(w, r, http.StatusUnauthorized, genericLoginError)
		return
	}
	if rehash {
		if h, err := s.hashPassword(ctx, pw); err == nil {
			_ = s.st.RehashConsolePassword(ctx, u.ID, h)
		}
	}
	s.clearCookie(w, loginCookie)
	stage := stageMFA
	if !u.TOTPEnabled || u.MustChange {
		stage = stageEnrol
	}
	if err := s.startSession(w, r, u, stage); err != nil {
		s.log.Error("start session", "err", err)
		s.showLogin(w, r, http.StatusInternalServerError, "sign-in failed; see the collector log")
		return
	}
	next := safeNext(r.PostFormValue("next"))
	if stage == stageEnrol {
		http.Redirect(w, r, "/account/enrol", http.StatusSeeOther)
		return
	}
	http.Redirect(w, r, "/login/totp?next="+url.QueryEscape(next), http.StatusSeeOther)
}

func boundName(s string) string {
	if len(s) > 64 {
		return s[:64]
	}
	return s
}

func (s *Server) loginFailed(ctx context.Context, u store.ConsoleUser, reason string) {
	locked, err := s.st.RecordLoginFailure(ctx, u.ID, s.now(), s.cfg.MaxFailures, s.cfg.LockoutDuration)
	if err != nil {
		s.log.Error("record login failure", "err", err)
	}
	d := map[string]string{"reason": reason}
	if !locked.IsZero() {
		d["locked_until"] = locked.Format(time.RFC3339)
		s.log.Warn("console account locked", "user", u.Username, "until", locked)
	}
	s.recordUser(ctx, u, "console.login", audit.OutcomeFailure, d)
}

func (s *Server) totpPage(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	s.render(w, r, http.StatusOK, "totp", map[string]any{"Title": "Second factor", "CSRF": p.session.CSRF,
		"User": p.user.Username, "Next": safeNext(r.URL.Query().Get("next"))})
}

// checkTOTP checks code against the sealed secret of u, accepting the previous, current and
// next 30-second step, and consumes the step (a code works once).
func (s *Server) checkTOTP(ctx context.Context, u store.ConsoleUser, code string) (step int64, ok bool) {
	code = strings.TrimSpace(strings.ReplaceAll(code, " ", ""))
	if len(code) != 6 || u.TOTPSecret == nil {
		return 0, false
	}
	secret, err := s.sealer.Open(u.TOTPSecret, "totp:"+strconv.FormatInt(u.ID, 10))
	if err != nil {
		s.log.Error("open TOTP secret", "user", u.Username, "err", err)
		return 0, false
	}
	now := s.now().Unix() / 30
	for _, st := range []int64{now - 1, now, now + 1} {
		want, err := totp.GenerateCodeCustom(string(secret), time.Unix(st*30, 0), totp.ValidateOpts{Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
		if err != nil {
			return 0, false
		}
		if subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1 {
			return st, true
		}
	}
	return 0, false
}

func (s *Server) totpSubmit(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	p := principalFrom(ctx)
	u := p.user
	fail := func(msg string) {
		s.render(w, r, http.StatusUnauthorized, "totp", map[string]any{"Title": "Second factor", "CSRF": p.session.CSRF,
			"User": u.Username, "Error": msg, "Next": safeNext(r.PostFormValue("next"))})
	}
	if !s.limiter.allow(clientAddr(r), s.now()) {
		fail("too many attempts from this address; wait a minute")
		return
	}
	if s.now().Before(u.LockedUntil) {
		s.recordUser(ctx, u, "console.login", audit.OutcomeDenied, map[string]string{"reason": "locked"})
		s.endSession(w, r)
		s.showLogin(w, r, http.StatusUnauthorized, genericLoginError)
		return
	}
	method := "totp"
	if rc := r.PostFormValue("recovery"); rc != "" {
		method = "recovery code"
		used, err := s.st.UseRecoveryCode(ctx, u.ID, account.HashRecoveryCode(rc), s.now())
		if err != nil || !used {
			s.loginFailed(ctx, u, "wrong recovery code")
			fail("wrong code")
			return
		}
	} else {
		step, ok := s.checkTOTP(ctx, u, r.PostFormValue("code"))
		if !ok {
			s.loginFailed(ctx, u, "wrong TOTP code")
			fail("wrong code")
			return
		}
		if err := s.st.UseTOTPStep(ctx, u.ID, step); err != nil {
			s.loginFailed(ctx, u, "replayed TOTP code")
			fail("that code was already used; wait for the next one")
			return
		}
	}
	s.completeLogin(w, r, u, method, safeNext(r.PostFormValue("next")))
}

// completeLogin replaces the pending session with a new full one (a new id, so a session
// id seen before authentication is worthless after it).
func (s *Server) completeLogin(w http.ResponseWriter, r *http.Request, u store.ConsoleUser, method, next string) {
	ctx := r.Context()
	s.endSession(w, r)
	if err := s.st.RecordLoginSuccess(ctx, u.ID, s.now()); err != nil {
		s.log.Error("record login", "err", err)
	}
	if err := s.startSession(w, r, u, stageFull); err != nil {
		s.log.Error("start session", "err", err)
		s.showLogin(w, r, http.StatusInternalServerError, "sign-in failed; see the collector log")
		return
	}
	s.recordUser(ctx, u, "console.login", audit.OutcomeSuccess, map[string]string{"method": method, "address": clientAddr(r)})
	if next == "" {
		next = "/"
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (s *Server) totpKey(u store.ConsoleUser) (*otp.Key, error) {
	secret, err := s.sealer.Open(u.TOTPSecret, "totp:"+strconv.FormatInt(u.ID, 10))
	if err != nil {
		return nil, err
	}
	v := url.Values{}
	v.Set("secret", string(secret))
	v.Set("issuer", "Ward")
	v.Set("algorithm", "SHA1")
	v.Set("digits", "6")
	v.Set("period", "30")
	return otp.NewKeyFromURL("otpauth://totp/" + url.PathEscape("Ward:"+u.Username) + "?" + v.Encode())
}

// enrolPage shows a new TOTP secret as a QR code (and text), making one if needed.
func (s *Server) enrolPage(w http.ResponseWriter, r *http.Request) {
	s.showEnrol(w, r, http.StatusOK, "")
}

func (s *Server) showEnrol(w http.ResponseWriter, r *http.Request, code int, msg string) {
	ctx := r.Context()
	p := principalFrom(ctx)
	u := p.user
	if u.TOTPSecret == nil || u.TOTPEnabled {
		if !u.TOTPEnabled {
			k, err := totp.Generate(totp.GenerateOpts{Issuer: "Ward", AccountName: u.Username})
			if err != nil {
				s.deny(w, r, http.StatusInternalServerError, "could not create a TOTP secret")
				return
			}
			sealed, err := s.sealer.Seal([]byte(k.Secret()), "totp:"+strconv.FormatInt(u.ID, 10))
			if err == nil {
				err = s.st.SetPendingTOTP(ctx, u.ID, sealed)
			}
			if err != nil {
				s.log.Error("store pending TOTP", "err", err)
				s.deny(w, r, http.StatusInternalServerError, "could not store the TOTP secret")
				return
			}
			u.TOTPSecret = sealed
		}
	}
	k, err := s.totpKey(u)
	if err != nil {
		s.deny(w, r, http.StatusInternalServerError, "could not read the TOTP secret")
		return
	}
	s.render(w, r, code, "enrol", map[string]any{"Title": "Set up your authenticator", "CSRF": p.session.CSRF,
		"User": u.Username, "Secret": k.Secret(), "MustChange": u.MustChange, "NeedTOTP": !u.TOTPEnabled, "Error": msg,
		"MinPassword": account.MinPasswordLen})
}

// enrolQR renders the pending secret's otpauth URL as a PNG QR code, server-side.
func (s *Server) enrolQR(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	if p.user.TOTPSecret == nil || p.user.TOTPEnabled {
		s.notFound(w, r)
		return
	}
	k, err := s.totpKey(p.user)
	if err != nil {
		s.notFound(w, r)
		return
	}
	img, err := k.Image(240, 240)
	if err != nil {
		s.deny(w, r, http.StatusInternalServerError, "could not draw the QR code")
		return
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		s.deny(w, r, http.StatusInternalServerError, "could not draw the QR code")
		return
	}
	w.Header().Set("Content-Type", "image/png")
	_, _ = w.Write(b.Bytes())
}

func (s *Server) enrolSubmit(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	p := principalFrom(ctx)
	u := p.user
	if !s.limiter.allow(clientAddr(r), s.now()) {
		s.showEnrol(w, r, http.StatusTooManyRequests, "too many attempts from this address; wait a minute")
		return
	}
	if u.MustChange {
		pw, pw2 := r.PostFormValue("new_password"), r.PostFormValue("new_password2")
		if pw != pw2 {
			s.showEnrol(w, r, http.StatusBadRequest, "the two new passwords differ")
			return
		}
		if err := account.CheckPassword(pw); err != nil {
			s.showEnrol(w, r, http.StatusBadRequest, err.Error())
			return
		}
		if ok, _, _ := s.verifyPassword(ctx, pw, u.PasswordHash); ok {
			s.showEnrol(w, r, http.StatusBadRequest, "choose a password different from the one you were given")
			return
		}
	}
	var codes []string
	if !u.TOTPEnabled {
		step, ok := s.checkTOTP(ctx, u, r.PostFormValue("code"))
		if !ok {
			s.loginFailed(ctx, u, "wrong TOTP code at enrolment")
			s.showEnrol(w, r, http.StatusUnauthorized, "wrong code: check the authenticator's clock and try the next code")
			return
		}
		var hashes [][]byte
		var err error
		if codes, hashes, err = account.RecoveryCodes(10); err == nil {
			err = s.st.EnableTOTP(ctx, u.ID, step, hashes)
		}
		if err != nil {
			s.log.Error("enable TOTP", "err", err)
			s.showEnrol(w, r, http.StatusInternalServerError, "enrolment failed; see the collector log")
			return
		}
		s.recordUser(ctx, u, "console.mfa_enrol", audit.OutcomeSuccess, nil)
	}
	if u.MustChange {
		h, err := s.hashPassword(ctx, r.PostFormValue("new_password"))
		if err == nil {
			err = s.st.SetConsolePassword(ctx, u.ID, h, s.now())
		}
		if err != nil {
			s.showEnrol(w, r, http.StatusInternalServerError, "could not set the password")
			return
		}
		s.recordUser(ctx, u, "console.password_change", audit.OutcomeSuccess, nil)
	}
	// Log in fully, then show the recovery codes once.
	s.endSession(w, r)
	if err := s.st.RecordLoginSuccess(ctx, u.ID, s.now()); err != nil {
		s.log.Error("record login", "err", err)
	}
	if err := s.startSession(w, r, u, stageFull); err != nil {
		s.showLogin(w, r, http.StatusInternalServerError, "sign-in failed; see the collector log")
		return
	}
	s.recordUser(ctx, u, "console.login", audit.OutcomeSuccess, map[string]string{"method": "enrolment", "address": clientAddr(r)})
	if len(codes) == 0 {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	s.render(w, r, http.StatusOK, "recovery", map[string]any{"Title": "Recovery codes", "Codes": codes, "User": u.Username})
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	s.endSession(w, r)
	if p != nil {
		s.recordUser(r.Context(), p.user, "console.logout", audit.OutcomeSuccess, nil)
	}
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// errNotAllowed is returned by handlers when an object exists but the role may not see it.
var errNotAllowed = errors.New("not allowed")

// Name is the signed-in user's name (for templates).
func (p *principal) Name() string { return p.user.Username }

// RoleName is the signed-in user's role (for templates).
func (p *principal) RoleName() string { return string(p.role) }
