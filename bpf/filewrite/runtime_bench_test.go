package filewrite

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/ward-dlp/ward/bpf/benchfloor"
	"github.com/ward-dlp/ward/bpf/internal/kernel"
	"golang.org/x/sys/unix"
)

// BenchmarkWriteFilterRunTime measures the in-kernel run time of the program on
// sys_enter_write, from the kernel's own BPF statistics (BPF_STATS_RUN_TIME: run count and
// nanoseconds per program), for an empty program (the floor), Ward's filter on an fd number
// nobody tracks (fast path: one inlined array lookup) and Ward's filter while a tracked
// descriptor shares the fd's slot (slow path: tgid helper and an LRU-hash miss). The thread
// CPU figures of BenchmarkSyscallCost carry the whole syscall and the machine's noise;
// this isolates what Ward's program adds over an empty one. The statistics themselves add
// two clock reads per run to every program alike, so only the differences mean anything.
// Reported: ns/run per setup, median over rounds (WARD_BENCH_ROUNDS, default 5).
func BenchmarkWriteFilterRunTime(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root to load BPF programs")
	}
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Fatal(err)
	}
	defer stats.Close()
	rounds := benchRounds()
	devnull, err := os.OpenFile("/dev/null", os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer devnull.Close()
	fd, buf := int(devnull.Fd()), make([]byte, 4096)
	writes := func(n int) {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		for range n {
			if _, err := unix.Write(fd, buf); err != nil {
				b.Fatal(err)
			}
		}
	}
	const perRound = 1_000_000
	results := map[string][]float64{}
	for r := 0; r < rounds; r++ {
		// floor: an empty program on the same tracepoint
		s, err := benchfloor.AttachEmpty([]string{"sys_enter_write"})
		if err != nil {
			b.Fatal(err)
		}
		p := s.Programs()["empty"]
		before, err := p.Stats()
		if err != nil {
			b.Fatal(err)
		}
		writes(perRound)
		after, err := p.Stats()
		if err != nil {
			b.Fatal(err)
		}
		s.Close()
		results["floor"] = append(results["floor"], nsPerRun(before, after))

		for _, hot := range []bool{false, true} {
			ns, err := wardWriteRunTime(b, fd, hot, func() { writes(perRound) })
			if err != nil {
				b.Fatal(err)
			}
			name := "ward"
			if hot {
				name = "ward-hotslot"
			}
			results[name] = append(results[name], ns)
		}
	}
	fl := median(results["floor"])
	fmt.Printf("\n== sys_enter_write program run time (kernel BPF stats), ns/run, median of %d rounds of %d writes\n", rounds, perRound)
	for _, name := range []string{"floor", "ward", "ward-hotslot"} {
		m := median(results[name])
		b.ReportMetric(m, name+"-ns/run")
		fmt.Printf("  %-14s %7.1f  (over the empty program: %+.1f ns)  rounds %v\n", name, m, m-fl, roundAll(results[name]))
	}
}

// wardWriteRunTime loads the filewrite probe, optionally heats fd's slot with a tracked
// descriptor numbered fd+1024, runs work and returns enter_write's ns per run.
func wardWriteRunTime(b *testing.B, fd int, hot bool, work func()) (float64, error) {
	p, err := Load(Config{}, nil)
	if err != nil {
		return 0, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if _, err := p.Next(); errors.Is(err, ErrClosed) {
				return
			}
		}
	}()
	defer func() { p.Close(); <-done }()
	dir := b.TempDir()
	if _, err := p.Watch(dir); err != nil {
		return 0, err
	}
	if hot {
		f, err := os.Create(filepath.Join(dir, "hot.txt"))
		if err != nil {
			return 0, err
		}
		defer f.Close()
		if err := unix.Dup3(int(f.Fd()), fd+fdHotSlots, 0); err != nil {
			return 0, fmt.Errorf("dup3: %w", err)
		}
		defer unix.Close(fd + fdHotSlots)
	}
	var prog *ebpf.Program
	if err := p.ring.Maps(func(l *kernel.Loader) error {
		var err error
		prog, err = l.Program("enter_write")
		return err
	}); err != nil {
		return 0, err
	}
	before, err := prog.Stats()
	if err != nil {
		return 0, err
	}
	work()
	after, err := prog.Stats()
	if err != nil {
		return 0, err
	}
	return nsPerRun(before, after), nil
}

func nsPerRun(before, after *ebpf.ProgramStats) float64 {
	runs := after.RunCount - before.RunCount
	if runs == 0 {
		return 0
	}
	return float64(after.Runtime-before.Runtime) / float64(runs)
}

func roundAll(v []float64) []float64 {
	out := slices.Clone(v)
	for i := range out {
		out[i] = float64(int(out[i]*10+0.5)) / 10
	}
	return out
}
