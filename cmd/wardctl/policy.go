package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/policy"
)

const policyUsage = `usage: wardctl policy <command>

  init -o FILE                 write the default behavioural-health pack to edit
  keygen -o KEYFILE [--name NAME]
                               make an ed25519 signing key (KEYFILE, 0600) and print the
                               verifier key agents pin (policy.keys / --policy-key)
  lint FILE...                 check policies or signed bundles; errors as file:line:column
  test [-o text|json] POLICY FIXTURES
                               decide each event in FIXTURES (YAML fixtures, or the NDJSON of
                               wardctl events -o json) and print the decision and its rule
  sign --key KEYFILE [--expires 90d] [--not-before TIME] [--group default] -o OUT POLICY
                               lint and sign a policy into a bundle file
  push BUNDLE                  send a signed bundle to the collector; agents of its group
                               fetch it on their next poll
  status [-o table|json]       pushed bundles and which agents apply which version
`

// cmdPolicy runs `wardctl policy …`. Only push and status need the collector.
func cmdPolicy(ctx context.Context, c *client, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, policyUsage)
		return flag.ErrHelp
	}
	sub, rest := args[0], args[1:]
	switch sub {
	case "init":
		return policyInit(rest, stdout, stderr)
	case "keygen":
		return policyKeygen(rest, stdout, stderr)
	case "lint":
		return policyLint(rest, stdout, stderr)
	case "test":
		return policyTest(rest, stdout, stderr)
	case "sign":
		return policySign(rest, stdout, stderr)
	case "push":
		return policyPush(ctx, c, rest, stdout)
	case "status":
		return policyStatus(ctx, c, rest, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, policyUsage)
		return nil
	}
	return fmt.Errorf("unknown policy command %q\n%s", sub, policyUsage)
}

