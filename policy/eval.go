package policy

import (
	"cmp"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/interpreter"
)

// Policy is a compiled bundle: every expression is checked, cost-bounded and turned into a
// CEL program once, so deciding is evaluation only. It is safe for concurrent use; the only
// mutable state is the mass-export counters, which have their own locks.
type Policy struct {
	bundle *Bundle
	// order is rule indexes by decreasing strength, so the first match decides.
	order      []int
	rules      []compiledRule
	exceptions []compiledException
	monitorIdx []int // rules in monitor mode, for MonitorHits
	massIdx    []int // mass-export rules, counted on every input
	apps       appIndex
	consents   consentIndex
	version    string
	// detectedVals are the four possible data.detected lists, converted once.
	detectedVals [4]ref.Val
	attrIndex    map[string]int
	pool         sync.Pool
	evalErrors   atomic.Uint64
}

type compiledRule struct {
	Rule
	expr       compiledExpr // zero for a mass-export rule without a when filter
	monitor    bool
	exceptions []int
	mass       *massCounter
}

type compiledException struct {
	Exception
	expr compiledExpr
}

// Load parses and compiles a policy file. file names the source in errors, which come as an
// ErrorList of file:line:column problems.
func Load(file string, src []byte) (*Policy, error) {
	b, d := parse(file, src)
	if len(d.errs) > 0 {
		return nil, d.errs
	}
	p := d.compile(b)
	if len(d.errs) > 0 {
		return nil, d.errs
	}
	return p, nil
}

func (d *decoder) compile(b *Bundle) *Policy {
	env, err := newEnv()
	if err != nil {
		d.errAt(0, 0, "%v", err)
		return nil
	}
	p := &Policy{bundle: b, version: strconv.FormatUint(b.Version, 10)}
	p.pool.New = func() any { return &activation{} }
	for bits := range p.detectedVals {
		var l []string
		if bits&1 != 0 {
			l = append(l, string(ClassPart2))
		}
		if bits&2 != 0 {
			l = append(l, string(ClassPHI))
		}
		p.detectedVals[bits] = types.NewStringList(types.DefaultTypeAdapter, l)
	}
	p.attrIndex = make(map[string]int, len(attributes))
	for i, at := range attributes {
		p.attrIndex[at.name] = i
	}
	for i, r := range b.Rules {
		cr := compiledRule{Rule: r, monitor: r.Monitor || b.Mode == ModeMonitor}
		if r.When != "" {
			cr.expr = d.compileExpr(env, r.whenNode, "rule "+r.ID+" when", r.When)
		} else if r.MassExport == nil {
			d.errf(r.whenNode, "rule %s: when is empty", r.ID)
		}
		if r.MassExport != nil {
			cr.mass = newMassCounter(r.MassExport)
			p.massIdx = append(p.massIdx, i)
		}
		if cr.monitor {
			p.monitorIdx = append(p.monitorIdx, i)
		}
		p.rules = append(p.rules, cr)
	}
	for i, e := range b.Exceptions {
		ce := compiledException{Exception: e}
		ce.expr = d.compileExpr(env, e.whenNode, "exception "+e.ID+" when", e.When)
		p.exceptions = append(p.exceptions, ce)
		for ri := range p.rules {
			if len(e.Rules) == 0 || slices.Contains(e.Rules, p.rules[ri].ID) {
				p.rules[ri].exceptions = append(p.rules[ri].exceptions, i)
			}
		}
	}
	p.order = make([]int, len(p.rules))
	for i := range p.order {
		p.order[i] = i
	}
	slices.SortStableFunc(p.order, func(a, b int) int {
		ra, rb := &p.rules[a], &p.rules[b]
		return cmp.Or(
			cmp.Compare(rb.effective(), ra.effective()),
			cmp.Compare(rb.Action, ra.Action),
			cmp.Compare(rb.Severity, ra.Severity),
		)
	})
	p.apps = newAppIndex(b.Apps)
	p.consents = newConsentIndex(b.Consents)
	return p
}

