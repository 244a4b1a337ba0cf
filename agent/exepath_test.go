package agent

import (
	"os"
	"testing"
	"time"

	"github.com/ward-dlp/ward/bpf/process"
)

func TestExePathsCachesByInodeAndName(t *testing.T) {
	self, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	e := newExePaths()
	e.now = func() time.Time { return now }
	live := process.Exec{PID: uint32(os.Getpid()), Filename: "./x.test", ExeDev: 8, ExeIno: 99}
	if got := e.resolve(live); got != self {
		t.Fatalf("live process: %q, want %q", got, self)
	}
	gone := live
	gone.PID = 1 << 30 // no such process: only the cache can answer
	if got := e.resolve(gone); got != self {
		t.Errorf("same inode and name after exit: %q, want the cached %q", got, self)
	}
	other := gone
	other.ExeIno = 100 // another file behind the same name
	if got := e.resolve(other); got != "" {
		t.Errorf("another inode: %q, want a miss", got)
	}
	unread := gone
	unread.ExeIno = 0 // the kernel could not read mm->exe_file: never cached
	if got := e.resolve(unread); got != "" {
		t.Errorf("no inode: %q, want a miss", got)
	}
	now = now.Add(e.ttl)
	if got := e.resolve(gone); got != "" {
		t.Errorf("expired entry answered %q", got)
	}
}
