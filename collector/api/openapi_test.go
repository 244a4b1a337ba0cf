package api

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"github.com/ward-dlp/ward/collector/store"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/ward-dlp/ward/collector/audit"
	"github.com/ward-dlp/ward/collector/console/account"
	"github.com/ward-dlp/ward/collector/report"
)

func loadSpec(t *testing.T) *openapi3.T {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(openapiSpec)
	if err != nil {
		t.Fatalf("openapi.yaml does not load: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.yaml is not valid OpenAPI 3: %v", err)
	}
	return doc
}

// TestOpenAPIInSync keeps docs/openapi-admin.yaml identical to the served copy, checks that
// it is valid OpenAPI 3, and that the routes Handler registers and the paths the document
// describes are the same set, both ways.
func TestOpenAPIInSync(t *testing.T) {
	docs, err := os.ReadFile("../../docs/openapi-admin.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(docs, openapiSpec) {
		t.Fatal("docs/openapi-admin.yaml differs from collector/api/openapi.yaml: copy it")
	}
	doc := loadSpec(t)
	var documented []string
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			documented = append(documented, method+" "+path)
		}
	}
	var registered []string
	for _, rt := range (&Server{}).routes() {
		registered = append(registered, rt.pattern)
	}
	for _, p := range registered {
		if !slices.Contains(documented, p) {
			t.Errorf("route %s is registered but not in openapi.yaml", p)
		}
	}
	for _, p := range documented {
		if !slices.Contains(registered, p) {
			t.Errorf("openapi.yaml describes %s, which the admin API does not serve", p)
		}
	}
}

// conformance sends real requests over the admin socket and checks every answer against
// the document: the status is documented for the operation, the content type is one it
// declares, and the body matches the schema (each line, for NDJSON).
type conformance struct {
	h      *harness
	router routers.Router
	// hit are the operations answered with a documented status.
	hit map[string]bool
}

func (c *conformance) call(t *testing.T, method, path string, body any, want int) []byte {
	t.Helper()
	var raw []byte
	ct := ""
	switch b := body.(type) {
	case nil:
	case []byte:
		raw, ct = b, "application/octet-stream"
	default:
		raw, _ = json.Marshal(b)
		ct = "application/json"
	}
	req, err := http.NewRequest(method, "http://localhost"+path, bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	route, params, err := c.router.FindRoute(req)
	if err != nil {
		t.Fatalf("%s %s: not in openapi.yaml: %v", method, path, err)
	}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
	if want < 300 {
		// A request the server accepts must be one the document allows; bad requests in
		// this test are bad on purpose.
		vreq := req.Clone(req.Context())
		vreq.Body = io.NopCloser(bytes.NewReader(raw))
		vin := *in
		vin.Request = vreq
		if err := openapi3filter.ValidateRequest(context.Background(), &vin); err != nil {
			t.Errorf("%s %s: request not allowed by openapi.yaml: %v", method, path, err)
		}
	}
	resp, err := c.h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %d, want %d: %s", method, path, resp.StatusCode, want, data)
	}
	c.checkResponse(t, in, resp, data)
	c.hit[route.Method+" "+route.Path] = true
	return data
}

func (c *conformance) checkResponse(t *testing.T, in *openapi3filter.RequestValidationInput, resp *http.Response, data []byte) {
	t.Helper()
	name := in.Route.Method + " " + in.Route.Path
	ref := in.Route.Operation.Responses.Status(resp.StatusCode)
	if ref == nil || ref.Value == nil {
		t.Errorf("%s: status %d is not documented", name, resp.StatusCode)
		return
	}
	mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil {
		t.Errorf("%s: content type %q: %v", name, resp.Header.Get("Content-Type"), err)
		return
	}
	media := ref.Value.Content.Get(mt)
	if media == nil {
		t.Errorf("%s %d: content type %s is not documented", name, resp.StatusCode, mt)
		return
	}
	switch mt {
	case "application/json":
		err := openapi3filter.ValidateResponse(context.Background(), &openapi3filter.ResponseValidationInput{
			RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header,
			Body:    io.NopCloser(bytes.NewReader(data)),
			Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
		})
		if err != nil {
			t.Errorf("%s %d: body does not match openapi.yaml: %v\n%s", name, resp.StatusCode, err, data)
		}
	case "application/x-ndjson":
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(nil, 4<<20)
		for sc.Scan() {
			var v any
			if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
				t.Errorf("%s: line is not JSON: %v", name, err)
				continue
			}
			if err := media.Schema.Value.VisitJSON(v, openapi3.MultiErrors()); err != nil {
				t.Errorf("%s: line does not match openapi.yaml: %v\n%s", name, err, sc.Bytes())
			}
		}
	}
}

