// Package config is the agent's configuration: read once, validated, and handed to every
// stage as typed values so that no other package reads files or the environment itself.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"golang.org/x/mod/sumdb/note"
)

// Config is everything the agent can be told.
type Config struct {
	// Collector is the collector's gRPC address, host:port.
	Collector string `yaml:"collector"`
	// ServerName overrides the name checked in the collector's certificate (default: host of Collector).
	ServerName string `yaml:"server_name"`
	// StateDir holds the agent's identity and spool.
	StateDir string `yaml:"state_dir"`
	// Watch lists directories whose files are watched for writes, recursively.
	Watch []string `yaml:"watch"`
	// Capture bounds what the agent copies and classifies.
	Capture Capture `yaml:"capture"`
	// Spool bounds the on-disk queue that carries events through collector outages.
	Spool Spool `yaml:"spool"`
	// Telemetry chooses which routine (non-finding) events are shipped.
	Telemetry Telemetry `yaml:"telemetry"`
	// HealthInterval is how often the agent reports probe status and drop counters.
	HealthInterval time.Duration `yaml:"health_interval"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"log_level"`
	// Policy says which signed policy bundles the agent accepts and how it fetches them.
	Policy Policy `yaml:"policy"`
	// Network configures the network-flow sensor.
	Network Network `yaml:"network"`
	// Classifiers tunes detection: definition overrides and the organisation's indexes.
	Classifiers Classifiers `yaml:"classifiers"`
}

// Classifiers points the agent at an organisation's detector definitions and indexes.
// Each index is only usable with the key it was built with, so a path needs its key file.
type Classifiers struct {
	// Definitions is an override file for the built-in detector definitions.
	Definitions string `yaml:"definitions"`
	// Enable and Disable switch detectors on or off by id after the definitions apply.
	Enable  []string `yaml:"enable"`
	Disable []string `yaml:"disable"`
	// EDMIndex is a Part 2 patient index from `wardctl edm build`, with its key file.
	EDMIndex   string `yaml:"edm_index"`
	EDMKeyFile string `yaml:"edm_key_file"`
	// FingerprintIndex holds documents found labelled Part 2 at rest (`ward fingerprint
	// add`), with its key file.
	FingerprintIndex   string `yaml:"fingerprint_index"`
	FingerprintKeyFile string `yaml:"fingerprint_key_file"`
}

// Network configures the network-flow sensor (connects, TCP lifecycle, UDP sends).
type Network struct {
	// Enabled loads the flow probes and ships one NetworkFlow event per connection.
	Enabled bool `yaml:"enabled"`
	// FlowIdleTimeout ends a UDP flow without sends for this long and reports a TCP flow still
	// open after it (again every interval).
	FlowIdleTimeout time.Duration `yaml:"flow_idle_timeout"`
	// MaxFlows bounds the flows tracked at once; past it the least active is reported early.
	MaxFlows int `yaml:"max_flows"`
}

// Policy configures signed policy distribution. Without pinned keys the agent runs the
// built-in default pack and refuses every pushed bundle (and says so in its health events).
type Policy struct {
	// Keys are the pinned verifier keys (from `wardctl policy keygen`); a bundle must carry a
	// valid signature by one of them. Two keys allow rotation.
	Keys []string `yaml:"keys"`
	// Group is the target group bundles must be signed for.
	Group string `yaml:"group"`
	// PollInterval is how often the agent asks the collector for a newer bundle.
	PollInterval time.Duration `yaml:"poll_interval"`
	// HostTags are this host's tags, visible to rules as host.tags (e.g. clinical).
	HostTags []string `yaml:"host_tags"`
}

// Capture bounds the bytes the agent copies out of the kernel and holds per file.
type Capture struct {
	// MaxWriteBytes is how much of one write() the probe copies. Larger writes are re-read from disk.
	MaxWriteBytes uint32 `yaml:"max_write_bytes"`
	// MaxFileBytes is how much of one open file's written content is held for classification.
	MaxFileBytes int `yaml:"max_file_bytes"`
	// MaxRereadBytes bounds re-reading a file from disk when the capture was incomplete.
	MaxRereadBytes int64 `yaml:"max_reread_bytes"`
	// MaxBufferedBytes bounds all held content together, across files.
	MaxBufferedBytes int `yaml:"max_buffered_bytes"`
	// MaxOpenFiles bounds the number of watched descriptors tracked at once.
	MaxOpenFiles int `yaml:"max_open_files"`
	// IdleFlush classifies a still-open file whose writes have gone quiet for this long.
	IdleFlush time.Duration `yaml:"idle_flush"`
	// RingBytes is the size of each kernel ring buffer.
	RingBytes uint32 `yaml:"ring_bytes"`
}

// Spool bounds the on-disk queue.
type Spool struct {
	MaxBytes int64 `yaml:"max_bytes"`
}

// Telemetry selects routine events to ship besides findings and health.
type Telemetry struct {
	ProcessEvents bool `yaml:"process_events"`
	FileActivity  bool `yaml:"file_activity"`
}

