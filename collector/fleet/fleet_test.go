package fleet

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/types/known/timestamppb"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/collector/store"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func openStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "ward.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func enrol(t *testing.T, st *store.Store, id, host string, at time.Time) {
	t.Helper()
	ctx := context.Background()
	hash := []byte("token-" + id)
	if err := st.AddToken(ctx, hash, at, at.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := st.EnrollAgent(ctx, hash, at, store.Agent{ID: id, Hostname: host, MachineID: "m-" + id, Version: "1.2.3"},
		func() error { return nil }); err != nil {
		t.Fatal(err)
	}
}

// heartbeat stores a Health event from agent received at at, as ingest would.
func heartbeat(t *testing.T, st *store.Store, agent string, seq uint64, at time.Time) {
	t.Helper()
	r, err := store.RecordFromEvent(&wardv1.Event{Id: uuid.Must(uuid.NewV7()).String(), AgentId: agent, Seq: seq,
		Time: timestamppb.New(at), Payload: &wardv1.Event_Health{Health: &wardv1.Health{}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.InsertEvents(context.Background(), agent, []store.Record{r}, at); err != nil {
		t.Fatal(err)
	}
}

func TestSilentAndBack(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	if err := st.SetOutboxRoutes(ctx, []store.OutboxRoute{{Sink: "siem", Kinds: []string{store.KindFleet}}}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().Add(-2 * time.Hour)
	enrol(t, st, "quiet", "ws-quiet", t0)
	enrol(t, st, "busy", "ws-busy", t0)
	enrol(t, st, "never", "ws-never", t0)
	enrol(t, st, "revoked", "ws-revoked", t0)
	heartbeat(t, st, "quiet", 1, t0.Add(time.Minute))
	heartbeat(t, st, "revoked", 1, t0.Add(time.Minute))
	if err := st.RevokeAgent(ctx, "revoked", t0.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}

	m, err := New(st, Config{SilentAfter: 15 * time.Minute}, quiet(), nil)
	if err != nil {
		t.Fatal(err)
	}
	now := t0.Add(time.Hour)
	m.now = func() time.Time { return now }
	m.started = t0 // the monitor has been up long enough to judge
	heartbeat(t, st, "busy", 1, now.Add(-time.Minute))

	res, err := m.Check(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Raised) != 1 || res.Silent != 1 || res.Active != 1 || res.NeverSeen != 1 || res.Revoked != 1 {
		t.Fatalf("first check: %+v", res)
	}
	ev := res.Raised[0]
	fa := ev.GetFleet()
	if ev.GetAgentId() != "quiet" || ev.GetSeq() != 0 || fa.GetKind() != wardv1.FleetAlert_KIND_AGENT_SILENT ||
		fa.GetHostname() != "ws-quiet" || fa.GetSilentForSeconds() != 59*60 || !fa.GetLastSeen().AsTime().Equal(t0.Add(time.Minute)) ||
		ev.GetHost().GetMachineId() != "m-quiet" {
		t.Fatalf("silent alert: %v", ev)
	}
	if got := testutil.ToFloat64(m.metrics.silent); got != 1 {
		t.Fatalf("silent gauge %v", got)
	}
	// Idempotent: the open alert is not raised again.
	now = now.Add(10 * time.Minute)
	if res, err := m.Check(ctx); err != nil || len(res.Raised) != 0 || res.Silent != 1 {
		t.Fatalf("second check: %+v %v", res, err)
	}
	a, _ := st.Agent(ctx, "quiet")
	if a.SilentSince == nil {
		t.Fatal("agent row does not show the silence")
	}

	// The agent comes back.
	heartbeat(t, st, "quiet", 2, now)
	now = now.Add(time.Minute)
	res, err = m.Check(ctx)
	if err != nil || len(res.Raised) != 1 || res.Silent != 0 {
		t.Fatalf("back check: %+v %v", res, err)
	}
	back := res.Raised[0].GetFleet()
	if back.GetKind() != wardv1.FleetAlert_KIND_AGENT_BACK || back.GetSilentForSeconds() != uint64((69*time.Minute)/time.Second) {
		t.Fatalf("back alert: %v", back)
	}
	if a, _ := st.Agent(ctx, "quiet"); a.SilentSince != nil {
		t.Fatal("silence not cleared")
	}

	// Both alerts are events, queued for the sink, readable as the sinks read them.
	items, err := st.ClaimOutbox(ctx, "siem", time.Now().Add(time.Hour), 10, 0, time.Minute)
	if err != nil || len(items) != 2 {
		t.Fatalf("outbox: %d %v", len(items), err)
	}
	for i, want := range []wardv1.FleetAlert_Kind{wardv1.FleetAlert_KIND_AGENT_SILENT, wardv1.FleetAlert_KIND_AGENT_BACK} {
		e, err := items[i].Event()
		if err != nil || e.GetFleet().GetKind() != want || items[i].Kind != store.KindFleet || items[i].AgentID != "quiet" {
			t.Fatalf("item %d: %v %v", i, e, err)
		}
	}
	evs, err := st.ListEvents(ctx, store.Filter{Kind: store.KindFleet})
	if err != nil || len(evs) != 2 || evs[0].Severity != wardv1.Severity_SEVERITY_MEDIUM {
		t.Fatalf("stored alerts: %d %v", len(evs), err)
	}
}

// TestGraceAfterStart: a collector that was itself down has heard from nobody; agents are
// not reported silent until the monitor has run for silent_after.
func TestGraceAfterStart(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	t0 := time.Now().Add(-3 * time.Hour)
	enrol(t, st, "a", "ws-a", t0)
	heartbeat(t, st, "a", 1, t0)
	m, err := New(st, Config{SilentAfter: 15 * time.Minute}, quiet(), nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	m.now = func() time.Time { return now }
	if res, _ := m.Check(ctx); len(res.Raised) != 0 {
		t.Fatalf("alert during the start-up grace: %+v", res)
	}
	now = now.Add(16 * time.Minute)
	if res, _ := m.Check(ctx); len(res.Raised) != 1 {
		t.Fatalf("no alert after the grace: %+v", res)
	}
}

// TestTwoMonitorsRaiseOnce: the transition is checked and recorded in one transaction, so
// two monitors (two collector replicas) racing raise a single alert.
func TestTwoMonitorsRaiseOnce(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	t0 := time.Now().Add(-time.Hour)
	enrol(t, st, "a", "ws-a", t0)
	heartbeat(t, st, "a", 1, t0)
	var total int
	done := make(chan int, 2)
	for range 2 {
		m, _ := New(st, Config{SilentAfter: 15 * time.Minute}, quiet(), nil)
		m.started = t0
		go func() {
			res, _ := m.Check(ctx)
			done <- len(res.Raised)
		}()
	}
	total = <-done + <-done
	if total != 1 {
		t.Fatalf("%d alerts raised by two monitors", total)
	}
}

func TestConfig(t *testing.T) {
	if _, err := New(openStore(t), Config{SilentAfter: time.Second}, quiet(), nil); err == nil {
		t.Fatal("1s silent_after accepted")
	}
	m, err := New(openStore(t), Config{}, quiet(), nil)
	if err != nil || m.cfg.SilentAfter != DefaultSilentAfter || m.cfg.CheckInterval != time.Minute {
		t.Fatalf("defaults: %+v %v", m.cfg, err)
	}
}
