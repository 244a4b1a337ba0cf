package syslog

import (
	"strconv"
	"time"

	"github.com/ward-dlp/ward/collector/sinks/core"
)

// cefFleet adds a fleet alert's fields: the alert kind (cs1), how long the agent was silent
// (cn1) and when it was last heard from (deviceCustomDate1), with a readable msg. The
// device fields (dvchost, deviceExternalId) already name the agent the alert is about.
func cefFleet(fl *core.FleetView, f []cefField) (sigID, name string, sev int, out []cefField) {
	sigID = "ward.fleet." + fl.Kind
	switch fl.Kind {
	case "agent_silent":
		name, sev = "Agent stopped reporting", 5
	case "agent_back":
		name, sev = "Agent reporting again", 1
	case "agent_revoked_contact":
		name, sev = "Revoked agent contacted the collector", 8
	default:
		name, sev = "Fleet alert", 3
	}
	silent := (time.Duration(fl.SilentForSeconds) * time.Second).String()
	f = append(f, cefField{"cs1Label", "fleetAlert"}, cefField{"cs1", fl.Kind},
		cefField{"cn1Label", "silentForSeconds"}, cefField{"cn1", strconv.FormatUint(fl.SilentForSeconds, 10)})
	if fl.LastSeen != nil {
		f = append(f, cefField{"deviceCustomDate1Label", "lastSeen"},
			cefField{"deviceCustomDate1", strconv.FormatInt(fl.LastSeen.UnixMilli(), 10)})
	}
	msg := name + " after " + silent + " without contact"
	if fl.Kind == "agent_revoked_contact" {
		msg = name
	}
	return sigID, name, sev, append(f, cefField{"msg", msg})
}

// fleetSyslogSeverity: silent is a warning, a revoked agent calling in an error, back
// informational.
func fleetSyslogSeverity(fl *core.FleetView) int {
	switch fl.Kind {
	case "agent_silent":
		return 4
	case "agent_revoked_contact":
		return 3
	}
	return 6
}
