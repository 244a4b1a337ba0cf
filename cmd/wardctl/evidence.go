package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
)

const evidenceUsage = `usage:
  wardctl evidence rewrap [--batch N]
      Re-encrypt every stored event that is in clear (stored before evidence encryption was
      enabled) or under an older key with the current key of the collector's ring, N rows
      per transaction (default 500). Keys no row uses any more are retired: remove them
      from the key file afterwards and restart. Safe to interrupt and run again.
`

func cmdEvidence(ctx context.Context, c *client, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, evidenceUsage)
		if len(args) == 0 {
			return flag.ErrHelp
		}
		return nil
	}
	if args[0] != "rewrap" {
		return fmt.Errorf("unknown evidence command %q (rewrap)", args[0])
	}
	fs := flag.NewFlagSet("wardctl evidence rewrap", flag.ContinueOnError)
	fs.SetOutput(stderr)
	batch := fs.Int("batch", 500, "rows per transaction")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *batch < 1 || *batch > 100000 {
		return fmt.Errorf("--batch must be between 1 and 100000")
	}
	fmt.Fprintln(stderr, "rewrapping stored evidence; the collector logs progress per batch ...")
	resp, err := c.do(ctx, http.MethodPost, "/v1/evidence/rewrap", map[string]any{"batch": *batch})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var r struct {
		Rewrapped   int            `json:"rewrapped"`
		ByOldKey    map[string]int `json:"by_old_key"`
		Remaining   int            `json:"remaining"`
		CurrentKey  string         `json:"current_key"`
		RetiredKeys []string       `json:"retired_keys"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return fmt.Errorf("decode rewrap answer: %w", err)
	}
	fmt.Fprintf(stdout, "%d rows rewrapped under key %s; %d remain\n", r.Rewrapped, r.CurrentKey, r.Remaining)
	keys := make([]string, 0, len(r.ByOldKey))
	for k := range r.ByOldKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		name := k
		if k == "" {
			name = "(stored in clear)"
		}
		fmt.Fprintf(stdout, "  from %-20s %d\n", name, r.ByOldKey[k])
	}
	if len(r.RetiredKeys) > 0 {
		fmt.Fprintf(stdout, "retired keys (no row uses them; remove them from the key file): %s\n", strings.Join(r.RetiredKeys, ", "))
	}
	return nil
}
