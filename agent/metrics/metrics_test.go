package metrics

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestScrape(t *testing.T) {
	var drops atomic.Uint64
	m, err := New(func() Snapshot {
		return Snapshot{
			Probes:     []Probe{{Name: "file.write", Hook: "tracepoint/syscalls/sys_enter_write", Attached: true}, {Name: "process.exec", Hook: "tp_btf/sched_process_exec"}},
			Counters:   map[string]uint64{"bpf.filewrite.ringbuf_full": drops.Load(), "classify.reread": 3},
			Rings:      []Ring{{Probe: "process", Used: 128, Size: 4096}},
			SpoolBytes: 4096, SpoolFindings: 2, ShipSent: 5, ShipAcked: 4, ShipConnected: true,
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, m, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	get := func() string {
		resp, err := http.Get("http://" + ln.Addr().String() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	m.ProbeEvent("filewrite", 3)
	m.Classified(2 * time.Millisecond)
	m.Decided("alert", "alert")
	drops.Store(7)
	body := get()
	for _, want := range []string{
		`ward_agent_bpf_drops_total{probe="filewrite",reason="ringbuf_full"} 7`,
		`ward_agent_stage_events_total{name="classify.reread"} 3`,
		`ward_agent_probe_attached{hook="tracepoint/syscalls/sys_enter_write",probe="file.write"} 1`,
		`ward_agent_probe_attached{hook="tp_btf/sched_process_exec",probe="process.exec"} 0`,
		`ward_agent_ringbuf_used_bytes{probe="process"} 128`,
		`ward_agent_spool_events{log="findings"} 2`,
		`ward_agent_ship_events_total{result="acked"} 4`,
		`ward_agent_ship_connected 1`,
		`ward_agent_probe_events_total{probe="filewrite"} 3`,
		`ward_agent_classify_duration_seconds_count 1`,
		`ward_agent_policy_decisions_total{action="alert",taken="alert"} 1`,
		`ward_agent_degraded 0`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("missing %s", want)
		}
	}
	m.ProbeEvent("filewrite", 1)
	drops.Store(9)
	body = get()
	if !strings.Contains(body, `ward_agent_probe_events_total{probe="filewrite"} 4`) || !strings.Contains(body, `reason="ringbuf_full"} 9`) {
		t.Error("counters did not move between scrapes")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("serve: %v", err)
	}
}

func TestListenRefusesNonLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:9464", "192.0.2.1:9464", ":9464", "nonsense"} {
		if ln, err := Listen(addr); err == nil {
			ln.Close()
			t.Errorf("Listen(%q) accepted", addr)
		}
	}
}

func TestNilMetricsIsNoop(t *testing.T) {
	var m *Metrics
	m.ProbeEvent("x", 1)
	m.Classified(time.Second)
	m.Decided("a", "b")
}
