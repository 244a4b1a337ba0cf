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

// BenchmarkFilterRunTime measures the in-kernel run time of Ward's programs on the
// syscalls every process on the host makes, from the kernel's own BPF statistics
// (BPF_STATS_RUN_TIME: run count and nanoseconds per program), against an empty program
// on the same tracepoint (the floor):
//
//   - write to /dev/null: enter_write on an fd number nobody tracks (fast path: one
//     inlined array lookup), and while a tracked descriptor shares the fd's slot
//     (hotslot: tgid helper and an LRU-hash miss);
//   - open of /etc/hostname read-only: exit_open through BTF pointers (this kernel) and
//     the plain program older kernels fall back to;
//   - close of that descriptor: enter_close.
//
// BenchmarkSyscallCost's thread-CPU figures carry the whole syscall and the machine's
// noise; this isolates what Ward's program adds over an empty one. The statistics add two
// clock reads to every program alike, so only differences mean anything. Printed: ns per
// run, median over rounds (WARD_BENCH_ROUNDS, default 5), and each setup over the floor.
func BenchmarkFilterRunTime(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root to load BPF programs")
	}
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Fatal(err)
	}
	defer stats.Close()
	devnull, err := os.OpenFile("/dev/null", os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer devnull.Close()
	nullFD, buf := int(devnull.Fd()), make([]byte, 4096)
	const perRound = 500_000
	locked := func(op func()) func() {
		return func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			for range perRound {
				op()
			}
		}
	}
	write := locked(func() {
		if _, err := unix.Write(nullFD, buf); err != nil {
			b.Fatal(err)
		}
	})
	openClose := locked(func() {
		fd, err := unix.Open("/etc/hostname", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		unix.Close(fd)
	})
	type setup struct {
		name    string
		cfg     Config
		hotFD   int    // >= 0: heat this fd's slot during the run
		prog    string // Ward program measured
		event   string // tracepoint of the floor
		work    func()
		measure bool
	}
	setups := []setup{
		{name: "write: ward", hotFD: -1, prog: "enter_write", event: "sys_enter_write", work: write},
		{name: "write: ward-hotslot", hotFD: nullFD, prog: "enter_write", event: "sys_enter_write", work: write},
		{name: "open: ward (btf)", hotFD: -1, prog: "exit_open_btf", event: "sys_exit_openat", work: openClose},
		{name: "open: ward (plain)", cfg: Config{PlainPrograms: true}, hotFD: -1, prog: "exit_open", event: "sys_exit_openat", work: openClose},
		{name: "close: ward", hotFD: -1, prog: "enter_close", event: "sys_enter_close", work: openClose},
	}
	floors := map[string][]float64{}
	results := map[string][]float64{}
	for range benchRounds() {
		for _, ev := range []string{"sys_enter_write", "sys_exit_openat", "sys_enter_close"} {
			s, err := benchfloor.AttachEmpty([]string{ev})
			if err != nil {
				b.Fatal(err)
			}
			p := s.Programs()["empty"]
			before, err := p.Stats()
			if err != nil {
				b.Fatal(err)
			}
			if ev == "sys_enter_write" {
				write()
			} else {
				openClose()
			}
			after, err := p.Stats()
			if err != nil {
				b.Fatal(err)
			}
			s.Close()
			floors[ev] = append(floors[ev], nsPerRun(before, after))
		}
		for _, s := range setups {
			ns, err := wardRunTime(b, s.cfg, s.prog, s.hotFD, s.work)
			if err != nil {
				b.Fatalf("%s: %v", s.name, err)
			}
			results[s.name] = append(results[s.name], ns)
		}
	}
	fmt.Printf("\n== program run time (kernel BPF stats), ns/run, median of %d rounds of %d syscalls\n", benchRounds(), perRound)
	for _, ev := range []string{"sys_enter_write", "sys_exit_openat", "sys_enter_close"} {
		fmt.Printf("  %-22s %7.1f  rounds %v\n", "empty on "+ev, median(floors[ev]), roundAll(floors[ev]))
	}
	for _, s := range setups {
		m, fl := median(results[s.name]), median(floors[s.event])
		b.ReportMetric(m-fl, s.prog+"-over-floor-ns")
		fmt.Printf("  %-22s %7.1f  over the empty program: %+6.1f ns  rounds %v\n", s.name, m, m-fl, roundAll(results[s.name]))
	}
}

// wardRunTime loads the filewrite probe, optionally heats hotFD's slot with a tracked
// descriptor numbered hotFD+1024 (same slot, different key), runs work and returns the
// named program's ns per run.
func wardRunTime(b *testing.B, cfg Config, prog string, hotFD int, work func()) (float64, error) {
	p, err := Load(cfg, nil)
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
	if hotFD >= 0 {
		f, err := os.Create(filepath.Join(dir, "hot.txt"))
		if err != nil {
			return 0, err
		}
		defer f.Close()
		if err := unix.Dup3(int(f.Fd()), hotFD+fdHotSlots, 0); err != nil {
			return 0, fmt.Errorf("dup3: %w", err)
		}
		defer unix.Close(hotFD + fdHotSlots)
	}
	var pr *ebpf.Program
	if err := p.ring.Maps(func(l *kernel.Loader) error {
		var err error
		pr, err = l.Program(prog)
		return err
	}); err != nil {
		return 0, err
	}
	before, err := pr.Stats()
	if err != nil {
		return 0, err
	}
	work()
	after, err := pr.Stats()
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
