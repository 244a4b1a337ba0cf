package policy

import (
	"fmt"
	"strconv"

	"go.yaml.in/yaml/v3"
)

// Fixture is one recorded or constructed event for `wardctl policy test`, with the
// decision a reviewer expects (optional).
type Fixture struct {
	Name   string
	Line   int
	Input  Input
	Expect *Expectation
}

// Expectation is what a fixture should decide. Empty fields are not checked.
type Expectation struct {
	Rule    string // "none" expects no rule to match
	Action  string
	Outcome string // allow, record, alert, block, kill, monitor:<action>, consented-disclosure, excepted
}

// Check compares a decision with the expectation and describes any difference.
func (e *Expectation) Check(d Decision) string {
	if e == nil {
		return ""
	}
	rule := d.RuleID
	if rule == "" {
		rule = "none"
	}
	switch {
	case e.Rule != "" && e.Rule != rule:
		return fmt.Sprintf("rule %s, expected %s", rule, e.Rule)
	case e.Action != "" && e.Action != d.Action.String() && !(e.Action == "none" && d.RuleID == ""):
		return fmt.Sprintf("action %s, expected %s", d.Action, e.Action)
	case e.Outcome != "" && e.Outcome != d.Outcome():
		return fmt.Sprintf("outcome %s, expected %s", d.Outcome(), e.Outcome)
	}
	return ""
}

var fixtureKeys = []string{"name", "time", "input", "expect"}
var expectKeys = []string{"rule", "action", "outcome"}

// ParseFixtures reads a fixtures file: `events:` is a list of {name, time, input, expect},
// where input maps attribute names as rules write them (destination.kind, data.classes, …)
// to values. Decoding is as strict as for policies.
func ParseFixtures(file string, src []byte) ([]Fixture, error) {
	d := &decoder{file: file, src: src}
	root, ok := d.parseYAML()
	if !ok {
		return nil, d.errs
	}
	f := d.fields(root, "fixtures", []string{"events"}, "events")
	if f == nil {
		return nil, d.errs
	}
	var out []Fixture
	for i, n := range d.list(f["events"], "events", 100000) {
		what := fmt.Sprintf("events[%d]", i)
		ff := d.fields(n, what, fixtureKeys, "input")
		if ff == nil {
			continue
		}
		fx := Fixture{Name: fmt.Sprintf("#%d", i+1), Line: n.Line}
		if v := ff["name"]; v != nil {
			fx.Name = d.str(v, what+".name", 256)
		}
		if v := ff["time"]; v != nil {
			fx.Input.Time = d.timestamp(v, what+".time")
		}
		if v := ff["input"]; v != nil {
			d.fixtureInput(v, what+".input", &fx.Input)
		}
		if v := ff["expect"]; v != nil {
			if ef := d.fields(v, what+".expect", expectKeys); ef != nil {
				fx.Expect = &Expectation{}
				if x := ef["rule"]; x != nil {
					fx.Expect.Rule = d.str(x, what+".expect.rule", 128)
				}
				if x := ef["action"]; x != nil {
					fx.Expect.Action = d.str(x, what+".expect.action", 16)
				}
				if x := ef["outcome"]; x != nil {
					fx.Expect.Outcome = d.str(x, what+".expect.outcome", 64)
				}
			}
		}
		out = append(out, fx)
	}
	if len(d.errs) > 0 {
		return nil, d.errs
	}
	return out, nil
}

func (d *decoder) fixtureInput(n *yaml.Node, what string, in *Input) {
	names := make([]string, 0, len(attributes))
	for _, a := range attributes {
		if a.name != "data.detected" && a.name != "time" {
			names = append(names, a.name)
		}
	}
	names = append(names, "data.document")
	f := d.fields(n, what, names)
	if f == nil {
		return
	}
	str := func(k string, max int) string {
		if v := f[k]; v != nil {
			return d.str(v, what+"."+k, max)
		}
		return ""
	}
	list := func(k string) []string { return d.strList(f[k], what+"."+k, 256, maxStrLen) }
	num := func(k string) int64 {
		if v := f[k]; v != nil {
			return d.integer(v, what+"."+k, 0, 1<<50)
		}
		return 0
	}
	in.Kind = str("event.kind", 32)
	in.Classes = map[Class]int{}
	if v := f["data.classes"]; v != nil {
		if v.Kind != yaml.MappingNode {
			d.errf(v, "%s.data.classes: want a mapping like {part2: 95}", what)
		} else {
			for i := 0; i+1 < len(v.Content); i += 2 {
				in.Classes[Class(v.Content[i].Value)] = int(d.integer(v.Content[i+1], what+".data.classes."+v.Content[i].Value, 0, 100))
			}
		}
	}
	in.Detectors, in.Patients = list("data.detectors"), list("data.patients")
	in.Records, in.Bytes = num("data.records"), num("data.bytes")
	in.Document = str("data.document", 64)
	in.Destination = Destination{Kind: str("destination.kind", 32), Path: str("destination.path", maxStrLen),
		Domain: str("destination.domain", 253), Org: str("destination.org", maxElemLen),
		Address: str("destination.address", 45), Port: num("destination.port")}
	in.App = AppInput{Name: str("app.name", 128), Category: str("app.category", 128), Purpose: str("app.purpose", 64)}
	if v := f["app.sanctioned"]; v != nil {
		in.App.Sanctioned = d.boolean(v, what+".app.sanctioned")
	}
	in.Network.Evasion = list("network.evasion")
	in.Network.Direction = str("network.direction", 16)
	in.File = File{Path: str("file.path", maxStrLen), Ext: str("file.ext", 32), Media: str("file.media", 16)}
	in.Process = Process{Exe: str("process.exe", maxStrLen), Name: str("process.name", maxElemLen), Hash: str("process.hash", 64), Args: list("process.args")}
	in.User = User{Name: str("user.name", maxElemLen), UID: num("user.uid"), Groups: list("user.groups")}
	in.Lineage = Lineage{Classes: list("lineage.classes"), Sources: list("lineage.sources")}
	in.Host = Host{Name: str("host.name", 253), Tags: list("host.tags")}
}

// FormatVersion renders a bundle version the way decisions carry it.
func FormatVersion(v uint64) string { return strconv.FormatUint(v, 10) }
