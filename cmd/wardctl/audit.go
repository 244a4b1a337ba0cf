package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/ward-dlp/ward/collector/audit"
)

const auditUsage = `usage:
  wardctl audit list [--limit N | --all] [--action A] [-o table|json]
                               the newest audit entries (oldest first)
  wardctl audit verify [--checkpoint FILE]... [--key FILE]
                               recompute the audit log's Merkle tree from every entry and check
                               it against every signed checkpoint the collector stored and
                               against checkpoints kept elsewhere (e.g. the SIEM's copy);
                               exits non-zero naming the first bad entry
  wardctl audit checkpoint [-o FILE]
                               sign a checkpoint now and write the newest one (to keep outside)
`

func cmdAudit(ctx context.Context, c *client, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, auditUsage)
		return flag.ErrHelp
	}
	switch args[0] {
	case "list":
		return cmdAuditList(ctx, c, args[1:], stdout, stderr)
	case "verify":
		return cmdAuditVerify(ctx, c, args[1:], stdout, stderr)
	case "checkpoint":
		return cmdAuditCheckpoint(ctx, c, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, auditUsage)
		return nil
	}
	return fmt.Errorf("unknown audit command %q (list, verify, checkpoint)", args[0])
}

type auditLine struct {
	Index    int64  `json:"index"`
	Data     []byte `json:"data"`
	LeafHash []byte `json:"leaf_hash"`
}

type auditCheckpoints struct {
	VerifierKey string `json:"verifier_key"`
	Size        int64  `json:"size"`
	Checkpoints []struct {
		Size      int64  `json:"size"`
		CreatedAt string `json:"created_at"`
		Note      string `json:"note"`
	} `json:"checkpoints"`
}

// auditPages streams entries with index > after, page by page, until limit (0: all).
func auditPages(ctx context.Context, c *client, after, limit int64, fn func(auditLine) error) error {
	var seen int64
	for {
		page := int64(allPage)
		if limit > 0 {
			page = min(page, limit-seen)
		}
		if page <= 0 {
			return nil
		}
		resp, err := c.do(ctx, http.MethodGet, fmt.Sprintf("/v1/audit/entries?after=%d&limit=%d", after, page), nil)
		if err != nil {
			return err
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 8<<20)
		var n int64
		for sc.Scan() {
			var l auditLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				resp.Body.Close()
				return fmt.Errorf("decode audit entry: %w", err)
			}
			if err := fn(l); err != nil {
				resp.Body.Close()
				return err
			}
			after = l.Index
			n++
		}
		err = sc.Err()
		resp.Body.Close()
		if err != nil {
			return err
		}
		seen += n
		if n < page {
			return nil
		}
	}
}

