// Package policy decides what happens to a classified piece of content: record it, alert
// the SOC, or (later) block. It sees only typed facts about the content, the process and the
// destination, never the content itself, so decisions can be reviewed and replayed.
package policy

import (
	"fmt"
	"slices"
	"sort"
)

// Action is what a rule does.
type Action int

// Actions in increasing strength.
const (
	ActionNone Action = iota
	ActionRecord
	ActionAlert
	ActionBlock
)

func (a Action) String() string {
	return [...]string{"none", "record", "alert", "block"}[a]
}

// Severity orders alerts for the SOC.
type Severity int

// Severities in increasing order.
const (
	SeverityInfo Severity = iota + 1
	SeverityLow
	SeverityMedium
	SeverityHigh
	SeverityCritical
)

func (s Severity) String() string {
	switch s {
	case SeverityInfo:
		return "info"
	case SeverityLow:
		return "low"
	case SeverityMedium:
		return "medium"
	case SeverityHigh:
		return "high"
	case SeverityCritical:
		return "critical"
	}
	return "unknown"
}

// Class names a data class as the classifiers report it.
type Class string

// The data classes this policy knows.
const (
	ClassPart2 Class = "part2"
	ClassPHI   Class = "phi"
)

// Destination says where the content was going.
type Destination string

// Destinations.
const (
	// DestinationWatchedPath is a file written under a configured watched directory.
	DestinationWatchedPath Destination = "watched-path"
)

// Input is the facts a decision is made on.
type Input struct {
	// Classes maps each data class found to the highest confidence (0-100) seen for it.
	Classes     map[Class]int
	Destination Destination
	Exe         string
	User        string
}

// Rule matches content of one class at or above a confidence.
type Rule struct {
	ID            string
	Class         Class
	MinConfidence int
	Destinations  []Destination // empty: any
	Action        Action
	Severity      Severity
	// Compliance is the rule's mapping to the regulations it enforces, shown to auditors.
	Compliance []string
}

// Decision is the outcome for one input.
type Decision struct {
	Action     Action
	Severity   Severity
	RuleID     string
	Compliance []string
	Version    string
}

// Policy is an ordered rule list: the strongest matching rule decides.
type Policy struct {
	Version string
	Rules   []Rule
}

// Default is the policy an agent runs before a signed bundle replaces it: Part 2 content in
// a watched place pages the SOC at high severity, PHI at medium, and low-confidence hits are
// recorded for audit without paging anyone.
func Default() *Policy {
	return &Policy{
		Version: "builtin-1",
		Rules: []Rule{
			{ID: "part2-in-watched-path", Class: ClassPart2, MinConfidence: 70, Action: ActionAlert, Severity: SeverityHigh,
				Compliance: []string{"42 CFR 2.13", "42 CFR 2.32", "HIPAA 164.312(b)"}},
			{ID: "phi-in-watched-path", Class: ClassPHI, MinConfidence: 65, Action: ActionAlert, Severity: SeverityMedium,
				Compliance: []string{"HIPAA 164.312(b)", "HIPAA 164.308(a)(1)(ii)(D)"}},
			{ID: "part2-low-confidence-record", Class: ClassPart2, MinConfidence: 0, Action: ActionRecord, Severity: SeverityLow,
				Compliance: []string{"HIPAA 164.312(b)"}},
			{ID: "phi-low-confidence-record", Class: ClassPHI, MinConfidence: 0, Action: ActionRecord, Severity: SeverityLow,
				Compliance: []string{"HIPAA 164.312(b)"}},
		},
	}
}

// Validate reports rules that can never be told apart or that do nothing.
func (p *Policy) Validate() error {
	for i, r := range p.Rules {
		if r.ID == "" {
			return fmt.Errorf("rule %d: empty id", i)
		}
		if r.Class == "" {
			return fmt.Errorf("rule %s: empty class", r.ID)
		}
		if r.MinConfidence < 0 || r.MinConfidence > 100 {
			return fmt.Errorf("rule %s: min confidence %d outside 0..100", r.ID, r.MinConfidence)
		}
		if r.Action == ActionNone {
			return fmt.Errorf("rule %s: no action", r.ID)
		}
	}
	return nil
}

// Decide returns the decision of the strongest matching rule (by action, then severity, then
// rule order), or ok=false when no rule matches.
func (p *Policy) Decide(in Input) (d Decision, ok bool) {
	best := -1
	for i, r := range p.Rules {
		conf, has := in.Classes[r.Class]
		if !has || conf < r.MinConfidence {
			continue
		}
		if len(r.Destinations) > 0 && !slices.Contains(r.Destinations, in.Destination) {
			continue
		}
		if best < 0 || stronger(r, p.Rules[best]) {
			best = i
		}
	}
	if best < 0 {
		return Decision{}, false
	}
	r := p.Rules[best]
	return Decision{Action: r.Action, Severity: r.Severity, RuleID: r.ID,
		Compliance: slices.Clone(r.Compliance), Version: p.Version}, true
}

func stronger(a, b Rule) bool {
	if a.Action != b.Action {
		return a.Action > b.Action
	}
	return a.Severity > b.Severity
}

// ClassList returns the classes of an input in a stable order, for logs and tests.
func (in Input) ClassList() []Class {
	out := make([]Class, 0, len(in.Classes))
	for c := range in.Classes {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
