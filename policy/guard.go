package policy

import (
	"slices"

	"github.com/google/cel-go/cel"
	celast "github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/types"
)

// A guard is a native Go test derived from one top-level conjunct of a rule's expression
// (a && b && …) that is false whenever that conjunct is false. Evaluate runs a rule's guards
// before its CEL program, so the many rules that cannot match an input (a plain write with
// no findings, a network event for a file rule) cost a few comparisons instead of an
// interpreter run. Guards are only ever derived for forms whose meaning is exact; anything
// else is left to CEL, so they change cost, never decisions (TestGuardsNeverChangeDecisions).
type guard func(a *activation) bool

// deriveGuards inspects a checked AST's top-level conjuncts.
func deriveGuards(ast *cel.Ast) []guard {
	native := ast.NativeRep()
	refs := native.ReferenceMap()
	attr := func(e celast.Expr) string {
		if r, ok := refs[e.ID()]; ok && r != nil && r.Value == nil && r.Name != "" {
			return r.Name
		}
		return ""
	}
	strLit := func(e celast.Expr) (string, bool) {
		if e.Kind() != celast.LiteralKind {
			return "", false
		}
		s, ok := e.AsLiteral().(types.String)
		return string(s), ok
	}
	strList := func(e celast.Expr) ([]string, bool) {
		if e.Kind() != celast.ListKind {
			return nil, false
		}
		var out []string
		for _, el := range e.AsList().Elements() {
			s, ok := strLit(el)
			if !ok {
				return nil, false
			}
			out = append(out, s)
		}
		return out, true
	}
	intLit := func(e celast.Expr) (int64, bool) {
		if e.Kind() != celast.LiteralKind {
			return 0, false
		}
		i, ok := e.AsLiteral().(types.Int)
		return int64(i), ok
	}
	// one returns a guard for a single conjunct, or nil when it has no exact native form.
	var one func(e celast.Expr) guard
	one = func(e celast.Expr) guard {
		switch e.Kind() {
		case celast.CallKind:
			c := e.AsCall()
			args := c.Args()
			if len(args) != 2 {
				return nil
			}
			switch c.FunctionName() {
			case "_||_":
				l, r := one(args[0]), one(args[1])
				if l == nil || r == nil {
					return nil
				}
				return func(a *activation) bool { return l(a) || r(a) }
			case "_==_":
				name, lit := attr(args[0]), args[1]
				if name == "" {
					name, lit = attr(args[1]), args[0]
				}
				if s, ok := strLit(lit); ok {
					if get := stringAttr(name); get != nil {
						return func(a *activation) bool { return get(a) == s }
					}
				}
			case "@in":
				if s, ok := strLit(args[0]); ok {
					if get := listAttr(attr(args[1])); get != nil {
						return func(a *activation) bool { return slices.Contains(get(a), s) }
					}
				} else if set, ok := strList(args[1]); ok {
					if get := stringAttr(attr(args[0])); get != nil {
						return func(a *activation) bool { return slices.Contains(set, get(a)) }
					}
				}
			case "_>_", "_>=_":
				lim, ok := intLit(args[1])
				if !ok {
					return nil
				}
				if c.FunctionName() == "_>=_" {
					lim--
				}
				l := args[0]
				// list.size() > n
				if l.Kind() == celast.CallKind && l.AsCall().FunctionName() == "size" && l.AsCall().IsMemberFunction() {
					if get := listAttr(attr(l.AsCall().Target())); get != nil {
						return func(a *activation) bool { return int64(len(get(a))) > lim }
					}
				}
				// data.classes["part2"] > n (a missing class reads as 0)
				if l.Kind() == celast.CallKind && l.AsCall().FunctionName() == "_[_]" && len(l.AsCall().Args()) == 2 &&
					attr(l.AsCall().Args()[0]) == "data.classes" {
					if key, ok := strLit(l.AsCall().Args()[1]); ok && (key == string(ClassPart2) || key == string(ClassPHI)) {
						return func(a *activation) bool { return int64(a.in.Classes[Class(key)]) > lim }
					}
				}
			}
		case celast.ComprehensionKind:
			// list.exists(x, p) is false on an empty list: its accumulator starts false.
			cp := e.AsComprehension()
			if init := cp.AccuInit(); init.Kind() == celast.LiteralKind && init.AsLiteral() == types.False {
				if get := listAttr(attr(cp.IterRange())); get != nil {
					return func(a *activation) bool { return len(get(a)) > 0 }
				}
			}
		}
		return nil
	}
	var guards []guard
	var walk func(e celast.Expr)
	walk = func(e celast.Expr) {
		if e.Kind() == celast.CallKind && e.AsCall().FunctionName() == "_&&_" && len(e.AsCall().Args()) == 2 {
			walk(e.AsCall().Args()[0])
			walk(e.AsCall().Args()[1])
			return
		}
		if g := one(e); g != nil {
			guards = append(guards, g)
		}
	}
	walk(native.Expr())
	return guards
}

// stringAttr returns a native getter for the string attributes guards understand.
func stringAttr(name string) func(*activation) string {
	switch name {
	case "destination.kind":
		return func(a *activation) string { return bound(a.in.Destination.Kind, 32) }
	case "event.kind":
		return func(a *activation) string { return bound(a.in.Kind, 32) }
	case "app.category":
		return func(a *activation) string { return bound(a.appInfo().Category, 128) }
	case "app.name":
		return func(a *activation) string { return bound(a.appInfo().Name, 128) }
	case "file.media":
		return func(a *activation) string { a.file(); return bound(a.fileMedia, 16) }
	}
	return nil
}

// listAttr returns a native getter for the list attributes guards understand.
func listAttr(name string) func(*activation) []string {
	switch name {
	case "data.detected":
		return (*activation).detectedList
	case "host.tags":
		return func(a *activation) []string { return capList(a.in.Host.Tags, 32) }
	case "user.groups":
		return func(a *activation) []string { return capList(a.in.User.Groups, 64) }
	case "network.evasion":
		return func(a *activation) []string { return capList(a.in.Network.Evasion, 8) }
	case "data.patients":
		return func(a *activation) []string { return capList(a.in.Patients, 256) }
	}
	return nil
}

func capList(l []string, n int) []string {
	if len(l) > n {
		return l[:n]
	}
	return l
}
