package agent

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/ward-dlp/ward/agent/config"
	"github.com/ward-dlp/ward/agent/event"
	"github.com/ward-dlp/ward/agent/proc"
	"github.com/ward-dlp/ward/agent/spool"
	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/bpf/netflow"
)

// TestFlowEventsReachTheSpool runs the network stage with the real probe: a TCP exchange on
// 127.0.0.1 must come out of the spool as one closed NetworkFlow event attributed to this
// process, with the bytes each way.
func TestFlowEventsReachTheSpool(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to load BPF programs")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	sp, err := spool.Open(t.TempDir(), spool.Options{MaxBytes: 64 << 20, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	cfg := config.Default()
	cfg.Network.Enabled = true
	a := &agent{cfg: cfg, log: log, spool: sp, counters: map[string]uint64{},
		build: event.NewBuilder("agent-test", &wardv1.Host{Hostname: "test"}),
		procs: proc.New(proc.Config{}, proc.NewUsers(time.Minute), log)}
	if a.nets, err = netflow.Load(netflow.Config{}, log); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	recs := make(chan netflow.Record, 1024)
	done := make(chan struct{}, 2)
	go func() { _ = a.readFlows(ctx, recs); done <- struct{}{} }()
	go func() { _ = a.trackFlows(ctx, recs, nil); done <- struct{}{} }()
	defer func() {
		cancel()
		a.nets.Close()
		<-done
		<-done
	}()

	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, c)
		_, _ = c.Write([]byte("pong"))
		c.Close()
	}()
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	port := uint32(ln.Addr().(*net.TCPAddr).Port)
	if _, err := c.Write(make([]byte, 5000)); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	_, _ = io.ReadAll(c)
	c.Close()

	deadline := time.Now().Add(10 * time.Second)
	var outbound, inbound *wardv1.NetworkFlow
	for time.Now().Before(deadline) && (outbound == nil || inbound == nil) {
		if err := sp.Sync(); err != nil {
			t.Fatal(err)
		}
		evs, err := sp.Next(1000, 16<<20)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			f := ev.GetFlow()
			switch {
			case f == nil:
			case f.GetRemotePort() == port && f.GetDirection() == wardv1.NetworkFlow_DIRECTION_OUTBOUND:
				outbound = f
			case f.GetLocalPort() == port && f.GetDirection() == wardv1.NetworkFlow_DIRECTION_INBOUND:
				inbound = f
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if outbound == nil || inbound == nil {
		t.Fatalf("flow events not spooled: outbound %v, inbound %v", outbound, inbound)
	}
	exe, _ := os.Executable()
	if p := outbound.GetProcess(); p.GetPid() != uint32(os.Getpid()) || p.GetExe() != exe {
		t.Errorf("outbound process = %v, want pid %d exe %s", p, os.Getpid(), exe)
	}
	if outbound.GetState() != wardv1.NetworkFlow_STATE_CLOSED || outbound.GetTransport() != "tcp" ||
		outbound.GetRemoteAddress() != "127.0.0.1" || outbound.GetBytesSent() < 5000 || outbound.GetBytesReceived() < 4 ||
		outbound.GetSocketCookie() == 0 || outbound.GetLocalPort() == 0 || !outbound.GetEndTime().AsTime().After(outbound.GetStartTime().AsTime()) {
		t.Errorf("outbound flow = %v", outbound)
	}
	if inbound.GetProcess() != nil || inbound.GetBytesReceived() < 5000 {
		t.Errorf("inbound flow = %v", inbound)
	}
}
