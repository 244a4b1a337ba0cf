package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
)

// Markers that must never be readable in the database files when encryption is on.
const (
	markerPath   = "/srv/clinic/intake/ZZMARKERPATH-Jane-Roe-MRN.docx"
	markerSample = "ZZMARKERSAMPLE-4821"
	markerFP     = "ZZMARKERFINGERPRINT"
	markerUser   = "zzmarkeruser"
)

func newKey(t *testing.T) string {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(k)
}

func ring(t *testing.T, keys ...string) *EvidenceKeys {
	t.Helper()
	r, err := ParseEvidenceKeys(strings.Join(keys, "\n"))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func markedFinding(agentID string, seq uint64) *wardv1.Event {
	return &wardv1.Event{
		Id: uuid.Must(uuid.NewV7()).String(), AgentId: agentID, Seq: seq, Time: timestamppb.Now(),
		Host: &wardv1.Host{Hostname: "intake-01"},
		Payload: &wardv1.Event_Finding{Finding: &wardv1.Finding{
			DataClass: wardv1.DataClass_DATA_CLASS_PART2, Confidence: 95,
			Target:  &wardv1.Finding_File{File: &wardv1.FileTarget{Path: markerPath, Size: 1234}},
			Process: &wardv1.Process{Pid: 77, Exe: "/usr/bin/soffice", User: markerUser},
			Matches: []*wardv1.Match{{Detector: "phi.mrn", Count: 2, MaskedSamples: []string{markerSample},
				Fingerprints: []string{markerFP}}},
			Decision: &wardv1.Decision{Severity: wardv1.Severity_SEVERITY_HIGH, Action: wardv1.Action_ACTION_ALERT},
		}},
	}
}

func storeMarked(t *testing.T, s *Store, agent string, seqs ...uint64) {
	t.Helper()
	var recs []Record
	for _, q := range seqs {
		r, err := RecordFromEvent(markedFinding(agent, q))
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	if _, err := s.InsertEvents(context.Background(), agent, recs, time.Now()); err != nil {
		t.Fatal(err)
	}
}

// rawFilesContain reports whether any of the database's files holds marker.
func rawFilesContain(t *testing.T, path, marker string) bool {
	t.Helper()
	for _, suffix := range []string{"", "-wal"} {
		b, err := os.ReadFile(path + suffix)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(marker)) {
			return true
		}
	}
	return false
}

func TestEvidenceEncryptedAtRest(t *testing.T) {
	ctx := context.Background()
	s, path := openTest(t)
	enrolTestAgent(t, s, "a1")
	if err := s.SetOutboxRoutes(ctx, []OutboxRoute{{Sink: "siem"}}); err != nil {
		t.Fatal(err)
	}

	// Control: without a key the markers are in the file, so the check below can fail.
	storeMarked(t, s, "a1", 1)
	if !rawFilesContain(t, path, markerPath) || !rawFilesContain(t, path, markerSample) {
		t.Fatal("control: clear rows do not show the markers; the scan would prove nothing")
	}
	// Remove the clear row so only encrypted ones remain, and rewrite the file so that its
	// freed pages do not keep the old bytes.
	if _, err := s.db.ExecContext(ctx, `DELETE FROM events`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.ExecContext(ctx, `VACUUM`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		t.Fatal(err)
	}
	if rawFilesContain(t, path, markerPath) {
		t.Fatal("control: marker survived VACUUM")
	}

	k1 := newKey(t)
	if err := s.SetEvidenceKeys(ctx, ring(t, k1)); err != nil {
		t.Fatal(err)
	}
	storeMarked(t, s, "a1", 2, 3)
	if _, err := s.RaiseFleetAlert(ctx, FleetCheck{Kind: wardv1.FleetAlert_KIND_AGENT_SILENT, AgentID: "a1",
		Now: time.Now(), SilentBefore: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{markerPath, markerSample, markerFP, markerUser, "soffice"} {
		if rawFilesContain(t, path, m) {
			t.Errorf("%q readable in the database files with encryption on", m)
		}
	}

	// Reading back: decrypted, columns restored, kind/agent/severity filters work in clear.
	evs, err := s.ListEvents(ctx, Filter{Kind: KindFinding, AgentID: "a1"})
	if err != nil || len(evs) != 2 {
		t.Fatalf("list: %d events, %v", len(evs), err)
	}
	for _, e := range evs {
		ev, err := e.Event()
		if err != nil {
			t.Fatal(err)
		}
		if !e.Encrypted || e.Path != markerPath || e.User != markerUser || e.Severity != wardv1.Severity_SEVERITY_HIGH ||
			ev.GetFinding().GetMatches()[0].GetMaskedSamples()[0] != markerSample {
			t.Fatalf("read back %+v / %v", e.Record, ev)
		}
	}
	// The outbox path (what sinks read) decrypts too, including the collector's own alert.
	items, err := s.ClaimOutbox(ctx, "siem", time.Now(), 100, 0, time.Minute)
	if err != nil || len(items) != 3 {
		t.Fatalf("claim: %d, %v", len(items), err)
	}
	for _, it := range items {
		if _, err := it.Event(); err != nil {
			t.Fatalf("outbox item rowid %d: %v", it.RowID, err)
		}
	}
}

func TestEvidenceKeyRotationAndWrongKey(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ward.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	enrolTestAgent(t, s, "a1")
	k1, k2, wrong := newKey(t), newKey(t), newKey(t)
	if err := s.SetEvidenceKeys(ctx, ring(t, k1)); err != nil {
		t.Fatal(err)
	}
	storeMarked(t, s, "a1", 1)
	_ = s.Close()

	// Rotation: k2 appended; the k1 row stays readable, new rows use k2.
	s, err = Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	r2 := ring(t, k1, k2)
	if err := s.SetEvidenceKeys(ctx, r2); err != nil {
		t.Fatal(err)
	}
	storeMarked(t, s, "a1", 2)
	var ids []string
	rows, err := s.db.QueryContext(ctx, `SELECT key_id FROM events ORDER BY rowid`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		_ = rows.Scan(&id)
		ids = append(ids, id)
	}
	rows.Close()
	if len(ids) != 2 || ids[0] == ids[1] || ids[1] != r2.CurrentID() {
		t.Fatalf("key ids per row %v; current %s", ids, r2.CurrentID())
	}
	evs, err := s.ListEvents(ctx, Filter{})
	if err != nil || len(evs) != 2 {
		t.Fatalf("list: %v %v", len(evs), err)
	}
	for _, e := range evs {
		if _, err := e.Event(); err != nil {
			t.Fatalf("after rotation rowid %d: %v", e.RowID, err)
		}
	}
	_ = s.Close()

	// A ring that lost k1, a wrong key, and no key at all are refused up front, clearly.
	s, err = Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for name, r := range map[string]*EvidenceKeys{"dropped k1": ring(t, k2), "wrong": ring(t, wrong), "none": nil} {
		err := s.SetEvidenceKeys(ctx, r)
		if err == nil || !strings.Contains(err.Error(), "evidence key") {
			t.Fatalf("%s: %v", name, err)
		}
		t.Logf("%s: %v", name, err)
	}
	// And a row read with the wrong key material under the right id fails authentication
	// with ErrEvidenceKey, per row, without hiding the others.
	bad := ring(t, k2)
	bad.keys[evidenceKeyID(mustKey(t, k1))] = mustKey(t, wrong)
	s.evidence.Store(bad)
	evs, err = s.ListEvents(ctx, Filter{})
	if err != nil || len(evs) != 2 {
		t.Fatalf("list with a bad key: %d, %v", len(evs), err)
	}
	if _, err := evs[0].Event(); !errors.Is(err, ErrEvidenceKey) || !strings.Contains(err.Error(), "does not authenticate") {
		t.Fatalf("wrong key material: %v", err)
	}
	if _, err := evs[1].Event(); err != nil {
		t.Fatalf("the row under the good key: %v", err)
	}
}

func mustKey(t *testing.T, b64 string) []byte {
	t.Helper()
	k, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestEvidenceRowsCannotBeSwapped(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	enrolTestAgent(t, s, "a1")
	if err := s.SetEvidenceKeys(ctx, ring(t, newKey(t))); err != nil {
		t.Fatal(err)
	}
	storeMarked(t, s, "a1", 1, 2)
	// Copy row 1's ciphertext over row 2: the additional data binds it to (agent, seq).
	if _, err := s.db.ExecContext(ctx, `UPDATE events SET payload = (SELECT payload FROM events WHERE seq = 1) WHERE seq = 2`); err != nil {
		t.Fatal(err)
	}
	evs, _ := s.ListEvents(ctx, Filter{})
	if _, err := evs[1].Event(); !errors.Is(err, ErrEvidenceKey) {
		t.Fatalf("swapped ciphertext accepted: %v", err)
	}
}

func TestEvidenceKeyFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "evidence.keys")
	k1, k2 := newKey(t), newKey(t)
	if err := os.WriteFile(p, []byte("# old\n"+k1+"\n\n# current\n"+k2+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadEvidenceKeys(p); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable key file: %v", err)
	}
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := LoadEvidenceKeys(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.IDs()) != 2 || r.CurrentID() != evidenceKeyID(mustKey(t, k2)) {
		t.Fatalf("ring %v current %s", r.IDs(), r.CurrentID())
	}
	for _, bad := range []string{"", "# only a comment\n", "not base64!\n", base64.StdEncoding.EncodeToString([]byte("short"))} {
		if _, err := ParseEvidenceKeys(bad); err == nil {
			t.Fatalf("accepted %q", bad)
		}
	}
	if r, err := ParseEvidenceKeys(k1 + "," + k2); err != nil || len(r.IDs()) != 2 {
		t.Fatalf("comma-separated (env form): %v", err)
	}
}

// TestEncryptedBackupRestore: backup and restore copy ciphertext; the restored store reads
// with the same ring and refuses to start without it.
func TestEncryptedBackupRestore(t *testing.T) {
	ctx := context.Background()
	s, path := openTest(t)
	enrolTestAgent(t, s, "a1")
	r := ring(t, newKey(t))
	if err := s.SetEvidenceKeys(ctx, r); err != nil {
		t.Fatal(err)
	}
	storeMarked(t, s, "a1", 1, 2, 3)
	dir := t.TempDir()
	backup := filepath.Join(dir, "backup.db")
	if _, err := Backup(ctx, path, backup); err != nil {
		t.Fatal(err)
	}
	if rawFilesContain(t, backup, markerPath) || rawFilesContain(t, backup, markerSample) {
		t.Fatal("backup holds evidence in clear")
	}
	restored := filepath.Join(dir, "restored", "ward.db")
	if _, err := Restore(ctx, backup, restored, false); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(ctx, restored)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if err := s2.SetEvidenceKeys(ctx, nil); err == nil {
		t.Fatal("restored encrypted store opened without its key")
	}
	if err := s2.SetEvidenceKeys(ctx, r); err != nil {
		t.Fatal(err)
	}
	evs, err := s2.ListEvents(ctx, Filter{})
	if err != nil || len(evs) != 3 {
		t.Fatalf("restored: %d, %v", len(evs), err)
	}
	for _, e := range evs {
		if ev, err := e.Event(); err != nil || ev.GetFinding().GetFile().GetPath() != markerPath {
			t.Fatalf("restored rowid %d: %v", e.RowID, err)
		}
	}
}

func BenchmarkSealOpen(b *testing.B) {
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	r, _ := ParseEvidenceKeys(base64.StdEncoding.EncodeToString(k))
	rec, _ := RecordFromEvent(markedFinding("a1", 1))
	b.SetBytes(int64(len(rec.Payload)))
	for b.Loop() {
		sl, _ := r.newSealer()
		blob := sl.seal("a1", 1, rec.Payload)
		op := &opener{keys: r}
		if _, err := op.open(r.current, "a1", 1, blob); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzParseEvidenceKeys(f *testing.F) {
	f.Add("")
	f.Add("# comment\n")
	f.Add(base64.StdEncoding.EncodeToString(make([]byte, 32)))
	f.Add(base64.StdEncoding.EncodeToString(make([]byte, 32)) + "," + base64.StdEncoding.EncodeToString(make([]byte, 16)))
	f.Add("not base64\n\n,,\n")
	f.Fuzz(func(t *testing.T, text string) {
		r, err := ParseEvidenceKeys(text)
		if err != nil {
			if r != nil {
				t.Fatal("ring returned with an error")
			}
			return
		}
		if r.CurrentID() == "" || len(r.IDs()) == 0 {
			t.Fatalf("accepted %q without a current key", text)
		}
		// Every accepted ring round-trips a row.
		sl, err := r.newSealer()
		if err != nil {
			t.Fatal(err)
		}
		blob := sl.seal("a", 1, []byte("payload"))
		if pt, err := (&opener{keys: r}).open(r.CurrentID(), "a", 1, blob); err != nil || string(pt) != "payload" {
			t.Fatalf("round trip: %q %v", pt, err)
		}
	})
}

// BenchmarkInsertEvents compares storing 500-event batches in clear and encrypted, on
// real SQLite files (synchronous=FULL, so the fsync is part of both).
func BenchmarkInsertEvents(b *testing.B) {
	for _, enc := range []bool{false, true} {
		name := "clear"
		if enc {
			name = "encrypted"
		}
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			s, err := Open(ctx, filepath.Join(b.TempDir(), "ward.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			hash := []byte("h")
			now := time.Now()
			_ = s.AddToken(ctx, hash, now, now.Add(time.Hour))
			if err := s.EnrollAgent(ctx, hash, now, Agent{ID: "a1"}, func() error { return nil }); err != nil {
				b.Fatal(err)
			}
			if enc {
				k := make([]byte, 32)
				_, _ = rand.Read(k)
				r, _ := ParseEvidenceKeys(base64.StdEncoding.EncodeToString(k))
				if err := s.SetEvidenceKeys(ctx, r); err != nil {
					b.Fatal(err)
				}
			}
			seq := uint64(0)
			b.ReportAllocs()
			for b.Loop() {
				recs := make([]Record, 500)
				for i := range recs {
					seq++
					recs[i], _ = RecordFromEvent(markedFinding("a1", seq))
				}
				if _, err := s.InsertEvents(ctx, "a1", recs, time.Now()); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(seq)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
