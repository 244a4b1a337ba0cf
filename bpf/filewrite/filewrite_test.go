package filewrite

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ward-dlp/ward/bpf/internal/kernel"
)

// The test binary doubles as the writer child process, so records can be
// scoped to a pid the test started (the host has other activity).
const helperEnv = "WARD_FILEWRITE_HELPER"

func TestMain(m *testing.M) {
	if op := os.Getenv(helperEnv); op != "" {
		if err := helper(op, os.Args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// helper runs one write pattern against args[0].
func helper(op string, args []string) error {
	if ok, err := egressHelper(op, args); ok {
		return err
	}
	f, err := os.OpenFile(args[0], os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	fd := int(f.Fd())
	switch op {
	case "write": // each arg is one write(2)
		for _, a := range args[1:] {
			if _, err := unix.Write(fd, []byte(a)); err != nil {
				return err
			}
		}
	case "pwrite": // off data
		off, _ := strconv.ParseInt(args[1], 10, 64)
		_, err = unix.Pwrite(fd, []byte(args[2]), off)
	case "writev": // parts...
		_, err = unix.Writev(fd, toIovec(args[1:]))
	case "pwritev": // off parts...
		off, _ := strconv.ParseInt(args[1], 10, 64)
		_, err = unix.Pwritev(fd, toIovec(args[2:]), off)
	case "hold": // write, wait for a line on stdin, write again
		if _, err := unix.Write(fd, []byte("before")); err != nil {
			return err
		}
		if _, err := os.Stdin.Read(make([]byte, 1)); err != nil {
			return err
		}
		_, err = unix.Write(fd, []byte("after"))
	case "sendfile": // src: sendfile(2) all of src into the file
		src, err := os.Open(args[1])
		if err != nil {
			return err
		}
		defer src.Close()
		st, err := src.Stat()
		if err != nil {
			return err
		}
		_, err = unix.Sendfile(fd, int(src.Fd()), nil, int(st.Size()))
		return err
	case "splice": // off data: data through a pipe, spliced in at off
		var p [2]int
		if err := unix.Pipe(p[:]); err != nil {
			return err
		}
		defer unix.Close(p[0])
		defer unix.Close(p[1])
		if _, err := unix.Write(p[1], []byte(args[2])); err != nil {
			return err
		}
		off, _ := strconv.ParseInt(args[1], 10, 64)
		_, err = unix.Splice(p[0], nil, fd, &off, len(args[2]), 0)
		return err
	case "big": // n bytes in one write
		n, _ := strconv.Atoi(args[1])
		_, err = unix.Write(fd, pattern(n))
	default:
		return fmt.Errorf("unknown op %q", op)
	}
	return err
}

func toIovec(parts []string) [][]byte {
	out := make([][]byte, len(parts))
	for i, p := range parts {
		out[i] = []byte(p)
	}
	return out
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	return b
}

func TestKernelDev(t *testing.T) {
	for _, c := range []struct{ major, minor, want uint32 }{
		{8, 3, 8<<20 | 3},
		{0, 0x4d2, 0x4d2}, // anonymous dev with minor > 255 (tmpfs, overlay)
		{259, 0x12345, 259<<20 | 0x12345},
	} {
		if got := KernelDev(unix.Mkdev(c.major, c.minor)); got != c.want {
			t.Errorf("KernelDev(%d:%d) = %#x, want %#x", c.major, c.minor, got, c.want)
		}
	}
}

func TestLayout(t *testing.T) {
	var o filewriteOpenEvent
	var w filewriteWriteEvent
	var c filewriteCloseEvent
	var s filewriteOpenScratch
	for _, x := range []struct {
		name      string
		got, want uintptr
	}{
		{"open size", unsafe.Sizeof(o), openHeaderLen},
		{"open.fd", unsafe.Offsetof(o.Fd), 28},
		{"open.watch_id", unsafe.Offsetof(o.WatchId), 36},
		{"open.ino", unsafe.Offsetof(o.Ino), 40},
		{"open.path_len", unsafe.Offsetof(o.PathLen), 52},
		{"open.comm", unsafe.Offsetof(o.Comm), 56},
		{"open slots", unsafe.Sizeof(s.Names), maxNameSlots * nameSlot},
		{"write size", unsafe.Sizeof(w), writeHeaderLen},
		{"write.kind", unsafe.Offsetof(w.Kind), 28},
		{"write.flags", unsafe.Offsetof(w.Flags), 30},
		{"write.ino", unsafe.Offsetof(w.Ino), 32},
		{"write.offset", unsafe.Offsetof(w.Offset), 40},
		{"write.requested", unsafe.Offsetof(w.Requested), 48},
		{"write.captured", unsafe.Offsetof(w.Captured), 56},
		{"write.watch_id", unsafe.Offsetof(w.WatchId), 60},
		{"close size", unsafe.Sizeof(c), closeLen},
		{"close.watch_id", unsafe.Offsetof(c.WatchId), 28},
		{"close.ino", unsafe.Offsetof(c.Ino), 32},
	} {
		if x.got != x.want {
			t.Errorf("%s: C layout %d, decoder assumes %d", x.name, x.got, x.want)
		}
	}
}

// ---- decoder ----

func openRecord(watch uint32, names ...string) []byte {
	b := make([]byte, openHeaderLen+len(names)*nameSlot)
	le.PutUint32(b[0:], evOpen)
	le.PutUint32(b[4:], 10)
	le.PutUint64(b[8:], 1)
	le.PutUint32(b[28:], 3)
	le.PutUint32(b[36:], watch)
	le.PutUint64(b[40:], 99)
	le.PutUint16(b[52:], uint16(len(names)*nameSlot))
	copy(b[56:], "cat")
	for i, n := range names {
		copy(b[openHeaderLen+i*nameSlot:], n)
	}
	return b
}

func writeRecord(data string, requested uint64, flags uint16) []byte {
	b := make([]byte, writeHeaderLen+len(data))
	le.PutUint32(b[0:], evWrite)
	le.PutUint32(b[4:], 10)
	le.PutUint32(b[20:], 3)
	le.PutUint16(b[28:], uint16(KindPwrite64))
	le.PutUint16(b[30:], flags)
	le.PutUint64(b[40:], 7)
	le.PutUint64(b[48:], requested)
	le.PutUint32(b[56:], uint32(len(data)))
	copy(b[writeHeaderLen:], data)
	return b
}

func closeRecord() []byte {
	b := make([]byte, closeLen)
	le.PutUint32(b[0:], evClose)
	le.PutUint32(b[4:], 10)
	le.PutUint32(b[20:], 3)
	return b
}

func testWatchPath(id uint32) (string, bool) {
	if id == 1 {
		return "/watched", true
	}
	return "", false
}

func TestDecode(t *testing.T) {
	var clock kernel.Clock
	badSlots := openRecord(1, "f")
	le.PutUint16(badSlots[52:], 100) // not a multiple of the slot size
	overlong := writeRecord("abc", 3, 0)
	le.PutUint32(overlong[56:], 4) // claims more data than present
	huge := writeRecord("", 0, 0)
	le.PutUint32(huge[56:], MaxCaptureLimit+1)

	tests := []struct {
		name    string
		in      []byte
		check   func(t *testing.T, r Record)
		wantErr bool
	}{
		{name: "nil", in: nil, wantErr: true},
		{name: "unknown type", in: []byte{7, 0, 0, 0}, wantErr: true},
		{name: "short open", in: openRecord(1, "f")[:openHeaderLen-1], wantErr: true},
		{name: "open slots cut", in: openRecord(1, "f")[:openHeaderLen+10], wantErr: true},
		{name: "open bad slot len", in: badSlots, wantErr: true},
		{name: "open empty name", in: openRecord(1, ""), wantErr: true},
		{name: "short write", in: writeRecord("x", 1, 0)[:writeHeaderLen-1], wantErr: true},
		{name: "write data cut", in: overlong, wantErr: true},
		{name: "write captured over limit", in: huge, wantErr: true},
		{name: "short close", in: closeRecord()[:closeLen-1], wantErr: true},
		{
			name: "open nested with mount crossing",
			in:   openRecord(1, "file.txt", "c", "", "a"),
			check: func(t *testing.T, r Record) {
				o := r.(Open)
				if o.RelPath != "a/c/file.txt" || o.Path != "/watched/a/c/file.txt" || o.Comm != "cat" || o.FD != 3 || o.Ino != 99 {
					t.Errorf("got %+v", o)
				}
			},
		},
		{
			name: "open escape components dropped",
			in:   openRecord(1, "f", "..", "x/y", "."),
			check: func(t *testing.T, r Record) {
				if o := r.(Open); o.Path != "/watched/f" {
					t.Errorf("path %q", o.Path)
				}
			},
		},
		{
			name: "open unknown watch",
			in:   openRecord(5, "f"),
			check: func(t *testing.T, r Record) {
				if o := r.(Open); o.Path != "" || o.RelPath != "f" {
					t.Errorf("got %+v", o)
				}
			},
		},
		{
			name: "write truncated",
			in:   writeRecord("abc", 10, writeFlagTruncated),
			check: func(t *testing.T, r Record) {
				w := r.(Write)
				if string(w.Data) != "abc" || !w.Truncated || w.Requested != 10 || w.Offset != 7 || w.Kind != KindPwrite64 {
					t.Errorf("got %+v", w)
				}
			},
		},
		{
			name: "close",
			in:   closeRecord(),
			check: func(t *testing.T, r Record) {
				if c := r.(Close); c.PID != 10 || c.FD != 3 {
					t.Errorf("got %+v", c)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := decode(tt.in, testWatchPath, &clock)
			if tt.wantErr {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("want ErrMalformed, got %v (%+v)", err, r)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, r)
		})
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(openRecord(1, "f", "d"))
	f.Add(writeRecord("hello", 5, 0))
	f.Add(closeRecord())
	var clock kernel.Clock
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decode(b, testWatchPath, &clock)
		if (r == nil) == (err == nil) {
			t.Fatalf("exactly one of record/error expected: %v %v", r, err)
		}
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("unexpected error kind: %v", err)
		}
		if o, ok := r.(Open); ok && (slices.Contains(strings.Split(o.RelPath, "/"), "..") || strings.HasPrefix(o.RelPath, "/")) {
			t.Fatalf("path escapes the watched dir: %q", o.RelPath)
		}
		// A rename's destination may name any path (user space checks it against the
		// targets), but always an absolute, clean one.
		if o, ok := r.(PathOp); ok && o.Path != "" && (!filepath.IsAbs(o.Path) || filepath.Clean(o.Path) != o.Path) {
			t.Fatalf("rename destination %q is not absolute and clean", o.Path)
		}
	})
}

// ---- kernel-backed ----

type harness struct {
	t  *testing.T
	p  *Probe
	ch chan Record
}

func load(t *testing.T, cfg Config) *harness {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to load BPF programs")
	}
	p, err := Load(cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	h := &harness{t: t, p: p, ch: make(chan Record, 4096)}
	go func() {
		defer close(h.ch)
		for {
			r, err := p.Next()
			if errors.Is(err, ErrClosed) {
				return
			}
			if err != nil {
				t.Errorf("Next: %v", err)
				return
			}
			h.ch <- r
		}
	}()
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		for range h.ch {
		}
	})
	return h
}

// run starts the helper child and returns its pid once it has exited.
func (h *harness) run(op string, args ...string) uint32 {
	h.t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), helperEnv+"="+op)
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		h.t.Fatalf("helper %s %v: %v", op, args, err)
	}
	return uint32(cmd.Process.Pid)
}

