//go:build amd64

// The benchmarks compare the probe against programs of bpf/benchfloor, which exist for
// x86-64 only.

package filewrite

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ward-dlp/ward/bpf/benchfloor"
)

// BenchmarkUnwatchedWrite measures what the probe adds to a write(2) that is
// not under any watched directory: the syscall tracepoint plus one tracked
// map lookup. Both sub-benchmarks run in the same process so they compare
// like with like; IgnoreTGID is left 0 so the lookup path is exercised.
func BenchmarkUnwatchedWrite(b *testing.B) {
	buf := make([]byte, 64)
	write := func(b *testing.B) {
		f, err := os.Create(filepath.Join(b.TempDir(), "bench"))
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		fd := int(f.Fd())
		b.SetBytes(int64(len(buf)))
		// CPU time of this thread (user + system, which includes the BPF programs) is
		// reported next to wall time: on a shared machine the wall time also counts time
		// spent descheduled.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var before unix.Rusage
		if err := unix.Getrusage(unix.RUSAGE_THREAD, &before); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		defer func() {
			var after unix.Rusage
			if err := unix.Getrusage(unix.RUSAGE_THREAD, &after); err != nil {
				b.Fatal(err)
			}
			cpu := time.Duration(after.Utime.Nano()+after.Stime.Nano()-before.Utime.Nano()-before.Stime.Nano()) * time.Nanosecond
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
		}()
		for i := 0; i < b.N; i++ {
			if _, err := unix.Write(fd, buf); err != nil {
				b.Fatal(err)
			}
			if i%4096 == 4095 { // keep the file small
				b.StopTimer()
				if _, err := unix.Seek(fd, 0, 0); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		}
	}
	b.Run("without-agent", write)
	withAgent := func(cfg Config) func(b *testing.B) {
		return func(b *testing.B) {
			if os.Geteuid() != 0 {
				b.Skip("needs root to load BPF programs")
			}
			p, err := Load(cfg, nil)
			if err != nil {
				b.Fatal(err)
			}
			// Detaching waits for RCU grace periods (hundreds of ms): keep it out of the timing,
			// or b.N never grows past 1.
			defer func() { b.StopTimer(); p.Close() }()
			if _, err := p.Watch(b.TempDir()); err != nil { // unrelated dir
				b.Fatal(err)
			}
			write(b)
		}
	}
	b.Run("with-agent", withAgent(Config{}))
	// Same, but this process is the ignored agent tgid: the program returns
	// before the map lookup, so the gap to with-agent is the lookup itself
	// and the gap to without-agent is the syscall-tracepoint machinery.
	b.Run("with-agent-self-ignored", withAgent(Config{IgnoreTGID: uint32(os.Getpid())}))
}

// BenchmarkSyscallCost measures the CPU time one syscall costs the calling thread with
// each sensor setup attached, in alternating rounds, and prints medians and the ratios the
// sensors issue asks for (scripts/bench-sensors.sh syscall):
//
//   - none: no BPF program on any syscall tracepoint (checked system-wide per round).
//   - floor-1: an empty program on sys_enter_write only.
//   - floor-nocopy: empty programs on filewrite's tracepoints minus the six copy hooks.
//   - floor: empty programs on every tracepoint filewrite attaches: the floor Ward is
//     measured against (any program there switches every syscall to the slow path).
//   - floor-many: empty programs on every syscall tracepoint the kernel has except
//     getppid's (~720): does the number of hooked syscalls change the cost of the write
//     (hooked in both) and of getppid (hooked in neither)?
//   - ward: the filewrite probe itself, records drained by a reader goroutine.
//   - ward-hotslot: ward while a tracked descriptor shares the written fd's fd_hot slot,
//     so the write takes the filter's slow path (tgid helper and hash lookup).
//   - dispatch-*: one program on sys_enter and one on sys_exit for all syscalls
//     (bpf/benchfloor): empty (raw-empty), the write filter inlined on raw_tp or tp_btf,
//     or tail calls per syscall number.
//
// Workloads: a 4 KiB write(2) to /dev/null (never watched: the filter's miss path),
// getppid(2) (a syscall no sensor hooks: what the setup costs everything else), and for
// none/floor/ward a 4 KiB write(2) to a file in a watched directory, captured into the ring
// buffer (the writer waits while the ring is half full, so nothing is dropped and the
// capture is always paid).
//
// CPU time is the writing thread's (CLOCK_THREAD_CPUTIME_ID, which includes the BPF
// programs that run in its syscalls), so time spent descheduled on a loaded machine is
// not counted. WARD_BENCH_ROUNDS (default 5) sets the clean rounds wanted; each round runs
// the setups in a rotated order. Use a fixed -benchtime (e.g. 200000x).
func BenchmarkSyscallCost(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root to load BPF programs")
	}
	rounds := benchRounds()
	setups, err := sensorSetups()
	if err != nil {
		b.Fatal(err)
	}
	if only := os.Getenv("WARD_BENCH_SETUPS"); only != "" {
		keep := strings.Fields(strings.ReplaceAll(only, ",", " "))
		setups = slices.DeleteFunc(setups, func(s sensorSetup) bool { return !slices.Contains(keep, s.name) })
	}
	// A round is clean when no foreign program sat on a syscall tracepoint while any of its
	// setups ran (another agent or test on a shared machine makes "none" not none). Rounds
	// are repeated, up to twice the count asked for, until enough are clean.
	res := costResults{}
	clean := 0
	for r := 0; clean < rounds && r < 2*rounds; r++ {
		order := append(slices.Clone(setups[r%len(setups):]), setups[:r%len(setups)]...)
		dirty := false
		for _, s := range order {
			b.Run(fmt.Sprintf("round=%d/sensors=%s", r+1, s.name), func(b *testing.B) {
				before, err := benchfloor.SyscallHooks()
				if err != nil {
					b.Fatal(err)
				}
				env, err := s.attach(b)
				if err != nil {
					b.Fatal(err)
				}
				defer func() {
					if err := env.close(); err != nil {
						b.Error(err)
					}
					after, err := benchfloor.SyscallHooks()
					if err != nil {
						b.Error(err)
					}
					if foreign := max(len(before), len(after)); foreign > 0 {
						dirty = true
						res.dirty(r, foreign, append(before, after...))
					}
				}()
				for _, w := range syscallWorkloads {
					if w.setups != nil && !slices.Contains(w.setups, s.name) {
						continue
					}
					b.Run(w.name, func(b *testing.B) {
						m := w.run(b, env)
						b.ReportMetric(float64(len(before)), "foreign-hooks")
						res.put(w.name, s.name, r, m)
					})
				}
			})
		}
		if !dirty {
			clean++
		}
	}
	res.print(os.Stdout, setups)
}

