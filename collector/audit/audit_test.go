package audit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/ward-dlp/ward/collector/store"
)

type fixture struct {
	st   *store.Store
	log  *Log
	db   *sql.DB // a second, raw connection: what an attacker with the file would use
	path string
	dir  string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "ward.db")
	st, err := store.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	l, err := Open(st, Options{KeyFile: filepath.Join(dir, "audit.key"), KeyName: "ward-audit/test", CheckpointEvery: 50})
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return &fixture{st: st, log: l, db: db, path: path, dir: dir}
}

func entry(i int) Entry {
	return Entry{
		Time:    time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC),
		Actor:   Actor{Type: ActorUnix, ID: "0", Name: "root", PID: int32(1000 + i)},
		Action:  ActionAgentRevoke,
		Object:  fmt.Sprintf("agent-%03d", i),
		Outcome: OutcomeSuccess,
		Details: map[string]string{"reason": "lost laptop"},
	}
}

// fill records n entries, checkpointing every `every`.
func (f *fixture) fill(t *testing.T, from, n int, every int) {
	t.Helper()
	ctx := context.Background()
	for i := from; i < from+n; i++ {
		if err := f.log.Record(ctx, entry(i)); err != nil {
			t.Fatal(err)
		}
		if every > 0 && (i+1)%every == 0 {
			if _, _, err := f.log.Checkpoint(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func (f *fixture) verify(external ...[]byte) (*Report, error) {
	return VerifyStore(context.Background(), f.st, f.log.Verifier(), external)
}

func (f *fixture) exec(t *testing.T, q string, args ...any) {
	t.Helper()
	if _, err := f.db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func wantProblem(t *testing.T, err error, index int64, reason string) {
	t.Helper()
	var p *Problem
	if !errors.As(err, &p) {
		t.Fatalf("verify: %v, want a Problem", err)
	}
	if p.Index != index || !strings.Contains(p.Reason, reason) {
		t.Fatalf("verify: %v; want entry %d (%s)", err, index, reason)
	}
	if index >= 0 && !strings.Contains(err.Error(), fmt.Sprintf("entry %d", index)) {
		t.Fatalf("message does not name the entry: %v", err)
	}
}

func TestNormalOperationVerifies(t *testing.T) {
	f := newFixture(t)
	f.fill(t, 0, 230, 100)
	rep, err := f.verify()
	if err != nil {
		t.Fatal(err)
	}
	if rep.Entries != 230 || rep.Checkpoints != 2 || rep.Latest.Size != 200 || rep.Uncovered != 30 {
		t.Fatalf("report %+v", rep)
	}
	size, made, err := f.log.Checkpoint(context.Background())
	if err != nil || !made || size != 230 {
		t.Fatalf("checkpoint: %d %v %v", size, made, err)
	}
	if _, made, _ := f.log.Checkpoint(context.Background()); made {
		t.Fatal("a checkpoint without new records")
	}
	rep, err = f.verify()
	if err != nil || rep.Uncovered != 0 || rep.Checkpoints != 3 {
		t.Fatalf("%+v %v", rep, err)
	}
	// Entries decode back to what was recorded.
	recs, err := f.st.AuditRecords(context.Background(), -1, 5)
	if err != nil || len(recs) != 5 {
		t.Fatal(recs, err)
	}
	e, err := Decode(recs[3].Data)
	if err != nil || e.Object != "agent-003" || e.Actor.PID != 1003 || e.Details["reason"] != "lost laptop" {
		t.Fatalf("%+v %v", e, err)
	}
	// The checkpoint is a C2SP checkpoint signed by the key on disk.
	cps, _ := f.st.AuditCheckpoints(context.Background())
	c, err := ParseCheckpoint(cps[0].Note, f.log.Verifier())
	if err != nil || c.Size != 100 || c.Origin != "ward-audit/test" {
		t.Fatalf("%+v %v", c, err)
	}
	if !strings.HasPrefix(string(cps[0].Note), "ward-audit/test\n100\n") || !strings.Contains(string(cps[0].Note), "\n\n— ward-audit/test ") {
		t.Fatalf("note:\n%s", cps[0].Note)
	}
}

func TestAlteredRowIsNamed(t *testing.T) {
	f := newFixture(t)
	f.fill(t, 0, 120, 50)
	f.exec(t, `UPDATE audit_log SET record = replace(record, 'agent-037', 'agent-999') WHERE idx = 37`)
	_, err := f.verify()
	wantProblem(t, err, 37, "altered")
}

// TestRewrittenRowAndLeafHash: an attacker who also rewrites the stored leaf hash passes the
// per-entry check, but not the signed checkpoints.
func TestRewrittenRowAndLeafHash(t *testing.T) {
	f := newFixture(t)
	f.fill(t, 0, 120, 50)
	var data []byte
	if err := f.db.QueryRow(`SELECT record FROM audit_log WHERE idx = 61`).Scan(&data); err != nil {
		t.Fatal(err)
	}
	forged := []byte(strings.Replace(string(data), "agent-061", "agent-xyz", 1))
	h := tlog.RecordHash(forged)
	f.exec(t, `UPDATE audit_log SET record = ? WHERE idx = 61`, forged)
	f.exec(t, `UPDATE audit_hashes SET hash = ? WHERE id = ?`, h[:], tlog.StoredHashIndex(0, 61))
	_, err := f.verify()
	var p *Problem
	if !errors.As(err, &p) || p.From != 50 || p.To != 100 || !strings.Contains(p.Reason, "rewritten") {
		t.Fatalf("verify: %v", err)
	}
}

func TestDeletedRowIsNamed(t *testing.T) {
	f := newFixture(t)
	f.fill(t, 0, 80, 50)
	f.exec(t, `DELETE FROM audit_log WHERE idx = 12`)
	_, err := f.verify()
	wantProblem(t, err, 12, "missing")
}

func TestInsertedRowIsNamed(t *testing.T) {
	f := newFixture(t)
	f.fill(t, 0, 60, 50)
	data, err := Encode(entry(999))
	if err != nil {
		t.Fatal(err)
	}
	f.exec(t, `INSERT INTO audit_log(idx, record) VALUES (60, ?)`, data)
	_, err = f.verify()
	wantProblem(t, err, 60, "inserted")
}

// TestTruncationAgainstOutsideCheckpoint: deleting the newest entries together with their
// hashes and checkpoints leaves a log that is consistent in itself; the checkpoint the SIEM
// (or an operator) kept shows the truncation.
func TestTruncationAgainstOutsideCheckpoint(t *testing.T) {
	f := newFixture(t)
	f.fill(t, 0, 150, 50)
	cps, err := f.st.AuditCheckpoints(context.Background())
	if err != nil || len(cps) != 3 {
		t.Fatal(cps, err)
	}
	outside := cps[2].Note // size 150, as the SIEM received it
	f.exec(t, `DELETE FROM audit_log WHERE idx >= 90`)
	f.exec(t, `DELETE FROM audit_hashes WHERE id >= ?`, tlog.StoredHashIndex(0, 90))
	f.exec(t, `DELETE FROM audit_checkpoints WHERE size > 90`)
	if _, err := f.verify(); err != nil {
		t.Fatalf("a truncated log without its later checkpoints is consistent in itself: %v", err)
	}
	_, err = f.verify(outside)
	wantProblem(t, err, 90, "truncated")

	// A checkpoint from another log (another key) is refused, not silently ignored.
	other := newFixture(t)
	other.fill(t, 0, 10, 10)
	ocps, _ := other.st.AuditCheckpoints(context.Background())
	if _, err := f.verify(ocps[0].Note); err == nil || !strings.Contains(err.Error(), "signature") {
		t.Fatalf("foreign checkpoint: %v", err)
	}
}

func TestForgedCheckpointIsRefused(t *testing.T) {
	f := newFixture(t)
	f.fill(t, 0, 50, 50)
	f.exec(t, `UPDATE audit_checkpoints SET note = replace(note, X'0A35300A', X'0A34390A')`) // "\n50\n" -> "\n49\n"
	if _, err := f.verify(); err == nil || !strings.Contains(err.Error(), "signature") {
		t.Fatalf("verify: %v", err)
	}
}

func TestKeyFileAndReopen(t *testing.T) {
	f := newFixture(t)
	key := filepath.Join(f.dir, "audit.key")
	fi, err := os.Stat(key)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	l2, err := Open(f.st, Options{KeyFile: key})
	if err != nil || l2.VerifierKey() != f.log.VerifierKey() {
		t.Fatalf("reopen: %v", err)
	}
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(f.st, Options{KeyFile: key}); err == nil {
		t.Fatal("a world-readable signing key was accepted")
	}
}

func TestEntryValidation(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for name, e := range map[string]Entry{
		"no action":  {Actor: Actor{Type: ActorUnix, ID: "0"}, Outcome: OutcomeSuccess},
		"bad actor":  {Actor: Actor{Type: "ldap", ID: "x"}, Action: "a.b", Outcome: OutcomeSuccess},
		"no outcome": {Actor: Actor{Type: ActorUnix, ID: "0"}, Action: "a.b"},
	} {
		if err := f.log.Record(ctx, e); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	long := Entry{Actor: Actor{Type: ActorConsole, ID: "u1"}, Action: "user.change", Outcome: OutcomeSuccess,
		Object: strings.Repeat("é", 1000), Details: map[string]string{"k": "\xff"}}
	if err := f.log.Record(ctx, long); err != nil {
		t.Fatal(err)
	}
	recs, _ := f.st.AuditRecords(ctx, -1, 1)
	e, err := Decode(recs[0].Data)
	if err != nil || len(e.Object) > maxFieldBytes+4 || e.Details["k"] != "?" {
		t.Fatalf("%v %q", err, e.Details)
	}
}

// TestRunCheckpointsAfterEveryN: Run makes a checkpoint as soon as CheckpointEvery records
// are in, and a final one at shutdown.
func TestRunCheckpointsAfterEveryN(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.log.Run(ctx); close(done) }()
	f.fill(t, 0, 50, 0)
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := f.st.LatestAuditCheckpointSize(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n == 50 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint after 50 records (latest %d)", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	f.fill(t, 50, 7, 0)
	cancel()
	<-done
	if n, _ := f.st.LatestAuditCheckpointSize(context.Background()); n != 57 {
		t.Fatalf("final checkpoint at %d, want 57", n)
	}
}
