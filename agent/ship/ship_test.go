package ship_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ward-dlp/ward/agent/identity"
	"github.com/ward-dlp/ward/agent/ship"
	"github.com/ward-dlp/ward/agent/spool"
	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// logBuf is a concurrency-safe log sink for asserting on messages.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func enroll(t *testing.T, ts *testServer, opts ...identity.Option) (*identity.Identity, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "state")
	ts.mu.Lock()
	ts.tokens["tok-"+t.Name()] = true
	ts.mu.Unlock()
	id, err := identity.Enroll(context.Background(), dir, identity.EnrollConfig{
		Collector: ts.addr, Token: "tok-" + t.Name(), CAPin: identity.CAPin(ts.ca.cert), Hostname: "clinic-ws-1",
	}, append([]identity.Option{identity.WithLogger(quiet())}, opts...)...)
	if err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	return id, dir
}

func event(agent string, i int) *wardv1.Event {
	ev := &wardv1.Event{Id: "e", AgentId: agent, Time: timestamppb.Now()}
	if i%7 == 0 {
		ev.Payload = &wardv1.Event_Finding{Finding: &wardv1.Finding{
			DataClass: wardv1.DataClass_DATA_CLASS_PART2, Confidence: 90,
			Matches: []*wardv1.Match{{Detector: "phi.ssn", MaskedSamples: []string{"***-**-6789"}}},
		}}
	} else {
		ev.Payload = &wardv1.Event_File{File: &wardv1.FileActivity{Path: "/srv/notes/n.txt", BytesWritten: uint64(i)}}
	}
	return ev
}

func TestEnrollCAPinAndFile(t *testing.T) {
	ts := newTestServer(t)

	// Not enrolled yet: a clear, actionable error.
	empty := t.TempDir()
	if _, err := identity.Load(empty); !errors.Is(err, identity.ErrNotEnrolled) ||
		!strings.Contains(err.Error(), "ward-agent enroll --collector HOST:PORT --token TOKEN") {
		t.Fatalf("Load of empty dir: %v", err)
	}

	// Wrong pin: refused before the token is spent.
	dir := filepath.Join(t.TempDir(), "state")
	wrong := "sha256:" + strings.Repeat("ab", 32)
	_, err := identity.Enroll(context.Background(), dir, identity.EnrollConfig{
		Collector: ts.addr, Token: "good-token", CAPin: wrong, Timeout: 5 * time.Second,
	}, identity.WithLogger(quiet()))
	if err == nil || !strings.Contains(err.Error(), "pin") {
		t.Fatalf("wrong pin: err = %v, want a pin error", err)
	}
	t.Logf("wrong pin error: %v", err)
	ts.mu.Lock()
	spent := !ts.tokens["good-token"]
	ts.mu.Unlock()
	if spent {
		t.Fatal("token was sent to a collector that failed the pin check")
	}
	if _, err := identity.Load(dir); !errors.Is(err, identity.ErrNotEnrolled) {
		t.Fatalf("failed enrolment left state behind: %v", err)
	}

	// Right pin.
	id, err := identity.Enroll(context.Background(), dir, identity.EnrollConfig{
		Collector: ts.addr, Token: "good-token", CAPin: identity.CAPin(ts.ca.cert),
	}, identity.WithLogger(quiet()))
	if err != nil {
		t.Fatalf("Enroll with right pin: %v", err)
	}
	if id.Certificate().Subject.CommonName != id.AgentID() || id.ServerName() != "127.0.0.1" {
		t.Fatalf("identity: cn=%s agent=%s sn=%s", id.Certificate().Subject.CommonName, id.AgentID(), id.ServerName())
	}
	fi, _ := os.Stat(dir)
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode %v", fi.Mode().Perm())
	}
	des, _ := os.ReadDir(dir)
	for _, de := range des {
		fi, _ := de.Info()
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v", de.Name(), fi.Mode().Perm())
		}
	}
	loaded, err := identity.Load(dir, identity.WithLogger(quiet()))
	if err != nil {
		t.Fatalf("Load after enrol: %v", err)
	}
	if loaded.AgentID() != id.AgentID() || !loaded.Certificate().Equal(id.Certificate()) || string(loaded.FingerprintKey()) != string(id.FingerprintKey()) {
		t.Fatal("loaded identity differs from enrolled one")
	}

	// CA file (as `make run` does), and a token can be used once only.
	ts.mu.Lock()
	ts.tokens["second"] = true
	ts.mu.Unlock()
	if _, err := identity.Enroll(context.Background(), filepath.Join(t.TempDir(), "s2"), identity.EnrollConfig{
		Collector: ts.addr, Token: "second", CAFile: ts.ca.pemPath,
	}, identity.WithLogger(quiet())); err != nil {
		t.Fatalf("Enroll with CA file: %v", err)
	}
	if _, err := identity.Enroll(context.Background(), filepath.Join(t.TempDir(), "s3"), identity.EnrollConfig{
		Collector: ts.addr, Token: "second", CAFile: ts.ca.pemPath,
	}, identity.WithLogger(quiet())); err == nil {
		t.Fatal("reused token accepted")
	}
	// A CA file that is not the collector's CA fails verification.
	other := newTestCA(t)
	ts.mu.Lock()
	ts.tokens["third"] = true
	ts.mu.Unlock()
	if _, err := identity.Enroll(context.Background(), filepath.Join(t.TempDir(), "s4"), identity.EnrollConfig{
		Collector: ts.addr, Token: "third", CAFile: other.pemPath, Timeout: 5 * time.Second,
	}, identity.WithLogger(quiet())); err == nil {
		t.Fatal("collector accepted with the wrong CA file")
	}
}

