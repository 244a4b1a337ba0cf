// Package policy decides what happens to an observed event: record it, alert the SOC,
// block it or kill the process. A policy is a signed YAML bundle (see docs/policy.md) whose
// rules are CEL expressions over typed event attributes — data classes and confidence,
// destination, application, process, user and groups, host tags, time — with exceptions, a
// patient-consent registry for Part 2 disclosures and mass-export counting rules.
//
// The package sees only typed facts about an event, never the content itself, so every
// decision can be reviewed and replayed (wardctl policy test) before a bundle ships.
package policy

import (
	"sort"
	"strings"
)

// Action is what a rule does.
type Action int

// Actions in increasing strength.
const (
	ActionNone Action = iota
	ActionRecord
	ActionAlert
	ActionBlock
	ActionKill
)

var actionNames = [...]string{"none", "record", "alert", "block", "kill"}

func (a Action) String() string {
	if a < 0 || int(a) >= len(actionNames) {
		return "unknown"
	}
	return actionNames[a]
}

func parseAction(s string) (Action, bool) {
	for i, n := range actionNames {
		if i > 0 && n == s {
			return Action(i), true
		}
	}
	return ActionNone, false
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

var severityNames = [...]string{"", "info", "low", "medium", "high", "critical"}

func (s Severity) String() string {
	if s < SeverityInfo || s > SeverityCritical {
		return "unknown"
	}
	return severityNames[s]
}

func parseSeverity(s string) (Severity, bool) {
	for i, n := range severityNames {
		if i > 0 && n == s {
			return Severity(i), true
		}
	}
	return 0, false
}

// Class names a data class as the classifiers report it.
type Class string

// The data classes this policy knows.
const (
	ClassPart2 Class = "part2"
	ClassPHI   Class = "phi"
)

// Decision is the outcome for one input.
type Decision struct {
	// Action is what the deciding rule says. Taken says what that means once monitor mode
	// is applied; what the agent can actually enforce is the agent's business.
	Action   Action
	Severity Severity
	RuleID   string
	// Compliance is the deciding rule's mapping to the regulations it enforces.
	Compliance []string
	// Version is the bundle version as a decimal string ("0" for the built-in pack).
	Version string
	// PolicyName is the bundle's name.
	PolicyName string
	// Monitor is true when the rule or the whole bundle is monitor-only.
	Monitor bool
	// ConsentID is set when an active consent made this a consented disclosure.
	ConsentID string
	// ExceptionID is set when an exception suppressed RuleID.
	ExceptionID string
	// MonitorHits are monitor-mode rules that matched too but did not decide.
	MonitorHits []string
}

// Taken is the action after monitor mode, consents and exceptions: what should happen.
func (d Decision) Taken() Action {
	if d.Monitor || d.ConsentID != "" || d.ExceptionID != "" {
		return min(d.Action, ActionRecord)
	}
	return d.Action
}

// Outcome is a one-word summary for logs and the policy tester.
func (d Decision) Outcome() string {
	switch {
	case d.RuleID == "":
		return "allow"
	case d.ConsentID != "":
		return "consented-disclosure"
	case d.ExceptionID != "":
		return "excepted"
	case d.Monitor:
		return "monitor:" + d.Action.String()
	}
	return d.Action.String()
}

// ClassList returns the classes of an input in a stable order, for logs and tests.
func (in *Input) ClassList() []Class {
	out := make([]Class, 0, len(in.Classes))
	for c := range in.Classes {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// String renders the decision on one line.
func (d Decision) String() string {
	if d.RuleID == "" {
		return "allow (no rule matched)"
	}
	var b strings.Builder
	b.WriteString(d.Outcome())
	b.WriteString(" rule=")
	b.WriteString(d.RuleID)
	b.WriteString(" severity=")
	b.WriteString(d.Severity.String())
	if d.ConsentID != "" {
		b.WriteString(" consent=" + d.ConsentID)
	}
	if d.ExceptionID != "" {
		b.WriteString(" exception=" + d.ExceptionID)
	}
	if len(d.MonitorHits) > 0 {
		b.WriteString(" monitor_hits=" + strings.Join(d.MonitorHits, ","))
	}
	if len(d.Compliance) > 0 {
		b.WriteString(" compliance=[" + strings.Join(d.Compliance, "; ") + "]")
	}
	return b.String()
}
