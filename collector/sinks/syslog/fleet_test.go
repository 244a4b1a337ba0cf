package syslog

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/collector/sinks/core"
)

func fleetItem(kind wardv1.FleetAlert_Kind) core.Item {
	last := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ev := &wardv1.Event{Id: "0190a000-0000-7000-8000-000000000001", AgentId: "agent-7", Time: timestamppb.New(last.Add(time.Hour)),
		Host: &wardv1.Host{Hostname: "ws-12", MachineId: "m-12"},
		Payload: &wardv1.Event_Fleet{Fleet: &wardv1.FleetAlert{Kind: kind, AgentId: "agent-7", Hostname: "ws-12",
			LastSeen: timestamppb.New(last), SilentForSeconds: 3600}}}
	return core.Item{Event: ev, ReceivedAt: last.Add(time.Hour)}
}

func TestCEFFleet(t *testing.T) {
	v := core.NewView(fleetItem(wardv1.FleetAlert_KIND_AGENT_SILENT))
	rec := parseCEF(t, CEF(v, "1.0"))
	if rec.header[4] != "ward.fleet.agent_silent" || rec.header[5] != "Agent stopped reporting" || rec.header[6] != "5" {
		t.Fatalf("header %q", rec.header)
	}
	for k, want := range map[string]string{"dvchost": "ws-12", "deviceExternalId": "agent-7", "cs1": "agent_silent",
		"cn1": "3600", "deviceCustomDate1": "1767225600000", "deviceCustomDate1Label": "lastSeen"} {
		if rec.ext[k] != want {
			t.Errorf("%s = %q, want %q", k, rec.ext[k], want)
		}
	}
	if syslogSeverity(v) != 4 || msgID(v) != "FLEET_ALERT" {
		t.Errorf("syslog severity %d msgid %s", syslogSeverity(v), msgID(v))
	}
	back := parseCEF(t, CEF(core.NewView(fleetItem(wardv1.FleetAlert_KIND_AGENT_BACK)), "1.0"))
	revoked := parseCEF(t, CEF(core.NewView(fleetItem(wardv1.FleetAlert_KIND_AGENT_REVOKED_CONTACT)), "1.0"))
	if back.header[6] != "1" || revoked.header[6] != "8" || revoked.header[4] != "ward.fleet.agent_revoked_contact" {
		t.Fatalf("back %q revoked %q", back.header, revoked.header)
	}
}
