package policy

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

// withPack appends YAML sections to the default pack (which has no exceptions or consents).
func withPack(t testing.TB, extra string) *Policy {
	t.Helper()
	src := string(DefaultPack()) + extra
	p, err := Load("test.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

const fpA = "5f1c0a9d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a19"
const fpB = "0000000000000000000000000000000000000000000000000000000000000001"

func TestConsentTurnsPart2DisclosureIntoConsentedDisclosure(t *testing.T) {
	p := withPack(t, `
consents:
  - id: consent-2026-0042
    patients: [`+fpA+`]
    recipient: {apps: [zoom], orgs: [Riverside Recovery]}
    purposes: [treatment]
    not_before: 2026-01-01
    expires: 2027-01-01
  - id: consent-revoked
    patients: [`+fpB+`]
    recipient: {apps: [zoom]}
    expires: 2027-01-01
    revoked: true
`)
	disclose := func(mod func(*Input)) Decision {
		return p.Evaluate(in(func(x *Input) {
			x.Kind = EventNetwork
			x.Classes[ClassPart2] = 95
			x.Patients = []string{fpA}
			x.Destination = Destination{Kind: DestNetworkApp, Domain: "zoom.us"}
			mod(x)
		}))
	}
	cases := []struct {
		name            string
		mod             func(*Input)
		rule, consent   string
		action, outcome string
	}{
		{"consented", func(*Input) {}, "part2-disclosure-without-consent", "consent-2026-0042", "alert", "consented-disclosure"},
		{"after expiry", func(x *Input) { x.Time = time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC) }, "part2-disclosure-without-consent", "", "alert", "alert"},
		{"before not_before", func(x *Input) { x.Time = time.Date(2025, 12, 31, 0, 0, 0, 0, time.UTC) }, "part2-disclosure-without-consent", "", "alert", "alert"},
		{"another patient in the same file", func(x *Input) { x.Patients = []string{fpA, fpB} }, "part2-disclosure-without-consent", "", "alert", "alert"},
		{"revoked consent", func(x *Input) { x.Patients = []string{fpB} }, "part2-disclosure-without-consent", "", "alert", "alert"},
		{"other recipient", func(x *Input) {
			x.Destination.Domain = "teams.microsoft.com"
		}, "part2-disclosure-without-consent", "", "alert", "alert"},
		{"recipient by org, unsanctioned app", func(x *Input) {
			x.Destination = Destination{Kind: DestNetworkApp, Domain: "portal.riverside.example", Org: "Riverside Recovery"}
			x.App = AppInput{Name: "riverside-portal", Purpose: "treatment"}
		}, "part2-unsanctioned-destination", "consent-2026-0042", "block", "consented-disclosure"},
		{"wrong purpose", func(x *Input) {
			x.Destination = Destination{Kind: DestNetworkApp, Domain: "portal.riverside.example", Org: "Riverside Recovery"}
			x.App = AppInput{Name: "riverside-portal", Purpose: "marketing"}
		}, "part2-unsanctioned-destination", "", "block", "block"},
		{"no EDM patient named", func(x *Input) { x.Patients = nil }, "part2-disclosure-without-consent", "", "alert", "alert"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := disclose(c.mod)
			if d.RuleID != c.rule || d.ConsentID != c.consent || d.Action.String() != c.action || d.Outcome() != c.outcome {
				t.Fatalf("got %s, want rule %s consent %q action %s outcome %s", d, c.rule, c.consent, c.action, c.outcome)
			}
			if c.consent != "" && (d.Taken() != ActionRecord || !strings.Contains(strings.Join(d.Compliance, ","), "42 CFR 2.31")) {
				t.Fatalf("consented disclosure taken %s compliance %v", d.Taken(), d.Compliance)
			}
		})
	}
	// A consent does not excuse a rule that does not take consents (removable media).
	d := p.Evaluate(in(func(x *Input) {
		x.Classes[ClassPart2] = 95
		x.Patients = []string{fpA}
		x.Destination = Destination{Kind: DestRemovableMedia}
	}))
	if d.RuleID != "part2-removable-media" || d.ConsentID != "" || d.Taken() != ActionBlock {
		t.Fatalf("removable media with a consent: %s", d)
	}
}

