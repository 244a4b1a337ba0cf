package core

import (
	"time"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
)

// FleetView is the collector's alert about an agent's reporting (kind "fleet"). Reviewed:
// the alert kind, the agent and its host name, when it was last heard from and for how
// long it was silent; nothing in it comes from monitored content.
type FleetView struct {
	// Kind is agent_silent, agent_back or agent_revoked_contact.
	Kind     string     `json:"kind"`
	AgentID  string     `json:"agent_id"`
	Hostname string     `json:"hostname,omitempty"`
	LastSeen *time.Time `json:"last_seen,omitempty"`
	// SilentForSeconds is how long the agent had been silent (agent_back: in total).
	SilentForSeconds uint64 `json:"silent_for_seconds"`
}

func fleetView(f *wardv1.FleetAlert) *FleetView {
	fv := &FleetView{
		Kind: enumName(f.GetKind().String(), "KIND_"), AgentID: f.GetAgentId(), Hostname: f.GetHostname(),
		SilentForSeconds: f.GetSilentForSeconds(),
	}
	if f.GetLastSeen() != nil {
		t := f.GetLastSeen().AsTime().UTC()
		fv.LastSeen = &t
	}
	return fv
}