// Default returns the configuration a fresh install runs with.
func Default() Config {
	return Config{
		StateDir: "/var/lib/ward/agent",
		Capture: Capture{
			MaxWriteBytes:    16 << 10,
			MaxFileBytes:     1 << 20,
			MaxRereadBytes:   16 << 20,
			MaxBufferedBytes: 64 << 20,
			MaxOpenFiles:     4096,
			IdleFlush:        2 * time.Second,
			RingBytes:        8 << 20,
		},
		Spool:          Spool{MaxBytes: 256 << 20},
		Telemetry:      Telemetry{ProcessEvents: false, FileActivity: true},
		HealthInterval: time.Minute,
		LogLevel:       "info",
		Policy:         Policy{Group: "default", PollInterval: time.Minute},
		Network:        Network{Enabled: true, FlowIdleTimeout: 2 * time.Minute, MaxFlows: 65536},
	}
}

// Load reads a YAML file over the defaults. Unknown keys are errors, because a misspelt
// key in a security agent's config silently meaning "default" is worse than refusing to start.
func Load(path string) (Config, error) {
	cfg := Default()
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("read agent config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	// An empty file decodes as io.EOF and means "all defaults".
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return cfg, fmt.Errorf("agent config %s: %w", path, err)
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("agent config %s: %w", path, err)
	}
	return cfg, nil
}

// Validate checks bounds and makes paths absolute.
func (c *Config) Validate() error {
	if c.StateDir == "" {
		return errors.New("state_dir is empty")
	}
	abs, err := filepath.Abs(c.StateDir)
	if err != nil {
		return fmt.Errorf("state_dir: %w", err)
	}
	c.StateDir = abs
	for i, w := range c.Watch {
		if w == "" {
			return fmt.Errorf("watch[%d] is empty", i)
		}
		a, err := filepath.Abs(w)
		if err != nil {
			return fmt.Errorf("watch[%d]: %w", i, err)
		}
		c.Watch[i] = filepath.Clean(a)
	}
	cp := c.Capture
	switch {
	case cp.MaxWriteBytes == 0 || cp.MaxWriteBytes > 32<<10:
		return fmt.Errorf("capture.max_write_bytes must be 1..32768, got %d", cp.MaxWriteBytes)
	case cp.MaxFileBytes <= 0:
		return fmt.Errorf("capture.max_file_bytes must be positive, got %d", cp.MaxFileBytes)
	case cp.MaxBufferedBytes < cp.MaxFileBytes:
		return fmt.Errorf("capture.max_buffered_bytes (%d) must be at least max_file_bytes (%d)", cp.MaxBufferedBytes, cp.MaxFileBytes)
	case cp.MaxRereadBytes < 0:
		return fmt.Errorf("capture.max_reread_bytes must not be negative")
	case cp.MaxOpenFiles <= 0:
		return fmt.Errorf("capture.max_open_files must be positive")
	case cp.IdleFlush <= 0:
		return fmt.Errorf("capture.idle_flush must be positive")
	case cp.RingBytes < 1<<16 || cp.RingBytes&(cp.RingBytes-1) != 0:
		return fmt.Errorf("capture.ring_bytes must be a power of two of at least 65536, got %d", cp.RingBytes)
	}
	if (c.Classifiers.EDMIndex == "") != (c.Classifiers.EDMKeyFile == "") {
		return errors.New("classifiers.edm_index and classifiers.edm_key_file go together")
	}
	if (c.Classifiers.FingerprintIndex == "") != (c.Classifiers.FingerprintKeyFile == "") {
		return errors.New("classifiers.fingerprint_index and classifiers.fingerprint_key_file go together")
	}
	if c.Spool.MaxBytes < 1<<20 {
		return fmt.Errorf("spool.max_bytes must be at least 1 MiB, got %d", c.Spool.MaxBytes)
	}
	if c.HealthInterval < time.Second {
		return fmt.Errorf("health_interval must be at least 1s, got %s", c.HealthInterval)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log_level must be debug, info, warn or error, got %q", c.LogLevel)
	}
	if n := c.Network; n.FlowIdleTimeout < time.Second || n.FlowIdleTimeout > 24*time.Hour {
		return fmt.Errorf("network.flow_idle_timeout must be 1s..24h, got %s", n.FlowIdleTimeout)
	} else if n.MaxFlows < 16 || n.MaxFlows > 1<<22 {
		return fmt.Errorf("network.max_flows must be 16..4194304, got %d", n.MaxFlows)
	}
	return c.Policy.validate()
}

func (p *Policy) validate() error {
	if p.Group == "" || len(p.Group) > 64 || strings.Trim(p.Group, "abcdefghijklmnopqrstuvwxyz0123456789-_.") != "" {
		return fmt.Errorf("policy.group must be 1-64 of a-z, 0-9, '-', '_' and '.', got %q", p.Group)
	}
	if p.PollInterval < time.Second || p.PollInterval > 24*time.Hour {
		return fmt.Errorf("policy.poll_interval must be 1s..24h, got %s", p.PollInterval)
	}
	if len(p.Keys) > 8 {
		return fmt.Errorf("policy.keys: at most 8 pinned keys, got %d", len(p.Keys))
	}
	for i, k := range p.Keys {
		if _, err := note.NewVerifier(strings.TrimSpace(k)); err != nil {
			return fmt.Errorf("policy.keys[%d]: want a verifier key like name+1a2b3c4d+BASE64 (wardctl policy keygen prints it): %w", i, err)
		}
	}
	if len(p.HostTags) > 32 {
		return fmt.Errorf("policy.host_tags: at most 32 tags, got %d", len(p.HostTags))
	}
	return nil
}
