package netcap

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/ward-dlp/ward/bpf/netflow"
	"github.com/ward-dlp/ward/classifiers/traffic"
	"github.com/ward-dlp/ward/policy"
)

// DenyTarget is the kernel's connect-time deny list (bpf/netflow.Probe).
type DenyTarget interface {
	SetDenyList([]netflow.DenyEntry) error
	DenyPrefix(pfx netip.Prefix, port uint16, rule uint32) error
	AllowPrefix(pfx netip.Prefix, port uint16) error
}

// DropTarget drops the packets of a socket (bpf/netcap.Probe).
type DropTarget interface {
	DropCookie(cookie uint64, rule uint32) error
	ForgetCookie(cookie uint64) error
}

// EnforcerConfig sets up an Enforcer. Deny or Drop may be nil when that probe did not load;
// the matching rules are then reported as not enforceable.
type EnforcerConfig struct {
	Deny DenyTarget
	Drop DropTarget
	Log  *slog.Logger
	// MinTTL and MaxTTL clamp how long an address learned from a DNS answer stays denied
	// (clients keep answers past short TTLs); Grace is added on top. Defaults 60s, 1h, 5m,
	// as the analyzer's name cache.
	MinTTL, MaxTTL, Grace time.Duration
	// MaxAnswers bounds the remembered DNS answers (name → addresses) that a new policy is
	// applied to. Default 16384.
	MaxAnswers int
}

type blockRule struct {
	id       string
	num      uint32
	domains  []string
	dests    []policy.BlockDestination
	drop     bool
	enforced bool
}

type dnsDeny struct {
	rule uint32
	exp  time.Time
	name string
}

type answer struct {
	addrs []netip.Addr
	exp   time.Time
}

type entryKey struct {
	pfx  netip.Prefix
	port uint16
}

// EnforcerStats are counters for health events.
type EnforcerStats struct {
	Rules          int    // block rules in the policy in force
	Enforced       int    // of which enforced (not monitor, enforcement on)
	Static         int    // addresses/CIDRs in the kernel deny list from the policy
	Resolved       int    // addresses in it from DNS answers for blocked domains
	Dropped        uint64 // sockets whose packets were dropped after their SNI named a blocked domain
	Errors         uint64 // kernel map updates that failed
	AnswersApplied uint64
}

// Enforcer turns the policy's network block list into kernel state: its addresses and CIDRs
// into the connect-time deny list, the addresses DNS answers give for blocked domains into
// the same list for their TTL, and a flow whose TLS/QUIC server name is blocked into a
// packet drop. It is owned by one goroutine (the one that feeds the Joiner).
type Enforcer struct {
	cfg       EnforcerConfig
	pol       *policy.Policy
	rules     []*blockRule
	ruleNum   map[string]uint32
	ruleName  []string // by number; stable for the agent's lifetime so old records still resolve
	static    map[entryKey]uint32
	dynamic   map[netip.Addr]dnsDeny
	installed map[entryKey]uint32
	answers   gens[string, answer]
	dropped   map[uint64]uint32
	stats     EnforcerStats
}

// NewEnforcer returns an Enforcer with no policy applied (nothing is denied).
func NewEnforcer(cfg EnforcerConfig) *Enforcer {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.MinTTL <= 0 {
		cfg.MinTTL = time.Minute
	}
	if cfg.MaxTTL <= 0 {
		cfg.MaxTTL = time.Hour
	}
	if cfg.Grace <= 0 {
		cfg.Grace = 5 * time.Minute
	}
	if cfg.MaxAnswers <= 0 {
		cfg.MaxAnswers = 16384
	}
	return &Enforcer{cfg: cfg, ruleNum: map[string]uint32{}, ruleName: []string{""},
		static: map[entryKey]uint32{}, dynamic: map[netip.Addr]dnsDeny{}, installed: map[entryKey]uint32{},
		answers: newGens[string, answer](cfg.MaxAnswers), dropped: map[uint64]uint32{}}
}

