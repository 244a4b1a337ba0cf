package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
)

func openTest(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ward.db")
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, path
}

// enrolTestAgent records an agent through the real token path.
func enrolTestAgent(t *testing.T, s *Store, id string) {
	t.Helper()
	ctx := context.Background()
	hash := []byte("hash-" + id)
	now := time.Now()
	if err := s.AddToken(ctx, hash, now, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.EnrollAgent(ctx, hash, now, Agent{ID: id, Hostname: "h-" + id}, func() error { return nil }); err != nil {
		t.Fatal(err)
	}
}

func findingEvent(agentID string, seq uint64) *wardv1.Event {
	id, _ := uuid.NewV7()
	return &wardv1.Event{
		Id:      id.String(),
		AgentId: agentID,
		Seq:     seq,
		Time:    timestamppb.New(time.Date(2026, 5, 1, 12, 0, 0, int(seq), time.UTC)),
		Host:    &wardv1.Host{Hostname: "intake-01"},
		Payload: &wardv1.Event_Finding{Finding: &wardv1.Finding{
			DataClass:  wardv1.DataClass_DATA_CLASS_PHI,
			Confidence: 90,
			Process:    &wardv1.Process{Pid: 4242, Exe: "/usr/bin/cp", User: "alice"},
			Target:     &wardv1.Finding_File{File: &wardv1.FileTarget{Path: "/media/usb/notes.txt"}},
			Matches: []*wardv1.Match{{
				Detector:      "phi.ssn",
				DataClass:     wardv1.DataClass_DATA_CLASS_PHI,
				Count:         1,
				MaskedSamples: []string{"***-**-6789"},
				Fingerprints:  []string{"9f86d081884c7d65"},
			}},
			Decision: &wardv1.Decision{Action: wardv1.Action_ACTION_ALERT, Severity: wardv1.Severity_SEVERITY_HIGH},
		}},
	}
}

func records(t *testing.T, agentID string, seqs ...uint64) []Record {
	t.Helper()
	var out []Record
	for _, s := range seqs {
		r, err := RecordFromEvent(findingEvent(agentID, s))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func TestInsertIdempotent(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	enrolTestAgent(t, s, "a1")
	batch := records(t, "a1", 1, 2, 3, 5)

	first, err := s.InsertEvents(ctx, "a1", batch, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	second, err := s.InsertEvents(ctx, "a1", batch, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	want := []SeqRange{{1, 3}, {5, 5}}
	if first.Inserted != 4 || !reflect.DeepEqual(first.Acked, want) {
		t.Fatalf("first insert = %+v", first)
	}
	if second.Inserted != 0 || second.Duplicates != 4 || !reflect.DeepEqual(second.Acked, want) {
		t.Fatalf("second insert = %+v, want all duplicates acked %v", second, want)
	}
	got, err := s.ListEvents(ctx, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 {
		t.Fatalf("stored %d events, want 4", len(got))
	}
	ev, err := got[0].Event()
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(ev, findingEventWithID(batch[0])) {
		t.Fatalf("payload round trip differs")
	}
	if got[0].Kind != KindFinding || got[0].Severity != wardv1.Severity_SEVERITY_HIGH || got[0].Path != "/media/usb/notes.txt" ||
		got[0].PID != 4242 || got[0].User != "alice" || got[0].Host != "intake-01" {
		t.Fatalf("columns = %+v", got[0].Record)
	}
	a, err := s.Agent(ctx, "a1")
	if err != nil {
		t.Fatal(err)
	}
	if a.LastSeen == nil {
		t.Fatal("last_seen not updated by insert")
	}
}

func findingEventWithID(r Record) *wardv1.Event {
	ev := &wardv1.Event{}
	_ = proto.Unmarshal(r.Payload, ev)
	return ev
}

func TestInsertRefusesForeignAgent(t *testing.T) {
	s, _ := openTest(t)
	enrolTestAgent(t, s, "a1")
	if _, err := s.InsertEvents(context.Background(), "a1", records(t, "a2", 1), time.Now()); err == nil {
		t.Fatal("insert of another agent's event succeeded")
	}
}

func TestCoalesceSeqs(t *testing.T) {
	for _, tc := range []struct {
		in   []uint64
		want []SeqRange
	}{
		{nil, nil},
		{[]uint64{7}, []SeqRange{{7, 7}}},
		{[]uint64{3, 1, 2}, []SeqRange{{1, 3}}},
		{[]uint64{1, 1, 2, 2, 4, 6, 5, 10}, []SeqRange{{1, 2}, {4, 6}, {10, 10}}},
		{[]uint64{1<<63 - 2, 1<<63 - 1}, []SeqRange{{1<<63 - 2, 1<<63 - 1}}},
	} {
		if got := CoalesceSeqs(tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("CoalesceSeqs(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestMigrations(t *testing.T) {
	ctx := context.Background()
	t.Run("fresh", func(t *testing.T) {
		s, path := openTest(t)
		v, err := s.SchemaVersion(ctx)
		if err != nil || v != len(migrations) {
			t.Fatalf("version = %d, %v; want %d", v, err, len(migrations))
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Fatalf("db mode %v, want 0600", fi.Mode().Perm())
		}
	})
	t.Run("existing", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "ward.db")
		old, err := openAt(ctx, path, 1)
		if err != nil {
			t.Fatal(err)
		}
		enrolTestAgent(t, old, "a1")
		if _, err := old.InsertEvents(ctx, "a1", records(t, "a1", 1, 2), time.Now()); err != nil {
			t.Fatal(err)
		}
		if v, _ := old.SchemaVersion(ctx); v != 1 {
			t.Fatalf("old version = %d", v)
		}
		_ = old.Close()

		s, err := Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if v, _ := s.SchemaVersion(ctx); v != len(migrations) {
			t.Fatalf("migrated version = %d", v)
		}
		got, err := s.ListEvents(ctx, Filter{Kind: KindFinding, AgentID: "a1"})
		if err != nil || len(got) != 2 {
			t.Fatalf("after migration: %d events, %v", len(got), err)
		}
		_ = s.Close()
		// Reopening an up-to-date database is a no-op.
		again, err := Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		_ = again.Close()
	})
}

func TestTokens(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	now := time.Now()
	ok := func() error { return nil }
	if err := s.AddToken(ctx, []byte("t1"), now, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.EnrollAgent(ctx, []byte("t1"), now, Agent{ID: "a1"}, ok); err != nil {
		t.Fatal(err)
	}
	if err := s.EnrollAgent(ctx, []byte("t1"), now, Agent{ID: "a2"}, ok); !errors.Is(err, ErrTokenUsed) {
		t.Fatalf("second use: %v, want ErrTokenUsed", err)
	}
	if err := s.EnrollAgent(ctx, []byte("nope"), now, Agent{ID: "a3"}, ok); !errors.Is(err, ErrTokenUnknown) {
		t.Fatalf("unknown: %v", err)
	}
	// A failing issue step rolls back: the token stays usable and no agent is recorded.
	if err := s.AddToken(ctx, []byte("t2"), now, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.EnrollAgent(ctx, []byte("t2"), now, Agent{ID: "a4"}, func() error { return errors.New("boom") }); err == nil {
		t.Fatal("issue failure not reported")
	}
	if _, err := s.Agent(ctx, "a4"); !errors.Is(err, ErrAgentUnknown) {
		t.Fatalf("agent a4 recorded despite rollback: %v", err)
	}
	if err := s.EnrollAgent(ctx, []byte("t2"), now.Add(2*time.Hour), Agent{ID: "a5"}, ok); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("expired: %v", err)
	}
	// Revocation.
	if err := s.RevokeAgent(ctx, "a1", now); err != nil {
		t.Fatal(err)
	}
	a, _ := s.Agent(ctx, "a1")
	if !a.Revoked || a.RevokedAt == nil {
		t.Fatalf("agent after revoke: %+v", a)
	}
	if err := s.RevokeAgent(ctx, "zzz", now); !errors.Is(err, ErrAgentUnknown) {
		t.Fatalf("revoke unknown: %v", err)
	}
}

// TestTokenRace: many goroutines race one token; exactly one wins.
func TestTokenRace(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	now := time.Now()
	if err := s.AddToken(ctx, []byte("t"), now, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := s.EnrollAgent(ctx, []byte("t"), now, Agent{ID: fmt.Sprint("a", i)}, func() error { return nil })
			if err == nil {
				mu.Lock()
				wins++
				mu.Unlock()
			} else if !errors.Is(err, ErrTokenUsed) {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d enrolments with one token, want 1", wins)
	}
}

// TestFollowExactlyOnce: writers insert concurrently (with resends) while a follower reads;
// the follower sees every event exactly once, in rowid order.
func TestFollowExactlyOnce(t *testing.T) {
	s, _ := openTest(t)
	const writers, perWriter, batch = 4, 200, 7
	for w := range writers {
		enrolTestAgent(t, s, fmt.Sprint("w", w))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	seen := map[string]int{}
	var lastRow int64
	total := writers * perWriter
	followErr := make(chan error, 1)
	done := errors.New("done")
	go func() {
		followErr <- s.Follow(ctx, Filter{}, func(e StoredEvent) error {
			if e.RowID <= lastRow {
				return fmt.Errorf("rowid %d after %d", e.RowID, lastRow)
			}
			lastRow = e.RowID
			seen[fmt.Sprint(e.AgentID, "/", e.Seq)]++
			if len(seen) == total {
				return done
			}
			return nil
		})
	}()

	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			agent := fmt.Sprint("w", w)
			for start := uint64(1); start <= perWriter; start += batch {
				var seqs []uint64
				for q := start; q < start+batch && q <= perWriter; q++ {
					seqs = append(seqs, q)
				}
				recs := records(t, agent, seqs...)
				for range 2 { // every batch is sent twice, like a retrying agent
					if _, err := s.InsertEvents(ctx, agent, recs, time.Now()); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if err := <-followErr; !errors.Is(err, done) {
		t.Fatalf("follow: %v (saw %d of %d)", err, len(seen), total)
	}
	for k, n := range seen {
		if n != 1 {
			t.Fatalf("%s seen %d times", k, n)
		}
	}
}

func TestListFilters(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	enrolTestAgent(t, s, "a1")
	enrolTestAgent(t, s, "a2")
	if _, err := s.InsertEvents(ctx, "a1", records(t, "a1", 1, 2, 3), time.Now()); err != nil {
		t.Fatal(err)
	}
	health := &wardv1.Event{Id: uuid.NewString(), AgentId: "a2", Seq: 1, Time: timestamppb.Now(),
		Payload: &wardv1.Event_Health{Health: &wardv1.Health{SpoolEvents: 3}}}
	r, err := RecordFromEvent(health)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.InsertEvents(ctx, "a2", []Record{r}, time.Now()); err != nil {
		t.Fatal(err)
	}
	check := func(f Filter, want int) []StoredEvent {
		t.Helper()
		got, err := s.ListEvents(ctx, f)
		if err != nil || len(got) != want {
			t.Fatalf("ListEvents(%+v) = %d, %v; want %d", f, len(got), err, want)
		}
		return got
	}
	check(Filter{}, 4)
	check(Filter{Kind: KindHealth}, 1)
	check(Filter{AgentID: "a1"}, 3)
	check(Filter{AfterRowID: 2}, 2)
	check(Filter{Since: time.Now().Add(-time.Hour)}, 1)
	last := check(Filter{Limit: 2, Newest: true}, 2)
	if last[0].RowID != 3 || last[1].RowID != 4 {
		t.Fatalf("newest = rowids %d, %d", last[0].RowID, last[1].RowID)
	}
	if n, _ := s.LastRowID(ctx); n != 4 {
		t.Fatalf("LastRowID = %d", n)
	}
}
