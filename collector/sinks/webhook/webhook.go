// Package webhook POSTs batches of events as JSON to any HTTPS endpoint, signed with
// HMAC-SHA256 so the receiver can check they came from this collector and are fresh.
//
// Body: {"events":[...]} (OCSF by default). Headers: X-Ward-Signature: t=<unix seconds>,
// v1=<hex HMAC-SHA256(secret, "<t>." + body)>, and X-Ward-Batch: a stable id of the batch's
// events, so a receiver can drop a resent batch.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/ward-dlp/ward/collector/sinks/core"
	"github.com/ward-dlp/ward/collector/sinks/ocsf"
)

// Config is the webhook sink's block.
type Config struct {
	URL string `yaml:"url"`
	// SecretFile holds the HMAC key (at least 16 bytes).
	SecretFile string `yaml:"secret_file"`
	// Header names the signature header; default X-Ward-Signature.
	Header  string         `yaml:"header"`
	Format  string         `yaml:"format"`
	Timeout time.Duration  `yaml:"timeout"`
	TLS     core.TLSConfig `yaml:"tls"`
	// AllowHTTP permits a plain http:// URL (loopback only), e.g. for a local relay.
	AllowHTTP bool `yaml:"allow_http"`
}

// Validate checks the block.
func (c *Config) Validate() error {
	if err := core.CheckURL(c.URL, c.AllowHTTP); err != nil {
		return err
	}
	if c.SecretFile == "" {
		return errors.New("secret_file: must be set")
	}
	if c.Timeout < 0 {
		return errors.New("timeout must not be negative")
	}
	if err := c.TLS.Validate(); err != nil {
		return err
	}
	return ocsf.CheckFormat(c.Format)
}

// Sink is the webhook sink.
type Sink struct {
	cfg    Config
	o      ocsf.Options
	secret []byte
	client *http.Client
	now    func() time.Time
}

// New builds the sink.
func New(cfg Config, o ocsf.Options, _ *slog.Logger) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	secret, err := core.ReadSecret(cfg.SecretFile, "secret_file")
	if err != nil {
		return nil, err
	}
	if len(secret) < 16 {
		return nil, errors.New("secret_file: the secret must be at least 16 bytes")
	}
	tc, err := cfg.TLS.Build()
	if err != nil {
		return nil, err
	}
	if cfg.Header == "" {
		cfg.Header = "X-Ward-Signature"
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Format == "" {
		cfg.Format = ocsf.FormatOCSF
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	return &Sink{cfg: cfg, o: o, secret: []byte(secret), now: time.Now,
		client: &http.Client{Transport: tr, Timeout: cfg.Timeout}}, nil
}

// Sign returns the signature header value for body at t.
func Sign(secret, body []byte, t time.Time) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

// Deliver POSTs the batch.
func (s *Sink) Deliver(ctx context.Context, items []core.Item) error {
	failed := map[int]error{}
	events := make([]any, 0, len(items))
	h := sha256.New()
	for i, it := range items {
		v, err := ocsf.Payload(s.cfg.Format, it, s.o)
		if err != nil {
			failed[i] = err
			continue
		}
		events = append(events, v)
		h.Write([]byte(it.EventID()))
	}
	if len(events) > 0 {
		body, err := json.Marshal(map[string]any{"events": events})
		if err != nil {
			return core.Permanent(fmt.Errorf("webhook: encode: %w", err))
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.URL, bytes.NewReader(body))
		if err != nil {
			return core.Permanent(fmt.Errorf("webhook: %w", err))
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(s.cfg.Header, Sign(s.secret, body, s.now()))
		req.Header.Set("X-Ward-Batch", hex.EncodeToString(h.Sum(nil))[:32])
		resp, err := s.client.Do(req)
		if err != nil {
			return core.Retry(fmt.Errorf("webhook: %w", err), 0)
		}
		rb, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			return fmt.Errorf("webhook: %w", core.HTTPStatus(resp, rb, s.now()))
		}
	}
	if len(failed) > 0 {
		return &core.BatchError{Failed: failed}
	}
	return nil
}

// Close releases idle connections.
func (s *Sink) Close() error {
	s.client.CloseIdleConnections()
	return nil
}
