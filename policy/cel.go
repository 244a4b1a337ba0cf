package policy

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/checker"
	"github.com/google/cel-go/ext"
	"go.yaml.in/yaml/v3"
)

// attribute is one typed name rules can use. The table is the policy language's vocabulary:
// docs/policy.md documents it and newEnv declares exactly these.
type attribute struct {
	name string
	typ  *cel.Type
	// maxSize bounds the attribute's size (string length, list or map entries) as the
	// evaluator enforces it; the static cost check relies on it.
	maxSize uint64
	doc     string
}

// Bounds the evaluator enforces on inputs so the static cost estimate is a real bound.
const (
	maxStrLen      = 4096
	maxElemLen     = 256
	maxListDefault = 64
)

var attributes = [...]attribute{
	{"event.kind", cel.StringType, 32, "file-write, network or process"},
	{"data.classes", cel.MapType(cel.StringType, cel.IntType), 8, "class → highest confidence 0-100; part2 and phi are always present (0 when absent)"},
	{"data.detected", cel.ListType(cel.StringType), 8, "classes at or above the bundle's data_classes thresholds"},
	{"data.detectors", cel.ListType(cel.StringType), 64, "detectors that matched, e.g. phi.ssn"},
	{"data.records", cel.IntType, 0, "identifier occurrences in the content"},
	{"data.bytes", cel.IntType, 0, "content size in bytes"},
	{"data.patients", cel.ListType(cel.StringType), 256, "keyed fingerprints of EDM-matched patients"},
	{"destination.kind", cel.StringType, 32, "watched-path, removable-media, network-share, sync-folder, network-app or local"},
	{"destination.path", cel.StringType, maxStrLen, "destination file or mount path"},
	{"destination.domain", cel.StringType, 253, "destination domain (network apps)"},
	{"destination.org", cel.StringType, maxElemLen, "receiving organisation, when known"},
	{"destination.address", cel.StringType, 45, "remote IP address (network sends)"},
	{"destination.port", cel.IntType, 0, "remote port (network sends)"},
	{"app.name", cel.StringType, 128, "application name from the bundle's apps list or the sensor"},
	{"app.category", cel.StringType, 128, "application category, e.g. generative-ai, cloud-storage, consumer-video, video-conferencing"},
	{"app.sanctioned", cel.BoolType, 0, "whether the bundle sanctions the app (false for unknown apps)"},
	{"app.purpose", cel.StringType, 64, "disclosure purpose the app serves (treatment, payment, operations)"},
	{"network.evasion", cel.ListType(cel.StringType), 8, "evasion techniques seen: doh, ech"},
	{"network.direction", cel.StringType, 16, "send or receive (TLS plaintext)"},
	{"file.path", cel.StringType, maxStrLen, "path of the file written"},
	{"file.ext", cel.StringType, 32, "lower-case extension without the dot"},
	{"file.media", cel.StringType, 16, "audio, video, image, document, archive or empty"},
	{"process.exe", cel.StringType, maxStrLen, "executable path"},
	{"process.name", cel.StringType, maxElemLen, "executable base name"},
	{"process.hash", cel.StringType, 64, "SHA-256 of the executable, when known"},
	{"process.args", cel.ListType(cel.StringType), 64, "arguments"},
	{"user.name", cel.StringType, maxElemLen, "user name"},
	{"user.uid", cel.IntType, 0, "numeric user id"},
	{"user.groups", cel.ListType(cel.StringType), 64, "the user's groups"},
	{"host.name", cel.StringType, 253, "host name"},
	{"host.tags", cel.ListType(cel.StringType), 32, "tags from the agent config, e.g. clinical"},
	{"lineage.classes", cel.ListType(cel.StringType), 8, "classes of the tagged files the process (or the ancestor that started it) read: part2, phi"},
	{"lineage.sources", cel.ListType(cel.StringType), 16, "paths of those files"},
	{"time", cel.TimestampType, 0, "when the activity happened"},
}

// maxCost is the highest static cost estimate an expression may have. With the input bounds
// above, it caps one expression's evaluation at roughly tens of microseconds whatever a
// bundle's author writes.
const maxCost = 100_000

