// Package proc keeps the agent's view of running processes: seeded from /proc at start,
// kept current by fork, exec and exit records from the kernel, and used to attribute every file
// and network event to a process and a user.
package proc

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/shirou/gopsutil/v4/process"
)

// Info is what the agent knows about one process.
type Info struct {
	PID, PPID uint32
	UID, GID  uint32
	User      string
	Exe       string
	Args      []string
	Comm      string
	Start     time.Time
	CgroupID  uint64
	// ContainerID is the docker/containerd/CRI-O/podman container id from the cgroup path,
	// empty on the host.
	ContainerID string
	ParentExe   string
	Truncated   bool
	// Exited is when the exit record arrived; zero while the process runs.
	Exited time.Time
}

// Config bounds the table.
type Config struct {
	// MaxEntries bounds memory: past it, the oldest exited entries go first, then the oldest.
	MaxEntries int
	// ExitGrace keeps exited processes so late file records can still be attributed: the
	// kernel delivers exec/exit and file records through different ring buffers, so an exit
	// can be read before the writes that preceded it.
	ExitGrace time.Duration
	// ExecWait is how long Lookup waits for an exec record still in flight when the process
	// is neither in the table nor in /proc any more: a short-lived process (cp) can finish
	// before its exec record is read, since that travels in another ring buffer.
	ExecWait time.Duration
	// ProcRoot is where /proc is mounted; tests point it at a fixture tree.
	ProcRoot string
}

// Table is the process table. It is safe for concurrent use.
type Table struct {
	cfg   Config
	log   *slog.Logger
	users *Users

	mu    sync.Mutex
	procs map[uint32]*Info
	// execd is closed and replaced on every Exec, waking lookups that wait for one.
	execd chan struct{}
	// misses counts lookups that neither the table nor /proc could answer.
	misses uint64
	// evicted counts entries dropped to stay within MaxEntries.
	evicted uint64
	// forks counts fork records applied; forkOrphans those whose parent was unknown.
	forks, forkOrphans uint64

	// containers caches cgroup v2 id → container id: a short-lived process can be gone from
	// /proc before its exec record is read, but its container's cgroup was seen before.
	cmu        sync.Mutex
	containers map[uint64]string
}

// New returns an empty table.
func New(cfg Config, users *Users, log *slog.Logger) *Table {
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = 65536
	}
	if cfg.ExitGrace <= 0 {
		cfg.ExitGrace = 30 * time.Second
	}
	if cfg.ExecWait <= 0 {
		cfg.ExecWait = 250 * time.Millisecond
	}
	if cfg.ProcRoot == "" {
		cfg.ProcRoot = "/proc"
	}
	return &Table{cfg: cfg, log: log, users: users, procs: make(map[uint32]*Info), execd: make(chan struct{}),
		containers: make(map[uint64]string)}
}

// Seed fills the table from /proc so processes that started before the agent are known.
func (t *Table) Seed(ctx context.Context) error {
	ps, err := process.ProcessesWithContext(ctx)
	if err != nil {
		return fmt.Errorf("list processes: %w", err)
	}
	n := 0
	for _, p := range ps {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		info, err := fromProc(ctx, p)
		if err != nil {
			continue // raced with exit, or a kernel thread with no exe
		}
		info.User = t.users.Name(info.UID)
		info.ContainerID = t.container(info.PID, 0)
		t.mu.Lock()
		if _, ok := t.procs[info.PID]; !ok {
			t.procs[info.PID] = info
			n++
		}
		t.mu.Unlock()
	}
	t.mu.Lock()
	for _, info := range t.procs {
		if parent, ok := t.procs[info.PPID]; ok && info.ParentExe == "" {
			info.ParentExe = parent.Exe
		}
	}
	t.evictLocked(time.Now())
	t.mu.Unlock()
	t.log.Info("process table seeded from /proc", "processes", n)
	return nil
}

func fromProc(ctx context.Context, p *process.Process) (*Info, error) {
	uids, err := p.UidsWithContext(ctx)
	if err != nil || len(uids) == 0 {
		return nil, fmt.Errorf("uids of %d: %w", p.Pid, err)
	}
	info := &Info{PID: uint32(p.Pid), UID: uint32(uids[0])}
	if gids, err := p.GidsWithContext(ctx); err == nil && len(gids) > 0 {
		info.GID = uint32(gids[0])
	}
	if ppid, err := p.PpidWithContext(ctx); err == nil {
		info.PPID = uint32(ppid)
	}
	info.Exe, _ = p.ExeWithContext(ctx)
	info.Args, _ = p.CmdlineSliceWithContext(ctx)
	info.Comm, _ = p.NameWithContext(ctx)
	if ms, err := p.CreateTimeWithContext(ctx); err == nil {
		info.Start = time.UnixMilli(ms)
	}
	return info, nil
}

