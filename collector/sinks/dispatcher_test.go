package sinks

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/collector/sinks/core"
	"github.com/ward-dlp/ward/collector/sinks/internal/sinktest"
	"github.com/ward-dlp/ward/collector/sinks/webhook"
	"github.com/ward-dlp/ward/collector/store"
)

func openStore(t *testing.T, agent string) *store.Store {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "ward.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	hash := []byte("tok-" + agent)
	now := time.Now()
	if err := st.AddToken(ctx, hash, now, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := st.EnrollAgent(ctx, hash, now, store.Agent{ID: agent, Hostname: "ws-12"}, func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	return st
}

func insert(t *testing.T, st *store.Store, agent string, evs ...*wardv1.Event) {
	t.Helper()
	recs := make([]store.Record, 0, len(evs))
	for _, ev := range evs {
		r, err := store.RecordFromEvent(ev)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	if _, err := st.InsertEvents(context.Background(), agent, recs, time.Now()); err != nil {
		t.Fatal(err)
	}
}

func waitUntil(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// hookServer is a TLS webhook receiver that checks signatures and can be told what to answer.
type hookServer struct {
	t      *testing.T
	secret []byte
	mu     sync.Mutex
	seen   map[string]int // finding/file uid → deliveries
	times  []time.Time
	answer []int // status codes to answer next, then 200
}

func (h *hookServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	sig := r.Header.Get("X-Ward-Signature")
	ts, _, _ := strings.Cut(strings.TrimPrefix(sig, "t="), ",")
	sec, _ := strconv.ParseInt(ts, 10, 64)
	if webhook.Sign(h.secret, body, time.Unix(sec, 0)) != sig || time.Since(time.Unix(sec, 0)) > time.Minute {
		h.t.Errorf("bad signature %q", sig)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.times = append(h.times, time.Now())
	if len(h.answer) > 0 {
		code := h.answer[0]
		h.answer = h.answer[1:]
		if code == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "1")
		}
		w.WriteHeader(code)
		return
	}
	var b struct {
		Events []map[string]any `json:"events"`
	}
	if err := json.Unmarshal(body, &b); err != nil {
		h.t.Errorf("body: %v", err)
	}
	for _, e := range b.Events {
		uid, _ := e["metadata"].(map[string]any)["uid"].(string)
		h.seen[uid]++
	}
	w.WriteHeader(http.StatusNoContent)
}

// TestOutageLosesNothing: the webhook receiver is down (connection refused) while events are
// stored; the dispatcher retries with backoff without dead-lettering anything; the receiver
// comes up, answers 429 with Retry-After once (honoured), and the backlog drains completely.
// Then a permanent 400 dead-letters a batch.
func TestOutageLosesNothing(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := openStore(t, "a1")
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	secret := []byte("0123456789abcdef0123456789abcdef")
	if err := os.WriteFile(secretFile, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	hook := &hookServer{t: t, secret: secret, seen: map[string]int{}}
	srv := httptest.NewUnstartedServer(hook)
	srv.Listener.Close()
	port := sinktest.FreePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)

	// The server's certificate exists before it starts listening: write it as the CA.
	srv.StartTLS()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	// Take it down again and serve later on the fixed port.
	tlsCfg := srv.TLS
	srv.Close()

	metrics, err := NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Name: "soc-hook", Type: TypeWebhook, Kinds: []string{store.KindFinding, store.KindFile, store.KindHealth},
		Batch: BatchConfig{MaxEvents: 7, MaxWait: 10 * time.Millisecond},
		Retry: RetryConfig{Initial: 20 * time.Millisecond, Max: 100 * time.Millisecond},
		Webhook: &webhook.Config{URL: "https://" + addr + "/hook", SecretFile: secretFile,
			TLS: core.TLSConfig{CAFile: caFile}, Timeout: 5 * time.Second},
	}
	mgr, err := Start(ctx, st, []Config{cfg}, Options{Version: "test", Metrics: metrics,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}

	var want []string
	var evs []*wardv1.Event
	for seq := uint64(1); seq <= 40; seq++ {
		var ev *wardv1.Event
		switch seq % 4 {
		case 0:
			ev = sinktest.Health("a1", seq)
		case 1:
			ev = sinktest.File("a1", seq)
			want = append(want, ev.GetId())
		default:
			ev = sinktest.Finding("a1", seq, wardv1.Severity_SEVERITY_HIGH)
			want = append(want, ev.GetId())
		}
		evs = append(evs, ev)
	}
	insert(t, st, "a1", evs...)

	retries := func() float64 { return testutil.ToFloat64(metrics.events.WithLabelValues("soc-hook", "retry")) }
	waitUntil(t, "retries during the outage", 20*time.Second, func() bool { return retries() >= 5*7 })
	if d := testutil.ToFloat64(metrics.dead.WithLabelValues("soc-hook")); d != 0 {
		t.Fatalf("dead letters during an outage: %v", d)
	}
	if depth := testutil.ToFloat64(metrics.depth.WithLabelValues("soc-hook")); depth != 40 {
		t.Fatalf("queue depth during outage %v, want 40", depth)
	}
	if age := testutil.ToFloat64(metrics.oldest.WithLabelValues("soc-hook")); age <= 0 {
		t.Fatalf("oldest age %v during outage", age)
	}

	// Receiver comes up: first answer 429 Retry-After: 1.
	hook.answer = []int{http.StatusTooManyRequests}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	live := &http.Server{Handler: hook, TLSConfig: tlsCfg}
	go func() { _ = live.ServeTLS(lis, "", "") }()
	defer live.Close()

	delivered := func() float64 { return testutil.ToFloat64(metrics.events.WithLabelValues("soc-hook", "delivered")) }
	waitUntil(t, "the backlog to drain", 30*time.Second, func() bool {
		return testutil.ToFloat64(metrics.depth.WithLabelValues("soc-hook")) == 0 && delivered() == 30
	})
	hook.mu.Lock()
	for _, id := range want {
		if hook.seen[id] == 0 {
			t.Errorf("event %s never arrived", id)
		}
	}
	if len(hook.seen) != len(want) {
		t.Errorf("receiver saw %d distinct events, want %d", len(hook.seen), len(want))
	}
	if len(hook.times) < 2 || hook.times[1].Sub(hook.times[0]) < 900*time.Millisecond {
		t.Errorf("Retry-After: 1 not honoured: requests at %v", hook.times)
	}
	hook.mu.Unlock()
	if s := testutil.ToFloat64(metrics.events.WithLabelValues("soc-hook", "skipped")); s != 10 {
		t.Errorf("skipped %v health events, want 10 (no OCSF class)", s)
	}

	// Permanent refusal: dead-lettered with a count, not retried.
	hook.mu.Lock()
	hook.answer = []int{http.StatusBadRequest}
	hook.mu.Unlock()
	insert(t, st, "a1", sinktest.Finding("a1", 41, wardv1.Severity_SEVERITY_LOW), sinktest.Finding("a1", 42, wardv1.Severity_SEVERITY_LOW))
	waitUntil(t, "dead letters", 10*time.Second, func() bool {
		return testutil.ToFloat64(metrics.dead.WithLabelValues("soc-hook")) == 2 &&
			testutil.ToFloat64(metrics.depth.WithLabelValues("soc-hook")) == 0
	})
	dl, err := st.ListDeadLetters(ctx, "soc-hook", 10)
	if err != nil || len(dl) != 2 || !strings.Contains(dl[0].Reason, "HTTP 400") {
		t.Fatalf("dead letters %+v %v", dl, err)
	}
	if st, err := st.OutboxStats(ctx, "soc-hook", time.Now()); err != nil || st.Depth != 0 || st.DeadLetters != 2 {
		t.Fatalf("outbox after dead-lettering: %+v %v", st, err)
	}
	cancel()
	if err := mgr.Wait(); err != nil {
		t.Fatal(err)
	}
}

func TestBackoffFullJitter(t *testing.T) {
	r := RetryConfig{Initial: 100 * time.Millisecond, Max: time.Second}
	for attempt := 1; attempt <= 10; attempt++ {
		ceil := min(r.Initial<<(attempt-1), r.Max)
		var lo, hi time.Duration = time.Hour, 0
		for range 200 {
			d := backoff(r, attempt)
			if d <= 0 || d > ceil {
				t.Fatalf("attempt %d: %v outside (0, %v]", attempt, d, ceil)
			}
			lo, hi = min(lo, d), max(hi, d)
		}
		if hi-lo < ceil/4 {
			t.Errorf("attempt %d: no jitter (%v..%v)", attempt, lo, hi)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	hook := &webhook.Config{URL: "https://siem.example/hook", SecretFile: "/etc/ward/hook.secret"}
	good := Config{Name: "a", Type: TypeWebhook, Webhook: hook}
	if err := ValidateAll([]Config{good}); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		cfgs []Config
		want string
	}{
		"dup":      {[]Config{good, good}, "used twice"},
		"name":     {[]Config{{Name: "A B", Type: TypeWebhook, Webhook: hook}}, "sink name"},
		"type":     {[]Config{{Name: "a", Type: "splunk"}}, "type \"splunk\""},
		"block":    {[]Config{{Name: "a", Type: TypeHEC, Webhook: hook}}, "webhook block is set"},
		"missing":  {[]Config{{Name: "a", Type: TypeWebhook}}, "needs a webhook: block"},
		"kind":     {[]Config{{Name: "a", Type: TypeWebhook, Webhook: hook, Kinds: []string{"net"}}}, "unknown kind"},
		"severity": {[]Config{{Name: "a", Type: TypeWebhook, Webhook: hook, MinSeverity: "urgent"}}, "min_severity"},
		"http":     {[]Config{{Name: "a", Type: TypeWebhook, Webhook: &webhook.Config{URL: "http://siem.example/", SecretFile: "x"}}}, "plain http"},
		"retry":    {[]Config{{Name: "a", Type: TypeWebhook, Webhook: hook, Retry: RetryConfig{Initial: time.Hour, Max: time.Second}}}, "retry"},
	} {
		err := ValidateAll(tc.cfgs)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want %q", name, err, tc.want)
		}
	}
}
