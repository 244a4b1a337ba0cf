package tests

import (
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
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
