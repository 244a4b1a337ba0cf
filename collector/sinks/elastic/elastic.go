// Package elastic indexes events into Elasticsearch or OpenSearch through the _bulk API as
// ECS documents. Each document is a "create" with _id = the event id, so a resent batch
// cannot duplicate (409 on an existing id counts as delivered). A 200 response can still
// hold per-item failures: items refused with 429 or 5xx are retried, other 4xx items are
// dead-lettered, and only the failed items are resent.
package elastic

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/ward-dlp/ward/collector/sinks/core"
	"github.com/ward-dlp/ward/collector/sinks/ocsf"
)

// ECSVersion is the ECS version documents declare.
const ECSVersion = "9.0.0"

// Config is the elastic sink's block.
type Config struct {
	// URL of the cluster, e.g. https://es.example:9200.
	URL string `yaml:"url"`
	// Index or data stream to write to; default logs-ward.events-default.
	Index string `yaml:"index"`
	// APIKeyFile holds an API key (sent as "Authorization: ApiKey <key>"); or Username with
	// PasswordFile for basic authentication.
	APIKeyFile   string         `yaml:"api_key_file"`
	Username     string         `yaml:"username"`
	PasswordFile string         `yaml:"password_file"`
	Timeout      time.Duration  `yaml:"timeout"`
	TLS          core.TLSConfig `yaml:"tls"`
	AllowHTTP    bool           `yaml:"allow_http"`
}

// Validate checks the block.
func (c *Config) Validate() error {
	if err := core.CheckURL(c.URL, c.AllowHTTP); err != nil {
		return err
	}
	if c.APIKeyFile != "" && (c.Username != "" || c.PasswordFile != "") {
		return errors.New("set api_key_file or username/password_file, not both")
	}
	if (c.Username == "") != (c.PasswordFile == "") {
		return errors.New("username and password_file must be set together")
	}
	if c.Index != "" && (strings.ContainsAny(c.Index, " \"*\\/,|<>?#") || strings.HasPrefix(c.Index, "_")) {
		return fmt.Errorf("index %q: not a valid index name", c.Index)
	}
	if c.Timeout < 0 {
		return errors.New("timeout must not be negative")
	}
	return c.TLS.Validate()
}

// Sink is the elastic sink.
type Sink struct {
	cfg     Config
	auth    string
	version string
	client  *http.Client
	now     func() time.Time
}

// New builds the sink.
func New(cfg Config, version string, _ *slog.Logger) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Sink{cfg: cfg, version: version, now: time.Now}
	switch {
	case cfg.APIKeyFile != "":
		k, err := core.ReadSecret(cfg.APIKeyFile, "api_key_file")
		if err != nil {
			return nil, err
		}
		s.auth = "ApiKey " + k
	case cfg.Username != "":
		p, err := core.ReadSecret(cfg.PasswordFile, "password_file")
		if err != nil {
			return nil, err
		}
		req, _ := http.NewRequest(http.MethodGet, "http://x", nil)
		req.SetBasicAuth(cfg.Username, p)
		s.auth = req.Header.Get("Authorization")
	}
	tc, err := cfg.TLS.Build()
	if err != nil {
		return nil, err
	}
	if s.cfg.Index == "" {
		s.cfg.Index = "logs-ward.events-default"
	}
	if s.cfg.Timeout == 0 {
		s.cfg.Timeout = 30 * time.Second
	}
	s.cfg.URL = strings.TrimRight(cfg.URL, "/")
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	s.client = &http.Client{Transport: tr, Timeout: s.cfg.Timeout}
	return s, nil
}