// sensorSetup is one configuration of BPF programs on the syscall path.
type sensorSetup struct {
	name   string
	attach func(b *testing.B) (*costEnv, error)
}

// costEnv is an attached setup with the files its workloads use.
type costEnv struct {
	probe   *Probe // ward only
	watched string // directory the watched-write workload writes in
	closers []func() error
	// heat, when set, makes the fd-number slot of fd hot (ward-hotslot): the unwatched
	// write then takes the filter's slow path. It returns the undo.
	heat func(b *testing.B, fd int) func()
}

func (e *costEnv) close() error {
	var errs []error
	for i := len(e.closers) - 1; i >= 0; i-- {
		errs = append(errs, e.closers[i]())
	}
	return errors.Join(errs...)
}

// sensorSetups builds the setups from the hooks filewrite attaches on this kernel.
func sensorSetups() ([]sensorSetup, error) {
	all, err := benchfloor.SyscallEvents()
	if err != nil {
		return nil, err
	}
	var fwSet, noCopy []string
	for _, h := range hooks {
		if !slices.Contains(all, h.event) || slices.Contains(fwSet, h.event) {
			continue // optional hook this kernel lacks
		}
		fwSet = append(fwSet, h.event)
		if !strings.HasPrefix(h.name, "copy/") {
			noCopy = append(noCopy, h.event)
		}
	}
	empty := func(events []string) func(b *testing.B) (*costEnv, error) {
		return func(b *testing.B) (*costEnv, error) {
			s, err := benchfloor.AttachEmpty(events)
			if err != nil {
				return nil, err
			}
			return &costEnv{watched: b.TempDir(), closers: []func() error{s.Close}}, nil
		}
	}
	setups := []sensorSetup{
		{"none", func(b *testing.B) (*costEnv, error) { return &costEnv{watched: b.TempDir()}, nil }},
		{"floor-1", empty([]string{"sys_enter_write"})},
		{"floor-nocopy", empty(noCopy)},
		{"floor", empty(fwSet)},
		{"floor-many", empty(slices.DeleteFunc(slices.Clone(all), func(e string) bool { return strings.HasSuffix(e, "_getppid") }))},
		{"ward", attachWard},
		{"ward-hotslot", attachWardHotSlot},
	}
	for _, d := range benchfloor.Dispatchers {
		setups = append(setups, sensorSetup{"dispatch-" + string(d), func(b *testing.B) (*costEnv, error) {
			s, err := benchfloor.AttachDispatcher(d, 0)
			if err != nil {
				return nil, err
			}
			return &costEnv{watched: b.TempDir(), closers: []func() error{s.Close}}, nil
		}})
	}
	return setups, nil
}

