package console

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ward-dlp/ward/collector/console/account"
)

func TestLoginSecondFactorAndLockout(t *testing.T) {
	e := newEnv(t)
	e.addUser("analyst1", account.RoleAnalyst)
	e.login("analyst1") // enrols TOTP, sets a new password

	start := func() *http.Client {
		c := e.client()
		_, body := e.get(c, "/login")
		res, _ := e.postForm(c, "/login", url.Values{"login_csrf": {find(hiddenRe, body, 2)}, "username": {"analyst1"}, "password": {e.passwds["analyst1"]}})
		if !strings.HasPrefix(res.Header.Get("Location"), "/login/totp") {
			t.Fatalf("password step: %d %s", res.StatusCode, res.Header.Get("Location"))
		}
		return c
	}
	c := start()
	// The pending session reaches nothing but the second-factor page.
	if res, _ := e.get(c, "/api/v1/events"); res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("pending session reached the API: %d", res.StatusCode)
	}
	_, body := e.get(c, "/login/totp")
	tok := find(hiddenRe, body, 2)
	wrong := "000000"
	if e.code("analyst1") == wrong {
		wrong = "111111"
	}
	res, body := e.postForm(c, "/login/totp", url.Values{"csrf": {tok}, "code": {wrong}})
	if res.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "wrong code") {
		t.Fatalf("wrong code: %d", res.StatusCode)
	}
	code := e.code("analyst1")
	if res, _ = e.postForm(c, "/login/totp", url.Values{"csrf": {tok}, "code": {code}}); res.StatusCode != http.StatusSeeOther {
		t.Fatalf("right code: %d", res.StatusCode)
	}
	if res, _ := e.get(c, "/api/v1/me"); res.StatusCode != http.StatusOK {
		t.Fatalf("after login: %d", res.StatusCode)
	}
	// The same code again (same 30 s step) is refused: codes are single use.
	c2 := start()
	_, body = e.get(c2, "/login/totp")
	if res, _ = e.postForm(c2, "/login/totp", url.Values{"csrf": {find(hiddenRe, body, 2)}, "code": {code}}); res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("replayed code: %d", res.StatusCode)
	}
	// Idle timeout ends the first session.
	e.clock.add(16 * time.Minute)
	if res, _ := e.get(c, "/api/v1/me"); res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("idle session still valid: %d", res.StatusCode)
	}
	// Wrong passwords lock the account; even the right password is then refused.
	for i := 0; i < 5; i++ {
		c := e.client()
		_, body := e.get(c, "/login")
		e.postForm(c, "/login", url.Values{"login_csrf": {find(hiddenRe, body, 2)}, "username": {"analyst1"}, "password": {"wrong password " + string(rune('a'+i))}})
		e.clock.add(7 * time.Second) // stay under the per-address rate limit
	}
	c3 := e.client()
	_, body = e.get(c3, "/login")
	res, _ = e.postForm(c3, "/login", url.Values{"login_csrf": {find(hiddenRe, body, 2)}, "username": {"analyst1"}, "password": {e.passwds["analyst1"]}})
	if res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("locked account accepted the right password: %d", res.StatusCode)
	}
	e.clock.add(16 * time.Minute)
	c4 := e.client()
	_, body = e.get(c4, "/login")
	if res, _ = e.postForm(c4, "/login", url.Values{"login_csrf": {find(hiddenRe, body, 2)}, "username": {"analyst1"}, "password": {e.passwds["analyst1"]}}); res.StatusCode != http.StatusSeeOther {
		t.Fatalf("after the lockout expired: %d", res.StatusCode)
	}
}

func TestSecurityHeadersAndRateLimit(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	res, body := e.get(c, "/login")
	csp := res.Header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "default-src 'self'") || strings.Contains(csp, "unsafe-inline") {
		t.Fatalf("CSP %q", csp)
	}
	if strings.Contains(body, "<script>") || strings.Contains(body, "http://") && !strings.Contains(body, "http://www.w3.org") {
		t.Fatal("login page has inline script or an external reference")
	}
	var cookie string
	for _, h := range res.Header.Values("Set-Cookie") {
		cookie += h
	}
	for _, want := range []string{"__Host-", "Secure", "HttpOnly", "SameSite=Strict"} {
		if !strings.Contains(cookie, want) {
			t.Errorf("cookie %q lacks %s", cookie, want)
		}
	}
	limited := false
	for i := 0; i < 15; i++ {
		_, body := e.get(c, "/login")
		res, _ := e.postForm(c, "/login", url.Values{"login_csrf": {find(hiddenRe, body, 2)}, "username": {"nobody"}, "password": {"x"}})
		if res.StatusCode == http.StatusTooManyRequests {
			limited = true
			break
		}
	}
	if !limited {
		t.Fatal("15 attempts in a row from one address were not rate limited")
	}
}
