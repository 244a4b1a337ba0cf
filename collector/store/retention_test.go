package store

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
)

// bulkFile stores n file events of about size bytes each for agent, from seq first on,
// received at t.
func bulkFile(t *testing.T, s *Store, agent string, first uint64, n, size int, received time.Time) {
	t.Helper()
	pad := strings.Repeat("x", size)
	var recs []Record
	for i := range n {
		ev := &wardv1.Event{Id: uuid.Must(uuid.NewV7()).String(), AgentId: agent, Seq: first + uint64(i), Time: timestamppb.New(received),
			Payload: &wardv1.Event_File{File: &wardv1.FileActivity{Path: fmt.Sprintf("/srv/%d/%s", i, pad)}}}
		r, err := RecordFromEvent(ev)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
		if len(recs) == 500 || i == n-1 {
			if _, err := s.InsertEvents(context.Background(), agent, recs, received); err != nil {
				t.Fatal(err)
			}
			recs = recs[:0]
		}
	}
}

func countEvents(t *testing.T, s *Store) (n int64) {
	t.Helper()
	if err := s.db.QueryRow(`SELECT COUNT(*) FROM events`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestNewDatabaseUsesIncrementalVacuum(t *testing.T) {
	s, _ := openTest(t)
	if m, err := s.AutoVacuumMode(context.Background()); err != nil || m != 2 {
		t.Fatalf("auto_vacuum = %d, %v; want 2 (incremental)", m, err)
	}
}

// TestConvertExistingDatabase: a database made before incremental vacuum (mode NONE) is
// converted by one VACUUM, keeping its data.
func TestConvertExistingDatabase(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ward.db")
	// Build an old-style database: tables first, so setting auto_vacuum is too late.
	old, err := openAt(ctx, path, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.db.ExecContext(ctx, `PRAGMA auto_vacuum = NONE`); err != nil {
		t.Fatal(err)
	}
	if _, err := old.db.ExecContext(ctx, `VACUUM`); err != nil {
		t.Fatal(err)
	}
	_ = old.Close()
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	enrolTestAgent(t, s, "a1")
	bulkFile(t, s, "a1", 1, 200, 100, time.Now())
	if m, _ := s.AutoVacuumMode(ctx); m != 0 {
		t.Fatalf("precondition: mode %d, want 0", m)
	}
	converted, err := s.EnableIncrementalVacuum(ctx)
	if err != nil || !converted {
		t.Fatalf("convert: %v %v", converted, err)
	}
	if m, _ := s.AutoVacuumMode(ctx); m != 2 {
		t.Fatalf("after conversion: mode %d", m)
	}
	if n := countEvents(t, s); n != 200 {
		t.Fatalf("events after conversion: %d", n)
	}
	if again, err := s.EnableIncrementalVacuum(ctx); err != nil || again {
		t.Fatalf("second conversion: %v %v", again, err)
	}
}

func TestRetentionByAgeKeepsPending(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	enrolTestAgent(t, s, "a1")
	now := time.Now()
	// Old events, of which the second half is still queued for a sink.
	bulkFile(t, s, "a1", 1, 100, 50, now.Add(-48*time.Hour))
	if err := s.SetOutboxRoutes(ctx, []OutboxRoute{{Sink: "siem"}}); err != nil {
		t.Fatal(err)
	}
	bulkFile(t, s, "a1", 101, 100, 50, now.Add(-47*time.Hour))
	bulkFile(t, s, "a1", 201, 100, 50, now.Add(-time.Hour)) // recent, queued
	rep, err := s.ApplyRetention(ctx, RetentionPolicy{MaxAge: 24 * time.Hour, BatchRows: 30}, now)
	if err != nil {
		t.Fatal(err)
	}
	if rep.DeletedByAge != 100 || rep.KeptPending != 100 || rep.DroppedPending != 0 {
		t.Fatalf("report %+v: want 100 deleted by age, 100 kept pending", rep)
	}
	if n := countEvents(t, s); n != 200 {
		t.Fatalf("%d events left, want 200", n)
	}
	// Once the sink delivered the old ones, they go at the next run.
	items, err := s.ClaimOutbox(ctx, "siem", now, 100, 0, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for _, it := range items {
		ids = append(ids, it.RowID)
	}
	if err := s.AckOutbox(ctx, "siem", ids); err != nil {
		t.Fatal(err)
	}
	rep, err = s.ApplyRetention(ctx, RetentionPolicy{MaxAge: 24 * time.Hour}, now)
	if err != nil || rep.DeletedByAge != 100 || rep.KeptPending != 0 {
		t.Fatalf("after delivery: %+v %v", rep, err)
	}
	if n := countEvents(t, s); n != 100 {
		t.Fatalf("%d events left, want the 100 recent", n)
	}
}

func TestRetentionBySizeVacuumsAndHardCap(t *testing.T) {
	ctx := context.Background()
	s, path := openTest(t)
	enrolTestAgent(t, s, "a1")
	now := time.Now()
	bulkFile(t, s, "a1", 1, 3000, 1000, now) // about 3 MB, not queued
	used, err := s.UsedBytes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Make the first 3000 checkpointed so file sizes are comparable.
	_, _ = s.db.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`)
	limit := used / 2
	rep, err := s.ApplyRetention(ctx, RetentionPolicy{MaxBytes: limit}, now)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("size run: %+v (file %s)", rep, path)
	if rep.DeletedBySize == 0 || rep.UsedAfter > limit/10*9 || rep.VacuumedPages == 0 || rep.FileAfter >= rep.FileBefore {
		t.Fatalf("size retention: %+v, limit %d", rep, limit)
	}
	// The oldest went first: the smallest remaining seq is above 1, the newest is intact.
	var lo, hi int64
	if err := s.db.QueryRow(`SELECT MIN(seq), MAX(seq) FROM events`).Scan(&lo, &hi); err != nil {
		t.Fatal(err)
	}
	if lo <= 1 || hi != 3000 {
		t.Fatalf("remaining seqs %d..%d", lo, hi)
	}

	// Now everything is queued for a sink: the soft limit keeps it, the hard cap drops the
	// oldest and says how many each sink lost.
	if err := s.SetOutboxRoutes(ctx, []OutboxRoute{{Sink: "siem"}, {Sink: "kafka"}}); err != nil {
		t.Fatal(err)
	}
	bulkFile(t, s, "a1", 3001, 3000, 1000, now)
	rep, err = s.ApplyRetention(ctx, RetentionPolicy{MaxBytes: limit}, now)
	if err != nil || rep.DroppedPending != 0 || rep.KeptPending == 0 {
		t.Fatalf("soft limit with pending events: %+v %v", rep, err)
	}
	before := countEvents(t, s)
	rep, err = s.ApplyRetention(ctx, RetentionPolicy{MaxBytes: limit, HardMaxBytes: limit * 2}, now)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("hard cap run: %+v", rep)
	if rep.DroppedPending == 0 || rep.UsedAfter > limit*2 || rep.DroppedSinks["siem"] != rep.DroppedPending || rep.DroppedSinks["kafka"] != rep.DroppedPending {
		t.Fatalf("hard cap: %+v", rep)
	}
	if got := countEvents(t, s); got != before-rep.Deleted() {
		t.Fatalf("events %d, want %d", got, before-rep.Deleted())
	}
	// The queues lost exactly the dropped events (cascade), nothing dangles.
	var dangling int64
	if err := s.db.QueryRow(`SELECT COUNT(*) FROM outbox o LEFT JOIN events e ON e.rowid = o.event_rowid WHERE e.rowid IS NULL`).Scan(&dangling); err != nil || dangling != 0 {
		t.Fatalf("dangling outbox rows: %d %v", dangling, err)
	}
}