// attachWard loads the filewrite probe as the agent does, watches a directory for the
// watched workload and drains the ring buffer like the agent's reader (decode only).
func attachWard(b *testing.B) (*costEnv, error) {
	p, err := Load(Config{}, nil)
	if err != nil {
		return nil, err
	}
	env := &costEnv{probe: p, watched: b.TempDir()}
	done := make(chan struct{})
	env.closers = append(env.closers, func() error {
		err := p.Close() // unblocks the reader
		<-done
		return err
	})
	go func() {
		defer close(done)
		for {
			if _, err := p.Next(); errors.Is(err, ErrClosed) {
				return
			}
		}
	}()
	if _, err := p.Watch(env.watched); err != nil {
		env.close()
		return nil, err
	}
	return env, nil
}

// attachWardHotSlot is attachWard plus, during the unwatched-write workload, a tracked
// descriptor of the same process numbered fd+1024: same fd_hot slot, different key. The
// write to /dev/null then pays the filter's slow path (tgid helper and LRU-hash miss), as
// every process's writes on that fd number do while any process on the host holds a
// tracked file open under it.
func attachWardHotSlot(b *testing.B) (*costEnv, error) {
	env, err := attachWard(b)
	if err != nil {
		return nil, err
	}
	env.heat = func(b *testing.B, fd int) func() {
		f, err := os.Create(filepath.Join(env.watched, "hot.txt"))
		if err != nil {
			b.Fatal(err)
		}
		alias := fd + fdHotSlots
		if err := unix.Dup3(int(f.Fd()), alias, 0); err != nil {
			b.Fatalf("dup3 to %d: %v", alias, err)
		}
		return func() {
			unix.Close(alias)
			f.Close()
		}
	}
	return env, nil
}

// fdHotSlots mirrors FD_HOT_SLOTS in filewrite.bpf.c.
const fdHotSlots = 1024

// costMetrics is what one workload run measured.
type costMetrics struct {
	cpuNs   float64 // thread CPU per op
	otherNs float64 // CPU of the rest of the process per op (the ring reader, GC)
	drops   uint64
}

type syscallWorkload struct {
	name   string
	setups []string // nil: every setup
	run    func(b *testing.B, env *costEnv) costMetrics
}

