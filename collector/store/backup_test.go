package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBackupWhileWritingAndRestore backs up a store that another connection keeps writing
// to, restores the copy elsewhere and reads the same events back.
func TestBackupWhileWritingAndRestore(t *testing.T) {
	ctx := context.Background()
	s, path := openTest(t)
	enrolTestAgent(t, s, "a1")
	if _, err := s.InsertEvents(ctx, "a1", records(t, "a1", 1, 2, 3), time.Now()); err != nil {
		t.Fatal(err)
	}
	// A writer runs during the backup: the copy must be one consistent snapshot.
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		seq := uint64(100)
		for {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if _, err := s.InsertEvents(ctx, "a1", records(t, "a1", seq), time.Now()); err != nil {
				done <- err
				return
			}
			seq++
		}
	}()
	dest := filepath.Join(t.TempDir(), "copy.db")
	info, err := Backup(ctx, path, dest)
	close(stop)
	if werr := <-done; werr != nil {
		t.Fatalf("concurrent writer: %v", werr)
	}
	if err != nil {
		t.Fatal(err)
	}
	if info.Events < 3 || info.Agents != 1 || info.SchemaVersion != len(migrations) {
		t.Fatalf("backup info = %+v, want >= 3 events, 1 agent, schema %d", info, len(migrations))
	}
	if st, err := os.Stat(dest); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("backup file mode: %v %v", st.Mode(), err)
	}
	if _, err := Backup(ctx, path, dest); err == nil {
		t.Fatal("Backup overwrote an existing file")
	}

	target := filepath.Join(t.TempDir(), "collector", "ward.db")
	got, err := Restore(ctx, dest, target, false)
	if err != nil {
		t.Fatal(err)
	}
	if got != info {
		t.Fatalf("restore info %+v != backup info %+v", got, info)
	}
	if _, err := Restore(ctx, dest, target, false); !errors.Is(err, ErrStoreExists) {
		t.Fatalf("second restore without force: %v, want ErrStoreExists", err)
	}
	r, err := Open(ctx, target)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var evs []StoredEvent
	for after := int64(0); ; {
		page, err := r.ListEvents(ctx, Filter{AfterRowID: after, Limit: MaxLimit})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		evs = append(evs, page...)
		after = page[len(page)-1].RowID
	}
	if int64(len(evs)) != info.Events {
		t.Fatalf("restored store has %d events, backup said %d", len(evs), info.Events)
	}
	seqs := map[uint64]bool{}
	for _, e := range evs {
		seqs[e.Seq] = true
	}
	for _, want := range []uint64{1, 2, 3} {
		if !seqs[want] {
			t.Errorf("restored store lacks seq %d", want)
		}
	}
	// Force replaces, and leaves no stale WAL that would be replayed into the new file.
	if _, err := Restore(ctx, dest, target, true); err != nil {
		t.Fatalf("forced restore: %v", err)
	}
}

func TestVerifyRejectsDamage(t *testing.T) {
	ctx := context.Background()
	s, path := openTest(t)
	enrolTestAgent(t, s, "a1")
	if _, err := s.InsertEvents(ctx, "a1", records(t, "a1", 1, 2, 3), time.Now()); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "copy.db")
	if _, err := Backup(ctx, path, dest); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(dest)
	if err != nil {
		t.Fatal(err)
	}
	// Overwrite every page after the first (schema) page with garbage.
	bad := append([]byte(nil), b...)
	for i := 4096; i < len(bad); i++ {
		bad[i] = byte(i * 7)
	}
	damaged := filepath.Join(t.TempDir(), "damaged.db")
	if err := os.WriteFile(damaged, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(ctx, damaged); err == nil {
		t.Fatal("Verify accepted a damaged database")
	}
	target := filepath.Join(t.TempDir(), "ward.db")
	if _, err := Restore(ctx, damaged, target, true); err == nil || !strings.Contains(err.Error(), "unsound") {
		t.Fatalf("Restore of a damaged backup: %v", err)
	}
	if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused restore left %s behind: %v", target, err)
	}
	notStore := filepath.Join(t.TempDir(), "other.db")
	if err := os.WriteFile(notStore, []byte("not a database at all, just text"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(ctx, notStore); err == nil {
		t.Fatal("Verify accepted a file that is not a database")
	}
}
