package process

import (
	"encoding/binary"
	"errors"
	"golang.org/x/sys/unix"
	"log/slog"
	"os"
	"os/exec"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/ward-dlp/ward/bpf/internal/kernel"
)

// TestLayout pins the decoder's offsets to the C structs via bpf2go's types.
func TestLayout(t *testing.T) {
	var ex processExecEvent
	checks := []struct {
		name      string
		got, want uintptr
	}{
		{"exec size", unsafe.Sizeof(ex), execLen},
		{"exec.ts", unsafe.Offsetof(ex.TsBootNs), 8},
		{"exec.ppid", unsafe.Offsetof(ex.Ppid), 16},
		{"exec.flags", unsafe.Offsetof(ex.Flags), 28},
		{"exec.start", unsafe.Offsetof(ex.StartBootNs), 32},
		{"exec.cgroup", unsafe.Offsetof(ex.CgroupId), 40},
		{"exec.comm", unsafe.Offsetof(ex.Comm), 48},
		{"exec.filename_len", unsafe.Offsetof(ex.FilenameLen), 64},
		{"exec.args_len", unsafe.Offsetof(ex.ArgsLen), 66},
		{"exec.exe_dev", unsafe.Offsetof(ex.ExeDev), 68},
		{"exec.exe_ino", unsafe.Offsetof(ex.ExeIno), 72},
		{"exec.filename", unsafe.Offsetof(ex.Filename), execFilenameOff},
		{"exec.args", unsafe.Offsetof(ex.Args), execArgsOff},
		{"exec.filename cap", unsafe.Sizeof(ex.Filename), execFilenameMax},
		{"exec.args cap", unsafe.Sizeof(ex.Args), execArgsMax},
	}
	var xt processExitEvent
	checks = append(checks, []struct {
		name      string
		got, want uintptr
	}{
		{"exit size", unsafe.Sizeof(xt), exitLen},
		{"exit.ppid", unsafe.Offsetof(xt.Ppid), 16},
		{"exit.code", unsafe.Offsetof(xt.ExitCode), 20},
		{"exit.start", unsafe.Offsetof(xt.StartBootNs), 24},
		{"exit.cgroup", unsafe.Offsetof(xt.CgroupId), 32},
		{"exit.comm", unsafe.Offsetof(xt.Comm), 40},
	}...)
	var fk processForkEvent
	checks = append(checks, []struct {
		name      string
		got, want uintptr
	}{
		{"fork size", unsafe.Sizeof(fk), forkLen},
		{"fork.tgid", unsafe.Offsetof(fk.Tgid), 4},
		{"fork.ts", unsafe.Offsetof(fk.TsBootNs), 8},
		{"fork.parent_tgid", unsafe.Offsetof(fk.ParentTgid), 16},
		{"fork.parent_pid", unsafe.Offsetof(fk.ParentPid), 20},
		{"fork.uid", unsafe.Offsetof(fk.Uid), 24},
		{"fork.gid", unsafe.Offsetof(fk.Gid), 28},
		{"fork.start", unsafe.Offsetof(fk.StartBootNs), 32},
		{"fork.parent_start", unsafe.Offsetof(fk.ParentStartBootNs), 40},
		{"fork.cgroup", unsafe.Offsetof(fk.CgroupId), 48},
		{"fork.comm", unsafe.Offsetof(fk.Comm), 56},
	}...)
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: C layout %d, decoder assumes %d", c.name, c.got, c.want)
		}
	}
}

func execRecord(pid uint32, filename string, args []byte) []byte {
	b := make([]byte, execLen)
	le := binary.LittleEndian
	le.PutUint32(b[0:], evExec)
	le.PutUint32(b[4:], pid)
	le.PutUint64(b[8:], 1_000_000_000)
	le.PutUint32(b[16:], 1)
	le.PutUint32(b[20:], 1000)
	le.PutUint32(b[24:], 1001)
	le.PutUint32(b[28:], flagArgsTruncated)
	le.PutUint64(b[32:], 500)
	le.PutUint64(b[40:], 77)
	copy(b[48:], "true\x00")
	le.PutUint16(b[64:], uint16(len(filename)))
	le.PutUint16(b[66:], uint16(len(args)))
	le.PutUint32(b[68:], 0x800001)
	le.PutUint64(b[72:], 4242)
	copy(b[execFilenameOff:], filename)
	copy(b[execArgsOff:], args)
	return b
}

