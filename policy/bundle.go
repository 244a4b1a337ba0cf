package policy

import (
	"fmt"
	"slices"
	"time"

	"go.yaml.in/yaml/v3"
)

// Limits on a bundle. They keep a hostile or mistaken bundle from costing the agent memory
// or time: the payload is bounded, and so is every list and expression in it.
const (
	MaxPayloadBytes = 768 << 10 // fits one gRPC message (the collector sends at most 1 MiB)
	maxRules        = 256
	maxExceptions   = 256
	maxConsents     = 10000
	maxApps         = 1000
	maxExprBytes    = 4096
	maxListItems    = 1000
	maxTextBytes    = 4096
)

// Destination kinds: where content is going. Today's file sensor produces only
// DestWatchedPath; the others are produced by the sensors and network-intelligence work and
// are part of the policy language now so bundles written today keep meaning the same thing.
const (
	DestWatchedPath    = "watched-path"
	DestRemovableMedia = "removable-media"
	DestNetworkShare   = "network-share"
	DestSyncFolder     = "sync-folder"
	DestNetworkApp     = "network-app"
	DestLocal          = "local"
)

// Event kinds, the value of event.kind.
const (
	EventFileWrite = "file-write"
	EventNetwork   = "network"
	EventProcess   = "process"
)

// Mode is the whole bundle's enforcement mode.
type Mode string

// Modes.
const (
	ModeEnforce Mode = "enforce"
	ModeMonitor Mode = "monitor"
)

// Bundle is a parsed (not yet compiled) policy file. Every field is what the YAML said,
// validated; Compile turns it into something that can decide.
type Bundle struct {
	Name        string
	Version     uint64
	Description string
	Mode        Mode
	// Watch are directories the agent watches on top of its own configuration.
	Watch []string
	// Thresholds is the minimum confidence for each class to count as detected.
	Thresholds map[Class]int
	Apps       []App
	Rules      []Rule
	Exceptions []Exception
	Consents   []Consent
	// Sanctioning, when set, delegates apps' sanctioned status to the collector's
	// sanctioning key (sanctioning.go); nil keeps the apps list as the only source.
	Sanctioning *Sanctioning
	// Network lists what the agent refuses on the network (network.go).
	Network NetworkPolicy
}

// App is an application the policy knows: how to recognise it and whether the clinic
// sanctions it. Sensors that know the app (network intelligence) say so in the input;
// otherwise the app is recognised from the writing process's name.
type App struct {
	Name       string
	Category   string
	Sanctioned bool
	Purpose    string
	Processes  []string
	Domains    []string
}

// MassExport makes a rule count: it fires when one user moves more than Records records or
// Bytes bytes of Class within Window.
type MassExport struct {
	Class   Class
	Records int64
	Bytes   int64
	Window  time.Duration
}

// Rule is one policy rule as written.
type Rule struct {
	ID          string
	Description string
	When        string
	Action      Action
	Severity    Severity
	Monitor     bool
	// Consent lets an active patient consent turn a match into a consented disclosure.
	Consent    bool
	Compliance []string
	MassExport *MassExport
	line, col  int // of the when expression's first character, for CEL errors
	whenNode   *yaml.Node
}

// Exception suppresses rules for inputs its expression matches, until it expires.
type Exception struct {
	ID       string
	Rules    []string // empty: every rule
	When     string
	Reason   string
	Expires  time.Time // zero: no expiry
	whenNode *yaml.Node
}

// Consent is one patient's active consent to disclose their Part 2 records to a recipient
// for a purpose (42 CFR 2.31). Patients are named by the keyed fingerprints findings carry
// (EDM matches), documents by SHA-256 of their content.
type Consent struct {
	ID        string
	Patients  []string
	Documents []string
	Apps      []string
	Domains   []string
	Orgs      []string
	Purposes  []string
	NotBefore time.Time
	Expires   time.Time
	Revoked   bool
}

var (
	topKeys       = []string{"name", "version", "description", "mode", "targets", "data_classes", "apps", "rules", "exceptions", "consents", "sanctioning", "network"}
	ruleKeys      = []string{"id", "description", "when", "then", "monitor", "consent", "compliance", "mass_export"}
	thenKeys      = []string{"action", "severity"}
	massKeys      = []string{"class", "records", "bytes", "window"}
	exceptionKeys = []string{"id", "rules", "when", "reason", "expires"}
	consentKeys   = []string{"id", "patients", "documents", "recipient", "purposes", "not_before", "expires", "revoked"}
	recipientKeys = []string{"apps", "domains", "orgs"}
	appKeys       = []string{"name", "category", "sanctioned", "purpose", "processes", "domains"}
	classKeys     = []string{"min_confidence"}
	targetKeys    = []string{"watch"}
)

