package tests

import (
	"bytes"
	"database/sql"
	"errors"
	"fmt"
	"github.com/ward-dlp/ward/bpf/benchfloor"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	_ "modernc.org/sqlite"

	"github.com/ward-dlp/ward/agent/stream"
	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/bpf/filewrite"
)

// BenchmarkProbeToStore measures events per second from the kernel probe to the collector's
// SQLite store at paced offered loads. For each rate a fresh collector and agent start, a
// writer creates files in a watched directory at that many files per second, each holding
// one valid SSN with context (one finding and one file-activity event), and the clock stops
// when the last finding is stored. The agent's drop counters from a health event taken
// after the run are reported; a rate that dropped anything is not a rate "without drops".
//
//	sudo go test ./tests -run '^$' -bench ProbeToStore -benchtime 1x
//
// WARD_BENCH_FILES sets the files per rate (default 10000); WARD_BENCH_RATES a list of
// files/s (default "1000 2000 4000 8000 0", 0 meaning as fast as the writer can).
func BenchmarkProbeToStore(b *testing.B) {
	files := 10000
	if v := os.Getenv("WARD_BENCH_FILES"); v != "" {
		fmt.Sscan(v, &files)
	}
	rates := []int{1000, 2000, 4000, 8000, 0}
	if v := os.Getenv("WARD_BENCH_RATES"); v != "" {
		rates = nil
		for _, f := range splitFields(v) {
			var r int
			fmt.Sscan(f, &r)
			rates = append(rates, r)
		}
	}
	for _, rate := range rates {
		name := fmt.Sprintf("files-per-s=%d", rate)
		if rate == 0 {
			name = "files-per-s=max"
		}
		b.Run(name, func(b *testing.B) { probeToStore(b, files, rate) })
	}
}

func splitFields(s string) []string {
	var out []string
	cur := ""
	for _, c := range s + " " {
		if c == ' ' || c == ',' {
			if cur != "" {
				out = append(out, cur)
			}
			cur = ""
			continue
		}
		cur += string(c)
	}
	return out
}