var syscallWorkloads = []syscallWorkload{
	{name: "write-devnull-4k", run: func(b *testing.B, env *costEnv) costMetrics {
		f, err := os.OpenFile("/dev/null", os.O_WRONLY, 0)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		fd, buf := int(f.Fd()), make([]byte, 4096)
		if env.heat != nil {
			defer env.heat(b, fd)()
		}
		b.SetBytes(int64(len(buf)))
		return measureOps(b, env, func(int) {
			if _, err := unix.Write(fd, buf); err != nil {
				b.Fatal(err)
			}
		})
	}},
	{name: "getppid", run: func(b *testing.B, env *costEnv) costMetrics {
		return measureOps(b, env, func(int) { unix.Getppid() })
	}},
	{name: "write-watched-4k", setups: []string{"none", "floor", "ward"}, run: func(b *testing.B, env *costEnv) costMetrics {
		// Opened after Watch, as a process writing a document would: the open makes the
		// descriptor tracked. Clean text: nothing a classifier would flag.
		f, err := os.Create(filepath.Join(env.watched, "note.txt"))
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		fd := int(f.Fd())
		buf := []byte(strings.Repeat("The quick brown fox jumps over the lazy dog. ", 92)[:4096])
		b.SetBytes(int64(len(buf)))
		return measureOps(b, env, func(i int) {
			if _, err := unix.Write(fd, buf); err != nil {
				b.Fatal(err)
			}
			if i%256 == 255 { // keep the file at 1 MiB: one lseek per 256 writes
				if _, err := unix.Seek(fd, 0, 0); err != nil {
					b.Fatal(err)
				}
			}
			if env.probe != nil && i%64 == 63 {
				// Never let the ring fill: a dropped record is cheaper than a captured
				// one and would flatter the figure. Sleeping costs no CPU.
				for used, size := env.probe.ring.Fill(); used > size/2; used, size = env.probe.ring.Fill() {
					time.Sleep(200 * time.Microsecond)
				}
			}
		})
	}},
}

// measureOps runs op b.N times on a locked thread and returns the CPU time per op.
func measureOps(b *testing.B, env *costEnv, op func(i int)) costMetrics {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var drops0 uint64
	if env.probe != nil {
		d, err := env.probe.Drops()
		if err != nil {
			b.Fatal(err)
		}
		drops0 = d["ringbuf_full"]
	}
	runtime.GC() // a collection during the loop would land in "other"
	b.ResetTimer()
	t0, p0 := cpuClock(unix.CLOCK_THREAD_CPUTIME_ID), cpuClock(unix.CLOCK_PROCESS_CPUTIME_ID)
	for i := 0; i < b.N; i++ {
		op(i)
	}
	t1 := cpuClock(unix.CLOCK_THREAD_CPUTIME_ID)
	if env.probe != nil {
		// Let the reader finish what this run put in the ring before reading its CPU.
		for used, _ := env.probe.ring.Fill(); used > 0; used, _ = env.probe.ring.Fill() {
			time.Sleep(time.Millisecond)
		}
	}
	p1 := cpuClock(unix.CLOCK_PROCESS_CPUTIME_ID)
	b.StopTimer()
	m := costMetrics{
		cpuNs:   float64(t1-t0) / float64(b.N),
		otherNs: float64((p1-p0)-(t1-t0)) / float64(b.N),
	}
	b.ReportMetric(m.cpuNs, "cpu-ns/op")
	b.ReportMetric(m.otherNs, "other-cpu-ns/op")
	if env.probe != nil {
		d, err := env.probe.Drops()
		if err != nil {
			b.Fatal(err)
		}
		m.drops = d["ringbuf_full"] - drops0
		b.ReportMetric(float64(m.drops), "drops")
	}
	return m
}

func cpuClock(id int32) time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(id, &ts); err != nil {
		panic(err) // both clocks exist on every Linux since 2.6.12
	}
	return time.Duration(ts.Nano())
}

// costResults keeps, per workload, setup and round, the last (full-length) run's figures,
// and the rounds during which foreign syscall hooks existed.
type costResults struct {
	byWorkload map[string]map[string]map[int]costMetrics
	foreign    map[int][]string
}

func (c *costResults) put(workload, setup string, round int, m costMetrics) {
	if c.byWorkload == nil {
		c.byWorkload = map[string]map[string]map[int]costMetrics{}
	}
	if c.byWorkload[workload] == nil {
		c.byWorkload[workload] = map[string]map[int]costMetrics{}
	}
	if c.byWorkload[workload][setup] == nil {
		c.byWorkload[workload][setup] = map[int]costMetrics{}
	}
	c.byWorkload[workload][setup][round] = m
}

