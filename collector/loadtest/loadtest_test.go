package loadtest

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // "pgx" driver, to check what the collector stored
	_ "modernc.org/sqlite"

	"github.com/ward-dlp/ward/collector/store/pgtest"
)

// collectorBin is ward-collector built once for the package (or WARD_LOADTEST_COLLECTOR_BIN,
// to measure another build).
var collectorBin string

func TestMain(m *testing.M) {
	code := func() int {
		if bin := os.Getenv("WARD_LOADTEST_COLLECTOR_BIN"); bin != "" {
			collectorBin = bin
			return m.Run()
		}
		dir, err := os.MkdirTemp("", "ward-loadtest-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		build := exec.Command("go", "build", "-o", dir+"/", "github.com/ward-dlp/ward/cmd/ward-collector")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building ward-collector: %v\n%s", err, out)
			return 1
		}
		collectorBin = filepath.Join(dir, "ward-collector")
		return m.Run()
	}()
	os.Exit(code)
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// setup starts a collector with extraYAML and enrols agents against it.
func setup(tb testing.TB, agents int, extraYAML string) (*Collector, RunConfig) {
	tb.Helper()
	ctx := context.Background()
	home := tb.TempDir()
	c, err := StartCollector(ctx, CollectorConfig{Binary: collectorBin, Home: filepath.Join(home, "c"), ExtraYAML: extraYAML})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := c.Stop(30 * time.Second); err != nil {
			tb.Error(err)
		}
		log, _ := os.ReadFile(filepath.Join(c.Home, "collector.log"))
		if tb.Failed() {
			tb.Logf("collector log:\n%s", tail(string(log), 4000))
		} else if n := strings.Count(string(log), "level=ERROR"); n > 0 {
			tb.Logf("collector logged %d errors:\n%s", n, tail(string(log), 3000))
		}
	})
	t0 := time.Now()
	fleet, err := EnrollFleet(ctx, EnrollConfig{Collector: c.Listen, CAFile: c.CAFile(), Admin: c.Admin,
		StateDir: filepath.Join(home, "agents"), Agents: agents})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Logf("enrolled %d agents in %s", agents, time.Since(t0).Round(time.Millisecond))
	return c, RunConfig{Fleet: fleet, CollectorPID: c.PID(), MetricsURL: c.MetricsURL}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// TestFleetEventsAllStored runs a small fleet closed loop and then checks, in the collector's
// SQLite database, that every acknowledged event is there exactly once: the load generator's
// figures count only what the collector really committed.
func TestFleetEventsAllStored(t *testing.T) {
	c, rc := setup(t, 20, "")
	rc.Warmup, rc.Duration, rc.BatchEvents = 500*time.Millisecond, 2*time.Second, 20
	res, err := Run(context.Background(), rc)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res)
	if res.Events == 0 || res.Calls == 0 || res.P50 <= 0 || res.P99 < res.P50 {
		t.Fatalf("implausible result: %+v", res)
	}
	if res.CollectorCPU <= 0 || res.CollectorRSSPeak == 0 {
		t.Errorf("collector figures missing: cpu %s rss %d", res.CollectorCPU, res.CollectorRSSPeak)
	}
	if err := c.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", "file:"+filepath.Join(c.Home, "collector", "ward.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var rows, ids, agents int64
	if err := db.QueryRow(`SELECT COUNT(*), COUNT(DISTINCT event_id), COUNT(DISTINCT agent_id) FROM events`).Scan(&rows, &ids, &agents); err != nil {
		t.Fatal(err)
	}
	// The run lets calls in flight finish, so what was committed was acknowledged.
	if rows != int64(res.Acked) || ids != rows || agents != 20 {
		t.Fatalf("store holds %d events (%d distinct ids) from %d agents; the fleet had %d acknowledged", rows, ids, agents, res.Acked)
	}
	var kinds int
	if err := db.QueryRow(`SELECT COUNT(DISTINCT kind) FROM events`).Scan(&kinds); err != nil || kinds != 4 {
		t.Fatalf("want findings, files, flows and process events stored, got %d kinds (%v)", kinds, err)
	}
}

// postgresYAML starts a throwaway PostgreSQL server for tb and returns the collector
// configuration that uses it.
func postgresYAML(tb testing.TB) string {
	dsn := pgtest.DB(tb)
	return fmt.Sprintf("store:\n  driver: postgres\n  dsn: %q\n  replica: loadtest\n", dsn)
}

// TestFleetOnPostgres: the same fleet against a collector on PostgreSQL; every acknowledged
// event is in the database once.
func TestFleetOnPostgres(t *testing.T) {
	yaml := postgresYAML(t)
	c, rc := setup(t, 20, yaml)
	rc.Warmup, rc.Duration, rc.BatchEvents = 500*time.Millisecond, 2*time.Second, 20
	res, err := Run(context.Background(), rc)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res)
	if err := c.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	dsn := yaml[strings.Index(yaml, "dsn: ")+5:]
	dsn, _ = strconv.Unquote(strings.TrimSpace(dsn[:strings.IndexByte(dsn, '\n')]))
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var rows, ids int64
	if err := db.QueryRow(`SELECT COUNT(*), COUNT(DISTINCT event_id) FROM events`).Scan(&rows, &ids); err != nil {
		t.Fatal(err)
	}
	if rows != int64(res.Acked) || ids != rows {
		t.Fatalf("postgres holds %d events (%d distinct ids); the fleet had %d acknowledged", rows, ids, res.Acked)
	}
}

// BenchmarkIngest is the collector load test of `make bench`: WARD_LOADTEST_AGENTS agents
// (default 1000) against one collector process on SQLite, closed loop unless
// WARD_LOADTEST_RATE sets an offered rate. Run with -benchtime 1x: each iteration is a whole
// measured window (WARD_LOADTEST_DURATION, default 30s, after WARD_LOADTEST_WARMUP, 5s).
func BenchmarkIngest(b *testing.B) {
	agents := envInt("WARD_LOADTEST_AGENTS", 1000)
	yaml := os.Getenv("WARD_LOADTEST_COLLECTOR_YAML")
	if os.Getenv("WARD_LOADTEST_STORE") == "postgres" {
		yaml += postgresYAML(b)
	}
	_, rc := setup(b, agents, yaml)
	rc.BatchEvents = envInt("WARD_LOADTEST_BATCH", 50)
	rc.Rate = float64(envInt("WARD_LOADTEST_RATE", 0))
	rc.Warmup = envDuration("WARD_LOADTEST_WARMUP", 5*time.Second)
	rc.Duration = envDuration("WARD_LOADTEST_DURATION", 30*time.Second)
	b.ResetTimer()
	for b.Loop() {
		res, err := Run(context.Background(), rc)
		if err != nil {
			b.Fatal(err)
		}
		b.Log(res)
		b.ReportMetric(res.EventsPerSec, "events/s")
		b.ReportMetric(float64(res.P50.Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(res.P99.Microseconds())/1000, "p99-ms")
		b.ReportMetric(res.CollectorCores, "collector-cores")
		b.ReportMetric(float64(res.CollectorRSSPeak)/(1<<20), "collector-rss-MiB")
		b.ReportMetric(res.CollectorHeapInuse/(1<<20), "collector-heap-MiB")
		b.ReportMetric(res.LoadgenCPU.Seconds()/res.Window.Seconds(), "loadgen-cores")
	}
}
