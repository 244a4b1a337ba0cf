package policy

import (
	"fmt"
	"net/netip"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Network enforcement is a list the agent can hand to the kernel, not a CEL rule: a connect
// must be refused before the process gets a socket to the destination, so the decision has
// to exist before the connection does. Addresses and CIDRs go into the kernel's deny trie as
// written; the domains of blocked apps are turned into addresses from the DNS answers the
// agent sees (for their TTL); and a TLS or QUIC flow whose server name is blocked (an address
// the agent did not see resolved) is dropped once its ClientHello is read.

// Limits of the network section.
const (
	maxBlockRules   = 256
	maxBlockDests   = 4096
	maxBlockDomains = 1024
)

// NetworkPolicy is the bundle's `network` section.
type NetworkPolicy struct {
	// Enforce lets the agent refuse connections (kernel deny list, packet drops). Off by
	// default: block rules then only mark the flows they match (would-block).
	Enforce bool
	Block   []BlockRule
}

// BlockRule is one `network.block` entry: destinations and apps whose connections are
// refused.
type BlockRule struct {
	ID          string
	Description string
	// Apps name entries of the bundle's apps list; their domains are blocked.
	Apps []string
	// Domains are blocked with all their subdomains (lower case).
	Domains []string
	// Destinations are addresses or CIDRs, each on one port or all (Port 0).
	Destinations []BlockDestination
	// DropEstablished also drops a TLS or QUIC connection whose server name (SNI) is a
	// blocked domain, when the connect itself got through (its address was not known).
	DropEstablished bool
	// Monitor only records what the rule would block.
	Monitor    bool
	Severity   Severity
	Compliance []string
}

// BlockDestination is an address or CIDR and a port (0: every port).
type BlockDestination struct {
	Prefix netip.Prefix
	Port   uint16
}

func (b BlockDestination) String() string {
	if b.Port == 0 {
		if b.Prefix.IsSingleIP() {
			return b.Prefix.Addr().String()
		}
		return b.Prefix.String()
	}
	if b.Prefix.IsSingleIP() {
		return netip.AddrPortFrom(b.Prefix.Addr(), b.Port).String()
	}
	return fmt.Sprintf("%s port %d", b.Prefix, b.Port)
}

var (
	networkKeys = []string{"enforce", "block"}
	blockKeys   = []string{"id", "description", "apps", "domains", "destinations", "drop_established", "monitor", "severity", "compliance"}
)

// BlockedDomains returns every domain a block rule covers: its own and those of its apps.
func (b *Bundle) BlockedDomains(r *BlockRule) []string {
	out := append([]string(nil), r.Domains...)
	for _, name := range r.Apps {
		for _, a := range b.Apps {
			if a.Name == name {
				out = append(out, a.Domains...)
			}
		}
	}
	return out
}

// BlockEnforced says whether the agent should carry out a block rule (refuse, drop) rather
// than only record what it would block: the section enforces, the bundle is not in monitor
// mode and neither is the rule.
func (b *Bundle) BlockEnforced(r *BlockRule) bool {
	return b.Network.Enforce && b.Mode == ModeEnforce && !r.Monitor
}

// DomainBlocked reports whether name is one of domains or a subdomain of one.
func DomainBlocked(name string, domains []string) bool {
	name = strings.TrimSuffix(toLowerASCII(name), ".")
	return name != "" && domainIn(name, domains)
}

func (d *decoder) network(n *yaml.Node, b *Bundle, ruleIDs map[string]bool) NetworkPolicy {
	var np NetworkPolicy
	f := d.fields(n, "network", networkKeys)
	if f == nil {
		return np
	}
	if v := f["enforce"]; v != nil {
		np.Enforce = d.boolean(v, "network.enforce")
	}
	apps := map[string]*App{}
	for i := range b.Apps {
		apps[b.Apps[i].Name] = &b.Apps[i]
	}
	ids := map[string]bool{}
	for i, rn := range d.list(f["block"], "network.block", maxBlockRules) {
		what := fmt.Sprintf("network.block[%d]", i)
		r := d.blockRule(rn, what, apps)
		if r.ID != "" {
			if ids[r.ID] || ruleIDs[r.ID] {
				d.errf(rn, "%s: id %q is already used by a rule or another block entry", what, r.ID)
			}
			ids[r.ID] = true
		}
		np.Block = append(np.Block, r)
	}
	return np
}

func (d *decoder) blockRule(n *yaml.Node, what string, apps map[string]*App) BlockRule {
	f := d.fields(n, what, blockKeys, "id", "compliance")
	if f == nil {
		return BlockRule{}
	}
	r := BlockRule{ID: d.ident(f["id"], what+".id"), Severity: SeverityHigh}
	if r.ID != "" {
		what = "block " + r.ID
	}
	if v := f["description"]; v != nil {
		r.Description = d.str(v, what+".description", maxTextBytes)
	}
	r.Apps = d.strList(f["apps"], what+".apps", maxApps, 128)
	for _, a := range r.Apps {
		switch app := apps[a]; {
		case app == nil:
			d.errf(f["apps"], "%s.apps: %q is not in the bundle's apps list", what, a)
		case len(app.Domains) == 0:
			d.errf(f["apps"], "%s.apps: app %q lists no domains, so there is nothing to block on the network", what, a)
		}
	}
	r.Domains = lowerAll(d.strList(f["domains"], what+".domains", maxBlockDomains, 253))
	for i, dom := range r.Domains {
		r.Domains[i] = strings.TrimSuffix(dom, ".")
		if !validDomain(r.Domains[i]) {
			d.errf(f["domains"], "%s.domains[%d]: %q is not a domain name", what, i, dom)
		}
	}
	for i, s := range d.strList(f["destinations"], what+".destinations", maxBlockDests, 64) {
		dst, err := ParseBlockDestination(s)
		if err != nil {
			d.errf(f["destinations"], "%s.destinations[%d]: %v", what, i, err)
			continue
		}
		r.Destinations = append(r.Destinations, dst)
	}
	if len(r.Apps)+len(r.Domains)+len(r.Destinations) == 0 {
		d.errf(n, "%s: name apps, domains or destinations to block", what)
	}
	if v := f["drop_established"]; v != nil {
		r.DropEstablished = d.boolean(v, what+".drop_established")
	}
	if v := f["monitor"]; v != nil {
		r.Monitor = d.boolean(v, what+".monitor")
	}
	if v := f["severity"]; v != nil {
		s := d.str(v, what+".severity", 16)
		sev, ok := parseSeverity(s)
		if !ok {
			d.errf(v, "%s.severity: want info, low, medium, high or critical, got %q", what, s)
		}
		r.Severity = sev
	}
	r.Compliance = d.strList(f["compliance"], what+".compliance", 32, 128)
	if f["compliance"] != nil && len(r.Compliance) == 0 {
		d.errf(f["compliance"], "%s.compliance: name at least one regulation or policy the block enforces", what)
	}
	return r
}

// ParseBlockDestination reads "203.0.113.7", "203.0.113.0/24", "203.0.113.7:443",
// "2001:db8::/32", "[2001:db8::1]:443" or "203.0.113.0/24 port 443".
func ParseBlockDestination(s string) (BlockDestination, error) {
	s = strings.TrimSpace(s)
	if p, port, ok := strings.Cut(s, " port "); ok {
		pfx, err := netip.ParsePrefix(strings.TrimSpace(p))
		if err != nil {
			return BlockDestination{}, fmt.Errorf("%q: want a CIDR before \"port\": %v", s, err)
		}
		var n uint16
		if _, err := fmt.Sscanf(strings.TrimSpace(port), "%d", &n); err != nil || n == 0 {
			return BlockDestination{}, fmt.Errorf("%q: port must be 1..65535", s)
		}
		return blockDest(pfx, n)
	}
	if strings.Contains(s, "/") {
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			return BlockDestination{}, fmt.Errorf("%q is not a CIDR: %v", s, err)
		}
		return blockDest(pfx, 0)
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return blockDest(netip.PrefixFrom(a, a.BitLen()), 0)
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil || ap.Port() == 0 {
		return BlockDestination{}, fmt.Errorf("%q: want an address, a CIDR, address:port or [v6]:port", s)
	}
	return blockDest(netip.PrefixFrom(ap.Addr(), ap.Addr().BitLen()), ap.Port())
}

func blockDest(p netip.Prefix, port uint16) (BlockDestination, error) {
	if p.Addr().Zone() != "" {
		return BlockDestination{}, fmt.Errorf("%s: zoned addresses are not allowed", p)
	}
	if p.Addr().Is4In6() {
		p = netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0))
	}
	if p.Masked() != p {
		return BlockDestination{}, fmt.Errorf("%s has host bits set (did you mean %s?)", p, p.Masked())
	}
	if p.Bits() == 0 {
		return BlockDestination{}, fmt.Errorf("%s blocks every address; refusing", p)
	}
	return BlockDestination{Prefix: p, Port: port}, nil
}

func validDomain(s string) bool {
	if s == "" || len(s) > 253 || strings.HasPrefix(s, ".") || strings.Contains(s, "..") {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '_') {
			return false
		}
	}
	return true
}