// TestOpenAPIConformance calls every route of a collector with an audit log and console
// accounts enabled, on success and error paths, and checks each answer against the
// document; a route the test did not reach fails it, so a new route needs a case here too.
func TestOpenAPIConformance(t *testing.T) {
	h := start(t, "")
	dir := t.TempDir()
	alog, err := audit.Open(h.store, audit.Options{KeyFile: filepath.Join(dir, "audit.key"), Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	h.srv.SetAudit(alog)
	h.srv.SetReports(report.Sources{Store: h.store, FactsKey: bytes.Repeat([]byte{7}, 32), Version: "test"},
		account.Params{Time: 1, Memory: 8 * 1024, Threads: 1, KeyLen: 32, SaltLen: 16})
	doc := loadSpec(t)
	router, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	c := &conformance{h: h, router: router, hit: map[string]bool{}}

	if got := c.call(t, "GET", "/v1/openapi.yaml", nil, 200); !bytes.Equal(got, openapiSpec) {
		t.Error("served openapi.yaml differs from the embedded one")
	}
	c.call(t, "GET", "/v1/healthz", nil, 200)

	agentID := h.enrolAgent(t)
	h.insert(t, ssnFinding(agentID, 1), ssnFinding(agentID, 2))
	if got := c.call(t, "GET", "/v1/events?kind=finding&limit=10&since=2026-04-01T00:00:00Z&agent="+agentID+"&newest=true", nil, 200); bytes.Count(got, []byte("\n")) != 2 {
		t.Errorf("events: want 2 lines, got %s", got)
	}
	c.call(t, "GET", "/v1/events?kind=bogus", nil, 400)
	c.follow(t, "/v1/events/follow?after=0&kind=finding")
	c.call(t, "GET", "/v1/events/follow?after=x", nil, 400)

	c.call(t, "POST", "/v1/enrollment-tokens", map[string]string{"ttl": "1h"}, 201)
	c.call(t, "POST", "/v1/enrollment-tokens", map[string]string{"ttl": "soon"}, 400)
	c.call(t, "GET", "/v1/agents", nil, 200)
	c.call(t, "POST", "/v1/agents/"+agentID+"/revoke", nil, 200)
	c.call(t, "POST", "/v1/agents/no-such-agent/revoke", nil, 404)

	c.call(t, "GET", "/v1/policy", nil, 200)
	c.call(t, "POST", "/v1/policy", []byte("ward-policy-bundle/v1\nnot a signed bundle\n"), 400)

	c.call(t, "POST", "/v1/audit/checkpoints", nil, 200)
	c.call(t, "GET", "/v1/audit/checkpoints", nil, 200)
	if got := c.call(t, "GET", "/v1/audit/entries?after=-1&limit=100", nil, 200); len(got) == 0 {
		t.Error("audit entries: empty after audited calls")
	}
	c.call(t, "GET", "/v1/audit/entries?limit=0", nil, 400)

	c.call(t, "GET", "/v1/sinks", nil, 200)
	c.call(t, "GET", "/v1/sinks/dead-letters?limit=10", nil, 200)
	c.call(t, "GET", "/v1/sinks/dead-letters?after=-4", nil, 400)
	c.call(t, "POST", "/v1/sinks/siem/replay", map[string]any{"all": true}, 404)
	c.call(t, "POST", "/v1/sinks/siem/replay", map[string]any{}, 400)

	c.call(t, "POST", "/v1/evidence/rewrap", map[string]any{}, 409) // no evidence key yet
	c.call(t, "POST", "/v1/evidence/rewrap", map[string]any{"batch": -1}, 400)
	key := make([]byte, 32)
	rand.Read(key)
	ring, err := store.ParseEvidenceKeys(base64.StdEncoding.EncodeToString(key))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.h.store.SetEvidenceKeys(context.Background(), ring); err != nil {
		t.Fatal(err)
	}
	c.call(t, "POST", "/v1/evidence/rewrap", map[string]any{"batch": 100}, 200)

	c.call(t, "POST", "/v1/users", map[string]string{"username": "ana", "role": "soc-analyst"}, 201)
	c.call(t, "POST", "/v1/users", map[string]string{"username": "ana", "role": "soc-analyst"}, 409)
	c.call(t, "POST", "/v1/users", map[string]string{"username": "bob", "role": "root"}, 400)
	c.call(t, "POST", "/v1/users/ana/reset", map[string]string{"role": "compliance-auditor"}, 200)
	c.call(t, "POST", "/v1/users/nobody/reset", nil, 404)
	c.call(t, "GET", "/v1/users", nil, 200)

	zip := c.call(t, "GET", "/v1/reports/shadow-it?from=2026-04-15&to=2026-05-15T00:00:00Z", nil, 200)
	if _, err := report.ReadZip(zip); err != nil {
		t.Errorf("report zip: %v", err)
	}
	c.call(t, "GET", "/v1/reports/part2?from=2026-04-15", nil, 400)
	c.call(t, "GET", "/v1/reports/everything?from=2026-04-15&to=2026-05-15", nil, 404)

	for _, rt := range h.srv.routes() {
		if !c.hit[rt.pattern] {
			t.Errorf("route %s was not exercised against openapi.yaml", rt.pattern)
		}
	}
}

// follow reads the first line of a follow stream, checks it against the document and hangs
// up (the stream itself never ends).
func (c *conformance) follow(t *testing.T, path string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://localhost"+path, nil)
	route, params, err := c.router.FindRoute(req)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadBytes('\n')
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("follow: %d %v", resp.StatusCode, err)
	}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route}
	c.checkResponse(t, in, resp, line)
	if !strings.Contains(string(line), `"rowid":1`) {
		t.Errorf("follow from after=0: first line %s", line)
	}
	c.hit[route.Method+" "+route.Path] = true
}
