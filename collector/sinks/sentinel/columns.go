package sentinel

import (
	"path"
	"strings"
	"time"

	"github.com/ward-dlp/ward/collector/sinks/core"
)

// Columns is the row Ward sends for v: the reviewed allow-list of columns of the WardEvents_CL
// table (docs/siem.md has the DCR stream declaration with their types). Names follow
// Sentinel's conventions (PascalCase, Computer, SrcIpAddr/DstIpAddr as in the ASIM network
// schema). Empty values are left out; the DCR fills them with null.
func Columns(v core.View) map[string]any {
	r := map[string]any{
		"TimeGenerated": v.Time.UTC().Format(time.RFC3339Nano),
		"EventId":       v.ID,
		"EventKind":     v.Kind,
		"ReceivedTime":  v.ReceivedAt.UTC().Format(time.RFC3339Nano),
		"Computer":      v.Host.Hostname,
	}
	set := func(k string, val any) {
		switch x := val.(type) {
		case string:
			if x == "" {
				return
			}
		case []string:
			if len(x) == 0 {
				return
			}
		}
		r[k] = val
	}
	set("AgentId", v.AgentID)
	if v.Seq > 0 {
		r["AgentSeq"] = v.Seq
	}
	set("MachineId", v.Host.MachineID)
	set("AgentVersion", v.Host.AgentVersion)
	if p := v.Process; p != nil {
		r["ProcessId"] = p.PID
		set("ProcessName", nonEmpty(p.Comm, base(p.Exe)))
		set("ProcessPath", p.Exe)
		set("ParentProcessPath", p.ParentExe)
		r["UserId"] = p.UID
		set("UserName", p.User)
	}
	switch {
	case v.Finding != nil:
		f := v.Finding
		r["Severity"] = f.Decision.Severity
		set("DataClass", f.DataClass)
		r["Confidence"] = f.Confidence
		set("FilePath", f.Path)
		if f.Size > 0 {
			r["FileSize"] = f.Size
		}
		set("Action", f.Decision.Action)
		set("ActionTaken", f.Decision.ActionTaken)
		set("RuleId", f.Decision.RuleID)
		set("PolicyName", f.Decision.PolicyName)
		set("PolicyVersion", f.Decision.PolicyVersion)
		set("ComplianceTags", f.Decision.ComplianceTags)
		var detectors, samples, fps []string
		var count uint32
		for _, m := range f.Matches {
			detectors = append(detectors, m.Detector)
			samples = append(samples, m.MaskedSamples...)
			fps = append(fps, m.Fingerprints...)
			count += m.Count
		}
		set("Detectors", detectors)
		set("MaskedSamples", samples)
		set("Fingerprints", fps)
		r["MatchCount"] = count
	case v.File != nil:
		set("FilePath", v.File.Path)
		set("FileActivity", v.File.Kind)
		r["BytesWritten"] = v.File.BytesWritten
		r["FindingCount"] = v.File.Findings
	case v.Exec != nil:
		set("ProcessActivity", v.Exec.Kind)
		if v.Exec.Kind == "exit" {
			r["ExitCode"] = v.Exec.ExitCode
		}
	case v.Flow != nil:
		fl := v.Flow
		set("NetworkProtocol", strings.ToUpper(fl.Transport))
		set("NetworkDirection", fl.Direction)
		src, sport, dst, dport := fl.LocalAddress, fl.LocalPort, fl.RemoteAddress, fl.RemotePort
		if fl.Direction == "inbound" {
			src, sport, dst, dport = dst, dport, src, sport
		}
		set("SrcIpAddr", src)
		set("DstIpAddr", dst)
		if sport != 0 {
			r["SrcPortNumber"] = sport
		}
		if dport != 0 {
			r["DstPortNumber"] = dport
		}
		r["BytesSent"], r["BytesReceived"] = fl.BytesSent, fl.BytesReceived
		set("FlowState", fl.State)
		set("Action", fl.Action)
		set("RuleId", fl.RuleID)
		set("DstHostname", fl.Name)
		set("DstHostnameSource", fl.NameSource)
		set("AppName", nonEmpty(fl.AppName, fl.App))
		set("AppCategory", fl.AppCategory)
		set("NetworkApplicationProtocol", fl.AppProtocol)
		set("TlsSni", fl.SNI)
		set("TlsVersion", fl.TLSVersion)
		set("TlsJa4", fl.JA4)
		set("DnsQuery", fl.DNSQuery)
		if fl.StartTime != nil {
			r["FlowStartTime"] = fl.StartTime.UTC().Format(time.RFC3339Nano)
		}
		if fl.EndTime != nil {
			r["FlowEndTime"] = fl.EndTime.UTC().Format(time.RFC3339Nano)
		}
	case v.Health != nil:
		var dropped uint64
		for _, n := range v.Health.Drops {
			dropped += n
		}
		r["DroppedEvents"] = dropped
		r["SpoolFindingsEvicted"] = v.Health.SpoolFindingsEvicted
		r["AgentPolicyVersion"] = v.Health.PolicyVersion
	case v.Checkpoint != nil:
		c := v.Checkpoint
		r["AuditLog"] = c.Origin
		r["AuditTreeSize"] = c.Size
		r["AuditRootHash"] = c.RootHash
		r["AuditSignedNote"] = c.Note
	}
	return r
}

func base(p string) string {
	if p == "" {
		return ""
	}
	return path.Base(p)
}

func nonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