func cmdAuditList(ctx context.Context, c *client, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("wardctl audit list", flag.ContinueOnError)
	fs.SetOutput(stderr)
	limit := fs.Int64("limit", 50, "how many of the newest entries")
	all := fs.Bool("all", false, "every entry")
	action := fs.String("action", "", "only this action (e.g. agent.revoke)")
	output := fs.String("o", "table", "output: table or json (one entry per line)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *output != "table" && *output != "json" {
		return fmt.Errorf("-o: want table or json, got %q", *output)
	}
	var cps auditCheckpoints
	if err := c.getJSON(ctx, "/v1/audit/checkpoints", &cps); err != nil {
		return err
	}
	after := int64(-1)
	if !*all && *limit > 0 && *action == "" {
		after = max(-1, cps.Size-*limit-1)
	}
	out := bufio.NewWriter(stdout)
	defer out.Flush()
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	if *output == "table" {
		fmt.Fprintln(tw, "#\tTIME\tACTOR\tACTION\tOBJECT\tOUTCOME\tDETAILS")
	}
	var shown []string
	err := auditPages(ctx, c, after, 0, func(l auditLine) error {
		e, err := audit.Decode(l.Data)
		if err != nil {
			return fmt.Errorf("entry %d: %w (run wardctl audit verify)", l.Index, err)
		}
		if *action != "" && e.Action != *action {
			return nil
		}
		var line string
		if *output == "json" {
			b, err := json.Marshal(struct {
				Index int64 `json:"index"`
				audit.Entry
			}{l.Index, e})
			if err != nil {
				return err
			}
			line = string(b) + "\n"
		} else {
			line = fmt.Sprintf("%d\t%s\t%s\t%s\t%s\t%s\t%s\n", l.Index, e.Time.UTC().Format(time.RFC3339), e.Actor,
				e.Action, orDash(e.Object), e.Outcome, orDash(audit.FormatDetails(e.Details)))
		}
		shown = append(shown, line)
		if !*all && *limit > 0 && int64(len(shown)) > *limit {
			shown = shown[1:]
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, l := range shown {
		if *output == "json" {
			out.WriteString(l)
		} else {
			fmt.Fprint(tw, l)
		}
	}
	if *output == "table" {
		return tw.Flush()
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func cmdAuditVerify(ctx context.Context, c *client, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("wardctl audit verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var external multiFlag
	fs.Var(&external, "checkpoint", "a signed checkpoint kept outside the collector (repeatable)")
	keyFile := fs.String("key", "", "verifier key file to pin (default: the key the collector reports)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var cps auditCheckpoints
	if err := c.getJSON(ctx, "/v1/audit/checkpoints", &cps); err != nil {
		return err
	}
	vkey := cps.VerifierKey
	if *keyFile != "" {
		b, err := os.ReadFile(*keyFile)
		if err != nil {
			return fmt.Errorf("--key: %w", err)
		}
		vkey = strings.TrimSpace(string(b))
		if vkey != cps.VerifierKey {
			fmt.Fprintf(stderr, "note: the collector reports a different verifier key (%s)\n", cps.VerifierKey)
		}
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return fmt.Errorf("verifier key: %w", err)
	}
	var ext [][]byte
	for _, f := range external {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("--checkpoint: %w", err)
		}
		ext = append(ext, b)
	}
	vf := audit.NewVerifier(v)
	if err := auditPages(ctx, c, -1, 0, func(l auditLine) error {
		return vf.Add(audit.StoredRecord{Index: l.Index, Data: l.Data, LeafHash: l.LeafHash})
	}); err != nil {
		return fmt.Errorf("audit log does not verify: %w", err)
	}
	stored := make([][]byte, len(cps.Checkpoints))
	for i, cp := range cps.Checkpoints {
		stored[i] = []byte(cp.Note)
	}
	rep, err := vf.Finish(stored, ext)
	if err != nil {
		return fmt.Errorf("audit log does not verify: %w", err)
	}
	fmt.Fprintf(stdout, "audit log verified: %d entries, %d signed checkpoints (%d from outside), latest at size %d by %s\n",
		rep.Entries, rep.Checkpoints, len(ext), rep.Latest.Size, v.Name())
	if rep.Uncovered > 0 {
		fmt.Fprintf(stdout, "%d newest entries are not yet covered by a signed checkpoint (matched against the stored hashes only)\n", rep.Uncovered)
	}
	return nil
}

func cmdAuditCheckpoint(ctx context.Context, c *client, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("wardctl audit checkpoint", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "write the signed checkpoint to this file (default stdout)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	resp, err := c.do(ctx, http.MethodPost, "/v1/audit/checkpoints", nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	var cps auditCheckpoints
	if err := c.getJSON(ctx, "/v1/audit/checkpoints", &cps); err != nil {
		return err
	}
	if len(cps.Checkpoints) == 0 {
		return errors.New("the audit log is empty: there is nothing to checkpoint")
	}
	latest := cps.Checkpoints[len(cps.Checkpoints)-1]
	if *out == "" {
		_, err := io.WriteString(stdout, latest.Note)
		return err
	}
	if err := os.WriteFile(*out, []byte(latest.Note), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote the checkpoint at size %d to %s\n", latest.Size, *out)
	return nil
}

// parseIDs reads "1,2,3" lists from repeated --id flags.
func parseIDs(vals []string) ([]int64, error) {
	var ids []int64
	for _, v := range vals {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p == "" {
				continue
			}
			n, err := strconv.ParseInt(p, 10, 64)
			if err != nil || n <= 0 {
				return nil, fmt.Errorf("--id %q: want an event rowid as listed by wardctl sinks dead-letters", p)
			}
			ids = append(ids, n)
		}
	}
	return ids, nil
}
