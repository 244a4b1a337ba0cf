package fileread

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ward-dlp/ward/bpf/internal/kernel"
)

// The test binary doubles as the reader child, so records can be scoped to a pid the test
// started (the host has other activity).
const helperEnv = "WARD_FILEREAD_HELPER"

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

// helper opens args[1:] as op says, args[0] times each.
func helper(op string, args []string) error {
	n, err := strconv.Atoi(args[0])
	if err != nil {
		return err
	}
	flags := unix.O_RDONLY
	switch op {
	case "read":
	case "rdwr":
		flags = unix.O_RDWR
	case "write":
		flags = unix.O_WRONLY
	case "openat2":
		for range n {
			for _, p := range args[1:] {
				fd, err := unix.Openat2(unix.AT_FDCWD, p, &unix.OpenHow{Flags: unix.O_RDONLY | unix.O_CLOEXEC})
				if err != nil {
					return err
				}
				unix.Close(fd)
			}
		}
		return nil
	default:
		return fmt.Errorf("unknown op %q", op)
	}
	for range n {
		for _, p := range args[1:] {
			fd, err := unix.Open(p, flags|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			unix.Close(fd)
		}
	}
	return nil
}

func runHelper(t *testing.T, op string, n int, paths ...string) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{strconv.Itoa(n)}, paths...)...)
	cmd.Env = append(os.Environ(), helperEnv+"="+op)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper %s: %v\n%s", op, err, out)
	}
	return cmd.Process.Pid
}

// TestLayout pins the decoder's offsets to the C struct via bpf2go's type.
func TestLayout(t *testing.T) {
	var e filereadReadEvent
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"size", unsafe.Sizeof(e), readLen},
		{"pid", unsafe.Offsetof(e.Pid), 4},
		{"tgid", unsafe.Offsetof(e.Tgid), 8},
		{"uid", unsafe.Offsetof(e.Uid), 12},
		{"gid", unsafe.Offsetof(e.Gid), 16},
		{"dev", unsafe.Offsetof(e.Dev), 20},
		{"ino", unsafe.Offsetof(e.Ino), 24},
		{"ts", unsafe.Offsetof(e.TsBootNs), 32},
		{"start", unsafe.Offsetof(e.StartBootNs), 40},
		{"ppid", unsafe.Offsetof(e.Ppid), 48},
		{"class", unsafe.Offsetof(e.Class), 52},
		{"flags", unsafe.Offsetof(e.F_flags), 56},
		{"cgroup", unsafe.Offsetof(e.CgroupId), 64},
		{"comm", unsafe.Offsetof(e.Comm), 72},
	} {
		if c.got != c.want {
			t.Errorf("%s: C layout %d, decoder assumes %d", c.name, c.got, c.want)
		}
	}
	var k filereadInodeKey
	if unsafe.Sizeof(k) != unsafe.Sizeof(inodeKey{}) || unsafe.Offsetof(k.Ino) != unsafe.Offsetof(inodeKey{}.Ino) {
		t.Errorf("inode_key layout differs from the Go key")
	}
}

func record(pid uint32) []byte {
	b := make([]byte, readLen)
	le.PutUint32(b[0:], evRead)
	le.PutUint32(b[4:], pid+1)
	le.PutUint32(b[8:], pid)
	le.PutUint32(b[12:], 1000)
	le.PutUint32(b[16:], 1001)
	le.PutUint32(b[20:], 8<<20|1)
	le.PutUint64(b[24:], 4242)
	le.PutUint64(b[32:], 2_000_000_000)
	le.PutUint64(b[40:], 1_000_000_000)
	le.PutUint32(b[48:], 1)
	le.PutUint32(b[52:], 1)
	le.PutUint32(b[56:], unix.O_RDWR)
	le.PutUint64(b[64:], 77)
	copy(b[72:], "cat\x00")
	return b
}

