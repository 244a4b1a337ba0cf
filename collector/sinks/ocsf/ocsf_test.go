package ocsf

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
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
	1008: {1, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 99}, []string{"actor", "device"}},
	2004: {2, []int{0, 1, 2, 3, 99}, []string{"finding_info"}},
	2006: {2, []int{0, 1, 2, 3, 99}, []string{"finding_info"}},
	4001: {4, []int{0, 1, 2, 3, 4, 5, 6, 7, 99}, []string{"src_endpoint", "dst_endpoint", "connection_info", "traffic"}},
	4003: {4, []int{0, 1, 2, 6, 99}, []string{"src_endpoint", "dst_endpoint", "query"}},
}

// validateNetwork checks the objects of the network classes (4001, 4003): endpoints with an
// address or name and a valid port, the connection's protocol and direction enums,
// non-negative byte counts that add up, TLS and JA4 shapes, and the DNS question.
func validateNetwork(e map[string]any) error {
	for _, k := range []string{"src_endpoint", "dst_endpoint"} {
		ep, _ := e[k].(map[string]any)
		if ep == nil {
			continue
		}
		if _, ok := ep["ip"].(string); !ok {
			if _, ok := ep["hostname"].(string); !ok {
				return fmt.Errorf("%s needs ip or hostname", k)
			}
		}
		if ip, ok := ep["ip"].(string); ok && net.ParseIP(ip) == nil {
			return fmt.Errorf("%s.ip %q is not an IP address", k, ip)
		}
		if p, ok := ep["port"]; ok {
			if n, isNum := p.(float64); !isNum || n < 0 || n > 65535 || n != float64(int(n)) {
				return fmt.Errorf("%s.port %v", k, p)
			}
		}
	}
	if ci, ok := e["connection_info"].(map[string]any); ok {
		if d, ok := ci["direction_id"].(float64); !ok || !(d >= 0 && d <= 3 || d == 99) {
			return fmt.Errorf("connection_info.direction_id %v", ci["direction_id"])
		}
		if n, ok := ci["protocol_num"].(float64); ok && (n < 0 || n > 255) {
			return fmt.Errorf("connection_info.protocol_num %v", n)
		}
		if v, ok := ci["protocol_ver_id"].(float64); ok && v != 0 && v != 4 && v != 6 && v != 99 {
			return fmt.Errorf("connection_info.protocol_ver_id %v", v)
		}
	}
	if tr, ok := e["traffic"].(map[string]any); ok {
		var in, out float64
		for _, k := range []string{"bytes", "bytes_in", "bytes_out"} {
			n, isNum := tr[k].(float64)
			if _, present := tr[k]; present && (!isNum || n < 0) {
				return fmt.Errorf("traffic.%s %v", k, tr[k])
			}
			switch k {
			case "bytes_in":
				in = n
			case "bytes_out":
				out = n
			}
		}
		if b, ok := tr["bytes"].(float64); ok && b != in+out {
			return fmt.Errorf("traffic.bytes %v != bytes_in + bytes_out", b)
		}
	}
	if tls, ok := e["tls"]; ok {
		m, isObj := tls.(map[string]any)
		if !isObj || len(m) == 0 {
			return fmt.Errorf("tls %v", tls)
		}
	}
	if l, ok := e["ja4_fingerprint_list"]; ok {
		list, isList := l.([]any)
		if !isList || len(list) == 0 {
			return fmt.Errorf("ja4_fingerprint_list %v", l)
		}
		for _, it := range list {
			m, _ := it.(map[string]any)
			v, _ := m["value"].(string)
			if t, ok := m["type_id"].(float64); !ok || !(t >= 0 && t <= 9 || t == 99) || !ja4RE.MatchString(v) {
				return fmt.Errorf("ja4 fingerprint %v", it)
			}
		}
	}
	for _, k := range []string{"start_time", "end_time"} {
		if v, ok := e[k]; ok {
			if n, isNum := v.(float64); !isNum || n < 1_000_000_000_000 || n > 10_000_000_000_000 {
				return fmt.Errorf("%s %v is not epoch milliseconds", k, v)
			}
		}
	}
	if q, ok := e["query"]; ok {
		m, _ := q.(map[string]any)
		if h, _ := m["hostname"].(string); h == "" {
			return errors.New("query.hostname is required")
		}
	}
	return nil
}

