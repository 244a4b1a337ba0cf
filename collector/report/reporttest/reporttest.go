// Package reporttest seeds a collector store with a small, realistic day of events (process
// ancestry, Part 2 and PHI findings, named flows to sanctioned and unsanctioned apps, health)
// for the tests of the reports, the console and wardctl. It goes through the same
// InsertEvents path as ingest, so the rows are what a collector would hold.
package reporttest

import (
	"context"
	"crypto/sha256"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/collector/store"
)

// Agent ids and hosts of the fixture.
const (
	AgentA = "0190f000-0000-7000-8000-00000000000a"
	AgentB = "0190f000-0000-7000-8000-00000000000b"
	HostA  = "ws-12"
	HostB  = "ws-11"
)

// Day is the fixture's day (UTC); every event falls inside [Day, Day+24h).
var Day = time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)

// RawMRN is the identifier the Part 2 fixture finding is about. It appears in the store only
// masked (MaskedMRN); tests assert it never appears anywhere.
const (
	RawMRN    = "MRN-55501234821"
	MaskedMRN = "MRN ****4821"
)

// Seeded says what Seed stored.
type Seeded struct {
	// Part2Blocked, Part2Consented and PHIAlert are the rowids of the three findings;
	// DeniedFlow is a flow the agent refused.
	Part2Blocked, Part2Consented, PHIAlert, DeniedFlow int64
}

