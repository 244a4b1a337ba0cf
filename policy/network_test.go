package policy

import (
	"net/netip"
	"strings"
	"testing"
)

const networkBase = `name: net-test
version: 3
apps:
  - {name: mega, category: cloud-storage, domains: [mega.nz, mega.io]}
  - {name: obs, category: screen-recording, processes: [obs]}
rules:
  - id: r1
    when: '"part2" in data.detected'
    then: {action: alert, severity: high}
    compliance: ["42 CFR 2.13(a)"]
`

func TestNetworkSection(t *testing.T) {
	src := networkBase + `network:
  enforce: true
  block:
    - id: block-mega
      apps: [mega]
      domains: [Paste.Example.ORG.]
      destinations: ["203.0.113.0/24", "198.51.100.7:8443", "[2001:db8::1]:443", "2001:db8:1::/48", "192.0.2.0/25 port 22", "::ffff:192.0.2.200"]
      drop_established: true
      compliance: ["clinic policy IT-7"]
    - id: block-trial
      domains: [trial.example]
      monitor: true
      severity: low
      compliance: ["clinic policy IT-8"]
`
	p, err := Load("net.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	b := p.Bundle()
	if !b.Network.Enforce || len(b.Network.Block) != 2 {
		t.Fatalf("network = %+v", b.Network)
	}
	r := &b.Network.Block[0]
	if got := b.BlockedDomains(r); strings.Join(got, ",") != "paste.example.org,mega.nz,mega.io" {
		t.Errorf("blocked domains %v", got)
	}
	want := []string{"203.0.113.0/24", "198.51.100.7:8443", "[2001:db8::1]:443", "2001:db8:1::/48", "192.0.2.0/25 port 22", "192.0.2.200"}
	for i, d := range r.Destinations {
		if d.String() != want[i] {
			t.Errorf("destination %d = %s, want %s", i, d, want[i])
		}
	}
	if !r.DropEstablished || r.Severity != SeverityHigh || !b.BlockEnforced(r) {
		t.Errorf("rule %+v", r)
	}
	if trial := &b.Network.Block[1]; b.BlockEnforced(trial) || trial.Severity != SeverityLow {
		t.Errorf("a monitor-only block is enforced: %+v", trial)
	}
	if !DomainBlocked("eu.api.MEGA.nz.", b.BlockedDomains(r)) || DomainBlocked("notmega.nz", b.BlockedDomains(r)) {
		t.Error("DomainBlocked matches by dot-bounded suffix")
	}
	// Monitor mode for the whole bundle turns enforcement off.
	mon, err := Load("net.yaml", []byte(strings.Replace(src, "version: 3\n", "version: 3\nmode: monitor\n", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if mon.Bundle().BlockEnforced(&mon.Bundle().Network.Block[0]) {
		t.Error("monitor-mode bundle enforces a block")
	}
	// Enforcement is off unless asked for.
	off, err := Load("net.yaml", []byte(strings.Replace(src, "  enforce: true\n", "", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if off.Bundle().BlockEnforced(&off.Bundle().Network.Block[0]) {
		t.Error("a bundle without network.enforce enforces")
	}
	d, err := ParseBlockDestination("[2001:db8::1]:443")
	if err != nil || d.Prefix != netip.MustParsePrefix("2001:db8::1/128") || d.Port != 443 {
		t.Errorf("ParseBlockDestination = %+v, %v", d, err)
	}
}

func TestNetworkSectionErrors(t *testing.T) {
	for name, c := range map[string]struct{ block, want string }{
		"unknown app":   {"    - {id: b, apps: [nope], compliance: [x]}\n", `"nope" is not in the bundle's apps list`},
		"app no domain": {"    - {id: b, apps: [obs], compliance: [x]}\n", "lists no domains"},
		"host bits":     {"    - {id: b, destinations: [10.0.0.1/8], compliance: [x]}\n", "did you mean 10.0.0.0/8"},
		"everything":    {"    - {id: b, destinations: [0.0.0.0/0], compliance: [x]}\n", "blocks every address"},
		"bad address":   {"    - {id: b, destinations: [example.com], compliance: [x]}\n", "want an address"},
		"port zero":     {"    - {id: b, destinations: [\"10.0.0.1:0\"], compliance: [x]}\n", "want an address"},
		"bad domain":    {"    - {id: b, domains: [\"a b\"], compliance: [x]}\n", "not a domain name"},
		"empty":         {"    - {id: b, compliance: [x]}\n", "name apps, domains or destinations"},
		"dup id":        {"    - {id: r1, domains: [a.example], compliance: [x]}\n", `id "r1" is already used`},
		"unknown key":   {"    - {id: b, domains: [a.example], compliance: [x], drop_establishd: true}\n", `did you mean`},
		"no compliance": {"    - {id: b, domains: [a.example]}\n", `missing required key "compliance"`},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Load("net.yaml", []byte(networkBase+"network:\n  block:\n"+c.block))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want mention of %q", err, c.want)
			}
		})
	}
}
