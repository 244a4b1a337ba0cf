// Package hec delivers events to Splunk's HTTP Event Collector (/services/collector/event):
// one request per batch, the body being JSON event objects concatenated (not an array),
// Authorization: Splunk <token>. With indexer acknowledgement (the default) each request
// carries a channel id, Splunk answers with an ackId, and the batch counts as delivered only
// once /services/collector/ack reports that id indexed: a 200 alone means parsed, not
// stored. Unacknowledged batches are resent after ack_timeout (at least once).
package hec

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/ward-dlp/ward/collector/sinks/core"
	"github.com/ward-dlp/ward/collector/sinks/ocsf"
)

// Config is the HEC sink's block.
type Config struct {
	// URL is the HEC base, e.g. https://splunk.example:8088.
	URL string `yaml:"url"`
	// TokenFile holds the HEC token.
	TokenFile  string `yaml:"token_file"`
	Index      string `yaml:"index"`
	Source     string `yaml:"source"`
	Sourcetype string `yaml:"sourcetype"` // default ward:<kind>
	Format     string `yaml:"format"`
	// Ack turns indexer acknowledgement on (default true); set false only for tokens
	// without it, accepting that a 200 then counts as delivered.
	Ack *bool `yaml:"ack"`
	// AckTimeout is how long to poll for an ack before resending; default 2m.
	AckTimeout time.Duration `yaml:"ack_timeout"`
	// AckPollInterval between ack polls; default 1s.
	AckPollInterval time.Duration  `yaml:"ack_poll_interval"`
	Timeout         time.Duration  `yaml:"timeout"`
	TLS             core.TLSConfig `yaml:"tls"`
	AllowHTTP       bool           `yaml:"allow_http"`
}

// Validate checks the block.
func (c *Config) Validate() error {
	if err := core.CheckURL(c.URL, c.AllowHTTP); err != nil {
		return err
	}
	if c.TokenFile == "" {
		return errors.New("token_file: must be set")
	}
	if c.AckTimeout < 0 || c.AckPollInterval < 0 || c.Timeout < 0 {
		return errors.New("durations must not be negative")
	}
	if err := c.TLS.Validate(); err != nil {
		return err
	}
	return ocsf.CheckFormat(c.Format)
}

// Sink is the HEC sink.
type Sink struct {
	cfg     Config
	o       ocsf.Options
	token   string
	channel string
	ack     bool
	client  *http.Client
	log     *slog.Logger
	now     func() time.Time
}

// New builds the sink with a fresh channel id.
func New(cfg Config, o ocsf.Options, log *slog.Logger) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	token, err := core.ReadSecret(cfg.TokenFile, "token_file")
	if err != nil {
		return nil, err
	}
	tc, err := cfg.TLS.Build()
	if err != nil {
		return nil, err
	}
	cfg.URL = strings.TrimRight(cfg.URL, "/")
	if cfg.Format == "" {
		cfg.Format = ocsf.FormatOCSF
	}
	if cfg.AckTimeout == 0 {
		cfg.AckTimeout = 2 * time.Minute
	}
	if cfg.AckPollInterval == 0 {
		cfg.AckPollInterval = time.Second
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	return &Sink{cfg: cfg, o: o, token: token, channel: uuid.NewString(), ack: cfg.Ack == nil || *cfg.Ack,
		client: &http.Client{Transport: tr, Timeout: cfg.Timeout}, log: log, now: time.Now}, nil
}

// hecEvent is one object of the request body.
type hecEvent struct {
	Time       float64           `json:"time"`
	Host       string            `json:"host,omitempty"`
	Source     string            `json:"source,omitempty"`
	Sourcetype string            `json:"sourcetype"`
	Index      string            `json:"index,omitempty"`
	Event      any               `json:"event"`
	Fields     map[string]string `json:"fields,omitempty"`
}

// hecResponse is HEC's answer to a send or an error.
type hecResponse struct {
	Text               string `json:"text"`
	Code               int    `json:"code"`
	AckID              *int64 `json:"ackId"`
	InvalidEventNumber *int   `json:"invalid-event-number"`
}

