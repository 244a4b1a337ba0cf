// Package sinks delivers stored events to SIEMs and log pipelines. Every sink runs over the
// same durable outbox in the collector store (store/outbox.go): an event is queued for each
// interested sink in the transaction that stores it, and leaves a sink's queue only once the
// destination confirmed it, or refused it for good (dead-letter table). Formats live in one
// folder each: syslog (RFC 5424 over TLS, RFC 5425 framing, CEF or JSON), hec (Splunk HTTP
// Event Collector with indexer acknowledgement), elastic (_bulk, ECS), file (rotated OCSF
// JSON lines), webhook (signed JSON POST), kafka (idempotent, acks=all, keyed by agent) and
// sentinel (Azure Monitor Logs Ingestion API). Besides events, every sink receives the
// collector's signed audit-log checkpoints (collector/audit), so the SIEM keeps a copy.
// All of them serialise only core.View, the allow-list of what may leave the collector.
package sinks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"sync"
	"time"

	"github.com/ward-dlp/ward/collector/sinks/core"
	"github.com/ward-dlp/ward/collector/sinks/elastic"
	"github.com/ward-dlp/ward/collector/sinks/file"
	"github.com/ward-dlp/ward/collector/sinks/hec"
	"github.com/ward-dlp/ward/collector/sinks/kafka"
	"github.com/ward-dlp/ward/collector/sinks/ocsf"
	"github.com/ward-dlp/ward/collector/sinks/sentinel"
	"github.com/ward-dlp/ward/collector/sinks/syslog"
	"github.com/ward-dlp/ward/collector/sinks/webhook"
	"github.com/ward-dlp/ward/collector/store"
)

// Sink types.
const (
	TypeSyslog   = "syslog"
	TypeHEC      = "hec"
	TypeElastic  = "elastic"
	TypeFile     = "file"
	TypeWebhook  = "webhook"
	TypeKafka    = "kafka"
	TypeSentinel = "sentinel"
)

// Config is one entry of the collector's `sinks:` list.
type Config struct {
	// Name identifies the sink in the outbox, metrics and logs; [a-z0-9_-], unique. Renaming
	// a sink starts a new queue (the old one is reported as orphaned at start).
	Name string `yaml:"name"`
	Type string `yaml:"type"`
	// Kinds selects event kinds (finding, file, process, health); default [finding].
	Kinds []string `yaml:"kinds"`
	// MinSeverity drops weaker findings (info, low, medium, high, critical); default none.
	MinSeverity string `yaml:"min_severity"`
	// OCSFVersion is the metadata.version OCSF events claim; default 1.8.0.
	OCSFVersion string `yaml:"ocsf_version"`
	// DeviceTypeID is OCSF device.type_id: 2 Desktop (default), 3 Laptop, 1 Server.
	DeviceTypeID int `yaml:"device_type_id"`

	Batch BatchConfig `yaml:"batch"`
	Retry RetryConfig `yaml:"retry"`

	Syslog   *syslog.Config   `yaml:"syslog"`
	HEC      *hec.Config      `yaml:"hec"`
	Elastic  *elastic.Config  `yaml:"elastic"`
	File     *file.Config     `yaml:"file"`
	Webhook  *webhook.Config  `yaml:"webhook"`
	Kafka    *kafka.Config    `yaml:"kafka"`
	Sentinel *sentinel.Config `yaml:"sentinel"`
}

// BatchConfig bounds one delivery: at most MaxEvents events and MaxBytes of stored event
// bytes, sent once full or once the oldest waiting event has waited MaxWait.
type BatchConfig struct {
	MaxEvents int           `yaml:"max_events"`
	MaxBytes  int           `yaml:"max_bytes"`
	MaxWait   time.Duration `yaml:"max_wait"`
}

