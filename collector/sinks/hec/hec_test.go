package hec

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/collector/sinks/core"
	"github.com/ward-dlp/ward/collector/sinks/internal/sinktest"
	"github.com/ward-dlp/ward/collector/sinks/ocsf"
)

const token = "11111111-2222-3333-4444-555555555555"

// fakeHEC implements the parts of Splunk's HTTP Event Collector the sink relies on, as
// Splunk documents them: token auth, channel requirement with ack, concatenated event
// objects, per-event validation with invalid-event-number, ackIds per channel that become
// true after some polls, and injectable 429/503 answers.
type fakeHEC struct {
	t          *testing.T
	mu         sync.Mutex
	ackEnabled bool
	pollsToAck int // ack polls before an ackId reads true; <0: never
	nextAck    map[string]int64
	pending    map[string]map[int64]int // channel → ackId → polls so far
	indexed    []map[string]any         // events that were acknowledged
	inflight   map[int64][]map[string]any
	inject     []int // statuses to answer next
	requests   int
}

func newFakeHEC(t *testing.T) *fakeHEC {
	return &fakeHEC{t: t, ackEnabled: true, pollsToAck: 1, nextAck: map[string]int64{},
		pending: map[string]map[int64]int{}, inflight: map[int64][]map[string]any{}}
}

func reply(w http.ResponseWriter, code int, body map[string]any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body)
}

