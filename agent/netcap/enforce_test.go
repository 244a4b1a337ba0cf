package netcap

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ward-dlp/ward/bpf/netflow"
	"github.com/ward-dlp/ward/classifiers/traffic"
	"github.com/ward-dlp/ward/policy"
)

// fakeKernel records what the enforcer asks of the kernel maps.
type fakeKernel struct {
	list    map[string]uint32 // "prefix port" → rule
	swaps   int
	dropped map[uint64]uint32
}

func newFake() *fakeKernel {
	return &fakeKernel{list: map[string]uint32{}, dropped: map[uint64]uint32{}}
}

func key(p netip.Prefix, port uint16) string { return p.String() + " " + itoa(port) }

func itoa(p uint16) string { return strconv.Itoa(int(p)) }

func (f *fakeKernel) SetDenyList(es []netflow.DenyEntry) error {
	f.swaps++
	f.list = map[string]uint32{}
	for _, e := range es {
		f.list[key(e.Prefix, e.Port)] = e.Rule
	}
	return nil
}
func (f *fakeKernel) DenyPrefix(p netip.Prefix, port uint16, r uint32) error {
	f.list[key(p, port)] = r
	return nil
}
func (f *fakeKernel) AllowPrefix(p netip.Prefix, port uint16) error {
	delete(f.list, key(p, port))
	return nil
}
func (f *fakeKernel) DropCookie(c uint64, r uint32) error { f.dropped[c] = r; return nil }
func (f *fakeKernel) ForgetCookie(c uint64) error         { delete(f.dropped, c); return nil }

const base = `name: t
version: 2
apps:
  - {name: mega, category: cloud-storage, domains: [mega.nz]}
rules:
  - id: r1
    when: '"part2" in data.detected'
    then: {action: alert, severity: high}
    compliance: [x]
`

func load(t *testing.T, src string) *policy.Policy {
	t.Helper()
	p, err := policy.Load("p.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func dnsAnswer(name, addr string, ttl uint32) *traffic.DNSMessage {
	return &traffic.DNSMessage{Response: true, Question: name, Answers: []traffic.DNSAnswer{
		{Name: name, Type: 5, TTL: ttl, Target: "edge." + name},
		{Name: "edge." + name, Type: 1, TTL: ttl, Addr: netip.MustParseAddr(addr)}}}
}

func TestEnforcerLifecycle(t *testing.T) {
	k := newFake()
	e := NewEnforcer(EnforcerConfig{Deny: k, Drop: k})
	now := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	// An answer seen before any block rule exists is remembered, not denied.
	e.DNSAnswer(dnsAnswer("eu.mega.nz", "203.0.113.9", 30), now)
	if err := e.Apply(load(t, base), now); err != nil || len(k.list) != 0 {
		t.Fatalf("no block rules: list %v, %v", k.list, err)
	}
	enforcing := base + `network:
  enforce: true
  block:
    - {id: block-mega, apps: [mega], drop_established: true, compliance: [x]}
    - {id: block-range, destinations: ["198.51.100.0/24", "192.0.2.1:22"], compliance: [x]}
`
	pol := load(t, enforcing)
	if err := e.Apply(pol, now.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	// One swap holds the static entries and the earlier answer's address.
	if k.swaps != 2 || k.list["198.51.100.0/24 0"] == 0 || k.list["192.0.2.1/32 22"] == 0 || k.list["203.0.113.9/32 0"] == 0 {
		t.Fatalf("after apply: swaps %d list %v", k.swaps, k.list)
	}
	mega := k.list["203.0.113.9/32 0"]
	if e.RuleName(mega) != "block-mega" || e.RuleName(k.list["198.51.100.0/24 0"]) != "block-range" {
		t.Errorf("rule numbers %v", k.list)
	}
	if err := e.Apply(pol, now); err != nil || k.swaps != 2 {
		t.Error("re-applying the same policy swapped the list again")
	}
	// A new answer for a blocked name (via its CNAME chain) is denied at once.
	e.DNSAnswer(dnsAnswer("mega.nz", "203.0.113.10", 5), now.Add(2*time.Second))
	if k.list["203.0.113.10/32 0"] != mega {
		t.Fatalf("answer for a blocked name not denied: %v", k.list)
	}
	v, ok := e.Judge(netip.MustParseAddrPort("203.0.113.10:443"), "", true, mega, "connect")
	if !ok || v.Rule != "block-mega" || !strings.Contains(v.Explanation, "resolved from mega.nz") {
		t.Errorf("judge denied = %+v", v)
	}
	// Short TTLs are clamped to a minute plus grace: still denied after 5 minutes...
	e.Expire(now.Add(5 * time.Minute))
	if k.list["203.0.113.10/32 0"] == 0 {
		t.Error("expired before the clamped TTL")
	}
	// ...and lifted after.
	e.Expire(now.Add(7 * time.Minute))
	if _, ok := k.list["203.0.113.10/32 0"]; ok {
		t.Error("not lifted after the TTL and grace")
	}
	if k.list["198.51.100.0/24 0"] == 0 {
		t.Error("expiry removed a static entry")
	}
	// SNI of a blocked domain: the socket is dropped (once).
	if id, dropped := e.ServerName(77, "Upload.MEGA.nz"); id != "block-mega" || !dropped || k.dropped[77] != mega {
		t.Errorf("ServerName = %q %v, dropped %v", id, dropped, k.dropped)
	}
	if id, _ := e.ServerName(78, "example.org"); id != "" || len(k.dropped) != 1 {
		t.Error("an unblocked name was dropped")
	}
	// Monitor mode: the list empties, drops are released, flows are judged would-block.
	mon := load(t, strings.Replace(enforcing, "version: 2\n", "version: 3\nmode: monitor\n", 1))
	if err := e.Apply(mon, now.Add(8*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if len(k.list) != 0 || len(k.dropped) != 0 {
		t.Fatalf("monitor mode left kernel state: list %v dropped %v", k.list, k.dropped)
	}
	v, ok = e.Judge(netip.MustParseAddrPort("198.51.100.7:443"), "", false, 0, "")
	if !ok || v.Enforced || !strings.Contains(v.Explanation, "would block") {
		t.Errorf("monitor judge = %+v", v)
	}
	if id, dropped := e.ServerName(79, "mega.nz"); id != "block-mega" || dropped {
		t.Errorf("monitor ServerName = %q %v", id, dropped)
	}
}

func TestEnforcerWithoutProbes(t *testing.T) {
	e := NewEnforcer(EnforcerConfig{})
	pol := load(t, base+"network:\n  enforce: true\n  block:\n    - {id: b, destinations: [10.9.0.0/16], compliance: [x]}\n")
	if err := e.Apply(pol, time.Now()); err != nil {
		t.Fatal(err)
	}
	v, ok := e.Judge(netip.MustParseAddrPort("10.9.1.1:80"), "", false, 0, "")
	if !ok || !strings.Contains(v.Explanation, "not loaded") {
		t.Errorf("judge without probes = %+v", v)
	}
}
