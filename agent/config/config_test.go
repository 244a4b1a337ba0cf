package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func write(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadOverridesDefaults(t *testing.T) {
	cfg, err := Load(write(t, "state_dir: /tmp/ward-x\nwatch: [/srv/a, /srv/b/../c]\ncapture:\n  idle_flush: 500ms\n  max_write_bytes: 4096\nhealth_interval: 5s\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.StateDir != "/tmp/ward-x" || len(cfg.Watch) != 2 || cfg.Watch[1] != "/srv/c" {
		t.Fatalf("got %+v", cfg)
	}
	if cfg.Capture.IdleFlush != 500*time.Millisecond || cfg.Capture.MaxWriteBytes != 4096 || cfg.HealthInterval != 5*time.Second {
		t.Fatalf("capture %+v", cfg.Capture)
	}
	if cfg.Capture.MaxFileBytes != Default().Capture.MaxFileBytes {
		t.Fatal("unset keys must keep their defaults")
	}
}

func TestLoadEmptyFileIsDefaults(t *testing.T) {
	cfg, err := Load(write(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.StateDir != Default().StateDir {
		t.Fatalf("got %+v", cfg)
	}
}

func TestLoadRejectsBrokenConfigsWithAPosition(t *testing.T) {
	for name, c := range map[string]struct{ body, want string }{
		"unknown key":      {"colector: x\n", "colector"},
		"bad type":         {"capture:\n  max_file_bytes: lots\n", "line 2"},
		"bad duration":     {"capture:\n  idle_flush: soon\n", "line 2"},
		"capture too big":  {"capture:\n  max_write_bytes: 1000000\n", "max_write_bytes"},
		"ring not pow2":    {"capture:\n  ring_bytes: 100000\n", "ring_bytes"},
		"tiny spool":       {"spool:\n  max_bytes: 10\n", "spool.max_bytes"},
		"log level":        {"log_level: loud\n", "log_level"},
		"edm without key":  {"classifiers:\n  edm_index: /etc/ward/p.edm\n", "edm_key_file"},
		"fp without index": {"classifiers:\n  fingerprint_key_file: /k\n", "fingerprint_index"},
		"flow idle":        {"network:\n  flow_idle_timeout: 1ms\n", "network.flow_idle_timeout"},
		"max flows":        {"network:\n  max_flows: 1\n", "network.max_flows"},
		"not yaml":         {"{{{{", "agent config"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Load(write(t, c.body))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want mention of %q", err, c.want)
			}
		})
	}
}

func TestNetworkSection(t *testing.T) {
	cfg, err := Load(write(t, "network:\n  enabled: false\n  flow_idle_timeout: 30s\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Network.Enabled || cfg.Network.FlowIdleTimeout != 30*time.Second || cfg.Network.MaxFlows != Default().Network.MaxFlows {
		t.Fatalf("network = %+v", cfg.Network)
	}
	if !Default().Network.Enabled {
		t.Error("the network sensor is on by default: the collector stores flow events")
	}
}

func TestLoadMissingFile(t *testing.T) {
	if _, err := Load(filepath.Join(t.TempDir(), "nope.yaml")); err == nil {
		t.Fatal("missing file accepted")
	}
}

func TestPolicyKeysAreValidated(t *testing.T) {
	// A real verifier key (its base64 may contain '+') and a broken one.
	good := "ward-policy+1743f1fe+Ac2mR+aWaScIZsCXBMlUT66rBGsM9umREhH2oBYh7VXz"
	c := Default()
	c.Policy.Keys = []string{good}
	if err := c.Validate(); err != nil {
		t.Fatalf("good key refused: %v", err)
	}
	c.Policy.Keys = []string{"ward-policy+6a3cf00e"}
	if err := c.Validate(); err == nil {
		t.Fatal("broken key accepted")
	}
	c.Policy.Keys = nil
	c.Policy.Group = "Bad Group"
	if err := c.Validate(); err == nil {
		t.Fatal("bad group accepted")
	}
}

func TestTLSPlaintextSection(t *testing.T) {
	d := Default().Network.TLSPlaintext
	if !d.Enabled || d.InspectReceived {
		t.Errorf("defaults %+v: TLS plaintext inspection is on, egress only", d)
	}
	cfg, err := Load(write(t, "network:\n  tls_plaintext:\n    enabled: false\n    inspect_received: true\n    max_capture_bytes: 16384\n    idle_flush: 500ms\n"))
	if err != nil {
		t.Fatal(err)
	}
	tp := cfg.Network.TLSPlaintext
	if tp.Enabled || !tp.InspectReceived || tp.MaxCaptureBytes != 16384 || tp.IdleFlush != 500*time.Millisecond || tp.MaxSessions != d.MaxSessions {
		t.Fatalf("tls_plaintext = %+v", tp)
	}
	for name, c := range map[string]struct{ body, want string }{
		"unknown key":  {"network:\n  tls_plaintext:\n    enable: true\n", "enable"},
		"capture":      {"network:\n  tls_plaintext:\n    max_capture_bytes: 10\n", "max_capture_bytes"},
		"huge capture": {"network:\n  tls_plaintext:\n    max_capture_bytes: 1048576\n", "max_capture_bytes"},
		"sessions":     {"network:\n  tls_plaintext:\n    max_sessions: 0\n", "max_sessions"},
		"session size": {"network:\n  tls_plaintext:\n    max_session_bytes: 5\n", "max_session_bytes"},
		"idle":         {"network:\n  tls_plaintext:\n    idle_flush: 1ms\n", "idle_flush"},
		"bad bool":     {"network:\n  tls_plaintext:\n    enabled: maybe\n", "line 3"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Load(write(t, c.body))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want mention of %q", err, c.want)
			}
		})
	}
}

func TestNetCaptureSection(t *testing.T) {
	d := Default().Network.Capture
	if !d.Enabled || d.Hook != "auto" || d.Packets != 10 || d.Snap != 2048 {
		t.Errorf("defaults %+v: capture is on, cgroup_skb first", d)
	}
	cfg, err := Load(write(t, "network:\n  capture:\n    enabled: false\n    packets: 4\n    snap: 1500\n    hook: tcx\n"))
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Network.Capture
	if c.Enabled || c.Packets != 4 || c.Snap != 1500 || c.Hook != "tcx" || c.Bytes != d.Bytes || c.DNSPerSecond != d.DNSPerSecond {
		t.Fatalf("capture = %+v", c)
	}
	for name, c := range map[string]struct{ body, want string }{
		"unknown key": {"network:\n  capture:\n    enable: true\n", "enable"},
		"packets":     {"network:\n  capture:\n    packets: 0\n", "network.capture.packets"},
		"bytes":       {"network:\n  capture:\n    bytes: 100\n", "network.capture.bytes"},
		"snap":        {"network:\n  capture:\n    snap: 9000\n", "network.capture.snap"},
		"dns rate":    {"network:\n  capture:\n    dns_per_second: 0\n", "dns_per_second"},
		"hook":        {"network:\n  capture:\n    hook: xdp\n", "network.capture.hook"},
		"bad bool":    {"network:\n  capture:\n    enabled: maybe\n", "line 3"},
		"bool form":   {"network:\n  capture: false\n", "line 2"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Load(write(t, c.body))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want mention of %q", err, c.want)
			}
		})
	}
}
