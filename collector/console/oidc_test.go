package console

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// fakeIdP is an OpenID provider for tests: discovery, JWKS, an authorization endpoint that
// signs the user in at once and redirects back with a code, and a token endpoint that
// checks the PKCE verifier and returns an RS256 ID token. tamper lets a case spoil the token.
type fakeIdP struct {
	t      *testing.T
	srv    *httptest.Server
	key    *rsa.PrivateKey
	client string

	mu     sync.Mutex
	claims map[string]any // the signed-in person's claims (sub, groups, ...)
	tamper func(c map[string]any)
	codes  map[string]authReq
}

type authReq struct{ nonce, challenge, redirect string }

func newFakeIdP(t *testing.T) *fakeIdP {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeIdP{t: t, key: key, client: "ward-console", codes: map[string]authReq{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		u := f.srv.URL
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": u, "authorization_endpoint": u + "/authorize",
			"token_endpoint": u + "/token", "jwks_uri": u + "/jwks", "response_types_supported": []string{"code"},
			"subject_types_supported": []string{"public"}, "id_token_signing_alg_values_supported": []string{"RS256"},
			"code_challenge_methods_supported": []string{"S256"}})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
	})
	mux.HandleFunc("GET /authorize", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if q.Get("client_id") != f.client || q.Get("response_type") != "code" || q.Get("code_challenge_method") != "S256" ||
			q.Get("code_challenge") == "" || q.Get("nonce") == "" || !strings.Contains(q.Get("scope"), "openid") {
			http.Error(w, "bad authorization request: "+r.URL.RawQuery, http.StatusBadRequest)
			return
		}
		code := randomToken(16)
		f.mu.Lock()
		f.codes[code] = authReq{nonce: q.Get("nonce"), challenge: q.Get("code_challenge"), redirect: q.Get("redirect_uri")}
		f.mu.Unlock()
		http.Redirect(w, r, q.Get("redirect_uri")+"?"+url.Values{"code": {code}, "state": {q.Get("state")}}.Encode(), http.StatusFound)
	})
	mux.HandleFunc("POST /token", func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		f.mu.Lock()
		ar, ok := f.codes[r.PostFormValue("code")]
		delete(f.codes, r.PostFormValue("code"))
		claims := map[string]any{}
		for k, v := range f.claims {
			claims[k] = v
		}
		tamper := f.tamper
		f.mu.Unlock()
		sum := sha256.Sum256([]byte(r.PostFormValue("code_verifier")))
		if !ok || base64.RawURLEncoding.EncodeToString(sum[:]) != ar.challenge || r.PostFormValue("redirect_uri") != ar.redirect {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error":"invalid_grant"}`))
			return
		}
		now := time.Now()
		claims["iss"], claims["aud"], claims["nonce"] = f.srv.URL, f.client, ar.nonce
		claims["iat"], claims["exp"] = now.Unix(), now.Add(5*time.Minute).Unix()
		if tamper != nil {
			tamper(claims)
		}
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "k1"))
		if err != nil {
			t.Error(err)
			return
		}
		idt, err := jwt.Signed(signer).Claims(claims).Serialize()
		if err != nil {
			t.Error(err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": randomToken(16), "token_type": "Bearer", "expires_in": 300, "id_token": idt})
	})
	f.srv = httptest.NewTLSServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeIdP) caFile() string {
	p := filepath.Join(f.t.TempDir(), "idp-ca.pem")
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw})
	if err := os.WriteFile(p, b, 0o644); err != nil {
		f.t.Fatal(err)
	}
	return p
}

func (f *fakeIdP) set(claims map[string]any, tamper func(map[string]any)) {
	f.mu.Lock()
	f.claims, f.tamper = claims, tamper
	f.mu.Unlock()
}

