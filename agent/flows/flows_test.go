package flows

import (
	"net/netip"
	"testing"
	"time"

	"github.com/ward-dlp/ward/bpf/netflow"
)

var (
	t0     = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	server = netip.MustParseAddrPort("10.0.0.5:443")
	client = netip.MustParseAddrPort("192.168.1.9:50000")
	task   = netflow.Task{PID: 42, TID: 42, UID: 1000, Comm: "curl"}
)

func at(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }

func TestOutboundTCP(t *testing.T) {
	tr := New(Config{IdleTimeout: time.Minute})
	recs := []netflow.Record{
		netflow.Connect{Time: at(0), Task: task, Cookie: 7, Proto: netflow.TCP, Dst: server},
		netflow.State{Time: at(0), Task: task, Cookie: 7, Dst: server, Old: netflow.StateClose, New: netflow.StateSynSent},
		netflow.State{Time: at(1), Cookie: 7, Src: client, Dst: server, Old: netflow.StateSynSent, New: netflow.StateEstablished},
	}
	for _, r := range recs {
		if out := tr.Apply(r); len(out) != 0 {
			t.Fatalf("flow reported early: %+v", out)
		}
	}
	out := tr.Apply(netflow.State{Time: at(9), Cookie: 7, Src: client, Dst: server, Old: netflow.StateFinWait2,
		New: netflow.StateClose, BytesAcked: 1001, BytesReceived: 5001})
	if len(out) != 1 {
		t.Fatalf("close: %+v", out)
	}
	f := out[0]
	if f.Reason != Closed || f.Task != task || f.Local != client || f.Remote != server || f.Direction != Outbound ||
		f.BytesSent != 1001 || f.BytesReceived != 5001 || !f.Start.Equal(at(0)) || !f.End.Equal(at(9)) || !f.Established {
		t.Errorf("flow = %+v", f)
	}
	if s := tr.Stats(); s.Open != 0 || s.OutboundClosed != 1 {
		t.Errorf("stats = %+v", s)
	}
}

func TestInboundWithoutCookie(t *testing.T) {
	tr := New(Config{})
	tr.Apply(netflow.State{Time: at(0), Src: server, Dst: client, Old: netflow.StateSynRecv, New: netflow.StateEstablished})
	out := tr.Apply(netflow.State{Time: at(3), Src: server, Dst: client, Old: netflow.StateLastAck, New: netflow.StateClose, BytesReceived: 10})
	if len(out) != 1 || out[0].Direction != Inbound || out[0].Task.PID != 0 || out[0].Local != server || out[0].BytesReceived != 10 {
		t.Fatalf("inbound = %+v", out)
	}
}

func TestRefusedConnectFails(t *testing.T) {
	tr := New(Config{IdleTimeout: time.Minute})
	tr.Apply(netflow.Connect{Time: at(0), Task: task, Cookie: 1, Proto: netflow.TCP, Dst: server})
	tr.Apply(netflow.State{Time: at(0), Task: task, Cookie: 1, Dst: server, Old: netflow.StateClose, New: netflow.StateSynSent})
	out := tr.Apply(netflow.State{Time: at(1), Cookie: 1, Dst: server, Old: netflow.StateSynSent, New: netflow.StateClose})
	if len(out) != 1 || out[0].Reason != Failed {
		t.Fatalf("refused = %+v", out)
	}
	// A connect that never reached SYN_SENT fails on the idle timeout.
	tr.Apply(netflow.Connect{Time: at(10), Task: task, Cookie: 2, Proto: netflow.TCP, Dst: server})
	if out := tr.Tick(at(30)); len(out) != 0 {
		t.Fatalf("early: %+v", out)
	}
	if out := tr.Tick(at(71)); len(out) != 1 || out[0].Reason != Failed || out[0].Cookie != 2 {
		t.Fatalf("stuck connect = %+v", out)
	}
}

