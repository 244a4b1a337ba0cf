package proc

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

const dockerID = "3f1c5e2a9b8d7c6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e"

// A child forked by a known process runs the parent's program until it execs: file writes
// in between must be attributed to that program, and the exec then replaces the entry.
func TestForkInheritsParentUntilExec(t *testing.T) {
	tb := newTable(0)
	start := time.Now()
	tb.Exec(Info{PID: 4000010, PPID: 1, UID: 0, Exe: "/usr/bin/python3", Args: []string{"python3", "upload.py"},
		Comm: "python3", CgroupID: 9, ContainerID: dockerID, Start: start})

	child := tb.Fork(context.Background(), Fork{PID: 4000011, ParentTGID: 4000010, UID: 0, CgroupID: 9,
		Start: start.Add(time.Second), At: start.Add(time.Second)})
	got, ok := tb.Lookup(context.Background(), 4000011)
	if !ok {
		t.Fatal("forked child not in the table")
	}
	for _, info := range []Info{child, got} {
		if info.Exe != "/usr/bin/python3" || !slices.Equal(info.Args, []string{"python3", "upload.py"}) ||
			info.PPID != 4000010 || info.ParentExe != "/usr/bin/python3" || info.User != "root" ||
			info.ContainerID != dockerID || !info.Start.Equal(start.Add(time.Second)) {
			t.Fatalf("child = %+v", info)
		}
	}

	tb.Exec(Info{PID: 4000011, PPID: 4000010, Exe: "/usr/bin/curl", Args: []string{"curl"}, CgroupID: 9})
	if got, _ := tb.Lookup(context.Background(), 4000011); got.Exe != "/usr/bin/curl" || got.ParentExe != "/usr/bin/python3" {
		t.Fatalf("exec after fork: %+v", got)
	}
	if forks, orphans := tb.ForkStats(); forks != 1 || orphans != 0 {
		t.Fatalf("fork stats %d/%d", forks, orphans)
	}
}

// A fork record that arrives after the child was already read from /proc (and may have
// exec'd) must not overwrite the better entry; one for a reused pid must.
func TestForkKeepsNewerEntryReplacesStale(t *testing.T) {
	tb := newTable(0)
	now := time.Now()
	tb.Exec(Info{PID: 4000020, Exe: "/bin/sh", Start: now.Add(-time.Hour)})
	tb.Exec(Info{PID: 4000021, Exe: "/usr/bin/scp", Start: now})
	tb.Fork(context.Background(), Fork{PID: 4000021, ParentTGID: 4000020, Start: now, At: now})
	if got, _ := tb.Lookup(context.Background(), 4000021); got.Exe != "/usr/bin/scp" {
		t.Fatalf("fork overwrote a newer entry of the same process: %+v", got)
	}

	tb.Exec(Info{PID: 4000022, Exe: "/usr/bin/old", Start: now.Add(-time.Minute)})
	tb.Exit(4000022, now.Add(-time.Second))
	tb.Fork(context.Background(), Fork{PID: 4000022, ParentTGID: 4000020, At: now})
	if got, _ := tb.Lookup(context.Background(), 4000022); got.Exe != "/bin/sh" || !got.Exited.IsZero() || !got.Start.Equal(now) {
		t.Fatalf("fork did not replace a reused pid's entry (start falls back to the fork time): %+v", got)
	}
}

// A parent neither in the table nor in /proc still yields an entry with the kernel's view.
func TestForkOfUnknownParent(t *testing.T) {
	tb := New(Config{ExecWait: time.Millisecond}, NewUsers(time.Minute), slog.New(slog.DiscardHandler))
	got := tb.Fork(context.Background(), Fork{PID: 4000031, ParentTGID: 4000030, UID: 0, At: time.Now()})
	if got.PID != 4000031 || got.PPID != 4000030 || got.Exe != "" || got.User != "root" {
		t.Fatalf("got %+v", got)
	}
	if forks, orphans := tb.ForkStats(); forks != 1 || orphans != 1 {
		t.Fatalf("fork stats %d/%d", forks, orphans)
	}
}

// The container id comes from /proc/<pid>/cgroup and is cached by cgroup v2 id, so a
// process already gone from /proc in the same container is still named.
func TestExecContainerFromProcCached(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "4000040")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	line := "0::/system.slice/docker-" + dockerID + ".scope\n"
	if err := os.WriteFile(filepath.Join(dir, "cgroup"), []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	tb := New(Config{ProcRoot: root}, NewUsers(time.Minute), slog.New(slog.DiscardHandler))
	tb.Exec(Info{PID: 4000040, Exe: "/usr/bin/cp", CgroupID: 1234})
	tb.Exec(Info{PID: 4000041, Exe: "/usr/bin/cat", CgroupID: 1234}) // no /proc entry
	tb.Exec(Info{PID: 4000042, Exe: "/usr/bin/ls", CgroupID: 99})    // unknown cgroup, host
	for pid, want := range map[uint32]string{4000040: dockerID, 4000041: dockerID, 4000042: ""} {
		if got, _ := tb.Lookup(context.Background(), pid); got.ContainerID != want {
			t.Errorf("pid %d container %q, want %q", pid, got.ContainerID, want)
		}
	}
}
