package proc

import (
	"context"
	"log/slog"
	"os"
	"os/user"
	"testing"
	"time"
)

func newTable(max int) *Table {
	return New(Config{MaxEntries: max, ExitGrace: time.Second}, NewUsers(time.Minute), slog.New(slog.DiscardHandler))
}

func TestSeedKnowsThisProcess(t *testing.T) {
	tb := newTable(0)
	if err := tb.Seed(context.Background()); err != nil {
		t.Fatal(err)
	}
	info, ok := tb.Lookup(context.Background(), uint32(os.Getpid()))
	if !ok {
		t.Fatal("own pid not in the seeded table")
	}
	exe, _ := os.Executable()
	if info.Exe != exe || info.PPID != uint32(os.Getppid()) || info.UID != uint32(os.Getuid()) {
		t.Fatalf("got %+v, want exe %s ppid %d", info, exe, os.Getppid())
	}
	me, _ := user.Current()
	if info.User != me.Username {
		t.Fatalf("user %q, want %q", info.User, me.Username)
	}
}

func TestExecReplacesAndNamesParent(t *testing.T) {
	tb := newTable(0)
	tb.Exec(Info{PID: 100, PPID: 1, Exe: "/usr/bin/bash", UID: 0})
	tb.Exec(Info{PID: 200, PPID: 100, Exe: "/usr/bin/cp", Args: []string{"cp", "a", "b"}, UID: 0})
	info, ok := tb.Lookup(context.Background(), 200)
	if !ok || info.Exe != "/usr/bin/cp" || info.ParentExe != "/usr/bin/bash" || info.User != "root" {
		t.Fatalf("got %+v", info)
	}
	tb.Exec(Info{PID: 200, PPID: 100, Exe: "/usr/bin/scp"})
	if info, _ := tb.Lookup(context.Background(), 200); info.Exe != "/usr/bin/scp" {
		t.Fatalf("exec did not replace the image: %+v", info)
	}
}

func TestExitedEntriesStayForGraceThenGo(t *testing.T) {
	tb := newTable(0)
	tb.Exec(Info{PID: 4000001, Exe: "/bin/x"})
	now := time.Now()
	tb.Exit(4000001, now)
	tb.Sweep(now.Add(500 * time.Millisecond))
	if info, ok := tb.Lookup(context.Background(), 4000001); !ok || info.Exe != "/bin/x" {
		t.Fatal("exited process forgotten before its grace period")
	}
	tb.Sweep(now.Add(2 * time.Second))
	if info, ok := tb.Lookup(context.Background(), 4000001); ok || info.Exe != "" {
		t.Fatalf("exited process kept past its grace period: %+v", info)
	}
	if _, misses, _ := tb.Stats(); misses != 1 {
		t.Fatalf("misses %d", misses)
	}
}

func TestTableStaysBounded(t *testing.T) {
	tb := newTable(10)
	base := time.Now()
	for i := range 50 {
		tb.Exec(Info{PID: uint32(5000000 + i), Start: base.Add(time.Duration(i) * time.Second)})
	}
	n, _, evicted := tb.Stats()
	if n > 10 || evicted < 40 {
		t.Fatalf("entries %d evicted %d", n, evicted)
	}
	// The newest survive.
	if _, ok := tb.Lookup(context.Background(), 5000049); !ok {
		t.Fatal("newest process evicted")
	}
}

func TestUsersUnknownUID(t *testing.T) {
	u := NewUsers(time.Minute)
	if name := u.Name(0); name != "root" {
		t.Fatalf("uid 0 is %q", name)
	}
	if name := u.Name(3999999999); name != "" {
		t.Fatalf("unknown uid named %q", name)
	}
}

// TestLookupWaitsForAnExecInFlight: a process that already exited is gone from /proc, but
// its exec record, read from another ring buffer, arrives a moment later; the lookup waits
// for it rather than attributing the write to nobody.
func TestLookupWaitsForAnExecInFlight(t *testing.T) {
	tb := newTable(0)
	go func() {
		time.Sleep(50 * time.Millisecond)
		tb.Exec(Info{PID: 4000123, Exe: "/usr/bin/cp", Args: []string{"cp", "a", "b"}})
	}()
	info, ok := tb.Lookup(context.Background(), 4000123)
	if !ok || info.Exe != "/usr/bin/cp" {
		t.Fatalf("got %+v ok=%v", info, ok)
	}
	start := time.Now()
	if _, ok := tb.Lookup(context.Background(), 4000999); ok {
		t.Fatal("a pid that never existed was found")
	}
	if waited := time.Since(start); waited < 200*time.Millisecond || waited > 2*time.Second {
		t.Fatalf("waited %s for an exec that never came, want about the ExecWait bound", waited)
	}
}
