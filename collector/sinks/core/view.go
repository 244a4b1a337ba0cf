package core

import (
	"strings"
	"time"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
)

// View is the allow-list of what may leave the collector about an event. Every sink format
// is built from a View, never from the wardv1.Event, so a field added to the protocol leaves
// only once it has been added here on purpose. Process arguments are deliberately absent:
// command lines can hold anything, including the data a finding is about. Matches carry only
// masks and keyed fingerprints, as they do in the store.
type View struct {
	ID         string    `json:"id"`
	AgentID    string    `json:"agent_id"`
	Seq        uint64    `json:"seq"`
	Time       time.Time `json:"time"`
	ReceivedAt time.Time `json:"received_at"`
	// Kind is the payload's name: process, file, finding, health, or for a payload this
	// build's view does not know, the protocol field name (with PayloadType set).
	Kind        string `json:"kind"`
	PayloadType string `json:"payload_type,omitempty"`

	Host    HostView     `json:"host"`
	Process *ProcessView `json:"process,omitempty"`
	Exec    *ExecView    `json:"process_event,omitempty"`
	File    *FileView    `json:"file,omitempty"`
	Finding *FindingView `json:"finding,omitempty"`
	Health  *HealthView  `json:"health,omitempty"`
	Flow    *FlowView    `json:"flow,omitempty"`
	// Checkpoint is set on the collector's own audit-log tree heads (Kind
	// "audit_checkpoint"), which every sink receives so the SIEM holds a copy.
	Checkpoint *CheckpointView `json:"audit_checkpoint,omitempty"`
	// Fleet is set on the collector's alerts about an agent (kind "fleet"): silent, back,
	// revoked agent calling in (fleetview.go).
	Fleet *FleetView `json:"fleet_alert,omitempty"`
}

// HostView is the machine an event came from.
type HostView struct {
	Hostname     string `json:"hostname,omitempty"`
	MachineID    string `json:"machine_id,omitempty"`
	OS           string `json:"os,omitempty"`
	Kernel       string `json:"kernel,omitempty"`
	AgentVersion string `json:"agent_version,omitempty"`
}

// ProcessView is a process without its arguments.
type ProcessView struct {
	PID       uint32 `json:"pid"`
	PPID      uint32 `json:"ppid,omitempty"`
	UID       uint32 `json:"uid"`
	User      string `json:"user,omitempty"`
	Exe       string `json:"exe,omitempty"`
	Comm      string `json:"comm,omitempty"`
	ParentExe string `json:"parent_exe,omitempty"`
}

// ExecView is a process lifecycle change.
type ExecView struct {
	Kind     string `json:"kind"` // exec | exit
	ExitCode int32  `json:"exit_code,omitempty"`
}

// FileView is a write summary of one watched file.
type FileView struct {
	Kind          string `json:"kind"` // write_closed | write_idle
	Path          string `json:"path"`
	Device        uint64 `json:"device,omitempty"`
	Inode         uint64 `json:"inode,omitempty"`
	BytesWritten  uint64 `json:"bytes_written"`
	WriteCalls    uint32 `json:"write_calls"`
	ContentSource string `json:"content_source,omitempty"`
	Findings      uint32 `json:"findings"`
}

// FindingView is regulated data seen in a file, without the data.
type FindingView struct {
	DataClass     string       `json:"data_class"`
	Confidence    uint32       `json:"confidence"`
	Path          string       `json:"path,omitempty"`
	Size          uint64       `json:"size,omitempty"`
	ContentSource string       `json:"content_source,omitempty"`
	Matches       []MatchView  `json:"matches"`
	Decision      DecisionView `json:"decision"`
	// Network is set for plaintext classified inside a TLS connection: where it went.
	Network *NetworkTargetView `json:"network,omitempty"`
}

// NetworkTargetView is the connection a network finding's plaintext travelled on.
type NetworkTargetView struct {
	RemoteAddress  string `json:"remote_address,omitempty"`
	RemotePort     uint32 `json:"remote_port,omitempty"`
	Transport      string `json:"transport,omitempty"`
	SNI            string `json:"sni,omitempty"`
	TLSLibrary     string `json:"tls_library,omitempty"`
	Direction      string `json:"direction"` // send | receive | unknown
	BytesInspected uint64 `json:"bytes_inspected,omitempty"`
}

