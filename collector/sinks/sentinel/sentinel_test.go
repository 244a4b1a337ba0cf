package sentinel

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/collector/sinks/core"
	"github.com/ward-dlp/ward/collector/sinks/internal/sinktest"
)

// No Azure tenant is reachable from here: azure is an in-test HTTPS server implementing the
// two endpoints the sink uses with their documented request and response shapes. The Entra
// ID v2.0 token endpoint (POST /{tenant}/oauth2/v2.0/token, form-encoded client
// credentials, JSON {token_type, expires_in, access_token} or {error, error_description})
// and the Logs Ingestion API (POST /dataCollectionRules/{dcr}/streams/{stream}
// ?api-version=2023-01-01, Bearer token, JSON array body optionally gzip'd, 204 on success,
// 413 above 1 MB, 429/503 with Retry-After, Azure's {"error":{"code","message"}} otherwise).
type azure struct {
	t      *testing.T
	tenant string
	secret string
	dcr    string
	stream string
	ttl    int64 // expires_in of issued tokens

	mu       sync.Mutex
	tokens   []string
	valid    map[string]bool
	calls    int
	sizes    []int
	rows     []map[string]any
	raw      [][]byte
	answer   []int // statuses to answer the next ingestion calls with
	tokenErr []int // statuses to answer the next token calls with
}

const (
	tenant   = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	clientID = "0b9c4f5e-1111-4a2b-9c3d-4e5f60718293"
	dcrID    = "dcr-0123456789abcdef0123456789abcdef"
	stream   = "Custom-WardEvents_CL"
)