func probeToStore(b *testing.B, files, rate int) {
	cfg := filepath.Join(b.TempDir(), "agent.yaml")
	if err := os.WriteFile(cfg, []byte("health_interval: 1s\nlog_level: info\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	w := startWard(b, "--config", cfg, "--log-level", "info")
	dir := filepath.Join(w.watch, "bench")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	for i := range files {
		if rate > 0 && i%20 == 0 {
			if ahead := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))); ahead > 0 {
				time.Sleep(ahead)
			}
		}
		body := fmt.Appendf(nil, "intake %06d\nSSN: %03d-%02d-%04d\n", i, 100+i%500, 10+i%89, 1000+i%9000)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%06d.txt", i)), body, 0o600); err != nil {
			b.Fatal(err)
		}
	}
	wrote := time.Since(start)
	var elapsed time.Duration
	got := 0
	deadline := time.Now().Add(3 * time.Minute)
	db, err := sql.Open("sqlite", "file:"+filepath.Join(w.home, "collector", "ward.db")+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	for {
		// Count in SQL: listing thousands of events through wardctl every poll would
		// compete with the pipeline for the CPU it is measuring.
		if err := db.QueryRow(`SELECT count(*) FROM events WHERE kind = 'finding'`).Scan(&got); err != nil {
			b.Fatal(err)
		}
		if got >= files {
			elapsed = time.Since(start)
			break
		}
		if time.Now().After(deadline) {
			elapsed = time.Since(start)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(2*got)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(files)/wrote.Seconds(), "files-offered/s")
	b.ReportMetric(float64(files-got), "findings-missing")

	// A health event taken after the run carries every drop counter.
	time.Sleep(1500 * time.Millisecond)
	var last *wardv1.Health
	for _, s := range w.events("--kind", "health") {
		last = s.Event.GetHealth()
	}
	if last == nil {
		b.Fatal("no health event")
	}
	var dropped uint64
	for k, v := range last.GetDrops() {
		switch k {
		case "classify.reread", "proc.evicted", "proc.lookup_misses", "bpf.process.args_truncated",
			"flows.state_without_connect":
			continue // work done, attribution detail, or a connection older than the agent: not lost events
		}
		if v != 0 {
			b.Logf("drop counter %s = %d", k, v)
			dropped += v
		}
	}
	b.ReportMetric(float64(dropped), "drops")
	if got < files && dropped == 0 {
		b.Errorf("%d findings missing and no drop counter says why: silent loss", files-got)
	}
}

// envInt reads a positive integer from the environment, or def.
func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func medianOf(v []float64) float64 {
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

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// procCPU is a process's user+system CPU time so far, from /proc/<pid>/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces: fields start after its closing parenthesis.
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, _ := strconv.ParseUint(f[11], 10, 64) // field 14 overall
	st, _ := strconv.ParseUint(f[12], 10, 64)
	const clkTck = 100 // USER_HZ on every Linux ABI Go supports
	return time.Duration(ut+st) * time.Second / clkTck, nil
}

// overheadWorkload is one realistic job timed with and without the agent.
type overheadWorkload struct {
	name string
	// cmd builds the job; out is a directory for its output (the agent's watched directory
	// when the agent runs and the workload writes into it, a temp directory otherwise).
	cmd func(b *testing.B, out string) *exec.Cmd
	// ops is how many units one run does (execs for the exec loop), for a per-unit rate.
	ops     int
	watched bool
	// warm, when set, replaces the workload itself as the untimed first run that fills the
	// page cache (the first tar of /usr/include otherwise reads the disk).
	warm func() *exec.Cmd
}

// overheadRun is one timed run.
type overheadRun struct {
	wall, cpu         time.Duration // the workload's wall time and its process tree's CPU
	agentCPU, collCPU time.Duration // during the run
	with              bool
	floor             bool // empty programs on the agent's syscall tracepoints, no agent
}

// BenchmarkAgentOverhead times realistic jobs without an agent, with the floor (empty BPF
// programs on every syscall tracepoint the file probe uses: what any sensor hooking those
// syscalls costs on this kernel, SYSCALL_WORK slow path included) and with a running agent
// (and its collector, whose CPU is reported apart: in a deployment it is on another
// machine), in rotating order, and prints the slowdowns and the agent's CPU per job
// (scripts/bench-sensors.sh exec|tar|gobuild):
//
//   - exec: a shell running /bin/true WARD_BENCH_EXECS (2000) times: execs/s.
//   - tar: tar of /usr/include, four times over, through a pipe into /dev/null: every
//     syscall under the probes, no watched file written.
//   - tar-watched: the same archive written into a watched directory: every write
//     captured and the archive classified.
//   - gobuild: go build -a of a small module with a fresh GOCACHE (cold), the toolchain
//     exec'ing the compiler per package and writing thousands of cache files.
//
// The workload's CPU is its process tree's user+system time (wait4 rusage); the agent's
// and collector's come from /proc. WARD_BENCH_ROUNDS (3) rounds, WARD_BENCH_WORKLOADS
// selects (space separated).
func BenchmarkAgentOverhead(b *testing.B) {
	needRoot(b)
	rounds := envInt("WARD_BENCH_ROUNDS", 3)
	execs := envInt("WARD_BENCH_EXECS", 2000)
	mod := goModule(b)
	all := []overheadWorkload{
		{name: "exec", ops: execs, cmd: func(b *testing.B, _ string) *exec.Cmd {
			return exec.Command("/bin/sh", "-c", fmt.Sprintf(`i=0; while [ $i -lt %d ]; do /bin/true; i=$((i+1)); done`, execs))
		}},
		{name: "tar", cmd: func(b *testing.B, _ string) *exec.Cmd {
			// Through cat: GNU tar skips reading file contents when its archive is /dev/null.
			return exec.Command("/bin/sh", "-c", "for i in 1 2 3 4; do tar -cf - -C / usr/include; done | cat > /dev/null")
		}},
		{name: "tar-watched", watched: true, cmd: func(b *testing.B, out string) *exec.Cmd {
			return exec.Command("tar", "-cf", filepath.Join(out, fmt.Sprintf("include-%d.tar", time.Now().UnixNano())), "-C", "/", "usr/include")
		}},
		{name: "gobuild", warm: func() *exec.Cmd {
			return exec.Command("/bin/sh", "-c", `tar -cf - -C "$(go env GOROOT)" src pkg/tool | cat > /dev/null`)
		}, cmd: func(b *testing.B, _ string) *exec.Cmd {
			c := exec.Command("go", "build", "-a", "-o", filepath.Join(b.TempDir(), "hello"), ".")
			c.Dir = mod
			c.Env = append(os.Environ(), "GOCACHE="+b.TempDir(), "GOFLAGS=-buildvcs=false", "GOPROXY=off", "GOTOOLCHAIN=local", "CGO_ENABLED=0")
			return c
		}},
	}
	workloads := all
	if sel := os.Getenv("WARD_BENCH_WORKLOADS"); sel != "" {
		names := strings.Fields(strings.ReplaceAll(sel, ",", " "))
		workloads = slices.DeleteFunc(slices.Clone(all), func(w overheadWorkload) bool { return !slices.Contains(names, w.name) })
	}
	for _, wl := range workloads {
		c := wl.cmd(b, b.TempDir())
		if wl.warm != nil {
			c = wl.warm()
		}
		if out, err := c.CombinedOutput(); err != nil {
			b.Fatalf("warming up %s: %v\n%s", wl.name, err, out)
		}
	}
	runs := map[string][]overheadRun{}
	modes := []string{"none", "floor", "agent"}
	for r := range rounds {
		for i := range modes {
			mode := modes[(i+r)%len(modes)] // rotated per round
			b.Run(fmt.Sprintf("round=%d/mode=%s", r+1, mode), func(b *testing.B) {
				var w *ward
				out := b.TempDir()
				switch mode {
				case "agent":
					w = startWard(b)
					settle(b, w)
				case "floor":
					have, err := benchfloor.SyscallEvents()
					if err != nil {
						b.Fatal(err)
					}
					events := slices.DeleteFunc(filewrite.Tracepoints(), func(e string) bool { return !slices.Contains(have, e) })
					s, err := benchfloor.AttachEmpty(events)
					if err != nil {
						b.Fatal(err)
					}
					defer s.Close()
				}
				for _, wl := range workloads {
					if wl.watched && mode == "floor" {
						continue // nothing is watched without the agent
					}
					b.Run(wl.name, func(b *testing.B) {
						dir := out
						if w != nil && wl.watched {
							dir = w.watch
						}
						run := runOverhead(b, wl, dir, w) // -benchtime 1x: one run
						run.floor = mode == "floor"
						runs[wl.name] = append(runs[wl.name], run)
					})
				}
			})
		}
	}
	printOverhead(workloads, runs, rounds)
}

// settle waits until the agent's start-up work (TLS-library discovery across every running
// process, /proc seeding, enrolment traffic) is over: a deployed agent runs for weeks, and
// its first seconds are not what a workload on a managed workstation competes with. It
// waits for a half second in which the agent used under 2% of a core, up to 30 s.
func settle(b *testing.B, w *ward) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		c0, err := procCPU(w.agent.Process.Pid)
		if err != nil {
			b.Fatalf("agent gone while settling: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
		c1, _ := procCPU(w.agent.Process.Pid)
		if c1-c0 < 10*time.Millisecond {
			return
		}
	}
	b.Logf("agent still busy after 30 s; measuring anyway")
}

func runOverhead(b *testing.B, wl overheadWorkload, dir string, w *ward) overheadRun {
	b.StopTimer()
	var a0, c0 time.Duration
	if w != nil {
		a0, _ = procCPU(w.agent.Process.Pid)
		c0, _ = procCPU(w.collector.Process.Pid)
	}
	cmd := wl.cmd(b, dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b.StartTimer()
	start := time.Now()
	if err := cmd.Run(); err != nil {
		b.Fatalf("%s: %v\n%s", wl.name, err, stderr.String())
	}
	wall := time.Since(start)
	b.StopTimer()
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	run := overheadRun{wall: wall, cpu: time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), with: w != nil}
	if w != nil {
		a1, err := procCPU(w.agent.Process.Pid)
		if err != nil {
			b.Fatalf("agent gone during %s: %v", wl.name, err)
		}
		c1, _ := procCPU(w.collector.Process.Pid)
		run.agentCPU, run.collCPU = a1-a0, c1-c0
		b.ReportMetric(100*run.agentCPU.Seconds()/wall.Seconds(), "agent-cpu-%")
	}
	b.ReportMetric(run.cpu.Seconds(), "cpu-s")
	b.ReportMetric(wall.Seconds(), "wall-s")
	if wl.ops > 0 {
		b.ReportMetric(float64(wl.ops)/wall.Seconds(), "ops/s")
	}
	if wl.watched {
		// The archive is not needed once written; the agent may still be reading it.
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if strings.HasSuffix(e.Name(), ".tar") {
				os.Remove(filepath.Join(dir, e.Name()))
			}
		}
	}
	return run
}

