// Package kafka produces events to a Kafka topic, the common bus SIEM pipelines (Splunk
// Connect for Kafka, Elastic, Vector, Fluent Bit, rsyslog omkafka) consume from. The
// producer is idempotent with acks=all (franz-go's defaults, pinned here), records are keyed
// by agent id so one agent's events stay in order on one partition, and a batch counts as
// delivered only when every record is acknowledged by all in-sync replicas.
package kafka

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ward-dlp/ward/collector/sinks/core"
	"github.com/ward-dlp/ward/collector/sinks/ocsf"
)

// Config is the kafka sink's block.
type Config struct {
	Brokers []string `yaml:"brokers"`
	Topic   string   `yaml:"topic"`
	Format  string   `yaml:"format"`
	// Timeout bounds one batch, franz-go's internal retries included; default 30s.
	Timeout time.Duration `yaml:"timeout"`
	// TLS is used when set (any field); brokers are then dialled over TLS.
	TLS *core.TLSConfig `yaml:"tls"`
}

// Validate checks the block.
func (c *Config) Validate() error {
	if len(c.Brokers) == 0 {
		return errors.New("brokers: at least one host:port")
	}
	for _, b := range c.Brokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			return fmt.Errorf("brokers: %q: want host:port", b)
		}
	}
	if c.Topic == "" || len(c.Topic) > 249 || strings.Trim(c.Topic, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != "" {
		return fmt.Errorf("topic %q: want 1-249 of [a-zA-Z0-9._-]", c.Topic)
	}
	if c.Timeout < 0 {
		return errors.New("timeout must not be negative")
	}
	if c.TLS != nil {
		if err := c.TLS.Validate(); err != nil {
			return err
		}
	}
	return ocsf.CheckFormat(c.Format)
}

// Sink is the kafka sink.
type Sink struct {
	cfg    Config
	o      ocsf.Options
	client *kgo.Client
}

// New builds the producer; it connects lazily.
func New(cfg Config, o ocsf.Options, log *slog.Logger) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Format == "" {
		cfg.Format = ocsf.FormatOCSF
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.DefaultProduceTopic(cfg.Topic),
		kgo.RequiredAcks(kgo.AllISRAcks()), // acks=all; idempotent writes stay enabled
		kgo.RecordDeliveryTimeout(cfg.Timeout),
		kgo.ProducerLinger(0),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)), // same agent id → same partition
		kgo.WithLogger(kgoLogger{log}),
	}
	if cfg.TLS != nil {
		tc, err := cfg.TLS.Build()
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka: %w", err)
	}
	return &Sink{cfg: cfg, o: o, client: cl}, nil
}

// Deliver produces the batch and waits for every acknowledgement.
func (s *Sink) Deliver(ctx context.Context, items []core.Item) error {
	failed := map[int]error{}
	var recs []*kgo.Record
	var idx []int
	for i, it := range items {
		v, err := ocsf.Payload(s.cfg.Format, it, s.o)
		if err != nil {
			failed[i] = err
			continue
		}
		b, err := json.Marshal(v)
		if err != nil {
			failed[i] = core.Permanent(fmt.Errorf("kafka: encode: %w", err))
			continue
		}
		recs = append(recs, &kgo.Record{
			// No Timestamp: franz-go measures the delivery timeout from it, and old events
			// (a drained backlog) would time out at once. The event time is in the value.
			Key: []byte(it.Event.GetAgentId()), Value: b,
			Headers: []kgo.RecordHeader{
				{Key: "ward-event-id", Value: []byte(it.Event.GetId())},
				{Key: "ward-kind", Value: []byte(core.NewView(it).Kind)},
			},
		})
		idx = append(idx, i)
	}
	if len(recs) > 0 {
		pctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout+5*time.Second)
		defer cancel()
		for j, r := range s.client.ProduceSync(pctx, recs...) {
			if r.Err != nil {
				failed[idx[j]] = classify(r.Err)
			}
		}
	}
	if len(failed) > 0 {
		return &core.BatchError{Failed: failed}
	}
	return nil
}

// classify: records the cluster can never take (too large, invalid, not authorised, no such
// topic without auto-creation) are permanent; everything else, including franz-go giving up
// on retriable errors at the delivery timeout, is retried.
func classify(err error) error {
	switch {
	case errors.Is(err, kerr.MessageTooLarge), errors.Is(err, kerr.RecordListTooLarge),
		errors.Is(err, kerr.InvalidRecord), errors.Is(err, kerr.CorruptMessage),
		errors.Is(err, kerr.TopicAuthorizationFailed), errors.Is(err, kerr.ClusterAuthorizationFailed),
		errors.Is(err, kerr.InvalidTopicException):
		return core.Permanent(fmt.Errorf("kafka: %w", err))
	}
	return core.Retry(fmt.Errorf("kafka: %w", err), 0)
}

// Close flushes nothing (Deliver is synchronous) and closes the client.
func (s *Sink) Close() error {
	s.client.Close()
	return nil
}

// kgoLogger routes franz-go's logs to slog at warn and above.
type kgoLogger struct{ log *slog.Logger }

func (l kgoLogger) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (l kgoLogger) Log(level kgo.LogLevel, msg string, kv ...any) {
	if l.log == nil {
		return
	}
	switch level {
	case kgo.LogLevelError:
		l.log.Error("kafka: "+msg, kv...)
	default:
		l.log.Warn("kafka: "+msg, kv...)
	}
}