// Parse decodes a policy file strictly. file names the source in errors. It checks
// structure and values but does not compile expressions (Compile does); Lint does both.
func Parse(file string, src []byte) (*Bundle, error) {
	b, d := parse(file, src)
	if len(d.errs) > 0 {
		return nil, d.errs
	}
	return b, nil
}

func parse(file string, src []byte) (*Bundle, *decoder) {
	d := &decoder{file: file, src: src}
	if len(src) > MaxPayloadBytes {
		d.errAt(0, 0, "policy is %d bytes; the limit is %d", len(src), MaxPayloadBytes)
		return nil, d
	}
	root, ok := d.parseYAML()
	if !ok {
		return nil, d
	}
	f := d.fields(root, "policy", topKeys, "name", "version", "rules")
	if f == nil {
		return nil, d
	}
	b := &Bundle{Mode: ModeEnforce, Thresholds: map[Class]int{}}
	b.Name = d.ident(f["name"], "name")
	if n := f["version"]; n != nil {
		b.Version = d.uinteger(n, "version")
	}
	if n := f["description"]; n != nil {
		b.Description = d.str(n, "description", maxTextBytes)
	}
	if n := f["mode"]; n != nil {
		switch m := Mode(d.str(n, "mode", 16)); m {
		case ModeEnforce, ModeMonitor:
			b.Mode = m
		default:
			d.errf(n, "mode: want enforce or monitor, got %q", m)
		}
	}
	if n := f["targets"]; n != nil {
		if tf := d.fields(n, "targets", targetKeys); tf != nil {
			b.Watch = d.strList(tf["watch"], "targets.watch", 256, 4096)
			for i, w := range b.Watch {
				if len(w) == 0 || w[0] != '/' {
					d.errf(tf["watch"], "targets.watch[%d]: %q is not an absolute path", i, w)
				}
			}
		}
	}
	if n := f["data_classes"]; n != nil {
		if cf := d.fields(n, "data_classes", []string{string(ClassPart2), string(ClassPHI)}); cf != nil {
			for _, name := range []Class{ClassPart2, ClassPHI} {
				if cn := cf[string(name)]; cn != nil {
					if ff := d.fields(cn, "data_classes."+string(name), classKeys, "min_confidence"); ff != nil {
						b.Thresholds[name] = int(d.integer(ff["min_confidence"], "data_classes."+string(name)+".min_confidence", 0, 100))
					}
				}
			}
		}
	}
	for _, c := range []Class{ClassPart2, ClassPHI} {
		if _, ok := b.Thresholds[c]; !ok {
			b.Thresholds[c] = DefaultThreshold
		}
	}
	for i, an := range d.list(f["apps"], "apps", maxApps) {
		b.Apps = append(b.Apps, d.app(an, fmt.Sprintf("apps[%d]", i)))
	}
	if n := f["sanctioning"]; n != nil {
		b.Sanctioning = d.sanctioning(n)
	}
	seen := map[string]bool{}
	for i, an := range b.Apps {
		if an.Name != "" && seen[an.Name] {
			d.errf(f["apps"].Content[i], "apps[%d]: app %q defined twice", i, an.Name)
		}
		seen[an.Name] = true
	}
	ruleNodes := d.list(f["rules"], "rules", maxRules)
	if f["rules"] != nil && f["rules"].Kind == yaml.SequenceNode && len(f["rules"].Content) == 0 {
		d.errf(f["rules"], "rules: a policy needs at least one rule")
	}
	ids := map[string]bool{}
	for i, rn := range ruleNodes {
		r := d.rule(rn, fmt.Sprintf("rules[%d]", i))
		if r.ID != "" {
			if ids[r.ID] {
				d.errf(rn, "rules[%d]: rule id %q used twice", i, r.ID)
			}
			ids[r.ID] = true
		}
		b.Rules = append(b.Rules, r)
	}
	for i, en := range d.list(f["exceptions"], "exceptions", maxExceptions) {
		e := d.exception(en, fmt.Sprintf("exceptions[%d]", i))
		for _, rid := range e.Rules {
			if !ids[rid] {
				d.errf(en, "exceptions[%d]: rule %q does not exist", i, rid)
			}
		}
		b.Exceptions = append(b.Exceptions, e)
	}
	cids := map[string]bool{}
	for i, cn := range d.list(f["consents"], "consents", maxConsents) {
		c := d.consent(cn, fmt.Sprintf("consents[%d]", i))
		if c.ID != "" && cids[c.ID] {
			d.errf(cn, "consents[%d]: consent id %q used twice", i, c.ID)
		}
		cids[c.ID] = true
		b.Consents = append(b.Consents, c)
	}
	if n := f["network"]; n != nil {
		b.Network = d.network(n, b, ids)
	}
	return b, d
}

