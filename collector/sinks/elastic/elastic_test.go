package elastic

import (
	"bufio"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/collector/sinks/core"
	"github.com/ward-dlp/ward/collector/sinks/internal/sinktest"
)

// fakeES implements _bulk as Elasticsearch does: NDJSON action/source pairs, "create" with
// an _id answers 409 version_conflict when the id exists, per-item statuses inside a 200
// with "errors": true, and whole-request statuses when told to.
type fakeES struct {
	mu       sync.Mutex
	docs     map[string]map[string]any
	itemFail map[string][]int // _id → statuses to answer for it next
	inject   []int
	requests int
	items    int
}

func (f *fakeES) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.URL.Path != "/_bulk" || r.Method != http.MethodPost {
		http.Error(w, `{"error":"no handler"}`, http.StatusBadRequest)
		return
	}
	if r.Header.Get("Authorization") != "ApiKey c2VjcmV0" {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error":{"type":"security_exception","reason":"missing authentication credentials"},"status":401}`))
		return
	}
	if r.Header.Get("Content-Type") != "application/x-ndjson" {
		http.Error(w, `{"error":"Content-Type header [text/plain] is not supported"}`, http.StatusNotAcceptable)
		return
	}
	f.requests++
	if len(f.inject) > 0 {
		code := f.inject[0]
		f.inject = f.inject[1:]
		w.Header().Set("Retry-After", "3")
		w.WriteHeader(code)
		_, _ = w.Write([]byte(`{"error":{"type":"es_rejected_execution_exception"},"status":` + fmt.Sprint(code) + `}`))
		return
	}
	sc := bufio.NewScanner(r.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var items []map[string]any
	errs := false
	for sc.Scan() {
		var action map[string]map[string]any
		if err := json.Unmarshal(sc.Bytes(), &action); err != nil {
			http.Error(w, `{"error":{"type":"illegal_argument_exception","reason":"Malformed action/metadata line"}}`, http.StatusBadRequest)
			return
		}
		meta, ok := action["create"]
		if !ok || !sc.Scan() {
			http.Error(w, `{"error":{"type":"illegal_argument_exception","reason":"expected create with a source"}}`, http.StatusBadRequest)
			return
		}
		var doc map[string]any
		if err := json.Unmarshal(sc.Bytes(), &doc); err != nil {
			http.Error(w, `{"error":{"type":"x_content_parse_exception"}}`, http.StatusBadRequest)
			return
		}
		f.items++
		id, _ := meta["_id"].(string)
		res := map[string]any{"_index": meta["_index"], "_id": id}
		status := 201
		if q := f.itemFail[id]; len(q) > 0 {
			status = q[0]
			f.itemFail[id] = q[1:]
		} else if _, exists := f.docs[id]; exists {
			status = 409
		}
		res["status"] = status
		switch status {
		case 201:
			f.docs[id] = doc
			res["result"] = "created"
		case 409:
			res["error"] = map[string]any{"type": "version_conflict_engine_exception", "reason": "document already exists"}
		case 429:
			res["error"] = map[string]any{"type": "es_rejected_execution_exception", "reason": "rejected execution"}
		default:
			res["error"] = map[string]any{"type": "document_parsing_exception", "reason": "failed to parse field [x]"}
		}
		if status >= 300 {
			errs = true
		}
		items = append(items, map[string]any{"create": res})
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"took": 3, "errors": errs, "items": items})
}

