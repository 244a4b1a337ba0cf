package agent

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sys/unix"

	"github.com/ward-dlp/ward/agent/config"
	"github.com/ward-dlp/ward/agent/stream"
	"github.com/ward-dlp/ward/agent/targets"
	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/bpf/filewrite"
	"github.com/ward-dlp/ward/policy"
)

// dirWatcher is what watcher needs from the file probe.
type dirWatcher interface {
	Watch(dir string) (uint32, error)
	Unwatch(dir string) error
}

// maxGoneTargets bounds the targets remembered after they went away (a stick pulled out
// while its files are still being classified).
const maxGoneTargets = 256

// watcher keeps the kernel's watched-directory set true to the egress targets and the file
// system. Targets come and go (a USB stick is plugged in, a share mounted); the kernel
// matches directories by (device, inode), so a watched directory that is created after the
// agent starts, or deleted and created again (a new inode), must be registered again:
// fsnotify on the nearest existing ancestor tells us when, and a slow rescan covers events
// fsnotify cannot see.
type watcher struct {
	probe dirWatcher
	disc  *targets.Discoverer // nil: only the configured directories
	// configured are the directories of the configuration and the policy's targets.
	configured []string
	rescan     time.Duration
	log        *slog.Logger

	// mu guards the target tables, read by the classifiers.
	mu      sync.Mutex
	targets map[string]targets.Target
	gone    map[string]targets.Target
	// current maps a watched dir to the inode registered for it (0: not registered). Only
	// the run goroutine touches it.
	current map[string]uint64
}

func newWatcher(p dirWatcher, tc config.Targets, configured []string, log *slog.Logger) *watcher {
	w := &watcher{probe: p, configured: configured, log: log, rescan: 30 * time.Second,
		targets: map[string]targets.Target{}, gone: map[string]targets.Target{}, current: map[string]uint64{}}
	if tc.Discover {
		var disable []targets.Kind
		for _, k := range tc.Disable {
			disable = append(disable, targets.Kind(k))
		}
		w.disc = targets.New(targets.Config{Configured: configured, RemovableDevices: tc.RemovableDevices, Disable: disable}, log)
		w.rescan = tc.Rescan
	}
	w.setTargets(w.discover())
	w.sync()
	return w
}

// discover returns the targets now; the configured directories alone when discovery is
// off or fails.
func (w *watcher) discover() []targets.Target {
	if w.disc != nil {
		ts, err := w.disc.Discover()
		if err == nil {
			return ts
		}
		w.log.Error("egress target discovery failed; watching the configured directories only", "err", err)
	}
	out := make([]targets.Target, 0, len(w.configured))
	for _, d := range w.configured {
		out = append(out, targets.Target{Kind: targets.Configured, Path: filepath.Clean(d), Label: "configured"})
	}
	return out
}

// setTargets replaces the target set; targets that left are unwatched and remembered for
// records still in flight.
func (w *watcher) setTargets(ts []targets.Target) {
	next := make(map[string]targets.Target, len(ts))
	for _, t := range ts {
		next[t.Path] = t
	}
	w.mu.Lock()
	for p, t := range w.targets {
		if _, ok := next[p]; ok {
			continue
		}
		if len(w.gone) >= maxGoneTargets {
			clear(w.gone)
		}
		w.gone[p] = t
		w.log.Info("egress target gone", "kind", t.Kind, "dir", p, "fstype", t.FSType, "device", t.Device)
	}
	for p, t := range next {
		if old, ok := w.targets[p]; !ok || old != t {
			w.log.Info("egress target", "kind", t.Kind, "dir", p, "fstype", t.FSType, "device", t.Device, "label", t.Label)
		}
		delete(w.gone, p)
	}
	w.targets = next
	w.mu.Unlock()
	for d, ino := range w.current {
		if _, ok := next[d]; !ok {
			if ino != 0 {
				_ = w.probe.Unwatch(d)
			}
			delete(w.current, d)
		}
	}
}