func (h *fakeHEC) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if r.Header.Get("Authorization") != "Splunk "+token {
		reply(w, http.StatusUnauthorized, map[string]any{"text": "Invalid token", "code": 4})
		return
	}
	channel := r.Header.Get("X-Splunk-Request-Channel")
	switch r.URL.Path {
	case "/services/collector/event":
		h.requests++
		if len(h.inject) > 0 {
			code := h.inject[0]
			h.inject = h.inject[1:]
			w.Header().Set("Retry-After", "7")
			reply(w, code, map[string]any{"text": "Server is busy", "code": 9})
			return
		}
		if h.ackEnabled && channel == "" {
			reply(w, http.StatusBadRequest, map[string]any{"text": "Data channel is missing", "code": 10})
			return
		}
		dec := json.NewDecoder(r.Body)
		var events []map[string]any
		for n := 0; ; n++ {
			var e map[string]any
			if err := dec.Decode(&e); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				reply(w, http.StatusBadRequest, map[string]any{"text": "Invalid data format", "code": 6, "invalid-event-number": n})
				return
			}
			if _, ok := e["event"]; !ok {
				reply(w, http.StatusBadRequest, map[string]any{"text": "Event field is required", "code": 12, "invalid-event-number": n})
				return
			}
			if ev, ok := e["event"].(map[string]any); ok && ev["reject_me"] != nil {
				reply(w, http.StatusBadRequest, map[string]any{"text": "Event field cannot be blank", "code": 13, "invalid-event-number": n})
				return
			}
			events = append(events, e)
		}
		if len(events) == 0 {
			reply(w, http.StatusBadRequest, map[string]any{"text": "No data", "code": 5})
			return
		}
		if !h.ackEnabled {
			h.indexed = append(h.indexed, events...)
			reply(w, http.StatusOK, map[string]any{"text": "Success", "code": 0})
			return
		}
		id := h.nextAck[channel]
		h.nextAck[channel]++
		if h.pending[channel] == nil {
			h.pending[channel] = map[int64]int{}
		}
		h.pending[channel][id] = 0
		h.inflight[id] = events
		reply(w, http.StatusOK, map[string]any{"text": "Success", "code": 0, "ackId": id})
	case "/services/collector/ack":
		if r.URL.Query().Get("channel") != channel || channel == "" {
			reply(w, http.StatusBadRequest, map[string]any{"text": "Data channel is missing", "code": 10})
			return
		}
		var req struct {
			Acks []int64 `json:"acks"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			reply(w, http.StatusBadRequest, map[string]any{"text": "Invalid data format", "code": 6})
			return
		}
		out := map[string]bool{}
		for _, id := range req.Acks {
			polls, ok := h.pending[channel][id]
			done := ok && h.pollsToAck >= 0 && polls >= h.pollsToAck
			if ok {
				h.pending[channel][id] = polls + 1
			}
			if done {
				h.indexed = append(h.indexed, h.inflight[id]...)
				delete(h.pending[channel], id)
			}
			out[strconv.FormatInt(id, 10)] = done
		}
		reply(w, http.StatusOK, map[string]any{"acks": out})
	default:
		reply(w, http.StatusNotFound, map[string]any{"text": "not found", "code": 404})
	}
}

func newSink(t *testing.T, srv *httptest.Server, mod func(*Config)) *Sink {
	t.Helper()
	dir := t.TempDir()
	tf := filepath.Join(dir, "token")
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(tf, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Config{URL: srv.URL, TokenFile: tf, Index: "ward", TLS: core.TLSConfig{CAFile: ca},
		AckPollInterval: 5 * time.Millisecond, AckTimeout: 2 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg, ocsf.Options{ProductVersion: "0.1"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestDeliverWithIndexerAck(t *testing.T) {
	h := newFakeHEC(t)
	h.pollsToAck = 3
	srv := httptest.NewTLSServer(h)
	defer srv.Close()
	s := newSink(t, srv, nil)
	evs := []*wardv1.Event{sinktest.Finding("a1", 1, wardv1.Severity_SEVERITY_HIGH), sinktest.File("a1", 2), sinktest.Health("a1", 3)}
	err := s.Deliver(context.Background(), sinktest.Items(evs...))
	var be *core.BatchError
	if !errors.As(err, &be) || len(be.Failed) != 1 || !errors.Is(be.Failed[2], core.ErrSkip) {
		t.Fatalf("want only the health event skipped (no OCSF class), got %v", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.indexed) != 2 {
		t.Fatalf("indexed %d events, want 2", len(h.indexed))
	}
	e := h.indexed[0]
	if e["sourcetype"] != "ward:finding" || e["index"] != "ward" || e["host"] != "ws-12" ||
		e["time"] != float64(evs[0].GetTime().AsTime().UnixMilli())/1000 {
		t.Errorf("HEC envelope %v", e)
	}
	if e["event"].(map[string]any)["class_uid"] != float64(2006) || h.indexed[1]["event"].(map[string]any)["class_uid"] != float64(1001) {
		t.Errorf("HEC event bodies %v", h.indexed)
	}
	for i, e := range h.indexed {
		raw, _ := json.Marshal(e["event"])
		sinktest.CheckAllowed(t, fmt.Sprint("hec event ", i), raw, e["event"], sinktest.OCSFAllowed)
		if f, _ := e["fields"].(map[string]any); len(f) != 1 || f["agent_id"] != "a1" {
			t.Errorf("indexed fields %v", e["fields"])
		}
	}
}

func TestBodyIsConcatenatedObjects(t *testing.T) {
	var body []byte
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ = io.ReadAll(r.Body)
		reply(w, http.StatusOK, map[string]any{"text": "Success", "code": 0})
	}))
	defer srv.Close()
	off := false
	s := newSink(t, srv, func(c *Config) { c.Ack = &off; c.Format = ocsf.FormatJSON })
	if err := s.Deliver(context.Background(), sinktest.Items(sinktest.Finding("a1", 1, wardv1.Severity_SEVERITY_HIGH), sinktest.Health("a1", 2))); err != nil {
		t.Fatal(err)
	}
	if bytes.HasPrefix(bytes.TrimSpace(body), []byte("[")) {
		t.Fatal("HEC body is a JSON array; HEC wants concatenated objects")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	n := 0
	for dec.More() {
		var e map[string]any
		if err := dec.Decode(&e); err != nil {
			t.Fatal(err)
		}
		raw, _ := json.Marshal(e["event"])
		sinktest.CheckAllowed(t, "hec json", raw, e["event"], sinktest.ViewAllowed)
		n++
	}
	if n != 2 {
		t.Fatalf("%d objects, want 2 (json format passes health through)", n)
	}
}

func TestFailures(t *testing.T) {
	item := func() []core.Item {
		return sinktest.Items(sinktest.Finding("a1", 1, wardv1.Severity_SEVERITY_HIGH), sinktest.Finding("a1", 2, wardv1.Severity_SEVERITY_HIGH))
	}
	t.Run("200 without ack is not delivered", func(t *testing.T) {
		h := newFakeHEC(t)
		h.ackEnabled = false // token without indexer acknowledgement
		srv := httptest.NewTLSServer(h)
		defer srv.Close()
		err := newSink(t, srv, nil).Deliver(context.Background(), item())
		if o, _ := core.Outcome(err); o != "retry" || err == nil {
			t.Fatalf("err %v outcome %s, want retry", err, o)
		}
	})
	t.Run("ack never confirmed", func(t *testing.T) {
		h := newFakeHEC(t)
		h.pollsToAck = -1
		srv := httptest.NewTLSServer(h)
		defer srv.Close()
		start := time.Now()
		err := newSink(t, srv, func(c *Config) { c.AckTimeout = 200 * time.Millisecond }).Deliver(context.Background(), item())
		if o, _ := core.Outcome(err); o != "retry" || err == nil || time.Since(start) < 200*time.Millisecond {
			t.Fatalf("err %v outcome %s", err, o)
		}
	})
	for _, code := range []int{http.StatusServiceUnavailable, http.StatusTooManyRequests} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			h := newFakeHEC(t)
			h.inject = []int{code}
			srv := httptest.NewTLSServer(h)
			defer srv.Close()
			err := newSink(t, srv, nil).Deliver(context.Background(), item())
			if o, after := core.Outcome(err); o != "retry" || after != 7*time.Second {
				t.Fatalf("err %v outcome %s after %v, want retry after 7s", err, o, after)
			}
		})
	}
	t.Run("bad token", func(t *testing.T) {
		srv := httptest.NewTLSServer(newFakeHEC(t))
		defer srv.Close()
		s := newSink(t, srv, nil)
		s.token = "wrong"
		if o, _ := core.Outcome(s.Deliver(context.Background(), item())); o != "dead_letter" {
			t.Fatalf("outcome %s, want dead_letter", o)
		}
	})
	t.Run("invalid event number", func(t *testing.T) {
		h := newFakeHEC(t)
		srv := httptest.NewTLSServer(h)
		defer srv.Close()
		s := newSink(t, srv, func(c *Config) { c.Format = ocsf.FormatJSON })
		items := sinktest.Items(sinktest.Finding("a1", 1, wardv1.Severity_SEVERITY_HIGH), sinktest.Finding("a1", 2, wardv1.Severity_SEVERITY_HIGH), sinktest.File("a1", 3))
		// The second event is one the fake HEC refuses.
		body := &rejecting{Sink: s, bad: 1}
		err := body.deliver(context.Background(), items)
		var be *core.BatchError
		if !errors.As(err, &be) || len(be.Failed) != 3 {
			t.Fatalf("err %v", err)
		}
		if o, _ := core.Outcome(be.Failed[1]); o != "dead_letter" {
			t.Errorf("refused event outcome %s", o)
		}
		for _, i := range []int{0, 2} {
			if o, _ := core.Outcome(be.Failed[i]); o != "retry" {
				t.Errorf("event %d outcome %s, want retry", i, o)
			}
		}
	})
}

// rejecting sends a body whose event number bad carries a field the fake HEC refuses, to
// exercise the invalid-event-number path through the real send code.
type rejecting struct {
	*Sink
	bad int
}

func (r *rejecting) deliver(ctx context.Context, items []core.Item) error {
	var body bytes.Buffer
	enc := json.NewEncoder(&body)
	var sent []int
	for i := range items {
		ev := map[string]any{"ok": true}
		if i == r.bad {
			ev = map[string]any{"reject_me": true}
		}
		_ = enc.Encode(hecEvent{Time: 1, Sourcetype: "ward:test", Event: ev})
		sent = append(sent, i)
	}
	failed := map[int]error{}
	if err := r.send(ctx, body.Bytes(), sent, failed); err != nil {
		return err
	}
	return &core.BatchError{Failed: failed}
}
