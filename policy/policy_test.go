package policy

import "testing"

func TestDefaultPolicyDecisionTable(t *testing.T) {
	p := Default()
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		classes map[Class]int
		ok      bool
		action  Action
		sev     Severity
		rule    string
	}{
		{"nothing", nil, false, ActionNone, 0, ""},
		{"part2 labelled", map[Class]int{ClassPart2: 95}, true, ActionAlert, SeverityHigh, "part2-in-watched-path"},
		{"part2 weak", map[Class]int{ClassPart2: 40}, true, ActionRecord, SeverityLow, "part2-low-confidence-record"},
		{"phi ssn", map[Class]int{ClassPHI: 85}, true, ActionAlert, SeverityMedium, "phi-in-watched-path"},
		{"phi and part2: part2 wins", map[Class]int{ClassPHI: 85, ClassPart2: 90}, true, ActionAlert, SeverityHigh, "part2-in-watched-path"},
		{"boundary 70", map[Class]int{ClassPart2: 70}, true, ActionAlert, SeverityHigh, "part2-in-watched-path"},
		{"boundary 69", map[Class]int{ClassPart2: 69}, true, ActionRecord, SeverityLow, "part2-low-confidence-record"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, ok := p.Decide(Input{Classes: c.classes, Destination: DestinationWatchedPath})
			if ok != c.ok || d.Action != c.action || d.Severity != c.sev || d.RuleID != c.rule {
				t.Fatalf("got %+v ok=%v", d, ok)
			}
			if ok && (len(d.Compliance) == 0 || d.Version != "builtin-1") {
				t.Fatalf("decision lacks compliance mapping or version: %+v", d)
			}
		})
	}
}

func TestValidateRejectsBrokenRules(t *testing.T) {
	for _, r := range []Rule{
		{Class: ClassPHI, Action: ActionAlert},
		{ID: "x", Action: ActionAlert},
		{ID: "x", Class: ClassPHI, MinConfidence: 101, Action: ActionAlert},
		{ID: "x", Class: ClassPHI},
	} {
		if err := (&Policy{Rules: []Rule{r}}).Validate(); err == nil {
			t.Errorf("rule %+v accepted", r)
		}
	}
}

func TestDestinationFilter(t *testing.T) {
	p := &Policy{Rules: []Rule{{ID: "only-media", Class: ClassPHI, Destinations: []Destination{"removable-media"}, Action: ActionBlock, Severity: SeverityHigh}}}
	if _, ok := p.Decide(Input{Classes: map[Class]int{ClassPHI: 90}, Destination: DestinationWatchedPath}); ok {
		t.Fatal("rule for another destination matched")
	}
	if d, ok := p.Decide(Input{Classes: map[Class]int{ClassPHI: 90}, Destination: "removable-media"}); !ok || d.Action != ActionBlock {
		t.Fatalf("got %+v %v", d, ok)
	}
}
