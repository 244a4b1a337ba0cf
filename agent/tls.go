package agent

import (
	"context"
	"errors"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/ward-dlp/ward/agent/event"
	"github.com/ward-dlp/ward/agent/flows"
	"github.com/ward-dlp/ward/agent/proc"
	"github.com/ward-dlp/ward/agent/tlsplain"
	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/bpf/netflow"
	tlsprobe "github.com/ward-dlp/ward/bpf/tlsplain"
	"github.com/ward-dlp/ward/policy"
)

// tlsSensor is the TLS plaintext stage: the probe, the discovery that decides which files
// it hooks, and the per-connection classification pipeline.
type tlsSensor struct {
	probe *tlsprobe.Probe
	find  *tlsplain.Discovery
	pipe  *tlsplain.Pipeline
}

// startTLS loads the TLS plaintext probe when configured. A failure is logged and leaves
// the rest of the agent running (flows still name destinations).
func (a *agent) startTLS(self uint32) {
	tc := a.cfg.Network.TLSPlaintext
	if !tc.Enabled {
		return
	}
	p, err := tlsprobe.Load(tlsprobe.Config{RingBytes: a.cfg.Capture.RingBytes, MaxCapture: tc.MaxCaptureBytes, IgnoreTGID: self}, a.log)
	if err != nil {
		a.log.Error("TLS plaintext probes unavailable: what processes send over TLS is not classified", "err", err)
		return
	}
	a.tls = &tlsSensor{probe: p,
		find: tlsplain.NewDiscovery(p, tlsplain.DiscoveryConfig{Self: self, Receive: tc.InspectReceived}, a.log)}
	a.tls.pipe = tlsplain.NewPipeline(p, a.engine, tlsplain.PipelineConfig{Tracker: tlsplain.TrackerConfig{
		Idle: tc.IdleFlush, MaxSessions: tc.MaxSessions, Budget: tc.MaxSessionBytes}}, a.handleTLS, a.log)
}

// run hooks what is already running, then follows new processes and classifies plaintext
// until ctx ends (the probe is closed by closeProbes, which ends the pipeline's reads).
func (t *tlsSensor) run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- t.pipe.Run(ctx) }()
	// The first look at every running process reads executables; new processes are
	// served meanwhile.
	go t.find.Start(ctx)
	_ = t.find.Run(ctx)
	return <-errc
}

// handleTLS decides on one connection's classified plaintext and spools a finding when a
// rule decides. It runs on the pipeline's shard goroutines.
func (a *agent) handleTLS(ctx context.Context, d tlsplain.Done) {
	a.log.Debug("tls session", "pid", d.PID, "comm", d.Comm, "library", d.Library.String(), "recv", d.Recv,
		"remote", d.Remote().String(), "bytes", d.Bytes, "inspected", d.Inspected, "matches", len(d.Matches), "end", d.Reason.String())
	a.count("tls.sessions", 1)
	a.count("tls.bytes_inspected", uint64(d.Inspected))
	if d.Incomplete {
		a.count("tls.sessions_incomplete", 1)
	}
	if d.Inspected == 0 {
		return
	}
	info, known := a.procs.Lookup(ctx, d.PID)
	if !known {
		a.count("enrich.process_unknown", 1)
	}
	// The server name: the SNI the network sensor saw on this socket, else the HTTP
	// Host/:authority in the plaintext.
	if sni, ok := a.tls.pipe.SNI(d.Socket.Cookie); ok && d.Resolved {
		d.ServerName = sni
	}
	pol := a.policy.Policy()
	in := a.tlsInput(d, info)
	dec := pol.Evaluate(in)
	if dec.RuleID == "" {
		return
	}
	out := tlsOutcome(dec)
	ev, err := a.build.TLSFinding(d, info, known, d.ServerName, dec, out)
	if err != nil {
		return
	}
	a.append(ev)
	a.log.Info("finding", "target", "network", "remote", d.Remote().String(), "server_name", d.ServerName,
		"tls_library", d.Library.String(), "direction", in.Network.Direction, "pid", d.PID, "exe", info.Exe,
		"user", info.User, "rule", dec.RuleID, "action", dec.Action.String(), "taken", out.Taken.String(),
		"policy_version", dec.Version, "classes", in.ClassList())
}

