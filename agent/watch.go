package agent

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sys/unix"
)

// dirWatcher is what watcher needs from the file probe.
type dirWatcher interface {
	Watch(dir string) (uint32, error)
	Unwatch(dir string) error
}

// watcher keeps the kernel's watched-directory set true to the file system. The kernel
// matches directories by (device, inode), so a watched directory that is created after the
// agent starts, or deleted and created again (a new inode), must be registered again:
// fsnotify on the nearest existing ancestor tells us when, and a slow rescan covers events
// fsnotify cannot see (e.g. a mount appearing on top of the path).
type watcher struct {
	probe dirWatcher
	dirs  []string
	log   *slog.Logger
	// current maps a configured dir to the inode registered for it (0: not registered).
	current map[string]uint64
	rescan  time.Duration
}

func newWatcher(p dirWatcher, dirs []string, log *slog.Logger) *watcher {
	w := &watcher{probe: p, dirs: dirs, log: log, current: make(map[string]uint64), rescan: 30 * time.Second}
	w.sync()
	return w
}

// sync registers, re-registers or drops each configured dir to match what is on disk now.
func (w *watcher) sync() {
	for _, d := range w.dirs {
		var st unix.Stat_t
		err := unix.Stat(d, &st)
		have := w.current[d]
		switch {
		case err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR:
			if have != 0 {
				_ = w.probe.Unwatch(d)
				delete(w.current, d)
				w.log.Warn("watched directory is gone; will watch it again when it returns", "dir", d)
			} else if _, seen := w.current[d]; !seen {
				w.current[d] = 0
				w.log.Warn("watched directory does not exist yet; will watch it when it is created", "dir", d)
			}
		case have == st.Ino:
		default:
			if have != 0 {
				_ = w.probe.Unwatch(d)
			}
			if _, err := w.probe.Watch(d); err != nil {
				w.log.Error("cannot watch directory", "dir", d, "err", err)
				w.current[d] = 0
				continue
			}
			w.current[d] = st.Ino
			w.log.Info("watching directory", "dir", d)
		}
	}
}

// anchors returns, for each configured dir, itself if it exists or its nearest existing
// ancestor: the places fsnotify must watch to see the dir appear or change.
func (w *watcher) anchors() map[string]bool {
	out := make(map[string]bool)
	for _, d := range w.dirs {
		p := filepath.Dir(d)
		for {
			if fi, err := os.Stat(p); err == nil && fi.IsDir() {
				out[p] = true
				break
			}
			parent := filepath.Dir(p)
			if parent == p {
				break
			}
			p = parent
		}
	}
	return out
}

func (w *watcher) run(ctx context.Context) error {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		w.log.Warn("fsnotify unavailable; watched directories are rechecked every rescan interval", "err", err, "interval", w.rescan)
	}
	watched := map[string]bool{}
	refresh := func() {
		if fw == nil {
			return
		}
		want := w.anchors()
		for p := range watched {
			if !want[p] {
				_ = fw.Remove(p)
				delete(watched, p)
			}
		}
		for p := range want {
			if !watched[p] {
				if err := fw.Add(p); err == nil {
					watched[p] = true
				}
			}
		}
	}
	refresh()
	var events chan fsnotify.Event
	var errs chan error
	if fw != nil {
		defer fw.Close()
		events, errs = fw.Events, fw.Errors
	}
	t := time.NewTicker(w.rescan)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			w.sync()
			refresh()
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			if !errors.Is(err, fsnotify.ErrEventOverflow) {
				w.log.Warn("fsnotify", "err", err)
			}
			w.sync()
		case <-t.C:
			w.sync()
			refresh()
		}
	}
}