// num interns a rule id as the small number the kernel echoes in deny and drop records.
func (e *Enforcer) num(id string) uint32 {
	if n, ok := e.ruleNum[id]; ok {
		return n
	}
	n := uint32(len(e.ruleName))
	e.ruleNum[id] = n
	e.ruleName = append(e.ruleName, id)
	return n
}

// RuleName is the policy id behind a number from a kernel record ("" when unknown).
func (e *Enforcer) RuleName(n uint32) string {
	if int(n) < len(e.ruleName) {
		return e.ruleName[n]
	}
	return ""
}

// Apply makes pol's block list the one in force. The kernel deny list is replaced in one
// step (static entries and addresses already resolved for blocked domains); sockets dropped
// under rules that no longer enforce are released. Applying the same policy again is free.
func (e *Enforcer) Apply(pol *policy.Policy, now time.Time) error {
	if pol == e.pol {
		return nil
	}
	e.pol = pol
	b := pol.Bundle()
	e.rules = e.rules[:0]
	e.static = map[entryKey]uint32{}
	e.dynamic = map[netip.Addr]dnsDeny{}
	e.stats.Rules, e.stats.Enforced = len(b.Network.Block), 0
	for i := range b.Network.Block {
		br := &b.Network.Block[i]
		r := &blockRule{id: br.ID, num: e.num(br.ID), domains: b.BlockedDomains(br), dests: br.Destinations,
			drop: br.DropEstablished, enforced: b.BlockEnforced(br)}
		e.rules = append(e.rules, r)
		if !r.enforced {
			continue
		}
		e.stats.Enforced++
		for _, d := range r.dests {
			k := entryKey{d.Prefix, d.Port}
			if _, ok := e.static[k]; !ok {
				e.static[k] = r.num
			}
		}
	}
	// Names already resolved before this policy arrived are blocked at once.
	for _, m := range []map[string]answer{e.answers.old, e.answers.cur} {
		for name, a := range m {
			if a.exp.After(now) {
				e.learn(name, a.addrs, a.exp)
			}
		}
	}
	want := e.desired()
	var errs []error
	if e.cfg.Deny != nil {
		entries := make([]netflow.DenyEntry, 0, len(want))
		for k, r := range want {
			entries = append(entries, netflow.DenyEntry{Prefix: k.pfx, Port: k.port, Rule: r})
		}
		sort.Slice(entries, func(i, j int) bool { return entries[i].Prefix.String() < entries[j].Prefix.String() })
		if err := e.cfg.Deny.SetDenyList(entries); err != nil {
			e.stats.Errors++
			errs = append(errs, fmt.Errorf("install deny list: %w", err))
		} else {
			e.installed = want
		}
	}
	for cookie, n := range e.dropped {
		if r := e.ruleByNum(n); r == nil || !r.enforced || !r.drop {
			e.forgetDrop(cookie)
		}
	}
	e.count()
	if len(b.Network.Block) > 0 {
		e.cfg.Log.Info("network block list applied", "policy", pol.String(), "rules", e.stats.Rules,
			"enforced", e.stats.Enforced, "deny_entries", len(e.installed))
	}
	return errors.Join(errs...)
}

func (e *Enforcer) ruleByNum(n uint32) *blockRule {
	for _, r := range e.rules {
		if r.num == n {
			return r
		}
	}
	return nil
}

func (e *Enforcer) desired() map[entryKey]uint32 {
	want := make(map[entryKey]uint32, len(e.static)+len(e.dynamic))
	for a, d := range e.dynamic {
		want[entryKey{netip.PrefixFrom(a, a.BitLen()), 0}] = d.rule
	}
	for k, r := range e.static { // a policy entry wins over a resolved one
		want[k] = r
	}
	return want
}

func (e *Enforcer) count() {
	e.stats.Static, e.stats.Resolved = len(e.static), len(e.dynamic)
}

