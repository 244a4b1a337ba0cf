// Package ocsf maps Ward events to OCSF 1.x: findings to Data Security Finding (2006), file
// writes to File System Activity (1001), process lifecycle to Process Activity (1007),
// network flows to Network Activity (4001) or, when the flow carried a DNS query, DNS
// Activity (4003), and the collector's audit-log checkpoints to Event Log Activity (1008).
// Health and payload kinds this build does not know have no class here and are skipped
// (core.ErrSkip), never squeezed into a wrong class. Security Finding (2001) is deprecated
// and never emitted.
package ocsf

import (
	"fmt"
	"path"
	"strconv"
	"strings"

	"github.com/ward-dlp/ward/collector/sinks/core"
)

// Class and category identifiers used here.
const (
	ClassFileSystemActivity  = 1001
	ClassProcessActivity     = 1007
	ClassEventLogActivity    = 1008
	ClassDataSecurityFinding = 2006
	ClassNetworkActivity     = 4001
	ClassDNSActivity         = 4003

	CategorySystem   = 1
	CategoryFindings = 2
	CategoryNetwork  = 4

	// DefaultVersion is the OCSF schema version events claim unless configured otherwise.
	DefaultVersion = "1.8.0"
)

// Options are the mapping's settings.
type Options struct {
	// Version goes to metadata.version; some consumers (AWS Security Hub) need an older one.
	Version string
	// ProductVersion is the collector's version, in metadata.product.version.
	ProductVersion string
	// DeviceTypeID is device.type_id: 2 Desktop (default), 3 Laptop, 1 Server, 0 Unknown.
	DeviceTypeID int
}

// Event is one OCSF event as a JSON object.
type Event = map[string]any

// Map returns the OCSF event for v, or an error wrapping core.ErrSkip when its kind has no
// OCSF class here.
func Map(v core.View, o Options) (Event, error) {
	if o.Version == "" {
		o.Version = DefaultVersion
	}
	if o.DeviceTypeID == 0 {
		o.DeviceTypeID = 2
	}
	switch {
	case v.Finding != nil:
		return finding(v, o), nil
	case v.File != nil:
		return fileActivity(v, o), nil
	case v.Exec != nil:
		return processActivity(v, o)
	case v.Flow != nil && v.Flow.DNSQuery != "":
		return dnsActivity(v, o), nil
	case v.Flow != nil:
		return networkActivity(v, o), nil
	case v.Checkpoint != nil:
		return checkpointActivity(v, o), nil
	case v.Fleet != nil:
		return fleetFinding(v, o), nil
	default:
		return nil, core.Skip("no OCSF class for kind " + v.Kind)
	}
}

func base(v core.View, o Options, class, category, activity, severity int) Event {
	return Event{
		"class_uid":    class,
		"category_uid": category,
		"activity_id":  activity,
		"type_uid":     class*100 + activity,
		"time":         v.Time.UnixMilli(),
		"severity_id":  severity,
		"metadata": map[string]any{
			"version":     o.Version,
			"uid":         v.ID,
			"logged_time": v.ReceivedAt.UnixMilli(),
			"product": map[string]any{
				"name": "Ward", "vendor_name": "Ward", "version": o.ProductVersion,
			},
		},
		"device": device(v, o),
	}
}

func device(v core.View, o Options) map[string]any {
	d := map[string]any{"type_id": o.DeviceTypeID}
	if v.Host.Hostname != "" {
		d["hostname"] = v.Host.Hostname
	}
	if v.Host.MachineID != "" {
		d["uid"] = v.Host.MachineID
	}
	osv := map[string]any{"name": "Linux", "type_id": 200}
	if v.Host.Kernel != "" {
		osv["kernel_release"] = v.Host.Kernel
	}
	d["os"] = osv
	d["agent_list"] = []any{map[string]any{"uid": v.AgentID, "name": "ward-agent", "version": v.Host.AgentVersion}}
	return d
}

func actor(p *core.ProcessView) map[string]any {
	if p == nil {
		return map[string]any{}
	}
	user := map[string]any{"uid": itoa(p.UID)}
	if p.User != "" {
		user["name"] = p.User
	}
	return map[string]any{"user": user, "process": process(p)}
}

func process(p *core.ProcessView) map[string]any {
	pr := map[string]any{"pid": p.PID}
	if p.Comm != "" {
		pr["name"] = p.Comm
	} else if p.Exe != "" {
		pr["name"] = path.Base(p.Exe)
	}
	if p.Exe != "" {
		pr["file"] = fileObject(p.Exe, 0)
	}
	if p.ParentExe != "" || p.PPID != 0 {
		parent := map[string]any{"pid": p.PPID}
		if p.ParentExe != "" {
			parent["file"] = fileObject(p.ParentExe, 0)
			parent["name"] = path.Base(p.ParentExe)
		}
		pr["parent_process"] = parent
	}
	return pr
}

func fileObject(p string, size uint64) map[string]any {
	f := map[string]any{"path": p, "name": path.Base(p), "type_id": 1} // 1: Regular File
	if dir := path.Dir(p); dir != "." {
		f["parent_folder"] = dir
	}
	if size > 0 {
		f["size"] = size
	}
	return f
}

// SeverityID maps a Ward severity name to OCSF severity_id.
func SeverityID(s string) int {
	switch s {
	case "info":
		return 1
	case "low":
		return 2
	case "medium":
		return 3
	case "high":
		return 4
	case "critical":
		return 5
	}
	return 0
}

