// Package collector wires the collector together: the CA, the store, the agent-facing gRPC
// listener and the local admin API.
package collector

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/ward-dlp/ward/collector/console"
	"github.com/ward-dlp/ward/collector/sinks"
)

// Config is the collector's configuration. Zero fields take the defaults of Defaults.
type Config struct {
	// Home is Ward's state root; the collector keeps its state in Home/collector.
	Home string `yaml:"home"`
	// Listen is the agent-facing gRPC/TLS address.
	Listen string `yaml:"listen"`
	// AdminSocket is the admin API's unix socket; default Home/collector/admin.sock.
	AdminSocket string `yaml:"admin_socket"`
	// ExtraSANs are added to the server certificate: the names and addresses agents dial.
	ExtraSANs []string `yaml:"extra_sans"`
	// TokenTTL is the default lifetime of enrolment tokens.
	TokenTTL time.Duration `yaml:"token_ttl"`
	// CertTTL is the lifetime of agent client certificates.
	CertTTL time.Duration `yaml:"cert_ttl"`
	// ServerCertTTL is the lifetime of the collector's own TLS certificate.
	ServerCertTTL time.Duration `yaml:"server_cert_ttl"`
	// MaxBatchEvents, MaxMessageBytes and MaxEventBytes bound one Export call.
	MaxBatchEvents  int `yaml:"max_batch_events"`
	MaxMessageBytes int `yaml:"max_message_bytes"`
	MaxEventBytes   int `yaml:"max_event_bytes"`
	// ShutdownTimeout is how long in-flight calls get to finish on shutdown.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// Sinks are the SIEM destinations events are delivered to (docs/siem.md).
	Sinks []sinks.Config `yaml:"sinks"`
	// MetricsListen is a loopback host:port serving Prometheus metrics at /metrics; empty
	// (the default) serves none.
	MetricsListen string `yaml:"metrics_listen"`
	// Audit shapes the tamper-evident audit log's checkpoints (docs/siem.md).
	Audit AuditConfig `yaml:"audit"`
	// Console is the web console over HTTPS (docs/console.md); disabled without a listen
	// address.
	Console console.Config `yaml:"console"`

	// Ingest bounds in-flight work and per-agent rates (opsconfig.go).
	Ingest IngestConfig `yaml:"ingest"`
	// Fleet configures agent-silence alerts.
	Fleet FleetConfig `yaml:"fleet"`
	// Retention bounds stored events by age and database size.
	Retention RetentionConfig `yaml:"retention"`
	// EvidenceEncryption encrypts stored events at rest.
	EvidenceEncryption EvidenceConfig `yaml:"evidence_encryption"`
	// Store chooses SQLite (default) or a PostgreSQL database shared by replicas.
	Store StoreConfig `yaml:"store"`

	// Version is the build version, reported by the health endpoint; not configurable.
	Version string `yaml:"-"`
}

// Defaults returns the default configuration for home.
func Defaults(home string) Config {
	return Config{
		Home:            home,
		Listen:          "127.0.0.1:7443",
		TokenTTL:        time.Hour,
		CertTTL:         30 * 24 * time.Hour,
		ServerCertTTL:   90 * 24 * time.Hour,
		MaxBatchEvents:  1000,
		MaxMessageBytes: 4 << 20,
		MaxEventBytes:   256 << 10,
		ShutdownTimeout: 10 * time.Second,
	}
}

// LoadFile overlays the YAML file at path onto cfg. Unknown keys are errors (a misspelt key
// must not silently fall back to a default), and every error names the file.
func LoadFile(path string, cfg Config) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Validate checks values that would otherwise fail late or obscurely.
func (c Config) Validate() error {
	switch {
	case c.Home == "":
		return errors.New("home: must be set")
	case c.Listen == "":
		return errors.New("listen: must be set")
	case c.TokenTTL < 0 || c.CertTTL < 0 || c.ServerCertTTL < 0 || c.ShutdownTimeout < 0:
		return errors.New("durations must not be negative")
	case c.CertTTL > 0 && c.CertTTL < time.Hour:
		return fmt.Errorf("cert_ttl: %s is too short for agents to renew in time (minimum 1h)", c.CertTTL)
	case c.MaxBatchEvents < 0 || c.MaxMessageBytes < 0 || c.MaxEventBytes < 0:
		return errors.New("limits must not be negative")
	case c.Audit.CheckpointEvery < 0 || c.Audit.CheckpointInterval < 0:
		return errors.New("audit: checkpoint_every and checkpoint_interval must not be negative")
	}
	if c.MetricsListen != "" {
		if err := checkLoopback(c.MetricsListen); err != nil {
			return fmt.Errorf("metrics_listen: %w", err)
		}
	}
	if err := c.Console.Validate(); err != nil {
		return err
	}
	if err := c.validateOps(); err != nil {
		return err
	}
	if err := c.Store.validate(); err != nil {
		return err
	}
	return sinks.ValidateAll(c.Sinks)
}

// AuditConfig says how often the audit log's tree head is signed and sent to the SIEM.
type AuditConfig struct {
	// CheckpointEvery signs a checkpoint after this many new records; default 100.
	CheckpointEvery int64 `yaml:"checkpoint_every"`
	// CheckpointInterval signs one this often when records were added; default 5m.
	CheckpointInterval time.Duration `yaml:"checkpoint_interval"`
}

// checkLoopback requires addr to be host:port on a loopback address: metrics name sinks and
// queue sizes, which are not for the network.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: want host:port: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%q: must be a loopback address (127.0.0.1, ::1 or localhost)", addr)
	}
	return nil
}

// StateDir is where the collector keeps its database and PKI.
func (c Config) StateDir() string { return filepath.Join(c.Home, "collector") }

// AdminSocketPath is the admin API socket, defaulted from Home.
func (c Config) AdminSocketPath() string {
	if c.AdminSocket != "" {
		return c.AdminSocket
	}
	return DefaultAdminSocket(c.Home)
}

// DefaultAdminSocket is where wardctl looks for the socket given a home.
func DefaultAdminSocket(home string) string {
	return filepath.Join(home, "collector", "admin.sock")
}
