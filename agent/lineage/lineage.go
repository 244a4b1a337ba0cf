package lineage

import (
	"slices"
	"sync"
	"time"
)

// Source is one tagged file whose data a process may hold.
type Source struct {
	Inode
	Class Class
	Path  string
	// ReadTime is when the file was opened for reading; the taint decays from then, also in
	// the children that inherited it.
	ReadTime time.Time
	// ReadBy is the process that opened the file: the process itself, or the ancestor it
	// inherited the taint from.
	ReadBy    uint32
	Inherited bool
}

// Config tunes the taint table.
type Config struct {
	// TTL is how long a read taints the reader (and the children it starts). Default 1 h.
	TTL time.Duration
	// MaxProcesses bounds the tainted processes tracked; past it the ones whose taint is
	// oldest are forgotten first. Default 16384.
	MaxProcesses int
	// MaxSources bounds the sources one process carries (most recent kept). Default 16.
	MaxSources int
	// ExitGrace keeps an exited process's taint for writes classified after it exited (a
	// copy is classified when its file is closed, often after the copier exited). Default
	// 2 minutes, never past the TTL.
	ExitGrace time.Duration
	// Parent resolves a process's parent and the process's own start time (the process
	// table, falling back to /proc), so a child started by a tainted process is found even when its exec
	// record never came (fork without exec) or came before the parent's read record.
	// Nil: only exec records propagate taint.
	Parent func(pid uint32) (ppid uint32, start time.Time, ok bool)
}

// Defaults used when a Config field is zero.
const (
	DefaultTTL          = time.Hour
	DefaultMaxProcesses = 16384
	DefaultMaxSources   = 16
	DefaultExitGrace    = 2 * time.Minute
	// maxAncestry bounds the parent walk of a lookup.
	maxAncestry = 8
	// startSlack absorbs the different precisions of process start times (boot-clock
	// nanoseconds from the probes, clock ticks from /proc).
	startSlack = time.Second
)

// Confidence bounds of lineage matches: below the default detection thresholds (Part 2 70,
// PHI 65), so content rules never fire on lineage alone, and decaying with the taint's age.
const (
	ConfidenceFresh = 60
	ConfidenceStale = 30
)

type entry struct {
	start   time.Time // process start; zero when unknown
	exited  time.Time
	sources []Source
	// resolved is set once a lookup has walked this process's ancestry, so writes in a loop
	// walk it once.
	resolved bool
}

// Table is the taint table, keyed by process (thread-group id). It is safe for concurrent
// use.
type Table struct {
	cfg Config

	mu    sync.Mutex
	procs map[uint32]*entry
	stats Stats
}

// Stats are the table's counters.
type Stats struct {
	Tainted   int    // processes carrying a live taint
	Reads     uint64 // reads of tagged files recorded
	Inherited uint64 // children that inherited a taint
	Expired   uint64 // taints that decayed away
	Evicted   uint64 // taints forgotten to stay within MaxProcesses
	Reused    uint64 // entries dropped because their pid now names another process
}

// New returns an empty table.
func New(cfg Config) *Table {
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.MaxProcesses <= 0 {
		cfg.MaxProcesses = DefaultMaxProcesses
	}
	if cfg.MaxSources <= 0 {
		cfg.MaxSources = DefaultMaxSources
	}
	if cfg.ExitGrace <= 0 {
		cfg.ExitGrace = DefaultExitGrace
	}
	cfg.ExitGrace = min(cfg.ExitGrace, cfg.TTL)
	return &Table{cfg: cfg, procs: make(map[uint32]*entry)}
}

// TTL is the configured taint lifetime.
func (t *Table) TTL() time.Duration { return t.cfg.TTL }

