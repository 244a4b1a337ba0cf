package filewrite

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/ward-dlp/ward/bpf/benchfloor"
)

// BenchmarkTarSlowdown runs a syscall-heavy real job — tar of /usr/include, four times
// over, through a pipe — with no probe, with the floor (empty programs on the probe's
// syscall tracepoints) and with the file probe itself (BTF and plain open filters), in
// rotating order within each round, and prints the median over rounds of each setup's
// paired difference in the job's CPU time (user+system of its process tree). On this VM a
// single run varies by ±10%, so the paired medians over many rounds (WARD_BENCH_ROUNDS,
// default 15) are what to read. The agent's own CPU, which competes with the job, is
// measured by BenchmarkAgentOverhead in tests/.
func BenchmarkTarSlowdown(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root to load BPF programs")
	}
	have, err := benchfloor.SyscallEvents()
	if err != nil {
		b.Fatal(err)
	}
	events := slices.DeleteFunc(Tracepoints(), func(e string) bool { return !slices.Contains(have, e) })
	job := func() float64 {
		c := exec.Command("/bin/sh", "-c", "for i in 1 2 3 4; do tar -cf - -C / usr/include; done | cat > /dev/null")
		if out, err := c.CombinedOutput(); err != nil {
			b.Fatalf("tar: %v %s", err, out)
		}
		ru := c.ProcessState.SysUsage().(*syscall.Rusage)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
	}
	withProbe := func(cfg Config) func() float64 {
		return func() float64 {
			p, err := Load(cfg, nil)
			if err != nil {
				b.Fatal(err)
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
			if _, err := p.Watch(b.TempDir()); err != nil {
				b.Fatal(err)
			}
			return job()
		}
	}
	setups := []struct {
		name string
		run  func() float64
	}{
		{"none", job},
		{"floor", func() float64 {
			s, err := benchfloor.AttachEmpty(events)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			return job()
		}},
		{"filewrite", withProbe(Config{})},
		{"filewrite-plain", withProbe(Config{PlainPrograms: true})},
	}
	job() // page cache
	cpu := map[string][]float64{}
	for r := range roundsOr(15) {
		for i := range setups {
			s := setups[(i+r)%len(setups)]
			cpu[s.name] = append(cpu[s.name], s.run())
		}
	}
	diff := func(a, b string) float64 {
		var d []float64
		for i := range cpu[a] {
			d = append(d, 100*(cpu[a][i]/cpu[b][i]-1))
		}
		return median(d)
	}
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Printf("\n== tar of /usr/include x4 into a pipe: CPU s of the job, median of %d rounds; load average now %s", len(cpu["none"]), load)
	for _, s := range setups {
		fmt.Printf("  %-16s %6.3f s", s.name, median(cpu[s.name]))
		if s.name != "none" {
			fmt.Printf("   vs none %+5.1f%%", diff(s.name, "none"))
		}
		if s.name != "none" && s.name != "floor" {
			fmt.Printf("   vs floor %+5.1f%%", diff(s.name, "floor"))
		}
		fmt.Println()
	}
	b.ReportMetric(diff("filewrite", "none"), "filewrite-vs-none-%")
	b.ReportMetric(diff("filewrite", "floor"), "filewrite-vs-floor-%")
}

// roundsOr is WARD_BENCH_ROUNDS, or def when unset.
func roundsOr(def int) int {
	if os.Getenv("WARD_BENCH_ROUNDS") != "" {
		return benchRounds()
	}
	return def
}
