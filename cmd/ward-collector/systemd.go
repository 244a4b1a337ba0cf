package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/ward-dlp/ward/internal/sdnotify"
)

// notifySystemd drives the systemd notification protocol for a collector whose admin API
// listens on sock. READY=1 is sent once the admin API answers its health check, which
// reads the store; WATCHDOG=1 pings continue only while it keeps answering, so a collector
// whose store or API is stuck is restarted by WatchdogSec=. Outside systemd it returns at
// once.
func notifySystemd(ctx context.Context, sock string, log *slog.Logger) {
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return
	}
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}
	check := func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://ward-collector/v1/healthz", nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return fmt.Errorf("admin API health: %w", err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("admin API health: %s: %s", resp.Status, body)
		}
		return nil
	}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for check(ctx) != nil {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
	sdnotify.Ready(log)
	go func() {
		<-ctx.Done()
		sdnotify.Stopping(log)
	}()
	if err := sdnotify.Watchdog(ctx, log, check); err != nil {
		log.Error("systemd watchdog", "err", err)
	}
}
