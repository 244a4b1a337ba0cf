package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ward-dlp/ward/agent/flows"
	"github.com/ward-dlp/ward/agent/netcap"
	"github.com/ward-dlp/ward/agent/proc"
	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	capprobe "github.com/ward-dlp/ward/bpf/netcap"
	"github.com/ward-dlp/ward/bpf/netflow"
	"github.com/ward-dlp/ward/classifiers/catalog"
	"github.com/ward-dlp/ward/classifiers/traffic"
)

// joinDelay holds a finished flow before its event is built: the capture ring and the flow
// ring are read by different goroutines, so the packets that name a short flow (its
// ClientHello) can still be in flight when its close is read.
const joinDelay = 500 * time.Millisecond

// netView is what trackFlows publishes for health events (the joiner and enforcer are
// owned by its goroutine).
type netView struct {
	join netcap.Stats
	enf  netcap.EnforcerStats
}

// startCapture loads the packet capture probe when configured; a failure leaves flows
// unnamed but everything else running.
func (a *agent) startCapture(self uint32) {
	nc := a.cfg.Network.Capture
	if !a.cfg.Network.Enabled || !nc.Enabled {
		return
	}
	p, err := capprobe.Load(capprobe.Config{RingBytes: a.cfg.Capture.RingBytes, IgnoreTGID: self, Packets: nc.Packets,
		Bytes: nc.Bytes, Snap: nc.Snap, DNSPerSecond: nc.DNSPerSecond, Hook: capprobe.Hook(nc.Hook)}, a.log)
	if err != nil {
		a.log.Error("packet capture unavailable: flows carry no application or server name, and blocked apps are not enforced", "err", err)
		return
	}
	a.caps = p
}

// readCaptures starts the capture ring reader; nil when capture is off.
func (a *agent) readCaptures(g *errgroup.Group, ctx context.Context) <-chan capprobe.Record {
	if a.caps == nil {
		return nil
	}
	out := make(chan capprobe.Record, 4096)
	g.Go(func() error {
		for {
			r, err := a.caps.Next()
			if err != nil {
				if ctx.Err() != nil || errors.Is(err, os.ErrClosed) {
					return nil
				}
				a.count("netcap.decode_error", 1)
				continue
			}
			select {
			case out <- r:
			case <-ctx.Done():
				return nil
			}
		}
	})
	return out
}

// readFlows moves decoded network records off the ring buffer as fast as possible.
func (a *agent) readFlows(ctx context.Context, out chan<- netflow.Record) error {
	for {
		r, err := a.nets.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, os.ErrClosed) {
				return nil
			}
			a.count("netflow.decode_error", 1)
			a.log.Debug("network record", "err", err)
			continue
		}
		select {
		case out <- r:
		case <-ctx.Done():
			return nil
		}
	}
}

type pendingFlow struct {
	f   flows.Flow
	due time.Time
}