// blockedBy returns the first rule that blocks name (enforced or not), or nil.
func (e *Enforcer) blockedBy(name string) *blockRule {
	if name == "" {
		return nil
	}
	for _, r := range e.rules {
		if policy.DomainBlocked(name, r.domains) {
			return r
		}
	}
	return nil
}

// learn records that name resolved to addrs until exp; when an enforced rule blocks the
// name, the addresses join the deny list (not installed here). It reports whether any was
// added or extended.
func (e *Enforcer) learn(name string, addrs []netip.Addr, exp time.Time) bool {
	r := e.blockedBy(name)
	if r == nil || !r.enforced {
		return false
	}
	changed := false
	for _, a := range addrs {
		if d, ok := e.dynamic[a]; !ok || d.exp.Before(exp) {
			e.dynamic[a] = dnsDeny{rule: r.num, exp: exp, name: name}
			changed = true
		}
	}
	return changed
}

// DNSAnswer learns a DNS response. Addresses of a blocked name (the question or any name
// in its CNAME chain) are denied at once, until the answer's TTL (clamped) runs out.
func (e *Enforcer) DNSAnswer(m *traffic.DNSMessage, at time.Time) {
	if m == nil || !m.Response || m.RCode != 0 || m.Question == "" {
		return
	}
	names := []string{strings.TrimSuffix(strings.ToLower(m.Question), ".")}
	var addrs []netip.Addr
	ttl := e.cfg.MaxTTL
	for _, a := range m.Answers {
		if a.Target != "" && len(names) < 16 {
			names = append(names, strings.TrimSuffix(strings.ToLower(a.Target), "."))
		}
		if a.Addr.IsValid() && !a.Addr.IsUnspecified() && len(addrs) < 64 {
			addrs = append(addrs, a.Addr.Unmap())
			ttl = min(ttl, time.Duration(a.TTL)*time.Second)
		}
	}
	if len(addrs) == 0 {
		return
	}
	exp := at.Add(min(max(ttl, e.cfg.MinTTL), e.cfg.MaxTTL) + e.cfg.Grace)
	e.stats.AnswersApplied++
	for _, n := range names {
		e.answers.put(n, answer{addrs: addrs, exp: exp})
		if e.learn(n, addrs, exp) {
			e.sync()
			e.cfg.Log.Info("blocked name resolved: addresses denied", "name", n, "addresses", fmt.Sprint(addrs),
				"rule", e.RuleName(e.dynamic[addrs[0]].rule), "until", exp.Format(time.RFC3339), "enforced", e.cfg.Deny != nil)
		}
	}
}

// sync brings the installed kernel entries in line with the wanted ones, one entry at a
// time (the changes from one DNS answer or one expiry are independent of each other).
func (e *Enforcer) sync() {
	e.count()
	if e.cfg.Deny == nil {
		return
	}
	want := e.desired()
	for k, r := range want {
		if cur, ok := e.installed[k]; ok && cur == r {
			continue
		}
		if err := e.cfg.Deny.DenyPrefix(k.pfx, k.port, r); err != nil {
			e.stats.Errors++
			e.cfg.Log.Warn("deny list update failed", "destination", k.pfx, "err", err)
			continue
		}
		e.installed[k] = r
	}
	for k := range e.installed {
		if _, ok := want[k]; ok {
			continue
		}
		if err := e.cfg.Deny.AllowPrefix(k.pfx, k.port); err != nil {
			e.stats.Errors++
			e.cfg.Log.Warn("deny list update failed", "destination", k.pfx, "err", err)
			continue
		}
		delete(e.installed, k)
	}
}

// Expire lifts denials whose DNS answers ran out.
func (e *Enforcer) Expire(now time.Time) {
	n := 0
	for a, d := range e.dynamic {
		if !d.exp.After(now) {
			delete(e.dynamic, a)
			n++
		}
	}
	if n > 0 {
		e.sync()
	}
}

