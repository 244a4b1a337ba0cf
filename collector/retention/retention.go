// Package retention runs the store's retention on a schedule: events older than max_age
// or beyond max_size are deleted oldest first, events still queued for a sink are kept
// unless the database passes hard_max_size, and freed pages go back to the file system
// with incremental vacuum. Every run that removes something says what in one log line and
// in metrics; dropping queued events is a warning, since a SIEM never received them.
package retention

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ward-dlp/ward/collector/store"
)

// Config configures the job. It runs only when MaxAge or MaxBytes is set.
type Config struct {
	MaxAge       time.Duration
	MaxBytes     int64
	HardMaxBytes int64
	// Interval is the time between runs (default 10 min).
	Interval time.Duration
}

// Enabled reports whether there is anything to enforce.
func (c Config) Enabled() bool { return c.MaxAge > 0 || c.MaxBytes > 0 }

// Job applies retention periodically.
type Job struct {
	st      *store.Store
	cfg     Config
	log     *slog.Logger
	metrics *Metrics
}

// New builds a job; metrics may be nil (a private registry).
func New(st *store.Store, cfg Config, log *slog.Logger, metrics *Metrics) *Job {
	if cfg.Interval <= 0 {
		cfg.Interval = 10 * time.Minute
	}
	if metrics == nil {
		metrics, _ = NewMetrics(nil)
	}
	return &Job{st: st, cfg: cfg, log: log, metrics: metrics}
}

// Run converts the database to incremental vacuum when needed, then applies retention now
// and every Interval until ctx ends.
func (j *Job) Run(ctx context.Context) error {
	if mode, err := j.st.AutoVacuumMode(ctx); err == nil && mode != 2 {
		j.log.Warn("converting the database to incremental vacuum (one-time VACUUM; ingest is pushed back until it finishes)",
			"file_bytes", j.st.FileBytes())
		start := time.Now()
		if _, err := j.st.EnableIncrementalVacuum(ctx); err != nil {
			// Retention still deletes; freed pages are reused instead of returned to disk.
			j.log.Error("incremental vacuum conversion failed; deleted space will be reused but not released", "err", err)
		} else {
			j.log.Info("database converted to incremental vacuum", "took", time.Since(start).Round(time.Millisecond), "file_bytes", j.st.FileBytes())
		}
	}
	t := time.NewTicker(j.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := j.RunOnce(ctx); err != nil && ctx.Err() == nil {
			j.log.Error("retention run failed; retrying next interval", "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// RunOnce applies retention once, logs and counts what it removed.
func (j *Job) RunOnce(ctx context.Context) (store.RetentionReport, error) {
	start := time.Now()
	rep, err := j.st.ApplyRetention(ctx, store.RetentionPolicy{
		MaxAge: j.cfg.MaxAge, MaxBytes: j.cfg.MaxBytes, HardMaxBytes: j.cfg.HardMaxBytes,
	}, start)
	m := j.metrics
	m.runs.Inc()
	m.deleted.WithLabelValues("age").Add(float64(rep.DeletedByAge))
	m.deleted.WithLabelValues("size").Add(float64(rep.DeletedBySize))
	m.deleted.WithLabelValues("hard_cap").Add(float64(rep.DroppedPending))
	m.dropped.Add(float64(rep.DroppedPending))
	m.kept.Set(float64(rep.KeptPending))
	m.vacuumed.Add(float64(rep.VacuumedPages))
	if rep.UsedAfter > 0 {
		m.used.Set(float64(rep.UsedAfter))
	}
	m.file.Set(float64(j.st.FileBytes()))
	if err != nil {
		m.failures.Inc()
		return rep, fmt.Errorf("retention: %w", err)
	}
	m.last.SetToCurrentTime()
	if rep.DroppedPending > 0 {
		j.log.Warn("retention dropped events still queued for sinks: the database passed its hard size cap",
			"dropped", rep.DroppedPending, "per_sink", rep.DroppedSinks, "rowids", fmt.Sprintf("%d-%d", rep.OldestDroppedRowID, rep.NewestDroppedRowID),
			"hard_max_bytes", j.cfg.HardMaxBytes)
	}
	if rep.Deleted() > 0 || rep.KeptPending > 0 {
		j.log.Info("retention", "deleted_by_age", rep.DeletedByAge, "deleted_by_size", rep.DeletedBySize,
			"dropped_pending", rep.DroppedPending, "kept_pending", rep.KeptPending,
			"used_bytes_before", rep.UsedBefore, "used_bytes_after", rep.UsedAfter,
			"file_bytes_before", rep.FileBefore, "file_bytes_after", rep.FileAfter,
			"vacuumed_pages", rep.VacuumedPages, "took", time.Since(start).Round(time.Millisecond))
	}
	return rep, nil
}

// Metrics are the retention figures.
type Metrics struct {
	runs, failures, dropped, vacuumed prometheus.Counter
	deleted                           *prometheus.CounterVec
	kept, used, file, last            prometheus.Gauge
}

// NewMetrics registers the retention metrics with reg (nil: a private registry).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &Metrics{
		runs:     prometheus.NewCounter(prometheus.CounterOpts{Name: "ward_collector_retention_runs_total", Help: "Retention runs."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "ward_collector_retention_failures_total", Help: "Retention runs that failed."}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ward_collector_retention_dropped_events_total",
			Help: "Events deleted while still queued for a sink, because the database passed retention.hard_max_size.",
		}),
		vacuumed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ward_collector_retention_vacuumed_pages_total", Help: "Database pages returned to the file system by incremental vacuum.",
		}),
		deleted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ward_collector_retention_deleted_events_total",
			Help: "Events deleted by retention, by rule: age, size, hard_cap (the last were still queued for a sink).",
		}, []string{"rule"}),
		kept: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ward_collector_retention_kept_pending_events",
			Help: "Events past a retention limit kept at the last run because a sink has not delivered them.",
		}),
		used: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ward_collector_db_used_bytes", Help: "Bytes of database pages holding data, at the last retention run.",
		}),
		file: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ward_collector_db_file_bytes", Help: "Size of the database file and its WAL, at the last retention run.",
		}),
		last: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ward_collector_retention_last_success_timestamp_seconds", Help: "When retention last completed.",
		}),
	}
	for _, c := range []prometheus.Collector{m.runs, m.failures, m.dropped, m.vacuumed, m.deleted, m.kept, m.used, m.file, m.last} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("retention: register metrics: %w", err)
		}
	}
	for _, r := range []string{"age", "size", "hard_cap"} {
		m.deleted.WithLabelValues(r)
	}
	return m, nil
}