func exitRecord(pid, status uint32) []byte {
	b := make([]byte, exitLen)
	le := binary.LittleEndian
	le.PutUint32(b[0:], evExit)
	le.PutUint32(b[4:], pid)
	le.PutUint64(b[8:], 2_000_000_000)
	le.PutUint32(b[16:], 1)
	le.PutUint32(b[20:], status)
	copy(b[40:], "sh")
	return b
}

func forkRecord(child, parent uint32, start uint64) []byte {
	b := make([]byte, forkLen)
	le := binary.LittleEndian
	le.PutUint32(b[0:], evFork)
	le.PutUint32(b[4:], child)
	le.PutUint64(b[8:], 3_000_000_000)
	le.PutUint32(b[16:], parent)
	le.PutUint32(b[20:], parent+1)
	le.PutUint32(b[24:], 1000)
	le.PutUint32(b[28:], 1001)
	le.PutUint64(b[32:], start)
	le.PutUint64(b[48:], 77)
	copy(b[56:], "bash")
	return b
}

func TestDecode(t *testing.T) {
	var clock kernel.Clock
	badLen := execRecord(1, "", nil)
	binary.LittleEndian.PutUint16(badLen[66:], execArgsMax+1)

	tests := []struct {
		name    string
		in      []byte
		want    Record
		wantErr bool
	}{
		{name: "empty", in: nil, wantErr: true},
		{name: "short type", in: []byte{1, 0}, wantErr: true},
		{name: "unknown type", in: []byte{9, 0, 0, 0, 0, 0, 0, 0}, wantErr: true},
		{name: "short exec", in: execRecord(1, "/bin/true", nil)[:execLen-1], wantErr: true},
		{name: "short exit", in: exitRecord(1, 0)[:exitLen-1], wantErr: true},
		{name: "exec args length out of range", in: badLen, wantErr: true},
		{
			name: "exec",
			in:   execRecord(42, "/bin/true", []byte("true\x00a b\x00\x00c\x00")),
			want: Exec{PID: 42, PPID: 1, UID: 1000, GID: 1001, Comm: "true", Filename: "/bin/true",
				Args: []string{"true", "a b", "", "c"}, ArgsTruncated: true, CgroupID: 77, ExeDev: 0x800001, ExeIno: 4242},
		},
		{
			name: "exec truncated last arg has no NUL",
			in:   execRecord(42, "/x", []byte("x\x00abc")),
			want: Exec{PID: 42, PPID: 1, UID: 1000, GID: 1001, Comm: "true", Filename: "/x",
				Args: []string{"x", "abc"}, ArgsTruncated: true, CgroupID: 77, ExeDev: 0x800001, ExeIno: 4242},
		},
		{name: "short fork", in: forkRecord(1, 2, 5)[:forkLen-1], wantErr: true},
		{name: "fork", in: forkRecord(8, 4, 5), want: Fork{PID: 8, ParentTGID: 4, ParentPID: 5, UID: 1000, GID: 1001, Comm: "bash", CgroupID: 77}},
		{name: "fork without child start", in: forkRecord(8, 4, 0), want: Fork{PID: 8, ParentTGID: 4, ParentPID: 5, UID: 1000, GID: 1001, Comm: "bash", CgroupID: 77}},
		{name: "exit code", in: exitRecord(7, 3<<8), want: Exit{PID: 7, PPID: 1, Comm: "sh", Status: 3 << 8, ExitCode: 3}},
		{name: "exit signal", in: exitRecord(7, 9), want: Exit{PID: 7, PPID: 1, Comm: "sh", Status: 9, Signal: 9}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decode(tt.in, &clock)
			if tt.wantErr {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("want ErrMalformed, got %v (%#v)", err, got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// Times depend on the host clock; check them separately.
			switch g := got.(type) {
			case Exec:
				if g.Time.IsZero() || g.StartTime.IsZero() {
					t.Errorf("times not converted: %v %v", g.Time, g.StartTime)
				}
				g.Time, g.StartTime = time.Time{}, time.Time{}
				got = g
			case Exit:
				g.Time = time.Time{}
				got = g
			case Fork:
				if g.Time.IsZero() {
					t.Error("fork time not converted")
				}
				if start := binary.LittleEndian.Uint64(tt.in[32:]); (start == 0) != g.StartTime.IsZero() {
					t.Errorf("child start time %v from boot ns %d", g.StartTime, start)
				}
				g.Time, g.StartTime = time.Time{}, time.Time{}
				got = g
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %#v\nwant %#v", got, tt.want)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(execRecord(1, "/bin/true", []byte("true\x00")))
	f.Add(exitRecord(1, 0))
	f.Add(forkRecord(2, 1, 5))
	f.Add([]byte{})
	var clock kernel.Clock
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decode(b, &clock)
		if (r == nil) == (err == nil) {
			t.Fatalf("exactly one of record/error expected: %v %v", r, err)
		}
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("unexpected error kind: %v", err)
		}
	})
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to load BPF programs")
	}
}

func loadProbe(t *testing.T, cfg Config) (*Probe, <-chan Record) {
	t.Helper()
	requireRoot(t)
	p, err := Load(cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	for _, s := range p.Status() {
		t.Log(s)
	}
	ch := make(chan Record, 1024)
	go func() {
		defer close(ch)
		for {
			r, err := p.Next()
			if errors.Is(err, ErrClosed) {
				return
			}
			if err != nil {
				t.Errorf("Next: %v", err)
				return
			}
			ch <- r
		}
	}()
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		for range ch { // drain until the reader goroutine exits
		}
	})
	return p, ch
}

