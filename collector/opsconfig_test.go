package collector

import (
	"crypto/rand"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ward-dlp/ward/collector/store"
)

func TestOpsSections(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "c.yaml")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`ingest:
  max_inflight_events: 20000
  max_inflight_bytes: 33554432
  commit_latency_threshold: 1s
  outbox_depth_threshold: 5000000
  agent_events_per_second: 500
  agent_burst: 5000
  retry_base: 500ms
  retry_max: 1m
fleet:
  silent_after: 30m
retention:
  max_age: 2160h
  max_bytes: 21474836480
  hard_max_bytes: 32212254720
evidence_encryption:
  key_file: /etc/ward/evidence.keys
`)
	cfg, err := LoadFile(p, Defaults(dir))
	if err != nil {
		t.Fatal(err)
	}
	l := cfg.ingestLimits()
	if l.MaxInflightEvents != 20000 || l.AgentEventsPerSecond != 500 || l.RetryMax != time.Minute || l.MaxBatchEvents != 1000 ||
		cfg.Fleet.SilentAfter != 30*time.Minute || cfg.Retention.MaxAge != 2160*time.Hour || !cfg.retentionConfig().Enabled() ||
		cfg.EvidenceEncryption.KeyFile != "/etc/ward/evidence.keys" {
		t.Fatalf("parsed %+v", cfg)
	}
	for bad, want := range map[string]string{
		"ingest:\n  agent_burst: 10\n  agent_events_per_second: 5\n":          "agent_burst",
		"ingest:\n  retry_max: 1h\n":                                          "retry_max",
		"ingest:\n  max_inflight_bytes: 1024\n":                               "max_inflight_bytes",
		"fleet:\n  silent_after: 5s\n":                                        "silent_after",
		"retention:\n  max_age: 10m\n":                                        "max_age",
		"retention:\n  hard_max_bytes: 1073741824\n":                          "needs max_bytes",
		"retention:\n  max_bytes: 1073741824\n  hard_max_bytes: 1073741824\n": "above max_bytes",
		"retention:\n  max_agee: 1h\n":                                        "max_agee",
		"evidence_encryption:\n  key: x\n":                                    "key",
	} {
		write(bad)
		if _, err := LoadFile(p, Defaults(dir)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error naming %s", bad, err, want)
		}
	}
}

func TestEvidenceKeySources(t *testing.T) {
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	key := base64.StdEncoding.EncodeToString(k)
	kf := filepath.Join(t.TempDir(), "evidence.keys")
	if err := os.WriteFile(kf, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Defaults(t.TempDir())
	t.Setenv(store.EvidenceKeyEnv, "")
	if r, _, err := cfg.evidenceKeys(); err != nil || r != nil {
		t.Fatalf("no key configured: %v %v", r, err)
	}
	cfg.EvidenceEncryption.KeyFile = kf
	r, src, err := cfg.evidenceKeys()
	if err != nil || r == nil || src != "key_file" {
		t.Fatalf("key file: %v %s %v", r, src, err)
	}
	t.Setenv(store.EvidenceKeyEnv, key)
	if _, _, err := cfg.evidenceKeys(); err == nil || !strings.Contains(err.Error(), "use one") {
		t.Fatalf("both sources: %v", err)
	}
	cfg.EvidenceEncryption.KeyFile = ""
	if r2, src, err := cfg.evidenceKeys(); err != nil || src != "environment" || r2.CurrentID() != r.CurrentID() {
		t.Fatalf("environment: %v %s %v", r2, src, err)
	}
	t.Setenv(store.EvidenceKeyEnv, "not-a-key")
	if _, _, err := cfg.evidenceKeys(); err == nil || !strings.Contains(err.Error(), store.EvidenceKeyEnv) {
		t.Fatalf("bad env key: %v", err)
	}
}
