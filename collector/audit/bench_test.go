package audit

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/collector/store"
)

// BenchmarkRecord appends audit records (one durable transaction each, with the tree's
// stored hashes). BenchmarkPeerInsertEvent is the peer: the store inserting one event per
// transaction, the same durability (WAL, synchronous=FULL) without the tree.
func benchStore(b *testing.B) *store.Store {
	b.Helper()
	st, err := store.Open(context.Background(), filepath.Join(b.TempDir(), "ward.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	return st
}

func BenchmarkAuditRecord(b *testing.B) {
	st := benchStore(b)
	l, err := Open(st, Options{KeyFile: filepath.Join(b.TempDir(), "audit.key"), KeyName: "ward-audit/bench"})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if err := l.Record(ctx, entry(i)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPeerInsertEvent(b *testing.B) {
	st := benchStore(b)
	ctx := context.Background()
	now := time.Now()
	if err := st.AddToken(ctx, []byte("t"), now, now.Add(time.Hour)); err != nil {
		b.Fatal(err)
	}
	if err := st.EnrollAgent(ctx, []byte("t"), now, store.Agent{ID: "a1"}, func() error { return nil }); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		ev := &wardv1.Event{Id: fmt.Sprint(i), AgentId: "a1", Seq: uint64(i + 1), Time: timestamppb.Now(),
			Payload: &wardv1.Event_Health{Health: &wardv1.Health{}}}
		r, err := store.RecordFromEvent(ev)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := st.InsertEvents(ctx, "a1", []store.Record{r}, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerify measures wardctl audit verify's work per entry (decode, leaf hash, stored
// hashes, checkpoint tree hashes) over a 10,000-entry log read from SQLite.
func BenchmarkVerify(b *testing.B) {
	st := benchStore(b)
	l, err := Open(st, Options{KeyFile: filepath.Join(b.TempDir(), "audit.key"), KeyName: "ward-audit/bench"})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	const n = 10000
	for i := range n {
		if _, err := st.AppendAudit(ctx, mustEncode(b, entry(i))); err != nil {
			b.Fatal(err)
		}
		if (i+1)%1000 == 0 {
			if _, _, err := l.Checkpoint(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ResetTimer()
	for b.Loop() {
		rep, err := VerifyStore(ctx, st, l.Verifier(), nil)
		if err != nil || rep.Entries != n {
			b.Fatal(rep, err)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}

func mustEncode(b *testing.B, e Entry) []byte {
	d, err := Encode(e)
	if err != nil {
		b.Fatal(err)
	}
	return d
}