// Doc builds the ECS document for it.
func Doc(it core.Item, version string) map[string]any {
	v := core.NewView(it)
	ev := map[string]any{
		"id": v.ID, "kind": "event", "module": "ward", "dataset": "ward." + v.Kind,
		"created": v.ReceivedAt.Format(time.RFC3339Nano),
	}
	d := map[string]any{
		"@timestamp": v.Time.Format(time.RFC3339Nano),
		"ecs":        map[string]any{"version": ECSVersion},
		"event":      ev,
		"agent":      map[string]any{"id": v.AgentID, "type": "ward-agent", "version": v.Host.AgentVersion},
		"observer":   map[string]any{"vendor": "Ward", "product": "ward-collector", "version": version},
	}
	host := map[string]any{"os": map[string]any{"type": "linux", "kernel": v.Host.Kernel}}
	if v.Host.Hostname != "" {
		host["hostname"], host["name"] = v.Host.Hostname, v.Host.Hostname
	}
	if v.Host.MachineID != "" {
		host["id"] = v.Host.MachineID
	}
	d["host"] = host
	ward := map[string]any{"kind": v.Kind, "seq": v.Seq}
	if p := v.Process; p != nil {
		pr := map[string]any{"pid": p.PID, "executable": p.Exe, "name": nonEmpty(p.Comm, path.Base(p.Exe))}
		if p.PPID != 0 || p.ParentExe != "" {
			pr["parent"] = map[string]any{"pid": p.PPID, "executable": p.ParentExe}
		}
		d["process"] = pr
		u := map[string]any{"id": fmt.Sprint(p.UID)}
		if p.User != "" {
			u["name"] = p.User
		}
		d["user"] = u
	}
	switch {
	case v.Finding != nil:
		f := v.Finding
		ev["kind"] = "alert"
		ev["category"] = []string{"file", "intrusion_detection"}
		ev["type"] = []string{"info"}
		if f.Decision.ActionTaken == "block" || f.Decision.ActionTaken == "kill" {
			ev["type"] = []string{"denied"}
		}
		ev["action"] = "ward-finding-" + f.Decision.ActionTaken
		ev["outcome"] = "success"
		ev["severity"] = ocsf.SeverityID(f.Decision.Severity)
		if f.Path != "" {
			d["file"] = fileDoc(f.Path, f.Size)
		}
		rule := map[string]any{"id": f.Decision.RuleID, "ruleset": f.Decision.PolicyName, "version": f.Decision.PolicyVersion}
		d["rule"] = rule
		ward["finding"] = f
		d["message"] = f.DataClass + " data detected in " + f.Path
	case v.File != nil:
		ev["category"] = []string{"file"}
		ev["type"] = []string{"change"}
		ev["action"] = "file-" + strings.ReplaceAll(v.File.Kind, "_", "-")
		d["file"] = fileDoc(v.File.Path, 0)
		ward["file"] = v.File
	case v.Exec != nil:
		ev["category"] = []string{"process"}
		ev["type"] = []string{map[bool]string{true: "start", false: "end"}[v.Exec.Kind == "exec"]}
		ev["action"] = "process-" + v.Exec.Kind
		ward["process_event"] = v.Exec
	case v.Checkpoint != nil:
		ev["category"] = []string{"configuration"}
		ev["type"] = []string{"info"}
		ev["action"] = "audit-checkpoint"
		ward["audit_checkpoint"] = v.Checkpoint
	case v.Health != nil:
		ev["category"] = []string{"host"}
		ev["type"] = []string{"info"}
		ev["action"] = "agent-health"
		ward["health"] = v.Health
	default:
		ev["action"] = v.Kind
		if v.PayloadType != "" {
			ward["payload_type"] = v.PayloadType
		}
	}
	d["ward"] = ward
	return d
}

func fileDoc(p string, size uint64) map[string]any {
	f := map[string]any{"path": p, "name": path.Base(p), "directory": path.Dir(p)}
	if ext := path.Ext(p); ext != "" {
		f["extension"] = strings.TrimPrefix(ext, ".")
	}
	if size > 0 {
		f["size"] = size
	}
	return f
}

// bulkResponse is the part of a _bulk answer that matters.
type bulkResponse struct {
	Errors bool                          `json:"errors"`
	Items  []map[string]bulkItemResponse `json:"items"`
}

type bulkItemResponse struct {
	Status int `json:"status"`
	Error  *struct {
		Type   string `json:"type"`
		Reason string `json:"reason"`
	} `json:"error"`
}

// Deliver sends the batch through _bulk.
func (s *Sink) Deliver(ctx context.Context, items []core.Item) error {
	var body bytes.Buffer
	enc := json.NewEncoder(&body)
	for _, it := range items {
		_ = enc.Encode(map[string]any{"create": map[string]any{"_index": s.cfg.Index, "_id": it.EventID()}})
		if err := enc.Encode(Doc(it, s.version)); err != nil {
			return core.Permanent(fmt.Errorf("elastic: encode: %w", err))
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.URL+"/_bulk", &body)
	if err != nil {
		return core.Permanent(fmt.Errorf("elastic: %w", err))
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	if s.auth != "" {
		req.Header.Set("Authorization", s.auth)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return core.Retry(fmt.Errorf("elastic: %w", err), 0)
	}
	rb, rerr := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("elastic: %w", core.HTTPStatus(resp, rb, s.now()))
	}
	if rerr != nil {
		return core.Retry(fmt.Errorf("elastic: read response: %w", rerr), 0)
	}
	var br bulkResponse
	if err := json.Unmarshal(rb, &br); err != nil {
		return core.Retry(fmt.Errorf("elastic: bad _bulk response: %w", err), 0)
	}
	if len(br.Items) != len(items) {
		return core.Retry(fmt.Errorf("elastic: _bulk answered %d items for %d sent", len(br.Items), len(items)), 0)
	}
	if !br.Errors {
		return nil
	}
	failed := map[int]error{}
	for i, m := range br.Items {
		var r bulkItemResponse
		for _, v := range m {
			r = v
		}
		switch {
		case r.Status >= 200 && r.Status < 300, r.Status == http.StatusConflict: // conflict: already indexed
			continue
		}
		reason := fmt.Sprintf("item status %d", r.Status)
		if r.Error != nil {
			reason += ": " + r.Error.Type + ": " + core.Excerpt([]byte(r.Error.Reason))
		}
		ierr := fmt.Errorf("elastic: %s", reason)
		if r.Status == http.StatusTooManyRequests || r.Status >= 500 || r.Status == 0 {
			failed[i] = core.Retry(ierr, 0)
		} else {
			failed[i] = core.Permanent(ierr)
		}
	}
	if len(failed) == 0 {
		return nil
	}
	return &core.BatchError{Failed: failed}
}

// Close releases idle connections.
func (s *Sink) Close() error {
	s.client.CloseIdleConnections()
	return nil
}

func nonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
