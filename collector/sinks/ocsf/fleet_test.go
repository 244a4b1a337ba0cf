package ocsf

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/collector/sinks/core"
)

func fleetItem(kind wardv1.FleetAlert_Kind, at time.Time) core.Item {
	last := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ev := &wardv1.Event{Id: "0190a000-0000-7000-8000-000000000001", AgentId: "agent-7", Time: timestamppb.New(at),
		Host: &wardv1.Host{Hostname: "ws-12", MachineId: "m-12", AgentVersion: "0.3.0"},
		Payload: &wardv1.Event_Fleet{Fleet: &wardv1.FleetAlert{Kind: kind, AgentId: "agent-7", Hostname: "ws-12",
			LastSeen: timestamppb.New(last), SilentForSeconds: uint64(at.Sub(last) / time.Second)}}}
	return core.Item{Event: ev, ReceivedAt: at}
}

// TestFleetDetectionFinding: silent opens and back closes the same Detection Finding.
func TestFleetDetectionFinding(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	silent, err := Payload(FormatOCSF, fleetItem(wardv1.FleetAlert_KIND_AGENT_SILENT, t0.Add(20*time.Minute)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	back, err := Payload(FormatOCSF, fleetItem(wardv1.FleetAlert_KIND_AGENT_BACK, t0.Add(3*time.Hour)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	s, b := roundTrip(t, silent), roundTrip(t, back)
	for name, e := range map[string]map[string]any{"silent": s, "back": b} {
		if err := validate(e); err != nil {
			t.Fatalf("%s: %v\n%v", name, err, e)
		}
	}
	si, bi := s["finding_info"].(map[string]any), b["finding_info"].(map[string]any)
	if s["class_uid"] != float64(2004) || s["activity_id"] != float64(1) || s["type_uid"] != float64(200401) ||
		s["severity_id"] != float64(3) || s["status_id"] != float64(1) || s["is_alert"] != true {
		t.Fatalf("silent: %v", s)
	}
	if b["activity_id"] != float64(3) || b["status_id"] != float64(4) || b["severity_id"] != float64(1) {
		t.Fatalf("back: %v", b)
	}
	if si["uid"] != bi["uid"] || si["uid"] != "agent-7:silent:1767225600000" {
		t.Fatalf("silent and back are not the same finding: %v / %v", si["uid"], bi["uid"])
	}
	dev := s["device"].(map[string]any)
	if dev["hostname"] != "ws-12" || dev["uid"] != "m-12" {
		t.Fatalf("device %v", dev)
	}
	rev, err := Payload(FormatOCSF, fleetItem(wardv1.FleetAlert_KIND_AGENT_REVOKED_CONTACT, t0.Add(time.Hour)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := roundTrip(t, rev)
	if err := validate(r); err != nil || r["severity_id"] != float64(4) {
		t.Fatalf("revoked contact: %v %v", err, r)
	}
}
