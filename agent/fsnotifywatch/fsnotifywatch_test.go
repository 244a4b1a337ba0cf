package fsnotifywatch

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func start(t *testing.T, cfg Config) (*Watcher, <-chan Change) {
	t.Helper()
	cfg.Log = quiet()
	w, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan Change, 64)
	done := make(chan struct{})
	go func() { _ = w.Run(ctx, out); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return w, out
}

// next waits for a change, or fails after d.
func next(t *testing.T, ch <-chan Change, d time.Duration) Change {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(d):
		t.Fatalf("no change within %s", d)
	}
	return Change{}
}

func none(t *testing.T, ch <-chan Change, d time.Duration) {
	t.Helper()
	select {
	case c := <-ch:
		t.Fatalf("unexpected change %+v", c)
	case <-time.After(d):
	}
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestWritesReportedOnceQuiet: a file written several times is reported once, after its
// writes stop, with its inode; a file removed before going quiet is not reported.
func TestWritesReportedOnceQuiet(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "a", "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	w, out := start(t, Config{Quiet: 200 * time.Millisecond})
	if _, err := w.Watch(root); err != nil {
		t.Fatal(err)
	}
	if s := w.Stats(); s.Dirs != 3 {
		t.Errorf("watching %d dirs, want 3", s.Dirs)
	}
	p := filepath.Join(root, "a", "b", "notes.txt")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if _, err := f.WriteString("line\n"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(60 * time.Millisecond) // each write within the quiet time of the last
	}
	f.Close()
	gone := filepath.Join(root, "gone.txt")
	write(t, gone, "x")
	if err := os.Remove(gone); err != nil {
		t.Fatal(err)
	}
	c := next(t, out, 3*time.Second)
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	if c.Path != p || c.Root != root || c.Ino != st.Ino || c.Dev != st.Dev || c.Size != 25 || !c.Last.After(c.First) {
		t.Errorf("change %+v", c)
	}
	if c.Last.Sub(c.First) < 200*time.Millisecond {
		t.Errorf("reported before the writes stopped: first %v last %v", c.First, c.Last)
	}
	none(t, out, 500*time.Millisecond)
}

// TestNewDirectoryIsWatched: a directory created (or moved) into a watched tree is watched,
// including files that reached it before its watch did.
func TestNewDirectoryIsWatched(t *testing.T) {
	root := t.TempDir()
	w, out := start(t, Config{Quiet: 100 * time.Millisecond})
	if _, err := w.Watch(root); err != nil {
		t.Fatal(err)
	}
	// Built outside, then moved in with its file already there.
	outside := t.TempDir()
	if err := os.MkdirAll(filepath.Join(outside, "export", "2025"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(outside, "export", "2025", "chart.xml"), "<x/>")
	if err := os.Rename(filepath.Join(outside, "export"), filepath.Join(root, "export")); err != nil {
		t.Fatal(err)
	}
	c := next(t, out, 3*time.Second)
	if c.Path != filepath.Join(root, "export", "2025", "chart.xml") {
		t.Errorf("change %+v", c)
	}
	// And later writes inside it are seen.
	later := filepath.Join(root, "export", "2025", "later.xml")
	write(t, later, "<y/>")
	if c := next(t, out, 3*time.Second); c.Path != later {
		t.Errorf("change %+v, want %s", c, later)
	}
}

func TestUnwatch(t *testing.T) {
	root := t.TempDir()
	w, out := start(t, Config{Quiet: 50 * time.Millisecond})
	id, err := w.Watch(root)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := w.Watch(root); again != id {
		t.Errorf("second Watch id %d, want %d", again, id)
	}
	if err := w.Unwatch(root); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(root, "x"), "x")
	none(t, out, 400*time.Millisecond)
	if _, err := w.Watch(filepath.Join(root, "missing")); err == nil {
		t.Error("watching a missing directory succeeded")
	}
}

func TestMaxDirsAndPending(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"a", "b", "c"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	w, out := start(t, Config{Quiet: time.Hour, MaxDirs: 2, MaxPending: 1})
	if _, err := w.Watch(root); err != nil {
		t.Fatal(err)
	}
	if s := w.Stats(); s.Dirs != 2 || s.WatchErrors == 0 {
		t.Errorf("stats %+v: want 2 dirs and a counted watch error", s)
	}
	write(t, filepath.Join(root, "1"), "1")
	write(t, filepath.Join(root, "2"), "2")
	// Quiet is an hour: the first file is only reported because the second overflowed
	// the pending bound.
	if c := next(t, out, 3*time.Second); c.Path != filepath.Join(root, "1") {
		t.Errorf("early flush reported %+v", c)
	}
	if s := w.Stats(); s.EarlyFlush != 1 {
		t.Errorf("early flushes %d", s.EarlyFlush)
	}
}
