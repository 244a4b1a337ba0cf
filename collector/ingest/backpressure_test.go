package ingest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ward-dlp/ward/agent/ship"
	"github.com/ward-dlp/ward/agent/spool"
	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/collector/store"
)

// callLog records, per shipper, when each Export started and what RetryInfo delay (if
// any) its answer carried, to check the agent waited at least that long.
type callLog struct {
	mu    sync.Mutex
	calls []call
}

type call struct {
	at    time.Time
	code  codes.Code
	delay time.Duration
}

func (l *callLog) interceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	at := time.Now()
	err := invoker(ctx, method, req, reply, cc, opts...)
	if method != wardv1.AgentService_Export_FullMethodName {
		return err
	}
	c := call{at: at, code: status.Code(err)}
	if st, ok := status.FromError(err); ok {
		for _, d := range st.Details() {
			if ri, ok := d.(*errdetails.RetryInfo); ok {
				c.delay = ri.GetRetryDelay().AsDuration()
			}
		}
	}
	l.mu.Lock()
	l.calls = append(l.calls, c)
	l.mu.Unlock()
	return err
}

// shipAgent enrols an agent, spools n events for it and runs a real shipper against h.
func shipAgent(t *testing.T, ctx context.Context, h *harness, n, batch int, wg *sync.WaitGroup) (string, *ship.Shipper, *spool.Spool, *callLog) {
	t.Helper()
	id, cert := h.enrolAgent(t)
	sp, err := spool.Open(t.TempDir(), spool.Options{Logger: quietLog(), SyncInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sp.Close() })
	for i := range n {
		ev := &wardv1.Event{Id: uuid.Must(uuid.NewV7()).String(), AgentId: id, Time: timestamppb.Now(),
			Host: &wardv1.Host{Hostname: "intake-01"},
			Payload: &wardv1.Event_File{File: &wardv1.FileActivity{Kind: wardv1.FileActivity_KIND_WRITE_CLOSED,
				Path: fmt.Sprintf("/srv/notes/%d.txt", i), BytesWritten: uint64(i)}}}
		if _, err := sp.Append(ev); err != nil {
			t.Fatal(err)
		}
	}
	log := &callLog{}
	creds := credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS13, RootCAs: h.ca, ServerName: "localhost",
		Certificates: []tls.Certificate{*cert}})
	sh, err := ship.New(ship.Config{Spool: sp, Addr: h.addr, Creds: creds, BatchEvents: batch,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, Logger: quietLog(),
		DialOptions: []grpc.DialOption{grpc.WithUnaryInterceptor(log.interceptor)}})
	if err != nil {
		t.Fatal(err)
	}
	wg.Go(func() {
		if err := sh.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("shipper: %v", err)
		}
	})
	return id, sh, sp, log
}

// storedExactlyOnce checks that the store holds seqs 1..n of agent, each once.
func storedExactlyOnce(t *testing.T, st *store.Store, agent string, n int) {
	t.Helper()
	seen := map[uint64]int{}
	var after int64
	for {
		evs, err := st.ListEvents(context.Background(), store.Filter{AgentID: agent, AfterRowID: after, Limit: store.MaxLimit})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			break
		}
		for _, e := range evs {
			seen[e.Seq]++
			after = e.RowID
		}
	}
	if len(seen) != n {
		t.Fatalf("agent %s: %d distinct seqs stored, want %d", agent, len(seen), n)
	}
	for seq := uint64(1); seq <= uint64(n); seq++ {
		if seen[seq] != 1 {
			t.Fatalf("agent %s: seq %d stored %d times", agent, seq, seen[seq])
		}
	}
}