// RetryConfig shapes the exponential backoff (full jitter) after a transient failure.
// Transient failures are retried without limit: the queue is on disk and is meant to
// outlast a SIEM outage.
type RetryConfig struct {
	Initial time.Duration `yaml:"initial"`
	Max     time.Duration `yaml:"max"`
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

// withDefaults fills zero fields.
func (c Config) withDefaults() Config {
	if len(c.Kinds) == 0 {
		c.Kinds = []string{store.KindFinding}
	}
	if c.Batch.MaxEvents == 0 {
		c.Batch.MaxEvents = 500
	}
	if c.Batch.MaxBytes == 0 {
		c.Batch.MaxBytes = 1 << 20
	}
	if c.Batch.MaxWait == 0 {
		c.Batch.MaxWait = time.Second
	}
	if c.Retry.Initial == 0 {
		c.Retry.Initial = time.Second
	}
	if c.Retry.Max == 0 {
		c.Retry.Max = 5 * time.Minute
	}
	if c.OCSFVersion == "" {
		c.OCSFVersion = ocsf.DefaultVersion
	}
	return c
}

// Validate checks one sink entry.
func (c Config) Validate() error {
	if !nameRE.MatchString(c.Name) {
		return fmt.Errorf("sink name %q: want 1-64 of [a-z0-9_-], starting with a letter or digit", c.Name)
	}
	c = c.withDefaults()
	for _, k := range c.Kinds {
		if !slices.Contains(store.AllKinds, k) {
			return fmt.Errorf("sink %s: kinds: unknown kind %q (want %v)", c.Name, k, store.AllKinds)
		}
	}
	if c.MinSeverity != "" {
		if _, ok := core.ParseSeverity(c.MinSeverity); !ok {
			return fmt.Errorf("sink %s: min_severity %q: want info, low, medium, high or critical", c.Name, c.MinSeverity)
		}
	}
	switch {
	case c.Batch.MaxEvents < 0 || c.Batch.MaxBytes < 0 || c.Batch.MaxWait < 0:
		return fmt.Errorf("sink %s: batch limits must not be negative", c.Name)
	case c.Batch.MaxEvents > 10000:
		return fmt.Errorf("sink %s: batch.max_events %d is above 10000", c.Name, c.Batch.MaxEvents)
	case c.Retry.Initial < 0 || c.Retry.Max < c.Retry.Initial:
		return fmt.Errorf("sink %s: retry: want 0 <= initial <= max", c.Name)
	case c.DeviceTypeID < 0:
		return fmt.Errorf("sink %s: device_type_id must not be negative", c.Name)
	}
	blocks := map[string]bool{
		TypeSyslog: c.Syslog != nil, TypeHEC: c.HEC != nil, TypeElastic: c.Elastic != nil,
		TypeFile: c.File != nil, TypeWebhook: c.Webhook != nil, TypeKafka: c.Kafka != nil,
		TypeSentinel: c.Sentinel != nil,
	}
	if _, known := blocks[c.Type]; !known {
		return fmt.Errorf("sink %s: type %q: want one of syslog, hec, elastic, file, webhook, kafka, sentinel", c.Name, c.Type)
	}
	for t, set := range blocks {
		if set && t != c.Type {
			return fmt.Errorf("sink %s: a %s block is set but the type is %s", c.Name, t, c.Type)
		}
	}
	if !blocks[c.Type] {
		return fmt.Errorf("sink %s: type %s needs a %s: block with its settings", c.Name, c.Type, c.Type)
	}
	var err error
	switch c.Type {
	case TypeSyslog:
		err = c.Syslog.Validate()
	case TypeHEC:
		err = c.HEC.Validate()
	case TypeElastic:
		err = c.Elastic.Validate()
	case TypeFile:
		err = c.File.Validate()
	case TypeWebhook:
		err = c.Webhook.Validate()
	case TypeKafka:
		err = c.Kafka.Validate()
	case TypeSentinel:
		err = c.Sentinel.Validate()
	}
	if err != nil {
		return fmt.Errorf("sink %s (%s): %w", c.Name, c.Type, err)
	}
	return nil
}

// ValidateAll checks a sink list, including name uniqueness.
func ValidateAll(cfgs []Config) error {
	seen := map[string]bool{}
	for i, c := range cfgs {
		if err := c.Validate(); err != nil {
			return fmt.Errorf("sinks[%d]: %w", i, err)
		}
		if seen[c.Name] {
			return fmt.Errorf("sinks[%d]: name %q is used twice", i, c.Name)
		}
		seen[c.Name] = true
	}
	return nil
}

// Options are what Start needs besides the sink list.
type Options struct {
	// Version is the collector's build version, reported in event metadata.
	Version string
	Metrics *Metrics
	Log     *slog.Logger
}

// Manager runs one dispatcher per configured sink.
type Manager struct {
	wg    sync.WaitGroup
	sinks []core.Sink
	errMu sync.Mutex
	err   error
}

// Route writes the routing table for cfgs so that events stored from now on are queued for
// them. It must run before ingest accepts events, and runs even with no sinks, to clear
// routes of sinks that were removed.
func Route(ctx context.Context, st *store.Store, cfgs []Config) error {
	routes := make([]store.OutboxRoute, 0, len(cfgs))
	for _, c := range cfgs {
		c = c.withDefaults()
		sev, _ := core.ParseSeverity(c.MinSeverity)
		routes = append(routes, store.OutboxRoute{Sink: c.Name, Kinds: c.Kinds, MinSeverity: sev})
	}
	return st.SetOutboxRoutes(ctx, routes)
}

// Start validates and builds every sink, routes events to them and starts their
// dispatchers, which run until ctx ends; Wait then returns.
func Start(ctx context.Context, st *store.Store, cfgs []Config, o Options) (*Manager, error) {
	if err := ValidateAll(cfgs); err != nil {
		return nil, err
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		m, err := NewMetrics(nil)
		if err != nil {
			return nil, err
		}
		o.Metrics = m
	}
	m := &Manager{}
	hostname, _ := os.Hostname()
	var ds []*dispatcher
	var names []string
	for _, c := range cfgs {
		c = c.withDefaults()
		log := o.Log.With("sink", c.Name, "type", c.Type)
		s, err := build(c, o.Version, log)
		if err != nil {
			_ = m.close()
			return nil, fmt.Errorf("sink %s: %w", c.Name, err)
		}
		m.sinks = append(m.sinks, s)
		names = append(names, c.Name)
		ds = append(ds, &dispatcher{name: c.Name, sink: s, store: st, batch: c.Batch, retry: c.Retry,
			metrics: o.Metrics, log: log, now: time.Now, hostname: hostname})
	}
	if err := Route(ctx, st, cfgs); err != nil {
		_ = m.close()
		return nil, fmt.Errorf("sinks: %w", err)
	}
	orphans, err := st.OrphanedOutbox(ctx, names)
	if err != nil {
		_ = m.close()
		return nil, fmt.Errorf("sinks: %w", err)
	}
	for name, n := range orphans {
		o.Log.Warn("outbox holds events for a sink that is no longer configured; they are kept, not delivered",
			"sink", name, "events", n)
	}
	for _, d := range ds {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			if err := d.run(ctx); err != nil {
				d.log.Error("sink dispatcher stopped", "err", err)
				m.errMu.Lock()
				m.err = errors.Join(m.err, fmt.Errorf("sink %s: %w", d.name, err))
				m.errMu.Unlock()
			}
		}()
	}
	return m, nil
}

