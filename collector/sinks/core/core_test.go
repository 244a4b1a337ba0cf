package core

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
)

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"":                              0,
		"5":                             5 * time.Second,
		" 12 ":                          12 * time.Second,
		"-3":                            0,
		"999999":                        time.Hour,
		"soon":                          0,
		"Thu, 01 Jan 2026 00:00:30 GMT": 30 * time.Second,
		"Wed, 31 Dec 2025 23:00:00 GMT": 0,
	} {
		if got := RetryAfter(v, now); got != want {
			t.Errorf("RetryAfter(%q) = %v, want %v", v, got, want)
		}
	}
}

func TestHTTPStatus(t *testing.T) {
	now := time.Now()
	for code, want := range map[int]string{
		400: "dead_letter", 401: "dead_letter", 403: "dead_letter", 404: "dead_letter", 413: "dead_letter",
		408: "retry", 429: "retry", 500: "retry", 502: "retry", 503: "retry", 504: "retry", 302: "retry",
	} {
		resp := &http.Response{StatusCode: code, Header: http.Header{"Retry-After": {"2"}}}
		o, after := Outcome(HTTPStatus(resp, []byte("nope"), now))
		if o != want {
			t.Errorf("%d: %s, want %s", code, o, want)
		}
		if want == "retry" && code != 302 && after != 2*time.Second {
			t.Errorf("%d: Retry-After ignored (%v)", code, after)
		}
	}
	if o, _ := Outcome(errors.New("connection refused")); o != "retry" {
		t.Errorf("unclassified error: %s", o)
	}
	if o, _ := Outcome(Skip("x")); o != "skipped" {
		t.Errorf("skip: %s", o)
	}
}

// TestViewDropsArgsAndUnknownPayloads: the allow-list view never carries process arguments,
// and an event whose payload this build does not map carries only the envelope.
func TestViewDropsArgsAndUnknownPayloads(t *testing.T) {
	ev := &wardv1.Event{Id: "e", AgentId: "a", Seq: 1, Time: timestamppb.Now(),
		Payload: &wardv1.Event_Process{Process: &wardv1.ProcessEvent{Kind: wardv1.ProcessEvent_KIND_EXEC,
			Process: &wardv1.Process{Pid: 3, Exe: "/bin/echo", Args: []string{"echo", "123-45-6789"}}}}}
	v := NewView(Item{Event: ev})
	if v.Kind != "process" || v.Exec.Kind != "exec" || v.Process.Exe != "/bin/echo" || !v.Known() {
		t.Fatalf("view %+v", v)
	}
	empty := NewView(Item{Event: &wardv1.Event{Id: "e", AgentId: "a", Seq: 2, Time: timestamppb.Now()}})
	if empty.Known() || empty.Kind != "unknown" || empty.Process != nil || empty.Finding != nil {
		t.Fatalf("payload-less view %+v", empty)
	}
	if s, ok := ParseSeverity("High"); !ok || s != wardv1.Severity_SEVERITY_HIGH {
		t.Fatal("ParseSeverity")
	}
	if _, ok := ParseSeverity("urgent"); ok {
		t.Fatal("ParseSeverity accepted nonsense")
	}
}
