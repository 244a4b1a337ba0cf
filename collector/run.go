package collector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"

	"github.com/ward-dlp/ward/collector/api"
	"github.com/ward-dlp/ward/collector/audit"
	"github.com/ward-dlp/ward/collector/console"
	"github.com/ward-dlp/ward/collector/console/account"
	"github.com/ward-dlp/ward/collector/enroll"
	"github.com/ward-dlp/ward/collector/fleet"
	"github.com/ward-dlp/ward/collector/ingest"
	collectorpolicy "github.com/ward-dlp/ward/collector/policy"
	"github.com/ward-dlp/ward/collector/report"
	"github.com/ward-dlp/ward/collector/retention"
	"github.com/ward-dlp/ward/collector/sinks"
)

// Run starts the collector and blocks until ctx is cancelled, then shuts down gracefully:
// in-flight Export calls get up to cfg.ShutdownTimeout to commit and acknowledge, after which
// remaining connections are cut (the agents resend whatever was not acknowledged).
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	def := Defaults(cfg.Home)
	if cfg.Listen == "" {
		cfg.Listen = def.Listen
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = def.ShutdownTimeout
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("collector: config: %w", err)
	}
	state := cfg.StateDir()
	if err := os.MkdirAll(state, 0o700); err != nil {
		return fmt.Errorf("collector: create state directory: %w", err)
	}
	if err := os.Chmod(state, 0o700); err != nil {
		return fmt.Errorf("collector: chmod state directory: %w", err)
	}

	ca, err := enroll.OpenAuthority(filepath.Join(state, "pki"), enroll.Options{
		ExtraSANs:     cfg.ExtraSANs,
		ServerCertTTL: cfg.ServerCertTTL,
	}, log)
	if err != nil {
		return fmt.Errorf("collector: %w", err)
	}
	st, err := cfg.Store.open(ctx, state)
	if err != nil {
		return fmt.Errorf("collector: %w", err)
	}
	defer func() {
		if err := st.Close(); err != nil {
			log.Error("closing store", "err", err)
		}
	}()
	// Replicas sharing PostgreSQL: alive before any sink claims work (storeconfig.go).
	if err := st.Heartbeat(ctx); err != nil {
		return fmt.Errorf("collector: %w", err)
	}
	heartbeatCtx, stopHeartbeat := context.WithCancel(context.WithoutCancel(ctx))
	heartbeatDone := make(chan struct{})
	go func() { st.RunReplicaHeartbeat(heartbeatCtx, log.With("component", "store")); close(heartbeatDone) }()
	defer func() { stopHeartbeat(); <-heartbeatDone }()
	// Evidence keys before anything reads or writes events: a ring missing a key that
	// stored rows need stops the start here, with the ids (opsconfig.go).
	evidenceKeys, keySource, err := cfg.evidenceKeys()
	if err != nil {
		return fmt.Errorf("collector: %w", err)
	}
	if err := st.SetEvidenceKeys(ctx, evidenceKeys); err != nil {
		return fmt.Errorf("collector: %w", err)
	}
	if evidenceKeys != nil {
		log.Info("evidence encrypted at rest", "key_id", evidenceKeys.CurrentID(), "keys", len(evidenceKeys.IDs()), "source", keySource)
	}
	enr := enroll.NewEnroller(ca, st, cfg.TokenTTL, cfg.CertTTL, log)
	auditLog, err := audit.Open(st, audit.Options{
		KeyFile: filepath.Join(state, "audit", "audit.key"), CheckpointEvery: cfg.Audit.CheckpointEvery,
		CheckpointInterval: cfg.Audit.CheckpointInterval, Log: log.With("component", "audit"),
	})
	if err != nil {
		return fmt.Errorf("collector: %w", err)
	}

	// Sinks route before ingest serves, so every event stored from now on is queued for them.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	sinkMetrics, err := sinks.NewMetrics(reg)
	if err != nil {
		return fmt.Errorf("collector: %w", err)
	}
	sinkCtx, stopSinks := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSinks()
	sinkMgr, err := sinks.Start(sinkCtx, st, cfg.Sinks, sinks.Options{
		Version: cfg.Version, Metrics: sinkMetrics, Log: log.With("component", "sinks"),
	})
	if err != nil {
		return fmt.Errorf("collector: %w", err)
	}
	defer func() {
		stopSinks()
		if err := sinkMgr.Wait(); err != nil {
			log.Error("sinks", "err", err)
		}
	}()
	// The audit checkpointer starts after the sinks routed (its checkpoints are queued for
	// them) and stops before them, with a last checkpoint covering the final records.
	auditCtx, stopAudit := context.WithCancel(context.WithoutCancel(ctx))
	auditDone := make(chan struct{})
	go func() { auditLog.Run(auditCtx); close(auditDone) }()
	defer func() { stopAudit(); <-auditDone }()
	if err := auditLog.Record(ctx, audit.Entry{Actor: audit.Actor{Type: audit.ActorSystem, ID: "ward-collector"},
		Action: audit.ActionCollectorStart, Outcome: audit.OutcomeSuccess,
		Details: map[string]string{"version": cfg.Version, "pid": strconv.Itoa(os.Getpid())}}); err != nil {
		return fmt.Errorf("collector: %w", err)
	}
	if cfg.MetricsListen != "" {
		mlis, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			return fmt.Errorf("collector: listen for metrics on %s: %w", cfg.MetricsListen, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		msrv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := msrv.Serve(mlis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server", "err", err)
			}
		}()
		defer msrv.Close()
		log.Info("metrics", "listen", mlis.Addr().String())
	}

	ingestMetrics, err := ingest.NewMetrics(reg)
	if err != nil {
		return fmt.Errorf("collector: %w", err)
	}
	// The console's app decisions reach agents as an overlay signed with the collector's
	// sanctioning key, applied only where the signed policy delegates to it (docs/console.md).
	sanctioner, err := collectorpolicy.OpenSanctioner(state, st, nil)
	if err != nil {
		return fmt.Errorf("collector: %w", err)
	}
	svc := ingest.New(enr, st, cfg.ingestLimits(), log.With("component", "ingest"), ingest.WithMetrics(ingestMetrics),
		ingest.WithSanctioning(sanctioner.OverlayFor))
	fleetMetrics, err := fleet.NewMetrics(reg)
	if err != nil {
		return fmt.Errorf("collector: %w", err)
	}
	fleetMon, err := fleet.New(st, fleet.Config{SilentAfter: cfg.Fleet.SilentAfter, CheckInterval: cfg.Fleet.CheckInterval},
		log.With("component", "fleet"), fleetMetrics)
	if err != nil {
		return fmt.Errorf("collector: %w", err)
	}
	retentionMetrics, err := retention.NewMetrics(reg)
	if err != nil {
		return fmt.Errorf("collector: %w", err)
	}
	grpcSrv := svc.NewGRPCServer()
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("collector: listen for agents on %s: %w", cfg.Listen, err)
	}
	sockPath := cfg.AdminSocketPath()
	adminLis, err := api.Listen(sockPath)
	if err != nil {
		_ = lis.Close()
		return fmt.Errorf("collector: %w", err)
	}
	admin := api.New(st, enr, cfg.Version, log.With("component", "api"))
	admin.SetAudit(auditLog)
	// Console and reports (docs/console.md). The facts index runs whether or not the console
	// listens: wardctl report reads it through the admin API.
	consoleSealer, factsKey, err := console.OpenKeys(state)
	if err != nil {
		_ = lis.Close()
		_ = adminLis.Close()
		return fmt.Errorf("collector: %w", err)
	}
	admin.SetReports(report.Sources{Store: st, FactsKey: factsKey, Version: cfg.Version}, account.Params{})

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	grpcErr := make(chan error, 1)
	go func() { grpcErr <- grpcSrv.Serve(lis) }()
	adminErr := make(chan error, 1)
	go func() { adminErr <- admin.Serve(runCtx, adminLis, cfg.ShutdownTimeout) }()
	// Ingest housekeeping, the fleet monitor and retention stop with runCtx; the deferred
	// wait lets them finish their last store writes before the store closes.
	var opsWG sync.WaitGroup
	defer func() { cancel(); opsWG.Wait() }()
	opsWG.Go(func() { svc.RunBackground(runCtx) })
	opsWG.Go(func() { _ = fleetMon.Run(runCtx) })
	if rc := cfg.retentionConfig(); rc.Enabled() {
		job := retention.New(st, rc, log.With("component", "retention"), retentionMetrics)
		opsWG.Go(func() { _ = job.Run(runCtx) })
	}
	go st.RunFactsIndexer(runCtx, factsKey, func(err error) { log.Warn("console facts index", "err", err) })
	consoleErr := make(chan error, 1)
	if cfg.Console.Listen != "" {
		csrv, err := console.New(console.Options{Config: cfg.Console, Store: st, Enroller: enr, Auditor: auditLog,
			AuditVerifier: auditLog.Verifier(), Sealer: consoleSealer, FactsKey: factsKey, StateDir: state,
			GetCertificate: ca.ServerTLSConfig().GetCertificate, Version: cfg.Version, Log: log.With("component", "console"),
			Sanctioner: sanctioner})
		if err != nil {
			return fmt.Errorf("collector: %w", err)
		}
		clis, err := net.Listen("tcp", cfg.Console.Listen)
		if err != nil {
			return fmt.Errorf("collector: listen for the console on %s: %w", cfg.Console.Listen, err)
		}
		go func() { consoleErr <- csrv.Serve(runCtx, clis, cfg.ShutdownTimeout) }()
		log.Info("console", "listen", "https://"+clis.Addr().String())
	}

	log.Info("collector ready", "listen", lis.Addr().String(), "admin", sockPath, "ca", ca.CACertPath(), "version", cfg.Version)

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("collector stopping", "cause", context.Cause(ctx))
	case err := <-grpcErr:
		runErr = fmt.Errorf("collector: agent listener: %w", err)
	// The admin and console servers also return (with nil) when ctx ends, and select may
	// pick their channel before ctx.Done: only an error is a failure.
	case err := <-adminErr:
		if err != nil {
			runErr = fmt.Errorf("collector: %w", err)
		}
		adminErr <- nil // let the shutdown below collect a result
	case err := <-consoleErr:
		if err != nil {
			runErr = fmt.Errorf("collector: %w", err)
		}
	}
	cancel()
	gracefulStop(grpcSrv, cfg.ShutdownTimeout, log)
	if err := <-adminErr; err != nil && runErr == nil {
		runErr = fmt.Errorf("collector: %w", err)
	}
	if runErr == nil {
		log.Info("collector stopped")
	}
	return runErr
}

// gracefulStop lets in-flight RPCs finish for up to timeout, then forces the stop.
func gracefulStop(s *grpc.Server, timeout time.Duration, log *slog.Logger) {
	done := make(chan struct{})
	go func() {
		s.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(timeout):
		log.Warn("graceful stop timed out; closing remaining agent connections", "timeout", timeout)
		s.Stop()
		<-done
	}
}