func waitFor(t *testing.T, ch <-chan Record, pid uint32, n int) (Exec, Exit) {
	t.Helper()
	var ex Exec
	var xt Exit
	var gotExec, gotExit bool
	deadline := time.After(10 * time.Second)
	for !(gotExec && gotExit) {
		select {
		case r, ok := <-ch:
			if !ok {
				t.Fatal("probe closed early")
			}
			switch r := r.(type) {
			case Exec:
				if r.PID == pid {
					ex, gotExec = r, true
				}
			case Exit:
				if r.PID == pid {
					xt, gotExit = r, true
				}
			}
		case <-deadline:
			t.Fatalf("timeout: exec seen %v, exit seen %v for pid %d", gotExec, gotExit, pid)
		}
	}
	return ex, xt
}

// TestExecExit runs once per hook kind so every fallback is exercised.
func TestExecExit(t *testing.T) {
	for _, kind := range []string{"tp_btf", "raw_tp", "tracepoint"} {
		t.Run(kind, func(t *testing.T) { testExecExit(t, kind) })
	}
}

func testExecExit(t *testing.T, kind string) {
	p, ch := loadProbe(t, Config{onlyKind: kind})
	for _, s := range p.Status() {
		if !s.Attached {
			t.Fatalf("%s not attached on this test kernel: %v", s.Name, s.Err)
		}
		if !strings.HasPrefix(s.Hook, kind+"/") {
			t.Errorf("%s attached via %s, want %s", s.Name, s.Hook, kind)
		}
	}

	before := time.Now()
	cmd := exec.Command("/bin/sh", "-c", "exit 7", "ward-arg0", "two words")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := uint32(cmd.Process.Pid)
	if err := cmd.Wait(); err == nil || cmd.ProcessState.ExitCode() != 7 {
		t.Fatalf("child: %v", err)
	}

	ex, xt := waitFor(t, ch, pid, 2)
	wantArgs := []string{"/bin/sh", "-c", "exit 7", "ward-arg0", "two words"}
	if !slices.Equal(ex.Args, wantArgs) {
		t.Errorf("args = %q, want %q", ex.Args, wantArgs)
	}
	if ex.PPID != uint32(os.Getpid()) {
		t.Errorf("ppid = %d, want %d", ex.PPID, os.Getpid())
	}
	if ex.UID != uint32(os.Getuid()) || ex.GID != uint32(os.Getgid()) {
		t.Errorf("uid/gid = %d/%d", ex.UID, ex.GID)
	}
	if ex.Filename != "/bin/sh" {
		t.Errorf("filename = %q", ex.Filename)
	}
	if ex.Comm != "sh" {
		t.Errorf("comm = %q", ex.Comm)
	}
	if ex.CgroupID == 0 {
		t.Error("cgroup id is 0")
	}
	// The executable's inode is the file /bin/sh resolves to (dash on Debian).
	var st unix.Stat_t
	if err := unix.Stat("/bin/sh", &st); err != nil {
		t.Fatal(err)
	}
	if ex.ExeIno != st.Ino || ex.ExeDev != unix.Major(st.Dev)<<20|unix.Minor(st.Dev) {
		t.Errorf("exe dev/ino %#x/%d, stat of /bin/sh says %#x/%d", ex.ExeDev, ex.ExeIno, unix.Major(st.Dev)<<20|unix.Minor(st.Dev), st.Ino)
	}
	// Wall-clock conversion: within a generous window around the run.
	if ex.Time.Before(before.Add(-time.Second)) || ex.Time.After(time.Now().Add(time.Second)) {
		t.Errorf("exec time %v not near %v", ex.Time, before)
	}
	if ex.StartTime.After(ex.Time) || ex.Time.Sub(ex.StartTime) > 5*time.Second {
		t.Errorf("start time %v vs exec time %v", ex.StartTime, ex.Time)
	}
	if xt.ExitCode != 7 || xt.Signal != 0 {
		t.Errorf("exit code %d signal %d, want 7/0", xt.ExitCode, xt.Signal)
	}
	if !xt.StartTime.Equal(ex.StartTime) {
		t.Errorf("exit start time %v != exec start time %v", xt.StartTime, ex.StartTime)
	}
}

