// Package metrics exposes the agent's self-observation as Prometheus metrics on a loopback
// listener: what each probe delivered and dropped (by the kernel's drop reasons), how full
// its ring buffer is, which hooks attached, the spool and the shipper, how long
// classification takes and what policy decided.
//
// Counters that already exist in the pipeline (kernel drop arrays, stage counters, spool and
// shipper statistics) are read at scrape time from a Snapshot rather than duplicated, so the
// metrics and the Health events can never disagree. Labels are probe, reason and action
// names only: never users, paths or hosts.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Probe is one hook's attach status.
type Probe struct {
	Name     string // e.g. "file.write" or "process.exec"
	Hook     string // the hook that attached, or the last one tried
	Attached bool
}

// Ring is one probe's ring buffer fill.
type Ring struct {
	Probe      string
	Used, Size int
}

// Snapshot is the pipeline's state at scrape time.
type Snapshot struct {
	Probes []Probe
	// Counters are the Health event's monotonic counters: "bpf.<probe>.<reason>" are kernel
	// drop counters; the rest are user-space stage counters ("<stage>.<what>").
	Counters map[string]uint64
	Rings    []Ring

	SpoolBytes                        int64
	SpoolFindings, SpoolTelemetry     int
	SpoolFindingsEvicted              uint64
	SpoolTelemetryEvicted             uint64
	ShipSent, ShipAcked, ShipRejected uint64
	ShipFailures, ShipThrottled       uint64
	ShipConnected                     bool
	// Degraded is true when the agent runs without eBPF file capture (fsnotify fallback).
	Degraded bool
}

// Metrics holds the live instruments the pipeline updates and the scrape-time collector.
type Metrics struct {
	reg       *prometheus.Registry
	events    *prometheus.CounterVec
	classify  prometheus.Histogram
	decisions *prometheus.CounterVec
}

// New builds the registry: Go runtime and process metrics, the live instruments, and a
// collector that reads snapshot at every scrape. snapshot must be safe to call from the
// HTTP server's goroutines.
func New(snapshot func() Snapshot) (*Metrics, error) {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ward_agent_probe_events_total",
			Help: "Records read from a probe's ring buffer (fsnotify: changes reported), by probe.",
		}, []string{"probe"}),
		classify: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "ward_agent_classify_duration_seconds",
			Help: "Time to classify one file's content (including a re-read from disk) and decide on it.",
			// 50 µs .. ~3.3 s: small writes are tens of microseconds, multi-MiB re-reads seconds.
			Buckets: prometheus.ExponentialBuckets(50e-6, 4, 9),
		}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ward_agent_policy_decisions_total",
			Help: "Policy decisions that named a rule, by the action decided and the action taken.",
		}, []string{"action", "taken"}),
	}
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.events, m.classify, m.decisions,
		&snapshotCollector{snapshot: snapshot},
	} {
		if err := m.reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: register: %w", err)
		}
	}
	return m, nil
}

// ProbeEvent counts n records read from a probe.
func (m *Metrics) ProbeEvent(probe string, n int) {
	if m != nil {
		m.events.WithLabelValues(probe).Add(float64(n))
	}
}

// Classified observes one classification's duration.
func (m *Metrics) Classified(d time.Duration) {
	if m != nil {
		m.classify.Observe(d.Seconds())
	}
}

// Decided counts a decision that named a rule.
func (m *Metrics) Decided(action, taken string) {
	if m != nil {
		m.decisions.WithLabelValues(action, taken).Inc()
	}
}

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Listen binds addr, which must be a loopback address, so a busy port or a wrong address
// is reported when the agent starts.
func Listen(addr string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("metrics: %q is not a loopback address", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen: %w", err)
	}
	return ln, nil
}

// Serve serves /metrics on ln until ctx ends, then shuts the server down.
func Serve(ctx context.Context, ln net.Listener, m *Metrics, log *slog.Logger) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute}
	log.Info("serving metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("metrics: serve: %w", err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("metrics: serve: %w", err)
		}
		return nil
	}
}