var ja4RE = regexp.MustCompile(`^[tqd][0-9s][0-9][di][0-9]{2}[0-9]{2}[0-9a-z]{2}_[0-9a-f]{12}_[0-9a-f]{12}$`)

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
	if act == 99 {
		if n, _ := e["activity_name"].(string); n == "" {
			return errors.New("activity_id 99 (Other) needs activity_name")
		}
	}
	if err := validateNetwork(e); err != nil {
		return err
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
		{sinktest.Flow("a1", 4, ""), 4001, 1},
		{sinktest.DeniedFlow("a1", 5), 4001, 3},
		{sinktest.Flow("a1", 6, "phi-portal.example.org"), 4003, 1},
		{nil, 1008, 1},
	}
	for _, c := range cases {
		it := sinktest.Checkpoint(200)
		if c.ev != nil {
			it = sinktest.Items(c.ev)[0]
		}
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
		if c.ev != nil && m["time"] != float64(c.ev.GetTime().AsTime().UnixMilli()) {
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

func TestNetworkMapping(t *testing.T) {
	mapped := func(ev *wardv1.Event, o Options) map[string]any {
		t.Helper()
		return roundTrip(t, sinktest.Must(Map(core.NewView(sinktest.Items(ev)[0]), o)))
	}
	m := mapped(sinktest.Flow("a1", 1, ""), Options{})
	src, dst := m["src_endpoint"].(map[string]any), m["dst_endpoint"].(map[string]any)
	ci, tr := m["connection_info"].(map[string]any), m["traffic"].(map[string]any)
	switch {
	case m["type_uid"] != float64(400102) || m["activity_id"] != float64(2):
		t.Errorf("closed flow: type_uid %v", m["type_uid"])
	case src["ip"] != "10.1.2.3" || src["port"] != float64(51000) || dst["ip"] != "203.0.113.7" || dst["hostname"] != "share.example.com":
		t.Errorf("endpoints %v %v", src, dst)
	case ci["protocol_num"] != float64(6) || ci["direction_id"] != float64(2) || ci["protocol_ver_id"] != float64(4):
		t.Errorf("connection_info %v", ci)
	case tr["bytes_out"] != float64(48213) || tr["bytes_in"] != float64(5120):
		t.Errorf("traffic %v", tr)
	case m["tls"].(map[string]any)["sni"] != "share.example.com" || m["app_name"] != "Dropbox":
		t.Errorf("tls/app %v %v", m["tls"], m["app_name"])
	case m["ja4_fingerprint_list"].([]any)[0].(map[string]any)["value"] != "t13d1516h2_8daaf6152771_b186095e22b6":
		t.Errorf("ja4 %v", m["ja4_fingerprint_list"])
	case m["duration"] != float64(2000) || m["action_id"] != float64(1):
		t.Errorf("duration/action %v %v", m["duration"], m["action_id"])
	case m["actor"].(map[string]any)["process"].(map[string]any)["name"] != "curl":
		t.Errorf("actor %v", m["actor"])
	}
	// Before OCSF 1.4 there is no ja4_fingerprint_list: the fingerprint goes to unmapped.
	old := mapped(sinktest.Flow("a1", 1, ""), Options{Version: "1.3.0"})
	if _, ok := old["ja4_fingerprint_list"]; ok || old["unmapped"].(map[string]any)["ward"].(map[string]any)["ja4"] == nil {
		t.Errorf("1.3.0: %v", old)
	}
	// Inbound: the peer initiated, so it is the source and its bytes are bytes_out.
	in := sinktest.Flow("a1", 2, "")
	in.GetFlow().Direction = wardv1.NetworkFlow_DIRECTION_INBOUND
	m = mapped(in, Options{})
	if m["src_endpoint"].(map[string]any)["ip"] != "203.0.113.7" || m["traffic"].(map[string]any)["bytes_out"] != float64(5120) ||
		m["connection_info"].(map[string]any)["direction_id"] != float64(1) {
		t.Errorf("inbound: %v %v", m["src_endpoint"], m["traffic"])
	}
	// Denied: Refuse, Denied/Blocked, the rule kept.
	m = mapped(sinktest.DeniedFlow("a1", 3), Options{})
	if m["activity_id"] != float64(5) || m["action_id"] != float64(2) || m["disposition_id"] != float64(2) ||
		m["unmapped"].(map[string]any)["ward"].(map[string]any)["rule_id"] != "deny-list#3" {
		t.Errorf("denied: %v", m)
	}
	// DNS: 4003 Query with the question.
	m = mapped(sinktest.Flow("a1", 4, "phi-portal.example.org"), Options{})
	if m["type_uid"] != float64(400301) || m["query"].(map[string]any)["hostname"] != "phi-portal.example.org" ||
		m["connection_info"].(map[string]any)["protocol_num"] != float64(17) {
		t.Errorf("dns: %v", m)
	}
	// Failed and interim states.
	for state, act := range map[wardv1.NetworkFlow_State]float64{
		wardv1.NetworkFlow_STATE_FAILED: 4, wardv1.NetworkFlow_STATE_IDLE: 6, wardv1.NetworkFlow_STATE_AGENT_STOPPED: 6,
		wardv1.NetworkFlow_STATE_UNSPECIFIED: 0,
	} {
		ev := sinktest.Flow("a1", 5, "")
		ev.GetFlow().State = state
		if m := mapped(ev, Options{}); m["activity_id"] != act || validate(m) != nil {
			t.Errorf("%v: activity %v (%v)", state, m["activity_id"], validate(m))
		}
	}
	// Checkpoints carry the signed note for an independent copy of the tree head.
	m = roundTrip(t, sinktest.Must(Map(core.NewView(sinktest.Checkpoint(300)), Options{})))
	cp := m["unmapped"].(map[string]any)["ward"].(map[string]any)["audit_checkpoint"].(map[string]any)
	if m["class_uid"] != float64(1008) || cp["size"] != float64(300) || !strings.Contains(cp["signed_note"].(string), "\n300\n") {
		t.Errorf("checkpoint: %v", m)
	}
}

func TestValidatorRejectsBrokenNetworkEvents(t *testing.T) {
	flow := roundTrip(t, sinktest.Must(Map(core.NewView(sinktest.Items(sinktest.Flow("a1", 1, ""))[0]), Options{})))
	dns := roundTrip(t, sinktest.Must(Map(core.NewView(sinktest.Items(sinktest.Flow("a1", 2, "x.example"))[0]), Options{})))
	for _, good := range []map[string]any{flow, dns} {
		if err := validate(good); err != nil {
			t.Fatal(err)
		}
	}
	for name, c := range map[string]struct {
		base map[string]any
		mut  func(m map[string]any)
	}{
		"no dst":         {flow, func(m map[string]any) { delete(m, "dst_endpoint") }},
		"bad ip":         {flow, func(m map[string]any) { m["src_endpoint"].(map[string]any)["ip"] = "10.1.2" }},
		"port":           {flow, func(m map[string]any) { m["dst_endpoint"].(map[string]any)["port"] = float64(70000) }},
		"empty endpoint": {flow, func(m map[string]any) { m["src_endpoint"] = map[string]any{"port": float64(1)} }},
		"direction":      {flow, func(m map[string]any) { m["connection_info"].(map[string]any)["direction_id"] = float64(7) }},
		"bytes sum":      {flow, func(m map[string]any) { m["traffic"].(map[string]any)["bytes"] = float64(1) }},
		"ja4": {flow, func(m map[string]any) {
			m["ja4_fingerprint_list"] = []any{map[string]any{"type_id": float64(1), "value": "nope"}}
		}},
		"activity":     {flow, func(m map[string]any) { m["activity_id"], m["type_uid"] = float64(8), float64(400108) }},
		"category":     {flow, func(m map[string]any) { m["category_uid"] = float64(1) }},
		"end seconds":  {flow, func(m map[string]any) { m["end_time"] = float64(1767225600) }},
		"no query":     {dns, func(m map[string]any) { delete(m, "query") }},
		"empty query":  {dns, func(m map[string]any) { m["query"] = map[string]any{"hostname": ""} }},
		"dns activity": {dns, func(m map[string]any) { m["activity_id"], m["type_uid"] = float64(5), float64(400305) }},
	} {
		m := roundTrip(t, c.base)
		c.mut(m)
		if validate(m) == nil {
			t.Errorf("%s: validator accepted a broken event", name)
		}
	}
}
