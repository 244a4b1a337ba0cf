// Package fsnotifywatch is the agent's file sensor of last resort: when no eBPF program can
// be loaded (an old or locked-down kernel, a container without CAP_BPF, or
// capture.force_fsnotify), the egress targets are watched with inotify through
// github.com/fsnotify/fsnotify and a file is reported once its writes have gone quiet, to be
// re-read from disk and classified.
//
// What this mode cannot do, and the agent says so in every Health event: attribute a write
// to a process or user (inotify does not say who), see what a write contained if the file
// changes again before it is read, see copies that never touch a watched directory's inode
// watches (bind mounts elsewhere), or enforce anything. It also cannot rely on
// IN_CLOSE_WRITE: fsnotify's portable API does not expose it, so completion is inferred
// from Quiet time without a write.
package fsnotifywatch

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sys/unix"
)

// Config tunes the watcher. The zero value is usable.
type Config struct {
	// Quiet is how long a file must go without a write before it is reported. Default 1 s.
	Quiet time.Duration
	// MaxDirs bounds the inotify watches (one per directory). Default 8192.
	MaxDirs int
	// MaxPending bounds files waiting for their quiet time; past it the oldest is reported
	// early. Default 4096.
	MaxPending int
	Log        *slog.Logger
}

// Defaults used when a Config field is zero.
const (
	DefaultQuiet      = time.Second
	DefaultMaxDirs    = 8192
	DefaultMaxPending = 4096
)

// Change is a file in a watched tree that was created or written and has been quiet since.
type Change struct {
	Path string
	// Root is the watched directory the file is under.
	Root string
	// Dev (stat st_dev) and Ino identify the file as it was when reported.
	Dev, Ino    uint64
	Size        int64
	First, Last time.Time // first and last event seen for the file in this run
}

// Stats are the watcher's counters.
type Stats struct {
	Events      uint64 // fsnotify events received
	Reported    uint64 // changes reported
	EarlyFlush  uint64 // reported before their quiet time because MaxPending was reached
	Overflows   uint64 // inotify queue overflows: events were lost
	WatchErrors uint64 // directories that could not be watched (MaxDirs, permissions, gone)
	Dirs        int    // directories watched now
}

// Watcher watches directory trees. Watch and Unwatch may be called from any goroutine;
// Run must run for changes to be reported.
type Watcher struct {
	cfg Config
	log *slog.Logger
	fw  *fsnotify.Watcher

	mu     sync.Mutex
	roots  map[string]uint32 // watched root → id
	nextID uint32
	dirs   map[string]string // watched directory → its root
	stats  Stats
}

// New starts an inotify instance.
func New(cfg Config) (*Watcher, error) {
	if cfg.Quiet <= 0 {
		cfg.Quiet = DefaultQuiet
	}
	if cfg.MaxDirs <= 0 {
		cfg.MaxDirs = DefaultMaxDirs
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = DefaultMaxPending
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	fw, err := fsnotify.NewBufferedWatcher(1024)
	if err != nil {
		return nil, fmt.Errorf("fsnotify: %w", err)
	}
	return &Watcher{cfg: cfg, log: cfg.Log.With("component", "fsnotify"), fw: fw,
		roots: map[string]uint32{}, dirs: map[string]string{}}, nil
}

// Watch watches dir and every directory below it (not following symlinks). Watching a
// root again returns its id.
func (w *Watcher) Watch(dir string) (uint32, error) {
	dir = filepath.Clean(dir)
	w.mu.Lock()
	if id, ok := w.roots[dir]; ok {
		w.mu.Unlock()
		return id, nil
	}
	w.nextID++
	id := w.nextID
	w.roots[dir] = id
	w.mu.Unlock()
	if err := w.addTree(dir, dir, nil); err != nil {
		w.mu.Lock()
		delete(w.roots, dir)
		w.mu.Unlock()
		return 0, err
	}
	return id, nil
}

// addTree adds inotify watches on dir and its subdirectories. Regular files found are
// passed to found (for a directory that appeared with files already in it).
func (w *Watcher) addTree(root, dir string, found func(path string)) error {
	first := true
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if first {
				return fmt.Errorf("fsnotify: watch %s: %w", dir, err)
			}
			return nil // a subdirectory vanished or is unreadable: skip it
		}
		if !d.IsDir() {
			if found != nil && d.Type().IsRegular() {
				found(p)
			}
			return nil
		}
		isFirst := first
		first = false
		w.mu.Lock()
		if _, ok := w.dirs[p]; ok {
			w.mu.Unlock()
			return nil
		}
		if len(w.dirs) >= w.cfg.MaxDirs {
			w.stats.WatchErrors++
			w.mu.Unlock()
			if isFirst {
				return fmt.Errorf("fsnotify: watch %s: %d directories watched already (max)", p, w.cfg.MaxDirs)
			}
			w.log.Warn("directory not watched: too many directories", "dir", p, "max", w.cfg.MaxDirs)
			return filepath.SkipDir
		}
		w.dirs[p] = root
		w.mu.Unlock()
		if err := w.fw.Add(p); err != nil {
			w.mu.Lock()
			delete(w.dirs, p)
			w.stats.WatchErrors++
			w.mu.Unlock()
			if isFirst {
				return fmt.Errorf("fsnotify: watch %s: %w", p, err)
			}
			w.log.Warn("directory not watched", "dir", p, "err", err)
			return filepath.SkipDir
		}
		return nil
	})
}