// goModule writes a small module (fmt, strings: the runtime and ~25 std packages) for the
// cold build.
func goModule(b *testing.B) string {
	dir := b.TempDir()
	files := map[string]string{
		"go.mod": "module example.com/hello\n\ngo 1.22\n",
		"main.go": `package main

import (
	"fmt"
	"strings"
)

func main() { fmt.Println(strings.ToUpper("hello, world")) }
`,
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	return dir
}

// printOverhead prints per workload the medians without and with the agent, the median of
// the per-round paired slowdown, and the agent's CPU.
func printOverhead(workloads []overheadWorkload, runs map[string][]overheadRun, rounds int) {
	fmt.Printf("\n== agent overhead summary: medians of %d rounds; load average now %s\n", rounds, loadAvg())
	fmt.Printf("  %-12s %10s %10s %10s %10s %10s %10s %12s %12s\n", "workload", "wall w/o", "wall with", "slowdown", "cpu w/o", "cpu with", "cpu slow.", "agent cpu", "collector")
	for _, wl := range workloads {
		var wo, wi, fl []overheadRun
		for _, r := range runs[wl.name] {
			switch {
			case r.with:
				wi = append(wi, r)
			case r.floor:
				fl = append(fl, r)
			default:
				wo = append(wo, r)
			}
		}
		if len(wo) == 0 || len(wi) == 0 {
			continue
		}
		pick := func(rs []overheadRun, f func(overheadRun) float64) []float64 {
			var v []float64
			for _, r := range rs {
				v = append(v, f(r))
			}
			return v
		}
		wall := func(r overheadRun) float64 { return r.wall.Seconds() }
		cpu := func(r overheadRun) float64 { return r.cpu.Seconds() }
		// Paired by round: the i-th run with the agent against the i-th without.
		var wallSlow, cpuSlow []float64
		for i := range min(len(wo), len(wi)) {
			wallSlow = append(wallSlow, 100*(wall(wi[i])/wall(wo[i])-1))
			cpuSlow = append(cpuSlow, 100*(cpu(wi[i])/cpu(wo[i])-1))
		}
		agentPct := pick(wi, func(r overheadRun) float64 { return 100 * r.agentCPU.Seconds() / r.wall.Seconds() })
		collPct := pick(wi, func(r overheadRun) float64 { return 100 * r.collCPU.Seconds() / r.wall.Seconds() })
		fmt.Printf("  %-12s %9.2fs %9.2fs %+9.1f%% %9.2fs %9.2fs %+9.1f%% %10.1f%% %10.1f%%\n", wl.name,
			medianOf(pick(wo, wall)), medianOf(pick(wi, wall)), medianOf(wallSlow),
			medianOf(pick(wo, cpu)), medianOf(pick(wi, cpu)), medianOf(cpuSlow),
			medianOf(agentPct), medianOf(collPct))
		if wl.ops > 0 {
			fmt.Printf("  %-12s execs/s without %.0f, with %.0f\n", "", float64(wl.ops)/medianOf(pick(wo, wall)), float64(wl.ops)/medianOf(pick(wi, wall)))
		}
		if len(fl) > 0 {
			// The same round's runs, paired: floor against none, agent against floor.
			var flWall, flCPU, overWall, overCPU []float64
			for i := range min(len(wo), len(wi), len(fl)) {
				flWall = append(flWall, 100*(wall(fl[i])/wall(wo[i])-1))
				flCPU = append(flCPU, 100*(cpu(fl[i])/cpu(wo[i])-1))
				overWall = append(overWall, 100*(wall(wi[i])/wall(fl[i])-1))
				overCPU = append(overCPU, 100*(cpu(wi[i])/cpu(fl[i])-1))
			}
			fmt.Printf("  %-12s floor (empty programs): wall %.2fs %+.1f%%, cpu %.2fs %+.1f%%; agent over the floor: wall %+.1f%%, cpu %+.1f%%\n", "",
				medianOf(pick(fl, wall)), medianOf(flWall), medianOf(pick(fl, cpu)), medianOf(flCPU), medianOf(overWall), medianOf(overCPU))
		}
	}
	fmt.Println("  (agent/collector cpu: % of one core over the run's wall time; aim for tar and gobuild: slowdown <= 3%)")
}

// ratePipeline is the agent's probe-to-assembler path, as agent.go wires it: one goroutine
// moving decoded records off the ring buffer into a channel of 1024, one goroutine owning
// the stream.Assembler, and the reassembled contents taken off a channel of 256 (counted
// here instead of classified: this measures getting events out of the kernel, not
// classifying them).
type ratePipeline struct {
	probe    *filewrite.Probe
	start    chan struct{} // closed to let the reader begin
	records  atomic.Uint64 // records applied to the assembler
	contents atomic.Uint64
	done     chan struct{}
}

func newRatePipeline(b *testing.B, ringBytes uint32, watch string) *ratePipeline {
	p, err := filewrite.Load(filewrite.Config{RingBytes: ringBytes}, nil)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := p.Watch(watch); err != nil {
		p.Close()
		b.Fatal(err)
	}
	rp := &ratePipeline{probe: p, start: make(chan struct{}), done: make(chan struct{})}
	recs := make(chan filewrite.Record, 1024)
	out := make(chan stream.Content, 256)
	go func() { // readFiles
		defer close(recs)
		<-rp.start
		for {
			r, err := p.Next()
			if errors.Is(err, filewrite.ErrClosed) {
				return
			}
			if err != nil {
				continue
			}
			recs <- r
		}
	}()
	go func() { // assemble
		defer close(out)
		asm := stream.New(stream.Config{MaxFileBytes: 1 << 20, MaxBufferedBytes: 64 << 20, MaxOpen: 4096, IdleFlush: 2 * time.Second})
		emit := func(cs ...stream.Content) {
			for _, c := range cs {
				out <- c
			}
		}
		for r := range recs {
			switch r := r.(type) {
			case filewrite.Open:
				emit(asm.Open(stream.Key{TGID: r.PID, FD: r.FD}, stream.File{Path: r.Path, Device: uint64(r.Dev), Inode: r.Ino, WatchDir: r.WatchDir}, r.Time)...)
			case filewrite.Write:
				emit(asm.Write(stream.Key{TGID: r.PID, FD: r.FD}, stream.File{Device: uint64(r.Dev), Inode: r.Ino}, r.Offset, r.Requested, r.Data, r.Time)...)
			case filewrite.Close:
				if c, ok := asm.Close(stream.Key{TGID: r.PID, FD: r.FD}, r.Time); ok {
					emit(c)
				}
			}
			rp.records.Add(1)
		}
	}()
	go func() { // the classify workers' end of the channel
		defer close(rp.done)
		for range out {
			rp.contents.Add(1)
		}
	}()
	b.Cleanup(func() {
		select {
		case <-rp.start:
		default:
			close(rp.start)
		}
		p.Close()
		<-rp.done
	})
	return rp
}

func (rp *ratePipeline) ringbufFull(b *testing.B) uint64 {
	d, err := rp.probe.Drops()
	if err != nil {
		b.Fatal(err)
	}
	return d["ringbuf_full"]
}

// waitRecords waits until the pipeline applied n records, or gives up after timeout.
func (rp *ratePipeline) waitRecords(n uint64, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for rp.records.Load() < n {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// rateWriter writes clean 64-byte lines into files of a watched directory: each file
// gets perFile writes, then is closed. It returns the records it caused (open + writes +
// close) and its thread's CPU time.
func rateWriter(dir string, id, writes, perFile int, perSecond float64) (records uint64, cpu time.Duration, err error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	line := []byte("Visit scheduled; patient asked about parking and the lobby hours.\n")[:64]
	c0 := threadCPU()
	start := time.Now()
	fd := -1
	for i := 0; i < writes; i++ {
		if i%perFile == 0 {
			if fd >= 0 {
				unix.Close(fd)
				records++
			}
			fd, err = unix.Open(filepath.Join(dir, fmt.Sprintf("w%d-%d.txt", id, i/perFile)), unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC, 0o600)
			if err != nil {
				return records, 0, err
			}
			records++
		}
		if _, err := unix.Write(fd, line); err != nil {
			return records, 0, err
		}
		records++
		if perSecond > 0 && i%32 == 31 {
			if ahead := time.Until(start.Add(time.Duration(float64(i+1) / perSecond * float64(time.Second)))); ahead > 0 {
				time.Sleep(ahead)
			}
		}
	}
	if fd >= 0 {
		unix.Close(fd)
		records++
	}
	return records, threadCPU() - c0, nil
}

func threadCPU() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
	return time.Duration(ts.Nano())
}

func processCPU() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_PROCESS_CPUTIME_ID, &ts)
	return time.Duration(ts.Nano())
}