// Read records that process pid (started at start) opened a tagged file.
func (t *Table) Read(pid uint32, start time.Time, s Source) {
	if s.ReadBy == 0 {
		s.ReadBy = pid
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stats.Reads++
	e := t.entryLocked(pid, start)
	e.add(s, t.cfg.MaxSources)
	if len(t.procs) > t.cfg.MaxProcesses {
		t.evictLocked(s.ReadTime)
	}
}

// entryLocked returns pid's entry, replacing one that belonged to an earlier process with
// the same pid.
func (t *Table) entryLocked(pid uint32, start time.Time) *entry {
	e, ok := t.procs[pid]
	if ok && !samePID(e, start) {
		t.stats.Reused++
		ok = false
	}
	if !ok {
		e = &entry{start: start}
		t.procs[pid] = e
	} else if e.start.IsZero() {
		e.start = start
	}
	return e
}

// samePID reports whether an entry can belong to the process started at start.
func samePID(e *entry, start time.Time) bool {
	if start.IsZero() {
		return e.exited.IsZero() // unknown start: trust a live entry only
	}
	if !e.exited.IsZero() && start.After(e.exited) {
		return false
	}
	if !e.start.IsZero() {
		d := start.Sub(e.start)
		return d < startSlack && d > -startSlack
	}
	return true
}

// add merges a source: the same file read again keeps one source with the latest read.
func (e *entry) add(s Source, maxSources int) {
	for i := range e.sources {
		if e.sources[i].Inode == s.Inode {
			if s.ReadTime.After(e.sources[i].ReadTime) || (!s.Inherited && e.sources[i].Inherited) {
				e.sources[i] = s
			}
			return
		}
	}
	e.sources = append(e.sources, s)
	if len(e.sources) > maxSources {
		// Drop the oldest read: it is the first to decay anyway.
		oldest := 0
		for i := range e.sources {
			if e.sources[i].ReadTime.Before(e.sources[oldest].ReadTime) {
				oldest = i
			}
		}
		e.sources = slices.Delete(e.sources, oldest, oldest+1)
	}
}

// Exec records that process pid (started at start) is a child of ppid: it inherits the
// parent's live taint from reads made before it started. A process that execs keeps its
// own taint (descriptors and environment survive exec).
func (t *Table) Exec(pid, ppid uint32, start, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p, ok := t.procs[ppid]
	if !ok || !p.exited.IsZero() {
		return
	}
	t.inheritLocked(pid, start, p, now)
}

// inheritLocked copies parent's live sources read before the child started into pid.
func (t *Table) inheritLocked(pid uint32, start time.Time, parent *entry, now time.Time) []Source {
	var got []Source
	for _, s := range parent.sources {
		if !t.live(s, now) || (!start.IsZero() && s.ReadTime.After(start.Add(startSlack))) {
			continue
		}
		s.Inherited = true
		got = append(got, s)
	}
	if len(got) == 0 {
		return nil
	}
	e := t.entryLocked(pid, start)
	for _, s := range got {
		e.add(s, t.cfg.MaxSources)
	}
	t.stats.Inherited++
	return got
}

// Exit marks a process gone. Its taint stays for ExitGrace, for its writes still being
// classified.
func (t *Table) Exit(pid uint32, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e, ok := t.procs[pid]; ok && e.exited.IsZero() {
		e.exited = at
	}
}

func (t *Table) live(s Source, now time.Time) bool {
	return now.Sub(s.ReadTime) < t.cfg.TTL
}

// Taint returns the live sources process pid (started at start; zero if unknown) carries
// at now: its own reads and those inherited from the ancestors that started it after they
// read. Nil when the process is clean.
func (t *Table) Taint(pid uint32, start, now time.Time) []Source {
	if pid == 0 {
		return nil
	}
	t.mu.Lock()
	e, ok := t.procs[pid]
	if ok && !samePID(e, start) {
		delete(t.procs, pid)
		t.stats.Reused++
		ok = false
	}
	if ok && e.resolved {
		out := t.liveLocked(e, now)
		t.mu.Unlock()
		return out
	}
	noTaint := len(t.procs) == 0
	t.mu.Unlock()
	if noTaint || t.cfg.Parent == nil {
		if ok {
			t.mu.Lock()
			defer t.mu.Unlock()
			return t.liveLocked(e, now)
		}
		return nil
	}
	// Walk the ancestry outside the lock (the resolver may read /proc), then inherit.
	type hop struct {
		pid   uint32
		start time.Time
	}
	chain := []hop{{pid, start}}
	for cur := pid; len(chain) <= maxAncestry; {
		ppid, curStart, ok := t.cfg.Parent(cur)
		if !ok {
			break
		}
		if last := &chain[len(chain)-1]; last.start.IsZero() {
			last.start = curStart
		}
		if ppid <= 1 || ppid == cur {
			break
		}
		chain = append(chain, hop{pid: ppid})
		cur = ppid
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	// From the oldest ancestor down, each child inherits what its parent holds.
	for i := len(chain) - 2; i >= 0; i-- {
		parent, ok := t.procs[chain[i+1].pid]
		if !ok || !samePID(parent, chain[i+1].start) {
			continue
		}
		t.inheritLocked(chain[i].pid, chain[i].start, parent, now)
	}
	e, ok = t.procs[pid]
	if !ok {
		return nil
	}
	e.resolved = true
	return t.liveLocked(e, now)
}

// liveLocked returns copies of e's sources that have not decayed, freshest first.
func (t *Table) liveLocked(e *entry, now time.Time) []Source {
	var out []Source
	for _, s := range e.sources {
		if t.live(s, now) {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b Source) int { return b.ReadTime.Compare(a.ReadTime) })
	return out
}

// Confidence is how much a lineage match from s is worth at now: ConfidenceFresh right
// after the read, falling linearly to ConfidenceStale at the TTL.
func (t *Table) Confidence(s Source, now time.Time) int {
	age := now.Sub(s.ReadTime)
	if age <= 0 {
		return ConfidenceFresh
	}
	if age >= t.cfg.TTL {
		return ConfidenceStale
	}
	span := ConfidenceFresh - ConfidenceStale
	return ConfidenceFresh - int(int64(span)*int64(age)/int64(t.cfg.TTL))
}

// Sweep drops decayed sources, exited processes past their grace, and entries without
// taint. Call it periodically.
func (t *Table) Sweep(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for pid, e := range t.procs {
		n := len(e.sources)
		e.sources = slices.DeleteFunc(e.sources, func(s Source) bool { return !t.live(s, now) })
		t.stats.Expired += uint64(n - len(e.sources))
		if len(e.sources) == 0 || (!e.exited.IsZero() && now.Sub(e.exited) > t.cfg.ExitGrace) {
			delete(t.procs, pid)
		}
	}
	if len(t.procs) > t.cfg.MaxProcesses {
		t.evictLocked(now)
	}
}

// evictLocked forgets exited processes first, then those whose freshest read is oldest.
func (t *Table) evictLocked(now time.Time) {
	for pid, e := range t.procs {
		if len(t.procs) <= t.cfg.MaxProcesses {
			return
		}
		if !e.exited.IsZero() || len(e.sources) == 0 {
			delete(t.procs, pid)
			t.stats.Evicted++
		}
	}
	type aged struct {
		pid  uint32
		last time.Time
	}
	var all []aged
	for pid, e := range t.procs {
		var last time.Time
		for _, s := range e.sources {
			if s.ReadTime.After(last) {
				last = s.ReadTime
			}
		}
		all = append(all, aged{pid, last})
	}
	slices.SortFunc(all, func(a, b aged) int { return a.last.Compare(b.last) })
	for _, a := range all {
		if len(t.procs) <= t.cfg.MaxProcesses {
			break
		}
		delete(t.procs, a.pid)
		t.stats.Evicted++
	}
}

// Stats returns the table's counters.
func (t *Table) Stats() Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.stats
	for _, e := range t.procs {
		if len(e.sources) > 0 {
			s.Tainted++
		}
	}
	return s
}
