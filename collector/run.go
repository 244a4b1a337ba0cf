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
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"

	"github.com/ward-dlp/ward/collector/api"
	"github.com/ward-dlp/ward/collector/enroll"
	"github.com/ward-dlp/ward/collector/ingest"
	"github.com/ward-dlp/ward/collector/sinks"
	"github.com/ward-dlp/ward/collector/store"
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
	st, err := store.Open(ctx, filepath.Join(state, "ward.db"))
	if err != nil {
		return fmt.Errorf("collector: %w", err)
	}
	defer func() {
		if err := st.Close(); err != nil {
			log.Error("closing store", "err", err)
		}
	}()
	enr := enroll.NewEnroller(ca, st, cfg.TokenTTL, cfg.CertTTL, log)

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

	svc := ingest.New(enr, st, ingest.Limits{
		MaxBatchEvents:  cfg.MaxBatchEvents,
		MaxMessageBytes: cfg.MaxMessageBytes,
		MaxEventBytes:   cfg.MaxEventBytes,
	}, log.With("component", "ingest"))
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

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	grpcErr := make(chan error, 1)
	go func() { grpcErr <- grpcSrv.Serve(lis) }()
	adminErr := make(chan error, 1)
	go func() { adminErr <- admin.Serve(runCtx, adminLis, cfg.ShutdownTimeout) }()

	log.Info("collector ready", "listen", lis.Addr().String(), "admin", sockPath, "ca", ca.CACertPath(), "version", cfg.Version)

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("collector stopping", "cause", context.Cause(ctx))
	case err := <-grpcErr:
		runErr = fmt.Errorf("collector: agent listener: %w", err)
	case err := <-adminErr:
		runErr = fmt.Errorf("collector: %w", err)
		adminErr <- nil // let the shutdown below collect a result
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
