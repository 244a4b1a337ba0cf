package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/ward-dlp/ward/agent"
	"github.com/ward-dlp/ward/agent/config"
	"github.com/ward-dlp/ward/internal/sdnotify"
)

// notifySystemd drives the systemd notification protocol for `ward-agent run` from the
// outside of the pipeline, by watching the spool. The agent writes a Health event into the
// fsync'ed findings log as soon as its pipeline runs, and one every health_interval after
// that, so:
//
//   - READY=1 is sent when the first Health event of this process is on disk: identity
//     loaded, spool open, probes loaded (or degraded) and the pipeline's goroutines running;
//   - WATCHDOG=1 is sent while the findings log keeps being written; when it has not been for
//     three health intervals (and a margin) the agent is wedged, the ping is withheld, and
//     systemd restarts it after WatchdogSec=.
//
// Outside systemd it returns at once.
func notifySystemd(ctx context.Context, cfg config.Config, log *slog.Logger) {
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return
	}
	dir := filepath.Join(agent.SpoolDir(cfg.StateDir), "findings")
	// File times come from the kernel's coarse clock, which can lag time.Now by a tick.
	start := time.Now().Add(-20 * time.Millisecond)
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		if last, err := lastWrite(dir); err == nil && last.After(start) {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
	sdnotify.Ready(log)
	stale := 3*cfg.HealthInterval + 30*time.Second
	check := func(context.Context) error {
		last, err := lastWrite(dir)
		if err != nil {
			return err
		}
		if age := time.Since(last); age > stale {
			return fmt.Errorf("no health event spooled for %s (health_interval %s): the agent looks wedged",
				age.Round(time.Second), cfg.HealthInterval)
		}
		return nil
	}
	go func() {
		<-ctx.Done()
		sdnotify.Stopping(log)
	}()
	if err := sdnotify.Watchdog(ctx, log, check); err != nil {
		log.Error("systemd watchdog", "err", err)
	}
}

// lastWrite is the newest modification time of dir and the files in it: an append changes
// a segment's mtime, a new or deleted segment the directory's.
func lastWrite(dir string) (time.Time, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return time.Time{}, fmt.Errorf("spool findings log: %w", err)
	}
	last := st.ModTime()
	entries, err := os.ReadDir(dir)
	if err != nil {
		return time.Time{}, fmt.Errorf("spool findings log: %w", err)
	}
	for _, e := range entries {
		if info, err := e.Info(); err == nil && info.ModTime().After(last) {
			last = info.ModTime()
		}
	}
	return last, nil
}