// ssoClient trusts both the console and the provider, and follows no redirect by itself.
func (e *env) ssoClient(idp *fakeIdP) *http.Client {
	c := e.client()
	pool := e.rootCA.RootCAs.Clone()
	pool.AddCert(idp.srv.Certificate())
	c.Transport.(*http.Transport).TLSClientConfig.RootCAs = pool
	c.Transport.(*http.Transport).TLSClientConfig.ServerName = ""
	return c
}

// ssoLogin walks the browser's path: console → provider → console callback, and returns
// the callback's response.
func (e *env) ssoLogin(c *http.Client, idp *fakeIdP) (*http.Response, string) {
	e.t.Helper()
	res, _ := e.get(c, "/login/oidc?next=%2Fshadow-it")
	if res.StatusCode != http.StatusFound {
		e.t.Fatalf("start: %d", res.StatusCode)
	}
	authURL := res.Header.Get("Location")
	if !strings.HasPrefix(authURL, idp.srv.URL+"/authorize?") {
		e.t.Fatalf("start redirected to %q", authURL)
	}
	res, err := c.Get(authURL)
	if err != nil {
		e.t.Fatal(err)
	}
	res.Body.Close()
	back, err := url.Parse(res.Header.Get("Location"))
	if res.StatusCode != http.StatusFound || err != nil || back.Path != oidcCallbackPath {
		e.t.Fatalf("provider answered %d %q", res.StatusCode, res.Header.Get("Location"))
	}
	return e.get(c, oidcCallbackPath+"?"+back.RawQuery)
}

