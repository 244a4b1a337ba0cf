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

const userUsage = `usage: wardctl user add --role admin|soc-analyst|compliance-auditor NAME
       wardctl user reset [--role ROLE] NAME
       wardctl user list [-o table|json]

add creates a console account and prints a one-time password; the user chooses their own
password and enrols an authenticator (TOTP) at first sign-in. reset gives a new one-time
password, clears the authenticator and recovery codes, unlocks the account and ends its
sessions. The first admin is made this way, on the collector host.
`

func cmdUser(ctx context.Context, c *client, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, userUsage)
		return flag.ErrHelp
	}
	fs := flag.NewFlagSet("wardctl user "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	role := fs.String("role", "", "console role")
	out := fs.String("o", "table", "output: table or json")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	switch args[0] {
	case "add", "reset":
		if fs.NArg() != 1 {
			return errors.New("wardctl user " + args[0] + ": want exactly one user name")
		}
		name := fs.Arg(0)
		path, method := "/v1/users", http.MethodPost
		body := map[string]string{"username": name, "role": *role}
		if args[0] == "add" {
			if *role == "" {
				return errors.New("wardctl user add: --role is required (admin, soc-analyst or compliance-auditor)")
			}
		} else {
			path = "/v1/users/" + url.PathEscape(name) + "/reset"
			body = map[string]string{"role": *role}
		}
		resp, err := c.do(ctx, method, path, body)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var u struct {
			Username        string `json:"username"`
			Role            string `json:"role"`
			InitialPassword string `json:"initial_password"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&u); err != nil {
			return fmt.Errorf("decode answer: %w", err)
		}
		fmt.Fprintf(stdout, "user %s (%s)\none-time password: %s\n", u.Username, u.Role, u.InitialPassword)
		fmt.Fprintln(stderr, "Give it to the user over a trusted channel; they set their own password and enrol TOTP at first sign-in.")
		return nil
	case "list":
		var res struct {
			Users []struct {
				Username    string    `json:"username"`
				Role        string    `json:"role"`
				MFA         bool      `json:"mfa_enrolled"`
				Disabled    bool      `json:"disabled"`
				LockedUntil time.Time `json:"locked_until"`
				LastLoginAt time.Time `json:"last_login_at"`
			} `json:"users"`
		}
		if err := c.getJSON(ctx, "/v1/users", &res); err != nil {
			return err
		}
		if *out == "json" {
			return json.NewEncoder(stdout).Encode(res)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "USER\tROLE\tMFA\tSTATE\tLAST LOGIN")
		for _, u := range res.Users {
			state := "active"
			switch {
			case u.Disabled:
				state = "disabled"
			case time.Now().Before(u.LockedUntil):
				state = "locked until " + u.LockedUntil.Format(time.RFC3339)
			}
			mfa := "pending"
			if u.MFA {
				mfa = "enrolled"
			}
			last := "never"
			if !u.LastLoginAt.IsZero() {
				last = u.LastLoginAt.Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", u.Username, u.Role, mfa, state, last)
		}
		return tw.Flush()
	default:
		fmt.Fprint(stderr, userUsage)
		return fmt.Errorf("unknown user command %q", args[0])
	}
}