// trackFlows owns the flow tracker, the traffic analyzer's joiner and the enforcer (one
// goroutine: records are joined in ring order without locks) and spools one NetworkFlow
// event per finished flow, attributed through the process table and named by the analyzer.
func (a *agent) trackFlows(ctx context.Context, in <-chan netflow.Record, caps <-chan capprobe.Record) error {
	tr := flows.New(flows.Config{IdleTimeout: a.cfg.Network.FlowIdleTimeout, MaxFlows: a.cfg.Network.MaxFlows})
	tick := time.NewTicker(max(a.cfg.Network.FlowIdleTimeout/8, time.Second))
	defer tick.Stop()
	fast := time.NewTicker(250 * time.Millisecond) // join delay, DNS expiry, policy changes
	defer fast.Stop()

	var join *netcap.Joiner
	if caps != nil {
		var err error
		if join, err = a.newJoiner(); err != nil {
			a.log.Error("traffic analyzer unavailable: flows are not named", "err", err)
		}
	}
	enf := netcap.NewEnforcer(netcap.EnforcerConfig{Deny: a.nets, Drop: dropTarget(a.caps), Log: a.log})
	applyPolicy := func(now time.Time) {
		if a.policy == nil {
			return
		}
		if err := enf.Apply(a.policy.Policy(), now); err != nil {
			a.log.Error("network block list not installed", "err", err)
		}
	}
	applyPolicy(time.Now())
	named := map[uint64]bool{} // sockets whose server name was already judged
	var pending []pendingFlow

	build := func(ctx context.Context, f flows.Flow) {
		var info proc.Info
		known := false
		if f.Task.PID != 0 { // inbound flows have no process context
			if info, known = a.procs.Lookup(ctx, f.Task.PID); !known {
				a.count("enrich.process_unknown", 1)
			}
		}
		ev := a.build.NetworkFlow(f, info, known)
		final := f.Reason != flows.Idle
		var ann netcap.Annotation
		joined := false
		if join != nil {
			ann, joined = join.Annotate(f, final)
		}
		annotateFlow(ev.GetFlow(), f, ann, joined, enf)
		a.annotateTLS(ev.GetFlow(), f)
		a.append(ev)
		if final {
			enf.Closed(f.Cookie)
			delete(named, f.Cookie)
		}
		if f.Reason == flows.Denied {
			nf := ev.GetFlow()
			a.log.Info("network flow denied", "rule", nf.GetRuleId(), "remote", f.Remote.String(), "pid", f.Task.PID,
				"comm", f.Task.Comm, "enforcement", nf.GetEnforcement())
		}
	}
	emit := func(ctx context.Context, fs []flows.Flow, now time.Time) {
		for _, f := range fs {
			if join != nil && f.Reason != flows.Denied {
				pending = append(pending, pendingFlow{f, now.Add(joinDelay)})
				continue
			}
			build(ctx, f)
		}
	}
	flushPending := func(ctx context.Context, now time.Time, all bool) {
		n := 0
		for _, p := range pending {
			if !all && p.due.After(now) {
				break // appended in time order
			}
			build(ctx, p.f)
			n++
		}
		pending = append(pending[:0], pending[n:]...)
	}
	publish := func() {
		st := tr.Stats()
		var v netView
		if join != nil {
			v.join = join.Stats()
		}
		v.enf = enf.Stats()
		a.mu.Lock()
		a.flowStats, a.netView = st, v
		a.mu.Unlock()
	}
	for {
		select {
		case <-ctx.Done():
			// Report what is still open so a stop does not hide a connection; the context
			// is done, so look processes up without it.
			now := time.Now()
			emit(context.Background(), tr.Flush(now), now)
			flushPending(context.Background(), now, true)
			if join != nil {
				join.Flush() // classify the plaintext samples still open
			}
			publish()
			return nil
		case r := <-in:
			switch c := r.(type) {
			case netflow.Connect:
				if a.tls != nil && c.Task.PID != 0 {
					a.tls.find.Connect(c.Task.PID) // libraries it loaded since it started
				}
				if join != nil {
					join.Process(c.Cookie, c.Task)
				}
			case netflow.UDPSend:
				if join != nil {
					join.Process(c.Cookie, c.Task)
				}
			}
			emit(ctx, tr.Apply(r), time.Now())
		case r := <-caps:
			switch r := r.(type) {
			case capprobe.Packet:
				if join == nil {
					continue
				}
				s := join.Packet(r)
				if s.DNS != nil {
					enf.DNSAnswer(s.DNS, r.Time)
				}
				if s.Cookie != 0 && r.Dir == capprobe.Egress && !named[s.Cookie] && enf.DropsActive() {
					if rec, ok := join.Lookup(s.Proto, s.Local, s.Remote); ok && rec.SNI != "" {
						named[s.Cookie] = true
						enf.ServerName(s.Cookie, rec.SNI)
					}
				}
			case capprobe.Drop:
				// The flow is cut now: report it at once (the kernel will only report
				// its close after TCP gives up).
				fs := tr.Cut(r.Cookie, r.Time, r.Rule)
				for i := range fs {
					build(ctx, fs[i])
				}
			}
		case now := <-fast.C:
			applyPolicy(now)
			enf.Expire(now)
			if join != nil {
				join.Tick(now)
			}
			flushPending(ctx, now, false)
			if len(named) > 1<<16 {
				clear(named) // bounded; a socket judged twice is only judged twice
			}
		case now := <-tick.C:
			emit(ctx, tr.Tick(now), now)
			publish()
		}
	}
}

// dropTarget avoids a typed nil in the interface when capture is off.
func dropTarget(p *capprobe.Probe) netcap.DropTarget {
	if p == nil {
		return nil
	}
	return p
}

// newJoiner builds the live traffic analyzer with the built-in catalog and the
// organisation's sanctioning (an overlay from the policy in force, else every app is
// monitored).
func (a *agent) newJoiner() (*netcap.Joiner, error) {
	cat, err := catalog.Builtin()
	if err != nil {
		return nil, fmt.Errorf("app catalog: %w", err)
	}
	pol := catalog.DefaultPolicy()
	if a.policy != nil {
		if p, _ := a.policy.Sanctioning(); p != nil {
			pol = p
		}
	}
	jc := netcap.Config{Catalog: cat, Policy: pol, Log: a.log, MaxSockets: a.cfg.Network.MaxFlows}
	if a.cfg.Network.Capture.SamplePlaintext {
		jc.Plaintext = a.plainSampling()
	}
	j, err := netcap.New(jc)
	if err != nil {
		return nil, err
	}
	j.OnDetection = func(d traffic.Detection) {
		pid := 0
		if d.Process != nil {
			pid = d.Process.PID
		}
		a.log.Info("network detection", "kind", string(d.Kind), "severity", d.Severity, "app", d.App, "name", d.Name,
			"client", d.Client.String(), "server", d.Server.String(), "pid", pid, "summary", d.Summary)
	}
	return j, nil
}