// dirs lists the target directories, sorted.
func (w *watcher) dirs() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]string, 0, len(w.targets))
	for p := range w.targets {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// target returns the target a watched directory belongs to, also shortly after it left.
func (w *watcher) target(dir string) (targets.Target, bool) {
	if dir == "" {
		return targets.Target{}, false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if t, ok := w.targets[dir]; ok {
		return t, true
	}
	t, ok := w.gone[dir]
	return t, ok
}

// containing returns the innermost target a path is under.
func (w *watcher) containing(path string) (targets.Target, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var best targets.Target
	found := false
	for p, t := range w.targets {
		if (path == p || strings.HasPrefix(path, p+"/") || p == "/") && (!found || len(p) > len(best.Path)) {
			best, found = t, true
		}
	}
	return best, found
}

// sync registers, re-registers or drops each target dir to match what is on disk now.
func (w *watcher) sync() {
	for _, d := range w.dirs() {
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
			t, _ := w.target(d)
			w.log.Info("watching directory", "dir", d, "kind", t.Kind)
		}
	}
}

// anchors returns, for each target dir, its nearest existing ancestor: the places fsnotify
// must watch to see the dir appear or change.
func (w *watcher) anchors() map[string]bool {
	out := make(map[string]bool)
	for _, d := range w.dirs() {
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
	updates := make(chan []targets.Target, 1)
	if w.disc != nil {
		go func() {
			if err := w.disc.Run(ctx, w.rescan, updates); err != nil {
				w.log.Error("egress target discovery stopped", "err", err)
			}
		}()
	}
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
		case ts := <-updates:
			w.setTargets(ts)
			w.sync()
			refresh()
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

// maxRenamedFiles bounds the files classified when a whole directory is renamed into a
// target; the rest are counted, not read.
const maxRenamedFiles = 256

// applyEgress turns the probe's rename, truncate and descriptor records into stream notes
// and contents. It runs on the assembler's goroutine.
func (a *agent) applyEgress(asm *stream.Assembler, r filewrite.Record) []stream.Content {
	switch r := r.(type) {
	case filewrite.PathOp:
		return a.pathOp(r)
	case filewrite.FdOp:
		k := stream.Key{TGID: r.PID, FD: r.FD}
		switch r.Op {
		case filewrite.OpFtruncate:
			asm.Note(k, stream.NoteFtruncate)
		case filewrite.OpMmapShared:
			asm.Note(k, stream.NoteMmapShared)
			return []stream.Content{stream.FlaggedActivity(k, a.fileOf(asm, k, r.Dev, r.Ino, r.WatchID), stream.NoteMmapShared, r.Time)}
		case filewrite.OpIOURingSetup, filewrite.OpIOURingEnter:
			asm.NoteProcess(r.PID, stream.NoteIOURing)
			dir, _ := a.files.WatchDir(r.WatchID)
			return []stream.Content{stream.FlaggedActivity(k, stream.File{Path: dir, WatchDir: dir}, stream.NoteIOURing, r.Time)}
		case filewrite.OpDup:
			old := stream.Key{TGID: r.PID, FD: int32(r.Arg)}
			if cs, ok := asm.Dup(old, k, r.Time); ok {
				return cs
			}
			// The original predates the agent or its open record was lost.
			return asm.Open(k, a.fileOf(asm, k, r.Dev, r.Ino, r.WatchID), r.Time)
		case filewrite.OpInherit:
			parent := stream.Key{TGID: uint32(r.Arg), FD: r.FD}
			if cs, ok := asm.Inherit(parent, k, r.Time); ok {
				return cs
			}
			cs := asm.Open(k, a.fileOf(asm, k, r.Dev, r.Ino, r.WatchID), r.Time)
			asm.Note(k, stream.NoteInherited)
			return cs
		case filewrite.OpMprotectShared:
			// The descriptor may be gone (FD is -1): the file is named by its inode.
			return []stream.Content{stream.FlaggedActivity(k, a.fileOf(asm, k, r.Dev, r.Ino, r.WatchID), stream.NoteMprotect, r.Time)}
		}
	}
	return nil
}

// fileOf names the file behind a descriptor: from its stream, else from /proc.
func (a *agent) fileOf(asm *stream.Assembler, k stream.Key, dev uint32, ino uint64, watchID uint32) stream.File {
	if f, ok := asm.Lookup(k); ok {
		return f
	}
	f := stream.File{Device: uint64(dev), Inode: ino}
	f.WatchDir, _ = a.files.WatchDir(watchID)
	f.Path, _ = os.Readlink("/proc/" + strconv.FormatUint(uint64(k.TGID), 10) + "/fd/" + strconv.Itoa(int(k.FD)))
	return f
}

// pathOp handles a rename or truncate whose destination is, or may be, in a target. The
// kernel's answer is checked against the target table (it could not resolve every path,
// and a prefix hash could collide).
func (a *agent) pathOp(r filewrite.PathOp) []stream.Content {
	if r.Path == "" {
		a.count("filewrite.pathop_unknown_watch", 1)
		return nil
	}
	t, ok := a.watches.containing(r.Path)
	if !ok {
		if !r.Unresolved {
			a.count("filewrite.pathop_outside_targets", 1)
		}
		return nil
	}
	if r.NameTruncated || r.PathTruncated {
		a.count("filewrite.pathop_truncated", 1)
	}
	var st unix.Stat_t
	if err := unix.Lstat(r.Path, &st); err != nil {
		a.count("filewrite.pathop_gone", 1)
		return nil // renamed away or deleted again before we looked
	}
	file := func(path string, st *unix.Stat_t) stream.File {
		return stream.File{Path: path, Device: uint64(filewrite.KernelDev(st.Dev)), Inode: st.Ino, WatchDir: t.Path}
	}
	if r.Op == filewrite.OpTruncate {
		return []stream.Content{stream.FlaggedActivity(stream.Key{TGID: r.PID, FD: -1}, file(r.Path, &st), stream.NoteTruncate, r.Time)}
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return []stream.Content{stream.RenamedInto(r.PID, file(r.Path, &st), r.OldPath, r.Time)}
	case unix.S_IFDIR:
		// A directory moved into a target brings every file in it.
		var out []stream.Content
		skipped := 0
		_ = filepath.WalkDir(r.Path, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return nil
			}
			if len(out) >= maxRenamedFiles {
				skipped++
				return nil
			}
			var fst unix.Stat_t
			if unix.Lstat(p, &fst) != nil {
				return nil
			}
			from := ""
			if r.OldPath != "" {
				rel, _ := filepath.Rel(r.Path, p)
				from = filepath.Join(r.OldPath, rel)
			}
			out = append(out, stream.RenamedInto(r.PID, file(p, &fst), from, r.Time))
			return nil
		})
		if skipped > 0 {
			a.count("filewrite.renamed_dir_files_skipped", uint64(skipped))
			a.log.Warn("directory renamed into a target has more files than are classified", "dir", r.Path,
				"classified", len(out), "skipped", skipped, "kind", t.Kind)
		}
		return out
	}
	return nil
}

// targetOf is the egress target of a content's file.
func (a *agent) targetOf(c stream.Content) (targets.Target, bool) {
	if a.watches == nil {
		return targets.Target{}, false
	}
	if t, ok := a.watches.target(c.File.WatchDir); ok {
		return t, true
	}
	if c.File.Path != "" {
		return a.watches.containing(c.File.Path)
	}
	return targets.Target{}, false
}

// destination maps a target onto policy's destination kinds. Sync folders also name their
// service's domain, so the bundle's apps list recognises the service (and whether the
// clinic sanctioned it) when the writing process is not the client itself.
func destination(t targets.Target, ok bool, path string) policy.Destination {
	d := policy.Destination{Kind: policy.DestWatchedPath, Path: path}
	if !ok {
		return d
	}
	switch t.Kind {
	case targets.Removable:
		d.Kind = policy.DestRemovableMedia
	case targets.Share:
		d.Kind = policy.DestNetworkShare
	case targets.Sync:
		d.Kind = policy.DestSyncFolder
		d.Domain = syncDomains[t.Label]
	}
	return d
}

// syncDomains are the services behind the sync clients targets recognises. Self-hosted
// ones (Nextcloud, ownCloud) and generic tools (rclone) have none.
var syncDomains = map[string]string{
	"dropbox":                "dropbox.com",
	"onedrive":               "onedrive.live.com",
	"onedriver":              "onedrive.live.com",
	"google-drive":           "drive.google.com",
	"google-drive-ocamlfuse": "drive.google.com",
	"insync":                 "drive.google.com",
	"box":                    "box.com",
	"mega":                   "mega.nz",
}

// annotate adds the target, rename and notes to a file activity or finding event.
func (a *agent) annotate(ev *wardv1.Event, c stream.Content) {
	t, ok := a.targetOf(c)
	switch p := ev.Payload.(type) {
	case *wardv1.Event_File:
		fa := p.File
		if ok {
			fa.TargetKind, fa.MountPoint, fa.Fstype, fa.TargetDevice, fa.TargetLabel = string(t.Kind), t.MountPoint, t.FSType, t.Device, t.Label
		}
		fa.Notes = c.Notes.Strings()
		switch c.Reason {
		case stream.Renamed:
			fa.Kind, fa.RenamedFrom = wardv1.FileActivity_KIND_RENAMED_INTO, c.RenamedFrom
		case stream.Flagged:
			switch c.Flag {
			case stream.NoteTruncate:
				fa.Kind = wardv1.FileActivity_KIND_TRUNCATED
			case stream.NoteMmapShared, stream.NoteMprotect:
				fa.Kind, fa.UnclassifiedEgress = wardv1.FileActivity_KIND_MMAP_SHARED, true
			case stream.NoteIOURing:
				fa.Kind, fa.UnclassifiedEgress = wardv1.FileActivity_KIND_IO_URING, true
			}
		}
	case *wardv1.Event_Finding:
		ft := p.Finding.GetFile()
		if ft == nil {
			return
		}
		if ok {
			ft.TargetKind, ft.MountPoint, ft.Fstype, ft.TargetDevice, ft.TargetLabel = string(t.Kind), t.MountPoint, t.FSType, t.Device, t.Label
		}
		ft.RenamedFrom = c.RenamedFrom
	}
}

// flagged reports activity on a target that cannot be classified as it happens (a shared
// mapping, io_uring, a truncate by path). It is shipped whatever the telemetry settings:
// it is the record that the agent could not see the bytes.
func (a *agent) flagged(ctx context.Context, c stream.Content) {
	info, ok := a.procs.Lookup(ctx, c.Key.TGID)
	if !ok {
		a.count("enrich.process_unknown", 1)
	}
	ev := a.build.FileActivity(c, info, false, 0)
	ev.GetFile().ContentSource = wardv1.ContentSource_CONTENT_SOURCE_UNSPECIFIED
	a.annotate(ev, c)
	a.append(ev)
	t, _ := a.targetOf(c)
	a.log.Info("egress the agent cannot read", "what", c.Flag.Strings(), "path", c.File.Path, "pid", c.Key.TGID,
		"exe", info.Exe, "user", info.User, "target", t.Kind)
}

// maxInodeSearch bounds the directory entries looked at to name a file by its inode.
const maxInodeSearch = 20000

// nameByInode finds the path of a file known only by device and inode under the watched
// directories on that device. The agent names files from the open record or from
// /proc/<pid>/fd; when the open record carried no known watch and the writer has already
// exited (cp and mv finish in microseconds), this is the remaining way to report where
// the data landed instead of an empty path. The search is bounded; a miss leaves the
// path empty and is counted.
func (w *watcher) nameByInode(dev, ino uint64) (path, watchDir string, ok bool) {
	if w == nil || ino == 0 {
		return "", "", false
	}
	seen := 0
	for _, dir := range w.dirs() {
		var st unix.Stat_t
		if unix.Stat(dir, &st) != nil || uint64(filewrite.KernelDev(st.Dev)) != dev {
			continue
		}
		errFound := errors.New("found")
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			if seen++; seen > maxInodeSearch {
				return fs.SkipAll
			}
			if d.Type().IsRegular() {
				info, err := d.Info()
				if err != nil {
					return nil
				}
				if s, ok := info.Sys().(*syscall.Stat_t); ok && s.Ino == ino {
					path = p
					return errFound
				}
			}
			return nil
		})
		if errors.Is(err, errFound) {
			return path, dir, true
		}
	}
	return "", "", false
}