func pidOf(r Record) uint32 {
	switch r := r.(type) {
	case Open:
		return r.PID
	case Write:
		return r.PID
	case Close:
		return r.PID
	}
	return pidOfOp(r)
}

// records collects pid's records up to and including its Close.
func (h *harness) records(pid uint32) []Record {
	h.t.Helper()
	var out []Record
	timeout := time.After(10 * time.Second)
	for {
		select {
		case r := <-h.ch:
			if pidOf(r) != pid {
				continue
			}
			out = append(out, r)
			if _, ok := r.(Close); ok {
				return out
			}
		case <-timeout:
			h.t.Fatalf("timeout waiting for close of pid %d; have %+v", pid, out)
		}
	}
}

// none asserts that pid produced no record. The ring buffer is ordered, so
// once a later sentinel child's Close arrives, pid's records would have too.
func (h *harness) none(pid uint32, sentinelDir string) {
	h.t.Helper()
	spid := h.run("write", filepath.Join(sentinelDir, "sentinel"), "s")
	timeout := time.After(10 * time.Second)
	for {
		select {
		case r := <-h.ch:
			if p := pidOf(r); p == pid {
				h.t.Fatalf("unexpected record from pid %d: %+v", pid, r)
			} else if _, ok := r.(Close); ok && p == spid {
				return
			}
		case <-timeout:
			h.t.Fatal("timeout waiting for sentinel")
		}
	}
}