// Unwatch stops watching a root and its subdirectories.
func (w *Watcher) Unwatch(dir string) error {
	dir = filepath.Clean(dir)
	w.mu.Lock()
	delete(w.roots, dir)
	var drop []string
	for d, r := range w.dirs {
		if r == dir {
			drop = append(drop, d)
			delete(w.dirs, d)
		}
	}
	w.mu.Unlock()
	var errs []error
	for _, d := range drop {
		if err := w.fw.Remove(d); err != nil && !errors.Is(err, fsnotify.ErrNonExistentWatch) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Stats returns the counters.
func (w *Watcher) Stats() Stats {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.stats
	s.Dirs = len(w.dirs)
	return s
}

// rootOf returns the watched root a path is under.
func (w *Watcher) rootOf(path string) (string, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	r, ok := w.dirs[filepath.Dir(path)]
	return r, ok
}

type pending struct {
	root        string
	first, last time.Time
}

// Run reports changes on out until ctx ends, then closes the inotify instance.
func (w *Watcher) Run(ctx context.Context, out chan<- Change) error {
	defer w.fw.Close()
	waiting := map[string]*pending{}
	tick := time.NewTicker(max(w.cfg.Quiet/4, 50*time.Millisecond))
	defer tick.Stop()
	note := func(path, root string, now time.Time) {
		if p, ok := waiting[path]; ok {
			p.last = now
			return
		}
		waiting[path] = &pending{root: root, first: now, last: now}
	}
	emit := func(path string, p *pending) bool {
		delete(waiting, path)
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
			return true // gone, or not a regular file any more
		}
		c := Change{Path: path, Root: p.root, Dev: st.Dev, Ino: st.Ino, Size: st.Size, First: p.first, Last: p.last}
		select {
		case out <- c:
			w.mu.Lock()
			w.stats.Reported++
			w.mu.Unlock()
			return true
		case <-ctx.Done():
			return false
		}
	}
	flush := func(now time.Time) bool {
		var due []string
		for path, p := range waiting {
			if now.Sub(p.last) >= w.cfg.Quiet {
				due = append(due, path)
			}
		}
		slices.Sort(due)
		for _, path := range due {
			if !emit(path, waiting[path]) {
				return false
			}
		}
		return true
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-tick.C:
			if !flush(now) {
				return nil
			}
		case err, ok := <-w.fw.Errors:
			if !ok {
				return nil
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				w.mu.Lock()
				w.stats.Overflows++
				w.mu.Unlock()
				w.log.Error("inotify queue overflowed: writes in watched directories were missed")
				continue
			}
			w.log.Warn("fsnotify", "err", err)
		case ev, ok := <-w.fw.Events:
			if !ok {
				return nil
			}
			now := time.Now()
			w.mu.Lock()
			w.stats.Events++
			w.mu.Unlock()
			root, ok := w.rootOf(ev.Name)
			if !ok {
				continue
			}
			switch {
			case ev.Has(fsnotify.Create):
				var st unix.Stat_t
				if unix.Lstat(ev.Name, &st) != nil {
					continue
				}
				if st.Mode&unix.S_IFMT == unix.S_IFDIR {
					// A new directory (or one moved in): watch it, and take the files that
					// reached it before the watch did.
					if err := w.addTree(root, ev.Name, func(p string) { note(p, root, now) }); err != nil {
						w.log.Warn("new directory not watched", "dir", ev.Name, "err", err)
					}
					continue
				}
				note(ev.Name, root, now)
			case ev.Has(fsnotify.Write):
				note(ev.Name, root, now)
			case ev.Has(fsnotify.Remove), ev.Has(fsnotify.Rename):
				delete(waiting, ev.Name) // the new name, if any, comes as a Create
				w.forgetDir(ev.Name)
			}
			if len(waiting) > w.cfg.MaxPending {
				oldest, op := "", (*pending)(nil)
				for path, p := range waiting {
					if op == nil || p.last.Before(op.last) {
						oldest, op = path, p
					}
				}
				w.mu.Lock()
				w.stats.EarlyFlush++
				w.mu.Unlock()
				if !emit(oldest, op) {
					return nil
				}
			}
		}
	}
}

// forgetDir drops a removed or renamed directory (and those below it) from the table;
// inotify removes its watches itself.
func (w *Watcher) forgetDir(path string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.dirs[path]; !ok {
		return
	}
	if _, isRoot := w.roots[path]; isRoot {
		return // the agent's target watcher decides what happens to a root
	}
	for d := range w.dirs {
		if d == path || strings.HasPrefix(d, path+"/") {
			delete(w.dirs, d)
		}
	}
}