func TestConsentByDocumentHash(t *testing.T) {
	doc := strings.Repeat("ab", 32)
	p := withPack(t, `
consents:
  - id: release-of-info-77
    documents: [`+strings.ToUpper(doc)+`]
    recipient: {domains: [hie.example.org]}
    expires: 2027-06-01T00:00:00Z
`)
	d := p.Evaluate(in(func(x *Input) {
		x.Kind = EventNetwork
		x.Classes[ClassPart2] = 95
		x.Document = doc
		x.Destination = Destination{Kind: DestNetworkApp, Domain: "upload.hie.example.org"}
	}))
	if d.ConsentID != "release-of-info-77" || d.RuleID != "part2-unsanctioned-destination" {
		t.Fatalf("document consent: %s", d)
	}
	if !p.NeedsDocumentHash() {
		t.Fatal("NeedsDocumentHash false with a document consent")
	}
}

func TestExceptionsSuppressAndExpire(t *testing.T) {
	p := withPack(t, `
exceptions:
  - id: billing-exports
    rules: [phi-in-watched-path]
    when: '"billing" in user.groups && file.path.startsWith("/srv/exports/billing/")'
    reason: Nightly claim export to the clearinghouse (ticket OPS-118).
    expires: 2027-01-01
`)
	billing := func(mod func(*Input)) Decision {
		return p.Evaluate(in(func(x *Input) {
			x.Classes[ClassPHI] = 90
			x.User.Groups = []string{"billing"}
			x.File.Path = "/srv/exports/billing/claims.csv"
			mod(x)
		}))
	}
	if d := billing(func(*Input) {}); d.Outcome() != "excepted" || d.ExceptionID != "billing-exports" || d.RuleID != "phi-in-watched-path" || d.Taken() != ActionRecord {
		t.Fatalf("excepted: %s", d)
	}
	if d := billing(func(x *Input) { x.User.Groups = []string{"clinicians"} }); d.RuleID != "phi-in-watched-path" || d.ExceptionID != "" {
		t.Fatalf("other group: %s", d)
	}
	if d := billing(func(x *Input) { x.Time = time.Date(2027, 2, 1, 0, 0, 0, 0, time.UTC) }); d.ExceptionID != "" || d.Taken() != ActionAlert {
		t.Fatalf("expired exception still applies: %s", d)
	}
	// The exception names one rule: Part 2 in the same file still alerts.
	if d := billing(func(x *Input) { x.Classes[ClassPart2] = 90 }); d.RuleID != "part2-in-watched-path" || d.ExceptionID != "" {
		t.Fatalf("exception leaked to another rule: %s", d)
	}
}

func TestMonitorModes(t *testing.T) {
	src := strings.Replace(string(DefaultPack()), "mode: enforce", "mode: monitor", 1)
	p, err := Load("monitor.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	d := p.Evaluate(in(func(x *Input) {
		x.Classes[ClassPart2] = 95
		x.Destination = Destination{Kind: DestRemovableMedia}
	}))
	if d.RuleID != "part2-removable-media" || !d.Monitor || d.Action != ActionBlock || d.Taken() != ActionRecord || d.Outcome() != "monitor:block" {
		t.Fatalf("global monitor: %s taken %s", d, d.Taken())
	}

	// One rule in trial: the enforcing rule decides and the trial rule is reported.
	p = withPack(t, `
  - id: trial-phi-any-usb-block
    description: trial
    when: '"phi" in data.detected && destination.kind == "removable-media"'
    then: {action: block, severity: critical}
    monitor: true
    compliance: ["HIPAA 164.310(d)(1)"]
`)
	d = p.Evaluate(in(func(x *Input) {
		x.Classes[ClassPHI] = 95
		x.Destination = Destination{Kind: DestRemovableMedia}
	}))
	if d.RuleID != "phi-removable-media" || d.Monitor || len(d.MonitorHits) != 1 || d.MonitorHits[0] != "trial-phi-any-usb-block" {
		t.Fatalf("trial rule: %s", d)
	}
}

