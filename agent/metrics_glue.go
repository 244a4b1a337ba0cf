package agent

import (
	"context"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/ward-dlp/ward/agent/metrics"
	"github.com/ward-dlp/ward/policy"
)

// startMetrics serves Prometheus metrics on telemetry.metrics_addr (loopback only; off when
// empty). The listener is bound here so a busy port fails the start loudly.
func (a *agent) startMetrics(g *errgroup.Group, ctx context.Context) error {
	addr := a.cfg.Telemetry.MetricsAddr
	if addr == "" {
		return nil
	}
	m, err := metrics.New(a.metricsSnapshot)
	if err != nil {
		return err
	}
	ln, err := metrics.Listen(addr)
	if err != nil {
		return err
	}
	a.metrics = m
	g.Go(func() error { return metrics.Serve(ctx, ln, m, a.log) })
	return nil
}

// metricsSnapshot reads the same state the Health event carries, plus ring fill and the
// shipper's counters.
func (a *agent) metricsSnapshot() metrics.Snapshot {
	h := a.health()
	s := metrics.Snapshot{Counters: h.GetDrops(), SpoolBytes: int64(h.GetSpoolBytes()),
		SpoolFindingsEvicted: h.GetSpoolFindingsEvicted(), SpoolTelemetryEvicted: h.GetSpoolTelemetryEvicted(),
		Degraded: a.degraded != nil}
	for _, p := range h.GetProbes() {
		s.Probes = append(s.Probes, metrics.Probe{Name: p.GetName(), Hook: p.GetHook(), Attached: p.GetAttached()})
	}
	ss := a.spool.Stats()
	s.SpoolFindings, s.SpoolTelemetry = ss.FindingsEvents, ss.TelemetryEvents
	if a.shipper != nil {
		st := a.shipper.Stats()
		s.ShipSent, s.ShipAcked, s.ShipRejected = st.Sent, st.Acked, st.Rejected
		s.ShipFailures, s.ShipThrottled, s.ShipConnected = st.Retries, st.Throttled, st.Connected
	}
	if a.execs != nil {
		used, size := a.execs.RingFill()
		s.Rings = append(s.Rings, metrics.Ring{Probe: "process", Used: used, Size: size})
	}
	if a.lin != nil && a.lin.probe != nil {
		used, size := a.lin.probe.RingFill()
		s.Rings = append(s.Rings, metrics.Ring{Probe: "fileread", Used: used, Size: size})
	}
	return s
}

// countProbeEvent counts one record read from a probe (no-op without metrics).
func (a *agent) countProbeEvent(probe string) { a.metrics.ProbeEvent(probe, 1) }

// observeDecision records a classification's duration and, when a rule decided, the
// decision.
func (a *agent) observeDecision(start time.Time, d policy.Decision, taken policy.Action) {
	if a.metrics == nil {
		return
	}
	a.metrics.Classified(time.Since(start))
	if d.RuleID != "" {
		a.metrics.Decided(d.Action.String(), taken.String())
	}
}
