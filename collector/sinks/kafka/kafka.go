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
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

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

// headerEventID carries the event id on every record: what consumers deduplicate on, and
// what an in-doubt check looks for.
const headerEventID = "ward-event-id"

// Sink is the kafka sink.
type Sink struct {
	cfg    Config
	o      ocsf.Options
	client *kgo.Client
	dial   []kgo.Opt // brokers and TLS, for the short-lived in-doubt readers
	log    *slog.Logger
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
	dial := []kgo.Opt{kgo.SeedBrokers(cfg.Brokers...), kgo.WithLogger(kgoLogger{log})}
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
		dial = append(dial, kgo.DialTLSConfig(tc))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Sink{cfg: cfg, o: o, client: cl, dial: dial, log: log}, nil
}

// Deliver produces the batch and waits for every acknowledgement.
func (s *Sink) Deliver(ctx context.Context, items []core.Item) error {
	already, err := s.inDoubt(ctx, items)
	if err != nil {
		return core.Retry(err, 0)
	}
	failed := map[int]error{}
	var recs []*kgo.Record
	var idx []int
	for i, it := range items {
		if already[it.EventID()] {
			continue // produced by an earlier attempt (a collector that died); not again
		}
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
			Key: []byte(it.OrderKey()), Value: b,
			Headers: []kgo.RecordHeader{
				{Key: headerEventID, Value: []byte(it.EventID())},
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

// inDoubt returns the ids of items that an earlier, unacknowledged attempt already
// produced. A collector that dies between the cluster's acknowledgement and the outbox ack
// leaves its batch "in doubt" (store.OutboxItem.InDoubtSince); whoever delivers it next
// reads the topic from the start of that attempt (less a minute for clock skew between
// replicas) to the current end, by record timestamp, and skips what it finds, so a takeover
// does not produce a second copy. Items not in doubt cost nothing.
func (s *Sink) inDoubt(ctx context.Context, items []core.Item) (map[string]bool, error) {
	want := map[string]bool{}
	var since time.Time
	for _, it := range items {
		if it.InDoubtSince.IsZero() {
			continue
		}
		want[it.EventID()] = true
		if since.IsZero() || it.InDoubtSince.Before(since) {
			since = it.InDoubtSince
		}
	}
	if len(want) == 0 {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	parts, err := s.partitions(ctx)
	if err != nil {
		return nil, fmt.Errorf("kafka: check in-doubt records: %w", err)
	}
	ends, err := s.listOffsets(ctx, parts, -1)
	if err != nil {
		return nil, fmt.Errorf("kafka: check in-doubt records: end offsets: %w", err)
	}
	starts, err := s.listOffsets(ctx, parts, since.Add(-time.Minute).UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("kafka: check in-doubt records: offsets by time: %w", err)
	}
	from := map[int32]kgo.Offset{}
	for _, p := range parts {
		if st, ok := starts[p]; ok && st >= 0 && st < ends[p] {
			from[p] = kgo.NewOffset().At(st)
		}
	}
	found := map[string]bool{}
	if len(from) == 0 {
		return found, nil
	}
	opts := append(slices.Clone(s.dial), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{s.cfg.Topic: from}))
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka: check in-doubt records: %w", err)
	}
	defer cl.Close()
	for len(from) > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("kafka: check in-doubt records: %w", err)
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = err })
		if ferr != nil {
			return nil, fmt.Errorf("kafka: check in-doubt records: %w", ferr)
		}
		fs.EachRecord(func(r *kgo.Record) {
			for _, h := range r.Headers {
				if h.Key == headerEventID && want[string(h.Value)] {
					found[string(h.Value)] = true
				}
			}
			if r.Offset+1 >= ends[r.Partition] {
				delete(from, r.Partition)
			}
		})
	}
	s.log.Info("kafka: resolved in-doubt batch", "in_doubt", len(want), "already_produced", len(found), "since", since)
	return found, nil
}

func (s *Sink) partitions(ctx context.Context) ([]int32, error) {
	req := kmsg.NewPtrMetadataRequest()
	t := kmsg.NewMetadataRequestTopic()
	t.Topic = kmsg.StringPtr(s.cfg.Topic)
	req.Topics = append(req.Topics, t)
	resp, err := req.RequestWith(ctx, s.client)
	if err != nil {
		return nil, err
	}
	var out []int32
	for _, rt := range resp.Topics {
		if err := kerr.ErrorForCode(rt.ErrorCode); err != nil {
			return nil, err
		}
		for _, p := range rt.Partitions {
			out = append(out, p.Partition)
		}
	}
	return out, nil
}

// listOffsets asks each partition leader for the offset of the first record at or after ts
// (milliseconds), or for the end with ts -1; -1 in the answer means none.
func (s *Sink) listOffsets(ctx context.Context, parts []int32, ts int64) (map[int32]int64, error) {
	req := kmsg.NewPtrListOffsetsRequest()
	req.ReplicaID = -1
	t := kmsg.NewListOffsetsRequestTopic()
	t.Topic = s.cfg.Topic
	for _, p := range parts {
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition = p
		rp.Timestamp = ts
		t.Partitions = append(t.Partitions, rp)
	}
	req.Topics = append(req.Topics, t)
	out := map[int32]int64{}
	for _, sh := range s.client.RequestSharded(ctx, req) {
		if sh.Err != nil {
			return nil, sh.Err
		}
		for _, rt := range sh.Resp.(*kmsg.ListOffsetsResponse).Topics {
			for _, rp := range rt.Partitions {
				if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
					return nil, err
				}
				out[rp.Partition] = rp.Offset
			}
		}
	}
	return out, nil
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