// effective is the strongest thing a rule can make happen: monitor rules only record.
func (r *compiledRule) effective() Action {
	if r.monitor {
		return min(r.Action, ActionRecord)
	}
	return r.Action
}

// Bundle returns the parsed bundle the policy was compiled from.
func (p *Policy) Bundle() *Bundle { return p.bundle }

// Name is the bundle's name.
func (p *Policy) Name() string { return p.bundle.Name }

// Version is the bundle's version.
func (p *Policy) Version() uint64 { return p.bundle.Version }

// EvalErrors counts expression evaluations that failed at run time (treated as no match).
func (p *Policy) EvalErrors() uint64 { return p.evalErrors.Load() }

// NeedsDocumentHash reports whether any consent names documents, so callers hash content
// only when it can matter.
func (p *Policy) NeedsDocumentHash() bool { return len(p.consents.byDoc) > 0 }

// Evaluate decides one input. Semantics (docs/policy.md): rules are ranked by what they can
// make happen (monitor-mode rules rank as record), then by action, then severity, then file
// order, and the first matching rule in that ranking decides, so the strongest match wins
// and file order only breaks ties. A match that an exception or an active consent covers
// does not decide while a weaker uncovered rule matches; when only covered matches exist the
// strongest of them is reported as excepted or consented. Mass-export rules count every
// input and match on the input that crosses their threshold.
func (p *Policy) Evaluate(in *Input) Decision {
	a := p.pool.Get().(*activation)
	a.reset(p, in)
	defer func() {
		a.in = nil
		p.pool.Put(a)
	}()
	var fired uint64 // bit i: mass rule massIdx[i] crossed its threshold on this input
	for i, ri := range p.massIdx {
		if i < 64 && p.massMatch(&p.rules[ri], a) {
			fired |= 1 << i
		}
	}
	var covered Decision
	var winner *compiledRule
	var d Decision
	for _, ri := range p.order {
		r := &p.rules[ri]
		if covered.RuleID != "" && r.effective() <= ActionRecord {
			break // nothing weaker may turn a consented or excepted match back into a violation
		}
		if !p.ruleMatches(r, ri, a, fired) {
			continue
		}
		if ex := p.exceptionFor(r, a); ex != "" {
			if covered.RuleID == "" {
				covered = p.decision(r)
				covered.ExceptionID = ex
			}
			continue
		}
		if r.Consent {
			if c := p.consents.match(a); c != "" {
				if covered.RuleID == "" {
					covered = p.decision(r)
					covered.ConsentID = c
					covered.Compliance = append(slices.Clip(covered.Compliance), "42 CFR 2.31")
				}
				continue
			}
		}
		winner, d = r, p.decision(r)
		break
	}
	if winner == nil {
		d = covered
	}
	if d.RuleID != "" && len(p.monitorIdx) > 0 && len(p.monitorIdx) < len(p.rules) {
		for _, ri := range p.monitorIdx {
			r := &p.rules[ri]
			if r.ID != d.RuleID && p.ruleMatches(r, ri, a, fired) {
				d.MonitorHits = append(d.MonitorHits, r.ID)
			}
		}
	}
	return d
}

func (p *Policy) decision(r *compiledRule) Decision {
	return Decision{
		Action: r.Action, Severity: r.Severity, RuleID: r.ID, Compliance: slices.Clip(r.Compliance),
		Version: p.version, PolicyName: p.bundle.Name, Monitor: r.monitor,
	}
}

func (p *Policy) ruleMatches(r *compiledRule, ri int, a *activation, fired uint64) bool {
	if r.mass != nil {
		i := slices.Index(p.massIdx, ri)
		return i >= 0 && i < 64 && fired&(1<<i) != 0
	}
	return p.eval(&r.expr, a)
}

func (p *Policy) exceptionFor(r *compiledRule, a *activation) string {
	for _, ei := range r.exceptions {
		e := &p.exceptions[ei]
		if !e.Expires.IsZero() && !a.in.Time.Before(e.Expires) {
			continue
		}
		if p.eval(&e.expr, a) {
			return e.ID
		}
	}
	return ""
}