// ServerName judges the server name a flow's ClientHello (TLS or QUIC) carried. When an
// enforced rule with drop_established blocks it, the socket's packets are dropped from now
// on; the first dropped packet comes back as a netcap Drop record. It returns the rule id
// and whether a drop was put in place.
func (e *Enforcer) ServerName(cookie uint64, name string) (string, bool) {
	r := e.blockedBy(name)
	if r == nil || !r.drop {
		return "", false
	}
	if !r.enforced || e.cfg.Drop == nil || cookie == 0 {
		return r.id, false
	}
	if _, done := e.dropped[cookie]; done {
		return r.id, true
	}
	if err := e.cfg.Drop.DropCookie(cookie, r.num); err != nil {
		e.stats.Errors++
		e.cfg.Log.Warn("could not drop a blocked flow", "server_name", name, "rule", r.id, "err", err)
		return r.id, false
	}
	e.dropped[cookie] = r.num
	e.stats.Dropped++
	return r.id, true
}

// DropsActive reports whether any rule may drop flows by server name (so the caller only
// looks names up when it matters).
func (e *Enforcer) DropsActive() bool {
	for _, r := range e.rules {
		if r.drop {
			return true
		}
	}
	return false
}

// Closed releases a socket's drop entry once its flow has ended.
func (e *Enforcer) Closed(cookie uint64) {
	if _, ok := e.dropped[cookie]; ok {
		e.forgetDrop(cookie)
	}
}

func (e *Enforcer) forgetDrop(cookie uint64) {
	delete(e.dropped, cookie)
	if e.cfg.Drop != nil {
		if err := e.cfg.Drop.ForgetCookie(cookie); err != nil {
			e.stats.Errors++
		}
	}
}

// Verdict is what the block list says about one flow.
type Verdict struct {
	Rule string
	// Enforced: the rule is carried out (refused or dropped); false for a would-block.
	Enforced bool
	// Explanation for the flow event's enforcement field.
	Explanation string
}

// Judge explains a flow the block list matches: a denial (RuleNum from the kernel), or a
// flow that got through although a rule matches its address or name (monitor mode,
// enforcement off, or an address learned after the connect).
func (e *Enforcer) Judge(remote netip.AddrPort, name string, denied bool, ruleNum uint32, via string) (Verdict, bool) {
	addr := remote.Addr().Unmap()
	if denied {
		v := Verdict{Rule: e.RuleName(ruleNum), Enforced: true}
		why := ""
		if d, ok := e.dynamic[addr]; ok && d.rule == ruleNum {
			why = fmt.Sprintf("; %s resolved from %s", addr, d.name)
		}
		v.Explanation = fmt.Sprintf("%s refused (EPERM) by block rule %s%s", via, v.Rule, why)
		return v, true
	}
	for _, r := range e.rules {
		hit := ""
		for _, d := range r.dests {
			if d.Prefix.Contains(addr) && (d.Port == 0 || d.Port == remote.Port()) {
				hit = "destination " + d.String()
				break
			}
		}
		if hit == "" && name != "" && policy.DomainBlocked(name, r.domains) {
			hit = "name " + name
		}
		if hit == "" {
			continue
		}
		v := Verdict{Rule: r.id}
		switch {
		case !r.enforced:
			v.Explanation = fmt.Sprintf("would block (%s matches block rule %s; the rule or policy is in monitor mode or network.enforce is off)", hit, r.id)
		case e.cfg.Deny == nil:
			v.Explanation = fmt.Sprintf("not blocked: %s matches block rule %s but the connect hooks are not loaded", hit, r.id)
		default:
			v.Explanation = fmt.Sprintf("not refused at connect: %s matches block rule %s but the address was not on the deny list yet (resolved outside the agent's view or after the connect)", hit, r.id)
		}
		return v, true
	}
	return Verdict{}, false
}

// Stats returns the counters.
func (e *Enforcer) Stats() EnforcerStats {
	s := e.stats
	s.Static, s.Resolved = len(e.static), len(e.dynamic)
	return s
}
