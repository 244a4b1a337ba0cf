package store

import (
	"context"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ward-dlp/ward/collector/store/pgtest"
)

// Rows in clear (written before encryption) and under an old key end under the new key;
// every row still decrypts to what was stored; the old key is retired so the collector
// starts without it; the markers are gone from the database file; a run stopped after one
// batch resumes where it stopped.
func TestRewrap(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ward.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	enrolTestAgent(t, s, "a1")
	storeMarked(t, s, "a1", 1, 2, 3) // clear
	k1, k2 := newKey(t), newKey(t)
	if err := s.SetEvidenceKeys(ctx, ring(t, k1)); err != nil {
		t.Fatal(err)
	}
	storeMarked(t, s, "a1", 4, 5, 6, 7) // under k1
	before := map[int64][]byte{}
	evs, err := s.ListEvents(ctx, Filter{})
	if err != nil || len(evs) != 7 {
		t.Fatalf("list: %d %v", len(evs), err)
	}
	for _, e := range evs {
		ev, err := e.Event()
		if err != nil {
			t.Fatal(err)
		}
		before[e.RowID], _ = marshalDet(ev)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	r2 := ring(t, k1, k2)
	if err := s.SetEvidenceKeys(ctx, r2); err != nil {
		t.Fatal(err)
	}
	// Interrupted: the context is cancelled after the first batch of 2 is committed.
	stopped, cancel := context.WithCancel(ctx)
	var seen []RewrapProgress
	_, err = s.Rewrap(stopped, 2, func(p RewrapProgress) { seen = append(seen, p); cancel() })
	if err == nil || len(seen) != 1 || seen[0].Done != 2 || seen[0].Remaining != 5 {
		t.Fatalf("interrupted run: %v, progress %+v", err, seen)
	}
	res, err := s.Rewrap(ctx, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Done != 5 || res.Remaining != 0 || res.ByOldKey[""]+res.ByOldKey[evidenceKeyID(mustKey(t, k1))] != 5 ||
		len(res.RetiredKeys) != 1 || res.RetiredKeys[0] != evidenceKeyID(mustKey(t, k1)) {
		t.Fatalf("resumed run: %+v", res)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// k1 may now leave the ring: the collector starts with k2 alone and reads every row.
	s, err = Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.SetEvidenceKeys(ctx, ring(t, k2)); err != nil {
		t.Fatalf("start without the retired key: %v", err)
	}
	evs, err = s.ListEvents(ctx, Filter{})
	if err != nil || len(evs) != 7 {
		t.Fatalf("list after rewrap: %d %v", len(evs), err)
	}
	for _, e := range evs {
		ev, err := e.Event()
		if err != nil {
			t.Fatalf("row %d after rewrap: %v", e.RowID, err)
		}
		if got, _ := marshalDet(ev); string(got) != string(before[e.RowID]) {
			t.Fatalf("row %d changed by rewrap", e.RowID)
		}
	}
	var clearRows int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM events WHERE key_id = '' OR path <> '' OR user <> ''`).Scan(&clearRows); err != nil || clearRows != 0 {
		t.Fatalf("rows still in clear: %d %v", clearRows, err)
	}
	if _, err := s.db.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.ExecContext(ctx, `VACUUM`); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{markerPath, markerSample, markerUser} {
		if rawFilesContain(t, path, m) {
			t.Errorf("%q still readable in the database file after rewrap and VACUUM", m)
		}
	}
	// Without a key there is nothing to rewrap to.
	s.evidence.Store(nil)
	if _, err := s.Rewrap(ctx, 10, nil); err == nil {
		t.Error("rewrap without a key ran")
	}
}

func marshalDet(ev proto.Message) ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(ev)
}

// The same on PostgreSQL (the dialect translation of the rewrap statements, "user" among
// them, on a real server).
func TestRewrapPostgres(t *testing.T) {
	ctx := context.Background()
	s := openPG(t, pgtest.DB(t), "a")
	enrolTestAgent(t, s, "a1")
	storeMarked(t, s, "a1", 1, 2)
	k1, k2 := newKey(t), newKey(t)
	if err := s.SetEvidenceKeys(ctx, ring(t, k1)); err != nil {
		t.Fatal(err)
	}
	storeMarked(t, s, "a1", 3)
	if err := s.SetEvidenceKeys(ctx, ring(t, k1, k2)); err != nil {
		t.Fatal(err)
	}
	res, err := s.Rewrap(ctx, 2, nil)
	if err != nil || res.Done != 3 || res.Remaining != 0 || len(res.RetiredKeys) != 1 {
		t.Fatalf("rewrap: %+v %v", res, err)
	}
	if err := s.SetEvidenceKeys(ctx, ring(t, k2)); err != nil {
		t.Fatalf("start without the retired key: %v", err)
	}
	evs, err := s.ListEvents(ctx, Filter{})
	if err != nil || len(evs) != 3 {
		t.Fatalf("list: %d %v", len(evs), err)
	}
	for _, e := range evs {
		if _, err := e.Event(); err != nil {
			t.Fatalf("row %d: %v", e.RowID, err)
		}
	}
}