// TestShipThroughCollectorRestart ships 10,000 events while the collector is stopped and
// restarted mid-stream: all arrive exactly once after dedupe, and the spool ends empty.
func TestShipThroughCollectorRestart(t *testing.T) {
	ts := newTestServer(t)
	id, _ := enroll(t, ts)
	sp, err := spool.Open(t.TempDir(), spool.Options{Logger: quiet(), SegmentBytes: 256 << 10, SyncInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	sh, err := ship.New(ship.Config{Spool: sp, Identity: id, BatchEvents: 250, MaxBackoff: time.Second, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- sh.Run(ctx) }()

	const total = 10000
	agent := id.AgentID()
	for i := range total {
		if _, err := sp.Append(event(agent, i)); err != nil {
			t.Fatal(err)
		}
		if i == 3000 {
			// Let some of it through, then take the collector down mid-stream.
			waitFor(t, ctx, func() bool { return ts.receivedCount(agent) > 1000 })
			ts.stop()
			t.Logf("collector stopped at %d received", ts.receivedCount(agent))
		}
		if i == 7000 {
			time.Sleep(300 * time.Millisecond)
			if st := sh.Stats(); st.Connected {
				t.Error("shipper claims to be connected while the collector is down")
			}
			ts.start()
			t.Log("collector restarted")
		}
	}
	waitFor(t, ctx, func() bool {
		st := sp.Stats()
		return ts.receivedCount(agent) == total && st.FindingsEvents+st.TelemetryEvents == 0
	})
	cancel()
	if err := <-runErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v", err)
	}
	ts.mu.Lock()
	for seq := uint64(1); seq <= total; seq++ {
		if !ts.received[agent][seq] {
			t.Fatalf("seq %d never received", seq)
		}
	}
	dups := ts.deliveries - total
	ts.mu.Unlock()
	st := sh.Stats()
	t.Logf("shipper stats: %+v; duplicate deliveries deduped by the server: %d", st, dups)
	if st.Retries == 0 {
		t.Error("no retries counted across a collector outage")
	}
	if ss := sp.Stats(); ss.Segments != 0 || ss.InFlight != 0 {
		t.Fatalf("spool not empty: %+v", ss)
	}
}

func waitFor(t *testing.T, ctx context.Context, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatal("timed out waiting")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// TestUnauthenticatedKeepsSpool: a collector that refuses the certificate must not cost
// a single event, and the operator is told once per episode to re-enrol.
func TestUnauthenticatedKeepsSpool(t *testing.T) {
	ts := newTestServer(t)
	id, _ := enroll(t, ts)
	sp, err := spool.Open(t.TempDir(), spool.Options{Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	for i := range 100 {
		if _, err := sp.Append(event(id.AgentID(), i)); err != nil {
			t.Fatal(err)
		}
	}
	_ = sp.Sync()
	ts.setUnauth(true)
	var logs logBuf
	sh, _ := ship.New(ship.Config{Spool: sp, Identity: id, MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- sh.Run(ctx) }()
	waitFor(t, ctx, func() bool { return sh.Stats().Retries >= 10 })

	st := sp.Stats()
	if st.FindingsEvents+st.TelemetryEvents != 100 {
		t.Fatalf("spool lost events while unauthenticated: %+v", st)
	}
	if n := strings.Count(logs.String(), "re-enrol"); n != 1 {
		t.Fatalf("re-enrol message logged %d times, want once per episode:\n%s", n, logs.String())
	}
	if s := sh.Stats(); s.Connected || !strings.Contains(s.LastError, "Unauthenticated") {
		t.Fatalf("shipper stats %+v", s)
	}
	// The collector takes us back: everything is delivered.
	ts.setUnauth(false)
	waitFor(t, ctx, func() bool { return ts.receivedCount(id.AgentID()) == 100 && sp.Stats().Segments == 0 })
	cancel()
	<-done
}

// TestResourceExhaustedHonoursRetryInfo: the throttle delay the collector asks for is kept.
func TestResourceExhaustedHonoursRetryInfo(t *testing.T) {
	ts := newTestServer(t)
	id, _ := enroll(t, ts)
	sp, _ := spool.Open(t.TempDir(), spool.Options{Logger: quiet()})
	defer sp.Close()
	if _, err := sp.Append(event(id.AgentID(), 0)); err != nil {
		t.Fatal(err)
	}
	ts.throttle(1, 700*time.Millisecond)
	sh, _ := ship.New(ship.Config{Spool: sp, Identity: id, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, Logger: quiet()})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	go func() { _ = sh.Run(ctx) }()
	waitFor(t, ctx, func() bool { return ts.receivedCount(id.AgentID()) == 1 })
	if el := time.Since(start); el < 700*time.Millisecond {
		t.Fatalf("delivered after %v: RetryInfo delay of 700ms not honoured", el)
	}
}

// TestRenewalSwapsCertificate: renewal writes a new key and certificate, Load sees them,
// and new connections present the new certificate without restarting anything.
func TestRenewalSwapsCertificate(t *testing.T) {
	ts := newTestServer(t)
	// Pretend two thirds of the lifetime have passed.
	clock := time.Now().Add(50 * time.Minute)
	id, dir := enroll(t, ts, identity.WithClock(func() time.Time { return clock }))
	old := id.Certificate()
	if !id.RenewalDue() {
		t.Fatalf("renewal not due at %v (renew at %v)", clock, id.RenewAt())
	}

	conn, err := grpc.NewClient(ts.addr, grpc.WithTransportCredentials(id.TransportCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := wardv1.NewAgentServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := id.Renew(ctx, client); err != nil {
		t.Fatalf("Renew: %v", err)
	}
	renewed := id.Certificate()
	if renewed.SerialNumber.Cmp(old.SerialNumber) == 0 || renewed.Subject.CommonName != id.AgentID() {
		t.Fatal("certificate not swapped")
	}
	if renewed.PublicKey.(*ecdsa.PublicKey).Equal(old.PublicKey) {
		t.Fatal("renewal reused the old key")
	}
	loaded, err := identity.Load(dir, identity.WithLogger(quiet()))
	if err != nil || !loaded.Certificate().Equal(renewed) {
		t.Fatalf("renewed certificate not persisted: %v", err)
	}

	// A new connection (e.g. after the collector restarted) presents the new certificate.
	ts.stop()
	ts.start()
	conn2, err := grpc.NewClient(ts.addr, grpc.WithTransportCredentials(id.TransportCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	if _, err := wardv1.NewAgentServiceClient(conn2).Export(ctx, &wardv1.ExportRequest{Events: []*wardv1.Event{event(id.AgentID(), 1)}}); err != nil {
		t.Fatalf("Export with renewed cert: %v", err)
	}
	ts.mu.Lock()
	last := ts.serials[len(ts.serials)-1]
	ts.mu.Unlock()
	if last.Cmp(renewed.SerialNumber) != 0 {
		t.Fatalf("collector saw certificate serial %v, want renewed %v", last, renewed.SerialNumber)
	}

	// The shipper's renewal loop renews by itself when due.
	sp, _ := spool.Open(t.TempDir(), spool.Options{Logger: quiet()})
	defer sp.Close()
	clock = time.Now().Add(55 * time.Minute)
	sh, _ := ship.New(ship.Config{Spool: sp, Identity: id, Logger: quiet()})
	rctx, rcancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = sh.Run(rctx); close(done) }()
	waitFor(t, ctx, func() bool { return id.Certificate().SerialNumber.Cmp(renewed.SerialNumber) != 0 })
	rcancel()
	<-done
}

// TestFailoverToFallback: the collector the agent uses goes away for good mid-stream; the
// shipper moves to the fallback replica (same CA) and every event arrives, at one or the
// other, without the first one ever coming back.
func TestFailoverToFallback(t *testing.T) {
	primary := newTestServer(t)
	id, _ := enroll(t, primary)
	fallback := &testServer{t: t, ca: primary.ca, tokens: map[string]bool{}, certTTL: time.Hour,
		received: map[string]map[uint64]bool{}}
	fallback.start()
	t.Cleanup(fallback.stop)
	sp, err := spool.Open(t.TempDir(), spool.Options{Logger: quiet(), SyncInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	sh, err := ship.New(ship.Config{Spool: sp, Identity: id, Addr: primary.addr, Fallbacks: []string{fallback.addr},
		BatchEvents: 100, MinBackoff: 20 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, DisableRenewal: true, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	go func() { _ = sh.Run(ctx) }()
	const total = 3000
	agent := id.AgentID()
	for i := range total {
		if _, err := sp.Append(event(agent, i)); err != nil {
			t.Fatal(err)
		}
		if i == 1000 {
			waitFor(t, ctx, func() bool { return primary.receivedCount(agent) > 300 })
			primary.stop()
		}
	}
	waitFor(t, ctx, func() bool {
		st := sp.Stats()
		return st.FindingsEvents+st.TelemetryEvents == 0
	})
	if fallback.receivedCount(agent) == 0 {
		t.Fatal("the fallback collector received nothing")
	}
	primary.mu.Lock()
	fallback.mu.Lock()
	defer primary.mu.Unlock()
	defer fallback.mu.Unlock()
	for seq := uint64(1); seq <= total; seq++ {
		if !primary.received[agent][seq] && !fallback.received[agent][seq] {
			t.Fatalf("seq %d reached neither collector", seq)
		}
	}
	t.Logf("primary %d, fallback %d events", len(primary.received[agent]), len(fallback.received[agent]))
}