// MatchView is one detector's result: masks and fingerprints only.
type MatchView struct {
	Detector      string   `json:"detector"`
	DataClass     string   `json:"data_class"`
	Confidence    uint32   `json:"confidence"`
	Count         uint32   `json:"count"`
	MaskedSamples []string `json:"masked_samples,omitempty"`
	Fingerprints  []string `json:"fingerprints,omitempty"`
	Evidence      string   `json:"evidence,omitempty"`
}

// DecisionView is what policy decided.
type DecisionView struct {
	Action         string   `json:"action"`
	ActionTaken    string   `json:"action_taken"`
	Severity       string   `json:"severity"`
	RuleID         string   `json:"rule_id,omitempty"`
	PolicyName     string   `json:"policy_name,omitempty"`
	PolicyVersion  string   `json:"policy_version,omitempty"`
	ComplianceTags []string `json:"compliance_tags,omitempty"`
	Monitor        bool     `json:"monitor,omitempty"`
	Enforcement    string   `json:"enforcement,omitempty"`
	ConsentID      string   `json:"consent_id,omitempty"`
	ExceptionID    string   `json:"exception_id,omitempty"`
}

// FlowView is one network connection (or UDP flow) summary. Reviewed: the five-tuple,
// byte counts, outcome, and what the traffic analyzer named (app, destination name, TLS
// SNI/JA4/ALPN/version, DNS query name). Left out: the kernel socket cookie (a local join
// key with no meaning outside the host) and, as everywhere, process arguments.
type FlowView struct {
	Transport     string     `json:"transport"`
	LocalAddress  string     `json:"local_address,omitempty"`
	LocalPort     uint32     `json:"local_port,omitempty"`
	RemoteAddress string     `json:"remote_address,omitempty"`
	RemotePort    uint32     `json:"remote_port,omitempty"`
	Direction     string     `json:"direction"` // outbound | inbound | unknown
	BytesSent     uint64     `json:"bytes_sent"`
	BytesReceived uint64     `json:"bytes_received"`
	StartTime     *time.Time `json:"start_time,omitempty"`
	EndTime       *time.Time `json:"end_time,omitempty"`
	// State is how the flow ended: closed, idle, denied, failed, agent_stopped, unknown.
	State    string `json:"state"`
	Action   string `json:"action"`
	Denied   bool   `json:"denied,omitempty"`
	RuleID   string `json:"rule_id,omitempty"`
	UDPSends uint64 `json:"udp_sends,omitempty"`

	App         string   `json:"app,omitempty"`
	AppName     string   `json:"app_name,omitempty"`
	AppCategory string   `json:"app_category,omitempty"`
	Name        string   `json:"name,omitempty"`
	NameSource  string   `json:"name_source,omitempty"`
	AppProtocol string   `json:"app_protocol,omitempty"`
	SNI         string   `json:"sni,omitempty"`
	ALPN        []string `json:"alpn,omitempty"`
	JA4         string   `json:"ja4,omitempty"`
	TLSVersion  string   `json:"tls_version,omitempty"`
	ECH         bool     `json:"ech,omitempty"`
	DNSQuery    string   `json:"dns_query,omitempty"`
}

// CheckpointView is a signed tree head of the collector's audit log.
type CheckpointView struct {
	// Origin names the log (the signing key's name).
	Origin string `json:"origin"`
	Size   int64  `json:"size"`
	// RootHash is the base64 Merkle tree root over the first Size records.
	RootHash string `json:"root_hash"`
	// Note is the whole signed note (C2SP checkpoint body and ed25519 signature line), so
	// the SIEM's copy can be checked with wardctl audit verify --checkpoint.
	Note string `json:"signed_note"`
}

// HealthView is the agent's self-report.
type HealthView struct {
	Probes               []ProbeView       `json:"probes,omitempty"`
	Drops                map[string]uint64 `json:"drops,omitempty"`
	SpoolBytes           uint64            `json:"spool_bytes"`
	SpoolEvents          uint64            `json:"spool_events"`
	SpoolFindingsEvicted uint64            `json:"spool_findings_evicted"`
	PolicyVersion        uint64            `json:"policy_version"`
}

// ProbeView is one kernel hook's state.
type ProbeView struct {
	Name     string `json:"name"`
	Hook     string `json:"hook,omitempty"`
	Attached bool   `json:"attached"`
	Error    string `json:"error,omitempty"`
}