func (c *costResults) dirty(round, n int, hooks []string) {
	if c.foreign == nil {
		c.foreign = map[int][]string{}
	}
	if len(c.foreign[round]) < n {
		slices.Sort(hooks)
		c.foreign[round] = slices.Compact(hooks)
	}
}

// benchRounds is WARD_BENCH_ROUNDS, default 5.
func benchRounds() int {
	if v, err := strconv.Atoi(os.Getenv("WARD_BENCH_ROUNDS")); err == nil && v > 0 {
		return v
	}
	return 5
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// print writes the summary: per workload and setup the median CPU time per op over the
// clean rounds, the median of its per-round difference to "none" (paired, so slow drifts
// of the machine's load cancel), and Ward's filtering over the floor. Rounds during which
// a foreign syscall hook existed are left out.
func (c *costResults) print(w *os.File, setups []sensorSetup) {
	load, _ := os.ReadFile("/proc/loadavg")
	for r, hooks := range c.foreign {
		fmt.Fprintf(w, "round %d left out: foreign syscall hooks present: %s\n", r+1, strings.Join(hooks, " "))
	}
	fmt.Fprintf(w, "\n== syscall cost summary: thread CPU ns/op, median over clean rounds; load average now %s", load)
	clean := func(r int) bool { _, dirty := c.foreign[r]; return !dirty }
	for _, wl := range syscallWorkloads {
		bySetup := c.byWorkload[wl.name]
		if bySetup == nil {
			continue
		}
		none := bySetup["none"]
		fmt.Fprintf(w, "%s\n  %-22s %9s %9s %16s %14s\n", wl.name, "setup", "median", "min", "added vs none", "reader ns/op")
		added := map[string]float64{}
		for _, s := range setups {
			byRound := bySetup[s.name]
			if byRound == nil {
				continue
			}
			var vals, diffs, other []float64
			for r, m := range byRound {
				if !clean(r) {
					continue
				}
				vals = append(vals, m.cpuNs)
				other = append(other, m.otherNs)
				if n, ok := none[r]; ok {
					diffs = append(diffs, m.cpuNs-n.cpuNs)
				}
			}
			add := "-"
			if s.name != "none" && len(diffs) > 0 {
				added[s.name] = median(diffs)
				add = fmt.Sprintf("%+.0f (n=%d)", added[s.name], len(diffs))
			}
			rd := "-"
			if strings.HasPrefix(s.name, "ward") {
				rd = fmt.Sprintf("%.0f", median(other))
			}
			if len(vals) == 0 {
				fmt.Fprintf(w, "  %-22s  no clean round\n", s.name)
				continue
			}
			fmt.Fprintf(w, "  %-22s %9.0f %9.0f %16s %14s\n", s.name, median(vals), slices.Min(vals), add, rd)
		}
		if fl, ok := added["floor"]; ok && fl > 0 {
			if wd, ok := added["ward"]; ok {
				aim := ""
				if wl.name == "write-devnull-4k" {
					aim = " (aim: <= +10%)"
				}
				fmt.Fprintf(w, "  ward over the floor: %+.0f ns = %+.0f%% of the floor's %.0f ns%s\n", wd-fl, 100*(wd-fl)/fl, fl, aim)
			}
			if wd, ok := added["ward-hotslot"]; ok {
				fmt.Fprintf(w, "  ward-hotslot over the floor: %+.0f ns = %+.0f%% (the slow path: a tracked fd of the same number mod 1024 is open somewhere)\n", wd-fl, 100*(wd-fl)/fl)
			}
		}
		var drops uint64
		for _, m := range bySetup["ward"] {
			drops += m.drops
		}
		if drops > 0 {
			fmt.Fprintf(w, "  ward dropped %d records (ringbuf_full): its figure is flattered\n", drops)
		}
	}
}
