// Package fleet watches that enrolled agents keep reporting. An agent that goes quiet may
// have been stopped, uninstalled, firewalled or had its machine wiped, so its silence is
// itself a finding: the monitor raises an AGENT_SILENT alert when an agent that was
// reporting has not called in for the configured time, and AGENT_BACK when it returns.
// Alerts are stored as events (under the agent's id) and reach the SIEM sinks like any
// other event.
//
// Agents report a Health event every health_interval (default 1 min) even when idle, and
// any accepted or pushed-back Export updates last_seen, so silence means no contact at all.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/collector/store"
)

// Defaults for Config.
const (
	DefaultSilentAfter = 15 * time.Minute
	// MinSilentAfter keeps the threshold above a few agent health intervals and ship backoffs.
	MinSilentAfter = time.Minute
)

// Config configures a Monitor.
type Config struct {
	// SilentAfter is how long an agent may go without contact before it is reported silent.
	SilentAfter time.Duration
	// CheckInterval is how often agents are checked (default SilentAfter/5, at most 1 min).
	CheckInterval time.Duration
}

// Monitor raises fleet alerts. Use New, then Run.
type Monitor struct {
	st      *store.Store
	cfg     Config
	log     *slog.Logger
	metrics *Metrics
	started time.Time
	now     func() time.Time
}

// New builds a monitor; metrics may be nil (a private registry).
func New(st *store.Store, cfg Config, log *slog.Logger, metrics *Metrics) (*Monitor, error) {
	if cfg.SilentAfter == 0 {
		cfg.SilentAfter = DefaultSilentAfter
	}
	if cfg.SilentAfter < MinSilentAfter {
		return nil, fmt.Errorf("fleet: silent_after %s is shorter than %s", cfg.SilentAfter, MinSilentAfter)
	}
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = min(cfg.SilentAfter/5, time.Minute)
	}
	if metrics == nil {
		metrics, _ = NewMetrics(nil)
	}
	return &Monitor{st: st, cfg: cfg, log: log, metrics: metrics, started: time.Now(), now: time.Now}, nil
}

// Run checks every CheckInterval until ctx ends. A failed check is logged and retried at
// the next tick.
func (m *Monitor) Run(ctx context.Context) error {
	m.log.Info("fleet monitor running", "silent_after", m.cfg.SilentAfter, "check_interval", m.cfg.CheckInterval)
	t := time.NewTicker(m.cfg.CheckInterval)
	defer t.Stop()
	for {
		if _, err := m.Check(ctx); err != nil && ctx.Err() == nil {
			m.log.Error("fleet check failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Result is what one Check saw and did.
type Result struct {
	Active, Silent, Revoked, NeverSeen int
	// Raised are the alerts stored by this check.
	Raised []*wardv1.Event
}

// Check looks at every agent once, raising the alerts whose conditions hold now.
//
// Nobody is reported silent during the first SilentAfter after the monitor starts: a
// collector that was itself down has not heard from anyone, and that is not the agents'
// doing. Contact during that window clears the question; agents still quiet after it are
// reported.
func (m *Monitor) Check(ctx context.Context) (Result, error) {
	var res Result
	agents, err := m.st.Agents(ctx)
	if err != nil {
		return res, fmt.Errorf("fleet: %w", err)
	}
	now := m.now()
	cutoff := now.Add(-m.cfg.SilentAfter)
	graceOver := !now.Before(m.started.Add(m.cfg.SilentAfter))
	var errs []error
	for _, a := range agents {
		if a.SilentSince != nil && a.LastSeen != nil && a.LastSeen.After(*a.SilentSince) {
			if ev := m.raise(ctx, store.FleetCheck{Kind: wardv1.FleetAlert_KIND_AGENT_BACK, AgentID: a.ID, Now: now}, &errs); ev != nil {
				res.Raised = append(res.Raised, ev)
				a.SilentSince = nil
				m.log.Info("agent reporting again", "agent_id", a.ID, "hostname", a.Hostname,
					"silent_for", time.Duration(ev.GetFleet().GetSilentForSeconds())*time.Second)
			}
		}
		switch {
		case a.Revoked:
			res.Revoked++
			continue
		case a.LastSeen == nil:
			res.NeverSeen++ // enrolled but never reported: nothing to fall silent from
			continue
		}
		if a.SilentSince == nil && graceOver && a.LastSeen.Before(cutoff) {
			ev := m.raise(ctx, store.FleetCheck{Kind: wardv1.FleetAlert_KIND_AGENT_SILENT, AgentID: a.ID, Now: now, SilentBefore: cutoff}, &errs)
			if ev != nil {
				res.Raised = append(res.Raised, ev)
				t := now
				a.SilentSince = &t
				m.log.Warn("agent silent", "agent_id", a.ID, "hostname", a.Hostname, "last_seen", a.LastSeen.UTC(),
					"silent_for", now.Sub(*a.LastSeen).Round(time.Second))
			}
		}
		if a.SilentSince != nil {
			res.Silent++
		} else {
			res.Active++
		}
	}
	m.metrics.agents.WithLabelValues("active").Set(float64(res.Active))
	m.metrics.agents.WithLabelValues("silent").Set(float64(res.Silent))
	m.metrics.agents.WithLabelValues("revoked").Set(float64(res.Revoked))
	m.metrics.agents.WithLabelValues("never_seen").Set(float64(res.NeverSeen))
	m.metrics.silent.Set(float64(res.Silent))
	return res, errors.Join(errs...)
}

func (m *Monitor) raise(ctx context.Context, c store.FleetCheck, errs *[]error) *wardv1.Event {
	ev, err := m.st.RaiseFleetAlert(ctx, c)
	if err != nil {
		*errs = append(*errs, err)
		return nil
	}
	if ev != nil {
		m.metrics.alerts.WithLabelValues(KindName(c.Kind)).Inc()
	}
	return ev
}

// KindName is the short lower-case name of a fleet alert kind ("agent_silent").
func KindName(k wardv1.FleetAlert_Kind) string {
	switch k {
	case wardv1.FleetAlert_KIND_AGENT_SILENT:
		return "agent_silent"
	case wardv1.FleetAlert_KIND_AGENT_BACK:
		return "agent_back"
	case wardv1.FleetAlert_KIND_AGENT_REVOKED_CONTACT:
		return "agent_revoked_contact"
	}
	return "unknown"
}

// Metrics are the fleet figures.
type Metrics struct {
	silent prometheus.Gauge
	agents *prometheus.GaugeVec
	alerts *prometheus.CounterVec
}

// NewMetrics registers the fleet metrics with reg (nil: a private registry).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &Metrics{
		silent: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ward_collector_agents_silent",
			Help: "Agents with an open agent-silent alert (no contact for longer than fleet.silent_after).",
		}),
		agents: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ward_collector_agents",
			Help: "Enrolled agents by state: active, silent, revoked, never_seen.",
		}, []string{"state"}),
		alerts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ward_collector_fleet_alerts_total",
			Help: "Fleet alerts raised by this monitor, by kind: agent_silent, agent_back.",
		}, []string{"kind"}),
	}
	for _, c := range []prometheus.Collector{m.silent, m.agents, m.alerts} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("fleet: register metrics: %w", err)
		}
	}
	for _, k := range []string{"agent_silent", "agent_back"} {
		m.alerts.WithLabelValues(k)
	}
	return m, nil
}