// NewView builds the allow-listed view of it.
func NewView(it Item) View {
	if c := it.Checkpoint; c != nil {
		return View{
			ID: c.ID(), Time: c.CreatedAt.UTC(), ReceivedAt: c.CreatedAt.UTC(), Kind: KindAuditCheckpoint,
			Host:       HostView{Hostname: c.Hostname},
			Checkpoint: &CheckpointView{Origin: c.Origin, Size: c.Size, RootHash: c.RootHash, Note: c.Note},
		}
	}
	ev := it.Event
	v := View{
		ID:         ev.GetId(),
		AgentID:    ev.GetAgentId(),
		Seq:        ev.GetSeq(),
		Time:       ev.GetTime().AsTime().UTC(),
		ReceivedAt: it.ReceivedAt.UTC(),
		Host: HostView{
			Hostname:     ev.GetHost().GetHostname(),
			MachineID:    ev.GetHost().GetMachineId(),
			OS:           ev.GetHost().GetOs(),
			Kernel:       ev.GetHost().GetKernel(),
			AgentVersion: ev.GetHost().GetAgentVersion(),
		},
	}
	switch p := ev.GetPayload().(type) {
	case *wardv1.Event_Process:
		v.Kind = "process"
		v.Process = processView(p.Process.GetProcess())
		v.Exec = &ExecView{Kind: enumName(p.Process.GetKind().String(), "KIND_"), ExitCode: p.Process.GetExitCode()}
	case *wardv1.Event_File:
		f := p.File
		v.Kind = "file"
		v.Process = processView(f.GetProcess())
		v.File = &FileView{
			Kind: enumName(f.GetKind().String(), "KIND_"), Path: f.GetPath(), Device: f.GetDevice(), Inode: f.GetInode(),
			BytesWritten: f.GetBytesWritten(), WriteCalls: f.GetWriteCalls(),
			ContentSource: enumName(f.GetContentSource().String(), "CONTENT_SOURCE_"), Findings: f.GetFindings(),
		}
	case *wardv1.Event_Finding:
		f := p.Finding
		v.Kind = "finding"
		v.Process = processView(f.GetProcess())
		d := f.GetDecision()
		fv := &FindingView{
			DataClass:     DataClassName(f.GetDataClass()),
			Confidence:    f.GetConfidence(),
			Path:          f.GetFile().GetPath(),
			Size:          f.GetFile().GetSize(),
			ContentSource: enumName(f.GetFile().GetContentSource().String(), "CONTENT_SOURCE_"),
			Matches:       []MatchView{},
			Decision: DecisionView{
				Action: ActionName(d.GetAction()), ActionTaken: ActionName(d.GetActionTaken()),
				Severity: SeverityName(d.GetSeverity()), RuleID: d.GetRuleId(), PolicyName: d.GetPolicyName(),
				PolicyVersion: d.GetPolicyVersion(), ComplianceTags: d.GetComplianceTags(), Monitor: d.GetMonitor(),
				Enforcement: d.GetEnforcement(), ConsentID: d.GetConsentId(), ExceptionID: d.GetExceptionId(),
			},
		}
		for _, m := range f.GetMatches() {
			fv.Matches = append(fv.Matches, MatchView{
				Detector: m.GetDetector(), DataClass: DataClassName(m.GetDataClass()), Confidence: m.GetConfidence(),
				Count: m.GetCount(), MaskedSamples: m.GetMaskedSamples(), Fingerprints: m.GetFingerprints(),
				Evidence: m.GetEvidence(),
			})
		}
		if n := f.GetNetwork(); n != nil {
			fv.Network = &NetworkTargetView{
				RemoteAddress: n.GetRemoteAddress(), RemotePort: n.GetRemotePort(), Transport: n.GetTransport(),
				SNI: n.GetSni(), TLSLibrary: n.GetTlsLibrary(), Direction: enumName(n.GetDirection().String(), "DIRECTION_"),
				BytesInspected: n.GetBytesInspected(),
			}
			if fv.Network.Direction == "unspecified" {
				fv.Network.Direction = "unknown"
			}
		}
		v.Finding = fv
	case *wardv1.Event_Health:
		h := p.Health
		hv := &HealthView{
			Drops: h.GetDrops(), SpoolBytes: h.GetSpoolBytes(), SpoolEvents: h.GetSpoolEvents(),
			SpoolFindingsEvicted: h.GetSpoolFindingsEvicted(), PolicyVersion: h.GetPolicy().GetVersion(),
		}
		for _, p := range h.GetProbes() {
			hv.Probes = append(hv.Probes, ProbeView{Name: p.GetName(), Hook: p.GetHook(), Attached: p.GetAttached(), Error: p.GetError()})
		}
		v.Kind = "health"
		v.Health = hv
	case *wardv1.Event_Flow:
		v.Kind = "flow"
		v.Process = processView(p.Flow.GetProcess())
		v.Flow = flowView(p.Flow)
	case *wardv1.Event_Fleet:
		v.Kind = "fleet"
		v.Fleet = fleetView(p.Fleet)
	default:
		// A payload kind added to the protocol after this view: pass the envelope and the
		// kind's name through, none of its fields (they have not been reviewed for leaks).
		m := ev.ProtoReflect()
		if od := m.Descriptor().Oneofs().ByName("payload"); od != nil {
			if fd := m.WhichOneof(od); fd != nil {
				v.Kind = string(fd.Name())
				if fd.Message() != nil {
					v.PayloadType = string(fd.Message().FullName())
				}
			}
		}
		if v.Kind == "" {
			v.Kind = "unknown"
		}
	}
	return v
}

