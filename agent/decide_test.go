package agent

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestKillWriter(t *testing.T) {
	start := func() *exec.Cmd {
		cmd := exec.Command("sleep", "30")
		if err := cmd.Start(); err != nil {
			t.Skip("no sleep binary:", err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	self := uint32(os.Getpid())

	// A pid whose process started after the write is a reused pid: never signalled.
	cmd := start()
	pid := uint32(cmd.Process.Pid)
	if err := killWriter(pid, time.Now().Add(-time.Hour), self); err == nil || !strings.Contains(err.Error(), "started after") {
		t.Fatalf("reused pid: %v", err)
	}
	if err := syscall.Kill(int(pid), 0); err != nil {
		t.Fatalf("process signalled despite the start-time check: %v", err)
	}

	// The writer itself is killed with SIGKILL.
	if err := killWriter(pid, time.Now(), self); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("wait: %v, want death by SIGKILL", err)
	}
	if err := killWriter(pid, time.Now(), self); !errors.Is(err, errWriterGone) {
		t.Errorf("exited writer: %v", err)
	}
	for _, p := range []uint32{0, 1, self} {
		if err := killWriter(p, time.Now(), self); err == nil {
			t.Errorf("pid %d must never be killed", p)
		}
	}
}

func TestProcessStart(t *testing.T) {
	st, err := processStart(uint32(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(st); d < 0 || d > 10*time.Minute {
		t.Errorf("this test process started %s ago?", d)
	}
}