func TestDecisionOrderIsStrongestNotFileOrder(t *testing.T) {
	p, err := Load("order.yaml", []byte(`
name: order
version: 3
rules:
  - id: weak-first
    when: 'data.records > 0'
    then: record
    compliance: [x]
  - id: medium
    when: 'data.records > 1'
    then: {action: alert, severity: medium}
    compliance: [x]
  - id: strong-last
    when: 'data.records > 2'
    then: {action: alert, severity: high}
    compliance: [x]
`))
	if err != nil {
		t.Fatal(err)
	}
	for recs, want := range map[int64]string{1: "weak-first", 2: "medium", 3: "strong-last", 0: ""} {
		if d := p.Evaluate(&Input{Records: recs}); d.RuleID != want {
			t.Errorf("records %d: %s, want %q", recs, d, want)
		}
	}
}

func TestAttributesAreAllUsable(t *testing.T) {
	// Every declared attribute resolves at run time with its declared type.
	var conds []string
	for _, a := range attributes {
		switch a.typ.String() {
		case "string":
			conds = append(conds, a.name+` != "\x01"`)
		case "int":
			conds = append(conds, a.name+` >= 0`)
		case "bool":
			conds = append(conds, `(`+a.name+` || !`+a.name+`)`)
		case "google.protobuf.Timestamp":
			conds = append(conds, a.name+` > timestamp("2000-01-01T00:00:00Z")`)
		default:
			conds = append(conds, a.name+`.size() >= 0`)
		}
	}
	src := "name: attrs\nversion: 1\nrules:\n  - id: all\n    when: '" + strings.Join(conds, " && ") + "'\n    then: record\n    compliance: [x]\n"
	p, err := Load("attrs.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	d := p.Evaluate(in(func(x *Input) { x.Process.Args = []string{"a"}; x.Network.Evasion = []string{"doh"} }))
	if d.RuleID != "all" || p.EvalErrors() != 0 {
		t.Fatalf("decision %s, %d eval errors", d, p.EvalErrors())
	}
	// A run-time error (missing map key) is no match, counted, never a panic.
	p, err = Load("err.yaml", []byte("name: e\nversion: 1\nrules:\n  - id: r\n    when: 'data.classes[\"nope\"] > 1'\n    then: record\n    compliance: [x]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if d := p.Evaluate(&Input{}); d.RuleID != "" || p.EvalErrors() != 1 {
		t.Fatalf("run-time error: %s, %d errors", d, p.EvalErrors())
	}
}

func TestLintErrorsArePrecise(t *testing.T) {
	cases := []struct {
		name, src, want string
	}{
		{"unknown key", "name: x\nversion: 1\nrulez: []\n", "x.yaml:3:1: policy: unknown key \"rulez\" (did you mean \"rules\"?)"},
		{"missing rules", "name: x\nversion: 1\n", "x.yaml:1:1: policy: missing required key \"rules\""},
		{"bad action", "name: x\nversion: 1\nrules:\n  - id: r\n    when: 'true'\n    then: {action: explode, severity: high}\n    compliance: [x]\n",
			"x.yaml:6:20: rule r.then.action: want record, alert, block or kill, got \"explode\""},
		{"alert without severity", "name: x\nversion: 1\nrules:\n  - id: r\n    when: 'true'\n    then: alert\n    compliance: [x]\n",
			"x.yaml:6:11: rule r.then: alert needs a severity"},
		{"cel syntax error", "name: x\nversion: 1\nrules:\n  - id: r\n    when: 'data.records >'\n    then: record\n    compliance: [x]\n",
			"x.yaml:5:"},
		{"cel unknown attribute", "name: x\nversion: 1\nrules:\n  - id: r\n    when: 'destination.knd == \"x\"'\n    then: record\n    compliance: [x]\n",
			"x.yaml:5:12: rule r when: undeclared reference to 'destination' (in container '') (known: destination.kind, destination.path"},
		{"cel unknown attribute in block scalar", "name: x\nversion: 1\nrules:\n  - id: r\n    when: |\n      data.records > 1\n      && user.nam == \"a\"\n    then: record\n    compliance: [x]\n",
			"x.yaml:7:10: rule r when: undeclared reference to 'user' (in container '') (known: user.name, user.uid, user.groups)"},
		{"cel not boolean", "name: x\nversion: 1\nrules:\n  - id: r\n    when: 'data.records'\n    then: record\n    compliance: [x]\n",
			"x.yaml:5:11: rule r when: must be true or false, but it is int"},
		{"cel too expensive", "name: x\nversion: 1\nrules:\n  - id: r\n    when: 'process.args.all(a, process.args.exists(b, b.contains(a) && user.groups.exists(g, g == b)))'\n    then: record\n    compliance: [x]\n",
			"x.yaml:5:"},
		{"duplicate rule", "name: x\nversion: 1\nrules:\n  - {id: r, when: 'true', then: record, compliance: [x]}\n  - {id: r, when: 'true', then: record, compliance: [x]}\n",
			"x.yaml:5:5: rules[1]: rule id \"r\" used twice"},
		{"alias", "name: x\nversion: 1\nc: &c [x]\nrules: []\n", "x.yaml:3:1: policy: unknown key \"c\""},
		{"alias use", "name: x\nversion: 1\nrules:\n  - id: r\n    when: 'true'\n    then: record\n    compliance: &c [x]\n  - id: s\n    when: 'true'\n    then: record\n    compliance: *c\n",
			"x.yaml:11:17: rules[1].compliance: YAML aliases are not allowed"},
		{"yaml syntax", "name: x\nversion: 1\nrules: [\n", "x.yaml:3: did not find expected node content"},
		{"exception for missing rule", "name: x\nversion: 1\nrules:\n  - {id: r, when: 'true', then: record, compliance: [x]}\nexceptions:\n  - {id: e, rules: [nope], when: 'true', reason: why}\n",
			"x.yaml:6:5: exceptions[0]: rule \"nope\" does not exist"},
		{"consent without expiry", "name: x\nversion: 1\nrules:\n  - {id: r, when: 'true', then: record, compliance: [x]}\nconsents:\n  - {id: c, patients: [p], recipient: {apps: [a]}}\n",
			"x.yaml:6:5: consents[0]: missing required key \"expires\""},
		{"mass export bad window", "name: x\nversion: 1\nrules:\n  - {id: r, mass_export: {class: phi, records: 5, window: 1s}, then: record, compliance: [x]}\n",
			"x.yaml:4:59: rule r.mass_export.window: want a duration"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Load("x.yaml", []byte(c.src))
			if err == nil {
				t.Fatal("no error")
			}
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("error is %T, not an ErrorList: %v", err, err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error\n%s\ndoes not contain\n%s", err, c.want)
			}
		})
	}
}

func TestDefaultPackIsDocumentedRuleByRule(t *testing.T) {
	p := builtin(t)
	doc := readDoc(t)
	for _, r := range p.Bundle().Rules {
		if r.Description == "" {
			t.Errorf("rule %s has no description", r.ID)
		}
		if !strings.Contains(doc, "`"+r.ID+"`") {
			t.Errorf("rule %s is not documented in docs/policy.md", r.ID)
		}
	}
	for _, a := range attributes {
		if !strings.Contains(doc, "`"+a.name+"`") {
			t.Errorf("attribute %s is not documented in docs/policy.md", a.name)
		}
	}
}

// TestConcurrentEvaluation: the agent's classify workers share one Policy.
func TestConcurrentEvaluation(t *testing.T) {
	p := builtin(t)
	done := make(chan Decision, 8)
	for w := range 8 {
		go func() {
			var last Decision
			for i := range 500 {
				last = p.Evaluate(in(func(x *Input) {
					x.Time = t0.Add(time.Duration(i) * time.Second)
					x.User.Name = "u" + strconv.Itoa(w%2)
					x.Classes[ClassPHI] = 90
					x.Records = 1
				}))
			}
			done <- last
		}()
	}
	for range 8 {
		d := <-done
		if d.RuleID != "phi-in-watched-path" && d.RuleID != "mass-export-phi" {
			t.Errorf("decision %s", d)
		}
	}
	// 2 users × 4 workers × 500 records each = 2000 per user within 500 s: each user's
	// counter fired exactly once; one more input per user must not fire again.
	for _, u := range []string{"u0", "u1"} {
		if d := p.Evaluate(in(func(x *Input) {
			x.User.Name = u
			x.Classes[ClassPHI] = 90
			x.Records = 1
			x.Time = t0.Add(600 * time.Second)
		})); d.RuleID == "mass-export-phi" {
			t.Errorf("user %s fired twice within one window", u)
		}
	}
}