// newEnv declares the policy attributes plus the string and set extensions.
func newEnv() (*cel.Env, error) {
	opts := []cel.EnvOption{
		ext.Strings(ext.StringsVersion(3)),
		ext.Sets(),
		cel.ParserExpressionSizeLimit(maxExprBytes),
		cel.ParserRecursionLimit(64),
		cel.ASTValidators(
			cel.ValidateDurationLiterals(),
			cel.ValidateTimestampLiterals(),
			cel.ValidateRegexLiterals(),
			cel.ValidateHomogeneousAggregateLiterals(),
			cel.ValidateComprehensionNestingLimit(1),
		),
	}
	for _, a := range attributes {
		opts = append(opts, cel.Variable(a.name, a.typ))
	}
	env, err := cel.NewEnv(opts...)
	if err != nil {
		return nil, fmt.Errorf("policy: build CEL environment: %w", err)
	}
	return env, nil
}

// sizeEstimator tells the cost checker the bounds the evaluator enforces on inputs.
type sizeEstimator struct{}

func (sizeEstimator) EstimateSize(n checker.AstNode) *checker.SizeEstimate {
	p := n.Path()
	if len(p) == 0 {
		return nil
	}
	for _, a := range attributes {
		if a.name != p[0] {
			continue
		}
		if len(p) == 1 {
			if a.maxSize == 0 {
				return nil
			}
			return &checker.SizeEstimate{Min: 0, Max: a.maxSize}
		}
		return &checker.SizeEstimate{Min: 0, Max: maxElemLen} // list items and map keys are bounded strings
	}
	return nil
}

func (sizeEstimator) EstimateCallCost(string, string, *checker.AstNode, []checker.AstNode) *checker.CallEstimate {
	return nil
}

// compileExpr compiles one boolean expression, reporting errors at their place in the file.
func (d *decoder) compileExpr(env *cel.Env, n *yaml.Node, what, expr string) compiledExpr {
	ast, iss := env.Compile(expr)
	if iss != nil && iss.Err() != nil {
		for _, e := range iss.Errors() {
			line, col := d.exprPos(n, e.Location.Line(), e.Location.Column())
			d.errAt(line, col, "%s: %s%s", what, firstLine(e.Message), attributeHint(e.Message))
		}
		return compiledExpr{}
	}
	if !ast.OutputType().IsExactType(cel.BoolType) {
		d.errf(n, "%s: must be true or false, but it is %s", what, ast.OutputType())
		return compiledExpr{}
	}
	est, err := env.EstimateCost(ast, sizeEstimator{})
	if err != nil {
		d.errf(n, "%s: cannot bound its cost: %v", what, err)
		return compiledExpr{}
	}
	if est.Max > maxCost {
		d.errf(n, "%s: too expensive (estimated cost up to %d, limit %d): avoid nested loops over lists", what, est.Max, maxCost)
		return compiledExpr{}
	}
	prg, err := env.Program(ast, cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		d.errf(n, "%s: %v", what, err)
		return compiledExpr{}
	}
	return compiledExpr{prg: prg, guards: deriveGuards(ast)}
}

// compiledExpr is a CEL program plus the native guards derived from it.
type compiledExpr struct {
	prg    cel.Program
	guards []guard
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// exprPos maps a position inside an expression (1-based line, 0-based column) to the file.
func (d *decoder) exprPos(n *yaml.Node, line, col int) (int, int) {
	if n == nil {
		return 0, 0
	}
	if line < 1 {
		line = 1
	}
	switch n.Style {
	case yaml.LiteralStyle, yaml.FoldedStyle:
		// Block scalars start on the next line, indented.
		fileLine := n.Line + line
		if n.Style == yaml.FoldedStyle {
			fileLine = n.Line + 1 // folding joins lines; point at the block's start
		}
		return fileLine, d.indentOf(fileLine) + col + 1
	case yaml.DoubleQuotedStyle, yaml.SingleQuotedStyle:
		if line == 1 {
			return n.Line, n.Column + 1 + col
		}
		return n.Line + line - 1, col + 1
	default:
		if line == 1 {
			return n.Line, n.Column + col
		}
		return n.Line + line - 1, col + 1
	}
}

func (d *decoder) indentOf(line int) int {
	lines := bytes.Split(d.src, []byte("\n"))
	if line < 1 || line > len(lines) {
		return 0
	}
	l := lines[line-1]
	return len(l) - len(bytes.TrimLeft(l, " \t"))
}

// attributeHint lists the attributes under an undeclared prefix ("destination" → its
// fields), so a misspelt attribute error says what was meant.
func attributeHint(msg string) string {
	_, rest, ok := strings.Cut(msg, "undeclared reference to '")
	if !ok {
		return ""
	}
	name, _, _ := strings.Cut(rest, "'")
	var known []string
	for _, a := range attributes {
		if strings.HasPrefix(a.name, name+".") {
			known = append(known, a.name)
		}
	}
	if len(known) == 0 {
		return ""
	}
	return " (known: " + strings.Join(known, ", ") + ")"
}
