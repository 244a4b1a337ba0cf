// Package event turns the agent's typed pipeline values (processes, reassembled file
// content, classifier matches, policy decisions, counters) into ward.v1 events. It is the one
// place the agent's internal types meet the wire format.
package event

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ward-dlp/ward/agent/flows"
	"github.com/ward-dlp/ward/agent/proc"
	"github.com/ward-dlp/ward/agent/stream"
	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/classifiers/engine"
	"github.com/ward-dlp/ward/policy"
)

// Builder stamps events with the agent's identity and host.
type Builder struct {
	agentID string
	host    *wardv1.Host
}

// NewBuilder returns a Builder for an enrolled agent.
func NewBuilder(agentID string, host *wardv1.Host) *Builder {
	return &Builder{agentID: agentID, host: host}
}

// HostInfo describes this machine. Read once at start.
func HostInfo(agentVersion string) *wardv1.Host {
	h := &wardv1.Host{AgentVersion: agentVersion, Os: "linux"}
	h.Hostname, _ = os.Hostname()
	if b, err := os.ReadFile("/etc/machine-id"); err == nil {
		h.MachineId = strings.TrimSpace(string(b))
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		h.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
				h.Os = strings.Trim(v, `"`)
			}
		}
	}
	return h
}

func (b *Builder) envelope(at time.Time) *wardv1.Event {
	id, err := uuid.NewV7()
	if err != nil {
		// NewV7 fails only when the system random source does; a random v4 keeps ids unique.
		id = uuid.New()
	}
	return &wardv1.Event{Id: id.String(), AgentId: b.agentID, Time: timestamppb.New(at), Host: b.host}
}

// Process converts a process-table entry.
func Process(p proc.Info) *wardv1.Process {
	out := &wardv1.Process{
		Pid: p.PID, Ppid: p.PPID, Uid: p.UID, Gid: p.GID, User: p.User,
		Exe: p.Exe, Args: p.Args, Comm: p.Comm, CgroupId: p.CgroupID,
		ParentExe: p.ParentExe, Truncated: p.Truncated, ContainerId: p.ContainerID,
	}
	if !p.Start.IsZero() {
		out.StartTime = timestamppb.New(p.Start)
	}
	return out
}

// Exec is a process start.
func (b *Builder) Exec(p proc.Info, at time.Time) *wardv1.Event {
	ev := b.envelope(at)
	ev.Payload = &wardv1.Event_Process{Process: &wardv1.ProcessEvent{Kind: wardv1.ProcessEvent_KIND_EXEC, Process: Process(p)}}
	return ev
}

// Fork is a new process forked by p.PPID; p is the child as the table holds it, running its
// parent's program until it execs.
func (b *Builder) Fork(p proc.Info, at time.Time) *wardv1.Event {
	ev := b.envelope(at)
	ev.Payload = &wardv1.Event_Process{Process: &wardv1.ProcessEvent{Kind: wardv1.ProcessEvent_KIND_FORK, Process: Process(p)}}
	return ev
}

// Exit is a process end.
func (b *Builder) Exit(p proc.Info, code int32, at time.Time) *wardv1.Event {
	ev := b.envelope(at)
	ev.Payload = &wardv1.Event_Process{Process: &wardv1.ProcessEvent{Kind: wardv1.ProcessEvent_KIND_EXIT, Process: Process(p), ExitCode: code}}
	return ev
}

// Source says where classified bytes came from.
func Source(reread bool) wardv1.ContentSource {
	if reread {
		return wardv1.ContentSource_CONTENT_SOURCE_FILE_REREAD
	}
	return wardv1.ContentSource_CONTENT_SOURCE_WRITE_CAPTURE
}

