package filewrite

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ward-dlp/ward/bpf/internal/kernel"
)

// Helper ops for the egress hooks, run by the test binary as a child (see helper in
// filewrite_test.go, which dispatches unknown ops here).
func egressHelper(op string, args []string) (bool, error) {
	switch op {
	case "rename-abs": // old new: rename(2) with the paths as given
		return true, unix.Rename(args[0], args[1])
	case "rename-rel": // dir old new: chdir(dir), then renameat(AT_FDCWD, old, AT_FDCWD, new)
		if err := os.Chdir(args[0]); err != nil {
			return true, err
		}
		return true, unix.Renameat(unix.AT_FDCWD, args[1], unix.AT_FDCWD, args[2])
	case "truncate": // path
		return true, unix.Truncate(args[0], 3)
	case "ftruncate-mmap": // path: open RDWR, ftruncate, writable shared map, store, msync
		fd, err := unix.Open(args[0], unix.O_RDWR|unix.O_CREAT, 0o644)
		if err != nil {
			return true, err
		}
		defer unix.Close(fd)
		if err := unix.Ftruncate(fd, 4096); err != nil {
			return true, err
		}
		m, err := unix.Mmap(fd, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			return true, err
		}
		copy(m, "mapped secret")
		if err := unix.Msync(m, unix.MS_SYNC); err != nil {
			return true, err
		}
		// A private mapping is not egress and must not be flagged.
		p, err := unix.Mmap(fd, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE)
		if err != nil {
			return true, err
		}
		_ = unix.Munmap(p)
		return true, unix.Munmap(m)
	case "dup": // path: write through dup, dup3 and F_DUPFD copies, close the original first
		fd, err := unix.Open(args[0], unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC, 0o644)
		if err != nil {
			return true, err
		}
		d1, err := unix.Dup(fd)
		if err != nil {
			return true, err
		}
		if err := unix.Dup3(fd, 40, 0); err != nil {
			return true, err
		}
		d3, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 50)
		if err != nil {
			return true, err
		}
		unix.Close(fd)
		for i, d := range []int{d1, 40, d3} {
			if _, err := unix.Write(d, []byte{'a' + byte(i)}); err != nil {
				return true, err
			}
			unix.Close(d)
		}
		return true, nil
	case "mprotect": // path: read-only shared map of a RDWR file, close, mprotect writable, store
		fd, err := unix.Open(args[0], unix.O_RDWR|unix.O_CREAT, 0o644)
		if err != nil {
			return true, err
		}
		if err := unix.Ftruncate(fd, 4096); err != nil {
			return true, err
		}
		m, err := unix.Mmap(fd, 0, 4096, unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			return true, err
		}
		// A private mapping made writable is not egress and must not be flagged.
		p, err := unix.Mmap(fd, 0, 4096, unix.PROT_READ, unix.MAP_PRIVATE)
		if err != nil {
			return true, err
		}
		unix.Close(fd) // the mapping outlives the descriptor
		if err := unix.Mprotect(p, unix.PROT_READ|unix.PROT_WRITE); err != nil {
			return true, err
		}
		if err := unix.Mprotect(m, unix.PROT_READ|unix.PROT_WRITE); err != nil {
			return true, err
		}
		copy(m, "stored through mprotect")
		if err := unix.Msync(m, unix.MS_SYNC); err != nil {
			return true, err
		}
		_ = unix.Munmap(p)
		return true, unix.Munmap(m)
	case "exit-open": // path: write to a tracked fd and exit without closing it
		fd, err := unix.Open(args[0], unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC, 0o644)
		if err != nil {
			return true, err
		}
		if _, err := unix.Write(fd, []byte("left open")); err != nil {
			return true, err
		}
		os.Exit(0)
	case "uring": // path: hold a tracked fd, set up an io_uring and enter it
		fd, err := unix.Open(args[0], unix.O_WRONLY|unix.O_CREAT, 0o644)
		if err != nil {
			return true, err
		}
		defer unix.Close(fd)
		var params [120]byte // struct io_uring_params
		ring, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, 4, uintptr(unsafe.Pointer(&params[0])), 0)
		if errno != 0 {
			return true, errno
		}
		defer unix.Close(int(ring))
		if _, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, ring, 0, 0, 0, 0, 0); errno != 0 {
			return true, errno
		}
		return true, nil
	}
	return false, nil
}