// Seed enrols two agents and stores the fixture's events.
func Seed(ctx context.Context, st *store.Store) (Seeded, error) {
	var out Seeded
	for i, id := range []string{AgentA, AgentB} {
		tok := sha256.Sum256([]byte(id))
		if err := st.AddToken(ctx, tok[:], Day.Add(-time.Hour), Day.Add(time.Hour)); err != nil {
			return out, err
		}
		host := []string{HostA, HostB}[i]
		if err := st.EnrollAgent(ctx, tok[:], Day.Add(-30*time.Minute), store.Agent{ID: id, Hostname: host, Version: "0.9.1"}, func() error { return nil }); err != nil {
			return out, fmt.Errorf("enrol %s: %w", id, err)
		}
	}
	seq := map[string]uint64{}
	at := func(h, m int) time.Time { return Day.Add(time.Duration(h)*time.Hour + time.Duration(m)*time.Minute) }
	bash := &wardv1.Process{Pid: 100, Ppid: 1, Uid: 1001, User: "nurse1", Exe: "/usr/bin/bash", Comm: "bash", Args: []string{"-bash"}}
	py := &wardv1.Process{Pid: 200, Ppid: 100, Uid: 1001, User: "nurse1", Exe: "/usr/bin/python3", Comm: "python3",
		Args: []string{"python3", "export.py"}, ParentExe: "/usr/bin/bash"}
	firefox := &wardv1.Process{Pid: 300, Ppid: 100, Uid: 1001, User: "nurse1", Exe: "/usr/lib/firefox/firefox", Comm: "firefox"}
	therapist := &wardv1.Process{Pid: 400, Ppid: 1, Uid: 1002, User: "therapist2", Exe: "/usr/bin/zoom", Comm: "zoom"}

	var rowids []int64
	put := func(agent, host string, t time.Time, ev *wardv1.Event) error {
		seq[agent]++
		ev.Id = fmt.Sprintf("0190f000-%04d-7000-8000-%012d", seq[agent], len(rowids)+1)
		ev.AgentId, ev.Seq, ev.Time = agent, seq[agent], timestamppb.New(t)
		ev.Host = &wardv1.Host{Hostname: host, AgentVersion: "0.9.1"}
		rec, err := store.RecordFromEvent(ev)
		if err != nil {
			return err
		}
		if _, err := st.InsertEvents(ctx, agent, []store.Record{rec}, t); err != nil {
			return err
		}
		last, err := st.LastRowID(ctx)
		rowids = append(rowids, last)
		return err
	}
	exec := func(p *wardv1.Process) *wardv1.Event {
		return &wardv1.Event{Payload: &wardv1.Event_Process{Process: &wardv1.ProcessEvent{Kind: wardv1.ProcessEvent_KIND_EXEC, Process: p}}}
	}
	finding := func(p *wardv1.Process, class wardv1.DataClass, path string, d *wardv1.Decision, m ...*wardv1.Match) *wardv1.Event {
		return &wardv1.Event{Payload: &wardv1.Event_Finding{Finding: &wardv1.Finding{DataClass: class, Confidence: 95, Process: p,
			Target: &wardv1.Finding_File{File: &wardv1.FileTarget{Path: path, Size: 4096}}, Matches: m, Decision: d}}}
	}
	flow := func(p *wardv1.Process, app, name, cat, remote string, up, down uint64, denied bool) *wardv1.Event {
		fl := &wardv1.NetworkFlow{Process: p, Transport: "tcp", RemoteAddress: remote, RemotePort: 443, LocalAddress: "10.0.0.12",
			LocalPort: 50000, Direction: wardv1.NetworkFlow_DIRECTION_OUTBOUND, BytesSent: up, BytesReceived: down,
			State: wardv1.NetworkFlow_STATE_CLOSED, Action: wardv1.Action_ACTION_RECORD, App: app, AppName: name, AppCategory: cat,
			Name: "www." + app + ".com", NameSource: "sni"}
		if denied {
			fl.Denied, fl.Action, fl.RuleId, fl.State = true, wardv1.Action_ACTION_BLOCK, "deny-paste-sites", wardv1.NetworkFlow_STATE_DENIED
		}
		return &wardv1.Event{Payload: &wardv1.Event_Flow{Flow: fl}}
	}
	mrn := &wardv1.Match{Detector: "phi.mrn", DataClass: wardv1.DataClass_DATA_CLASS_PART2, Confidence: 95, Count: 3,
		Offsets: []uint64{10, 80, 150}, MaskedSamples: []string{MaskedMRN}, Fingerprints: []string{"9f2c0d"},
		Evidence: "system=http://terminology.hl7.org/CodeSystem/v3-ActCode code=42CFRPart2"}
	ssn := &wardv1.Match{Detector: "phi.ssn", DataClass: wardv1.DataClass_DATA_CLASS_PHI, Confidence: 80, Count: 1,
		MaskedSamples: []string{"***-**-6789"}}

	steps := []func() error{
		func() error { return put(AgentA, HostA, at(8, 0), exec(bash)) },
		func() error { return put(AgentA, HostA, at(8, 5), exec(py)) },
		func() error { return put(AgentA, HostA, at(8, 6), exec(firefox)) },
		func() error {
			return put(AgentA, HostA, at(9, 15), finding(py, wardv1.DataClass_DATA_CLASS_PART2, "/home/nurse1/Dropbox/export.xml",
				&wardv1.Decision{Action: wardv1.Action_ACTION_BLOCK, ActionTaken: wardv1.Action_ACTION_BLOCK, Severity: wardv1.Severity_SEVERITY_HIGH,
					RuleId: "part2-unsanctioned-destination", ComplianceTags: []string{"42 CFR 2.32"}, PolicyVersion: "7", PolicyName: "clinic"}, mrn))
		},
		func() error {
			return put(AgentA, HostA, at(10, 30), finding(py, wardv1.DataClass_DATA_CLASS_PART2, "/srv/share/referrals/referral.xml",
				&wardv1.Decision{Action: wardv1.Action_ACTION_ALERT, ActionTaken: wardv1.Action_ACTION_ALERT, Severity: wardv1.Severity_SEVERITY_MEDIUM,
					RuleId: "part2-sanctioned-needs-consent", ConsentId: "consent-17", PolicyVersion: "7", PolicyName: "clinic"}, mrn))
		},
		func() error {
			return put(AgentB, HostB, at(11, 0), finding(therapist, wardv1.DataClass_DATA_CLASS_PHI, "/home/therapist2/notes.txt",
				&wardv1.Decision{Action: wardv1.Action_ACTION_ALERT, ActionTaken: wardv1.Action_ACTION_ALERT, Severity: wardv1.Severity_SEVERITY_MEDIUM,
					RuleId: "phi-to-removable", PolicyVersion: "7", PolicyName: "clinic"}, ssn))
		},
		func() error {
			return put(AgentA, HostA, at(9, 14), flow(firefox, "dropbox", "Dropbox", "file_sharing", "162.125.1.1", 5<<20, 40<<10, false))
		},
		func() error {
			return put(AgentA, HostA, at(12, 0), flow(firefox, "chatgpt", "ChatGPT", "generative_ai", "104.18.1.1", 300<<10, 2<<20, false))
		},
		func() error {
			return put(AgentB, HostB, at(13, 0), flow(therapist, "zoom", "Zoom", "video_conferencing", "170.114.1.1", 80<<20, 90<<20, false))
		},
		func() error {
			return put(AgentB, HostB, at(14, 0), flow(therapist, "dropbox", "Dropbox", "file_sharing", "162.125.1.2", 1<<20, 1<<10, false))
		},
		func() error {
			return put(AgentA, HostA, at(15, 0), flow(firefox, "pastebin", "Pastebin", "paste_transfer", "104.20.1.1", 2<<10, 0, true))
		},
		func() error {
			return put(AgentA, HostA, at(16, 0), &wardv1.Event{Payload: &wardv1.Event_Health{Health: &wardv1.Health{
				Probes: []*wardv1.ProbeStatus{{Name: "process.exec", Hook: "tp_btf/sched_process_exec", Attached: true},
					{Name: "file.write", Attached: false, Error: "kprobe not permitted"}},
				Drops:  map[string]uint64{"bpf.ringbuf_full": 12, "stream.overflow": 0},
				Policy: &wardv1.PolicyStatus{Version: 7, Name: "clinic"}}}})
		},
		func() error {
			return put(AgentB, HostB, at(16, 1), &wardv1.Event{Payload: &wardv1.Event_Health{Health: &wardv1.Health{
				Probes: []*wardv1.ProbeStatus{{Name: "process.exec", Hook: "tp_btf/sched_process_exec", Attached: true}}}}})
		},
	}
	for i, s := range steps {
		if err := s(); err != nil {
			return out, fmt.Errorf("reporttest: step %d: %w", i, err)
		}
	}
	out.Part2Blocked, out.Part2Consented, out.PHIAlert, out.DeniedFlow = rowids[3], rowids[4], rowids[5], rowids[10]
	return out, nil
}
