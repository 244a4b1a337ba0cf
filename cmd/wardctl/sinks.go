package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"text/tabwriter"
	"time"
)

const sinksUsage = `usage:
  wardctl sinks status [-o table|json]
                               per sink: queue depth, oldest waiting event, delivered, dead letters
  wardctl sinks dead-letters [--sink S] [--limit N] [-o table|json]
                               events a destination refused for good: id, kind, time, reason,
                               attempts (never their content)
  wardctl sinks replay --sink S (--id ROWID[,ROWID...] | --all)
                               put dead letters back in the sink's queue (audited)
`

func cmdSinks(ctx context.Context, c *client, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, sinksUsage)
		return flag.ErrHelp
	}
	switch args[0] {
	case "status":
		return cmdSinksStatus(ctx, c, args[1:], stdout, stderr)
	case "dead-letters", "deadletters", "dead":
		return cmdDeadLetters(ctx, c, args[1:], stdout, stderr)
	case "replay":
		return cmdReplay(ctx, c, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, sinksUsage)
		return nil
	}
	return fmt.Errorf("unknown sinks command %q (status, dead-letters, replay)", args[0])
}

type sinkSummary struct {
	Sink               string    `json:"sink"`
	Configured         bool      `json:"configured"`
	Depth              int64     `json:"queue_depth"`
	Oldest             time.Time `json:"oldest_enqueued_at"`
	Due                int64     `json:"due"`
	Retrying           int64     `json:"retrying"`
	LastError          string    `json:"last_error"`
	Delivered          int64     `json:"delivered"`
	Skipped            int64     `json:"skipped"`
	DeadLetters        int64     `json:"dead_letters"`
	CheckpointsWaiting int64     `json:"audit_checkpoints_waiting"`
	CheckpointsDead    int64     `json:"audit_checkpoints_dead"`
	CheckpointsSent    int64     `json:"audit_checkpoints_delivered"`
}

func cmdSinksStatus(ctx context.Context, c *client, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("wardctl sinks status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	output := fs.String("o", "table", "output: table or json (one sink per line)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var resp struct {
		Sinks []json.RawMessage `json:"sinks"`
	}
	if err := c.getJSON(ctx, "/v1/sinks", &resp); err != nil {
		return err
	}
	switch *output {
	case "json":
		for _, s := range resp.Sinks {
			fmt.Fprintf(stdout, "%s\n", s)
		}
		return nil
	case "table":
	default:
		return fmt.Errorf("-o: want table or json, got %q", *output)
	}
	if len(resp.Sinks) == 0 {
		fmt.Fprintln(stdout, "no sinks configured (see docs/siem.md)")
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SINK\tQUEUED\tOLDEST\tRETRYING\tDELIVERED\tSKIPPED\tDEAD LETTERS\tCHECKPOINTS SENT/Q/DEAD\tLAST ERROR")
	now := time.Now()
	for _, raw := range resp.Sinks {
		var s sinkSummary
		if err := json.Unmarshal(raw, &s); err != nil {
			return fmt.Errorf("decode sink: %w", err)
		}
		name := s.Sink
		if !s.Configured {
			name += " (not configured)"
		}
		oldest := "-"
		if s.Depth > 0 && !s.Oldest.IsZero() {
			oldest = now.Sub(s.Oldest).Round(time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%d\t%d\t%d/%d/%d\t%s\n", name, s.Depth, oldest, s.Retrying, s.Delivered, s.Skipped,
			s.DeadLetters, s.CheckpointsSent, s.CheckpointsWaiting, s.CheckpointsDead, orDash(cut(s.LastError, 60)))
	}
	return tw.Flush()
}

type deadLetter struct {
	Sink       string    `json:"sink"`
	RowID      int64     `json:"rowid"`
	EventID    string    `json:"event_id"`
	AgentID    string    `json:"agent_id"`
	Kind       string    `json:"kind"`
	Time       time.Time `json:"time"`
	EnqueuedAt time.Time `json:"enqueued_at"`
	FailedAt   time.Time `json:"failed_at"`
	Attempts   int       `json:"attempts"`
	Reason     string    `json:"reason"`
}

func cmdDeadLetters(ctx context.Context, c *client, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("wardctl sinks dead-letters", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sink := fs.String("sink", "", "only this sink")
	limit := fs.Int("limit", 0, "at most this many (default: all)")
	output := fs.String("o", "table", "output: table or json (one dead letter per line)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *output != "table" && *output != "json" {
		return fmt.Errorf("-o: want table or json, got %q", *output)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	if *output == "table" {
		fmt.Fprintln(tw, "SINK\tROWID\tEVENT ID\tKIND\tTIME\tFAILED\tATTEMPTS\tREASON")
	}
	q := url.Values{}
	if *sink != "" {
		q.Set("sink", *sink)
	}
	shown := 0
	for {
		var resp struct {
			DeadLetters []json.RawMessage `json:"dead_letters"`
			Next        string            `json:"next"`
		}
		if err := c.getJSON(ctx, "/v1/sinks/dead-letters?"+q.Encode(), &resp); err != nil {
			return err
		}
		for _, raw := range resp.DeadLetters {
			if *limit > 0 && shown >= *limit {
				return tw.Flush()
			}
			shown++
			if *output == "json" {
				fmt.Fprintf(stdout, "%s\n", raw)
				continue
			}
			var d deadLetter
			if err := json.Unmarshal(raw, &d); err != nil {
				return fmt.Errorf("decode dead letter: %w", err)
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%d\t%s\n", d.Sink, d.RowID, d.EventID, d.Kind,
				d.Time.UTC().Format(time.RFC3339), d.FailedAt.UTC().Format(time.RFC3339), d.Attempts, cut(d.Reason, 80))
		}
		if resp.Next == "" {
			break
		}
		next, err := url.ParseQuery(resp.Next)
		if err != nil {
			return fmt.Errorf("collector sent a bad page cursor: %w", err)
		}
		for k, v := range next {
			q[k] = v
		}
	}
	if *output == "table" {
		if shown == 0 {
			fmt.Fprintln(stdout, "no dead letters")
			return nil
		}
		return tw.Flush()
	}
	return nil
}

func cmdReplay(ctx context.Context, c *client, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("wardctl sinks replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sink := fs.String("sink", "", "the sink whose dead letters to replay (required)")
	var idFlags multiFlag
	fs.Var(&idFlags, "id", "event rowid from wardctl sinks dead-letters (repeatable, or comma-separated)")
	all := fs.Bool("all", false, "replay every dead letter of the sink (and its dead audit checkpoints)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *sink == "" {
		return errors.New("usage: wardctl sinks replay --sink S (--id ROWID | --all)")
	}
	ids, err := parseIDs(idFlags)
	if err != nil {
		return err
	}
	if *all == (len(ids) > 0) {
		return errors.New("name what to replay: --id ROWID[,ROWID...] or --all")
	}
	resp, err := c.do(ctx, http.MethodPost, "/v1/sinks/"+url.PathEscape(*sink)+"/replay", map[string]any{"ids": ids, "all": *all})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var r struct {
		Requeued int64 `json:"requeued"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return fmt.Errorf("decode replay answer: %w", err)
	}
	fmt.Fprintf(stdout, "%d dead letters of %s queued again; watch wardctl sinks status\n", r.Requeued, *sink)
	return nil
}