func TestOIDCSignIn(t *testing.T) {
	idp := newFakeIdP(t)
	e := newEnv(t, func(c *Config) {
		c.OIDC = OIDCConfig{Issuer: idp.srv.URL, ClientID: idp.client, DisplayName: "Hospital SSO",
			RedirectURL: "https://ward.example:8443" + oidcCallbackPath, CAFile: idp.caFile(),
			Roles: map[string]string{"ward-admins": "admin", "ward-soc": "soc-analyst", "ward-audit": "compliance-auditor"}}
	})
	ctx := context.Background()
	person := func(sub string, groups ...any) map[string]any {
		return map[string]any{"sub": sub, "preferred_username": "dr." + sub, "groups": groups}
	}

	// The sign-in page offers the provider.
	if _, body := e.get(e.client(), "/login"); !strings.Contains(body, `id="sso"`) || !strings.Contains(body, "Hospital SSO") {
		t.Fatal("sign-in page has no single sign-on button")
	}

	// Success: account created at first sign-in with the mapped role, no TOTP step, a full
	// session like a local one, sent on to where the person was going.
	idp.set(person("alice", "staff", "ward-audit"), nil)
	c := e.ssoClient(idp)
	res, _ := e.ssoLogin(c, idp)
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/shadow-it" {
		t.Fatalf("callback: %d %q", res.StatusCode, res.Header.Get("Location"))
	}
	if res, body := e.get(c, "/api/v1/me"); res.StatusCode != 200 || !strings.Contains(body, `"role":"compliance-auditor"`) || !strings.Contains(body, `"username":"dr.alice"`) {
		t.Fatalf("me after SSO: %d %s", res.StatusCode, body)
	}
	if res, _ := e.get(c, "/users"); res.StatusCode != http.StatusForbidden {
		t.Fatalf("SSO auditor reached an admin page: %d", res.StatusCode)
	}
	u, err := e.st.ConsoleUserByOIDC(ctx, idp.srv.URL+"|alice")
	if err != nil || u.Username != "dr.alice" || u.PasswordHash != "" {
		t.Fatalf("SSO account %+v %v", u, err)
	}
	// The role follows the provider's groups at the next sign-in.
	idp.set(person("alice", "ward-soc"), nil)
	c = e.ssoClient(idp)
	e.ssoLogin(c, idp)
	if _, body := e.get(c, "/api/v1/me"); !strings.Contains(body, `"role":"soc-analyst"`) {
		t.Fatalf("role did not follow the groups: %s", body)
	}
	// An SSO account cannot sign in with a password (it has none).
	lc := e.client()
	_, body := e.get(lc, "/login")
	if res, _ := e.postForm(lc, "/login", url.Values{"login_csrf": {find(hiddenRe, body, 2)}, "username": {"dr.alice"}, "password": {""}}); res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("password sign-in of an SSO account: %d", res.StatusCode)
	}

	refusals := []struct {
		name   string
		claims map[string]any
		tamper func(map[string]any)
		code   int
	}{
		{"wrong nonce", person("bob", "ward-soc"), func(c map[string]any) { c["nonce"] = "not-the-nonce" }, http.StatusUnauthorized},
		{"wrong audience", person("bob", "ward-soc"), func(c map[string]any) { c["aud"] = "another-client" }, http.StatusUnauthorized},
		{"expired token", person("bob", "ward-soc"), func(c map[string]any) {
			c["iat"], c["exp"] = time.Now().Add(-time.Hour).Unix(), time.Now().Add(-30*time.Minute).Unix()
		}, http.StatusUnauthorized},
		{"wrong issuer", person("bob", "ward-soc"), func(c map[string]any) { c["iss"] = "https://evil.example" }, http.StatusUnauthorized},
		{"unmapped role", person("bob", "staff", "nurses"), nil, http.StatusForbidden},
		{"two roles", person("bob", "ward-admins", "ward-soc"), nil, http.StatusForbidden},
	}
	for _, rc := range refusals {
		idp.set(rc.claims, rc.tamper)
		e.clock.add(7 * time.Second) // under the per-address rate limit
		c := e.ssoClient(idp)
		res, body := e.ssoLogin(c, idp)
		if res.StatusCode != rc.code || !strings.Contains(body, `id="error"`) {
			t.Errorf("%s: %d, want %d", rc.name, res.StatusCode, rc.code)
		}
		if res, _ := e.get(c, "/api/v1/me"); res.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: signed in anyway", rc.name)
		}
		if _, err := e.st.ConsoleUserByOIDC(ctx, idp.srv.URL+"|bob"); err == nil {
			t.Errorf("%s: an account was created", rc.name)
		}
	}

	// State: a callback with another browser's state, or none pending, is refused; a code
	// is single use.
	idp.set(person("carol", "ward-soc"), nil)
	a, b := e.ssoClient(idp), e.ssoClient(idp)
	res, _ = e.get(a, "/login/oidc")
	res, _ = a.Get(res.Header.Get("Location"))
	back, _ := url.Parse(res.Header.Get("Location"))
	res, _ = e.get(b, "/login/oidc") // b has its own pending sign-in
	if res, _ := e.get(b, oidcCallbackPath+"?"+back.RawQuery); res.StatusCode != http.StatusBadRequest {
		t.Errorf("callback with another browser's state: %d", res.StatusCode)
	}
	if res, _ := e.get(e.ssoClient(idp), oidcCallbackPath+"?"+back.RawQuery); res.StatusCode != http.StatusBadRequest {
		t.Errorf("callback without a pending sign-in: %d", res.StatusCode)
	}
	if res, _ := e.get(a, oidcCallbackPath+"?"+back.RawQuery); res.StatusCode != http.StatusSeeOther {
		t.Errorf("the rightful callback: %d", res.StatusCode)
	}
	if res, _ := e.get(a, oidcCallbackPath+"?"+back.RawQuery); res.StatusCode != http.StatusBadRequest {
		t.Errorf("the same callback twice: %d", res.StatusCode)
	}

	// Every refusal and success is in the audit log.
	recs, err := e.st.AuditRecords(ctx, -1, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var all strings.Builder
	for _, r := range recs {
		all.Write(r.Data)
	}
	for _, want := range []string{"nonce mismatch", "ID token refused", "no value of claim", "several roles", "state mismatch", "console.user_create", "console.role_change"} {
		if !strings.Contains(all.String(), want) {
			t.Errorf("audit log lacks %q", want)
		}
	}
}