func (a *azure) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case r.URL.Path == "/"+a.tenant+"/oauth2/v2.0/token":
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		if len(a.tokenErr) > 0 {
			code := a.tokenErr[0]
			a.tokenErr = a.tokenErr[1:]
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			fmt.Fprintf(w, `{"error":"temporarily_unavailable","error_description":"AADSTS90033: A transient error has occurred.\r\nTrace ID: x","error_codes":[90033]}`)
			return
		}
		_ = r.ParseForm()
		f := r.PostForm
		if f.Get("grant_type") != "client_credentials" || f.Get("scope") != DefaultScope || f.Get("client_id") != clientID {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"error":"invalid_request","error_description":"AADSTS900144: The request body must contain the following parameter: 'grant_type'."}`)
			return
		}
		if f.Get("client_secret") != a.secret {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.\r\nTrace ID: 1","error_codes":[7000215]}`)
			return
		}
		tok := fmt.Sprintf("eyJ0eXAi.token-%d", len(a.tokens)+1)
		a.tokens = append(a.tokens, tok)
		a.valid[tok] = true
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"token_type":"Bearer","expires_in":%d,"ext_expires_in":%d,"access_token":%q}`, a.ttl, a.ttl, tok)
	case r.URL.Path == "/dataCollectionRules/"+a.dcr+"/streams/"+a.stream:
		a.calls++
		if r.URL.Query().Get("api-version") != APIVersion {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"error":{"code":"InvalidApiVersion","message":"api-version missing"}}`)
			return
		}
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || !a.valid[tok] {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error":{"code":"InvalidToken","message":"Token is expired or invalid."}}`)
			return
		}
		var rd io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			rd = zr
		}
		body, _ := io.ReadAll(rd)
		if len(body) > MaxCallBytes {
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			fmt.Fprint(w, `{"error":{"code":"ContentLengthLimitExceeded","message":"Maximum allowed content length: 1048576 bytes (1 MB)."}}`)
			return
		}
		if len(a.answer) > 0 {
			code := a.answer[0]
			a.answer = a.answer[1:]
			if code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable {
				w.Header().Set("Retry-After", "7")
			}
			w.WriteHeader(code)
			fmt.Fprintf(w, `{"error":{"code":"Status%d","message":"scripted"}}`, code)
			return
		}
		var rows []map[string]any
		if err := json.Unmarshal(body, &rows); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"error":{"code":"InvalidContentType","message":"body is not a JSON array"}}`)
			return
		}
		for _, row := range rows {
			if _, err := time.Parse(time.RFC3339Nano, fmt.Sprint(row["TimeGenerated"])); err != nil {
				w.WriteHeader(http.StatusBadRequest)
				fmt.Fprint(w, `{"error":{"code":"InvalidTimeGenerated","message":"TimeGenerated"}}`)
				return
			}
		}
		a.sizes = append(a.sizes, len(body))
		a.rows = append(a.rows, rows...)
		a.raw = append(a.raw, body)
		w.WriteHeader(http.StatusNoContent)
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

type fixture struct {
	az   *azure
	sink *Sink
	logs *bytes.Buffer
	now  time.Time
}

func newFixture(t *testing.T, mut func(*Config)) *fixture {
	t.Helper()
	az := &azure{t: t, tenant: tenant, secret: "s3cr3t~Q8Q~clientSecretValue", dcr: dcrID, stream: stream, ttl: 3599, valid: map[string]bool{}}
	srv := httptest.NewTLSServer(az)
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("WARD_TEST_SENTINEL_SECRET", az.secret)
	cfg := Config{Endpoint: srv.URL, DCRImmutableID: dcrID, Stream: stream, TenantID: tenant, ClientID: clientID,
		ClientSecretEnv: "WARD_TEST_SENTINEL_SECRET", AuthorityHost: srv.URL, TLS: core.TLSConfig{CAFile: ca}}
	if mut != nil {
		mut(&cfg)
	}
	logs := &bytes.Buffer{}
	s, err := New(cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{az: az, sink: s, logs: logs, now: time.Now()}
	s.now = func() time.Time { return f.now }
	return f
}

func TestDeliverColumnsAndNoLeak(t *testing.T) {
	f := newFixture(t, nil)
	items := sinktest.Items(sinktest.Finding("a1", 1, wardv1.Severity_SEVERITY_HIGH), sinktest.File("a1", 2),
		sinktest.Health("a1", 3), sinktest.Flow("a1", 4, ""), sinktest.Flow("a1", 5, "portal.example.org"), sinktest.DeniedFlow("a1", 6))
	items = append(items, sinktest.Checkpoint(77))
	if err := f.sink.Deliver(context.Background(), items); err != nil {
		t.Fatal(err)
	}
	if err := f.sink.Deliver(context.Background(), sinktest.Items(sinktest.Finding("a1", 7, wardv1.Severity_SEVERITY_LOW))); err != nil {
		t.Fatal(err)
	}
	az := f.az
	if len(az.tokens) != 1 || az.calls != 2 {
		t.Fatalf("tokens %d, calls %d: the token must be cached", len(az.tokens), az.calls)
	}
	if len(az.rows) != 8 {
		t.Fatalf("%d rows", len(az.rows))
	}
	for i, raw := range az.raw {
		var rows []any
		if err := json.Unmarshal(raw, &rows); err != nil {
			t.Fatal(err)
		}
		for j, row := range rows {
			sinktest.CheckAllowed(t, fmt.Sprint("call ", i, " row ", j), raw, row, sinktest.SentinelAllowed)
		}
	}
	fin, flow, dns, cp := az.rows[0], az.rows[3], az.rows[4], az.rows[6]
	switch {
	case fin["TimeGenerated"] != "2026-01-01T00:00:00.124Z" || fin["Severity"] != "high" || fin["Computer"] != "ws-12":
		t.Errorf("finding row %v", fin)
	case fmt.Sprint(fin["MaskedSamples"]) != "[***-**-1120 ***-**-6789]" || fin["MatchCount"] != float64(2):
		t.Errorf("finding matches %v", fin)
	case flow["SrcIpAddr"] != "10.1.2.3" || flow["DstPortNumber"] != float64(443) || flow["TlsJa4"] == nil || flow["AppName"] != "Dropbox":
		t.Errorf("flow row %v", flow)
	case dns["DnsQuery"] != "portal.example.org" || dns["NetworkProtocol"] != "UDP":
		t.Errorf("dns row %v", dns)
	case cp["EventKind"] != "audit_checkpoint" || cp["AuditTreeSize"] != float64(77) || cp["EventId"] != "ward-audit/collector-1@77":
		t.Errorf("checkpoint row %v", cp)
	}
	if strings.Contains(f.logs.String(), az.secret) || strings.Contains(f.logs.String(), az.tokens[0]) {
		t.Error("the client secret or token is in the logs")
	}
}

func TestTokenRefreshedBeforeExpiry(t *testing.T) {
	f := newFixture(t, nil)
	f.az.ttl = 3600
	one := func() {
		t.Helper()
		if err := f.sink.Deliver(context.Background(), sinktest.Items(sinktest.File("a1", 1))); err != nil {
			t.Fatal(err)
		}
	}
	one()
	f.now = f.now.Add(54 * time.Minute)
	one()
	if len(f.az.tokens) != 1 {
		t.Fatalf("token replaced too early (%d)", len(f.az.tokens))
	}
	f.now = f.now.Add(2 * time.Minute) // 56 min: within 5 min of expiry
	one()
	if len(f.az.tokens) != 2 {
		t.Fatalf("token not refreshed before expiry (%d)", len(f.az.tokens))
	}
	// A token the API rejects (revoked) is replaced once, without failing the batch.
	f.az.mu.Lock()
	f.az.valid = map[string]bool{}
	f.az.mu.Unlock()
	one()
	if len(f.az.tokens) != 3 {
		t.Fatalf("rejected token not replaced (%d)", len(f.az.tokens))
	}
}

// TestSplitsAtOneMegabyte: a batch larger than the per-call limit goes out in several calls,
// each within it, and every row arrives once.
func TestSplitsAtOneMegabyte(t *testing.T) {
	f := newFixture(t, nil)
	var evs []*wardv1.Event
	for i := range 600 {
		ev := sinktest.Finding("a1", uint64(i+1), wardv1.Severity_SEVERITY_MEDIUM)
		ev.GetFinding().GetFile().Path = "/srv/exports/" + strings.Repeat("d", 3000) + fmt.Sprint(i)
		evs = append(evs, ev)
	}
	if err := f.sink.Deliver(context.Background(), sinktest.Items(evs...)); err != nil {
		t.Fatal(err)
	}
	if len(f.az.sizes) < 2 || len(f.az.rows) != 600 {
		t.Fatalf("%d calls, %d rows", len(f.az.sizes), len(f.az.rows))
	}
	seen := map[string]bool{}
	for _, r := range f.az.rows {
		seen[r["EventId"].(string)] = true
	}
	for i, n := range f.az.sizes {
		if n > MaxCallBytes {
			t.Errorf("call %d carried %d bytes", i, n)
		}
	}
	if len(seen) != 600 {
		t.Errorf("%d distinct rows", len(seen))
	}
	// One row above the limit on its own is refused for good, the rest still go.
	huge := sinktest.Finding("a1", 9999, wardv1.Severity_SEVERITY_LOW)
	huge.GetFinding().GetFile().Path = strings.Repeat("x", MaxCallBytes)
	err := f.sink.Deliver(context.Background(), sinktest.Items(huge, sinktest.File("a1", 2)))
	var be *core.BatchError
	if !errors.As(err, &be) || len(be.Failed) != 1 {
		t.Fatalf("oversized row: %v", err)
	}
	if o, _ := core.Outcome(be.Failed[0]); o != "dead_letter" {
		t.Fatalf("oversized row outcome %s", o)
	}
}

func TestStatusClassification(t *testing.T) {
	for _, c := range []struct {
		name     string
		answer   []int
		tokenErr []int
		secret   string
		want     string
		after    time.Duration
	}{
		{name: "429", answer: []int{429}, want: "retry", after: 7 * time.Second},
		{name: "503", answer: []int{503}, want: "retry", after: 7 * time.Second},
		{name: "500", answer: []int{500}, want: "retry"},
		{name: "400", answer: []int{400}, want: "dead_letter"},
		{name: "403", answer: []int{403}, want: "dead_letter"},
		{name: "413", answer: []int{413}, want: "dead_letter"},
		{name: "token 503", tokenErr: []int{503}, want: "retry"},
		{name: "bad secret", secret: "wrong-secret-value", want: "dead_letter"},
	} {
		f := newFixture(t, nil)
		f.az.answer, f.az.tokenErr = c.answer, c.tokenErr
		if c.secret != "" {
			f.az.secret = c.secret
		}
		err := f.sink.Deliver(context.Background(), sinktest.Items(sinktest.File("a1", 1), sinktest.Finding("a1", 2, wardv1.Severity_SEVERITY_HIGH)))
		var be *core.BatchError
		if !errors.As(err, &be) || len(be.Failed) != 2 {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		o, after := core.Outcome(be.Failed[0])
		if o != c.want || after != c.after {
			t.Errorf("%s: %s after %v (%v), want %s after %v", c.name, o, after, be.Failed[0], c.want, c.after)
		}
		if msg := be.Failed[0].Error(); strings.Contains(msg, "s3cr3t") || strings.Contains(msg, c.secret+"x") {
			t.Errorf("%s: secret in error %q", c.name, msg)
		}
		if c.name == "bad secret" && !strings.Contains(be.Failed[0].Error(), "AADSTS7000215") {
			t.Errorf("bad secret: Entra's reason not reported: %v", be.Failed[0])
		}
		if strings.Contains(f.logs.String(), "s3cr3t") {
			t.Errorf("%s: secret in logs", c.name)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	good := Config{Endpoint: "https://ward-dce.eastus-1.ingest.monitor.azure.com", DCRImmutableID: dcrID, Stream: stream,
		TenantID: tenant, ClientID: clientID, ClientSecretFile: "/etc/ward/sentinel.secret"}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(c *Config){
		"http":      func(c *Config) { c.Endpoint = "http://ward-dce.example" },
		"dcr":       func(c *Config) { c.DCRImmutableID = "my-rule" },
		"stream":    func(c *Config) { c.Stream = "WardEvents_CL" },
		"client":    func(c *Config) { c.ClientID = "app" },
		"no secret": func(c *Config) { c.ClientSecretFile = "" },
		"two":       func(c *Config) { c.ClientSecretEnv = "X" },
		"authority": func(c *Config) { c.AuthorityHost = "http://login.example" },
		"size":      func(c *Config) { c.MaxCallBytes = 2 << 20 },
	} {
		c := good
		mut(&c)
		if c.Validate() == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	t.Setenv("WARD_EMPTY_SECRET", "")
	c := good
	c.ClientSecretFile, c.ClientSecretEnv = "", "WARD_EMPTY_SECRET"
	if _, err := New(c, nil); err == nil || !strings.Contains(err.Error(), "empty or unset") {
		t.Fatalf("empty env secret: %v", err)
	}
}