func newSink(t *testing.T, srv *httptest.Server) *Sink {
	t.Helper()
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(key, []byte("c2VjcmV0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{URL: srv.URL, APIKeyFile: key, TLS: core.TLSConfig{CAFile: ca}}, "0.1", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestPartialFailureInside200: one item 429 and one item 400 inside a 200: the 429 item is
// retried, the 400 item dead-lettered, the rest delivered; resending only the retried item
// succeeds, and resending an already indexed item (409) counts as delivered.
func TestPartialFailureInside200(t *testing.T) {
	es := &fakeES{docs: map[string]map[string]any{}, itemFail: map[string][]int{}}
	srv := httptest.NewTLSServer(es)
	defer srv.Close()
	s := newSink(t, srv)
	evs := []*wardv1.Event{
		sinktest.Finding("a1", 1, wardv1.Severity_SEVERITY_HIGH), sinktest.Finding("a1", 2, wardv1.Severity_SEVERITY_HIGH),
		sinktest.File("a1", 3), sinktest.Health("a1", 4),
	}
	es.itemFail[evs[1].GetId()] = []int{429}
	es.itemFail[evs[2].GetId()] = []int{400}
	items := sinktest.Items(evs...)
	err := s.Deliver(context.Background(), items)
	be, ok := err.(*core.BatchError)
	if !ok || len(be.Failed) != 2 {
		t.Fatalf("err %v, want 2 item failures", err)
	}
	if o, _ := core.Outcome(be.Failed[1]); o != "retry" {
		t.Errorf("429 item: %s", o)
	}
	if o, _ := core.Outcome(be.Failed[2]); o != "dead_letter" {
		t.Errorf("400 item: %s", o)
	}
	if len(es.docs) != 2 {
		t.Fatalf("%d docs indexed, want 2", len(es.docs))
	}
	// Resend the retried item alone, plus an already-indexed one.
	if err := s.Deliver(context.Background(), []core.Item{items[1], items[0]}); err != nil {
		t.Fatalf("resend: %v", err)
	}
	if len(es.docs) != 3 || es.items != 6 {
		t.Fatalf("docs %d items sent %d", len(es.docs), es.items)
	}
	d := es.docs[evs[0].GetId()]
	ev := d["event"].(map[string]any)
	if d["@timestamp"] != evs[0].GetTime().AsTime().Format(time.RFC3339Nano) || ev["kind"] != "alert" ||
		d["file"].(map[string]any)["path"] != `/srv/exports/a=b|c\d é.csv` || d["rule"].(map[string]any)["id"] != "phi|egress=1" ||
		d["user"].(map[string]any)["name"] != "nurse1" || d["host"].(map[string]any)["hostname"] != "ws-12" {
		t.Errorf("ECS document %v", d)
	}
	for id, doc := range es.docs {
		raw, _ := json.Marshal(doc)
		sinktest.CheckAllowed(t, "ecs "+id, raw, any(roundTrip(t, doc)), sinktest.ECSAllowed)
	}
}

func roundTrip(t *testing.T, v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	_ = json.Unmarshal(b, &out)
	return out
}

func TestWholeRequestStatuses(t *testing.T) {
	items := sinktest.Items(sinktest.Finding("a1", 1, wardv1.Severity_SEVERITY_HIGH))
	for code, want := range map[int]string{429: "retry", 503: "retry", 413: "dead_letter", 400: "dead_letter"} {
		es := &fakeES{docs: map[string]map[string]any{}, itemFail: map[string][]int{}, inject: []int{code}}
		srv := httptest.NewTLSServer(es)
		err := newSink(t, srv).Deliver(context.Background(), items)
		o, after := core.Outcome(err)
		if o != want {
			t.Errorf("%d: outcome %s, want %s (%v)", code, o, want, err)
		}
		if want == "retry" && after != 3*time.Second {
			t.Errorf("%d: Retry-After %v not honoured", code, after)
		}
		srv.Close()
	}
	// Wrong credentials are permanent.
	es := &fakeES{docs: map[string]map[string]any{}, itemFail: map[string][]int{}}
	srv := httptest.NewTLSServer(es)
	defer srv.Close()
	s := newSink(t, srv)
	s.auth = "ApiKey wrong"
	if o, _ := core.Outcome(s.Deliver(context.Background(), items)); o != "dead_letter" {
		t.Errorf("401: %s", o)
	}
}