func TestUDPIdleAndLongTCP(t *testing.T) {
	tr := New(Config{IdleTimeout: time.Minute})
	dns := netip.MustParseAddrPort("127.0.0.53:53")
	tr.Apply(netflow.UDPSend{Time: at(0), Task: task, Cookie: 3, Dst: dns, Sends: 1})
	tr.Apply(netflow.UDPSend{Time: at(30), Task: task, Cookie: 3, Dst: dns, Sends: 4})
	tr.Apply(netflow.Connect{Time: at(0), Task: task, Cookie: 4, Proto: netflow.TCP, Dst: server})
	tr.Apply(netflow.State{Time: at(0), Cookie: 4, Src: client, Dst: server, Old: netflow.StateSynSent, New: netflow.StateEstablished})
	out := tr.Tick(at(61))
	if len(out) != 1 || out[0].Proto != netflow.TCP || out[0].Reason != Idle {
		t.Fatalf("tick 61 = %+v, want the long TCP flow's interim report only", out)
	}
	out = tr.Tick(at(91))
	if len(out) != 1 || out[0].Proto != netflow.UDP || out[0].UDPSends != 5 || out[0].Reason != Idle || !out[0].End.Equal(at(30)) {
		t.Fatalf("tick 91 = %+v, want the UDP flow with 5 sends", out)
	}
	if out := tr.Flush(at(100)); len(out) != 1 || out[0].Reason != Stopped || out[0].Cookie != 4 {
		t.Fatalf("flush = %+v", out)
	}
}

func TestDenyAndEviction(t *testing.T) {
	tr := New(Config{MaxFlows: 2})
	out := tr.Apply(netflow.Deny{Time: at(0), Task: task, Proto: netflow.TCP, Dst: server, Via: netflow.ViaConnect, RuleID: 9})
	if len(out) != 1 || out[0].Reason != Denied || out[0].RuleID != 9 || tr.Stats().Open != 0 {
		t.Fatalf("deny = %+v", out)
	}
	for i := range 3 {
		out = tr.Apply(netflow.Connect{Time: at(i), Task: task, Cookie: uint64(10 + i), Proto: netflow.TCP, Dst: server})
	}
	if len(out) != 1 || out[0].Cookie != 10 || out[0].Reason != Stopped || tr.Stats().Evicted != 1 || tr.Stats().Open != 2 {
		t.Fatalf("eviction = %+v, stats %+v", out, tr.Stats())
	}
	if out := tr.Apply(netflow.State{Time: at(5), Cookie: 99, New: netflow.StateClose}); out != nil || tr.Stats().CloseWithout != 1 {
		t.Fatalf("unknown close = %+v", out)
	}
}

func TestCut(t *testing.T) {
	tr := New(Config{})
	tr.Apply(netflow.Connect{Time: at(0), Task: task, Cookie: 7, Proto: netflow.TCP, Dst: server})
	tr.Apply(netflow.State{Time: at(0), Cookie: 7, Src: client, Dst: server, Old: netflow.StateSynSent, New: netflow.StateEstablished})
	tr.Apply(netflow.Connect{Time: at(0), Task: task, Cookie: 8, Proto: netflow.TCP, Dst: server})
	out := tr.Cut(7, at(2), 3)
	if len(out) != 1 || out[0].Cookie != 7 || out[0].Reason != Denied || !out[0].Cut || out[0].RuleID != 3 ||
		!out[0].Established || out[0].Local != client || tr.Stats().Open != 1 {
		t.Fatalf("cut = %+v", out)
	}
	if out := tr.Cut(7, at(3), 3); len(out) != 0 {
		t.Fatalf("second cut = %+v", out)
	}
	// The cut socket's eventual close is neither reported nor counted as unknown.
	if out := tr.Apply(netflow.State{Time: at(900), Cookie: 7, Src: client, Dst: server, Old: netflow.StateEstablished, New: netflow.StateClose}); out != nil || tr.Stats().CloseWithout != 0 {
		t.Fatalf("close after cut = %+v, stats %+v", out, tr.Stats())
	}
}
