package config

import (
	"strings"
	"testing"
	"time"
)

func TestLineageMetricsAndFsnotifyDefaults(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if !c.Lineage.Enabled || c.Lineage.TTL != time.Hour || len(c.Lineage.TagClasses) != 1 || c.Lineage.TagClasses[0] != "part2" {
		t.Errorf("lineage defaults %+v", c.Lineage)
	}
	if c.Telemetry.MetricsAddr != "" || c.Capture.ForceFsnotify {
		t.Errorf("metrics must be off and eBPF on by default: %+v %+v", c.Telemetry, c.Capture)
	}
}

func TestLineageMetricsValidation(t *testing.T) {
	for _, c := range []struct {
		mod  func(*Config)
		want string // "" for valid
	}{
		{func(c *Config) { c.Telemetry.MetricsAddr = "127.0.0.1:9464" }, ""},
		{func(c *Config) { c.Telemetry.MetricsAddr = "[::1]:9464" }, ""},
		{func(c *Config) { c.Telemetry.MetricsAddr = "localhost:9464" }, ""},
		{func(c *Config) { c.Telemetry.MetricsAddr = "0.0.0.0:9464" }, "not a loopback"},
		{func(c *Config) { c.Telemetry.MetricsAddr = "9464" }, "host:port"},
		{func(c *Config) { c.Lineage.TagClasses = []string{"part2", "pii"} }, "unknown class"},
		{func(c *Config) { c.Lineage.TTL = 0 }, "lineage.ttl"},
		{func(c *Config) { c.Lineage.MaxTagged = 1 }, "lineage.max_tagged"},
		{func(c *Config) { c.Lineage.MaxProcesses = 1 << 30 }, "lineage.max_processes"},
		{func(c *Config) { c.Lineage.EmitInterval = time.Nanosecond }, "lineage.emit_interval"},
		{func(c *Config) { c.Lineage.TagClasses = []string{"phi"}; c.Capture.ForceFsnotify = true }, ""},
	} {
		cfg := Default()
		c.mod(&cfg)
		err := cfg.Validate()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("unexpected error: %v", err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("error %v, want it to mention %q", err, c.want)
		}
	}
}
