package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/ward-dlp/ward/agent/config"
	"github.com/ward-dlp/ward/agent/fsnotifywatch"
	"github.com/ward-dlp/ward/agent/stream"
	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/bpf/filewrite"
)

// noteUnattributed marks file activity seen in degraded mode: nobody knows who wrote it.
const noteUnattributed = "unattributed: degraded fsnotify mode (no eBPF), the writer is unknown"

// degradedState is the fsnotify fallback used when the file probes cannot load (or
// capture.force_fsnotify): targets are watched with inotify, files are classified from disk
// when their writes go quiet, and no write is attributed to a process.
type degradedState struct {
	fsw    *fsnotifywatch.Watcher
	reason error // why eBPF file capture is unavailable
}

// forceNoBPF turns off every sensor that needs eBPF, for capture.force_fsnotify.
func forceNoBPF(cfg *config.Config) {
	cfg.Network.Enabled = false
	cfg.Network.TLSPlaintext.Enabled = false
	cfg.Network.Capture.Enabled = false
}

// startDegraded starts the fsnotify watcher over the targets. It is called when a.files is
// nil; reason says why.
func (a *agent) startDegraded(reason error) error {
	fsw, err := fsnotifywatch.New(fsnotifywatch.Config{Quiet: a.cfg.Capture.IdleFlush / 2, Log: a.log})
	if err != nil {
		return fmt.Errorf("no eBPF file probes (%v) and no fsnotify either: %w", reason, err)
	}
	a.degraded = &degradedState{fsw: fsw, reason: reason}
	a.watches = newWatcher(fsw, a.cfg.Targets, a.cfg.Watch, a.log)
	a.log.Error("DEGRADED: eBPF file capture unavailable; watching targets with fsnotify. Writes are classified from disk "+
		"when they go quiet and are NOT attributed to any process or user; copies, renames out of view and "+
		"enforcement are not covered", "reason", reason)
	return nil
}

// runDegraded starts the fsnotify watcher and its classifier.
func (a *agent) runDegraded(g *errgroup.Group, ctx context.Context) {
	d := a.degraded
	if d == nil {
		return
	}
	changes := make(chan fsnotifywatch.Change, 256)
	g.Go(func() error { return d.fsw.Run(ctx, changes) })
	g.Go(func() error { return a.watches.run(ctx) })
	g.Go(func() error {
		// Said again on the health interval, so a log reader cannot miss it.
		t := time.NewTicker(a.cfg.HealthInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
				a.log.Error("DEGRADED: file sensor running on fsnotify without eBPF; writes are unattributed",
					"reason", d.reason, "dirs", d.fsw.Stats().Dirs)
			case ch := <-changes:
				a.countProbeEvent("fsnotify")
				a.handleContent(ctx, degradedContent(ch))
			}
		}
	})
}

// degradedContent is a change as reassembly would have produced it, but with nothing
// captured: Complete false makes handleContent re-read the file (content source
// FILE_REREAD), and TGID 0 says no process is known.
func degradedContent(ch fsnotifywatch.Change) stream.Content {
	return stream.Content{
		Key:    stream.Key{TGID: 0, FD: -1},
		File:   stream.File{Path: ch.Path, Device: uint64(filewrite.KernelDev(ch.Dev)), Inode: ch.Ino, WatchDir: ch.Root},
		Reason: stream.Closed, First: ch.First, Last: ch.Last, BytesWritten: uint64(max(ch.Size, 0)),
	}
}

// markUnattributed says on an event made in degraded mode that its writer is unknown.
func markUnattributed(ev *wardv1.Event, c stream.Content) {
	if c.Key.TGID != 0 {
		return
	}
	switch p := ev.GetPayload().(type) {
	case *wardv1.Event_File:
		p.File.Process = nil
		p.File.Notes = append(p.File.Notes, noteUnattributed)
	case *wardv1.Event_Finding:
		p.Finding.Process = nil
	}
}

// degradedHealth reports the fallback loudly: an error on a probe named file.fsnotify in
// every Health event, so the SOC sees the host is only half watched.
func (a *agent) degradedHealth(addStatus func(prefix, name, hook string, attached bool, err error), drops map[string]uint64) {
	d := a.degraded
	if d == nil {
		return
	}
	addStatus("file.", "fsnotify", "fsnotify/inotify", true,
		fmt.Errorf("DEGRADED: eBPF file capture unavailable (%w); targets watched with fsnotify, writes unattributed (no pid or user), classified from disk after they go quiet, no enforcement", d.reason))
	s := d.fsw.Stats()
	drops["fsnotify.events"] = s.Events
	drops["fsnotify.reported"] = s.Reported
	drops["fsnotify.early_flush"] = s.EarlyFlush
	drops["fsnotify.overflows"] = s.Overflows
	drops["fsnotify.watch_errors"] = s.WatchErrors
}

// errForced is the degraded reason under capture.force_fsnotify.
var errForced = errors.New("capture.force_fsnotify is set")
