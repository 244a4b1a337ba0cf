// Package sdnotify tells systemd how a Ward daemon is doing: READY=1 once it serves,
// STOPPING=1 when it shuts down, and WATCHDOG=1 pings while a health check passes, so a
// wedged process is restarted by the unit's WatchdogSec= instead of silently seeing nothing.
//
// Outside systemd ($NOTIFY_SOCKET unset) every call is a cheap no-op, so the daemons call
// it unconditionally. The protocol itself is github.com/coreos/go-systemd/v22/daemon.
package sdnotify

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Ready reports that start-up finished (Type=notify units wait for it).
func Ready(log *slog.Logger) { send(log, daemon.SdNotifyReady) }

// Stopping reports that shutdown began, so systemd does not count the stop as a failure
// and does not expect further watchdog pings.
func Stopping(log *slog.Logger) { send(log, daemon.SdNotifyStopping) }

// Status sets the one-line status `systemctl status` shows.
func Status(log *slog.Logger, s string) { send(log, "STATUS="+s) }

func send(log *slog.Logger, state string) {
	// unsetEnvironment=false: the daemons may notify more than once (READY, then WATCHDOG…).
	if _, err := daemon.SdNotify(false, state); err != nil {
		log.Warn("systemd notification failed", "state", state, "err", err)
	}
}

// Watchdog pings systemd's watchdog at half the unit's WatchdogSec= for as long as check
// returns nil, and returns when ctx ends. When check fails the ping is withheld (and the
// failure logged), so a daemon whose store or pipeline is stuck gets restarted by systemd
// after WatchdogSec=. It returns at once when the unit has no watchdog.
func Watchdog(ctx context.Context, log *slog.Logger, check func(context.Context) error) error {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		return fmt.Errorf("sdnotify: watchdog settings: %w", err)
	}
	if interval <= 0 {
		return nil
	}
	period := interval / 2
	log.Info("systemd watchdog enabled", "interval", interval, "ping_every", period)
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, period)
		err := error(nil)
		if check != nil {
			err = check(cctx)
		}
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			log.Error("health check failed; withholding the systemd watchdog ping", "err", err)
		} else {
			send(log, daemon.SdNotifyWatchdog)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
