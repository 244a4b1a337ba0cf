// Command wardctl administers a local Ward collector through its admin socket.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/collector"
)

var version = "dev"

const usage = `usage: wardctl [--home DIR] [--socket PATH] <command> [flags]

commands:
  events [-o table|json] [-f] [--kind KIND] [--agent ID] [--since 1h|RFC3339] [--limit N | --all]
                               list the newest events (oldest first); -f keeps following
  token create [--ttl 1h] [-o text|json]
                               create a single-use enrolment token (shown once)
  agents [-o table|json]       list enrolled agents
  agents revoke ID             revoke an agent; its certificate is refused from its next call
  edm keygen -o KEYFILE        write a new random EDM key (hex, 0600); local, offline
  edm build --key-file KEYFILE -o OUT.edm PATIENTS.csv
                               hash a Part 2 patient index (mrn, ssn, last_name+dob columns)
                               into a salted, keyed set for agents; no plaintext is written
  policy init|keygen|lint|test|sign|push|status
                               signed policy bundles (wardctl policy help)
  audit list|verify|checkpoint the tamper-evident audit log (wardctl audit help)
  sinks status|dead-letters|replay
                               SIEM delivery queues and dead letters (wardctl sinks help)
  evidence rewrap [--batch N]   re-encrypt events stored in clear or under an old evidence key
                               with the current key, then retire unused keys (audited)
  user add|reset|list          console accounts (wardctl user add --role admin NAME makes the first admin)
  report shadow-it|part2 --from DATE --to DATE -o DIR
                               compliance report as CSV + PDF with a SHA-256 manifest
  version                      print the version

The socket is $WARD_HOME/collector/admin.sock (WARD_HOME defaults to ./.ward).
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil, errors.Is(err, context.Canceled):
	case errors.Is(err, flag.ErrHelp):
		os.Exit(2)
	default:
		fmt.Fprintf(os.Stderr, "wardctl: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("wardctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	home := fs.String("home", defaultHome(), "Ward state root")
	sock := fs.String("socket", "", "admin socket path (default HOME/collector/admin.sock)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return flag.ErrHelp
	}
	path := *sock
	if path == "" {
		abs, err := filepath.Abs(*home)
		if err != nil {
			return err
		}
		path = collector.DefaultAdminSocket(abs)
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	if cmd == "edm" {
		return cmdEDM(rest, stdout, stderr)
	}
	c := newClient(path)
	switch cmd {
	case "events":
		return cmdEvents(ctx, c, rest, stdout, stderr)
	case "token", "tokens":
		if len(rest) == 0 || rest[0] != "create" {
			return errors.New("usage: wardctl token create [--ttl 1h] [-o text|json]")
		}
		return cmdTokenCreate(ctx, c, rest[1:], stdout, stderr)
	case "agents", "agent":
		if len(rest) > 0 && rest[0] == "revoke" {
			return cmdRevoke(ctx, c, rest[1:], stdout)
		}
		return cmdAgents(ctx, c, rest, stdout, stderr)
	case "policy":
		return cmdPolicy(ctx, c, rest, stdout, stderr)
	case "user", "users":
		return cmdUser(ctx, c, rest, stdout, stderr)
	case "report":
		return cmdReport(ctx, c, rest, stdout, stderr)
	case "audit":
		return cmdAudit(ctx, c, rest, stdout, stderr)
	case "sinks", "sink":
		return cmdSinks(ctx, c, rest, stdout, stderr)
	case "evidence":
		return cmdEvidence(ctx, c, rest, stdout, stderr)
	case "version":
		fmt.Fprintf(stdout, "wardctl %s\n", version)
		return nil
	case "help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		return fmt.Errorf("unknown command %q (try wardctl help)", cmd)
	}
}

func defaultHome() string {
	if h := os.Getenv("WARD_HOME"); h != "" {
		return h
	}
	return ".ward"
}

// client talks HTTP to the admin socket.
type client struct {
	sock string
	http *http.Client
}

func newClient(sock string) *client {
	return &client{sock: sock, http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{Timeout: 3 * time.Second}).DialContext(ctx, "unix", sock)
		},
	}}}
}

// do sends a request and returns the response when it is 2xx; otherwise the collector's
// error message.
func (c *client) do(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = strings.NewReader(string(b))
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://ward-collector"+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return nil, fmt.Errorf("cannot reach the collector at %s: is ward-collector running? (%v)", c.sock, op.Err)
		}
		return nil, fmt.Errorf("collector at %s: %w", c.sock, err)
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
		return nil, fmt.Errorf("collector refused %s %s: %s (HTTP %d)", method, path, e.Error, resp.StatusCode)
	}
	return resp, nil
}

func (c *client) getJSON(ctx context.Context, path string, v any) error {
	resp, err := c.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	return nil
}

// eventLine is one NDJSON line of the events endpoints.
type eventLine struct {
	RowID      int64           `json:"rowid"`
	ReceivedAt time.Time       `json:"received_at"`
	Event      json.RawMessage `json:"event"`
}

func cmdEvents(ctx context.Context, c *client, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("wardctl events", flag.ContinueOnError)
	fs.SetOutput(stderr)
	output := fs.String("o", "table", "output: table or json (one object per line)")
	follow := fs.Bool("f", false, "keep following new events")
	kind := fs.String("kind", "", "only this kind: process, file, finding, flow, health or fleet")
	agent := fs.String("agent", "", "only this agent id")
	since := fs.String("since", "", "only events at or after this time (RFC 3339) or this long ago (e.g. 24h)")
	limit := fs.Int("limit", 50, "how many of the newest events to list first")
	all := fs.Bool("all", false, "list every matching event, oldest first (pages through the store)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *all && *follow {
		return errors.New("--all and -f do not go together: -f already lists from the newest on")
	}
	if *output != "table" && *output != "json" {
		return fmt.Errorf("-o: want table or json, got %q", *output)
	}
	q := url.Values{}
	for k, v := range map[string]string{"kind": *kind, "agent": *agent, "since": *since} {
		if v != "" {
			q.Set(k, v)
		}
	}
	out := bufio.NewWriter(stdout)
	defer out.Flush()
	p := &eventPrinter{w: out, json: *output == "json"}

	var last int64
	if *all {
		p.header()
		for {
			pq := cloneValues(q)
			pq.Set("after", strconv.FormatInt(last, 10))
			pq.Set("limit", strconv.Itoa(allPage))
			resp, err := c.do(ctx, http.MethodGet, "/v1/events?"+pq.Encode(), nil)
			if err != nil {
				return err
			}
			before := p.lines
			last, err = p.stream(resp.Body)
			resp.Body.Close()
			if err != nil {
				return err
			}
			if p.lines-before < allPage {
				return out.Flush()
			}
		}
	}
	if *limit > 0 {
		lq := cloneValues(q)
		lq.Set("limit", strconv.Itoa(*limit))
		lq.Set("newest", "true")
		resp, err := c.do(ctx, http.MethodGet, "/v1/events?"+lq.Encode(), nil)
		if err != nil {
			return err
		}
		p.header()
		last, err = p.stream(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
	}
	if err := out.Flush(); err != nil {
		return err
	}
	if !*follow {
		return nil
	}
	// Continue after the last listed event so nothing is shown twice or skipped; with nothing
	// listed, after=0 is exact too, since the listing proved no matching event existed.
	q.Set("after", strconv.FormatInt(last, 10))
	if *limit == 0 {
		q.Del("after") // start at the newest event
	}
	resp, err := c.do(ctx, http.MethodGet, "/v1/events/follow?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if *limit == 0 {
		p.header()
	}
	p.flushEach = true
	if _, err := p.stream(resp.Body); err != nil && ctx.Err() == nil {
		return err
	}
	if ctx.Err() == nil {
		return errors.New("the collector closed the event stream (stopped or restarted)")
	}
	return nil
}

// allPage is the page size of --all: the admin API's largest.
const allPage = 10000

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}

// eventPrinter renders NDJSON lines as a fixed-width table (so following output stays
// aligned) or passes them through as JSON.
type eventPrinter struct {
	w          *bufio.Writer
	lines      int
	json       bool
	flushEach  bool
	headerDone bool
}

const rowFormat = "%-20s %-14s %-8s %-10s %-6s %-8s %-36s %-26s %-10s %-16s %s\n"

func (p *eventPrinter) header() {
	if !p.json && !p.headerDone {
		p.headerDone = true
		fmt.Fprintf(p.w, rowFormat, "TIME", "HOST", "KIND", "TARGET", "CLASS", "SEVERITY", "PATH", "PROCESS", "USER", "DETECTOR", "SAMPLE")
	}
}

// stream prints every line of r and returns the last rowid seen.
func (p *eventPrinter) stream(r io.Reader) (int64, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 8<<20)
	var last int64
	for sc.Scan() {
		var line eventLine
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return last, fmt.Errorf("decode event line: %w", err)
		}
		last = line.RowID
		p.lines++
		if p.json {
			p.w.Write(sc.Bytes())
			p.w.WriteByte('\n')
		} else if err := p.row(line); err != nil {
			return last, err
		}
		if p.flushEach {
			if err := p.w.Flush(); err != nil {
				return last, err
			}
		}
	}
	return last, sc.Err()
}

func (p *eventPrinter) row(line eventLine) error {
	ev := &wardv1.Event{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(line.Event, ev); err != nil {
		return fmt.Errorf("decode event rowid %d: %w", line.RowID, err)
	}
	host := ev.GetHost().GetHostname()
	if host == "" {
		host = ev.GetAgentId()
	}
	// target is the egress target kind of file events (removable, share, sync, print,
	// configured).
	kind, target, class, sev, path, detector, sample := "", "-", "-", "-", "-", "-", "-"
	var proc *wardv1.Process
	switch pl := ev.GetPayload().(type) {
	case *wardv1.Event_Process:
		kind = strings.ToLower(strings.TrimPrefix(pl.Process.GetKind().String(), "KIND_"))
		proc = pl.Process.GetProcess()
	case *wardv1.Event_File:
		kind = "file"
		path = pl.File.GetPath()
		if k := pl.File.GetTargetKind(); k != "" {
			target = k
		}
		proc = pl.File.GetProcess()
	case *wardv1.Event_Finding:
		f := pl.Finding
		kind = "finding"
		class = strings.TrimPrefix(f.GetDataClass().String(), "DATA_CLASS_")
		sev = strings.ToLower(strings.TrimPrefix(f.GetDecision().GetSeverity().String(), "SEVERITY_"))
		path = f.GetFile().GetPath()
		if k := f.GetFile().GetTargetKind(); k != "" {
			target = k
		}
		proc = f.GetProcess()
		if ms := f.GetMatches(); len(ms) > 0 {
			detector = ms[0].GetDetector()
			if len(ms) > 1 {
				detector += fmt.Sprintf(" +%d", len(ms)-1)
			}
			if s := ms[0].GetMaskedSamples(); len(s) > 0 {
				sample = s[0]
			}
		}
	case *wardv1.Event_Flow:
		f := pl.Flow
		kind = "flow"
		path = fmt.Sprintf("%s %s:%d ↑%d ↓%d", f.GetTransport(), f.GetRemoteAddress(), f.GetRemotePort(), f.GetBytesSent(), f.GetBytesReceived())
		proc = f.GetProcess()
		if f.GetDenied() {
			sev = "denied"
		}
	case *wardv1.Event_Health:
		kind = "health"
		h := pl.Health
		attached := 0
		for _, pr := range h.GetProbes() {
			if pr.GetAttached() {
				attached++
			}
		}
		var drops uint64
		for _, n := range h.GetDrops() {
			drops += n
		}
		path = fmt.Sprintf("probes %d/%d, drops %d, spool %d", attached, len(h.GetProbes()), drops, h.GetSpoolEvents())
	case *wardv1.Event_Access:
		kind = "access"
		class = strings.TrimPrefix(pl.Access.GetDataClass().String(), "DATA_CLASS_")
		path = pl.Access.GetPath()
		proc = pl.Access.GetProcess()
	case *wardv1.Event_Fleet:
		kind = "fleet"
		fa := pl.Fleet
		sev = strings.ToLower(strings.TrimPrefix(fa.GetKind().String(), "KIND_"))
		path = fmt.Sprintf("last seen %s, silent %s", fa.GetLastSeen().AsTime().UTC().Format(time.RFC3339),
			time.Duration(fa.GetSilentForSeconds())*time.Second)
	default:
		kind = "unknown"
	}
	process, user := "-", "-"
	if proc != nil {
		process = fmt.Sprintf("%s[%d]", proc.GetExe(), proc.GetPid())
		if u := proc.GetUser(); u != "" {
			user = u
		} else {
			user = strconv.FormatUint(uint64(proc.GetUid()), 10)
		}
	}
	if path == "" {
		path = "-"
	}
	ts := ev.GetTime().AsTime().UTC().Format("2006-01-02T15:04:05Z")
	fmt.Fprintf(p.w, rowFormat, ts, cut(host, 14), kind, cut(target, 10), class, sev, cutLeft(path, 36), cutLeft(process, 26), cut(user, 10), cut(detector, 16), sample)
	return nil
}

// cut shortens s to n runes, marking the cut at the end.
func cut(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// cutLeft shortens s to n runes keeping the end: the informative part of paths.
func cutLeft(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return "…" + string(r[len(r)-n+1:])
}

type tokenResponse struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

func cmdTokenCreate(ctx context.Context, c *client, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("wardctl token create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	ttl := fs.Duration("ttl", 0, "token lifetime (default: the collector's token_ttl, 1h)")
	output := fs.String("o", "text", "output: text or json")
	if err := fs.Parse(args); err != nil {
		return err
	}
	body := map[string]string{}
	if *ttl != 0 {
		body["ttl"] = ttl.String()
	}
	resp, err := c.do(ctx, http.MethodPost, "/v1/enrollment-tokens", body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var tr tokenResponse
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil {
		return fmt.Errorf("decode token: %w", err)
	}
	switch *output {
	case "json":
		return json.NewEncoder(stdout).Encode(tr)
	case "text":
		// The token alone on stdout, so TOKEN=$(wardctl token create) works; the rest on stderr.
		fmt.Fprintln(stdout, tr.Token)
		fmt.Fprintf(stderr, "single-use enrolment token, expires %s (in %s); it is not stored and cannot be shown again\n",
			tr.ExpiresAt.Local().Format(time.RFC3339), time.Until(tr.ExpiresAt).Round(time.Second))
		return nil
	default:
		return fmt.Errorf("-o: want text or json, got %q", *output)
	}
}

type agent struct {
	ID         string     `json:"id"`
	Hostname   string     `json:"hostname"`
	MachineID  string     `json:"machine_id"`
	Version    string     `json:"version"`
	EnrolledAt time.Time  `json:"enrolled_at"`
	LastSeen   *time.Time `json:"last_seen,omitempty"`
	Revoked    bool       `json:"revoked"`
	// SilentSince is set while the collector's fleet monitor has an agent-silent alert open.
	SilentSince *time.Time `json:"silent_since,omitempty"`
	Policy      *struct {
		TargetGroup string `json:"target_group"`
		Version     uint64 `json:"version"`
		LastError   string `json:"last_error"`
	} `json:"policy,omitempty"`
}

func cmdAgents(ctx context.Context, c *client, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("wardctl agents", flag.ContinueOnError)
	fs.SetOutput(stderr)
	output := fs.String("o", "table", "output: table or json (one object per line)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unknown agents subcommand %q (did you mean: wardctl agents revoke ID?)", fs.Arg(0))
	}
	var resp struct {
		Agents []json.RawMessage `json:"agents"`
	}
	if err := c.getJSON(ctx, "/v1/agents", &resp); err != nil {
		return err
	}
	if *output == "json" {
		for _, a := range resp.Agents {
			fmt.Fprintf(stdout, "%s\n", a)
		}
		return nil
	}
	if *output != "table" {
		return fmt.Errorf("-o: want table or json, got %q", *output)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tHOSTNAME\tMACHINE ID\tVERSION\tPOLICY\tENROLLED\tLAST SEEN\tSTATUS")
	for _, raw := range resp.Agents {
		var a agent
		if err := json.Unmarshal(raw, &a); err != nil {
			return fmt.Errorf("decode agent: %w", err)
		}
		seen, status := "never", "active"
		if a.LastSeen != nil {
			seen = a.LastSeen.UTC().Format(time.RFC3339) + " (" + ago(time.Since(*a.LastSeen)) + ")"
		}
		switch {
		case a.Revoked:
			status = "revoked"
		case a.SilentSince != nil:
			status = "silent since " + a.SilentSince.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.ID, a.Hostname, cut(a.MachineID, 12), a.Version, a.policyLabel(),
			a.EnrolledAt.UTC().Format(time.RFC3339), seen, status)
	}
	return tw.Flush()
}

// ago renders an elapsed time coarsely for tables: 45s, 12m, 3h, 5d ago.
func ago(d time.Duration) string {
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd ago", int(d/(24*time.Hour)))
}

func cmdRevoke(ctx context.Context, c *client, args []string, stdout io.Writer) error {
	if len(args) != 1 || args[0] == "" {
		return errors.New("usage: wardctl agents revoke ID")
	}
	resp, err := c.do(ctx, http.MethodPost, "/v1/agents/"+url.PathEscape(args[0])+"/revoke", nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	fmt.Fprintf(stdout, "agent %s revoked; it must be enrolled again with a new token to report\n", args[0])
	return nil
}
