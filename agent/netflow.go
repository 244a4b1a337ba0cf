package agent

import (
	"context"
	"errors"
	"os"
	"time"

	"github.com/ward-dlp/ward/agent/flows"
	"github.com/ward-dlp/ward/agent/proc"
	"github.com/ward-dlp/ward/bpf/netflow"
)

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

// trackFlows owns the flow tracker (one goroutine: records are joined in ring order) and
// spools one NetworkFlow event per finished flow, attributed through the process table.
func (a *agent) trackFlows(ctx context.Context, in <-chan netflow.Record) error {
	tr := flows.New(flows.Config{IdleTimeout: a.cfg.Network.FlowIdleTimeout, MaxFlows: a.cfg.Network.MaxFlows})
	tick := time.NewTicker(max(a.cfg.Network.FlowIdleTimeout/8, time.Second))
	defer tick.Stop()
	emit := func(ctx context.Context, fs []flows.Flow) {
		for _, f := range fs {
			var info proc.Info
			known := false
			if f.Task.PID != 0 { // inbound flows have no process context
				if info, known = a.procs.Lookup(ctx, f.Task.PID); !known {
					a.count("enrich.process_unknown", 1)
				}
			}
			a.append(a.build.NetworkFlow(f, info, known))
		}
		a.mu.Lock()
		a.flowStats = tr.Stats()
		a.mu.Unlock()
	}
	for {
		select {
		case <-ctx.Done():
			// Report what is still open so a stop does not hide a connection; the context
			// is done, so look processes up without it.
			emit(context.Background(), tr.Flush(time.Now()))
			return nil
		case r := <-in:
			emit(ctx, tr.Apply(r))
		case now := <-tick.C:
			emit(ctx, tr.Tick(now))
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
	a.mu.Lock()
	fs := a.flowStats
	a.mu.Unlock()
	drops["flows.evicted"] = fs.Evicted
	drops["flows.state_without_connect"] = fs.StateWithout
	drops["flows.close_without_open"] = fs.CloseWithout
}