// massMatch counts the input against a mass-export rule and reports whether it crossed the
// threshold. Inputs count when their class is detected and the rule's when (if any) holds.
func (p *Policy) massMatch(r *compiledRule, a *activation) bool {
	m := r.MassExport
	if !slices.Contains(a.detectedList(), string(m.Class)) {
		return false
	}
	if r.expr.prg != nil && !p.eval(&r.expr, a) {
		return false
	}
	return r.mass.add(a.in.User.Name, a.now, a.in.Records, a.in.Bytes)
}

// eval runs one program; errors and panics count as no match, never as a crash.
func (p *Policy) eval(x *compiledExpr, a *activation) (ok bool) {
	if x.prg == nil {
		return false
	}
	for _, g := range x.guards {
		if !g(a) {
			return false
		}
	}
	defer func() {
		if r := recover(); r != nil {
			p.evalErrors.Add(1)
			ok = false
		}
	}()
	v, _, err := x.prg.Eval(a)
	if err != nil {
		p.evalErrors.Add(1)
		return false
	}
	return v == types.True
}

// activation resolves attribute names straight from the Input, converting each at most once
// per evaluation; it is pooled so deciding does not allocate a map per event.
type activation struct {
	p   *Policy
	in  *Input
	now time.Time

	app                             AppInput
	detected                        []string
	detectedBits                    int
	fileExt, fileMedia, procName    string
	haveApp, haveDetected, haveFile bool
	vals                            [len(attributes)]ref.Val
}

func (a *activation) reset(p *Policy, in *Input) {
	*a = activation{p: p, in: in, detected: a.detected[:0]}
	a.now = in.Time
	if a.now.IsZero() {
		a.now = time.Now()
	}
}

// appInfo is the input's app, or the bundle's app recognised by process name or domain.
func (a *activation) appInfo() *AppInput {
	if !a.haveApp {
		a.haveApp = true
		a.app = a.in.App
		if a.app.Name == "" {
			if app := a.p.apps.lookup(a.processName(), a.in.Destination.Domain); app != nil {
				a.app = AppInput{Name: app.Name, Category: app.Category, Sanctioned: app.Sanctioned, Purpose: app.Purpose}
			}
		}
	}
	return &a.app
}

func (a *activation) file() {
	if !a.haveFile {
		a.haveFile = true
		a.fileExt = a.in.File.Ext
		if a.fileExt == "" && a.in.File.Path != "" {
			a.fileExt = toLowerASCII(strings.TrimPrefix(path.Ext(a.in.File.Path), "."))
		}
		a.fileMedia = a.in.File.Media
		if a.fileMedia == "" {
			a.fileMedia = MediaKind(a.fileExt)
		}
	}
}

func (a *activation) processName() string {
	if a.procName == "" {
		a.procName = a.in.Process.Name
		if a.procName == "" && a.in.Process.Exe != "" {
			a.procName = path.Base(a.in.Process.Exe)
		}
	}
	return a.procName
}

func (a *activation) detectedList() []string {
	if !a.haveDetected {
		a.haveDetected = true
		for i, c := range [...]Class{ClassPart2, ClassPHI} {
			if conf, ok := a.in.Classes[c]; ok && conf >= a.p.bundle.Thresholds[c] {
				a.detected = append(a.detected, string(c))
				a.detectedBits |= 1 << i
			}
		}
	}
	return a.detected
}

// Parent implements interpreter.Activation.
func (a *activation) Parent() interpreter.Activation { return nil }

// ResolveName implements interpreter.Activation for the attribute table's names.
func (a *activation) ResolveName(name string) (any, bool) {
	i, ok := a.p.attrIndex[name]
	if !ok {
		return nil, false
	}
	if v := a.vals[i]; v != nil {
		return v, true
	}
	v := a.resolve(name)
	a.vals[i] = v
	return v, true
}

