package classifiers

import (
	"syscall"
	"testing"
	"time"
)

// cpuLoop runs f b.N times and reports, besides Go's wall-clock MB/s, "cpuMB/s": bytes per
// second of process CPU time (user+system, getrusage). The machine the benchmarks run on
// is shared, and wall time there measures the other tenants as much as Ward; CPU time of
// a GOMAXPROCS=1 run (-cpu 1) is what Ward itself spent, GC included.
func cpuLoop(b *testing.B, bytes int, f func()) {
	b.SetBytes(int64(bytes))
	start := cpuNow()
	n := 0
	for b.Loop() {
		f()
		n++
	}
	if d := cpuNow() - start; d > 0 && n > 0 {
		b.ReportMetric(float64(bytes)*float64(n)/1e6/d.Seconds(), "cpuMB/s")
	}
}

func cpuNow() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
