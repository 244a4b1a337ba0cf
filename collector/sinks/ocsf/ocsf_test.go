package ocsf

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/collector/sinks/core"
	"github.com/ward-dlp/ward/collector/sinks/internal/sinktest"
)

// No OCSF JSON schema package exists on the npm registry (ocsf-schema is a 404), so these
// checks are written from the OCSF 1.x class definitions for the classes Ward emits:
// required base attributes, enum ranges, type_uid arithmetic, epoch-millisecond times, and
// each class's required objects.
var classes = map[int]struct {
	category   int
	activities []int
	required   []string
}{
	1001: {1, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 99}, []string{"actor", "device", "file"}},
	1007: {1, []int{0, 1, 2, 3, 4, 5, 99}, []string{"actor", "device", "process"}},
	2004: {2, []int{0, 1, 2, 3, 99}, []string{"finding_info"}},
	2006: {2, []int{0, 1, 2, 3, 99}, []string{"finding_info"}},
}

func validate(e map[string]any) error {
	num := func(k string) (int, error) {
		v, ok := e[k].(float64)
		if !ok || v != float64(int64(v)) {
			return 0, fmt.Errorf("%s: missing or not an integer (%v)", k, e[k])
		}
		return int(v), nil
	}
	for _, k := range []string{"activity_id", "category_uid", "class_uid", "severity_id", "time", "type_uid"} {
		if _, err := num(k); err != nil {
			return err
		}
	}
	class, _ := num("class_uid")
	if class == 2001 {
		return errors.New("class 2001 (Security Finding) is deprecated")
	}
	def, ok := classes[class]
	if !ok {
		return fmt.Errorf("class_uid %d is not a class Ward emits", class)
	}
	cat, _ := num("category_uid")
	act, _ := num("activity_id")
	typ, _ := num("type_uid")
	sev, _ := num("severity_id")
	tm, _ := num("time")
	switch {
	case cat != def.category || class/1000 != cat:
		return fmt.Errorf("category_uid %d does not match class %d", cat, class)
	case typ != class*100+act:
		return fmt.Errorf("type_uid %d != class_uid*100+activity_id", typ)
	case !(sev >= 0 && sev <= 6 || sev == 99):
		return fmt.Errorf("severity_id %d out of the enum", sev)
	case tm < 1_000_000_000_000 || tm > 10_000_000_000_000:
		return fmt.Errorf("time %d is not epoch milliseconds", tm)
	}
	found := false
	for _, a := range def.activities {
		found = found || a == act
	}
	if !found {
		return fmt.Errorf("activity_id %d not defined for class %d", act, class)
	}
	md, _ := e["metadata"].(map[string]any)
	prod, _ := md["product"].(map[string]any)
	if md == nil || md["version"] == "" || md["version"] == nil || prod == nil || prod["name"] == nil || prod["vendor_name"] == nil {
		return fmt.Errorf("metadata.version and metadata.product (name, vendor_name) are required: %v", md)
	}
	for _, k := range def.required {
		if _, ok := e[k].(map[string]any); !ok {
			return fmt.Errorf("class %d requires object %s", class, k)
		}
	}
	if d, ok := e["device"].(map[string]any); ok {
		if t, ok := d["type_id"].(float64); !ok || !(t >= 0 && t <= 15 || t == 99) {
			return fmt.Errorf("device.type_id %v", d["type_id"])
		}
		if os, ok := d["os"].(map[string]any); ok && (os["name"] == nil || os["type_id"] == nil) {
			return errors.New("device.os needs name and type_id")
		}
	}
	if fi, ok := e["finding_info"].(map[string]any); ok {
		if fi["uid"] == nil || fi["title"] == nil {
			return errors.New("finding_info needs uid and title")
		}
	}
	if ds, ok := e["data_security"].(map[string]any); ok {
		if v, ok := ds["data_lifecycle_state_id"].(float64); ok && !(v >= 0 && v <= 3 || v == 99) {
			return fmt.Errorf("data_lifecycle_state_id %v", v)
		}
	}
	for _, k := range []string{"action_id", "disposition_id"} {
		if v, ok := e[k].(float64); ok && !(v >= 0 && v <= 27 || v == 99) {
			return fmt.Errorf("%s %v", k, v)
		}
	}
	return nil
}