// container returns the container id of pid, from the cache when its cgroup v2 id was seen
// before, else from /proc/<pid>/cgroup ("" on the host or when the process is gone).
func (t *Table) container(pid uint32, cgroupID uint64) string {
	if cgroupID != 0 {
		t.cmu.Lock()
		id, ok := t.containers[cgroupID]
		t.cmu.Unlock()
		if ok {
			return id
		}
	}
	b, err := os.ReadFile(filepath.Join(t.cfg.ProcRoot, strconv.FormatUint(uint64(pid), 10), "cgroup"))
	if err != nil {
		return ""
	}
	id, _ := ContainerID(b)
	// Only a unified-hierarchy line ties the path to the v2 cgroup id the kernel reports;
	// on v1-only hosts that id says nothing about the container, so nothing is cached.
	if cgroupID != 0 && bytes.Contains(b, []byte("0::/")) {
		t.cmu.Lock()
		if len(t.containers) >= 4096 {
			clear(t.containers)
		}
		t.containers[cgroupID] = id
		t.cmu.Unlock()
	}
	return id
}

// Exec records a new program image in a process, replacing what was known of the pid.
func (t *Table) Exec(info Info) {
	info.User = t.users.Name(info.UID)
	if info.ContainerID == "" {
		info.ContainerID = t.container(info.PID, info.CgroupID)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if parent, ok := t.procs[info.PPID]; ok {
		info.ParentExe = parent.Exe
		if info.ContainerID == "" && info.CgroupID != 0 && info.CgroupID == parent.CgroupID {
			info.ContainerID = parent.ContainerID // gone from /proc already; same cgroup
		}
	}
	t.procs[info.PID] = &info
	if len(t.procs) > t.cfg.MaxEntries {
		t.evictLocked(time.Now())
	}
	close(t.execd)
	t.execd = make(chan struct{})
}

// Fork describes a fork record: a new process that runs its parent's program until it execs.
type Fork struct {
	PID, ParentTGID uint32
	UID, GID        uint32
	CgroupID        uint64
	// Start is the child's start time; zero when the kernel could not report it.
	Start time.Time
	// At is when the fork happened; it stands in for Start when that is zero.
	At time.Time
}

// Fork inserts a forked child that inherits its parent's executable, arguments, user and
// container until its own exec arrives, so writes by a child that never execs (a shell
// subshell, a forking server's worker) are attributed to the right program. The parent is
// read from /proc when the table does not know it. It returns the child's entry.
func (t *Table) Fork(ctx context.Context, f Fork) Info {
	parent, known := t.Lookup(ctx, f.ParentTGID)
	start := f.Start
	if start.IsZero() {
		start = f.At
	}
	child := Info{
		PID: f.PID, PPID: f.ParentTGID, UID: f.UID, GID: f.GID,
		Start: start, CgroupID: f.CgroupID, ParentExe: parent.Exe,
	}
	if known {
		child.Exe, child.Args, child.Comm = parent.Exe, parent.Args, parent.Comm
		child.Truncated, child.ContainerID = parent.Truncated, parent.ContainerID
		if parent.UID == f.UID {
			child.User = parent.User
		}
	}
	if child.User == "" {
		child.User = t.users.Name(f.UID)
	}
	if child.ContainerID == "" {
		child.ContainerID = t.container(f.PID, f.CgroupID)
	}

	t.mu.Lock()
	defer t.mu.Unlock()
	t.forks++
	if !known {
		t.forkOrphans++
	}
	// An entry already there for the same process (read from /proc by a lookup that raced
	// this record, possibly after the child's exec) knows more; a stale one (pid reuse, or
	// an exited process) is replaced. /proc start times have millisecond resolution.
	if old, ok := t.procs[f.PID]; ok && old.Exited.IsZero() && !old.Start.Before(start.Add(-10*time.Millisecond)) {
		return *old
	}
	t.procs[f.PID] = &child
	if len(t.procs) > t.cfg.MaxEntries {
		t.evictLocked(time.Now())
	}
	// A lookup waiting for this pid's exec can use the fork's view.
	close(t.execd)
	t.execd = make(chan struct{})
	return child
}

// ForkStats reports fork records applied and those whose parent was unknown.
func (t *Table) ForkStats() (forks, orphans uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.forks, t.forkOrphans
}

// waitExec waits up to ExecWait for an exec record of pid to arrive.
func (t *Table) waitExec(ctx context.Context, pid uint32) (Info, bool) {
	deadline := time.NewTimer(t.cfg.ExecWait)
	defer deadline.Stop()
	for {
		t.mu.Lock()
		if p, ok := t.procs[pid]; ok {
			c := *p
			t.mu.Unlock()
			return c, true
		}
		ch := t.execd
		t.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			return Info{}, false
		case <-ctx.Done():
			return Info{}, false
		}
	}
}