func TestDecode(t *testing.T) {
	var clock kernel.Clock
	r, err := decode(record(99), &clock)
	if err != nil {
		t.Fatal(err)
	}
	if r.PID != 99 || r.TID != 100 || r.UID != 1000 || r.GID != 1001 || r.Dev != 8<<20|1 || r.Ino != 4242 ||
		r.PPID != 1 || r.Class != 1 || r.CgroupID != 77 || r.Comm != "cat" || !r.ReadWrite() {
		t.Errorf("decoded %+v", r)
	}
	if !r.StartTime.Before(r.Time) || r.Time.IsZero() {
		t.Errorf("times: start %v, read %v", r.StartTime, r.Time)
	}
	for _, b := range [][]byte{nil, {1, 0}, record(1)[:readLen-1], append([]byte{2, 0, 0, 0}, record(1)[4:]...)} {
		if _, err := decode(b, &clock); !errors.Is(err, ErrMalformed) {
			t.Errorf("decode(%d bytes) = %v, want ErrMalformed", len(b), err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(record(1))
	f.Add([]byte{1, 0, 0, 0})
	var clock kernel.Clock
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decode(b, &clock)
		if err == nil && len(b) < readLen {
			t.Fatalf("decoded a %d-byte record: %+v", len(b), r)
		}
	})
}

func TestKernelDev(t *testing.T) {
	if got := KernelDev(unix.Mkdev(259, 3)); got != 259<<20|3 {
		t.Errorf("KernelDev = %#x", got)
	}
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loading BPF programs needs root")
	}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// collect reads records until quiet for d, keeping those of pid.
func collect(t *testing.T, p *Probe, pid int, d time.Duration) []Read {
	t.Helper()
	type res struct {
		r   Read
		err error
	}
	ch := make(chan res, 64)
	go func() {
		for {
			r, err := p.Next()
			ch <- res{r, err}
			if errors.Is(err, ErrClosed) {
				return
			}
		}
	}()
	var out []Read
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case x := <-ch:
			if x.err != nil {
				if errors.Is(x.err, ErrClosed) {
					return out
				}
				t.Fatalf("next: %v", x.err)
			}
			if int(x.r.PID) == pid {
				out = append(out, x.r)
			}
		case <-timer.C:
			p.Close()
			for x := range ch { // drain until the reader sees ErrClosed
				if errors.Is(x.err, ErrClosed) {
					break
				}
				if x.err == nil && int(x.r.PID) == pid {
					out = append(out, x.r)
				}
			}
			return out
		}
	}
}

func stat(t *testing.T, path string) (uint32, uint64) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return KernelDev(st.Dev), st.Ino
}