func finding(v core.View, o Options) Event {
	f := v.Finding
	e := base(v, o, ClassDataSecurityFinding, CategoryFindings, 1, SeverityID(f.Decision.Severity))
	e["actor"] = actor(v.Process)
	// What was done: block/kill denied the activity; record/alert observed it.
	switch f.Decision.ActionTaken {
	case "block", "kill":
		e["action_id"], e["disposition_id"] = 2, 2 // Denied, Blocked
	default:
		e["action_id"], e["disposition_id"] = 3, 1 // Observed, Allowed
	}
	e["is_alert"] = f.Decision.ActionTaken != "record"
	e["status_id"] = 1 // New
	e["confidence_score"] = f.Confidence

	var detectors, samples []string
	for _, m := range f.Matches {
		detectors = append(detectors, m.Detector)
		samples = append(samples, m.MaskedSamples...)
	}
	title := className(f.DataClass) + " data in a watched file"
	info := map[string]any{
		"uid":          v.ID,
		"title":        title,
		"created_time": v.Time.UnixMilli(),
		"types":        []string{f.DataClass},
		"data_sources": []string{"ward-agent"},
		"analytic":     analytic(detectors),
	}
	e["finding_info"] = info
	ds := map[string]any{
		"data_lifecycle_state_id": 1, // at rest: the content was written to a file
		"detection_system_id":     1, // endpoint
		"detection_pattern":       strings.Join(detectors, ","),
	}
	if len(samples) > 0 {
		ds["pattern_match"] = strings.Join(samples, ",") // masked samples only
	}
	if f.Decision.RuleID != "" || f.Decision.PolicyName != "" {
		ds["policy"] = map[string]any{"uid": f.Decision.RuleID, "name": nonEmpty(f.Decision.PolicyName, f.Decision.RuleID),
			"version": f.Decision.PolicyVersion}
	}
	e["data_security"] = ds
	if f.Path != "" {
		e["file"] = fileObject(f.Path, f.Size)
	}
	matches := make([]any, 0, len(f.Matches))
	for _, m := range f.Matches {
		matches = append(matches, map[string]any{
			"detector": m.Detector, "data_class": m.DataClass, "count": m.Count, "confidence": m.Confidence,
			"masked_samples": m.MaskedSamples, "fingerprints": m.Fingerprints,
		})
	}
	e["unmapped"] = map[string]any{"ward": map[string]any{
		"agent_id":        v.AgentID,
		"seq":             v.Seq,
		"data_class":      f.DataClass,
		"action":          f.Decision.Action,
		"action_taken":    f.Decision.ActionTaken,
		"monitor":         f.Decision.Monitor,
		"compliance_tags": f.Decision.ComplianceTags,
		"consent_id":      f.Decision.ConsentID,
		"exception_id":    f.Decision.ExceptionID,
		"matches":         matches,
	}}
	return e
}

func analytic(detectors []string) map[string]any {
	name := strings.Join(detectors, ",")
	typeID := 99 // Other
	for _, d := range detectors {
		if strings.HasPrefix(d, "edm.") {
			typeID = 9 // Exact Data Match
		}
	}
	a := map[string]any{"name": name, "type_id": typeID}
	if typeID == 99 {
		a["type"] = "Other"
	}
	return a
}

func fileActivity(v core.View, o Options) Event {
	e := base(v, o, ClassFileSystemActivity, CategorySystem, 3, 1) // Update, Informational
	e["actor"] = actor(v.Process)
	f := fileObject(v.File.Path, 0)
	e["file"] = f
	e["unmapped"] = map[string]any{"ward": map[string]any{
		"agent_id": v.AgentID, "seq": v.Seq, "kind": v.File.Kind, "bytes_written": v.File.BytesWritten,
		"write_calls": v.File.WriteCalls, "content_source": v.File.ContentSource, "findings": v.File.Findings,
	}}
	return e
}

func processActivity(v core.View, o Options) (Event, error) {
	var activity int
	switch v.Exec.Kind {
	case "exec":
		activity = 1 // Launch
	case "exit":
		activity = 2 // Terminate
	default:
		return nil, core.Skip("process event of kind " + v.Exec.Kind)
	}
	if v.Process == nil {
		return nil, core.Skip("process event without a process")
	}
	e := base(v, o, ClassProcessActivity, CategorySystem, activity, 1)
	e["actor"] = actor(&core.ProcessView{PID: v.Process.PPID, Exe: v.Process.ParentExe, UID: v.Process.UID, User: v.Process.User})
	e["process"] = process(v.Process)
	if activity == 2 {
		e["exit_code"] = v.Exec.ExitCode
	}
	return e, nil
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

func itoa(u uint32) string { return strconv.FormatUint(uint64(u), 10) }

// Payload formats a JSON sink can send.
const (
	// FormatOCSF sends OCSF events; kinds without a class are skipped.
	FormatOCSF = "ocsf"
	// FormatJSON sends Ward's own allow-listed view; every kind passes, unknown ones as
	// envelope and kind name only.
	FormatJSON = "json"
)

// CheckFormat validates a configured payload format ("" means ocsf).
func CheckFormat(f string) error {
	switch f {
	case "", FormatOCSF, FormatJSON:
		return nil
	}
	return fmt.Errorf("format %q: want ocsf or json", f)
}

// Payload is the JSON value a sink sends for it in format.
func Payload(format string, it core.Item, o Options) (any, error) {
	v := core.NewView(it)
	if format == FormatJSON {
		return v, nil
	}
	return Map(v, o)
}