// Wait blocks until every dispatcher has stopped (ctx given to Start ended), closes the
// sinks and returns what went wrong.
func (m *Manager) Wait() error {
	m.wg.Wait()
	err := m.close()
	m.errMu.Lock()
	defer m.errMu.Unlock()
	return errors.Join(m.err, err)
}

func (m *Manager) close() error {
	var errs []error
	for _, s := range m.sinks {
		if err := s.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	m.sinks = nil
	return errors.Join(errs...)
}

func build(c Config, version string, log *slog.Logger) (core.Sink, error) {
	o := ocsf.Options{Version: c.OCSFVersion, ProductVersion: version, DeviceTypeID: c.DeviceTypeID}
	switch c.Type {
	case TypeSyslog:
		return syslog.New(*c.Syslog, o, log)
	case TypeHEC:
		return hec.New(*c.HEC, o, log)
	case TypeElastic:
		return elastic.New(*c.Elastic, version, log)
	case TypeFile:
		return file.New(*c.File, o, log)
	case TypeWebhook:
		return webhook.New(*c.Webhook, o, log)
	case TypeKafka:
		return kafka.New(*c.Kafka, o, log)
	case TypeSentinel:
		return sentinel.New(*c.Sentinel, log)
	}
	return nil, fmt.Errorf("unknown sink type %q", c.Type)
}