func (h *harness) watch(dir string) uint32 {
	h.t.Helper()
	id, err := h.p.Watch(dir)
	if err != nil {
		h.t.Fatal(err)
	}
	return id
}

// reassemble replays write records onto a buffer.
func reassemble(t *testing.T, recs []Record) []byte {
	var buf []byte
	for _, r := range recs {
		w, ok := r.(Write)
		if !ok {
			continue
		}
		off := w.Offset
		if off < 0 {
			t.Fatalf("unknown offset in %+v", w)
		}
		if end := off + int64(len(w.Data)); end > int64(len(buf)) {
			buf = append(buf, make([]byte, end-int64(len(buf)))...)
		}
		copy(buf[off:], w.Data)
	}
	return buf
}

// TestOpenWriteClose runs with the BTF open filter this kernel loads and with the plain
// one older kernels fall back to.
func TestOpenWriteClose(t *testing.T) {
	for _, c := range []struct {
		plain bool
		prog  string
	}{{false, "exit_open_btf"}, {true, "exit_open"}} {
		t.Run(c.prog, func(t *testing.T) {
			h := load(t, Config{PlainPrograms: c.plain})
			for _, s := range h.p.Status() {
				t.Log(s)
				if s.Name == "open/openat" && s.Program != c.prog {
					t.Fatalf("open/openat runs %q, want %q", s.Program, c.prog)
				}
			}
			testOpenWriteClose(t, h)
		})
	}
}