// DefaultThreshold is the confidence a class needs to count as detected when the bundle's
// data_classes section does not say.
const DefaultThreshold = 65

func (d *decoder) app(n *yaml.Node, what string) App {
	f := d.fields(n, what, appKeys, "name", "category")
	if f == nil {
		return App{}
	}
	a := App{Name: d.ident(f["name"], what+".name"), Category: d.ident(f["category"], what+".category")}
	if v := f["sanctioned"]; v != nil {
		a.Sanctioned = d.boolean(v, what+".sanctioned")
	}
	if v := f["purpose"]; v != nil {
		a.Purpose = d.ident(v, what+".purpose")
	}
	a.Processes = d.strList(f["processes"], what+".processes", 64, 256)
	a.Domains = lowerAll(d.strList(f["domains"], what+".domains", 256, 253))
	return a
}

func (d *decoder) rule(n *yaml.Node, what string) Rule {
	f := d.fields(n, what, ruleKeys, "id", "then", "compliance")
	if f == nil {
		return Rule{}
	}
	r := Rule{ID: d.ident(f["id"], what+".id")}
	if r.ID != "" {
		what = "rule " + r.ID
	}
	if v := f["description"]; v != nil {
		r.Description = d.str(v, what+".description", maxTextBytes)
	}
	if v := f["when"]; v != nil {
		r.When = d.str(v, what+".when", maxExprBytes)
		r.whenNode = v
	}
	if v := f["monitor"]; v != nil {
		r.Monitor = d.boolean(v, what+".monitor")
	}
	if v := f["consent"]; v != nil {
		r.Consent = d.boolean(v, what+".consent")
	}
	r.Compliance = d.strList(f["compliance"], what+".compliance", 32, 128)
	if f["compliance"] != nil && len(r.Compliance) == 0 {
		d.errf(f["compliance"], "%s.compliance: name at least one regulation the rule enforces (e.g. \"HIPAA 164.312(b)\")", what)
	}
	if v := f["then"]; v != nil {
		r.Action, r.Severity = d.then(v, what+".then")
	}
	if v := f["mass_export"]; v != nil {
		r.MassExport = d.massExport(v, what+".mass_export")
	}
	if r.When == "" && r.MassExport == nil && f["when"] == nil {
		d.errf(n, "%s: needs a when expression (or a mass_export block)", what)
	}
	return r
}

func (d *decoder) then(n *yaml.Node, what string) (Action, Severity) {
	if n.Kind == yaml.ScalarNode {
		a, ok := parseAction(n.Value)
		switch {
		case !ok:
			d.errf(n, "%s: want record, alert, block or kill, got %q", what, n.Value)
		case a != ActionRecord:
			d.errf(n, "%s: %s needs a severity: write then: {action: %s, severity: high}", what, n.Value, n.Value)
		}
		return a, SeverityInfo
	}
	f := d.fields(n, what, thenKeys, "action")
	if f == nil {
		return ActionNone, 0
	}
	s := d.str(f["action"], what+".action", 16)
	a, ok := parseAction(s)
	if !ok && f["action"] != nil {
		d.errf(f["action"], "%s.action: want record, alert, block or kill, got %q", what, s)
	}
	sev := SeverityInfo
	if v := f["severity"]; v != nil {
		s := d.str(v, what+".severity", 16)
		if sev, ok = parseSeverity(s); !ok {
			d.errf(v, "%s.severity: want info, low, medium, high or critical, got %q", what, s)
		}
	} else if a > ActionRecord {
		d.errf(n, "%s: %s needs a severity (info, low, medium, high or critical)", what, a)
	}
	return a, sev
}