// tlsInput builds the policy input for one connection's plaintext. Sent plaintext goes to
// a network app; received plaintext's destination is this host (destination.kind local).
func (a *agent) tlsInput(d tlsplain.Done, info proc.Info) *policy.Input {
	in := &policy.Input{
		Time: d.Last, Kind: policy.EventNetwork, Classes: make(map[policy.Class]int, 2), Bytes: d.Inspected,
		Destination: policy.Destination{Kind: policy.DestNetworkApp, Domain: d.ServerName},
		Network:     policy.Network{Direction: "send"},
		Process:     policy.Process{Exe: info.Exe, Args: info.Args},
		User:        policy.User{Name: info.User, UID: int64(info.UID), Groups: a.groups.lookup(info.UID, time.Now())},
		Host:        policy.Host{Name: a.hostName, Tags: a.cfg.Policy.HostTags},
	}
	if r := d.Remote(); r.IsValid() {
		in.Destination.Address, in.Destination.Port = r.Addr().Unmap().String(), int64(r.Port())
	}
	if d.Recv {
		in.Destination.Kind, in.Network.Direction = policy.DestLocal, "receive"
	}
	if info.Exe == "" {
		in.Process.Name = d.Comm
		in.User.UID = int64(d.UID)
	} else {
		in.Process.Name = path.Base(info.Exe)
	}
	for _, m := range d.Matches {
		cls, ok := event.PolicyClass(m.Class)
		if !ok {
			continue
		}
		in.Classes[cls] = max(in.Classes[cls], m.Confidence)
		in.Records += int64(m.Count)
		in.Detectors = append(in.Detectors, m.Detector)
		if strings.HasPrefix(m.Detector, "edm.") {
			in.Patients = append(in.Patients, m.Fingerprints...)
		}
	}
	return in
}

// tlsOutcome is outcome for plaintext: it is classified after the library had it, so a
// block cannot be carried out yet.
func tlsOutcome(d policy.Decision) event.Outcome {
	out := outcome(d)
	if out.Taken == policy.ActionAlert && d.Taken() >= policy.ActionBlock {
		out.Enforcement = d.Action.String() + " not enforceable on TLS plaintext yet (the library had sent it when it was classified): alerted instead"
	}
	return out
}

// annotateTLS says in a TCP flow record whether its plaintext was inspected, through which
// library, or why the process's TLS cannot be.
func (a *agent) annotateTLS(nf *wardv1.NetworkFlow, f flows.Flow) {
	if a.tls == nil || nf == nil || f.Proto != netflow.TCP {
		return
	}
	a.tls.pipe.NoteSNI(f.Cookie, nf.GetSni()) // the network sensor's name for the session's finding
	if lib, ok := a.tls.pipe.Seen(f.Cookie, f.Local, f.Remote); ok {
		nf.TlsLibrary, nf.TlsPlaintextSeen = lib.String(), true
		return
	}
	if f.Task.PID == 0 {
		return
	}
	switch pt := a.tls.find.Process(f.Task.PID); {
	case len(pt.Libraries) > 0:
		nf.TlsLibrary = strings.Join(pt.Libraries, ",")
	case pt.Static != "":
		nf.TlsLibrary, nf.TlsUninspectableReason = pt.Static, pt.Reason
	}
}

// tlsHealth adds the TLS sensor's hooks, kernel drops and stage counters.
func (a *agent) tlsHealth(addStatus func(prefix, name, hook string, attached bool, err error), drops map[string]uint64) {
	if !a.cfg.Network.TLSPlaintext.Enabled {
		return
	}
	if a.tls == nil {
		addStatus("tls.", "all", "", false, errors.New("TLS plaintext probes failed to load"))
		return
	}
	for _, s := range a.tls.probe.Status() {
		addStatus("tls.", s.Name, s.Hook, s.Attached, s.Err)
	}
	for _, l := range a.tls.find.Status() {
		var err error
		if l.Err != "" {
			err = errors.New(l.Err)
		}
		hook := "uprobe/" + strings.Join(tlsprobe.Symbols(l.Library), ",")
		if len(l.Files) > 0 {
			hook += " on " + strings.Join(l.Files[:min(len(l.Files), 8)], " ")
			if len(l.Files) > 8 {
				hook += " (+" + strconv.Itoa(len(l.Files)-8) + " more)"
			}
		}
		addStatus("tls.", l.Library.String(), hook, len(l.Files) > 0, err)
	}
	if d, err := a.tls.probe.Drops(); err == nil {
		for k, v := range d {
			drops["bpf.tlsplain."+k] = v
		}
	}
	ts, decodeErrors := a.tls.pipe.Stats()
	ds := a.tls.find.Stats()
	drops["tls.decode_error"] = decodeErrors
	drops["tls.sessions_evicted"] = ts.Evicted
	drops["tls.record_gaps"] = ts.Gaps
	drops["tls.bytes_over_budget"] = ts.OverBudget
	drops["tls.discovery_queue_full"] = ds.QueueFull
	drops["tls.attach_errors"] = ds.AttachErrors
	drops["tls.files_over_limit"] = ds.FilesOverLimit
}