func testOpenWriteClose(t *testing.T, h *harness) {
	dir := t.TempDir()
	id := h.watch(dir)
	file := filepath.Join(dir, "a.txt")
	pid := h.run("write", file, "hello ", "world")
	recs := h.records(pid)
	if len(recs) != 4 {
		t.Fatalf("want open, 2 writes, close; got %+v", recs)
	}
	o, ok := recs[0].(Open)
	if !ok || o.Path != file || o.RelPath != "a.txt" || o.WatchID != id || o.UID != uint32(os.Getuid()) {
		t.Fatalf("open = %+v", recs[0])
	}
	var st unix.Stat_t
	if err := unix.Stat(file, &st); err != nil {
		t.Fatal(err)
	}
	if o.Ino != st.Ino || o.Dev != KernelDev(st.Dev) {
		t.Errorf("open dev/ino %d/%d, stat says %d/%d", o.Dev, o.Ino, KernelDev(st.Dev), st.Ino)
	}
	if o.Time.IsZero() || time.Since(o.Time) > time.Minute || time.Since(o.Time) < 0 {
		t.Errorf("open time %v", o.Time)
	}
	w1, w2 := recs[1].(Write), recs[2].(Write)
	if string(w1.Data) != "hello " || w1.Offset != 0 || w1.Kind != KindWrite || w1.FD != o.FD || w1.Truncated {
		t.Errorf("write 1 = %+v", w1)
	}
	if string(w2.Data) != "world" || w2.Offset != 6 {
		t.Errorf("write 2 = %+v", w2)
	}
	if c := recs[3].(Close); c.FD != o.FD || c.Ino != st.Ino {
		t.Errorf("close = %+v", c)
	}
}

func TestPwriteWritevReassemble(t *testing.T) {
	h := load(t, Config{})
	dir := t.TempDir()
	h.watch(dir)
	for _, tc := range []struct {
		op   string
		args []string
		kind WriteKind
	}{
		{"pwrite", []string{"100", "xyz"}, KindPwrite64},
		{"writev", []string{"ab", "", "cd", "efg"}, KindWritev},
		{"pwritev", []string{"5", "12", "345", "6789"}, KindPwritev},
	} {
		t.Run(tc.op, func(t *testing.T) {
			file := filepath.Join(dir, tc.op)
			pid := h.run(tc.op, append([]string{file}, tc.args...)...)
			recs := h.records(pid)
			var kinds []WriteKind
			for _, r := range recs {
				if w, ok := r.(Write); ok {
					kinds = append(kinds, w.Kind)
				}
			}
			if len(kinds) != 1 || kinds[0] != tc.kind {
				t.Fatalf("write kinds %v, want [%v]; records %+v", kinds, tc.kind, recs)
			}
			disk, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if got := reassemble(t, recs); !bytes.Equal(got, disk) {
				t.Errorf("reassembled %q, file has %q", got, disk)
			}
		})
	}
}

