package sinks

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the outbox and sink figures a SOC alerts on: a growing queue or an old oldest
// event means the SIEM is not getting Ward's findings. Labels are sink names only, never
// users, paths or hosts.
type Metrics struct {
	events *prometheus.CounterVec
	depth  *prometheus.GaugeVec
	oldest *prometheus.GaugeVec
	dead   *prometheus.CounterVec
}

// NewMetrics registers the sink metrics with reg (nil: a private registry, for tests).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &Metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ward_collector_sink_events_total",
			Help: "Events handled by a SIEM sink, by outcome: delivered, retry (a failed attempt), dead_letter, skipped (format cannot represent the kind).",
		}, []string{"sink", "outcome"}),
		depth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ward_collector_sink_queue_depth",
			Help: "Events waiting in the outbox for a sink.",
		}, []string{"sink"}),
		oldest: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ward_collector_sink_oldest_event_age_seconds",
			Help: "Age of the oldest event waiting for a sink (0 when none waits).",
		}, []string{"sink"}),
		dead: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ward_collector_sink_dead_letters_total",
			Help: "Events a sink's destination refused permanently, kept in the dead-letter table (starts at the table's count).",
		}, []string{"sink"}),
	}
	for _, c := range []prometheus.Collector{m.events, m.depth, m.oldest, m.dead} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("sinks: metrics already registered: %w", err)
			}
			return nil, fmt.Errorf("sinks: register metrics: %w", err)
		}
	}
	return m, nil
}
