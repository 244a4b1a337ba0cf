package tests

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver, to read what the collectors stored
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ward-dlp/ward/agent/ship"
	"github.com/ward-dlp/ward/agent/spool"
	"github.com/ward-dlp/ward/collector/loadtest"
	"github.com/ward-dlp/ward/collector/store/pgtest"
)

// TestScaleOutFailover is the scale-out scenario of docs/operations.md: two ward-collector
// processes share one PostgreSQL database (a real server, started here) and publish to a
// Kafka cluster (kfake, in this process) through two sinks, each a topic read downstream by
// its own consumer group. Agents (the real shipper and spool, with certificates from the real
// enrolment) are spread over both collectors, each listing the other as fallback. Mid-stream
// collector A is killed with SIGKILL. Every agent must fail over to B, and every event must
// reach each sink exactly once, checked on the Kafka side by event id, and be stored once.
func TestScaleOutFailover(t *testing.T) {
	needRoot(t)
	pg, err := pgtest.Start(false)
	if err != nil {
		t.Skip(err)
	}
	t.Cleanup(func() {
		if err := pg.Stop(); err != nil {
			t.Error(err)
		}
	})
	dsn, err := pg.CreateDB("ward")
	if err != nil {
		t.Fatal(err)
	}
	kc, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(4, "siem-a", "siem-b"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	brokers := `["` + strings.Join(kc.ListenAddrs(), `", "`) + `"]`
	sinkYAML := ""
	for _, topic := range []string{"siem-a", "siem-b"} {
		sinkYAML += fmt.Sprintf(`  - name: %s
    type: kafka
    kinds: [finding, file, process, flow]
    batch: {max_events: 200, max_wait: 200ms}
    retry: {initial: 100ms, max: 2s}
    kafka: {brokers: %s, topic: %s, format: json, timeout: 10s}
`, topic, brokers, topic)
	}
	conf := func(replica string) string {
		return fmt.Sprintf("store:\n  driver: postgres\n  dsn: %q\n  replica: %s\nsinks:\n%s", dsn, replica, sinkYAML)
	}
	ctx := context.Background()
	root := t.TempDir()
	bin := filepath.Join(binDir, "ward-collector")
	a, err := loadtest.StartCollector(ctx, loadtest.CollectorConfig{Binary: bin, Home: filepath.Join(root, "a"), ExtraYAML: conf("a")})
	if err != nil {
		t.Fatal(err)
	}
	aAlive := true
	defer func() {
		if aAlive {
			a.Kill()
		}
	}()
	// Replicas share the CA, the fleet's fingerprint key and the other keys in the state
	// directory (docs/operations.md): B starts from a copy of A's.
	if err := copyState(filepath.Join(a.Home, "collector"), filepath.Join(root, "b", "collector")); err != nil {
		t.Fatal(err)
	}
	b, err := loadtest.StartCollector(ctx, loadtest.CollectorConfig{Binary: bin, Home: filepath.Join(root, "b"), ExtraYAML: conf("b")})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := b.Stop(30 * time.Second); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			for _, c := range []*loadtest.Collector{a, b} {
				log, _ := os.ReadFile(filepath.Join(c.Home, "collector.log"))
				t.Logf("%s log:\n%s", c.Home, tail(string(log), 40))
			}
		}
	}()

	const agents, perAgent = 6, 1500
	fleet, err := loadtest.EnrollFleet(ctx, loadtest.EnrollConfig{Collector: a.Listen, CAFile: a.CAFile(), Admin: a.Admin,
		StateDir: filepath.Join(root, "agents"), Agents: agents})
	if err != nil {
		t.Fatal(err)
	}

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	spools := make([]*spool.Spool, agents)
	var produced atomic.Int64
	wantIDs := make(map[string]bool)
	var idsMu sync.Mutex
	quiet := slog.New(slog.DiscardHandler)
	for i, id := range fleet {
		sp, err := spool.Open(filepath.Join(root, "spool", fmt.Sprint(i)), spool.Options{MaxBytes: 256 << 20, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		spools[i] = sp
		defer sp.Close()
		primary, fallback := a.Listen, b.Listen
		if i%2 == 1 {
			primary, fallback = b.Listen, a.Listen
		}
		sh, err := ship.New(ship.Config{Spool: sp, Identity: id, Addr: primary, Fallbacks: []string{fallback},
			BatchEvents: 100, MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second, DisableRenewal: true, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() { _ = sh.Run(runCtx) })
		evs, err := loadtest.NewEvents(id.AgentID(), i, id.FingerprintKey())
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			// About 1,000 events/s per agent for 1.5 s: the kill lands mid-stream.
			for n := range perAgent {
				if runCtx.Err() != nil {
					return
				}
				ev, err := evs.Next()
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := sp.Append(ev); err != nil {
					t.Error(err)
					return
				}
				idsMu.Lock()
				wantIDs[ev.GetId()] = true
				idsMu.Unlock()
				produced.Add(1)
				if n%100 == 99 {
					time.Sleep(100 * time.Millisecond)
				}
			}
		})
	}

	// Kill A once a good part of the stream went through it.
	time.Sleep(700 * time.Millisecond)
	a.Kill()
	aAlive = false
	t.Logf("collector A killed after %d events produced", produced.Load())

	// Every agent drains its spool through B.
	deadline := time.Now().Add(90 * time.Second)
	for {
		pending := 0
		for _, sp := range spools {
			st := sp.Stats()
			pending += st.FindingsEvents + st.TelemetryEvents
		}
		if produced.Load() == agents*perAgent && pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agents still hold %d unacknowledged events (%d produced)", pending, produced.Load())
		}
		time.Sleep(100 * time.Millisecond)
	}
	stop()
	total := agents * perAgent
	if len(wantIDs) != total {
		t.Fatalf("produced %d distinct ids, want %d", len(wantIDs), total)
	}

	// Each sink's topic holds every event exactly once. Records keep arriving for a while
	// after the last ack (B takes over A's leases once A's heartbeat is stale), so read
	// until complete, then a little longer to catch duplicates.
	for _, topic := range []string{"siem-a", "siem-b"} {
		seen := consumeIDs(t, kc.ListenAddrs(), topic, total, 60*time.Second)
		missing, dup := 0, 0
		for id := range wantIDs {
			switch seen[id] {
			case 0:
				missing++
			case 1:
			default:
				dup++
			}
		}
		if missing > 0 || dup > 0 {
			t.Errorf("topic %s: %d records for %d ids; %d of %d events missing, %d delivered more than once",
				topic, sum(seen), len(seen), missing, total, dup)
		}
	}
	// And PostgreSQL holds each event once.
	var rows, ids int64
	if err := queryPG(dsn, `SELECT COUNT(*), COUNT(DISTINCT event_id) FROM events WHERE kind <> 'health' AND kind <> 'fleet'`, &rows, &ids); err != nil {
		t.Fatal(err)
	}
	if rows != int64(total) || ids != rows {
		t.Errorf("postgres holds %d agent events (%d distinct ids), want %d", rows, ids, total)
	}
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// consumeIDs reads topic from the start as a consumer group of its own (one per sink, as a
// SIEM connector would) and counts records per ward-event-id header, until it has seen want
// distinct ids and then two more quiet seconds, or until timeout.
func consumeIDs(t *testing.T, brokers []string, topic string, want int, timeout time.Duration) map[string]int {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic), kgo.ConsumerGroup("siem-"+topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	seen := map[string]int{}
	end := time.Now().Add(timeout)
	var completeAt time.Time
	for time.Now().Before(end) {
		if !completeAt.IsZero() && time.Since(completeAt) > 2*time.Second {
			break
		}
		pctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		fs := cl.PollFetches(pctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) {
			for _, h := range r.Headers {
				if h.Key == "ward-event-id" {
					seen[string(h.Value)]++
				}
			}
		})
		if completeAt.IsZero() && len(seen) >= want {
			completeAt = time.Now()
		}
	}
	return seen
}

// copyState copies a collector state directory for a second replica: keys and PKI, not the
// admin socket or a SQLite database.
func copyState(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o700)
		}
		if !d.Type().IsRegular() || strings.HasPrefix(d.Name(), "ward.db") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o600)
	})
}

func queryPG(dsn, q string, dest ...any) error {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	return db.QueryRow(q).Scan(dest...)
}
