package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// cpuTime is this process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func enrolTB(tb testing.TB, s *Store, id string) {
	tb.Helper()
	ctx := context.Background()
	hash := []byte("hash-" + id)
	now := time.Now()
	if err := s.AddToken(ctx, hash, now, now.Add(time.Hour)); err != nil {
		tb.Fatal(err)
	}
	if err := s.EnrollAgent(ctx, hash, now, Agent{ID: id}, func() error { return nil }); err != nil {
		tb.Fatal(err)
	}
}

func recordsTB(tb testing.TB, agentID string, first, n uint64) []Record {
	tb.Helper()
	out := make([]Record, 0, n)
	for seq := first; seq < first+n; seq++ {
		r, err := RecordFromEvent(findingEvent(agentID, seq))
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// TestGroupCommitIsolatesBatches sends many agents' batches at once, so they share
// transactions, with one batch that fails inside the transaction (an event of another
// agent): that batch alone fails, every other batch is stored and acknowledged, and a
// resend of everything is deduplicated.
func TestGroupCommitIsolatesBatches(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	const agents, per = 40, 30
	for i := range agents {
		enrolTB(t, s, fmt.Sprintf("agent-%02d", i))
	}
	bad := recordsTB(t, "agent-00", 1000, 5)
	bad[3].AgentID = "agent-01"
	for round := range 2 {
		var wg sync.WaitGroup
		errs := make([]error, agents)
		results := make([]InsertResult, agents)
		for i := range agents {
			id := fmt.Sprintf("agent-%02d", i)
			wg.Go(func() {
				results[i], errs[i] = s.InsertEvents(ctx, id, recordsTB(t, id, 1, per), time.Now())
			})
		}
		var badErr error
		wg.Go(func() { _, badErr = s.InsertEvents(ctx, "agent-00", bad, time.Now()) })
		wg.Wait()
		if badErr == nil {
			t.Fatal("a batch holding another agent's event was stored")
		}
		for i := range agents {
			if errs[i] != nil {
				t.Fatalf("round %d agent %d: %v", round, i, errs[i])
			}
			want := InsertResult{Inserted: per}
			if round == 1 {
				want = InsertResult{Duplicates: per}
			}
			r := results[i]
			if r.Inserted != want.Inserted || r.Duplicates != want.Duplicates || len(r.Acked) != 1 || r.Acked[0] != (SeqRange{1, per}) {
				t.Fatalf("round %d agent %d: %+v", round, i, r)
			}
		}
	}
	evs, err := s.ListEvents(ctx, Filter{Limit: MaxLimit})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != agents*per {
		t.Fatalf("stored %d events, want %d", len(evs), agents*per)
	}
	for _, e := range evs {
		if e.Seq >= 1000 {
			t.Fatalf("an event of the failed batch was stored: %+v", e.Record)
		}
	}
}

// TestGroupCommitClosed: writers after Close get an error instead of hanging.
func TestGroupCommitClosed(t *testing.T) {
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "w.db"))
	if err != nil {
		t.Fatal(err)
	}
	enrolTB(t, s, "a")
	if _, err := s.InsertEvents(context.Background(), "a", recordsTB(t, "a", 1, 2), time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = s.InsertEvents(context.Background(), "a", recordsTB(t, "a", 3, 2), time.Now())
	if err == nil || !errors.Is(err, errStoreClosed) {
		t.Fatalf("insert after close: %v", err)
	}
}

// BenchmarkInsertEventsConcurrent: 1,000 agents' 50-event batches from 256 concurrent
// callers, as ingest produces them under load; reports stored events/s.
func BenchmarkInsertEventsConcurrent(b *testing.B) {
	s, err := Open(context.Background(), filepath.Join(b.TempDir(), "ward.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const agents, per, workers = 1000, 50, 256
	for i := range agents {
		enrolTB(b, s, fmt.Sprintf("agent-%04d", i))
	}
	proto := recordsTB(b, "x", 1, per)
	var mu sync.Mutex
	next := make([]uint64, agents)
	n := 0
	b.ResetTimer()
	start := time.Now()
	cpu0 := cpuTime()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; ; i += workers {
				mu.Lock()
				if n >= b.N {
					mu.Unlock()
					return
				}
				n++
				a := i % agents
				seq := next[a]
				next[a] += per
				mu.Unlock()
				id := fmt.Sprintf("agent-%04d", a)
				recs := make([]Record, per)
				for j := range recs {
					recs[j] = proto[j]
					recs[j].AgentID = id
					recs[j].Seq = seq + uint64(j) + 1
					recs[j].EventID = fmt.Sprintf("%s-%d", id, recs[j].Seq)
				}
				if _, err := s.InsertEvents(context.Background(), id, recs, time.Now()); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(b.N*per)/time.Since(start).Seconds(), "events/s")
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N*per), "cpu-µs/event")
}
