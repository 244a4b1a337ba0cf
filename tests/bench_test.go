package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
)

// BenchmarkProbeToStore measures how many events per second go from the kernel probe to
// the collector's SQLite store: a writer process creates files in a watched directory as
// fast as it can, each holding one valid SSN with context (one finding + one file-activity
// event), and the clock stops when the last finding is stored. The kernel and user-space
// drop counters from the agent's final health event must all be zero, or the figure does
// not count.
//
//	sudo go test ./tests -run '^$' -bench ProbeToStore -benchtime 1x
func BenchmarkProbeToStore(b *testing.B) {
	cfg := filepath.Join(b.TempDir(), "agent.yaml")
	if err := os.WriteFile(cfg, []byte("health_interval: 1s\nlog_level: info\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	w := startWard(b, "--config", cfg, "--log-level", "info")
	files := 20000
	if v := os.Getenv("WARD_BENCH_FILES"); v != "" {
		fmt.Sscan(v, &files)
	}
	dir := filepath.Join(w.watch, "bench")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	for i := range files {
		body := fmt.Appendf(nil, "intake %06d\nSSN: %03d-%02d-%04d\n", i, 100+i%500, 10+i%89, 1000+i%9000)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%06d.txt", i)), body, 0o600); err != nil {
			b.Fatal(err)
		}
	}
	wrote := time.Since(start)
	var elapsed time.Duration
	w.waitFor(5*time.Minute, "every finding", func(evs []stored) bool {
		if len(findings(evs)) >= files {
			elapsed = time.Since(start)
			return true
		}
		return false
	}, "--kind", "finding")
	b.StopTimer()
	events := 2 * files // a finding and a file-activity event per file
	b.ReportMetric(float64(events)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(files)/wrote.Seconds(), "files-written/s")

	// The last health event has every drop counter; wait for one after the run.
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
		case "classify.reread", "proc.evicted", "proc.lookup_misses":
			continue // work done or attribution detail, not loss
		}
		if v != 0 {
			b.Logf("drop counter %s = %d", k, v)
			dropped += v
		}
	}
	b.ReportMetric(float64(dropped), "drops")
	if dropped != 0 {
		b.Errorf("%d events dropped: the rate above is not a rate without drops", dropped)
	}
}