func TestExitSignal(t *testing.T) {
	_, ch := loadProbe(t, Config{})
	cmd := exec.Command("/bin/sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := uint32(cmd.Process.Pid)
	time.Sleep(100 * time.Millisecond)
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	_, xt := waitFor(t, ch, pid, 2)
	if xt.Signal != int(syscall.SIGKILL) {
		t.Errorf("signal = %d, want %d (status %#x)", xt.Signal, syscall.SIGKILL, xt.Status)
	}
}

// TestFork runs once per hook kind: a shell that backgrounds a subshell forks a process (the
// record must name the shell as parent), while the Go runtime's thread creation in this test
// process must not be reported.
func TestFork(t *testing.T) {
	for _, kind := range []string{"tp_btf", "raw_tp", "tracepoint"} {
		t.Run(kind, func(t *testing.T) { testFork(t, kind) })
	}
}

func testFork(t *testing.T, kind string) {
	p, ch := loadProbe(t, Config{onlyKind: kind})
	for _, s := range p.Status() {
		if s.Name == "fork" && (!s.Attached || !strings.HasPrefix(s.Hook, kind+"/")) {
			t.Fatalf("fork attached=%v via %q (%v), want %s", s.Attached, s.Hook, s.Err, kind)
		}
	}
	// Threads: a locked goroutine that is never unlocked makes the runtime retire its thread
	// and start new ones; none of them may show up as a fork of this process.
	done := make(chan struct{})
	for range 4 {
		go func() {
			runtime.LockOSThread()
			done <- struct{}{}
		}()
	}
	for range 4 {
		<-done
	}

	before := time.Now()
	// "sleep & wait": the shell forks a child that execs sleep; "(exit 3)" forks a subshell
	// that never execs.
	cmd := exec.Command("/bin/sh", "-c", "sleep 0.1 & (exit 3); wait")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	shell := uint32(cmd.Process.Pid)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("shell: %v", err)
	}

	self := uint32(os.Getpid())
	var forks []Fork
	deadline := time.After(10 * time.Second)
	for len(forks) < 2 {
		select {
		case r, ok := <-ch:
			if !ok {
				t.Fatal("probe closed early")
			}
			f, isFork := r.(Fork)
			if !isFork {
				continue
			}
			switch f.ParentTGID {
			case shell:
				forks = append(forks, f)
			case self:
				// This process forks the shell (os/exec); anything else it reports would be
				// one of its threads.
				if f.PID != shell {
					t.Errorf("thread or unknown child reported as fork of the test process: %+v", f)
				}
			}
		case <-deadline:
			t.Fatalf("timeout: %d fork records from the shell %d, want 2", len(forks), shell)
		}
	}
	for _, f := range forks {
		if f.PID == 0 || f.PID == shell {
			t.Errorf("child pid %d (shell %d)", f.PID, shell)
		}
		if f.ParentPID != shell {
			t.Errorf("forking thread %d, want the shell %d", f.ParentPID, shell)
		}
		if f.UID != uint32(os.Getuid()) || f.GID != uint32(os.Getgid()) {
			t.Errorf("uid/gid = %d/%d", f.UID, f.GID)
		}
		if f.Comm != "sh" {
			t.Errorf("comm = %q, want the parent's", f.Comm)
		}
		if f.CgroupID == 0 {
			t.Error("cgroup id is 0")
		}
		if f.Time.Before(before.Add(-time.Second)) || f.Time.After(time.Now().Add(time.Second)) {
			t.Errorf("fork time %v not near %v", f.Time, before)
		}
		if f.StartTime.IsZero() || f.StartTime.After(f.Time) || f.Time.Sub(f.StartTime) > time.Second {
			t.Errorf("child start %v vs fork time %v", f.StartTime, f.Time)
		}
		if f.ParentStartTime.IsZero() || f.ParentStartTime.After(f.StartTime) {
			t.Errorf("parent start %v vs child start %v", f.ParentStartTime, f.StartTime)
		}
	}
	if forks[0].PID == forks[1].PID {
		t.Errorf("two fork records for child %d", forks[0].PID)
	}
}