func files(t *testing.T) (tagged, other string) {
	t.Helper()
	dir := t.TempDir()
	tagged, other = filepath.Join(dir, "chart.txt"), filepath.Join(dir, "other.txt")
	for _, p := range []string{tagged, other} {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return tagged, other
}

// TestReadOfTaggedFile: a process opening a tagged file five times is reported once, with
// its pid, user and the inode; the untagged file it also opens is not reported.
// TestReadOfTaggedFile runs with the BTF filter this kernel loads and with the plain one
// older kernels fall back to.
func TestReadOfTaggedFile(t *testing.T) {
	needRoot(t)
	for _, c := range []struct {
		plain bool
		prog  string
	}{{false, "exit_open_btf"}, {true, "exit_openat"}} {
		t.Run(c.prog, func(t *testing.T) {
			p, err := Load(Config{PlainPrograms: c.plain}, quiet())
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			for _, s := range p.Status() {
				t.Log(s)
				if s.Name == "openat" && s.Program != c.prog {
					t.Fatalf("openat runs %q, want %q", s.Program, c.prog)
				}
			}
			testReadOfTaggedFile(t, p)
		})
	}
}

func testReadOfTaggedFile(t *testing.T, p *Probe) {
	tagged, other := files(t)
	dev, ino := stat(t, tagged)
	if err := p.Tag(dev, ino, 1); err != nil {
		t.Fatal(err)
	}
	pid := runHelper(t, "read", 5, tagged, other)
	got := collect(t, p, pid, time.Second)
	if len(got) != 1 {
		t.Fatalf("got %d records for pid %d, want 1 (rate limited): %+v", len(got), pid, got)
	}
	r := got[0]
	if r.Dev != dev || r.Ino != ino || r.Class != 1 || r.UID != uint32(os.Getuid()) || r.PPID != uint32(os.Getpid()) || r.ReadWrite() {
		t.Errorf("record %+v; want dev %d ino %d uid %d ppid %d", r, dev, ino, os.Getuid(), os.Getpid())
	}
	if time.Since(r.Time) > time.Minute || r.StartTime.After(r.Time) {
		t.Errorf("times: start %v read %v", r.StartTime, r.Time)
	}
}

// TestOpenModes: read-write opens and openat2 are reported; write-only opens are not, and
// nothing is reported once the file is untagged.
func TestOpenModes(t *testing.T) {
	needRoot(t)
	tagged, _ := files(t)
	dev, ino := stat(t, tagged)
	for _, c := range []struct {
		op   string
		want int
	}{{"rdwr", 1}, {"openat2", 1}, {"write", 0}} {
		t.Run(c.op, func(t *testing.T) {
			p, err := Load(Config{}, quiet())
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			if err := p.Tag(dev, ino, 2); err != nil {
				t.Fatal(err)
			}
			pid := runHelper(t, c.op, 2, tagged)
			if got := collect(t, p, pid, 700*time.Millisecond); len(got) != c.want {
				t.Errorf("%s: %d records, want %d: %+v", c.op, len(got), c.want, got)
			}
		})
	}
	t.Run("untagged", func(t *testing.T) {
		p, err := Load(Config{}, quiet())
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		if err := p.Tag(dev, ino, 2); err != nil {
			t.Fatal(err)
		}
		if err := p.Untag(dev, ino); err != nil {
			t.Fatal(err)
		}
		if err := p.Untag(dev, ino); err != nil {
			t.Fatalf("second untag: %v", err)
		}
		pid := runHelper(t, "read", 1, tagged)
		if got := collect(t, p, pid, 700*time.Millisecond); len(got) != 0 {
			t.Errorf("untagged file reported: %+v", got)
		}
	})
}

// TestEmitIntervalExpires: after the interval the same process and file are reported again.
func TestEmitIntervalExpires(t *testing.T) {
	needRoot(t)
	p, err := Load(Config{EmitInterval: 50 * time.Millisecond}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	tagged, _ := files(t)
	dev, ino := stat(t, tagged)
	if err := p.Tag(dev, ino, 1); err != nil {
		t.Fatal(err)
	}
	// A shell reads the file, sleeps past the interval, reads again: two records.
	cmd := exec.Command("sh", "-c", `exec 3<"$1"; exec 3<&-; sleep 0.2; exec 3<"$1"`, "sh", tagged)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if got := collect(t, p, cmd.Process.Pid, 700*time.Millisecond); len(got) != 2 {
		t.Errorf("%d records, want 2: %+v", len(got), got)
	}
}

// TestRingFill reports the ring's size and that unread records occupy it.
func TestRingFill(t *testing.T) {
	needRoot(t)
	p, err := Load(Config{RingBytes: 64 << 10}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	tagged, _ := files(t)
	dev, ino := stat(t, tagged)
	if err := p.Tag(dev, ino, 1); err != nil {
		t.Fatal(err)
	}
	runHelper(t, "read", 1, tagged)
	used, size := p.RingFill()
	if size != 64<<10 || used < readLen {
		t.Errorf("fill = %d of %d, want ≥ %d of %d", used, size, readLen, 64<<10)
	}
	p.Close()
	if used, _ := p.RingFill(); used != 0 {
		t.Errorf("fill after close = %d", used)
	}
}
