package sdnotify

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// listen makes a notification socket like systemd's and points $NOTIFY_SOCKET at it.
func listen(t *testing.T) *net.UnixConn {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return c
}

func recv(t *testing.T, c *net.UnixConn, within time.Duration) (string, error) {
	t.Helper()
	buf := make([]byte, 256)
	_ = c.SetReadDeadline(time.Now().Add(within))
	n, err := c.Read(buf)
	return string(buf[:n]), err
}

func TestReadyAndStopping(t *testing.T) {
	c := listen(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	Ready(log)
	if got, err := recv(t, c, time.Second); err != nil || got != "READY=1" {
		t.Fatalf("got %q, %v; want READY=1", got, err)
	}
	Stopping(log)
	if got, err := recv(t, c, time.Second); err != nil || got != "STOPPING=1" {
		t.Fatalf("got %q, %v; want STOPPING=1", got, err)
	}
}

// TestWatchdogWithholdsPingsWhileUnhealthy pings at half of WATCHDOG_USEC while the check
// passes and sends nothing while it fails.
func TestWatchdogWithholdsPingsWhileUnhealthy(t *testing.T) {
	c := listen(t)
	t.Setenv("WATCHDOG_USEC", "200000") // 200ms: pings every 100ms
	var healthy atomic.Bool
	healthy.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	go func() {
		done <- Watchdog(ctx, log, func(context.Context) error {
			if healthy.Load() {
				return nil
			}
			return errors.New("store stuck")
		})
	}()
	for range 3 {
		if got, err := recv(t, c, time.Second); err != nil || got != "WATCHDOG=1" {
			t.Fatalf("got %q, %v; want WATCHDOG=1", got, err)
		}
	}
	healthy.Store(false)
	// Drain a ping that may have been sent before the switch, then expect silence.
	_, _ = recv(t, c, 150*time.Millisecond)
	if got, err := recv(t, c, 400*time.Millisecond); err == nil {
		t.Fatalf("got %q while the check fails; want no ping", got)
	} else if !strings.Contains(err.Error(), "timeout") {
		t.Fatal(err)
	}
	healthy.Store(true)
	if got, err := recv(t, c, time.Second); err != nil || got != "WATCHDOG=1" {
		t.Fatalf("after recovery got %q, %v; want WATCHDOG=1", got, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestWatchdogOffWithoutSystemd(t *testing.T) {
	t.Setenv("WATCHDOG_USEC", "")
	if err := Watchdog(context.Background(), slog.New(slog.NewTextHandler(io.Discard, nil)), nil); err != nil {
		t.Fatal(err)
	}
}
