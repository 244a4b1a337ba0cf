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
