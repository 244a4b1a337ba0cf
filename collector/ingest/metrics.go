package ingest

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the ingest figures: what happened to exported events and batches, what is
// awaiting commit, and why batches were pushed back. Labels are fixed outcome and reason
// names, never agents, hosts or users.
type Metrics struct {
	events         *prometheus.CounterVec
	batches        *prometheus.CounterVec
	rejected       *prometheus.CounterVec
	inflightEvents prometheus.Gauge
	inflightBytes  prometheus.Gauge
	commit         prometheus.Histogram
	retryDelay     prometheus.Histogram
	outboxDepth    prometheus.Gauge
	limitedAgents  prometheus.Gauge
}

// Event outcomes.
const (
	outcomeStored    = "stored"
	outcomeDuplicate = "duplicate"
	outcomeMalformed = "malformed"
	outcomeThrottled = "throttled"
	outcomeFailed    = "failed"
	outcomeRefused   = "refused"
)

// NewMetrics registers the ingest metrics with reg (nil: a private registry, for tests).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &Metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ward_collector_ingest_events_total",
			Help: "Events received in Export calls, by outcome: stored, duplicate (already stored, acknowledged again), malformed (rejected and acknowledged), throttled (batch pushed back, the agent resends), refused (batch refused as invalid), failed (storage error, the agent resends).",
		}, []string{"outcome"}),
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ward_collector_ingest_batches_total",
			Help: "Export calls by outcome: ok, throttled, refused, failed.",
		}, []string{"outcome"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ward_collector_ingest_rejected_batches_total",
			Help: "Export calls refused whole, by reason: rate_limit, inflight_events, inflight_bytes, commit_latency, outbox_depth (RESOURCE_EXHAUSTED with RetryInfo), too_large, impersonation, store_unavailable.",
		}, []string{"reason"}),
		inflightEvents: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ward_collector_ingest_inflight_events",
			Help: "Events accepted and awaiting their commit.",
		}),
		inflightBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ward_collector_ingest_inflight_bytes",
			Help: "Bytes of Export requests accepted and awaiting their commit.",
		}),
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ward_collector_ingest_commit_duration_seconds",
			Help:    "Time to store one Export batch durably (one transaction).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		retryDelay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ward_collector_ingest_retry_delay_seconds",
			Help:    "RetryInfo delays given to agents with RESOURCE_EXHAUSTED.",
			Buckets: prometheus.ExponentialBuckets(0.125, 2, 10),
		}),
		outboxDepth: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ward_collector_outbox_depth",
			Help: "Deliveries queued in the sink outbox over all sinks, as last sampled by ingest (drives the outbox_depth backpressure).",
		}),
		limitedAgents: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ward_collector_ingest_rate_limited_agents",
			Help: "Agents with an active per-agent token bucket (seen in the last 10 minutes).",
		}),
	}
	for _, c := range []prometheus.Collector{m.events, m.batches, m.rejected, m.inflightEvents, m.inflightBytes,
		m.commit, m.retryDelay, m.outboxDepth, m.limitedAgents} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("ingest: metrics already registered: %w", err)
			}
			return nil, fmt.Errorf("ingest: register metrics: %w", err)
		}
	}
	// Pre-create the label sets so dashboards see zeros rather than absent series.
	for _, o := range []string{outcomeStored, outcomeDuplicate, outcomeMalformed, outcomeThrottled, outcomeFailed, outcomeRefused} {
		m.events.WithLabelValues(o)
	}
	for _, o := range []string{"ok", outcomeThrottled, outcomeRefused, outcomeFailed} {
		m.batches.WithLabelValues(o)
	}
	for _, r := range []string{reasonRateLimit, reasonInflightEvents, reasonInflightBytes, reasonCommitLatency, reasonOutboxDepth,
		"too_large", "impersonation", "store_unavailable"} {
		m.rejected.WithLabelValues(r)
	}
	return m, nil
}
