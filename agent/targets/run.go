package targets

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultRescan is how often sync folders and print directories are looked for again
// (mount changes are seen at once).
const DefaultRescan = 30 * time.Second

// compareEvery is how often the mount table is compared with its last contents, in case
// the POLLPRI wake-up is missed.
const compareEvery = 500 * time.Millisecond

// Run sends the target set on out at start and again every time it changes, until ctx is
// done. Mount changes wake it through POLLPRI on the mount table; everything else is
// rescanned every rescan interval. A failed scan is logged and the last good set stays.
func (d *Discoverer) Run(ctx context.Context, rescan time.Duration, out chan<- []Target) error {
	if rescan <= 0 {
		rescan = DefaultRescan
	}
	changed := make(chan struct{}, 1)
	if err := d.watchMounts(ctx, changed); err != nil {
		d.log.Warn("mount changes are not signalled; mounts are rescanned on the interval", "err", err, "interval", rescan)
	}
	var last []Target
	scan := func() bool {
		ts, err := d.Discover()
		if err != nil {
			d.log.Error("target discovery failed; keeping the previous targets", "err", err)
			return true
		}
		if last != nil && slices.Equal(ts, last) {
			return true
		}
		last = ts
		select {
		case out <- ts:
			return true
		case <-ctx.Done():
			return false
		}
	}
	if !scan() {
		return nil
	}
	t := time.NewTicker(rescan)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-t.C:
		}
		if !scan() {
			return nil
		}
	}
}

// watchMounts signals changed whenever the mount table changes. poll(2) on an open
// mountinfo file returns POLLPRI|POLLERR after a mount or unmount in this namespace
// (proc(5)); on 6.18 that wake-up was observed to be missed for some changes, so the table
// is also compared with its last contents every half second, which bounds the delay
// either way for the price of one small read.
func (d *Discoverer) watchMounts(ctx context.Context, changed chan<- struct{}) error {
	f, err := os.Open(d.cfg.Mountinfo)
	if err != nil {
		return fmt.Errorf("open %s: %w", d.cfg.Mountinfo, err)
	}
	fd := int(f.Fd())
	signal := func() {
		select {
		case changed <- struct{}{}:
		default: // a scan is already pending; it will see this change too
		}
	}
	last, _ := os.ReadFile(d.cfg.Mountinfo)
	go func() {
		defer f.Close()
		pollOK := true
		checked := time.Now()
		for ctx.Err() == nil {
			if pollOK {
				fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLPRI}}
				n, err := unix.Poll(fds, 250)
				switch {
				case errors.Is(err, unix.EINTR):
				case err != nil:
					d.log.Warn("polling the mount table failed; it is compared every half second instead", "err", err)
					pollOK = false
				case n > 0 && fds[0].Revents&(unix.POLLPRI|unix.POLLERR) != 0:
					last, _ = os.ReadFile(d.cfg.Mountinfo)
					checked = time.Now()
					signal()
					continue
				}
			} else {
				select {
				case <-ctx.Done():
					return
				case <-time.After(250 * time.Millisecond):
				}
			}
			if time.Since(checked) < compareEvery {
				continue
			}
			checked = time.Now()
			if now, err := os.ReadFile(d.cfg.Mountinfo); err == nil && !bytes.Equal(now, last) {
				last = now
				signal()
			}
		}
	}()
	return nil
}