var (
	descDrops = prometheus.NewDesc("ward_agent_bpf_drops_total",
		"Records a probe lost in the kernel, by reason (ringbuf_full, map_full, capture_truncated, read_failed, ...).",
		[]string{"probe", "reason"}, nil)
	descStage = prometheus.NewDesc("ward_agent_stage_events_total",
		"User-space pipeline counters as in the Health event (decode errors, re-reads, evictions, lineage, ...), by name.",
		[]string{"name"}, nil)
	descAttached = prometheus.NewDesc("ward_agent_probe_attached",
		"1 when the capability's hook is attached, 0 when no hook could be; hook names the one attached or last tried.",
		[]string{"probe", "hook"}, nil)
	descRingUsed = prometheus.NewDesc("ward_agent_ringbuf_used_bytes",
		"Bytes written to a probe's ring buffer and not yet read by the agent.", []string{"probe"}, nil)
	descRingSize = prometheus.NewDesc("ward_agent_ringbuf_size_bytes",
		"Size of a probe's ring buffer.", []string{"probe"}, nil)
	descSpoolBytes = prometheus.NewDesc("ward_agent_spool_bytes",
		"Bytes on disk in the spool.", nil, nil)
	descSpoolEvents = prometheus.NewDesc("ward_agent_spool_events",
		"Events in the spool not yet acknowledged by the collector, by log (findings, telemetry).", []string{"log"}, nil)
	descSpoolEvicted = prometheus.NewDesc("ward_agent_spool_evicted_total",
		"Events evicted from the full spool before they were shipped, by log.", []string{"log"}, nil)
	descShip = prometheus.NewDesc("ward_agent_ship_events_total",
		"Events in Export calls, by result: sent (including resends), acked, rejected (malformed, acked).", []string{"result"}, nil)
	descShipFail = prometheus.NewDesc("ward_agent_ship_failures_total",
		"Failed Export attempts.", nil, nil)
	descShipThrottled = prometheus.NewDesc("ward_agent_ship_throttled_total",
		"Failed Export attempts that the collector pushed back with a retry delay.", nil, nil)
	descShipConnected = prometheus.NewDesc("ward_agent_ship_connected",
		"1 after a successful Export, 0 after a failed one.", nil, nil)
	descDegraded = prometheus.NewDesc("ward_agent_degraded",
		"1 when file capture runs on fsnotify without eBPF (writes unattributed).", nil, nil)
)

// snapshotCollector turns a Snapshot into const metrics at scrape time.
type snapshotCollector struct {
	snapshot func() Snapshot
}

func (c *snapshotCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descDrops, descStage, descAttached, descRingUsed, descRingSize, descSpoolBytes,
		descSpoolEvents, descSpoolEvicted, descShip, descShipFail, descShipThrottled, descShipConnected, descDegraded} {
		ch <- d
	}
}

func (c *snapshotCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.snapshot()
	names := make([]string, 0, len(s.Counters))
	for k := range s.Counters {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		v := float64(s.Counters[k])
		if rest, ok := strings.CutPrefix(k, "bpf."); ok {
			if probe, reason, ok := strings.Cut(rest, "."); ok {
				ch <- prometheus.MustNewConstMetric(descDrops, prometheus.CounterValue, v, probe, reason)
				continue
			}
		}
		ch <- prometheus.MustNewConstMetric(descStage, prometheus.CounterValue, v, k)
	}
	seen := map[string]bool{}
	for _, p := range s.Probes {
		if seen[p.Name] {
			continue // one series per capability
		}
		seen[p.Name] = true
		ch <- prometheus.MustNewConstMetric(descAttached, prometheus.GaugeValue, b2f(p.Attached), p.Name, p.Hook)
	}
	for _, r := range s.Rings {
		ch <- prometheus.MustNewConstMetric(descRingUsed, prometheus.GaugeValue, float64(r.Used), r.Probe)
		ch <- prometheus.MustNewConstMetric(descRingSize, prometheus.GaugeValue, float64(r.Size), r.Probe)
	}
	ch <- prometheus.MustNewConstMetric(descSpoolBytes, prometheus.GaugeValue, float64(s.SpoolBytes))
	ch <- prometheus.MustNewConstMetric(descSpoolEvents, prometheus.GaugeValue, float64(s.SpoolFindings), "findings")
	ch <- prometheus.MustNewConstMetric(descSpoolEvents, prometheus.GaugeValue, float64(s.SpoolTelemetry), "telemetry")
	ch <- prometheus.MustNewConstMetric(descSpoolEvicted, prometheus.CounterValue, float64(s.SpoolFindingsEvicted), "findings")
	ch <- prometheus.MustNewConstMetric(descSpoolEvicted, prometheus.CounterValue, float64(s.SpoolTelemetryEvicted), "telemetry")
	ch <- prometheus.MustNewConstMetric(descShip, prometheus.CounterValue, float64(s.ShipSent), "sent")
	ch <- prometheus.MustNewConstMetric(descShip, prometheus.CounterValue, float64(s.ShipAcked), "acked")
	ch <- prometheus.MustNewConstMetric(descShip, prometheus.CounterValue, float64(s.ShipRejected), "rejected")
	ch <- prometheus.MustNewConstMetric(descShipFail, prometheus.CounterValue, float64(s.ShipFailures))
	ch <- prometheus.MustNewConstMetric(descShipThrottled, prometheus.CounterValue, float64(s.ShipThrottled))
	ch <- prometheus.MustNewConstMetric(descShipConnected, prometheus.GaugeValue, b2f(s.ShipConnected))
	ch <- prometheus.MustNewConstMetric(descDegraded, prometheus.GaugeValue, b2f(s.Degraded))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