func TestTruncation(t *testing.T) {
	h := load(t, Config{MaxCapture: 4096})
	dir := t.TempDir()
	h.watch(dir)
	before, err := h.p.Drops()
	if err != nil {
		t.Fatal(err)
	}
	pid := h.run("big", filepath.Join(dir, "big"), "40000")
	recs := h.records(pid)
	w, ok := recs[1].(Write)
	if !ok || len(w.Data) != 4096 || w.Requested != 40000 || !w.Truncated {
		t.Fatalf("write = %+v", recs[1])
	}
	if !bytes.Equal(w.Data, pattern(4096)) {
		t.Error("captured prefix differs from what was written")
	}
	after, err := h.p.Drops()
	if err != nil {
		t.Fatal(err)
	}
	if after["capture_truncated"] <= before["capture_truncated"] {
		t.Errorf("truncation not counted: before %v after %v", before, after)
	}
}

func TestUseAfterClose(t *testing.T) {
	h := load(t, Config{})
	if err := h.p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := h.p.Watch(t.TempDir()); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Watch after Close: %v", err)
	}
	if _, err := h.p.Drops(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Drops after Close: %v", err)
	}
	if _, err := h.p.Next(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Next after Close: %v", err)
	}
}

func TestMaxCaptureLimit(t *testing.T) {
	if _, err := Load(Config{MaxCapture: MaxCaptureLimit + 1}, nil); err == nil {
		t.Fatal("want error for MaxCapture above limit")
	}
}

func TestWatchScope(t *testing.T) {
	h := load(t, Config{})
	watched, other := t.TempDir(), t.TempDir()
	h.watch(watched)

	// Unwatched directory: nothing.
	h.none(h.run("write", filepath.Join(other, "f"), "secret"), watched)

	// Watched after load, then nested subdirectories.
	nested := filepath.Join(other, "a", "b", "c", "d", "e")
	if err := os.MkdirAll(nested, 0o755); err != nil {
		t.Fatal(err)
	}
	h.watch(other)
	recs := h.records(h.run("write", filepath.Join(nested, "deep.txt"), "x"))
	if o := recs[0].(Open); o.RelPath != "a/b/c/d/e/deep.txt" || o.Path != filepath.Join(nested, "deep.txt") {
		t.Errorf("nested open = %+v", o)
	}

	// Unwatch stops records.
	if err := h.p.Unwatch(other); err != nil {
		t.Fatal(err)
	}
	h.none(h.run("write", filepath.Join(nested, "after.txt"), "y"), watched)
	if err := h.p.Unwatch(other); err == nil {
		t.Error("second Unwatch should fail")
	}
}

