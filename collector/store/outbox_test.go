package store

import (
	"context"
	"testing"
	"time"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
)

func rowids(items []OutboxItem) []int64 {
	out := make([]int64, len(items))
	for i, it := range items {
		out[i] = it.RowID
	}
	return out
}

// TestOutboxEnqueuedWithInsert: events are queued per matching route in the insert's
// transaction; duplicates are not queued twice; filters by kind and severity apply.
func TestOutboxEnqueuedWithInsert(t *testing.T) {
	ctx := context.Background()
	s, path := openTest(t)
	enrolTestAgent(t, s, "a1")
	if err := s.SetOutboxRoutes(ctx, []OutboxRoute{
		{Sink: "all"},
		{Sink: "high", Kinds: []string{KindFinding}, MinSeverity: wardv1.Severity_SEVERITY_HIGH},
		{Sink: "critical", Kinds: []string{KindFinding}, MinSeverity: wardv1.Severity_SEVERITY_CRITICAL},
		{Sink: "files", Kinds: []string{KindFile}},
	}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if _, err := s.InsertEvents(ctx, "a1", records(t, "a1", 1, 2, 3), now); err != nil {
		t.Fatal(err)
	}
	// Resend: stored once, queued once.
	if _, err := s.InsertEvents(ctx, "a1", records(t, "a1", 2, 3, 4), now); err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"all": 4, "high": 4, "critical": 0, "files": 0}
	for sink, n := range want {
		st, err := s.OutboxStats(ctx, sink, now)
		if err != nil {
			t.Fatal(err)
		}
		if st.Depth != n || st.Due != n {
			t.Errorf("%s: depth %d due %d, want %d", sink, st.Depth, st.Due, n)
		}
	}

	// The queue survives a reopen (it is in the database, not in memory).
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if st, _ := s2.OutboxStats(ctx, "all", now); st.Depth != 4 {
		t.Fatalf("after reopen depth %d, want 4", st.Depth)
	}
}

// TestOutboxInsertRollsBackTogether: when the insert transaction fails, neither the events
// nor their outbox rows remain.
func TestOutboxInsertRollsBackTogether(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	enrolTestAgent(t, s, "a1")
	if err := s.SetOutboxRoutes(ctx, []OutboxRoute{{Sink: "all"}}); err != nil {
		t.Fatal(err)
	}
	recs := records(t, "a1", 1, 2)
	recs[1].Seq = 0 // refused mid-transaction, after seq 1 was inserted and enqueued
	if _, err := s.InsertEvents(ctx, "a1", recs, time.Now()); err == nil {
		t.Fatal("insert with seq 0 succeeded")
	}
	st, err := s.OutboxStats(ctx, "all", time.Now())
	if err != nil || st.Depth != 0 {
		t.Fatalf("outbox depth %d after rollback, %v", st.Depth, err)
	}
}

// TestOutboxClaimLeaseRetryDeadLetter walks an item through every state.
func TestOutboxClaimLeaseRetryDeadLetter(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	enrolTestAgent(t, s, "a1")
	if err := s.SetOutboxRoutes(ctx, []OutboxRoute{{Sink: "x"}}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if _, err := s.InsertEvents(ctx, "a1", records(t, "a1", 1, 2, 3, 4, 5), now); err != nil {
		t.Fatal(err)
	}
	// Count bound.
	b1, err := s.ClaimOutbox(ctx, "x", now, 2, 0, time.Minute)
	if err != nil || len(b1) != 2 || b1[0].Seq != 1 || b1[1].Seq != 2 {
		t.Fatalf("claim 1: %v %v", b1, err)
	}
	// Leased items are invisible; a byte bound smaller than one payload still yields one.
	b2, err := s.ClaimOutbox(ctx, "x", now, 10, 1, time.Minute)
	if err != nil || len(b2) != 1 || b2[0].Seq != 3 {
		t.Fatalf("claim 2: %v %v", b2, err)
	}
	if _, err := b2[0].Event(); err != nil {
		t.Fatal(err)
	}
	// Ack 1, retry 2 later, dead-letter 3.
	if err := s.AckOutbox(ctx, "x", []int64{b1[0].RowID}); err != nil {
		t.Fatal(err)
	}
	if err := s.RetryOutbox(ctx, "x", []int64{b1[1].RowID}, now.Add(time.Hour), "HTTP 503"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeadLetterOutbox(ctx, "x", rowids(b2), now, "HTTP 400: bad"); err != nil {
		t.Fatal(err)
	}
	st, err := s.OutboxStats(ctx, "x", now)
	if err != nil {
		t.Fatal(err)
	}
	// Left: 2 (backing off), 4 and 5 (due).
	if st.Depth != 3 || st.Due != 2 || st.DeadLetters != 1 {
		t.Fatalf("stats %+v", st)
	}
	rest, err := s.ClaimOutbox(ctx, "x", now, 10, 0, time.Minute)
	if err != nil || len(rest) != 2 || rest[0].Seq != 4 {
		t.Fatalf("claim 3: %v %v", rest, err)
	}
	// Expired lease: claimable again. Backoff passed: 2 comes back with its attempt counted.
	later := now.Add(2 * time.Hour)
	again, err := s.ClaimOutbox(ctx, "x", later, 10, 0, time.Minute)
	if err != nil || len(again) != 3 || again[0].Seq != 2 || again[0].Attempts != 1 {
		t.Fatalf("claim after lease expiry: %+v %v", again, err)
	}
	// Released leases are claimable at once.
	if err := s.ReleaseOutboxLeases(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.ClaimOutbox(ctx, "x", later, 10, 0, time.Minute); len(got) != 3 {
		t.Fatalf("after release: %d items", len(got))
	}
	dl, err := s.ListDeadLetters(ctx, "x", 10)
	if err != nil || len(dl) != 1 || dl[0].Reason != "HTTP 400: bad" || dl[0].Attempts != 1 {
		t.Fatalf("dead letters %+v %v", dl, err)
	}
	orph, err := s.OrphanedOutbox(ctx, []string{"y"})
	if err != nil || orph["x"] != 3 {
		t.Fatalf("orphans %v %v", orph, err)
	}
	if orph, _ := s.OrphanedOutbox(ctx, []string{"x"}); len(orph) != 0 {
		t.Fatalf("orphans %v", orph)
	}
}