// pathOps collects pid's PathOp records until a sentinel child's Close arrives (ring order).
func (h *harness) until(pid uint32, sentinelDir string) []Record {
	h.t.Helper()
	spid := h.run("write", filepath.Join(sentinelDir, "sentinel"), "s")
	var out []Record
	timeout := time.After(10 * time.Second)
	for {
		select {
		case r := <-h.ch:
			switch p := pidOf(r); {
			case p == pid:
				out = append(out, r)
			case p == spid:
				if _, ok := r.(Close); ok {
					return out
				}
			}
		case <-timeout:
			h.t.Fatalf("timeout waiting for sentinel; have %+v", out)
		}
	}
}

func pidOfOp(r Record) uint32 {
	switch r := r.(type) {
	case PathOp:
		return r.PID
	case FdOp:
		return r.PID
	}
	return 0
}

func TestRenameIntoWatched(t *testing.T) {
	h := load(t, Config{})
	outside, watched := t.TempDir(), t.TempDir()
	id := h.watch(watched)
	if err := os.Mkdir(filepath.Join(watched, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	mkfile := func(name string) string {
		p := filepath.Join(outside, name)
		if err := os.WriteFile(p, []byte("note"), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	onlyRename := func(recs []Record) PathOp {
		t.Helper()
		var ops []PathOp
		for _, r := range recs {
			if o, ok := r.(PathOp); ok {
				ops = append(ops, o)
			}
		}
		if len(ops) != 1 {
			t.Fatalf("want one rename record, got %+v", recs)
		}
		return ops[0]
	}

	t.Run("coreutils mv (dirfd + basename)", func(t *testing.T) {
		mv, err := exec.LookPath("mv")
		if err != nil {
			t.Skip("no mv")
		}
		src := mkfile("note.pdf")
		cmd := exec.Command(mv, src, filepath.Join(watched, "sub")+"/")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("mv: %v %s", err, out)
		}
		o := onlyRename(h.until(uint32(cmd.Process.Pid), watched))
		want := filepath.Join(watched, "sub", "note.pdf")
		if o.Op != OpRename || o.Path != want || o.WatchID != id || o.WatchDir != watched || o.Unresolved || o.OldPath != src {
			t.Errorf("rename = %+v, want path %s from %s", o, want, src)
		}
		if o.UID != uint32(os.Getuid()) || o.Comm != "mv" {
			t.Errorf("rename attribution = %+v", o)
		}
	})
	t.Run("absolute paths (prefix match)", func(t *testing.T) {
		src := mkfile("abs.pdf")
		dst := filepath.Join(watched, "sub", "abs.pdf")
		pid := h.run("rename-abs", src, dst)
		o := onlyRename(h.until(pid, watched))
		if o.Path != dst || o.WatchID != id || o.Unresolved || o.OldPath != src {
			t.Errorf("rename = %+v, want %s", o, dst)
		}
	})
	t.Run("relative with a slash from an unwatched cwd", func(t *testing.T) {
		mkfile("rel.pdf")
		rel, err := filepath.Rel(outside, filepath.Join(watched, "rel.pdf"))
		if err != nil {
			t.Fatal(err)
		}
		pid := h.run("rename-rel", outside, "rel.pdf", rel)
		o := onlyRename(h.until(pid, watched))
		if o.Path != filepath.Join(watched, "rel.pdf") || !o.Unresolved || o.OldPath != filepath.Join(outside, "rel.pdf") {
			t.Errorf("rename = %+v", o)
		}
	})
	t.Run("within unwatched directories: nothing", func(t *testing.T) {
		src := mkfile("stay.txt")
		h.none(h.run("rename-abs", src, filepath.Join(outside, "stay2.txt")), watched)
		mkfile("stay3.txt")
		h.none(h.run("rename-rel", outside, "stay3.txt", "stay4.txt"), watched)
	})
	t.Run("failed rename: nothing", func(t *testing.T) {
		h.none(h.runMayFail("rename-abs", filepath.Join(outside, "missing"), filepath.Join(watched, "x")), watched)
	})
}

// helperMayFail runs a helper that is expected to fail.
func (h *harness) runMayFail(op string, args ...string) uint32 {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), helperEnv+"="+op)
	_ = cmd.Run()
	return uint32(cmd.Process.Pid)
}

func TestTruncateMmapDup(t *testing.T) {
	h := load(t, Config{})
	watched, sentinel := t.TempDir(), t.TempDir()
	h.watch(watched)
	h.watch(sentinel)

	t.Run("truncate by path", func(t *testing.T) {
		f := filepath.Join(watched, "t.txt")
		if err := os.WriteFile(f, []byte("0123456789"), 0o644); err != nil {
			t.Fatal(err)
		}
		var ops []PathOp
		for _, r := range h.until(h.run("truncate", f), sentinel) {
			if o, ok := r.(PathOp); ok {
				ops = append(ops, o)
			}
		}
		if len(ops) != 1 || ops[0].Op != OpTruncate || ops[0].Path != f || ops[0].Length != 3 {
			t.Errorf("truncate records %+v", ops)
		}
	})
	t.Run("ftruncate and shared writable mmap", func(t *testing.T) {
		f := filepath.Join(watched, "m.bin")
		var fds []FdOp
		for _, r := range h.until(h.run("ftruncate-mmap", f), sentinel) {
			if o, ok := r.(FdOp); ok {
				fds = append(fds, o)
			}
		}
		var st unix.Stat_t
		if err := unix.Stat(f, &st); err != nil {
			t.Fatal(err)
		}
		if len(fds) != 2 || fds[0].Op != OpFtruncate || fds[0].Arg != 4096 || fds[1].Op != OpMmapShared ||
			fds[1].Arg != 4096 || fds[1].Prot&unix.PROT_WRITE == 0 || fds[1].Ino != st.Ino {
			t.Errorf("fd ops %+v (want ftruncate 4096, one shared writable mmap; the private one unflagged)", fds)
		}
	})
	t.Run("dup copies are tracked", func(t *testing.T) {
		f := filepath.Join(watched, "d.txt")
		pid := h.run("dup", f)
		recs := h.records(pid) // up to the first close (the original fd)
		recs = append(recs, h.until(pid, sentinel)...)
		var dups []FdOp
		data := map[int32]string{}
		for _, r := range recs {
			switch r := r.(type) {
			case FdOp:
				if r.Op == OpDup {
					dups = append(dups, r)
				}
			case Write:
				data[r.FD] = string(r.Data)
			}
		}
		if len(dups) != 3 || dups[1].FD != 40 || dups[2].FD < 50 {
			t.Fatalf("dup records %+v", dups)
		}
		if data[dups[0].FD] != "a" || data[40] != "b" || data[dups[2].FD] != "c" {
			t.Errorf("writes through copies: %v (records %+v)", data, recs)
		}
	})
	t.Run("io_uring by a process holding a tracked fd", func(t *testing.T) {
		var ops []FdOp
		for _, r := range h.until(h.run("uring", filepath.Join(watched, "u.txt")), sentinel) {
			if o, ok := r.(FdOp); ok {
				ops = append(ops, o)
			}
		}
		if len(ops) != 2 || ops[0].Op != OpIOURingSetup || ops[1].Op != OpIOURingEnter || ops[0].WatchID == 0 {
			t.Errorf("io_uring records %+v", ops)
		}
	})
}

func TestDecodeEgress(t *testing.T) {
	var clock kernel.Clock
	rec := func(flags uint16, wid uint32, newName, oldName string, base ...string) []byte {
		b := make([]byte, pathOpLen)
		le.PutUint32(b[0:], evPathOp)
		le.PutUint32(b[4:], 10)
		le.PutUint32(b[28:], wid)
		le.PutUint16(b[32:], uint16(OpRename))
		le.PutUint16(b[34:], flags)
		le.PutUint16(b[36:], uint16(len(base)))
		copy(b[pathOpHeaderLen:], newName)
		copy(b[pathOpHeaderLen+pathName:], oldName)
		for i, n := range base {
			copy(b[pathOpHeaderLen+2*pathName+i*nameSlot:], n)
		}
		return b
	}
	for _, c := range []struct {
		name    string
		in      []byte
		want    string
		wantErr bool
	}{
		{"watched base", rec(pathOpBaseWatched, 1, "x.pdf", "/a/x.pdf", "sub"), "/watched/sub/x.pdf", false},
		{"prefix", rec(pathOpPrefix, 1, "/watched//y.pdf", ""), "/watched/y.pdf", false},
		{"unresolved from root", rec(pathOpUnresolved, 0, "Dropbox/z", "", "u", "home"), "/home/u/Dropbox/z", false},
		{"prefix but relative", rec(pathOpPrefix, 1, "rel", ""), "", true},
		{"no flag", rec(0, 1, "x", ""), "", true},
		{"empty name", rec(pathOpBaseWatched, 1, "", ""), "", true},
		{"short", rec(pathOpBaseWatched, 1, "x", "")[:pathOpLen-1], "", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, err := decode(c.in, testWatchPath, &clock)
			if c.wantErr {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("want ErrMalformed, got %v %+v", err, r)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if o := r.(PathOp); o.Path != c.want {
				t.Errorf("path %q, want %q (%+v)", o.Path, c.want, o)
			}
		})
	}
	bad := make([]byte, fdOpLen)
	le.PutUint32(bad[0:], evFdOp)
	le.PutUint16(bad[40:], 99)
	if _, err := decode(bad, testWatchPath, &clock); !errors.Is(err, ErrMalformed) {
		t.Errorf("unknown fdop: %v", err)
	}
	if PathHash("/media/usb") == PathHash("/media/usb/") {
		t.Error("hash must distinguish a trailing slash (the kernel hashes prefixes without it)")
	}
}

func TestEgressLayout(t *testing.T) {
	var p filewritePathopEvent
	var f filewriteFdopEvent
	for _, x := range []struct {
		name      string
		got, want uintptr
	}{
		{"pathop size", unsafe.Sizeof(p), pathOpLen},
		{"pathop.op", unsafe.Offsetof(p.Op), 32},
		{"pathop.old_watch_id", unsafe.Offsetof(p.OldWatchId), 40},
		{"pathop.length", unsafe.Offsetof(p.Length), 48},
		{"pathop.comm", unsafe.Offsetof(p.Comm), 56},
		{"pathop.new_name", unsafe.Offsetof(p.NewName), pathOpHeaderLen},
		{"pathop.old_base", unsafe.Offsetof(p.OldBase), pathOpHeaderLen + 2*pathName + baseDepth*nameSlot},
		{"fdop size", unsafe.Sizeof(f), fdOpLen},
		{"fdop.op", unsafe.Offsetof(f.Op), 40},
		{"fdop.arg32", unsafe.Offsetof(f.Arg32), 44},
		{"fdop.arg", unsafe.Offsetof(f.Arg), 48},
	} {
		if x.got != x.want {
			t.Errorf("%s: C layout %d, decoder assumes %d", x.name, x.got, x.want)
		}
	}
}