// Deliver sends the batch and, with ack on, waits for the indexer acknowledgement.
func (s *Sink) Deliver(ctx context.Context, items []core.Item) error {
	failed := map[int]error{}
	var body bytes.Buffer
	var sent []int // batch index of each event in the body, in order
	enc := json.NewEncoder(&body)
	for i, it := range items {
		v, err := ocsf.Payload(s.cfg.Format, it, s.o)
		if err != nil {
			failed[i] = err
			continue
		}
		e := hecEvent{
			Time:       float64(it.EventTime().UnixMilli()) / 1000,
			Host:       it.Hostname(),
			Source:     s.cfg.Source,
			Sourcetype: s.cfg.Sourcetype,
			Index:      s.cfg.Index,
			Event:      v,
			Fields:     map[string]string{"agent_id": it.AgentID()},
		}
		if e.Sourcetype == "" {
			e.Sourcetype = "ward:" + core.NewView(it).Kind
		}
		if err := enc.Encode(e); err != nil {
			failed[i] = core.Permanent(fmt.Errorf("hec: encode: %w", err))
			continue
		}
		sent = append(sent, i)
	}
	if len(sent) > 0 {
		if err := s.send(ctx, body.Bytes(), sent, failed); err != nil {
			return err
		}
	}
	if len(failed) > 0 {
		return &core.BatchError{Failed: failed}
	}
	return nil
}

// send posts body; per-event refusals are added to failed, whole-batch failures returned.
func (s *Sink) send(ctx context.Context, body []byte, sent []int, failed map[int]error) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.URL+"/services/collector/event", bytes.NewReader(body))
	if err != nil {
		return core.Permanent(fmt.Errorf("hec: %w", err))
	}
	req.Header.Set("Authorization", "Splunk "+s.token)
	req.Header.Set("Content-Type", "application/json")
	if s.ack {
		req.Header.Set("X-Splunk-Request-Channel", s.channel)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return core.Retry(fmt.Errorf("hec: %w", err), 0)
	}
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	var hr hecResponse
	_ = json.Unmarshal(rb, &hr)
	if resp.StatusCode != http.StatusOK {
		herr := fmt.Errorf("hec: %w", core.HTTPStatus(resp, rb, s.now()))
		// A 400 naming the first invalid event: Splunk refused that one; the others are
		// resent (HEC stops at the bad event, and without an ack nothing is confirmed).
		if resp.StatusCode == http.StatusBadRequest && hr.InvalidEventNumber != nil &&
			*hr.InvalidEventNumber >= 0 && *hr.InvalidEventNumber < len(sent) {
			bad := *hr.InvalidEventNumber
			for j, i := range sent {
				if j == bad {
					failed[i] = core.Permanent(fmt.Errorf("hec: event refused: %s (code %d)", hr.Text, hr.Code))
				} else {
					failed[i] = core.Retry(fmt.Errorf("hec: batch refused at event %d; resending", bad), 0)
				}
			}
			return nil
		}
		return herr
	}
	if !s.ack {
		return nil
	}
	if hr.AckID == nil {
		return core.Retry(errors.New("hec: 200 without ackId: indexer acknowledgement is not enabled on this token (enable it, or set ack: false)"), 0)
	}
	return s.waitAck(ctx, *hr.AckID)
}

// waitAck polls the ack endpoint until id is indexed or AckTimeout passes.
func (s *Sink) waitAck(ctx context.Context, id int64) error {
	deadline := s.now().Add(s.cfg.AckTimeout)
	body, _ := json.Marshal(map[string][]int64{"acks": {id}})
	for {
		ok, err := s.pollAck(ctx, id, body)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if s.now().After(deadline) {
			return core.Retry(fmt.Errorf("hec: ack %d not confirmed within %s; resending", id, s.cfg.AckTimeout), 0)
		}
		t := time.NewTimer(s.cfg.AckPollInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return core.Retry(fmt.Errorf("hec: waiting for ack %d: %w", id, ctx.Err()), 0)
		case <-t.C:
		}
	}
}

func (s *Sink) pollAck(ctx context.Context, id int64, body []byte) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost,
		s.cfg.URL+"/services/collector/ack?channel="+s.channel, bytes.NewReader(body))
	if err != nil {
		return false, core.Permanent(fmt.Errorf("hec: %w", err))
	}
	req.Header.Set("Authorization", "Splunk "+s.token)
	req.Header.Set("X-Splunk-Request-Channel", s.channel)
	resp, err := s.client.Do(req)
	if err != nil {
		return false, core.Retry(fmt.Errorf("hec: ack poll: %w", err), 0)
	}
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// The events may be indexed already; whatever the status, resend rather than drop.
		return false, core.Retry(fmt.Errorf("hec: ack poll: HTTP %d: %s", resp.StatusCode, core.Excerpt(rb)),
			core.RetryAfter(resp.Header.Get("Retry-After"), s.now()))
	}
	var ar struct {
		Acks map[string]bool `json:"acks"`
	}
	if err := json.Unmarshal(rb, &ar); err != nil {
		return false, core.Retry(fmt.Errorf("hec: ack poll: bad response: %w", err), 0)
	}
	return ar.Acks[fmt.Sprint(id)], nil
}

// Close releases idle connections.
func (s *Sink) Close() error {
	s.client.CloseIdleConnections()
	return nil
}