func waitUntil(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// TestBackpressureWithRealShippers: a collector whose in-flight budget holds barely one
// batch, and several real agent shippers exporting at once. The collector pushes back
// with RESOURCE_EXHAUSTED + RetryInfo, the shippers wait at least the given delay and keep
// the batches spooled, and in the end every event is stored exactly once.
func TestBackpressureWithRealShippers(t *testing.T) {
	h := startServer(t, Limits{MaxInflightEvents: 50, RetryBase: 40 * time.Millisecond, RetryMax: 400 * time.Millisecond,
		AgentEventsPerSecond: -1})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const agents, perAgent, batch = 6, 1500, 40
	var wg sync.WaitGroup
	type shipped struct {
		id  string
		sh  *ship.Shipper
		sp  *spool.Spool
		log *callLog
	}
	var all []shipped
	for range agents {
		id, sh, sp, log := shipAgent(t, ctx, h, perAgent, batch, &wg)
		all = append(all, shipped{id, sh, sp, log})
	}
	waitUntil(t, ctx, "every spool to drain", func() bool {
		for _, a := range all {
			if st := a.sp.Stats(); st.FindingsEvents+st.TelemetryEvents != 0 {
				return false
			}
		}
		return true
	})
	cancel()
	wg.Wait()

	m := h.svc.metrics
	pushed := testutil.ToFloat64(m.rejected.WithLabelValues(reasonInflightEvents))
	if pushed == 0 {
		t.Fatal("the collector never pushed back although its budget holds one batch")
	}
	var throttled uint64
	for _, a := range all {
		storedExactlyOnce(t, h.store, a.id, perAgent)
		throttled += a.sh.Stats().Throttled
		// Every RESOURCE_EXHAUSTED with RetryInfo was followed by a wait of at least the
		// delay before this shipper's next Export.
		a.log.mu.Lock()
		for i, c := range a.log.calls {
			if c.code != codes.ResourceExhausted {
				continue
			}
			if c.delay <= 0 {
				t.Errorf("RESOURCE_EXHAUSTED without RetryInfo")
				continue
			}
			if i+1 < len(a.log.calls) {
				if gap := a.log.calls[i+1].at.Sub(c.at); gap < c.delay {
					t.Errorf("shipper retried after %v, before the %v the collector asked for", gap, c.delay)
				}
			}
		}
		a.log.mu.Unlock()
	}
	if throttled == 0 {
		t.Fatal("no shipper counted a throttled export")
	}
	if ev, b := h.svc.adm.inflight(); ev != 0 || b != 0 {
		t.Fatalf("in-flight budget not released: %d events, %d bytes", ev, b)
	}
	t.Logf("pushed back %v batches; stored %v events, %v duplicates", pushed,
		testutil.ToFloat64(m.events.WithLabelValues(outcomeStored)), testutil.ToFloat64(m.events.WithLabelValues(outcomeDuplicate)))
}

// TestPerAgentRateLimit: an agent over its token bucket is pushed back with the bucket's
// own delay, nothing is dropped, and another agent is not slowed by it.
func TestPerAgentRateLimit(t *testing.T) {
	h := startServer(t, Limits{AgentEventsPerSecond: 400, AgentBurst: 100, MaxBatchEvents: 100})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	const n = 1000
	start := time.Now()
	id, sh, sp, log := shipAgent(t, ctx, h, n, 100, &wg)
	waitUntil(t, ctx, "spool to drain", func() bool {
		st := sp.Stats()
		return st.FindingsEvents+st.TelemetryEvents == 0
	})
	elapsed := time.Since(start)
	cancel()
	wg.Wait()
	storedExactlyOnce(t, h.store, id, n)
	// 1000 events at 400/s with a burst of 100 cannot be accepted in under (1000-100)/400 s.
	if min := 2 * time.Second; elapsed < min {
		t.Fatalf("1000 events accepted in %v; the 400/s limit allows no less than %v", elapsed, min)
	}
	if got := testutil.ToFloat64(h.svc.metrics.rejected.WithLabelValues(reasonRateLimit)); got == 0 {
		t.Fatal("no rate_limit refusals counted")
	}
	if sh.Stats().Throttled == 0 {
		t.Fatal("shipper saw no throttling")
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	for _, c := range log.calls {
		if c.code == codes.ResourceExhausted && (c.delay <= 0 || c.delay > time.Second) {
			t.Fatalf("rate-limit delay %v: want the bucket's refill time (≤ 250 ms for 100 events at 400/s)", c.delay)
		}
	}

	// A second agent has its own bucket: its first batch goes straight through.
	other, cert := h.enrolAgent(t)
	client, _ := h.dial(t, cert)
	if _, err := client.Export(context.Background(), batch(other, 1, 2, 3)); err != nil {
		t.Fatalf("another agent was throttled: %v", err)
	}
}

// TestThrottledAgentsStayVisible: a pushed-back agent's contact reaches last_seen, so the
// fleet monitor does not take throttling for silence.
func TestThrottledAgentsStayVisible(t *testing.T) {
	h := startServer(t, Limits{AgentEventsPerSecond: 1, AgentBurst: 5, MaxBatchEvents: 5})
	id, cert := h.enrolAgent(t)
	client, _ := h.dial(t, cert)
	ctx := context.Background()
	if _, err := client.Export(ctx, batch(id, 1, 2, 3, 4, 5)); err != nil {
		t.Fatal(err)
	}
	a, _ := h.store.Agent(ctx, id)
	first := *a.LastSeen
	time.Sleep(20 * time.Millisecond)
	_, err := client.Export(ctx, batch(id, 6, 7, 8, 9, 10))
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("second batch: %v, want RESOURCE_EXHAUSTED", err)
	}
	h.svc.flushContacts(ctx)
	a, _ = h.store.Agent(ctx, id)
	if !a.LastSeen.After(first) {
		t.Fatalf("last_seen %v not advanced by a throttled call (was %v)", a.LastSeen, first)
	}
}

func TestRetryDelayGrowsWithPressure(t *testing.T) {
	a := &admission{retryBase: 100 * time.Millisecond, retryMax: 10 * time.Second}
	now := time.Now()
	d1 := a.delay(1.0, now)
	d2 := a.delay(1.0, now.Add(time.Millisecond)) // same episode, second refusal
	d3 := a.delay(3.0, now.Add(2*time.Millisecond))
	if !(d1 < d2 && d2 < d3) {
		t.Fatalf("delays do not grow: %v %v %v", d1, d2, d3)
	}
	if d1 != 100*time.Millisecond {
		t.Fatalf("first refusal at the limit: %v, want the base delay", d1)
	}
	for i := range 1000 {
		a.delay(50, now.Add(time.Duration(i)*time.Millisecond))
	}
	if d := a.delay(50, now.Add(time.Second)); d != 10*time.Second {
		t.Fatalf("delay not capped: %v", d)
	}
	// A new episode after a quiet gap starts over.
	if d := a.delay(1, now.Add(time.Minute)); d != 100*time.Millisecond {
		t.Fatalf("new episode: %v", d)
	}
}

func TestCommitLatencyPushesBackButProbes(t *testing.T) {
	a := &admission{maxEvents: 1000, maxBytes: 1 << 20, latencyThreshold: time.Second, retryBase: time.Second, retryMax: time.Minute}
	a.observeCommit(3 * time.Second)
	if ok, _, _ := a.acquire(10, 100); !ok {
		t.Fatal("with nothing in flight a probe batch must be admitted")
	}
	if ok, reason, ratio := a.acquire(10, 100); ok || reason != reasonCommitLatency || ratio < 2.9 {
		t.Fatalf("second batch under slow commits: ok=%v reason=%s ratio=%v", ok, reason, ratio)
	}
	a.release(10, 100)
	for range 30 {
		a.observeCommit(10 * time.Millisecond)
	}
	if ok, _, _ := a.acquire(10, 100); !ok {
		t.Fatal("fast commits again but still pushing back")
	}
	a.outboxDepth.Store(500)
	a.outboxThreshold = 100
	if reason, _, over := a.overloaded(); !over || reason != reasonOutboxDepth {
		t.Fatalf("outbox over threshold: %s %v", reason, over)
	}
}

// TestRevokedAgentContactAlert: a revoked agent calling in is refused and raises one
// AGENT_REVOKED_CONTACT alert, not one per retry.
func TestRevokedAgentContactAlert(t *testing.T) {
	h := startServer(t, Limits{})
	ctx := context.Background()
	id, cert := h.enrolAgent(t)
	if err := h.store.RevokeAgent(ctx, id, time.Now()); err != nil {
		t.Fatal(err)
	}
	client, _ := h.dial(t, cert)
	for range 3 {
		if _, err := client.Export(ctx, batch(id, 1)); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("revoked agent: %v", err)
		}
	}
	evs, err := h.store.ListEvents(ctx, store.Filter{Kind: store.KindFleet})
	if err != nil || len(evs) != 1 {
		t.Fatalf("%d alerts, %v; want 1", len(evs), err)
	}
	ev, _ := evs[0].Event()
	if ev.GetFleet().GetKind() != wardv1.FleetAlert_KIND_AGENT_REVOKED_CONTACT || ev.GetAgentId() != id || ev.GetHost().GetHostname() != "intake-01" {
		t.Fatalf("alert %v", ev)
	}
}