// FileActivity summarises one reassembled run of writes.
func (b *Builder) FileActivity(c stream.Content, p proc.Info, reread bool, findings int) *wardv1.Event {
	kind := wardv1.FileActivity_KIND_WRITE_CLOSED
	if c.Reason == stream.Idle || c.Reason == stream.Pressure {
		kind = wardv1.FileActivity_KIND_WRITE_IDLE
	}
	ev := b.envelope(c.Last)
	ev.Payload = &wardv1.Event_File{File: &wardv1.FileActivity{
		Kind: kind, Path: c.File.Path, Device: c.File.Device, Inode: c.File.Inode,
		Process: Process(p), BytesWritten: c.BytesWritten, BytesCaptured: c.BytesCaptured,
		WriteCalls: c.WriteCalls, ContentSource: Source(reread), Findings: uint32(findings),
	}}
	return ev
}

// NetworkFlow reports one finished (or idle) network flow. p is the process-table entry of
// the flow's pid; when the table had none, the kernel's view of the task stands in. The
// analyzer fields (app, name, TLS) are left empty here and filled by the traffic join.
func (b *Builder) NetworkFlow(f flows.Flow, p proc.Info, known bool) *wardv1.Event {
	var pr *wardv1.Process
	switch {
	case known:
		pr = Process(p)
	case f.Task.PID != 0:
		pr = &wardv1.Process{Pid: f.Task.PID, Uid: f.Task.UID, Gid: f.Task.GID, Comm: f.Task.Comm}
	}
	nf := &wardv1.NetworkFlow{
		Process: pr, Transport: f.Proto.String(), SocketCookie: f.Cookie,
		BytesSent: f.BytesSent, BytesReceived: f.BytesReceived, UdpSends: f.UDPSends,
		Action: wardv1.Action_ACTION_RECORD,
	}
	if f.Local.IsValid() {
		nf.LocalAddress, nf.LocalPort = f.Local.Addr().Unmap().String(), uint32(f.Local.Port())
	}
	if f.Remote.IsValid() {
		nf.RemoteAddress, nf.RemotePort = f.Remote.Addr().Unmap().String(), uint32(f.Remote.Port())
	}
	switch f.Direction {
	case flows.Outbound:
		nf.Direction = wardv1.NetworkFlow_DIRECTION_OUTBOUND
	case flows.Inbound:
		nf.Direction = wardv1.NetworkFlow_DIRECTION_INBOUND
	}
	switch f.Reason {
	case flows.Closed:
		nf.State = wardv1.NetworkFlow_STATE_CLOSED
	case flows.Idle:
		nf.State = wardv1.NetworkFlow_STATE_IDLE
	case flows.Denied:
		nf.State, nf.Denied, nf.Action = wardv1.NetworkFlow_STATE_DENIED, true, wardv1.Action_ACTION_BLOCK
		if f.RuleID != 0 {
			nf.RuleId = fmt.Sprintf("deny-list#%d", f.RuleID)
		}
	case flows.Failed:
		nf.State = wardv1.NetworkFlow_STATE_FAILED
	case flows.Stopped:
		nf.State = wardv1.NetworkFlow_STATE_AGENT_STOPPED
	}
	if !f.Start.IsZero() {
		nf.StartTime = timestamppb.New(f.Start)
	}
	if !f.End.IsZero() {
		nf.EndTime = timestamppb.New(f.End)
	}
	at := f.End
	if at.IsZero() {
		at = time.Now()
	}
	ev := b.envelope(at)
	ev.Payload = &wardv1.Event_Flow{Flow: nf}
	return ev
}

// Outcome is what the agent did about a decision: the action it took and, when that is
// less than the decided action, why (monitor mode, or no enforcement for this event kind).
type Outcome struct {
	Taken       policy.Action
	Enforcement string
}

// Decision converts a policy decision and what the agent did about it.
func Decision(d policy.Decision, out Outcome) *wardv1.Decision {
	return &wardv1.Decision{
		Action: Action(d.Action), Severity: Severity(d.Severity), RuleId: d.RuleID,
		ComplianceTags: d.Compliance, PolicyVersion: d.Version, PolicyName: d.PolicyName,
		ActionTaken: Action(out.Taken), Monitor: d.Monitor, Enforcement: out.Enforcement,
		ConsentId: d.ConsentID, ExceptionId: d.ExceptionID, MonitorRuleIds: d.MonitorHits,
	}
}

