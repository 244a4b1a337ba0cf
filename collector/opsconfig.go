package collector

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/ward-dlp/ward/collector/fleet"
	"github.com/ward-dlp/ward/collector/ingest"
	"github.com/ward-dlp/ward/collector/retention"
	"github.com/ward-dlp/ward/collector/store"
)

// IngestConfig bounds what agents can make the collector hold and do (docs/operations.md,
// "Backpressure and rate limits"). Zero fields take ingest's defaults.
type IngestConfig struct {
	// MaxInflightEvents and MaxInflightBytes bound Export batches accepted but not yet
	// committed, over all agents; more is pushed back with RESOURCE_EXHAUSTED + RetryInfo.
	MaxInflightEvents int   `yaml:"max_inflight_events"`
	MaxInflightBytes  int64 `yaml:"max_inflight_bytes"`
	// CommitLatencyThreshold pushes back while commits are slower than this on average;
	// a negative value disables the signal.
	CommitLatencyThreshold time.Duration `yaml:"commit_latency_threshold"`
	// OutboxDepthThreshold pushes back while more deliveries than this wait for the sinks;
	// 0 (the default) disables the signal.
	OutboxDepthThreshold int64 `yaml:"outbox_depth_threshold"`
	// AgentEventsPerSecond and AgentBurst are each agent's token bucket; a negative rate
	// disables per-agent limits.
	AgentEventsPerSecond float64 `yaml:"agent_events_per_second"`
	AgentBurst           int     `yaml:"agent_burst"`
	// RetryBase and RetryMax bound the delay agents are told to wait.
	RetryBase time.Duration `yaml:"retry_base"`
	RetryMax  time.Duration `yaml:"retry_max"`
}

// FleetConfig configures agent-silence alerts.
type FleetConfig struct {
	// SilentAfter is how long an agent that was reporting may go without contact before an
	// AGENT_SILENT alert (default 15m, minimum 1m).
	SilentAfter time.Duration `yaml:"silent_after"`
	// CheckInterval is how often agents are checked (default silent_after/5, at most 1m).
	CheckInterval time.Duration `yaml:"check_interval"`
}

// RetentionConfig bounds the events kept (docs/operations.md, "Retention").
type RetentionConfig struct {
	// MaxAge deletes events received longer ago; 0 keeps them regardless of age.
	MaxAge time.Duration `yaml:"max_age"`
	// MaxBytes deletes the oldest events while the database holds more; 0: no size limit.
	MaxBytes int64 `yaml:"max_bytes"`
	// HardMaxBytes is the size above which events still queued for a sink are deleted too
	// (counted and logged as dropped); 0: never delete queued events.
	HardMaxBytes int64 `yaml:"hard_max_bytes"`
	// Interval is the time between retention runs (default 10m).
	Interval time.Duration `yaml:"interval"`
}

// EvidenceConfig turns on encryption of stored events (docs/operations.md, "Evidence
// encryption"). The key ring comes from KeyFile or from the WARD_COLLECTOR_EVIDENCE_KEY
// environment variable, not both.
type EvidenceConfig struct {
	// KeyFile holds base64 AES-256 keys, one per line, the last one current; mode 0600.
	KeyFile string `yaml:"key_file"`
}

