package console

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/ward-dlp/ward/collector/console/account"
)

// TestAuthorization calls every endpoint as every role (and signed out) over real HTTPS and
// checks the server's answer against this table, which is written independently of the
// route table: a route added without a row here fails the test.
func TestAuthorization(t *testing.T) {
	e := newEnv(t)
	e.addUser("admin1", account.RoleAdmin)
	e.addUser("analyst1", account.RoleAnalyst)
	e.addUser("auditor1", account.RoleAuditor)
	clients := map[account.Role]*http.Client{}
	tokens := map[account.Role]string{}
	for name, role := range map[string]account.Role{"admin1": account.RoleAdmin, "analyst1": account.RoleAnalyst, "auditor1": account.RoleAuditor} {
		clients[role], tokens[role] = e.login(name)
	}
	ev := e.seeded.Part2Blocked
	period := "from=2026-03-02&to=2026-03-03"
	const (
		ad = 1 << iota
		an
		au
	)
	type row struct {
		method, pattern, path string
		allow                 int
		body                  string
		okCode                int
	}
	rows := []row{
		{"GET", "GET /events", "/events", an, "", 200},
		{"GET", "GET /events/{id}", fmt.Sprintf("/events/%d", ev), an, "", 200},
		{"GET", "GET /shadow-it", "/shadow-it", ad | au, "", 200},
		{"GET", "GET /shadow-it/{app}", "/shadow-it/dropbox?" + period, ad | au, "", 200},
		{"GET", "GET /fleet", "/fleet", ad | an, "", 200},
		{"GET", "GET /audit", "/audit", ad | au, "", 200},
		{"GET", "GET /reports", "/reports", au, "", 200},
		{"GET", "GET /users", "/users", ad, "", 200},
		{"GET", "GET /api/openapi.yaml", "/api/openapi.yaml", ad | an | au, "", 200},
		{"GET", "GET /api/v1/me", "/api/v1/me", ad | an | au, "", 200},
		{"GET", "GET /api/v1/events", "/api/v1/events", an, "", 200},
		{"GET", "GET /api/v1/events/{id}", fmt.Sprintf("/api/v1/events/%d", ev), an, "", 200},
		{"POST", "POST /api/v1/events/{id}/triage", fmt.Sprintf("/api/v1/events/%d/triage", ev), an, `{"status":"investigating"}`, 200},
		{"POST", "POST /api/v1/events/{id}/notes", fmt.Sprintf("/api/v1/events/%d/notes", ev), an, `{"body":"called the nurse"}`, 201},
		{"GET", "GET /api/v1/shadow-it", "/api/v1/shadow-it?" + period, ad | au, "", 200},
		{"GET", "GET /api/v1/shadow-it/apps/{app}", "/api/v1/shadow-it/apps/zoom?" + period, ad | au, "", 200},
		{"POST", "POST /api/v1/shadow-it/apps/{app}/sanction", "/api/v1/shadow-it/apps/zoom/sanction", ad, `{"status":"sanctioned"}`, 200},
		{"GET", "GET /api/v1/fleet", "/api/v1/fleet", ad | an, "", 200},
		{"POST", "POST /api/v1/enrollment-tokens", "/api/v1/enrollment-tokens", ad, `{"ttl":"1h"}`, 201},
		{"GET", "GET /api/v1/users", "/api/v1/users", ad, "", 200},
		{"GET", "GET /api/v1/enrollment-tokens", "/api/v1/enrollment-tokens", ad, "", 200},
		// The id is unknown: an allowed caller gets 404, the others 403 before any lookup.
		{"POST", "POST /api/v1/enrollment-tokens/{id}/revoke", "/api/v1/enrollment-tokens/0123456789abcdef/revoke", ad, "", 404},
		{"GET", "GET /api/v1/audit", "/api/v1/audit", ad | au, "", 200},
		{"GET", "GET /api/v1/reports/{kind}", "/api/v1/reports/part2?" + period + "&format=csv", au, "", 200},
		{"POST", "POST /logout", "/logout", ad | an | au, "", 303},
	}
	// Routes that are public or belong to the login flow are tested by the login tests.
	public := map[string]bool{"GET /login": true, "POST /login": true, "GET /static/": true, "GET /login/totp": true,
		"POST /login/totp": true, "GET /account/enrol": true, "GET /account/enrol/qr.png": true, "POST /account/enrol": true,
		"GET /login/oidc": true, "GET /login/oidc/callback": true}
	covered := map[string]bool{}
	for _, r := range rows {
		covered[r.pattern] = true
	}
	for _, rt := range e.srv.Routes() {
		if !covered[rt.Pattern] && !public[rt.Pattern] {
			t.Errorf("route %q has no row in the authorization table", rt.Pattern)
		}
	}
	bits := map[account.Role]int{account.RoleAdmin: ad, account.RoleAnalyst: an, account.RoleAuditor: au}
	do := func(c *http.Client, r row, csrf string) int {
		var body *strings.Reader
		if r.body != "" {
			body = strings.NewReader(r.body)
		} else {
			body = strings.NewReader("")
		}
		req, _ := http.NewRequest(r.method, e.url+r.path, body)
		req.Header.Set("Origin", e.url)
		req.Header.Set("Sec-Fetch-Site", "same-origin")
		if r.method == "POST" {
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-CSRF-Token", csrf)
		}
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	for _, r := range rows {
		for _, role := range []account.Role{account.RoleAnalyst, account.RoleAuditor, account.RoleAdmin} {
			if r.pattern == "POST /logout" {
				continue
			}
			got := do(clients[role], r, tokens[role])
			want := http.StatusForbidden
			if r.allow&bits[role] != 0 {
				want = r.okCode
			}
			if got != want {
				t.Errorf("%s %s as %s: %d, want %d", r.method, r.path, role, got, want)
			}
		}
		// Signed out: API answers 401, pages redirect to the login.
		got := do(e.client(), r, "")
		want := http.StatusSeeOther
		if strings.HasPrefix(r.path, "/api/") {
			want = http.StatusUnauthorized
		}
		if got != want {
			t.Errorf("%s %s signed out: %d, want %d", r.method, r.path, got, want)
		}
	}
	// A state change without the CSRF token is refused even for the right role, and does
	// nothing.
	res, _ := e.postForm(clients[account.RoleAdmin], "/api/v1/shadow-it/apps/dropbox/sanction", url.Values{"status": {"sanctioned"}})
	if res.StatusCode != http.StatusForbidden {
		t.Errorf("sanction without CSRF: %d", res.StatusCode)
	}
	// Cross-site POST with the right token is refused by the cross-origin check.
	req, _ := http.NewRequest("POST", e.url+"/api/v1/shadow-it/apps/dropbox/sanction", strings.NewReader(`{"status":"sanctioned"}`))
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	req.Header.Set("X-CSRF-Token", tokens[account.RoleAdmin])
	req.Header.Set("Content-Type", "application/json")
	res, err := clients[account.RoleAdmin].Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site sanction: %d", res.StatusCode)
	}
	dec, _ := e.st.AppSanctions(t.Context())
	if _, ok := dec["dropbox"]; ok {
		t.Error("a refused request changed dropbox's status")
	}
	// Logout ends the session server-side.
	for role, c := range clients {
		if got := do(c, row{method: "POST", path: "/logout"}, tokens[role]); got != http.StatusSeeOther {
			t.Errorf("logout %s: %d", role, got)
		}
		if got := do(c, row{method: "GET", path: "/api/v1/me"}, ""); got != http.StatusUnauthorized {
			t.Errorf("%s after logout: %d", role, got)
		}
	}
}

// TestOpenAPIInSync keeps docs/openapi.yaml identical to the served copy and checks that
// every API route is described.
func TestOpenAPIInSync(t *testing.T) {
	docs, err := os.ReadFile("../../docs/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if string(docs) != string(openapiSpec) {
		t.Fatal("docs/openapi.yaml differs from collector/console/openapi.yaml: copy it")
	}
	e := newEnv(t)
	for _, rt := range e.srv.Routes() {
		_, path, _ := strings.Cut(rt.Pattern, " ")
		if strings.HasPrefix(path, "/api/v1/") && !strings.Contains(string(openapiSpec), "\n  "+path+":\n") {
			t.Errorf("route %s is not in openapi.yaml", rt.Pattern)
		}
	}
}
