package event

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/ward-dlp/ward/agent/flows"
	"github.com/ward-dlp/ward/agent/proc"
	"github.com/ward-dlp/ward/agent/stream"
	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/bpf/netflow"
	"github.com/ward-dlp/ward/classifiers/engine"
	"github.com/ward-dlp/ward/policy"
)

func TestFindingCarriesProcessFileAndMatchesAtFileOffsets(t *testing.T) {
	b := NewBuilder("agent-1", &wardv1.Host{Hostname: "ws-12"})
	at := time.Unix(1_800_000_000, 0)
	c := stream.Content{File: stream.File{Path: "/w/a.json", Device: 7, Inode: 9}, Base: 4096, Last: at}
	p := proc.Info{PID: 42, PPID: 1, UID: 1000, User: "nurse1", Exe: "/usr/bin/cp", Args: []string{"cp", "x", "/w/a.json"}, Start: at}
	ms := []engine.Match{
		{Detector: "phi.ssn", Class: engine.PHI, Confidence: 85, Count: 2, Offsets: []int64{10, 50}, Masked: []string{"***-**-6789"}, Fingerprints: []string{"ab"}},
		{Detector: "part2.fhir-label", Class: engine.Part2, Confidence: 95, Count: 1, Offsets: []int64{3}, Masked: []string{"42CFRPart2"}},
	}
	d := policy.Decision{Action: policy.ActionBlock, Severity: policy.SeverityHigh, RuleID: "r", Compliance: []string{"42 CFR 2.32"}, Version: "v", PolicyName: "pack"}
	ev, err := b.Finding(c, p, 5000, false, c.Base, ms, d, Outcome{Taken: policy.ActionAlert, Enforcement: "not enforceable"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := uuid.Parse(ev.GetId()); err != nil || ev.GetAgentId() != "agent-1" || ev.GetHost().GetHostname() != "ws-12" || !ev.GetTime().AsTime().Equal(at) {
		t.Fatalf("envelope %v", ev)
	}
	f := ev.GetFinding()
	if dd := f.GetDecision(); dd.GetAction() != wardv1.Action_ACTION_BLOCK || dd.GetActionTaken() != wardv1.Action_ACTION_ALERT ||
		dd.GetEnforcement() != "not enforceable" || dd.GetPolicyName() != "pack" || dd.GetRuleId() != "r" {
		t.Fatalf("decision %v", dd)
	}
	if f.GetDataClass() != wardv1.DataClass_DATA_CLASS_PART2 || f.GetConfidence() != 95 {
		t.Fatalf("the most sensitive class must name the finding: %v %d", f.GetDataClass(), f.GetConfidence())
	}
	if f.GetFile().GetPath() != "/w/a.json" || f.GetFile().GetSize() != 5000 || f.GetFile().GetContentSource() != wardv1.ContentSource_CONTENT_SOURCE_WRITE_CAPTURE {
		t.Fatalf("file %v", f.GetFile())
	}
	if got := f.GetMatches()[0].GetOffsets(); len(got) != 2 || got[0] != 4106 || got[1] != 4146 {
		t.Fatalf("offsets must be file offsets: %v", got)
	}
	if f.GetProcess().GetUser() != "nurse1" || f.GetProcess().GetArgs()[2] != "/w/a.json" {
		t.Fatalf("process %v", f.GetProcess())
	}
	if f.GetDecision().GetAction() != wardv1.Action_ACTION_BLOCK || f.GetDecision().GetSeverity() != wardv1.Severity_SEVERITY_HIGH || f.GetDecision().GetComplianceTags()[0] != "42 CFR 2.32" {
		t.Fatalf("decision %v", f.GetDecision())
	}
	// The wire form round-trips.
	raw, err := proto.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	var back wardv1.Event
	if err := proto.Unmarshal(raw, &back); err != nil || !proto.Equal(&back, ev) {
		t.Fatalf("round trip: %v", err)
	}
}

func TestFindingWithoutMatchesIsAnError(t *testing.T) {
	b := NewBuilder("a", &wardv1.Host{})
	if _, err := b.Finding(stream.Content{}, proc.Info{}, 0, false, 0, nil, policy.Decision{}, Outcome{}); err == nil {
		t.Fatal("accepted")
	}
}

func TestIdsAreTimeOrderedV7(t *testing.T) {
	b := NewBuilder("a", &wardv1.Host{})
	prev := ""
	for range 100 {
		id := b.Health(&wardv1.Health{}, time.Now()).GetId()
		u, err := uuid.Parse(id)
		if err != nil || u.Version() != 7 {
			t.Fatalf("id %q is not a UUIDv7", id)
		}
		if strings.Compare(id, prev) <= 0 {
			t.Fatalf("ids not increasing: %s after %s", id, prev)
		}
		prev = id
	}
}

func TestEnumMappingsAreTotal(t *testing.T) {
	for _, a := range []policy.Action{policy.ActionRecord, policy.ActionAlert, policy.ActionBlock, policy.ActionKill} {
		if Action(a) == wardv1.Action_ACTION_UNSPECIFIED {
			t.Errorf("action %v unmapped", a)
		}
	}
	for s := policy.SeverityInfo; s <= policy.SeverityCritical; s++ {
		if Severity(s) == wardv1.Severity_SEVERITY_UNSPECIFIED {
			t.Errorf("severity %v unmapped", s)
		}
	}
	for _, c := range []engine.DataClass{engine.Part2, engine.PHI} {
		if DataClass(c) == wardv1.DataClass_DATA_CLASS_UNSPECIFIED {
			t.Errorf("class %v unmapped", c)
		}
		if _, ok := PolicyClass(c); !ok {
			t.Errorf("class %v has no policy name", c)
		}
	}
}

func TestNetworkFlow(t *testing.T) {
	b := NewBuilder("agent-1", &wardv1.Host{Hostname: "h"})
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f := flows.Flow{
		Cookie: 7, Proto: netflow.TCP, Direction: flows.Outbound,
		Local: netip.MustParseAddrPort("[::ffff:127.0.0.1]:5000"), Remote: netip.MustParseAddrPort("127.0.0.1:443"),
		Task: netflow.Task{PID: 42, UID: 1000, Comm: "curl"}, Start: start, End: start.Add(time.Second),
		BytesSent: 10, BytesReceived: 20, Established: true, Reason: flows.Closed,
	}
	ev := b.NetworkFlow(f, proc.Info{}, false)
	nf := ev.GetFlow()
	if nf.GetProcess().GetPid() != 42 || nf.GetProcess().GetComm() != "curl" || nf.GetTransport() != "tcp" ||
		nf.GetLocalAddress() != "127.0.0.1" || nf.GetLocalPort() != 5000 || nf.GetRemotePort() != 443 ||
		nf.GetState() != wardv1.NetworkFlow_STATE_CLOSED || nf.GetDirection() != wardv1.NetworkFlow_DIRECTION_OUTBOUND ||
		nf.GetBytesSent() != 10 || nf.GetBytesReceived() != 20 || nf.GetSocketCookie() != 7 || nf.GetDenied() ||
		!ev.GetTime().AsTime().Equal(f.End) || !nf.GetStartTime().AsTime().Equal(start) {
		t.Errorf("flow event = %v", ev)
	}
	ev = b.NetworkFlow(f, proc.Info{PID: 42, Exe: "/usr/bin/curl", User: "alice"}, true)
	if ev.GetFlow().GetProcess().GetExe() != "/usr/bin/curl" || ev.GetFlow().GetProcess().GetUser() != "alice" {
		t.Errorf("table process not used: %v", ev.GetFlow().GetProcess())
	}
	f.Reason, f.RuleID = flows.Denied, 3
	nf = b.NetworkFlow(f, proc.Info{}, false).GetFlow()
	if !nf.GetDenied() || nf.GetAction() != wardv1.Action_ACTION_BLOCK || nf.GetState() != wardv1.NetworkFlow_STATE_DENIED || nf.GetRuleId() == "" {
		t.Errorf("denied flow = %v", nf)
	}
}

func TestForkAndContainerID(t *testing.T) {
	b := NewBuilder("agent-1", &wardv1.Host{})
	at := time.Unix(1_800_000_000, 0)
	const cid = "8e8f6ba8f1f3c0e0b3ad2d8b7e0c4bd6a0d8d1b70e4ce7a1fd5c5e4b0f5f9d21"
	child := proc.Info{PID: 43, PPID: 42, Exe: "/usr/bin/bash", ParentExe: "/usr/bin/bash", ContainerID: cid, Start: at}
	pe := b.Fork(child, at).GetProcess()
	if pe.GetKind() != wardv1.ProcessEvent_KIND_FORK || pe.GetProcess().GetPid() != 43 || pe.GetProcess().GetPpid() != 42 ||
		pe.GetProcess().GetExe() != "/usr/bin/bash" || pe.GetProcess().GetContainerId() != cid {
		t.Fatalf("fork event %v", pe)
	}
	if got := b.Exec(child, at).GetProcess().GetProcess().GetContainerId(); got != cid {
		t.Fatalf("exec event container id %q", got)
	}
}
