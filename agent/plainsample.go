package agent

import (
	"context"

	"github.com/ward-dlp/ward/agent/netcap"
	"github.com/ward-dlp/ward/agent/proc"
	"github.com/ward-dlp/ward/agent/tlsplain"
	"github.com/ward-dlp/ward/policy"
)

// plainSampling configures the joiner's payload sampling of plaintext TCP sends: the
// captured payload goes through the same per-connection tracker and the same decision and
// finding path as TLS plaintext (tlsInput, TLSFinding), so an HTTP POST of a record and
// the same POST over HTTPS are judged alike. It runs on the trackFlows goroutine.
func (a *agent) plainSampling() *netcap.PlainConfig {
	tc := a.cfg.Network.TLSPlaintext
	return &netcap.PlainConfig{Engine: a.engine,
		Tracker: tlsplain.TrackerConfig{Idle: tc.IdleFlush, MaxSessions: tc.MaxSessions, Budget: tc.MaxSessionBytes},
		Done:    a.handlePlainSample}
}

// handlePlainSample decides on one flow's classified payload sample and spools a finding
// when a rule decides.
func (a *agent) handlePlainSample(d tlsplain.Done) {
	if d.Inspected == 0 {
		return
	}
	a.log.Debug("plaintext sample", "pid", d.PID, "comm", d.Comm, "remote", d.Remote().String(),
		"bytes", d.Bytes, "inspected", d.Inspected, "matches", len(d.Matches), "end", d.Reason.String())
	var info proc.Info
	known := false
	if d.PID != 0 { // 0: no connect or send record named the socket's owner
		// The lookup is bounded by the table's exec wait.
		info, known = a.procs.Lookup(context.Background(), d.PID)
	}
	if !known {
		a.count("enrich.process_unknown", 1)
	}
	pol := a.policy.Policy()
	in := a.tlsInput(d, info)
	dec := pol.Evaluate(in)
	if dec.RuleID == "" {
		return
	}
	out := outcome(dec)
	if out.Taken == policy.ActionAlert && dec.Taken() >= policy.ActionBlock {
		out.Enforcement = dec.Action.String() + " not enforceable on a plaintext sample (the packets had left when they were classified): alerted instead"
	}
	ev, err := a.build.TLSFinding(d, info, known, d.ServerName, dec, out)
	if err != nil {
		return
	}
	a.append(ev)
	a.log.Info("finding", "target", "network", "remote", d.Remote().String(), "server_name", d.ServerName,
		"source", "plaintext sample", "pid", d.PID, "exe", info.Exe, "user", info.User, "rule", dec.RuleID,
		"action", dec.Action.String(), "taken", out.Taken.String(), "policy_version", dec.Version,
		"classes", in.ClassList())
}
