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
	"github.com/ward-dlp/ward/collector/sinks/internal/communityid"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
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
		if n := f.Network; n != nil {
			// Plaintext classified inside a TLS connection: the connection in ECS terms.
			ev["category"] = []string{"network", "intrusion_detection"}
			dst := map[string]any{}
			if ip, err := netip.ParseAddr(n.RemoteAddress); err == nil {
				dst["ip"], dst["address"] = ip.Unmap().String(), ip.Unmap().String()
			}
			if n.RemotePort != 0 {
				dst["port"] = n.RemotePort
			}
			if n.SNI != "" {
				dst["domain"] = n.SNI
				d["tls"] = map[string]any{"client": map[string]any{"server_name": n.SNI}}
			}
			if len(dst) > 0 {
				d["destination"] = dst
			}
			nw := map[string]any{"direction": ecsHostDirection(n.Direction)}
			if n.Transport != "" {
				nw["transport"] = n.Transport
			}
			d["network"] = nw
			d["message"] = f.DataClass + " data detected in TLS plaintext to " + nonEmpty(n.SNI, n.RemoteAddress)
		}
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
	case v.Flow != nil:
		flowDoc(d, ev, v.Flow)
		ward["flow"] = v.Flow
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

// flowDoc maps a network flow to ECS: source/destination from the connection's point of
// view (the local end is the source of an outbound flow), network.*, tls.*, and the
// Community ID so the SOC can pivot to the same connection in Zeek, Suricata or a firewall
// log. tls.client.ja4 is not an ECS field (ECS has ja3 only): a custom field under tls,
// documented in docs/siem.md.
func flowDoc(d, ev map[string]any, f *core.FlowView) {
	ev["category"] = []string{"network"}
	ev["type"] = []string{"connection", "end"}
	ev["action"] = "network-flow"
	ev["outcome"] = "success"
	if f.Denied {
		ev["type"] = []string{"connection", "denied"}
		ev["action"] = "network-flow-denied"
		ev["outcome"] = "failure"
		if f.RuleID != "" {
			d["rule"] = map[string]any{"id": f.RuleID}
		}
	}
	if f.StartTime != nil {
		ev["start"] = f.StartTime.Format(time.RFC3339Nano)
	}
	if f.EndTime != nil {
		ev["end"] = f.EndTime.Format(time.RFC3339Nano)
		if f.StartTime != nil && !f.EndTime.Before(*f.StartTime) {
			ev["duration"] = f.EndTime.Sub(*f.StartTime).Nanoseconds()
		}
	}
	local := endpoint(f.LocalAddress, f.LocalPort)
	remote := endpoint(f.RemoteAddress, f.RemotePort)
	srcBytes, dstBytes := f.BytesSent, f.BytesReceived
	src, dst := local, remote
	if f.Direction == "inbound" {
		src, dst = remote, local
		srcBytes, dstBytes = f.BytesReceived, f.BytesSent
	}
	src["bytes"], dst["bytes"] = srcBytes, dstBytes
	if name := nonEmpty(f.Name, f.SNI); name != "" {
		remote["domain"] = name
	}
	d["source"], d["destination"] = src, dst
	nw := map[string]any{
		"transport": f.Transport,
		"direction": ecsHostDirection(f.Direction),
		"bytes":     f.BytesSent + f.BytesReceived,
	}
	if f.AppProtocol != "" {
		nw["protocol"] = strings.ToLower(f.AppProtocol)
	}
	if ip, err := netip.ParseAddr(f.LocalAddress); err == nil {
		nw["type"] = map[bool]string{true: "ipv4", false: "ipv6"}[ip.Unmap().Is4()]
	}
	if id, ok := flowCommunityID(f); ok {
		nw["community_id"] = id
	}
	d["network"] = nw
	tls := map[string]any{}
	client := map[string]any{}
	if proto, v, ok := tlsVersion(f.TLSVersion); ok {
		tls["version"], tls["version_protocol"] = v, proto
	}
	if len(f.ALPN) > 0 {
		tls["next_protocol"] = f.ALPN[0]
	}
	if f.SNI != "" {
		client["server_name"] = f.SNI
	}
	if f.JA4 != "" {
		client["ja4"] = f.JA4
	}
	if len(client) > 0 {
		tls["client"] = client
	}
	if len(tls) > 0 {
		d["tls"] = tls
	}
	what := nonEmpty(f.AppName, nonEmpty(f.Name, f.RemoteAddress))
	d["message"] = fmt.Sprintf("%s %s flow to %s", f.Direction, f.Transport, what)
	if f.Denied {
		d["message"] = fmt.Sprintf("connection to %s denied", what)
	}
}

// tlsVersion splits Ward's "TLS 1.3" / "SSL 3.0" / "1.3" into ECS tls.version_protocol
// ("tls", "ssl") and tls.version ("1.3").
func tlsVersion(s string) (proto, version string, ok bool) {
	if p, v, found := strings.Cut(s, " "); found {
		p = strings.ToLower(p)
		return p, v, (p == "tls" || p == "ssl" || p == "dtls") && v != ""
	}
	if s != "" && s[0] >= '0' && s[0] <= '9' {
		return "tls", s, true
	}
	return "", "", false
}

func endpoint(addr string, port uint32) map[string]any {
	e := map[string]any{}
	if ip, err := netip.ParseAddr(addr); err == nil {
		e["ip"], e["address"] = ip.Unmap().String(), ip.Unmap().String()
	}
	if port != 0 {
		e["port"] = port
	}
	return e
}

// ecsHostDirection maps Ward's direction to ECS network.direction as a host-based sensor
// reports it (ECS: "ingress"/"egress" from the host's point of view).
func ecsHostDirection(dir string) string {
	switch dir {
	case "outbound", "send":
		return "egress"
	case "inbound", "receive":
		return "ingress"
	}
	return "unknown"
}

func flowCommunityID(f *core.FlowView) (string, bool) {
	la, err1 := netip.ParseAddr(f.LocalAddress)
	ra, err2 := netip.ParseAddr(f.RemoteAddress)
	if err1 != nil || err2 != nil || f.LocalPort > 65535 || f.RemotePort > 65535 {
		return "", false
	}
	proto := map[string]uint8{"tcp": communityid.TCP, "udp": communityid.UDP, "sctp": communityid.SCTP}[f.Transport]
	id, err := communityid.V1(0, netip.AddrPortFrom(la, uint16(f.LocalPort)), netip.AddrPortFrom(ra, uint16(f.RemotePort)), proto)
	return id, err == nil
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
