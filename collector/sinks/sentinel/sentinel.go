// Package sentinel delivers events to Microsoft Sentinel through the Azure Monitor Logs
// Ingestion API: an OAuth2 client-credentials token from Microsoft Entra ID, then gzip'd JSON
// arrays POSTed to
//
//	{endpoint}/dataCollectionRules/{DCR immutable id}/streams/{stream}?api-version=2023-01-01
//
// where the data collection rule (DCR) maps the stream's columns into a custom table
// (WardEvents_CL, see docs/siem.md). A call carries at most 1 MB, so a batch is split into as
// many calls as it needs; 204 is success, 429 and 5xx are retried (honouring Retry-After),
// other 4xx refusals are permanent and dead-letter the events. The older HTTP Data
// Collector API retires in September 2026 and is deliberately not supported.
//
// Columns are an allow-list built from core.View (Columns below): process arguments and
// matched values never leave, only masked samples and keyed fingerprints.
package sentinel

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/ward-dlp/ward/collector/sinks/core"
)

// Defaults.
const (
	// DefaultAuthorityHost is Entra ID in the public cloud; sovereign clouds use
	// https://login.microsoftonline.us (US Government) or https://login.chinacloudapi.cn.
	DefaultAuthorityHost = "https://login.microsoftonline.com"
	// DefaultScope is the Azure Monitor audience in the public cloud; US Government uses
	// https://monitor.azure.us/.default, China https://monitor.azure.cn/.default.
	DefaultScope = "https://monitor.azure.com/.default"
	// APIVersion is the Logs Ingestion API version.
	APIVersion = "2023-01-01"
	// MaxCallBytes is the API's limit on one call's body.
	MaxCallBytes = 1_000_000
)

// Config is the Sentinel sink's block.
type Config struct {
	// Endpoint is the data collection endpoint (DCE) or the DCR's own logs ingestion
	// endpoint, e.g. https://ward-dce-abcd.eastus-1.ingest.monitor.azure.com.
	Endpoint string `yaml:"endpoint"`
	// DCRImmutableID is the rule's immutableId, dcr-<32 hex digits>.
	DCRImmutableID string `yaml:"dcr_immutable_id"`
	// Stream is the DCR input stream, e.g. Custom-WardEvents_CL.
	Stream string `yaml:"stream"`
	// TenantID, ClientID: the Entra ID app registration holding the Monitoring Metrics
	// Publisher role on the DCR.
	TenantID string `yaml:"tenant_id"`
	ClientID string `yaml:"client_id"`
	// ClientSecretFile or ClientSecretEnv (exactly one) holds the app's client secret; it
	// is never written to the configuration, logs or errors.
	ClientSecretFile string `yaml:"client_secret_file"`
	ClientSecretEnv  string `yaml:"client_secret_env"`
	// AuthorityHost is the Entra ID host (sovereign clouds); default DefaultAuthorityHost.
	AuthorityHost string `yaml:"authority_host"`
	// Scope is the token scope; default DefaultScope.
	Scope string `yaml:"scope"`
	// MaxCallBytes caps one call's uncompressed body (default and maximum 1,000,000).
	MaxCallBytes int            `yaml:"max_call_bytes"`
	Timeout      time.Duration  `yaml:"timeout"`
	TLS          core.TLSConfig `yaml:"tls"`
}

var (
	dcrRE    = regexp.MustCompile(`^dcr-[0-9a-f]{32}$`)
	streamRE = regexp.MustCompile(`^(Custom|Microsoft)-[A-Za-z0-9_]{1,100}$`)
	guidRE   = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	tenantRE = regexp.MustCompile(`^[A-Za-z0-9.-]{1,253}$`) // GUID or verified domain
)

