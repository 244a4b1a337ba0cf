package sinks

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/collector/sinks/core"
	"github.com/ward-dlp/ward/collector/sinks/internal/sinktest"
	"github.com/ward-dlp/ward/collector/store"
)

// scriptedSink refuses items while refuse is set and records what it accepted.
type scriptedSink struct {
	mu          sync.Mutex
	refuse      bool
	events      []string
	checkpoints []int64
}

func (s *scriptedSink) Deliver(_ context.Context, items []core.Item) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refuse {
		return core.Permanent(errors.New("HTTP 400: schema mismatch"))
	}
	for _, it := range items {
		if it.Checkpoint != nil {
			s.checkpoints = append(s.checkpoints, it.Checkpoint.Size)
			if it.Checkpoint.Origin != "ward-audit/x" || it.Checkpoint.RootHash != "cm9vdA==" || it.EventID() != "ward-audit/x@3" {
				return core.Permanent(errors.New("checkpoint fields not parsed from the note"))
			}
			continue
		}
		s.events = append(s.events, it.Event.GetId())
	}
	return nil
}

func (s *scriptedSink) Close() error { return nil }

func (s *scriptedSink) set(refuse bool) { s.mu.Lock(); s.refuse = refuse; s.mu.Unlock() }

func (s *scriptedSink) counts() (int, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.events), len(s.checkpoints)
}

// TestCheckpointsDeadLettersAndReplay: audit checkpoints reach the sink like events; a
// permanent refusal dead-letters both kinds; replay (one id, then all) delivers them; the
// per-sink summary counts what was delivered across the dispatcher's life.
func TestCheckpointsDeadLettersAndReplay(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := openStore(t, "a1")
	if err := Route(ctx, st, []Config{{Name: "fake", Kinds: []string{store.KindFinding}}}); err != nil {
		t.Fatal(err)
	}
	sink := &scriptedSink{refuse: true}
	metrics, _ := NewMetrics(nil)
	d := &dispatcher{name: "fake", sink: sink, store: st, batch: BatchConfig{MaxEvents: 10, MaxBytes: 1 << 20, MaxWait: time.Millisecond},
		retry: RetryConfig{Initial: time.Millisecond, Max: 10 * time.Millisecond}, metrics: metrics,
		log: slog.New(slog.NewTextHandler(io.Discard, nil)), now: time.Now, hostname: "collector-1"}
	done := make(chan error, 1)
	go func() { done <- d.run(ctx) }()

	insert(t, st, "a1", sinktest.Finding("a1", 1, wardv1.Severity_SEVERITY_HIGH), sinktest.Finding("a1", 2, wardv1.Severity_SEVERITY_HIGH))
	note := []byte("ward-audit/x\n3\ncm9vdA==\n\n— ward-audit/x AAAA\n")
	if err := st.AddAuditCheckpoint(ctx, store.AuditCheckpoint{Size: 3, Root: []byte("root"), Note: note, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	summary := func() store.OutboxSummary {
		sums, err := st.OutboxSummaries(ctx, time.Now())
		if err != nil || len(sums) != 1 {
			t.Fatalf("summaries %+v %v", sums, err)
		}
		return sums[0]
	}
	waitUntil(t, "dead letters", 10*time.Second, func() bool {
		s := summary()
		return s.DeadLetters == 2 && s.CheckpointsDead == 1 && s.Depth == 0
	})
	dl, err := st.ListDeadLetterViews(ctx, store.DeadLetterFilter{Sink: "fake"})
	if err != nil || len(dl) != 2 || dl[0].Kind != "finding" || dl[0].Attempts != 1 || dl[0].Reason != "HTTP 400: schema mismatch" {
		t.Fatalf("dead letters %+v %v", dl, err)
	}

	sink.set(false)
	if n, err := st.ReplayDeadLetters(ctx, "fake", []int64{dl[1].RowID}, time.Now()); err != nil || n != 1 {
		t.Fatalf("replay one: %d %v", n, err)
	}
	waitUntil(t, "the replayed event", 10*time.Second, func() bool { s := summary(); return s.Delivered == 1 && s.Depth == 0 })
	if e, c := sink.counts(); e != 1 || c != 0 {
		t.Fatalf("after one replay the sink has %d events, %d checkpoints", e, c)
	}
	if s := summary(); s.DeadLetters != 1 || s.CheckpointsDead != 1 {
		t.Fatalf("after one replay: %+v", s)
	}
	if n, err := st.ReplayDeadLetters(ctx, "fake", nil, time.Now()); err != nil || n != 1 {
		t.Fatalf("replay all: %d %v", n, err)
	}
	waitUntil(t, "everything", 10*time.Second, func() bool { e, c := sink.counts(); return e == 2 && c == 1 })
	waitUntil(t, "the summary", 10*time.Second, func() bool {
		s := summary()
		return s.DeadLetters == 0 && s.CheckpointsDead == 0 && s.CheckpointsWaiting == 0 && s.Delivered == 2 && s.CheckpointsDelivered == 1 && s.Depth == 0
	})
	if _, err := st.ReplayDeadLetters(ctx, "gone", nil, time.Now()); !errors.Is(err, store.ErrSinkNotConfigured) {
		t.Fatalf("replay to an unconfigured sink: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