// annotateFlow fills a flow event with what the analyzer learned (fields 20-37) and with
// what enforcement did about it.
func annotateFlow(nf *wardv1.NetworkFlow, f flows.Flow, ann netcap.Annotation, joined bool, enf *netcap.Enforcer) {
	if nf == nil {
		return
	}
	if joined {
		r := &ann.Record
		nf.App, nf.AppName, nf.AppCategory = r.App, r.AppName, r.Category
		nf.Name, nf.NameSource, nf.AppProtocol = r.Name, string(r.NameSource), r.Protocol
		nf.Sni, nf.Alpn, nf.Ja4, nf.Ech, nf.DnsQuery = r.SNI, r.ALPN, r.JA4, r.ECH, r.DNSQuery
		nf.TlsVersion = r.TLSVersion
		if nf.TlsVersion == "" {
			nf.TlsVersion = r.TLSClientMax // no ServerHello seen: the best the client offered
		}
		if r.App != "" {
			nf.AppStatus = string(r.Status)
		}
		nf.AppTenant, nf.Flags, nf.QuicVersion = r.Tenant, r.Flags, r.QUICVersion
		for _, d := range ann.Detections {
			nf.Detections = append(nf.Detections, &wardv1.NetworkFlow_Detection{Kind: string(d.Kind), Severity: d.Severity,
				Summary: d.Summary, Evidence: d.Evidence, Time: timestamppb.New(d.Time)})
		}
	}
	switch {
	case f.Reason == flows.Denied && f.Cut:
		nf.RuleId = enf.RuleName(f.RuleID)
		nf.Enforcement = fmt.Sprintf("packets dropped after the ClientHello named a domain blocked by rule %s; the connection stalls until the application gives up", nf.RuleId)
		if nf.Sni != "" {
			nf.Enforcement = fmt.Sprintf("packets dropped after the ClientHello named %s, blocked by rule %s; the connection stalls until the application gives up", nf.Sni, nf.RuleId)
		}
	case f.Reason == flows.Denied:
		via := "connect"
		if f.Via == netflow.ViaSendmsg {
			via = "UDP send"
		}
		if v, ok := enf.Judge(f.Remote, "", true, f.RuleID, via); ok && v.Rule != "" {
			nf.RuleId, nf.Enforcement = v.Rule, v.Explanation
		}
	default:
		name := nf.GetSni()
		if name == "" {
			name = nf.GetName()
		}
		if v, ok := enf.Judge(f.Remote, name, false, 0, ""); ok {
			nf.RuleId, nf.Enforcement = v.Rule, v.Explanation
		}
	}
}

// flowHealth adds the network sensor's probes, kernel drops and tracker counters.
func (a *agent) flowHealth(addStatus func(prefix, name, hook string, attached bool, err error), drops map[string]uint64) {
	if !a.cfg.Network.Enabled {
		return
	}
	if a.nets == nil {
		addStatus("net.", "all", "", false, errors.New("network flow probes failed to load"))
		return
	}
	for _, s := range a.nets.Status() {
		addStatus("net.", s.Name, s.Hook, s.Attached, s.Err)
	}
	if d, err := a.nets.Drops(); err == nil {
		for k, v := range d {
			drops["bpf.netflow."+k] = v
		}
	}
	switch {
	case !a.cfg.Network.Capture.Enabled:
	case a.caps == nil:
		addStatus("net.", "capture", "", false, errors.New("packet capture probes failed to load"))
	default:
		for _, s := range a.caps.Status() {
			addStatus("net.", s.Name, s.Hook, s.Attached, s.Err)
		}
		if d, err := a.caps.Drops(); err == nil {
			for k, v := range d {
				drops["bpf.netcap."+k] = v
			}
		}
		if c, err := a.caps.Counters(); err == nil {
			for _, k := range []string{"over_budget", "dns_rate_limited", "enforced_drops", "not_tcp_udp"} {
				drops["netcap."+k] = c[k]
			}
		}
	}
	a.mu.Lock()
	fs, nv := a.flowStats, a.netView
	a.mu.Unlock()
	drops["flows.evicted"] = fs.Evicted
	drops["flows.state_without_connect"] = fs.StateWithout
	drops["flows.close_without_open"] = fs.CloseWithout
	if a.caps != nil {
		js := nv.join
		drops["traffic.not_joined"] = js.NotJoined
		drops["traffic.undecodable"] = js.Undecodable
		drops["traffic.decode_errors"] = js.Analyzer.DecodeErrors
		drops["traffic.panics"] = js.Analyzer.Panics
		drops["traffic.tls_errors"] = js.Analyzer.TLSErrors
		drops["traffic.flows_evicted"] = js.Analyzer.FlowsEvicted
		drops["traffic.detections"] = js.Detections
		drops["plainsample.sessions"] = js.Plaintext.Sessions
		drops["plainsample.bytes"] = js.Plaintext.Bytes
		drops["plainsample.gaps"] = js.Plaintext.Gaps
		drops["plainsample.tls_skipped"] = js.Plaintext.Encrypted
	}
	drops["enforce.errors"] = nv.enf.Errors
	drops["enforce.deny_entries"] = uint64(nv.enf.Static + nv.enf.Resolved)
	drops["enforce.sockets_dropped"] = nv.enf.Dropped
}
