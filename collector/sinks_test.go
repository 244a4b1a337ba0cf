package collector

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/timestamppb"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/collector/sinks"
	sinkfile "github.com/ward-dlp/ward/collector/sinks/file"
)

func TestLoadFileSinks(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.yaml", `
metrics_listen: 127.0.0.1:9464
sinks:
  - name: soc-syslog
    type: syslog
    kinds: [finding, health]
    min_severity: medium
    batch: {max_events: 200, max_wait: 2s}
    retry: {initial: 2s, max: 10m}
    syslog:
      address: siem.clinic.example:6514
      format: cef
      facility: 13
      tls: {ca_file: /etc/ward/siem-ca.pem, cert_file: /etc/ward/c.pem, key_file: /etc/ward/c.key}
  - name: archive
    type: file
    kinds: [finding, file]
    ocsf_version: 1.6.0
    file: {path: /var/log/ward/ocsf.jsonl, max_bytes: 104857600, keep: 10}
`)
	cfg, err := LoadFile(good, Defaults("/var/lib/ward"))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Sinks) != 2 || cfg.Sinks[0].Syslog == nil || *cfg.Sinks[0].Syslog.Facility != 13 ||
		cfg.Sinks[0].Batch.MaxWait != 2*time.Second || cfg.Sinks[1].File.Keep != 10 || cfg.MetricsListen != "127.0.0.1:9464" {
		t.Fatalf("cfg = %+v", cfg)
	}
	for name, tc := range map[string]struct{ body, want string }{
		"nested unknown key": {"sinks:\n  - name: a\n    type: file\n    file: {path: /x, rotate: 3}\n", "rotate"},
		"missing block":      {"sinks:\n  - name: a\n    type: hec\n", "needs a hec: block"},
		"metrics on network": {"metrics_listen: 0.0.0.0:9464\n", "loopback"},
		"bad severity":       {"sinks:\n  - name: a\n    type: file\n    min_severity: severe\n    file: {path: /x}\n", "min_severity"},
	} {
		_, err := LoadFile(write(strings.ReplaceAll(name, " ", "_")+".yaml", tc.body), Defaults("/var/lib/ward"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want %q", name, err, tc.want)
		}
	}
}

// TestRunServesSinkMetrics runs the collector with a file sink and the metrics listener and
// reads the sink metrics from it.
func TestRunServesSinkMetrics(t *testing.T) {
	home := t.TempDir()
	cfg := Defaults(home)
	cfg.Listen = "127.0.0.1:0"
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.MetricsListen = "127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	cfg.Sinks = []sinks.Config{{Name: "archive", Type: sinks.TypeFile, File: &sinkfile.Config{Path: filepath.Join(home, "out.jsonl")}}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	deadline := time.Now().Add(10 * time.Second)
	var body string
	for {
		resp, err := http.Get("http://" + cfg.MetricsListen + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
			if strings.Contains(body, `ward_collector_sink_queue_depth{sink="archive"}`) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics not served: %v\n%s", err, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, m := range []string{
		`ward_collector_sink_events_total{outcome="delivered",sink="archive"} 0`,
		`ward_collector_sink_oldest_event_age_seconds{sink="archive"} 0`,
		`ward_collector_sink_dead_letters_total{sink="archive"} 0`,
	} {
		if !strings.Contains(body, m) {
			t.Errorf("metrics lack %s", m)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return")
	}
}

// TestAgentToSinkThroughRun runs the real collector with a file sink, enrols an agent over
// mutual TLS, exports findings (one of them twice) and reads them back from the sink's OCSF
// file: the whole path ingest → store + outbox (one transaction) → dispatcher → sink.
func TestAgentToSinkThroughRun(t *testing.T) {
	home := t.TempDir()
	cfg := Defaults(home)
	cfg.Listen = freeAddr(t)
	out := filepath.Join(home, "siem", "ward.ocsf.jsonl")
	cfg.Sinks = []sinks.Config{{Name: "archive", Type: sinks.TypeFile, Kinds: []string{"finding"},
		Batch: sinks.BatchConfig{MaxWait: 10 * time.Millisecond}, File: &sinkfile.Config{Path: out}}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	admin := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", DefaultAdminSocket(home))
	}}}
	var tok struct {
		Token string `json:"token"`
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := admin.Post("http://ward/v1/enrollment-tokens", "application/json", strings.NewReader(`{}`))
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&tok)
			resp.Body.Close()
			if err == nil && tok.Token != "" {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no enrolment token: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	caPEM, err := os.ReadFile(filepath.Join(home, "collector", "pki", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("CA file holds no PEM certificate")
	}
	dial := func(cert *tls.Certificate) wardv1.AgentServiceClient {
		tc := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: "localhost"}
		if cert != nil {
			tc.Certificates = []tls.Certificate{*cert}
		}
		cc, err := grpc.NewClient(cfg.Listen, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cc.Close() })
		return wardv1.NewAgentServiceClient(cc)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	enr, err := dial(nil).Enroll(ctx, &wardv1.EnrollRequest{Token: tok.Token, CsrDer: csr, Hostname: "ws-12", MachineId: "m", AgentVersion: "t"})
	if err != nil {
		t.Fatal(err)
	}
	agent := enr.GetAgentId()
	client := dial(&tls.Certificate{Certificate: [][]byte{enr.GetCertificateDer()}, PrivateKey: key})
	var ids []string
	var evs []*wardv1.Event
	for seq := uint64(1); seq <= 3; seq++ {
		ev := &wardv1.Event{Id: uuid.Must(uuid.NewV7()).String(), AgentId: agent, Seq: seq, Time: timestamppb.Now(),
			Host: &wardv1.Host{Hostname: "ws-12"},
			Payload: &wardv1.Event_Finding{Finding: &wardv1.Finding{DataClass: wardv1.DataClass_DATA_CLASS_PART2,
				Process: &wardv1.Process{Pid: 9, Exe: "/usr/bin/cp", Args: []string{"cp", "MRN-0042-raw"}},
				Target:  &wardv1.Finding_File{File: &wardv1.FileTarget{Path: "/srv/exports/x.json"}},
				Matches: []*wardv1.Match{{Detector: "fhir.security-label", Count: 1, MaskedSamples: []string{"****0042"}}},
				Decision: &wardv1.Decision{Action: wardv1.Action_ACTION_ALERT, ActionTaken: wardv1.Action_ACTION_ALERT,
					Severity: wardv1.Severity_SEVERITY_HIGH, RuleId: "part2-write"}}}}
		ids = append(ids, ev.GetId())
		evs = append(evs, ev)
	}
	if _, err := client.Export(ctx, &wardv1.ExportRequest{Events: evs[:2]}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Export(ctx, &wardv1.ExportRequest{Events: evs[1:]}); err != nil { // seq 2 resent
		t.Fatal(err)
	}
	// The file also receives the audit log's signed checkpoints (OCSF 1008), which the
	// collector sends to every sink; only the findings are counted here.
	findings := func() []string {
		b, _ := os.ReadFile(out)
		var fs []string
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			var m map[string]any
			if l == "" {
				continue
			}
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("sink line is not JSON: %v: %s", err, l)
			}
			switch m["class_uid"] {
			case float64(2006):
				fs = append(fs, l)
			case float64(1008):
			default:
				t.Fatalf("unexpected line in the sink: %s", l)
			}
		}
		return fs
	}
	deadline = time.Now().Add(15 * time.Second)
	for len(findings()) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("sink file has %d findings", len(findings()))
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // a duplicate would arrive now
	lines := findings()
	if len(lines) != 3 {
		t.Fatalf("%d findings, want 3 (the resent event stored and queued once)", len(lines))
	}
	for i, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		if m["metadata"].(map[string]any)["uid"] != ids[i] {
			t.Errorf("line %d: %s", i, l)
		}
		if strings.Contains(l, "MRN-0042-raw") {
			t.Errorf("process arguments left the collector: %s", l)
		}
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