func roundTrip(t *testing.T, v any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestMapValidates(t *testing.T) {
	exec := &wardv1.Event{Id: "e1", AgentId: "a1", Seq: 9, Time: timestamppb.New(sinktest.Time),
		Payload: &wardv1.Event_Process{Process: &wardv1.ProcessEvent{Kind: wardv1.ProcessEvent_KIND_EXIT, ExitCode: 256,
			Process: &wardv1.Process{Pid: 5, Ppid: 1, Exe: "/usr/bin/curl", Args: []string{"curl", sinktest.Secret}}}}}
	cases := []struct {
		ev    *wardv1.Event
		class int
		sev   int
	}{
		{sinktest.Finding("a1", 1, wardv1.Severity_SEVERITY_CRITICAL), 2006, 5},
		{sinktest.Finding("a1", 2, wardv1.Severity_SEVERITY_UNSPECIFIED), 2006, 0},
		{sinktest.File("a1", 3), 1001, 1},
		{exec, 1007, 1},
	}
	for _, c := range cases {
		it := sinktest.Items(c.ev)[0]
		e, err := Map(core.NewView(it), Options{Version: "1.6.0", ProductVersion: "0.1"})
		if err != nil {
			t.Fatal(err)
		}
		m := roundTrip(t, e)
		if err := validate(m); err != nil {
			t.Errorf("%d: %v\n%v", c.class, err, m)
		}
		if m["class_uid"] != float64(c.class) || m["severity_id"] != float64(c.sev) {
			t.Errorf("class %v severity %v, want %d %d", m["class_uid"], m["severity_id"], c.class, c.sev)
		}
		if m["metadata"].(map[string]any)["version"] != "1.6.0" {
			t.Errorf("metadata.version not configurable")
		}
		if m["time"] != float64(c.ev.GetTime().AsTime().UnixMilli()) {
			t.Errorf("time %v", m["time"])
		}
		raw, _ := json.Marshal(m)
		sinktest.CheckAllowed(t, fmt.Sprint(c.class), raw, m, sinktest.OCSFAllowed)
	}
	// Finding specifics.
	m := roundTrip(t, sinktest.Must(Map(core.NewView(sinktest.Items(sinktest.Finding("a1", 1, wardv1.Severity_SEVERITY_HIGH))[0]), Options{})))
	ds := m["data_security"].(map[string]any)
	if ds["pattern_match"] != "***-**-1120,***-**-6789" || ds["detection_system_id"] != float64(1) {
		t.Errorf("data_security %v", ds)
	}
	if m["metadata"].(map[string]any)["version"] != DefaultVersion || m["type_uid"] != float64(200601) || m["action_id"] != float64(3) {
		t.Errorf("defaults: %v", m)
	}
	if m["actor"].(map[string]any)["user"].(map[string]any)["name"] != "nurse1" || m["device"].(map[string]any)["type_id"] != float64(2) {
		t.Errorf("actor/device: %v %v", m["actor"], m["device"])
	}
}

func TestMapSkipsKindsWithoutClass(t *testing.T) {
	for _, ev := range []*wardv1.Event{
		sinktest.Health("a1", 1),
		{Id: "x", AgentId: "a1", Seq: 2, Time: timestamppb.New(time.Now())}, // no payload: unknown kind
	} {
		_, err := Map(core.NewView(sinktest.Items(ev)[0]), Options{})
		if !errors.Is(err, core.ErrSkip) {
			t.Errorf("%v: err %v, want ErrSkip", ev, err)
		}
	}
	// The json format passes every kind through.
	v, err := Payload(FormatJSON, sinktest.Items(sinktest.Health("a1", 1))[0], Options{})
	if err != nil || v.(core.View).Health == nil {
		t.Fatalf("json health: %v %v", v, err)
	}
}

func TestValidatorRejects(t *testing.T) {
	good := roundTrip(t, sinktest.Must(Map(core.NewView(sinktest.Items(sinktest.Finding("a1", 1, wardv1.Severity_SEVERITY_HIGH))[0]), Options{})))
	if err := validate(good); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(m map[string]any){
		"2001":     func(m map[string]any) { m["class_uid"] = float64(2001) },
		"type_uid": func(m map[string]any) { m["type_uid"] = float64(200602) },
		"seconds":  func(m map[string]any) { m["time"] = float64(1767225600) },
		"severity": func(m map[string]any) { m["severity_id"] = float64(7) },
		"metadata": func(m map[string]any) { delete(m["metadata"].(map[string]any), "version") },
		"finding":  func(m map[string]any) { delete(m, "finding_info") },
		"category": func(m map[string]any) { m["category_uid"] = float64(1) },
	} {
		m := roundTrip(t, good)
		mut(m)
		if validate(m) == nil {
			t.Errorf("%s: validator accepted a broken event", name)
		}
	}
}