// validateOps checks the ingest, fleet, retention and evidence sections.
func (c Config) validateOps() error {
	in := c.Ingest
	switch {
	case in.MaxInflightEvents < 0 || in.MaxInflightBytes < 0 || in.OutboxDepthThreshold < 0 || in.AgentBurst < 0:
		return errors.New("ingest: limits must not be negative")
	case in.RetryBase < 0 || in.RetryMax < 0:
		return errors.New("ingest: retry_base and retry_max must not be negative")
	case in.RetryBase > 0 && in.RetryMax > 0 && in.RetryMax < in.RetryBase:
		return fmt.Errorf("ingest: retry_max %s is below retry_base %s", in.RetryMax, in.RetryBase)
	case in.RetryMax > 5*time.Minute:
		return fmt.Errorf("ingest: retry_max %s: agents wait at most 5m whatever they are told", in.RetryMax)
	case in.AgentEventsPerSecond > 0 && in.AgentBurst > 0 && c.MaxBatchEvents > 0 && in.AgentBurst < c.MaxBatchEvents:
		return fmt.Errorf("ingest: agent_burst %d is below max_batch_events %d; a full batch could never pass", in.AgentBurst, c.MaxBatchEvents)
	case in.MaxInflightBytes > 0 && c.MaxMessageBytes > 0 && in.MaxInflightBytes < int64(c.MaxMessageBytes):
		return fmt.Errorf("ingest: max_inflight_bytes %d is below max_message_bytes %d", in.MaxInflightBytes, c.MaxMessageBytes)
	}
	if c.Fleet.SilentAfter != 0 && c.Fleet.SilentAfter < fleet.MinSilentAfter {
		return fmt.Errorf("fleet: silent_after %s is shorter than %s", c.Fleet.SilentAfter, fleet.MinSilentAfter)
	}
	if c.Fleet.CheckInterval < 0 {
		return errors.New("fleet: check_interval must not be negative")
	}
	r := c.Retention
	switch {
	case r.MaxAge < 0 || r.MaxBytes < 0 || r.HardMaxBytes < 0 || r.Interval < 0:
		return errors.New("retention: values must not be negative")
	case r.MaxAge > 0 && r.MaxAge < time.Hour:
		return fmt.Errorf("retention: max_age %s is shorter than 1h", r.MaxAge)
	case r.MaxBytes > 0 && r.MaxBytes < 16<<20:
		return fmt.Errorf("retention: max_bytes %d is below 16 MiB", r.MaxBytes)
	case r.HardMaxBytes > 0 && r.MaxBytes == 0:
		return errors.New("retention: hard_max_bytes needs max_bytes")
	case r.HardMaxBytes > 0 && r.HardMaxBytes <= r.MaxBytes:
		return fmt.Errorf("retention: hard_max_bytes %d must be above max_bytes %d", r.HardMaxBytes, r.MaxBytes)
	}
	return nil
}

func (c Config) ingestLimits() ingest.Limits {
	in := c.Ingest
	return ingest.Limits{
		MaxBatchEvents: c.MaxBatchEvents, MaxMessageBytes: c.MaxMessageBytes, MaxEventBytes: c.MaxEventBytes,
		MaxInflightEvents: in.MaxInflightEvents, MaxInflightBytes: in.MaxInflightBytes,
		CommitLatencyThreshold: in.CommitLatencyThreshold, OutboxDepthThreshold: in.OutboxDepthThreshold,
		AgentEventsPerSecond: in.AgentEventsPerSecond, AgentBurst: in.AgentBurst,
		RetryBase: in.RetryBase, RetryMax: in.RetryMax,
	}
}

func (c Config) retentionConfig() retention.Config {
	r := c.Retention
	return retention.Config{MaxAge: r.MaxAge, MaxBytes: r.MaxBytes, HardMaxBytes: r.HardMaxBytes, Interval: r.Interval}
}

// evidenceKeys loads the evidence key ring: from the key file, from the environment, or
// none (events stored in clear).
func (c Config) evidenceKeys() (*store.EvidenceKeys, string, error) {
	env := os.Getenv(store.EvidenceKeyEnv)
	switch {
	case c.EvidenceEncryption.KeyFile != "" && env != "":
		return nil, "", fmt.Errorf("evidence_encryption: both key_file and %s are set; use one", store.EvidenceKeyEnv)
	case c.EvidenceEncryption.KeyFile != "":
		k, err := store.LoadEvidenceKeys(c.EvidenceEncryption.KeyFile)
		return k, "key_file", err
	case env != "":
		k, err := store.ParseEvidenceKeys(env)
		if err != nil {
			return nil, "", fmt.Errorf("%s: %w", store.EvidenceKeyEnv, err)
		}
		return k, "environment", nil
	}
	return nil, "", nil
}
