package filewrite

import (
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ward-dlp/ward/bpf/internal/kernel"
	"golang.org/x/sys/unix"
)

// A redirection on a shell compound command opens the file in the shell; the bytes come
// from children that inherited the descriptor across fork. Each child's writes must be
// seen, attributed to the child, with an inherit record naming the parent.
func TestForkInheritsTrackedDescriptors(t *testing.T) {
	h := load(t, Config{})
	requireHook(t, h, "fork/inherit")
	watched, sentinel := t.TempDir(), t.TempDir()
	h.watch(watched)
	h.watch(sentinel)
	f := filepath.Join(watched, "both.txt")
	cmd := exec.Command("/bin/sh", "-c", `{ /bin/echo first; /bin/echo second; } > "$1"`, "sh", f)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sh: %v %s", err, out)
	}
	shell := uint32(cmd.Process.Pid)
	var st unix.Stat_t
	if err := unix.Stat(f, &st); err != nil {
		t.Fatal(err)
	}
	// Collect every record about the file until a later sentinel closes (ring order).
	spid := h.run("write", filepath.Join(sentinel, "sentinel"), "s")
	var inherits []FdOp
	writes := map[uint32]string{}
	for done := false; !done; {
		r := <-h.ch
		switch r := r.(type) {
		case FdOp:
			if r.Op == OpInherit && r.Ino == st.Ino {
				inherits = append(inherits, r)
			}
		case Write:
			if r.Ino == st.Ino {
				writes[r.PID] += string(r.Data)
			}
		case Close:
			done = r.PID == spid
		}
	}
	var children []uint32
	for _, in := range inherits {
		if uint32(in.Arg) != shell || in.PID == shell || in.FD != 1 || in.WatchID == 0 {
			t.Errorf("inherit record %+v: want a child of shell %d inheriting fd 1", in, shell)
		}
		children = append(children, in.PID)
	}
	var got []string
	for pid, data := range writes {
		if !slices.Contains(children, pid) {
			t.Errorf("write by pid %d (%q) without an inherit record", pid, data)
		}
		got = append(got, data)
	}
	slices.Sort(got)
	if strings.Join(got, "|") != "first\n|second\n" {
		t.Fatalf("writes by children: %v (inherits %+v)", writes, inherits)
	}
}

// A process that exits with tracked descriptors open never calls close: its entries must
// still go, or their fd_hot slots stay hot and every later write on those fd numbers pays
// the slow path.
func TestExitForgetsTrackedDescriptors(t *testing.T) {
	h := load(t, Config{})
	requireHook(t, h, "exit/forget")
	watched, sentinel := t.TempDir(), t.TempDir()
	h.watch(watched)
	h.watch(sentinel)
	pid := h.run("exit-open", filepath.Join(watched, "left-open.txt"))
	h.until(pid, sentinel) // records of a later process: the exit has happened
	hot, entries := probeMapCounts(t, h, pid)
	if entries != 0 {
		t.Errorf("%d tracked entries of exited pid %d left", entries, pid)
	}
	if hot != 0 {
		t.Errorf("fd_hot sums to %d with no tracked descriptor open", hot)
	}
}

// A read-only shared mapping of a tracked file, made writable with mprotect after the
// descriptor is closed, is flagged; a private one is not.
func TestMprotectSharedFlagged(t *testing.T) {
	h := load(t, Config{})
	requireHook(t, h, "mmap/mprotect")
	watched, sentinel := t.TempDir(), t.TempDir()
	h.watch(watched)
	h.watch(sentinel)
	f := filepath.Join(watched, "p.bin")
	var ops []FdOp
	for _, r := range h.until(h.run("mprotect", f), sentinel) {
		if o, ok := r.(FdOp); ok && o.Op == OpMprotectShared {
			ops = append(ops, o)
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(f, &st); err != nil {
		t.Fatal(err)
	}
	if len(ops) != 1 || ops[0].Ino != st.Ino || ops[0].WatchID == 0 || ops[0].Prot&unix.PROT_WRITE == 0 ||
		ops[0].Arg != 4096 || ops[0].FD != -1 {
		t.Fatalf("mprotect records %+v, want one for the shared mapping of inode %d", ops, st.Ino)
	}
}

func requireHook(t *testing.T, h *harness, name string) {
	t.Helper()
	for _, s := range h.p.Status() {
		if s.Name == name {
			if !s.Attached {
				// This kernel class (6.18 in CI) has bpf_loop and bpf_find_vma: a failure
				// here is a bug, not a missing feature.
				t.Fatalf("%s did not attach: %v", name, s.Err)
			}
			return
		}
	}
	t.Fatalf("no hook %s", name)
}

// probeMapCounts sums fd_hot over all slots and counts pid's tracked entries.
func probeMapCounts(t *testing.T, h *harness, pid uint32) (hot int64, entries int) {
	t.Helper()
	err := h.p.ring.Maps(func(l *kernel.Loader) error {
		var slot uint32
		var n int64
		it := l.Map("fd_hot").Iterate()
		for it.Next(&slot, &n) {
			hot += n
		}
		if err := it.Err(); err != nil {
			return err
		}
		var key uint64
		var v filewriteTrackedFd
		it = l.Map("tracked").Iterate()
		for it.Next(&key, &v) {
			if uint32(key>>32) == pid {
				entries++
			}
		}
		return it.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	return hot, entries
}
