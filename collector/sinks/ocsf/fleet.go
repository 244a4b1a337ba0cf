package ocsf

import (
	"strconv"
	"time"

	"github.com/ward-dlp/ward/collector/sinks/core"
)

// ClassDetectionFinding is OCSF Detection Finding, the class of the collector's fleet alerts.
const ClassDetectionFinding = 2004

// fleetFinding maps a fleet alert to Detection Finding (2004).
//
// Why 2004: OCSF 1.x has no agent-status event class. Device Inventory Info (5001) is an
// inventory snapshot and Device Config State Change (5019) a configuration change; neither
// is something a SOC triages. An endpoint agent going quiet is a detection about a device
// (it may have been stopped, removed or cut off), and 2004's lifecycle fits it: AGENT_SILENT
// creates the finding (activity 1, status New), AGENT_BACK closes the same finding
// (activity 3, status Resolved, same finding_info.uid), so a SIEM correlates the pair
// without Ward-specific rules. A revoked agent calling in is a separate finding (High).
func fleetFinding(v core.View, o Options) Event {
	fl := v.Fleet
	activity, severity, status := 1, 3, 1 // Create, Medium, New
	title := "Ward agent stopped reporting"
	switch fl.Kind {
	case "agent_back":
		activity, severity, status = 3, 1, 4 // Close, Informational, Resolved
		title = "Ward agent reporting again"
	case "agent_revoked_contact":
		severity = 4 // High
		title = "Revoked Ward agent contacted the collector"
	}
	e := base(v, o, ClassDetectionFinding, CategoryFindings, activity, severity)
	e["status_id"] = status
	e["is_alert"] = fl.Kind != "agent_back"
	// One uid per silence episode: the last contact before it is the same in the silent
	// and the back alert.
	uid := fl.AgentID + ":" + fl.Kind
	if fl.Kind == "agent_silent" || fl.Kind == "agent_back" {
		uid = fl.AgentID + ":silent"
		if fl.LastSeen != nil {
			uid += ":" + strconv.FormatInt(fl.LastSeen.UnixMilli(), 10)
		}
	} else {
		uid += ":" + strconv.FormatInt(v.Time.UnixMilli(), 10)
	}
	info := map[string]any{
		"uid":          uid,
		"title":        title,
		"desc":         fleetDesc(fl),
		"created_time": v.Time.UnixMilli(),
		"types":        []string{"ward.fleet." + fl.Kind},
		"data_sources": []string{"ward-collector"},
		"analytic":     map[string]any{"name": "ward.fleet." + fl.Kind, "type_id": 1, "type": "Rule"},
	}
	if fl.LastSeen != nil {
		info["first_seen_time"] = fl.LastSeen.UnixMilli()
	}
	e["finding_info"] = info
	ward := map[string]any{"agent_id": fl.AgentID, "kind": fl.Kind, "silent_for_seconds": fl.SilentForSeconds}
	if fl.LastSeen != nil {
		ward["last_seen"] = fl.LastSeen.UnixMilli()
	}
	e["unmapped"] = map[string]any{"ward": ward}
	return e
}

func fleetDesc(fl *core.FleetView) string {
	host := nonEmpty(fl.Hostname, fl.AgentID)
	silent := (time.Duration(fl.SilentForSeconds) * time.Second).String()
	switch fl.Kind {
	case "agent_silent":
		return "No contact from the agent on " + host + " for " + silent
	case "agent_back":
		return "The agent on " + host + " is reporting again after " + silent + " of silence"
	case "agent_revoked_contact":
		return "The revoked agent of " + host + " presented its certificate to the collector"
	}
	return "Fleet alert " + fl.Kind + " for " + host
}