// TestUnwatchOpenDescriptor: Unwatch also stops writes through descriptors
// opened before it.
func TestUnwatchOpenDescriptor(t *testing.T) {
	h := load(t, Config{})
	dir, sentinel := t.TempDir(), t.TempDir()
	h.watch(dir)
	h.watch(sentinel)
	cmd := exec.Command(os.Args[0], filepath.Join(dir, "held"))
	cmd.Env = append(os.Environ(), helperEnv+"=hold")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := uint32(cmd.Process.Pid)
	timeout := time.After(10 * time.Second)
	for seen := false; !seen; {
		select {
		case r := <-h.ch:
			if w, ok := r.(Write); ok && w.PID == pid && string(w.Data) == "before" {
				seen = true
			}
		case <-timeout:
			t.Fatal("first write not seen")
		}
	}
	if err := h.p.Unwatch(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := stdin.Write([]byte("\n")); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	h.none(pid, sentinel)
	// The zeroed entry went at the write after Unwatch, taking its fd_hot count along.
	if hot, entries := probeMapCounts(t, h, pid); hot != 0 || entries != 0 {
		t.Errorf("after unwatch and exit: fd_hot sums to %d, %d tracked entries of pid %d left", hot, entries, pid)
	}
}

func TestMountInsideWatchedDir(t *testing.T) {
	h := load(t, Config{})
	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("cannot mount tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })
	if err := os.Mkdir(filepath.Join(mnt, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	h.watch(dir)
	file := filepath.Join(mnt, "sub", "f.txt")
	recs := h.records(h.run("write", file, "data"))
	if o := recs[0].(Open); o.Path != file {
		t.Errorf("open across mount = %+v, want path %s", o, file)
	}
}

func TestIgnoreTGID(t *testing.T) {
	h := load(t, Config{IgnoreTGID: uint32(os.Getpid())})
	dir := t.TempDir()
	h.watch(dir)
	if err := os.WriteFile(filepath.Join(dir, "self"), []byte("agent"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.none(uint32(os.Getpid()), dir)
}

func TestStatusAndDrops(t *testing.T) {
	h := load(t, Config{})
	seen := map[string]bool{}
	for _, s := range h.p.Status() {
		seen[s.Name] = s.Attached
		if !s.Attached && s.Err == nil {
			t.Errorf("%s: not attached without an error", s.Name)
		}
	}
	for _, name := range []string{"open/openat", "write/write", "write/pwrite64", "write/writev", "write/pwritev", "close/close",
		"copy/copy_file_range", "copy/copy_file_range_exit", "copy/sendfile", "copy/sendfile_exit", "copy/splice", "copy/splice_exit"} {
		if !seen[name] {
			t.Errorf("%s not attached", name)
		}
	}
	d, err := h.p.Drops()
	if err != nil {
		t.Fatal(err)
	}
	if len(d) != len(kernel.DropReasons) {
		t.Errorf("drops = %v", d)
	}
}

// copyRecords returns the Write records of an in-kernel copy and checks
// their shape: no data, truncated (re-read needed), the given kind.
func copyRecords(t *testing.T, recs []Record, kind WriteKind) []Write {
	t.Helper()
	var out []Write
	for _, r := range recs {
		w, ok := r.(Write)
		if !ok {
			continue
		}
		if w.Kind != kind || len(w.Data) != 0 || !w.Truncated {
			t.Errorf("write = %+v, want kind %s, no data, truncated", w, kind)
		}
		out = append(out, w)
	}
	return out
}

// TestCopyFileRange: coreutils cp copies with copy_file_range (asking for
// ~2^63 bytes); the record must say how many bytes actually landed.
func TestCopyFileRange(t *testing.T) {
	h := load(t, Config{})
	cpPath, err := exec.LookPath("cp")
	if err != nil {
		t.Skip("no cp on PATH")
	}
	src := filepath.Join(t.TempDir(), "src")
	want := pattern(100_000)
	if err := os.WriteFile(src, want, 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	h.watch(dir)
	dst := filepath.Join(dir, "copy.bin")
	cmd := exec.Command(cpPath, src, dst)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	recs := h.records(uint32(cmd.Process.Pid))
	ws := copyRecords(t, recs, KindCopyFileRange)
	var total uint64
	for _, w := range ws {
		total += w.Requested
		if w.Offset < 0 {
			t.Errorf("copy offset unknown: %+v", w)
		}
	}
	if len(ws) == 0 || total != uint64(len(want)) {
		t.Fatalf("copy_file_range records %+v total %d, want %d bytes (all records %+v)", ws, total, len(want), recs)
	}
	if ws[0].Offset != 0 {
		t.Errorf("first copy at offset %d, want 0", ws[0].Offset)
	}
}

func TestSendfileSplice(t *testing.T) {
	h := load(t, Config{})
	src := filepath.Join(t.TempDir(), "src")
	if err := os.WriteFile(src, pattern(5000), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	h.watch(dir)

	pid := h.run("sendfile", filepath.Join(dir, "sent"), src)
	ws := copyRecords(t, h.records(pid), KindSendfile)
	if len(ws) != 1 || ws[0].Requested != 5000 || ws[0].Offset != 0 {
		t.Errorf("sendfile records %+v, want one of 5000 bytes at 0", ws)
	}

	pid = h.run("splice", filepath.Join(dir, "spliced"), "7", "spliced!")
	ws = copyRecords(t, h.records(pid), KindSplice)
	if len(ws) != 1 || ws[0].Requested != 8 || ws[0].Offset != 7 {
		t.Errorf("splice records %+v, want one of 8 bytes at offset 7", ws)
	}

	// A copy into an unwatched file reports nothing.
	other := t.TempDir()
	pid = h.run("sendfile", filepath.Join(other, "sent"), src)
	h.none(pid, dir)
}