func (a *activation) resolve(name string) ref.Val {
	in := a.in
	switch name {
	case "event.kind":
		return types.String(bound(in.Kind, 32))
	case "data.classes":
		m := make(map[ref.Val]ref.Val, 2+len(in.Classes))
		m[types.String(ClassPart2)], m[types.String(ClassPHI)] = types.IntZero, types.IntZero
		for c, v := range in.Classes {
			if len(m) < 8 || c == ClassPart2 || c == ClassPHI {
				m[types.String(bound(string(c), maxElemLen))] = types.Int(v)
			}
		}
		return types.NewRefValMap(types.DefaultTypeAdapter, m)
	case "data.detected":
		a.detectedList()
		return a.p.detectedVals[a.detectedBits]
	case "data.detectors":
		return stringList(in.Detectors, 64)
	case "data.records":
		return types.Int(in.Records)
	case "data.bytes":
		return types.Int(in.Bytes)
	case "data.patients":
		return stringList(in.Patients, 256)
	case "destination.kind":
		return types.String(bound(in.Destination.Kind, 32))
	case "destination.path":
		return types.String(bound(in.Destination.Path, maxStrLen))
	case "destination.domain":
		return types.String(bound(toLowerASCII(in.Destination.Domain), 253))
	case "destination.org":
		return types.String(bound(in.Destination.Org, maxElemLen))
	case "destination.address":
		return types.String(bound(in.Destination.Address, 45))
	case "destination.port":
		return types.Int(in.Destination.Port)
	case "app.name":
		return types.String(bound(a.appInfo().Name, 128))
	case "app.category":
		return types.String(bound(a.appInfo().Category, 128))
	case "app.sanctioned":
		return types.Bool(a.appInfo().Sanctioned)
	case "app.purpose":
		return types.String(bound(a.appInfo().Purpose, 64))
	case "network.evasion":
		return stringList(in.Network.Evasion, 8)
	case "network.direction":
		return types.String(bound(in.Network.Direction, 16))
	case "file.path":
		return types.String(bound(in.File.Path, maxStrLen))
	case "file.ext":
		a.file()
		return types.String(bound(a.fileExt, 32))
	case "file.media":
		a.file()
		return types.String(bound(a.fileMedia, 16))
	case "process.exe":
		return types.String(bound(in.Process.Exe, maxStrLen))
	case "process.name":
		return types.String(bound(a.processName(), maxElemLen))
	case "process.hash":
		return types.String(bound(in.Process.Hash, 64))
	case "process.args":
		return stringList(in.Process.Args, 64)
	case "user.name":
		return types.String(bound(in.User.Name, maxElemLen))
	case "user.uid":
		return types.Int(in.User.UID)
	case "user.groups":
		return stringList(in.User.Groups, 64)
	case "host.name":
		return types.String(bound(in.Host.Name, 253))
	case "host.tags":
		return stringList(in.Host.Tags, 32)
	case "lineage.classes":
		return stringList(in.Lineage.Classes, 8)
	case "lineage.sources":
		return stringList(in.Lineage.Sources, 16)
	case "time":
		return types.Timestamp{Time: a.now}
	}
	return types.NewErr("unknown attribute %s", name)
}

// stringList converts a string list, cut to the bounds the cost check assumed.
func stringList(src []string, maxItems int) ref.Val {
	if len(src) > maxItems {
		src = src[:maxItems]
	}
	for _, s := range src {
		if len(s) > maxElemLen {
			cp := make([]string, len(src))
			for i := range src {
				cp[i] = bound(src[i], maxElemLen)
			}
			src = cp
			break
		}
	}
	return types.NewStringList(types.DefaultTypeAdapter, src)
}

func bound(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// String describes the compiled policy for logs.
func (p *Policy) String() string {
	return fmt.Sprintf("%s v%d (%d rules, %s)", p.bundle.Name, p.bundle.Version, len(p.rules), p.bundle.Mode)
}
