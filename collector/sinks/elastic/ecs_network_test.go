package elastic

import (
	"bufio"
	"encoding/json"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/collector/sinks/internal/sinktest"
)

type ecsField struct {
	typ     string
	allowed []string
}

// loadECS reads testdata/ecs-network-fields.txt (ECS 9.0 types, with provenance there).
func loadECS(t *testing.T) (fields map[string]ecsField, custom []string) {
	t.Helper()
	f, err := os.Open("testdata/ecs-network-fields.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fields = map[string]ecsField{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		parts := strings.Fields(line)
		if parts[0] == "custom" {
			custom = append(custom, parts[1])
			continue
		}
		fd := ecsField{typ: parts[1]}
		if len(parts) > 2 {
			fd.allowed = strings.Split(parts[2], ",")
		}
		fields[parts[0]] = fd
	}
	return fields, custom
}

// flatten turns a decoded JSON document into dotted names.
func flatten(prefix string, v any, out map[string]any) {
	if m, ok := v.(map[string]any); ok {
		for k, x := range m {
			name := k
			if prefix != "" {
				name = prefix + "." + k
			}
			flatten(name, x, out)
		}
		return
	}
	out[prefix] = v
}

// checkECS validates every field of the network-related field sets in doc against the ECS
// table: known name (or a documented custom one), the right JSON shape for its type, and an
// expected value where ECS lists them.
func checkECS(t *testing.T, doc map[string]any) {
	t.Helper()
	fields, custom := loadECS(t)
	flat := map[string]any{}
	flatten("", roundTrip(t, doc), flat)
	for name, v := range flat {
		set, _, _ := strings.Cut(name, ".")
		if !slices.Contains([]string{"source", "destination", "network", "tls", "event", "rule"}, set) ||
			name == "event.id" || name == "event.kind" || name == "event.module" || name == "event.dataset" ||
			name == "event.created" || name == "event.severity" || name == "rule.ruleset" || name == "rule.version" {
			continue // outside this table (covered by the sink's other tests)
		}
		if slices.Contains(custom, name) {
			continue
		}
		fd, ok := fields[name]
		if !ok {
			t.Errorf("%s is not an ECS field in the table (value %v)", name, v)
			continue
		}
		vals := []any{v}
		if arr, ok := v.([]any); ok {
			vals = arr
		}
		for _, x := range vals {
			switch fd.typ {
			case "ip":
				s, _ := x.(string)
				if _, err := netip.ParseAddr(s); err != nil {
					t.Errorf("%s = %v: not an IP", name, x)
				}
			case "long":
				n, ok := x.(float64)
				if !ok || n != float64(int64(n)) || n < 0 {
					t.Errorf("%s = %v: not a non-negative integer", name, x)
				}
			case "date":
				s, _ := x.(string)
				if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
					t.Errorf("%s = %v: not a date", name, x)
				}
			case "keyword":
				s, ok := x.(string)
				if !ok || s == "" {
					t.Errorf("%s = %v: not a non-empty keyword", name, x)
				}
				if fd.allowed != nil && !slices.Contains(fd.allowed, s) {
					t.Errorf("%s = %q: not one of ECS's expected values %v", name, s, fd.allowed)
				}
			}
		}
	}
}

func TestFlowDocumentIsECS(t *testing.T) {
	items := sinktest.Items(sinktest.Flow("agent-1", 1, ""), sinktest.Flow("agent-1", 2, "drive.example.org"),
		sinktest.DeniedFlow("agent-1", 3))
	for _, it := range items {
		doc := Doc(it, "test")
		checkECS(t, doc)
		raw, _ := json.Marshal(doc)
		if strings.Contains(string(raw), sinktest.Secret) {
			t.Fatalf("raw identifier in %s", raw)
		}
	}
	tlsFlow := roundTrip(t, Doc(items[0], "test")).(map[string]any)
	flat := map[string]any{}
	flatten("", tlsFlow, flat)
	want := map[string]any{
		"source.ip": "10.1.2.3", "source.port": 51000.0, "source.bytes": 48213.0,
		"destination.ip": "203.0.113.7", "destination.port": 443.0, "destination.bytes": 5120.0,
		"destination.domain": "share.example.com", "network.transport": "tcp", "network.type": "ipv4",
		"network.direction": "egress", "network.bytes": 53333.0, "network.protocol": "tls",
		"tls.version": "1.3", "tls.version_protocol": "tls", "tls.next_protocol": "h2",
		"tls.client.server_name": "share.example.com", "tls.client.ja4": "t13d1516h2_8daaf6152771_b186095e22b6",
		"event.action": "network-flow", "event.outcome": "success",
	}
	for k, v := range want {
		if flat[k] != v {
			t.Errorf("%s = %v, want %v", k, flat[k], v)
		}
	}
	if id, _ := flat["network.community_id"].(string); !strings.HasPrefix(id, "1:") || len(id) != 30 {
		t.Errorf("community id %q", id)
	}
	denied := map[string]any{}
	flatten("", roundTrip(t, Doc(items[2], "test")), denied)
	if denied["event.outcome"] != "failure" || denied["rule.id"] != "deny-list#3" ||
		!slices.Contains(denied["event.type"].([]any), "denied") {
		t.Errorf("denied flow: outcome %v rule %v type %v", denied["event.outcome"], denied["rule.id"], denied["event.type"])
	}
}

// A finding on TLS plaintext carries the connection as ECS destination/network/tls fields.
func TestNetworkFindingDocument(t *testing.T) {
	ev := sinktest.Finding("agent-1", 4, wardv1.Severity_SEVERITY_HIGH)
	f := ev.GetFinding()
	f.Target = &wardv1.Finding_Network{Network: &wardv1.NetworkTarget{
		RemoteAddress: "198.51.100.9", RemotePort: 443, Transport: "tcp", Sni: "chat.example.ai",
		TlsLibrary: "openssl", Direction: wardv1.NetworkTarget_DIRECTION_SEND, BytesInspected: 900,
	}}
	doc := Doc(sinktest.Items(ev)[0], "test")
	checkECS(t, doc)
	flat := map[string]any{}
	flatten("", roundTrip(t, doc), flat)
	for k, v := range map[string]any{"destination.ip": "198.51.100.9", "destination.port": 443.0,
		"destination.domain": "chat.example.ai", "network.direction": "egress", "tls.client.server_name": "chat.example.ai"} {
		if flat[k] != v {
			t.Errorf("%s = %v, want %v", k, flat[k], v)
		}
	}
	raw, _ := json.Marshal(doc)
	if strings.Contains(string(raw), sinktest.Secret) {
		t.Fatalf("raw identifier in %s", raw)
	}
}
