package event

import (
	"net/netip"
	"testing"
	"time"

	"github.com/ward-dlp/ward/agent/proc"
	"github.com/ward-dlp/ward/agent/tlsplain"
	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	probe "github.com/ward-dlp/ward/bpf/tlsplain"
	"github.com/ward-dlp/ward/classifiers/engine"
	"github.com/ward-dlp/ward/policy"
)

func TestTLSFindingTargetsTheNetworkDestination(t *testing.T) {
	b := NewBuilder("agent-1", &wardv1.Host{Hostname: "ws-12"})
	at := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	s := tlsplain.Done{
		Key: tlsplain.Key{PID: 42, Conn: 0xbeef}, Library: probe.OpenSSL, UID: 1000, Comm: "curl",
		Socket: probe.Socket{Cookie: 7, Remote: netip.MustParseAddrPort("[::ffff:10.1.2.3]:443")}, Resolved: true,
		Last: at, Bytes: 9000, Inspected: 8000,
		Matches: []engine.Match{
			{Detector: "phi.ssn", Class: engine.PHI, Confidence: 80, Count: 2, Offsets: []int64{10, 90}, Masked: []string{"***-**-7839"}},
			{Detector: "part2.fhir", Class: engine.Part2, Confidence: 95, Count: 1},
		},
	}
	d := policy.Decision{Action: policy.ActionBlock, RuleID: "part2-unsanctioned-destination", Version: "3"}
	ev, err := b.TLSFinding(s, proc.Info{PID: 42, Exe: "/usr/bin/curl", User: "alice", UID: 1000}, true, "ehr.example.org", d,
		Outcome{Taken: policy.ActionAlert, Enforcement: "not enforceable"})
	if err != nil {
		t.Fatal(err)
	}
	f := ev.GetFinding()
	nt := f.GetNetwork()
	if nt.GetRemoteAddress() != "10.1.2.3" || nt.GetRemotePort() != 443 || nt.GetTransport() != "tcp" || nt.GetSni() != "ehr.example.org" ||
		nt.GetTlsLibrary() != "openssl" || nt.GetDirection() != wardv1.NetworkTarget_DIRECTION_SEND || nt.GetBytesInspected() != 8000 {
		t.Errorf("target %v", nt)
	}
	if f.GetDataClass() != wardv1.DataClass_DATA_CLASS_PART2 || f.GetConfidence() != 95 || len(f.GetMatches()) != 2 {
		t.Errorf("finding %v", f)
	}
	if f.GetProcess().GetExe() != "/usr/bin/curl" || f.GetDecision().GetActionTaken() != wardv1.Action_ACTION_ALERT || !ev.GetTime().AsTime().Equal(at) {
		t.Errorf("finding %v", f)
	}
	// Without a process-table entry the kernel's view stands in; a received session says so.
	s.Recv, s.Resolved = true, false
	ev, err = b.TLSFinding(s, proc.Info{}, false, "", d, Outcome{})
	if err != nil {
		t.Fatal(err)
	}
	nt = ev.GetFinding().GetNetwork()
	if p := ev.GetFinding().GetProcess(); p.GetPid() != 42 || p.GetComm() != "curl" || p.GetUid() != 1000 {
		t.Errorf("process %v", p)
	}
	if nt.GetDirection() != wardv1.NetworkTarget_DIRECTION_RECEIVE || nt.GetRemoteAddress() != "" {
		t.Errorf("target %v", nt)
	}
	if _, err := b.TLSFinding(tlsplain.Done{}, proc.Info{}, false, "", policy.Decision{}, Outcome{}); err == nil {
		t.Error("a finding without matches or a rule must be refused")
	}
}
