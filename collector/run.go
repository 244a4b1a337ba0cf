package collector

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"

	"github.com/ward-dlp/ward/collector/api"
	"github.com/ward-dlp/ward/collector/enroll"
	"github.com/ward-dlp/ward/collector/ingest"
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