// Validate checks the block.
func (c *Config) Validate() error {
	for name, u := range map[string]string{"endpoint": c.Endpoint, "authority_host": c.AuthorityHost} {
		if u == "" && name == "authority_host" {
			continue
		}
		if err := core.CheckURL(u, false); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	switch {
	case !dcrRE.MatchString(c.DCRImmutableID):
		return fmt.Errorf("dcr_immutable_id %q: want dcr- and 32 hex digits (the rule's immutableId)", c.DCRImmutableID)
	case !streamRE.MatchString(c.Stream):
		return fmt.Errorf("stream %q: want Custom-<name> (or Microsoft-<table>)", c.Stream)
	case !tenantRE.MatchString(c.TenantID):
		return fmt.Errorf("tenant_id %q: want the directory (tenant) id", c.TenantID)
	case !guidRE.MatchString(c.ClientID):
		return fmt.Errorf("client_id %q: want the application (client) id, a GUID", c.ClientID)
	case (c.ClientSecretFile == "") == (c.ClientSecretEnv == ""):
		return errors.New("set exactly one of client_secret_file and client_secret_env")
	case c.MaxCallBytes < 0 || c.MaxCallBytes > MaxCallBytes:
		return fmt.Errorf("max_call_bytes: at most %d (the API's limit)", MaxCallBytes)
	case c.Timeout < 0:
		return errors.New("timeout must not be negative")
	}
	return c.TLS.Validate()
}

// Sink is the Sentinel sink.
type Sink struct {
	cfg      Config
	secret   string
	tokenURL string
	ingest   string
	client   *http.Client
	log      *slog.Logger
	now      func() time.Time

	mu      sync.Mutex
	token   string
	expires time.Time
}

// New builds the sink, reading the client secret.
func New(cfg Config, log *slog.Logger) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var secret string
	if cfg.ClientSecretEnv != "" {
		secret = strings.TrimSpace(os.Getenv(cfg.ClientSecretEnv))
		if secret == "" {
			return nil, fmt.Errorf("client_secret_env: $%s is empty or unset", cfg.ClientSecretEnv)
		}
	} else {
		s, err := core.ReadSecret(cfg.ClientSecretFile, "client_secret_file")
		if err != nil {
			return nil, err
		}
		secret = s
	}
	tc, err := cfg.TLS.Build()
	if err != nil {
		return nil, err
	}
	if cfg.AuthorityHost == "" {
		cfg.AuthorityHost = DefaultAuthorityHost
	}
	if cfg.Scope == "" {
		cfg.Scope = DefaultScope
	}
	if cfg.MaxCallBytes == 0 {
		cfg.MaxCallBytes = MaxCallBytes
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	return &Sink{
		cfg:    cfg,
		secret: secret,
		tokenURL: strings.TrimRight(cfg.AuthorityHost, "/") + "/" + url.PathEscape(cfg.TenantID) +
			"/oauth2/v2.0/token",
		ingest: strings.TrimRight(cfg.Endpoint, "/") + "/dataCollectionRules/" + url.PathEscape(cfg.DCRImmutableID) +
			"/streams/" + url.PathEscape(cfg.Stream) + "?api-version=" + APIVersion,
		client: &http.Client{Transport: tr, Timeout: cfg.Timeout},
		log:    log,
		now:    time.Now,
	}, nil
}

// tokenResponse is Entra ID's answer to a client-credentials request.
type tokenResponse struct {
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	AccessToken string `json:"access_token"`
	// On failure:
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
}

// refreshBefore is how long before expiry a cached token is replaced, so a token never
// expires between being read and being checked by the API.
const refreshBefore = 5 * time.Minute

// bearer returns a cached token, or fetches one.
func (s *Sink) bearer(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.token != "" && s.now().Before(s.expires) {
		return s.token, nil
	}
	form := url.Values{
		"grant_type":    {"client_credentials"},
		"client_id":     {s.cfg.ClientID},
		"client_secret": {s.secret},
		"scope":         {s.cfg.Scope},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return "", core.Permanent(fmt.Errorf("sentinel: token request: %w", err))
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	start := s.now()
	resp, err := s.client.Do(req)
	if err != nil {
		return "", core.Retry(fmt.Errorf("sentinel: token endpoint: %w", scrub(err, s.secret)), 0)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	var tr tokenResponse
	_ = json.Unmarshal(body, &tr)
	if resp.StatusCode != http.StatusOK {
		// Entra ID errors are {"error": "invalid_client", "error_description": "AADSTS…"}:
		// report those, never the request.
		msg := tr.Error
		if tr.ErrorDescription != "" {
			msg += ": " + firstLine(tr.ErrorDescription)
		}
		if msg == "" {
			msg = core.Excerpt(body)
		}
		return "", core.HTTPStatus(resp, []byte("token endpoint: "+scrub(errors.New(msg), s.secret).Error()), s.now())
	}
	if tr.AccessToken == "" || !strings.EqualFold(tr.TokenType, "Bearer") || tr.ExpiresIn <= 0 {
		return "", core.Retry(fmt.Errorf("sentinel: token endpoint answered without a bearer token (type %q, expires_in %d)",
			tr.TokenType, tr.ExpiresIn), 0)
	}
	life := time.Duration(tr.ExpiresIn) * time.Second
	s.token = tr.AccessToken
	s.expires = start.Add(life - min(refreshBefore, life/2))
	s.log.Debug("sentinel token acquired", "expires_in", life)
	return s.token, nil
}

// invalidate drops the cached token (after the API refused it).
func (s *Sink) invalidate() {
	s.mu.Lock()
	s.token = ""
	s.mu.Unlock()
}

// Deliver sends the batch in as many calls as the 1 MB limit needs.
func (s *Sink) Deliver(ctx context.Context, items []core.Item) error {
	failed := map[int]error{}
	type row struct {
		idx int
		b   []byte
	}
	var rows []row
	for i, it := range items {
		b, err := json.Marshal(Columns(core.NewView(it)))
		if err != nil {
			failed[i] = core.Permanent(fmt.Errorf("sentinel: encode: %w", err))
			continue
		}
		if len(b)+2 > s.cfg.MaxCallBytes {
			failed[i] = core.Permanent(fmt.Errorf("sentinel: event %s is %d bytes, above the %d-byte call limit", it.EventID(), len(b), s.cfg.MaxCallBytes))
			continue
		}
		rows = append(rows, row{i, b})
	}
	// Greedy packing into JSON arrays of at most MaxCallBytes (uncompressed, which also
	// bounds the compressed size).
	for start := 0; start < len(rows); {
		size, end := 1, start
		for end < len(rows) && size+len(rows[end].b)+1 <= s.cfg.MaxCallBytes {
			size += len(rows[end].b) + 1
			end++
		}
		var body bytes.Buffer
		body.WriteByte('[')
		for k := start; k < end; k++ {
			if k > start {
				body.WriteByte(',')
			}
			body.Write(rows[k].b)
		}
		body.WriteByte(']')
		if err := s.post(ctx, body.Bytes()); err != nil {
			var re *core.RetryError
			if errors.As(err, &re) {
				// Transient: this call and every later one wait for the retry together.
				for k := start; k < len(rows); k++ {
					failed[rows[k].idx] = err
				}
				break
			}
			for k := start; k < end; k++ {
				failed[rows[k].idx] = err
			}
		}
		start = end
	}
	if len(failed) == 0 {
		return nil
	}
	return &core.BatchError{Failed: failed}
}

// post sends one call, fetching a token first and once more if the API says it expired.
func (s *Sink) post(ctx context.Context, body []byte) error {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write(body); err != nil {
		return core.Permanent(fmt.Errorf("sentinel: gzip: %w", err))
	}
	if err := zw.Close(); err != nil {
		return core.Permanent(fmt.Errorf("sentinel: gzip: %w", err))
	}
	for attempt := 0; ; attempt++ {
		token, err := s.bearer(ctx)
		if err != nil {
			return err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.ingest, bytes.NewReader(gz.Bytes()))
		if err != nil {
			return core.Permanent(fmt.Errorf("sentinel: %w", err))
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Content-Encoding", "gzip")
		resp, err := s.client.Do(req)
		if err != nil {
			return core.Retry(fmt.Errorf("sentinel: %w", err), 0)
		}
		rb, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusOK:
			return nil
		case resp.StatusCode == http.StatusUnauthorized && attempt == 0:
			// A token revoked or expired early: fetch a new one once before giving up.
			s.invalidate()
			continue
		}
		return core.HTTPStatus(resp, []byte("ingestion: "+apiError(rb)), s.now())
	}
}

// apiError extracts Azure's {"error":{"code":…,"message":…}} from a refusal.
func apiError(b []byte) string {
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil && e.Error.Code != "" {
		return e.Error.Code + ": " + firstLine(e.Error.Message)
	}
	return core.Excerpt(b)
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	s = strings.TrimSpace(s)
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// scrub removes the secret from an error text (url.Error can quote the request).
func scrub(err error, secret string) error {
	if secret == "" || !strings.Contains(err.Error(), secret) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), secret, "[client secret]"))
}

// Close releases idle connections.
func (s *Sink) Close() error {
	s.client.CloseIdleConnections()
	return nil
}
