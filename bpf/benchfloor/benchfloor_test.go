//go:build amd64

package benchfloor

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to load BPF programs")
	}
}

func tempFD(t *testing.T) int {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return int(f.Fd())
}

func TestSyscallEventsListsWrite(t *testing.T) {
	needRoot(t)
	evs, err := SyscallEvents()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"sys_enter_write", "sys_exit_write", "sys_exit_openat"} {
		if !slices.Contains(evs, want) {
			t.Errorf("%s missing from %d syscall tracepoints", want, len(evs))
		}
	}
}

// The empty program must really run on the tracepoint it is attached to, or the floor
// measures nothing: the kernel's run-time statistics count its runs.
func TestEmptyRunsOnWrite(t *testing.T) {
	needRoot(t)
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		t.Fatal(err)
	}
	defer stats.Close()
	s, err := AttachEmpty([]string{"sys_enter_write", "sys_exit_write"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Links() != 2 {
		t.Fatalf("links = %d, want 2", s.Links())
	}
	fd := tempFD(t)
	const n = 100
	for range n {
		if _, err := unix.Write(fd, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	st, err := s.Programs()["empty"].Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.RunCount < 2*n {
		t.Fatalf("empty program ran %d times, want >= %d", st.RunCount, 2*n)
	}
}

func TestAttachEmptyRejectsUnknownTracepoint(t *testing.T) {
	needRoot(t)
	s, err := AttachEmpty([]string{"sys_enter_write", "sys_enter_no_such_syscall"})
	if err == nil {
		s.Close()
		t.Fatal("attached to a tracepoint that does not exist")
	}
}

// Every filtering dispatcher must find a tracked descriptor on write, pwrite64 and writev
// and nothing else: otherwise it is cheaper only because it does less.
func TestDispatchersFilterWrites(t *testing.T) {
	needRoot(t)
	for _, d := range []Dispatcher{RawInline, BTFInline, BTFTail} {
		t.Run(string(d), func(t *testing.T) {
			s, err := AttachDispatcher(d, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			tracked, other := tempFD(t), tempFD(t)
			if err := s.Track(uint32(os.Getpid()), tracked); err != nil {
				t.Fatal(err)
			}
			buf := []byte("0123456789")
			for range 10 {
				if _, err := unix.Write(tracked, buf); err != nil {
					t.Fatal(err)
				}
				if _, err := unix.Write(other, buf); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := unix.Pwrite(tracked, buf, 0); err != nil {
				t.Fatal(err)
			}
			if _, err := unix.Writev(tracked, [][]byte{buf, buf}); err != nil {
				t.Fatal(err)
			}
			unix.Getppid() // an unrelated syscall: no hit
			hits, err := s.Hits()
			if err != nil {
				t.Fatal(err)
			}
			if hits != 12 {
				t.Fatalf("hits = %d, want 12 (10 write + pwrite64 + writev on the tracked fd)", hits)
			}
		})
	}
}

// The agent's own tgid is skipped before the lookup, as filewrite does.
func TestDispatcherIgnoresTGID(t *testing.T) {
	needRoot(t)
	s, err := AttachDispatcher(BTFInline, uint32(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fd := tempFD(t)
	if err := s.Track(uint32(os.Getpid()), fd); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Write(fd, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if hits, err := s.Hits(); err != nil || hits != 0 {
		t.Fatalf("hits = %d, %v; want 0 for the ignored tgid", hits, err)
	}
}

func TestRawEmptyRuns(t *testing.T) {
	needRoot(t)
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		t.Fatal(err)
	}
	defer stats.Close()
	s, err := AttachDispatcher(RawEmpty, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for range 100 {
		unix.Getppid()
	}
	st, err := s.Programs()["raw_empty_enter"].Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.RunCount < 100 {
		t.Fatalf("raw_empty_enter ran %d times, want >= 100", st.RunCount)
	}
}

// SyscallHooks must see each attach style, or a contaminated "without" goes unnoticed.
func TestSyscallHooksSeesEveryStyle(t *testing.T) {
	needRoot(t)
	count := func(name string) int {
		hooks, err := SyscallHooks()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, h := range hooks {
			if h == name {
				n++
			}
		}
		return n
	}
	for _, c := range []struct {
		name   string
		attach func() (*Set, error)
	}{
		{"tracepoint/sys_enter_write", func() (*Set, error) { return AttachEmpty([]string{"sys_enter_write"}) }},
		{"raw_tp/sys_enter", func() (*Set, error) { return AttachDispatcher(RawEmpty, 0) }},
		{"raw_tp/sys_exit", func() (*Set, error) { return AttachDispatcher(BTFInline, 0) }}, // tp_btf lists as a raw tracepoint link
	} {
		before := count(c.name)
		s, err := c.attach()
		if err != nil {
			t.Fatal(err)
		}
		during := count(c.name)
		s.Close()
		if during != before+1 {
			t.Errorf("%s: %d attachments before, %d with ours", c.name, before, during)
		}
	}
}