// BenchmarkWatchedEventRate measures how many watched-write events per second the
// probe-to-assembler path takes without a kernel drop (scripts/bench-sensors.sh rate). The
// writes are 64 bytes of clean text, each captured into the ring buffer; files of 1000
// writes each, so open and close records are 0.2% of the stream.
//
//   - drain: the writers fill a 64 MiB ring while the reader is held back, then the reader
//     is released and timed until the last record is applied: the path's capacity in
//     events per second and per CPU-second, with no writer competing for the cores.
//   - paced/rate=N: two writer threads offer N writes/s for WARD_BENCH_RATE_SECONDS (2 s)
//     each with the agent's default 8 MiB ring and the reader running; drops are the
//     kernel's ringbuf_full count. The highest N with zero drops is the figure; "max" is
//     the writers unpaced.
//
// WARD_BENCH_RATES overrides the paced rates ("50000 100000 ..."); WARD_BENCH_PROFILE=file
// writes a CPU profile of the drain phase (only the pipeline runs then).
func BenchmarkWatchedEventRate(b *testing.B) {
	needRoot(b)
	b.Run("drain", func(b *testing.B) {
		dir := b.TempDir()
		rp := newRatePipeline(b, 64<<20, dir)
		const writers, perWriter = 2, 200000
		var wg sync.WaitGroup
		var produced atomic.Uint64
		for i := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				n, _, err := rateWriter(dir, i, perWriter, 1000, 0)
				if err != nil {
					b.Error(err)
				}
				produced.Add(n)
			}()
		}
		wg.Wait()
		if b.Failed() {
			return
		}
		if d := rp.ringbufFull(b); d > 0 {
			b.Fatalf("%d records dropped while filling the ring: it is too small for %d records", d, produced.Load())
		}
		if prof := os.Getenv("WARD_BENCH_PROFILE"); prof != "" {
			f, err := os.Create(prof)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			if err := pprof.StartCPUProfile(f); err != nil {
				b.Fatal(err)
			}
			defer pprof.StopCPUProfile()
		}
		runtime.GC()
		b.ResetTimer()
		c0, t0 := processCPU(), time.Now()
		close(rp.start)
		if !rp.waitRecords(produced.Load(), 2*time.Minute) {
			b.Fatalf("pipeline applied %d of %d records", rp.records.Load(), produced.Load())
		}
		elapsed, cpu := time.Since(t0), processCPU()-c0
		b.StopTimer()
		n := float64(produced.Load())
		b.ReportMetric(n/elapsed.Seconds(), "events/s")
		b.ReportMetric(n/cpu.Seconds(), "events/cpu-s")
		b.ReportMetric(float64(cpu.Nanoseconds())/n, "cpu-ns/event")
		fmt.Printf("== drain: %.0f records in %v wall, %v CPU: %.0f events/s, %.0f events per CPU-second (load %s)\n",
			n, elapsed.Round(time.Millisecond), cpu.Round(time.Millisecond), n/elapsed.Seconds(), n/cpu.Seconds(), loadAvg())
	})
	rates := []int{25000, 50000, 100000, 200000, 400000, 0}
	if v := os.Getenv("WARD_BENCH_RATES"); v != "" {
		rates = nil
		for _, f := range strings.Fields(strings.ReplaceAll(v, ",", " ")) {
			r, err := strconv.Atoi(f)
			if err != nil {
				b.Fatalf("WARD_BENCH_RATES: %v", err)
			}
			rates = append(rates, r)
		}
	}
	seconds := envInt("WARD_BENCH_RATE_SECONDS", 2)
	best := -1.0
	for _, rate := range rates {
		name := fmt.Sprintf("paced/rate=%d", rate)
		if rate == 0 {
			name = "paced/rate=max"
		}
		b.Run(name, func(b *testing.B) {
			dir := b.TempDir()
			rp := newRatePipeline(b, 0, dir) // the agent's default ring
			close(rp.start)
			const writers = 2
			perWriter := 400000 // unpaced: bounded by count
			if rate > 0 {
				perWriter = rate * seconds / writers
			}
			d0 := rp.ringbufFull(b)
			c0, t0 := processCPU(), time.Now()
			var wg sync.WaitGroup
			var produced atomic.Uint64
			var writerCPU atomic.Int64
			for i := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					n, cpu, err := rateWriter(dir, i, perWriter, 1000, float64(rate)/writers)
					if err != nil {
						b.Error(err)
					}
					produced.Add(n)
					writerCPU.Add(int64(cpu))
				}()
			}
			wg.Wait()
			wrote := time.Since(t0)
			drops := rp.ringbufFull(b) - d0
			rp.waitRecords(produced.Load()-drops, time.Minute)
			elapsed := time.Since(t0)
			pipeCPU := processCPU() - c0 - time.Duration(writerCPU.Load())
			b.StopTimer()
			achieved := float64(writers*perWriter) / wrote.Seconds()
			b.ReportMetric(achieved, "writes/s")
			b.ReportMetric(float64(drops), "drops")
			b.ReportMetric(100*pipeCPU.Seconds()/elapsed.Seconds(), "pipeline-cpu-%")
			b.ReportMetric(float64(pipeCPU.Nanoseconds())/float64(produced.Load()), "pipeline-cpu-ns/event")
			fmt.Printf("== paced %s: %.0f writes/s achieved, %d drops, pipeline CPU %.0f%% of a core (%.0f ns/event), writers %.0f ns/write (load %s)\n",
				name, achieved, drops, 100*pipeCPU.Seconds()/elapsed.Seconds(), float64(pipeCPU.Nanoseconds())/float64(produced.Load()),
				float64(writerCPU.Load())/float64(writers*perWriter), loadAvg())
			if drops == 0 && achieved > best {
				best = achieved
			}
		})
	}
	if best >= 0 {
		fmt.Printf("== highest achieved rate with zero drops: %.0f writes/s (load %s)\n", best, loadAvg())
	}
}