// Exit marks a process gone; its entry stays for ExitGrace.
func (t *Table) Exit(pid uint32, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p, ok := t.procs[pid]; ok {
		p.Exited = at
	}
}

// Lookup returns a copy of what is known of pid. A pid the table has never seen (a process
// that forked but did not exec since the agent started) is read from /proc on demand.
func (t *Table) Lookup(ctx context.Context, pid uint32) (Info, bool) {
	t.mu.Lock()
	if p, ok := t.procs[pid]; ok {
		c := *p
		t.mu.Unlock()
		return c, true
	}
	t.mu.Unlock()

	p, err := process.NewProcessWithContext(ctx, int32(pid))
	var info *Info
	if err == nil {
		info, err = fromProc(ctx, p)
	}
	if err != nil {
		// Gone from /proc: its exec record may still be on its way.
		if c, ok := t.waitExec(ctx, pid); ok {
			return c, true
		}
		t.mu.Lock()
		t.misses++
		t.mu.Unlock()
		return Info{PID: pid}, false
	}
	info.User = t.users.Name(info.UID)
	info.ContainerID = t.container(pid, 0)
	t.mu.Lock()
	defer t.mu.Unlock()
	if parent, ok := t.procs[info.PPID]; ok {
		info.ParentExe = parent.Exe
	}
	t.procs[pid] = info
	if len(t.procs) > t.cfg.MaxEntries {
		t.evictLocked(time.Now())
	}
	return *info, true
}

// Sweep drops exited processes older than the grace period. Call it periodically.
func (t *Table) Sweep(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.evictLocked(now)
}

// evictLocked removes expired exited entries, then, if still over the bound, exited entries
// regardless of age, then the oldest running ones: attribution degrades, memory does not grow.
func (t *Table) evictLocked(now time.Time) {
	for pid, p := range t.procs {
		if !p.Exited.IsZero() && now.Sub(p.Exited) > t.cfg.ExitGrace {
			delete(t.procs, pid)
		}
	}
	if len(t.procs) <= t.cfg.MaxEntries {
		return
	}
	for pid, p := range t.procs {
		if len(t.procs) <= t.cfg.MaxEntries {
			return
		}
		if !p.Exited.IsZero() {
			delete(t.procs, pid)
			t.evicted++
		}
	}
	for len(t.procs) > t.cfg.MaxEntries {
		var oldest uint32
		var oldestStart time.Time
		first := true
		for pid, p := range t.procs {
			if first || p.Start.Before(oldestStart) {
				oldest, oldestStart, first = pid, p.Start, false
			}
		}
		delete(t.procs, oldest)
		t.evicted++
	}
}

// Stats reports the table's size and losses, for the health event.
func (t *Table) Stats() (entries int, misses, evicted uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.procs), t.misses, t.evicted
}

// Users resolves uids to names with a small cache, re-reading after a TTL so renamed and
// newly created accounts show up without restarting the agent.
type Users struct {
	ttl   time.Duration
	mu    sync.Mutex
	cache map[uint32]userEntry
}

type userEntry struct {
	name string
	at   time.Time
}

// NewUsers returns a resolver whose answers are trusted for ttl.
func NewUsers(ttl time.Duration) *Users {
	return &Users{ttl: ttl, cache: make(map[uint32]userEntry)}
}

// Name returns the account name of uid, or "" when the uid has none on this host.
func (u *Users) Name(uid uint32) string {
	now := time.Now()
	u.mu.Lock()
	e, ok := u.cache[uid]
	u.mu.Unlock()
	if ok && now.Sub(e.at) < u.ttl {
		return e.name
	}
	name := ""
	if usr, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		name = usr.Username
	}
	u.mu.Lock()
	if len(u.cache) > 4096 {
		clear(u.cache)
	}
	u.cache[uid] = userEntry{name: name, at: now}
	u.mu.Unlock()
	return name
}
