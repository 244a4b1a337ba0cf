package console

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"

	"github.com/ward-dlp/ward/collector/audit"
	"github.com/ward-dlp/ward/collector/console/account"
	"github.com/ward-dlp/ward/collector/enroll"
	collectorpolicy "github.com/ward-dlp/ward/collector/policy"
	"github.com/ward-dlp/ward/collector/report/reporttest"
	"github.com/ward-dlp/ward/collector/store"
)

var testParams = account.Params{Time: 1, Memory: 8 * 1024, Threads: 1, KeyLen: 32, SaltLen: 16}

// env is a console on a real HTTPS listener on 127.0.0.1 with a real SQLite store seeded
// with the reporttest fixture, and the real audit log.
type env struct {
	t       *testing.T
	st      *store.Store
	srv     *Server
	url     string
	seeded  reporttest.Seeded
	log     *audit.Log
	dir     string
	clock   *clock
	passwds map[string]string
	secrets map[string]string
	rootCA  *tls.Config
	sanc    *collectorpolicy.Sanctioner
	enr     *enroll.Enroller
	ca      *enroll.Authority
	logger  *slog.Logger
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newEnv(t *testing.T, configure ...func(*Config)) *env {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	st, err := store.Open(ctx, filepath.Join(dir, "ward.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	seeded, err := reporttest.Seed(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	alog, err := audit.Open(st, audit.Options{KeyFile: filepath.Join(dir, "audit.key"), Log: logger})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := enroll.OpenAuthority(filepath.Join(dir, "pki"), enroll.Options{}, logger)
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := account.OpenSealer(filepath.Join(dir, "console.key"))
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Now()}
	sanc, err := collectorpolicy.OpenSanctioner(dir, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	enr := enroll.NewEnroller(ca, st, time.Hour, 30*24*time.Hour, logger)
	cfg := Config{Listen: "127.0.0.1:0"}
	for _, f := range configure {
		f(&cfg)
	}
	srv, err := New(Options{Config: cfg, Store: st, Auditor: alog, AuditVerifier: alog.Verifier(),
		Sealer: sealer, FactsKey: []byte("0123456789abcdef0123456789abcdef"), StateDir: dir, Sanctioner: sanc,
		Enroller:       enr,
		GetCertificate: ca.ServerTLSConfig().GetCertificate, Params: testParams, Version: "test", Log: logger, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx, lis, time.Second) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	e := &env{t: t, st: st, srv: srv, url: "https://" + lis.Addr().String(), seeded: seeded, log: alog, dir: dir, clock: clk,
		passwds: map[string]string{}, secrets: map[string]string{}, rootCA: &tls.Config{RootCAs: ca.CAPool(), ServerName: "localhost"},
		sanc: sanc, enr: enr, ca: ca, logger: logger}
	return e
}

// addUser creates an account the way wardctl user add does.
func (e *env) addUser(name string, role account.Role) {
	e.t.Helper()
	pw, err := account.NewPassword()
	if err != nil {
		e.t.Fatal(err)
	}
	h, err := account.HashPassword(pw, testParams)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.st.CreateConsoleUser(context.Background(), store.ConsoleUser{Username: name, Role: string(role), PasswordHash: h, MustChange: true}, e.clock.now()); err != nil {
		e.t.Fatal(err)
	}
	e.passwds[name] = pw
}

func (e *env) client() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: e.rootCA.Clone()},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

var (
	hiddenRe = regexp.MustCompile(`name="(csrf|login_csrf)" value="([^"]+)"`)
	secretRe = regexp.MustCompile(`id="totp-secret">([A-Z2-7]+)<`)
	metaRe   = regexp.MustCompile(`name="csrf-token" content="([^"]+)"`)
)

func (e *env) get(c *http.Client, path string) (*http.Response, string) {
	e.t.Helper()
	res, err := c.Get(e.url + path)
	if err != nil {
		e.t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	return res, string(b)
}

func (e *env) postForm(c *http.Client, path string, v url.Values) (*http.Response, string) {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.url+path, strings.NewReader(v.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", e.url)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	res, err := c.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	return res, string(b)
}

func find(re *regexp.Regexp, body string, group int) string {
	m := re.FindStringSubmatch(body)
	if m == nil {
		return ""
	}
	return m[group]
}

func (e *env) code(name string) string {
	c, err := totp.GenerateCodeCustom(e.secrets[name], e.clock.now(), totp.ValidateOpts{Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// login signs name in (enrolling TOTP and changing the password on the first login) and
// returns the client and its CSRF token.
func (e *env) login(name string) (*http.Client, string) {
	e.t.Helper()
	c := e.client()
	_, body := e.get(c, "/login")
	res, _ := e.postForm(c, "/login", url.Values{"login_csrf": {find(hiddenRe, body, 2)}, "username": {name}, "password": {e.passwds[name]}})
	if res.StatusCode != http.StatusSeeOther {
		e.t.Fatalf("login %s: %d", name, res.StatusCode)
	}
	switch loc := res.Header.Get("Location"); {
	case strings.HasPrefix(loc, "/account/enrol"):
		_, body = e.get(c, "/account/enrol")
		e.secrets[name] = find(secretRe, body, 1)
		newPw := e.passwds[name] + "-changed"
		res, body = e.postForm(c, "/account/enrol", url.Values{"csrf": {find(hiddenRe, body, 2)}, "new_password": {newPw},
			"new_password2": {newPw}, "code": {e.code(name)}})
		if res.StatusCode != http.StatusOK || !strings.Contains(body, `id="codes"`) {
			e.t.Fatalf("enrol %s: %d %s", name, res.StatusCode, body)
		}
		e.passwds[name] = newPw
		e.clock.add(30 * time.Second) // the enrolment code's step is used
	case strings.HasPrefix(loc, "/login/totp"):
		_, body = e.get(c, loc)
		res, _ = e.postForm(c, "/login/totp", url.Values{"csrf": {find(hiddenRe, body, 2)}, "code": {e.code(name)}})
		if res.StatusCode != http.StatusSeeOther {
			e.t.Fatalf("totp %s: %d", name, res.StatusCode)
		}
		e.clock.add(30 * time.Second)
	default:
		e.t.Fatalf("login %s redirected to %q", name, loc)
	}
	_, body = e.get(c, "/api/openapi.yaml")
	_, page := e.get(c, "/fleet")
	tok := find(metaRe, page, 1)
	if tok == "" {
		_, page = e.get(c, "/events")
		tok = find(metaRe, page, 1)
	}
	if tok == "" {
		_, page = e.get(c, "/audit")
		tok = find(metaRe, page, 1)
	}
	if tok == "" {
		e.t.Fatalf("no CSRF token for %s: %.600s", name, page)
	}
	return c, tok
}