// Finding builds the event for one file's content: the matches in it (none for rules about
// the file itself, such as a recording written by a video app) and the decision. base is
// the file offset of the classified bytes, so reported offsets are file offsets.
func (b *Builder) Finding(c stream.Content, p proc.Info, size uint64, reread bool, base int64, ms []engine.Match, d policy.Decision, out Outcome) (*wardv1.Event, error) {
	if len(ms) == 0 && d.RuleID == "" {
		return nil, fmt.Errorf("finding for %s without matches or a deciding rule", c.File.Path)
	}
	f := &wardv1.Finding{
		Process: Process(p),
		Target: &wardv1.Finding_File{File: &wardv1.FileTarget{
			Path: c.File.Path, Device: c.File.Device, Inode: c.File.Inode, Size: size, ContentSource: Source(reread),
		}},
		Decision: Decision(d, out),
	}
	for _, m := range ms {
		offs := make([]uint64, 0, len(m.Offsets))
		for _, o := range m.Offsets {
			offs = append(offs, uint64(base+o))
		}
		f.Matches = append(f.Matches, &wardv1.Match{
			Detector: m.Detector, DataClass: DataClass(m.Class), Confidence: uint32(m.Confidence),
			Count: uint32(m.Count), Offsets: offs, MaskedSamples: m.Masked,
			Fingerprints: m.Fingerprints, Evidence: m.Evidence,
		})
		cls := DataClass(m.Class)
		if rank(cls) > rank(f.DataClass) || (cls == f.DataClass && uint32(m.Confidence) > f.Confidence) {
			f.DataClass = cls
			f.Confidence = uint32(m.Confidence)
		}
	}
	ev := b.envelope(c.Last)
	ev.Payload = &wardv1.Event_Finding{Finding: f}
	return ev, nil
}

// rank orders classes so the most sensitive names the finding.
func rank(c wardv1.DataClass) int {
	switch c {
	case wardv1.DataClass_DATA_CLASS_PART2:
		return 2
	case wardv1.DataClass_DATA_CLASS_PHI:
		return 1
	}
	return 0
}

// Health reports probes and counters.
func (b *Builder) Health(h *wardv1.Health, at time.Time) *wardv1.Event {
	ev := b.envelope(at)
	ev.Payload = &wardv1.Event_Health{Health: h}
	return ev
}

// DataClass maps the classifier's class onto the wire enum.
func DataClass(c engine.DataClass) wardv1.DataClass {
	switch c {
	case engine.Part2:
		return wardv1.DataClass_DATA_CLASS_PART2
	case engine.PHI:
		return wardv1.DataClass_DATA_CLASS_PHI
	}
	return wardv1.DataClass_DATA_CLASS_UNSPECIFIED
}

// PolicyClass maps the classifier's class onto policy's name for it.
func PolicyClass(c engine.DataClass) (policy.Class, bool) {
	switch c {
	case engine.Part2:
		return policy.ClassPart2, true
	case engine.PHI:
		return policy.ClassPHI, true
	}
	return "", false
}

// Action maps a policy action onto the wire enum.
func Action(a policy.Action) wardv1.Action {
	switch a {
	case policy.ActionRecord:
		return wardv1.Action_ACTION_RECORD
	case policy.ActionAlert:
		return wardv1.Action_ACTION_ALERT
	case policy.ActionBlock:
		return wardv1.Action_ACTION_BLOCK
	case policy.ActionKill:
		return wardv1.Action_ACTION_KILL
	}
	return wardv1.Action_ACTION_UNSPECIFIED
}

// Severity maps a policy severity onto the wire enum.
func Severity(s policy.Severity) wardv1.Severity {
	switch s {
	case policy.SeverityInfo:
		return wardv1.Severity_SEVERITY_INFO
	case policy.SeverityLow:
		return wardv1.Severity_SEVERITY_LOW
	case policy.SeverityMedium:
		return wardv1.Severity_SEVERITY_MEDIUM
	case policy.SeverityHigh:
		return wardv1.Severity_SEVERITY_HIGH
	case policy.SeverityCritical:
		return wardv1.Severity_SEVERITY_CRITICAL
	}
	return wardv1.Severity_SEVERITY_UNSPECIFIED
}