// Known reports whether the view's kind is one this build maps field by field.
func (v View) Known() bool { return v.PayloadType == "" && v.Kind != "unknown" }

// Severity returns the finding's severity, or SEVERITY_UNSPECIFIED for other kinds.
func Severity(ev *wardv1.Event) wardv1.Severity {
	return ev.GetFinding().GetDecision().GetSeverity()
}

func flowView(f *wardv1.NetworkFlow) *FlowView {
	fv := &FlowView{
		Transport: f.GetTransport(), LocalAddress: f.GetLocalAddress(), LocalPort: f.GetLocalPort(),
		RemoteAddress: f.GetRemoteAddress(), RemotePort: f.GetRemotePort(),
		Direction: enumName(f.GetDirection().String(), "DIRECTION_"),
		BytesSent: f.GetBytesSent(), BytesReceived: f.GetBytesReceived(),
		State:  enumName(f.GetState().String(), "STATE_"),
		Action: ActionName(f.GetAction()), Denied: f.GetDenied(), RuleID: f.GetRuleId(), UDPSends: f.GetUdpSends(),
		App: f.GetApp(), AppName: f.GetAppName(), AppCategory: f.GetAppCategory(),
		Name: f.GetName(), NameSource: f.GetNameSource(), AppProtocol: f.GetAppProtocol(),
		SNI: f.GetSni(), ALPN: f.GetAlpn(), JA4: f.GetJa4(), TLSVersion: f.GetTlsVersion(), ECH: f.GetEch(),
		DNSQuery: f.GetDnsQuery(),
	}
	if fv.Direction == "unspecified" {
		fv.Direction = "unknown"
	}
	if fv.State == "unspecified" {
		fv.State = "unknown"
	}
	if f.GetStartTime() != nil {
		t := f.GetStartTime().AsTime().UTC()
		fv.StartTime = &t
	}
	if f.GetEndTime() != nil {
		t := f.GetEndTime().AsTime().UTC()
		fv.EndTime = &t
	}
	return fv
}

func processView(p *wardv1.Process) *ProcessView {
	if p == nil {
		return nil
	}
	return &ProcessView{PID: p.GetPid(), PPID: p.GetPpid(), UID: p.GetUid(), User: p.GetUser(),
		Exe: p.GetExe(), Comm: p.GetComm(), ParentExe: p.GetParentExe()}
}

// SeverityName is the lower-case short name of s ("high"), "unknown" for unspecified.
func SeverityName(s wardv1.Severity) string {
	if s == wardv1.Severity_SEVERITY_UNSPECIFIED {
		return "unknown"
	}
	return enumName(s.String(), "SEVERITY_")
}

// ActionName is the lower-case short name of a ("block"), "unknown" for unspecified.
func ActionName(a wardv1.Action) string {
	if a == wardv1.Action_ACTION_UNSPECIFIED {
		return "unknown"
	}
	return enumName(a.String(), "ACTION_")
}

// DataClassName is the lower-case short name of c ("part2", "phi").
func DataClassName(c wardv1.DataClass) string {
	if c == wardv1.DataClass_DATA_CLASS_UNSPECIFIED {
		return "unknown"
	}
	return enumName(c.String(), "DATA_CLASS_")
}

// ParseSeverity reads a configured severity name ("medium" or "SEVERITY_MEDIUM").
func ParseSeverity(s string) (wardv1.Severity, bool) {
	u := strings.ToUpper(strings.TrimSpace(s))
	if !strings.HasPrefix(u, "SEVERITY_") {
		u = "SEVERITY_" + u
	}
	v, ok := wardv1.Severity_value[u]
	return wardv1.Severity(v), ok
}

func enumName(s, prefix string) string {
	return strings.ToLower(strings.TrimPrefix(s, prefix))
}