func (d *decoder) massExport(n *yaml.Node, what string) *MassExport {
	f := d.fields(n, what, massKeys, "class", "window")
	if f == nil {
		return nil
	}
	m := &MassExport{}
	c := Class(d.str(f["class"], what+".class", 32))
	if c != ClassPart2 && c != ClassPHI && f["class"] != nil {
		d.errf(f["class"], "%s.class: want part2 or phi, got %q", what, c)
	}
	m.Class = c
	if v := f["records"]; v != nil {
		m.Records = d.integer(v, what+".records", 1, 1<<40)
	}
	if v := f["bytes"]; v != nil {
		m.Bytes = d.byteSize(v, what+".bytes")
	}
	if f["records"] == nil && f["bytes"] == nil {
		d.errf(n, "%s: give records, bytes or both", what)
	}
	m.Window = d.duration(f["window"], what+".window", time.Minute, 30*24*time.Hour)
	return m
}

func (d *decoder) exception(n *yaml.Node, what string) Exception {
	f := d.fields(n, what, exceptionKeys, "id", "when", "reason")
	if f == nil {
		return Exception{}
	}
	e := Exception{ID: d.ident(f["id"], what+".id")}
	if e.ID != "" {
		what = "exception " + e.ID
	}
	e.Rules = d.strList(f["rules"], what+".rules", maxRules, 128)
	if v := f["when"]; v != nil {
		e.When = d.str(v, what+".when", maxExprBytes)
		e.whenNode = v
	}
	e.Reason = d.str(f["reason"], what+".reason", maxTextBytes)
	if f["reason"] != nil && e.Reason == "" {
		d.errf(f["reason"], "%s.reason: say why the exception exists, for the auditors", what)
	}
	if v := f["expires"]; v != nil {
		e.Expires = d.timestamp(v, what+".expires")
	}
	return e
}

func (d *decoder) consent(n *yaml.Node, what string) Consent {
	f := d.fields(n, what, consentKeys, "id", "recipient", "expires")
	if f == nil {
		return Consent{}
	}
	c := Consent{ID: d.ident(f["id"], what+".id")}
	if c.ID != "" {
		what = "consent " + c.ID
	}
	c.Patients = lowerAll(d.strList(f["patients"], what+".patients", maxListItems, 128))
	c.Documents = lowerAll(d.strList(f["documents"], what+".documents", maxListItems, 64))
	for i, doc := range c.Documents {
		if !isHex(doc, 64) {
			d.errf(f["documents"], "%s.documents[%d]: want a SHA-256 in hex (64 characters)", what, i)
		}
	}
	if len(c.Patients) == 0 && len(c.Documents) == 0 {
		d.errf(n, "%s: name the patients (EDM fingerprints) or documents (SHA-256) it covers", what)
	}
	if rn := f["recipient"]; rn != nil {
		if rf := d.fields(rn, what+".recipient", recipientKeys); rf != nil {
			c.Apps = d.strList(rf["apps"], what+".recipient.apps", 64, 128)
			c.Domains = lowerAll(d.strList(rf["domains"], what+".recipient.domains", 256, 253))
			c.Orgs = d.strList(rf["orgs"], what+".recipient.orgs", 64, 256)
			if len(c.Apps)+len(c.Domains)+len(c.Orgs) == 0 {
				d.errf(rn, "%s.recipient: name at least one app, domain or org", what)
			}
		}
	}
	c.Purposes = d.strList(f["purposes"], what+".purposes", 16, 64)
	if v := f["not_before"]; v != nil {
		c.NotBefore = d.timestamp(v, what+".not_before")
	}
	c.Expires = d.timestamp(f["expires"], what+".expires")
	if !c.NotBefore.IsZero() && !c.Expires.IsZero() && !c.Expires.After(c.NotBefore) {
		d.errf(f["expires"], "%s.expires: must be after not_before", what)
	}
	if v := f["revoked"]; v != nil {
		c.Revoked = d.boolean(v, what+".revoked")
	}
	return c
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return false
		}
	}
	return true
}

func lowerAll(in []string) []string {
	for i, s := range in {
		in[i] = toLowerASCII(s)
	}
	return in
}

func toLowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if b[j] >= 'A' && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// RuleIDs lists the rule ids in file order.
func (b *Bundle) RuleIDs() []string {
	out := make([]string, 0, len(b.Rules))
	for _, r := range b.Rules {
		out = append(out, r.ID)
	}
	return slices.Clip(out)
}
