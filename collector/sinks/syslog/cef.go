package syslog

import (
	"path"
	"strconv"
	"strings"

	"github.com/ward-dlp/ward/collector/sinks/core"
)

// CEF header and extension escaping (ArcSight CEF rules): in the header, \ and | are
// escaped; in extension values, \ and = are escaped and line breaks become \n / \r. Keys are
// fixed ASCII names and never need escaping.
var (
	headerEscaper = strings.NewReplacer(`\`, `\\`, `|`, `\|`, "\r", " ", "\n", " ")
	extEscaper    = strings.NewReplacer(`\`, `\\`, `=`, `\=`, "\r", `\r`, "\n", `\n`)
)

// cefField is one extension key/value.
type cefField struct{ k, v string }

// CEF renders v as a CEF:0 line. Findings use the dictionary keys (rt act suser suid spid
// sproc fname filePath fsize dvchost externalId deviceExternalId msg) plus labelled custom
// strings for what CEF has no key for (detectors, masked samples, fingerprints, rule, data
// class, compliance tags). Other kinds carry what applies; unknown kinds pass through with
// the envelope only.
func CEF(v core.View, version string) string {
	var sigID, name string
	sev := 1
	f := []cefField{{"rt", strconv.FormatInt(v.Time.UnixMilli(), 10)}}
	if v.Host.Hostname != "" {
		f = append(f, cefField{"dvchost", v.Host.Hostname})
	}
	if v.AgentID != "" {
		f = append(f, cefField{"deviceExternalId", v.AgentID})
	}
	f = append(f, cefField{"externalId", v.ID})
	if p := v.Process; p != nil {
		if p.User != "" {
			f = append(f, cefField{"suser", p.User})
		}
		f = append(f, cefField{"suid", strconv.FormatUint(uint64(p.UID), 10)},
			cefField{"spid", strconv.FormatUint(uint64(p.PID), 10)})
		if p.Exe != "" {
			f = append(f, cefField{"sproc", p.Exe})
		}
	}
	switch {
	case v.Finding != nil:
		fd := v.Finding
		sigID = nonEmpty(fd.Decision.RuleID, "ward.finding")
		name = className(fd.DataClass) + " data detected in a watched file"
		sev = cefSeverity(fd.Decision.Severity)
		f = append(f, cefField{"act", fd.Decision.ActionTaken})
		if fd.Path != "" {
			f = append(f, cefField{"fname", path.Base(fd.Path)}, cefField{"filePath", fd.Path})
		}
		if fd.Size > 0 {
			f = append(f, cefField{"fsize", strconv.FormatUint(fd.Size, 10)})
		}
		var detectors, samples, fps []string
		var count uint32
		for _, m := range fd.Matches {
			detectors = append(detectors, m.Detector)
			samples = append(samples, m.MaskedSamples...)
			fps = append(fps, m.Fingerprints...)
			count += m.Count
		}
		f = append(f,
			cefField{"cs1Label", "detectors"}, cefField{"cs1", strings.Join(detectors, ",")},
			cefField{"cs2Label", "maskedSamples"}, cefField{"cs2", strings.Join(samples, ",")},
			cefField{"cs3Label", "fingerprints"}, cefField{"cs3", strings.Join(fps, ",")},
			cefField{"cs4Label", "ruleId"}, cefField{"cs4", fd.Decision.RuleID},
			cefField{"cs5Label", "dataClass"}, cefField{"cs5", fd.DataClass},
			cefField{"cs6Label", "complianceTags"}, cefField{"cs6", strings.Join(fd.Decision.ComplianceTags, ",")},
			cefField{"cn1Label", "matchCount"}, cefField{"cn1", strconv.FormatUint(uint64(count), 10)},
			cefField{"cn2Label", "confidence"}, cefField{"cn2", strconv.FormatUint(uint64(fd.Confidence), 10)},
			cefField{"msg", "rule " + fd.Decision.RuleID + " (" + fd.Decision.PolicyName + " " + fd.Decision.PolicyVersion +
				"): action " + fd.Decision.Action + ", taken " + fd.Decision.ActionTaken},
		)
	case v.File != nil:
		sigID, name = "ward.file."+v.File.Kind, "Watched file written"
		f = append(f, cefField{"fname", path.Base(v.File.Path)}, cefField{"filePath", v.File.Path},
			cefField{"cn1Label", "bytesWritten"}, cefField{"cn1", strconv.FormatUint(v.File.BytesWritten, 10)},
			cefField{"cn2Label", "findings"}, cefField{"cn2", strconv.FormatUint(uint64(v.File.Findings), 10)})
	case v.Exec != nil:
		sigID, name = "ward.process."+v.Exec.Kind, "Process "+v.Exec.Kind
	case v.Flow != nil:
		sigID, name, sev, f = cefFlow(v.Flow, f)
	case v.Checkpoint != nil:
		c := v.Checkpoint
		sigID, name = "ward.audit.checkpoint", "Audit log checkpoint"
		f = append(f, cefField{"cs1Label", "auditLog"}, cefField{"cs1", c.Origin},
			cefField{"cn1Label", "treeSize"}, cefField{"cn1", strconv.FormatInt(c.Size, 10)},
			cefField{"cs2Label", "rootHash"}, cefField{"cs2", c.RootHash},
			cefField{"cs3Label", "signedNote"}, cefField{"cs3", c.Note})
	case v.Fleet != nil:
		sigID, name, sev, f = cefFleet(v.Fleet, f)
	case v.Health != nil:
		sigID, name = "ward.health", "Agent health"
		var dropped uint64
		for _, n := range v.Health.Drops {
			dropped += n
		}
		f = append(f, cefField{"cn1Label", "dropped"}, cefField{"cn1", strconv.FormatUint(dropped, 10)},
			cefField{"cn2Label", "spoolFindingsEvicted"}, cefField{"cn2", strconv.FormatUint(v.Health.SpoolFindingsEvicted, 10)})
		if dropped > 0 || v.Health.SpoolFindingsEvicted > 0 {
			sev = 5
		}
	default:
		sigID, name = "ward."+v.Kind, "Ward "+v.Kind+" event"
	}
	var b strings.Builder
	b.WriteString("CEF:0|Ward|ward-collector|")
	b.WriteString(headerEscaper.Replace(version))
	b.WriteByte('|')
	b.WriteString(headerEscaper.Replace(sigID))
	b.WriteByte('|')
	b.WriteString(headerEscaper.Replace(name))
	b.WriteByte('|')
	b.WriteString(strconv.Itoa(sev))
	b.WriteByte('|')
	for i, kv := range f {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(kv.k)
		b.WriteByte('=')
		b.WriteString(extEscaper.Replace(kv.v))
	}
	return b.String()
}

// cefSeverity maps Ward severities onto CEF's 0-10 scale (0-3 Low, 4-6 Medium, 7-8 High,
// 9-10 Very-High).
func cefSeverity(s string) int {
	switch s {
	case "info":
		return 1
	case "low":
		return 3
	case "medium":
		return 5
	case "high":
		return 8
	case "critical":
		return 10
	}
	return 0
}

func className(c string) string {
	switch c {
	case "part2":
		return "42 CFR Part 2"
	case "phi":
		return "PHI"
	}
	return "Regulated"
}

func nonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// cefFlow adds a network flow's fields: the five-tuple as src/spt/dst/dpt (src is the side
// that initiated), proto, dhost (the analyzer's destination name), app (application
// protocol), the byte counts, start/end, deviceDirection (0 inbound, 1 outbound), and
// labelled custom strings for the catalog app, SNI, JA4, rule and DNS question.
func cefFlow(fl *core.FlowView, f []cefField) (sigID, name string, sev int, out []cefField) {
	sigID, sev = "ward.flow."+fl.State, 1
	switch fl.State {
	case "closed":
		name = "Network connection closed"
	case "denied":
		name, sev = "Network connection denied", 5
	case "failed":
		name = "Network connection failed"
	default:
		name = "Network traffic"
	}
	if fl.DNSQuery != "" {
		sigID, name = "ward.dns.query", "DNS query"
	}
	act := "allowed"
	if fl.Denied || fl.State == "denied" {
		act = "blocked"
	}
	srcIP, srcPort, dstIP, dstPort := fl.LocalAddress, fl.LocalPort, fl.RemoteAddress, fl.RemotePort
	// ArcSight's in is bytes from source to destination, out the reverse.
	in, outb := fl.BytesSent, fl.BytesReceived
	dir := "1"
	if fl.Direction == "inbound" {
		srcIP, srcPort, dstIP, dstPort = dstIP, dstPort, srcIP, srcPort
		in, outb, dir = outb, in, "0"
	}
	f = append(f, cefField{"act", act}, cefField{"proto", strings.ToUpper(fl.Transport)})
	if fl.Direction != "unknown" {
		f = append(f, cefField{"deviceDirection", dir})
	}
	for _, kv := range []cefField{{"src", srcIP}, {"dst", dstIP}, {"dhost", fl.Name}, {"app", fl.AppProtocol}} {
		if kv.v != "" {
			f = append(f, kv)
		}
	}
	if srcPort != 0 {
		f = append(f, cefField{"spt", strconv.FormatUint(uint64(srcPort), 10)})
	}
	if dstPort != 0 {
		f = append(f, cefField{"dpt", strconv.FormatUint(uint64(dstPort), 10)})
	}
	f = append(f, cefField{"in", strconv.FormatUint(in, 10)}, cefField{"out", strconv.FormatUint(outb, 10)})
	if fl.StartTime != nil {
		f = append(f, cefField{"start", strconv.FormatInt(fl.StartTime.UnixMilli(), 10)})
	}
	if fl.EndTime != nil {
		f = append(f, cefField{"end", strconv.FormatInt(fl.EndTime.UnixMilli(), 10)})
	}
	for _, cs := range []struct{ n, label, v string }{
		{"1", "appName", nonEmpty(fl.AppName, fl.App)}, {"2", "sni", fl.SNI}, {"3", "ja4", fl.JA4},
		{"4", "ruleId", fl.RuleID}, {"5", "dnsQuery", fl.DNSQuery}, {"6", "appCategory", fl.AppCategory},
	} {
		if cs.v != "" {
			f = append(f, cefField{"cs" + cs.n + "Label", cs.label}, cefField{"cs" + cs.n, cs.v})
		}
	}
	return sigID, name, sev, f
}