func policyInit(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("wardctl policy init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "file to write (refuses to overwrite)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		_, err := stdout.Write(policy.DefaultPack())
		return err
	}
	if err := writeNew(*out, policy.DefaultPack(), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote the default pack to %s; edit it, raise version, then lint, test, sign and push\n", *out)
	return nil
}

func policyKeygen(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("wardctl policy keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "signing key file to create (0600; keep it offline)")
	name := fs.String("name", policy.DefaultKeyName, "key name, shown in signatures")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || fs.NArg() > 0 {
		return errors.New("usage: wardctl policy keygen -o KEYFILE [--name NAME]")
	}
	skey, vkey, err := policy.GenerateKey(*name)
	if err != nil {
		return err
	}
	if err := writeNew(*out, []byte(skey+"\n"), 0o600); err != nil {
		return err
	}
	if err := writeNew(*out+".pub", []byte(vkey+"\n"), 0o644); err != nil {
		return err
	}
	fmt.Fprintln(stdout, vkey)
	fmt.Fprintf(stderr, "signing key written to %s (keep it secret); verifier key (above) also in %s.pub: pin it in each agent's policy.keys\n", *out, *out)
	return nil
}

// writeNew creates a file that must not exist yet.
func writeNew(name string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("create %s: %w", name, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

// readPolicy returns the policy YAML of a file that is either plain YAML or a signed bundle
// (whose envelope is returned too, unverified).
func readPolicy(name string) ([]byte, *policy.Envelope, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, nil, fmt.Errorf("read policy: %w", err)
	}
	if !bytes.HasPrefix(b, []byte("ward-policy-bundle/")) {
		return b, nil, nil
	}
	n, payload, err := policy.SplitBundle(b)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	env, err := policy.ParseEnvelope(n)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	if err := env.CheckPayload(payload); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	return payload, env, nil
}

func policyLint(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: wardctl policy lint FILE...")
	}
	bad := 0
	for _, name := range args {
		src, env, err := readPolicy(name)
		if err != nil {
			fmt.Fprintln(stdout, err)
			bad++
			continue
		}
		p, err := policy.Load(name, src)
		if err != nil {
			fmt.Fprintln(stdout, err)
			bad++
			continue
		}
		b := p.Bundle()
		fmt.Fprintf(stdout, "%s: ok: %s v%d, mode %s, %d rules, %d exceptions, %d consents, %d apps\n",
			name, b.Name, b.Version, b.Mode, len(b.Rules), len(b.Exceptions), len(b.Consents), len(b.Apps))
		if env != nil {
			fmt.Fprintf(stdout, "%s: signed for group %s, valid %s to %s (signature not checked here; agents check it)\n",
				name, env.TargetGroup, env.NotBefore.Format(time.RFC3339), env.ExpiresAt.Format(time.RFC3339))
		}
	}
	if bad > 0 {
		return fmt.Errorf("%d of %d files have errors", bad, len(args))
	}
	return nil
}

func policySign(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("wardctl policy sign", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keyFile := fs.String("key", "", "signing key file (from wardctl policy keygen)")
	expires := fs.String("expires", "90d", "validity: a duration from not-before (90d, 720h) or an RFC 3339 time")
	notBefore := fs.String("not-before", "now", "start of validity: now or an RFC 3339 time")
	group := fs.String("group", "default", "target group of agents (their policy.group)")
	out := fs.String("o", "", "bundle file to write")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *keyFile == "" || *out == "" || fs.NArg() != 1 {
		return errors.New("usage: wardctl policy sign --key KEYFILE [--expires 90d] [--not-before TIME] [--group default] -o OUT POLICY")
	}
	key, err := os.ReadFile(*keyFile)
	if err != nil {
		return fmt.Errorf("read signing key: %w", err)
	}
	src, _, err := readPolicy(fs.Arg(0))
	if err != nil {
		return err
	}
	nb := time.Now().UTC()
	if *notBefore != "now" {
		if nb, err = time.Parse(time.RFC3339, *notBefore); err != nil {
			return fmt.Errorf("--not-before: %w", err)
		}
	}
	var exp time.Time
	if t, err := time.Parse(time.RFC3339, *expires); err == nil {
		exp = t
	} else {
		d, err := parseDays(*expires)
		if err != nil {
			return fmt.Errorf("--expires: want a duration like 90d or 720h, or an RFC 3339 time, got %q", *expires)
		}
		exp = nb.Add(d)
	}
	b, err := policy.Sign(fs.Arg(0), src, string(key), policy.SignOptions{NotBefore: nb, ExpiresAt: exp, TargetGroup: *group})
	if err != nil {
		return err
	}
	if err := writeNew(*out, b, 0o644); err != nil {
		return err
	}
	n, _, _ := policy.SplitBundle(b)
	env, _ := policy.ParseEnvelope(n)
	fmt.Fprintf(stdout, "signed %s v%d for group %s, valid %s to %s, payload sha256 %s → %s\n", env.Name, env.Version,
		env.TargetGroup, env.NotBefore.Format(time.RFC3339), env.ExpiresAt.Format(time.RFC3339), env.PayloadSHA256, *out)
	return nil
}

func parseDays(s string) (time.Duration, error) {
	if d, ok := strings.CutSuffix(s, "d"); ok {
		var n int
		if _, err := fmt.Sscanf(d, "%d", &n); err != nil || n <= 0 || n > 3650 {
			return 0, errors.New("bad day count")
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err == nil && d <= 0 {
		err = errors.New("not positive")
	}
	return d, err
}

// testResult is one line of `policy test -o json`.
type testResult struct {
	Event       string   `json:"event"`
	Outcome     string   `json:"outcome"`
	Rule        string   `json:"rule,omitempty"`
	Action      string   `json:"action"`
	Severity    string   `json:"severity,omitempty"`
	Compliance  []string `json:"compliance,omitempty"`
	Consent     string   `json:"consent,omitempty"`
	Exception   string   `json:"exception,omitempty"`
	MonitorHits []string `json:"monitor_hits,omitempty"`
	Mismatch    string   `json:"mismatch,omitempty"`
}

func policyTest(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("wardctl policy test", flag.ContinueOnError)
	fs.SetOutput(stderr)
	output := fs.String("o", "text", "output: text or json (one object per event)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 2 || (*output != "text" && *output != "json") {
		return errors.New("usage: wardctl policy test [-o text|json] POLICY FIXTURES")
	}
	src, _, err := readPolicy(fs.Arg(0))
	if err != nil {
		return err
	}
	p, err := policy.Load(fs.Arg(0), src)
	if err != nil {
		return err
	}
	fixtures, err := loadFixtures(fs.Arg(1))
	if err != nil {
		return err
	}
	w := bufio.NewWriter(stdout)
	defer w.Flush()
	enc := json.NewEncoder(w)
	clock := time.Now().UTC()
	failed, counts := 0, map[string]int{}
	for _, fx := range fixtures {
		in := fx.Input
		if in.Time.IsZero() {
			clock = clock.Add(time.Millisecond) // keeps order for mass-export windows
			in.Time = clock
		}
		d := p.Evaluate(&in)
		mismatch := fx.Expect.Check(d)
		if mismatch != "" {
			failed++
		}
		counts[d.Outcome()]++
		if *output == "json" {
			r := testResult{Event: fx.Name, Outcome: d.Outcome(), Rule: d.RuleID, Action: d.Action.String(),
				Compliance: d.Compliance, Consent: d.ConsentID, Exception: d.ExceptionID, MonitorHits: d.MonitorHits, Mismatch: mismatch}
			if d.RuleID != "" {
				r.Severity = d.Severity.String()
			}
			if err := enc.Encode(r); err != nil {
				return err
			}
			continue
		}
		status := ""
		switch {
		case mismatch != "":
			status = "  FAIL: " + mismatch
		case fx.Expect != nil:
			status = "  ok"
		}
		fmt.Fprintf(w, "%s: %s%s\n", fx.Name, d, status)
	}
	if *output == "text" {
		keys := make([]string, 0, len(counts))
		for k := range counts {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var parts []string
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s %d", k, counts[k]))
		}
		fmt.Fprintf(w, "%d events with %s v%d: %s\n", len(fixtures), p.Name(), p.Version(), strings.Join(parts, ", "))
	}
	if failed > 0 {
		w.Flush()
		return fmt.Errorf("%d of %d events decided differently than expected", failed, len(fixtures))
	}
	return nil
}

// loadFixtures reads YAML fixtures, or NDJSON lines as `wardctl events -o json` prints them
// (finding events become file-write inputs).
func loadFixtures(name string) ([]policy.Fixture, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("read fixtures: %w", err)
	}
	if t := bytes.TrimSpace(b); len(t) == 0 || t[0] != '{' {
		return policy.ParseFixtures(name, b)
	}
	var out []policy.Fixture
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for line := 1; sc.Scan(); line++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var l eventLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, line, err)
		}
		ev := &wardv1.Event{}
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(l.Event, ev); err != nil {
			return nil, fmt.Errorf("%s:%d: event: %w", name, line, err)
		}
		f := ev.GetFinding()
		if f == nil {
			continue
		}
		out = append(out, policy.Fixture{Name: fmt.Sprintf("%s:%d %s", name, line, f.GetFile().GetPath()), Line: line, Input: findingInput(ev)})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return out, nil
}

// findingInput reconstructs the policy input of a stored finding, as the agent built it.
func findingInput(ev *wardv1.Event) policy.Input {
	f := ev.GetFinding()
	p := f.GetProcess()
	in := policy.Input{
		Time: ev.GetTime().AsTime(), Kind: policy.EventFileWrite, Classes: map[policy.Class]int{},
		Destination: policy.Destination{Kind: policy.DestWatchedPath, Path: f.GetFile().GetPath()},
		File:        policy.File{Path: f.GetFile().GetPath()}, Bytes: int64(f.GetFile().GetSize()),
		Process: policy.Process{Exe: p.GetExe(), Name: path.Base(p.GetExe()), Args: p.GetArgs()},
		User:    policy.User{Name: p.GetUser(), UID: int64(p.GetUid())},
		Host:    policy.Host{Name: ev.GetHost().GetHostname()},
	}
	for _, m := range f.GetMatches() {
		var cls policy.Class
		switch m.GetDataClass() {
		case wardv1.DataClass_DATA_CLASS_PART2:
			cls = policy.ClassPart2
		case wardv1.DataClass_DATA_CLASS_PHI:
			cls = policy.ClassPHI
		default:
			continue
		}
		in.Classes[cls] = max(in.Classes[cls], int(m.GetConfidence()))
		in.Records += int64(m.GetCount())
		in.Detectors = append(in.Detectors, m.GetDetector())
		if strings.HasPrefix(m.GetDetector(), "edm.") {
			in.Patients = append(in.Patients, m.GetFingerprints()...)
		}
	}
	return in
}

func policyPush(ctx context.Context, c *client, args []string, stdout io.Writer) error {
	if len(args) != 1 {
		return errors.New("usage: wardctl policy push BUNDLE")
	}
	b, err := os.ReadFile(args[0])
	if err != nil {
		return fmt.Errorf("read bundle: %w", err)
	}
	if !bytes.HasPrefix(b, []byte("ward-policy-bundle/")) {
		return fmt.Errorf("%s is not a signed bundle: sign it first (wardctl policy sign)", args[0])
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://ward-collector/v1/policy", bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var pushed struct {
		TargetGroup string    `json:"target_group"`
		Version     uint64    `json:"version"`
		Name        string    `json:"name"`
		ExpiresAt   time.Time `json:"expires_at"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&pushed); err != nil {
		return fmt.Errorf("decode push response: %w", err)
	}
	fmt.Fprintf(stdout, "pushed %s v%d to group %s (expires %s); agents apply it on their next poll\n",
		pushed.Name, pushed.Version, pushed.TargetGroup, pushed.ExpiresAt.Format(time.RFC3339))
	return nil
}

func policyStatus(ctx context.Context, c *client, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("wardctl policy status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	output := fs.String("o", "table", "output: table or json")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var st struct {
		Bundles []struct {
			TargetGroup string    `json:"target_group"`
			Version     uint64    `json:"version"`
			Name        string    `json:"name"`
			SHA256      string    `json:"sha256"`
			ExpiresAt   time.Time `json:"expires_at"`
			PushedAt    time.Time `json:"pushed_at"`
		} `json:"bundles"`
		Groups []struct {
			TargetGroup string              `json:"target_group"`
			Latest      uint64              `json:"latest_version"`
			Agents      map[string][]string `json:"agents"`
			Refusing    []string            `json:"refusing"`
		} `json:"groups"`
	}
	if *output == "json" {
		resp, err := c.do(ctx, http.MethodGet, "/v1/policy", nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, err = io.Copy(stdout, resp.Body)
		return err
	}
	if err := c.getJSON(ctx, "/v1/policy", &st); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tVERSION\tNAME\tPUSHED\tEXPIRES\tSHA256")
	for _, b := range st.Bundles {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%.12s\n", b.TargetGroup, b.Version, b.Name,
			b.PushedAt.UTC().Format(time.RFC3339), b.ExpiresAt.UTC().Format(time.RFC3339), b.SHA256)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "GROUP\tLATEST\tAGENTS BY APPLIED VERSION\tREFUSING")
	for _, g := range st.Groups {
		var parts []string
		vs := make([]string, 0, len(g.Agents))
		for v := range g.Agents {
			vs = append(vs, v)
		}
		sort.Strings(vs)
		for _, v := range vs {
			label := "v" + v
			if v == "0" {
				label = "built-in"
			}
			parts = append(parts, fmt.Sprintf("%s: %d", label, len(g.Agents[v])))
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\n", g.TargetGroup, g.Latest, strings.Join(parts, ", "), len(g.Refusing))
	}
	return tw.Flush()
}

// send is client.do for a request with a raw (non-JSON) body.
func (c *client) send(req *http.Request) (*http.Response, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		if req.Context().Err() != nil {
			return nil, req.Context().Err()
		}
		return nil, fmt.Errorf("cannot reach the collector at %s: is ward-collector running? (%v)", c.sock, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		var e struct {
			Error string `json:"error"`
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		return nil, fmt.Errorf("collector refused %s %s: %s (HTTP %d)", req.Method, req.URL.Path, e.Error, resp.StatusCode)
	}
	return resp, nil
}

// policyLabel is the POLICY column of wardctl agents: group/version as the agent last
// reported it ("-" before its first poll), flagged when it refused a bundle.
func (a agent) policyLabel() string {
	if a.Policy == nil {
		return "-"
	}
	v := fmt.Sprintf("%s/v%d", a.Policy.TargetGroup, a.Policy.Version)
	if a.Policy.Version == 0 {
		v = a.Policy.TargetGroup + "/built-in"
	}
	if a.Policy.LastError != "" {
		v += " (refused a bundle)"
	}
	return v
}
