// Package loadtest drives a collector with a fleet of simulated agents: real gRPC clients
// over mTLS, one connection and one enrolled identity per agent, exporting realistic events
// (findings with classifier matches, file activity, network flows, process events) built by
// the agent's own event builders. It measures what the issue asks of the collector: sustained
// acknowledged events per second, ack latency percentiles, and the collector's CPU and
// memory, read from /proc and its metrics endpoint.
//
// A call counts only when the collector acknowledged every event of the batch, and the
// collector acknowledges only after the transaction holding them committed, so the figure
// is durable events per second.
package loadtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ward-dlp/ward/agent/identity"
	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
)

// RunConfig shapes one load run.
type RunConfig struct {
	Fleet []*identity.Identity
	// Targets are collector addresses; agent i uses Targets[i % len]. Default: the address
	// each identity enrolled with.
	Targets []string
	// BatchEvents is the number of events per Export (default 50).
	BatchEvents int
	// Rate is the total offered events/s, spread evenly over the agents; 0 runs closed
	// loop: each agent sends its next batch as soon as the previous one is acknowledged,
	// which finds the collector's capacity.
	Rate float64
	// Warmup runs load without measuring it (connections, caches, WAL growth); Duration
	// is the measured window.
	Warmup, Duration time.Duration
	Mix              Mix
	// CollectorPID, when set, is sampled from /proc over the window.
	CollectorPID int
	// MetricsURL, when set, is the collector's Prometheus endpoint; Go heap figures are read
	// from it.
	MetricsURL string
	// CallTimeout bounds one Export (default 30 s).
	CallTimeout time.Duration
	Log         *slog.Logger
}

// Result is what one run measured. Latencies are per Export call, from sending the request
// to receiving the acknowledgement of the whole batch.
type Result struct {
	Agents      int
	BatchEvents int
	Window      time.Duration
	// Events counts acknowledged events of calls that completed inside the window.
	Events uint64
	// Acked counts every acknowledged event of the run, warm-up and stragglers included.
	Acked        uint64
	Calls        uint64
	EventsPerSec float64
	// Failed counts Export attempts that failed (each batch is resent until acknowledged);
	// Throttled those refused with RESOURCE_EXHAUSTED.
	Failed, Throttled  uint64
	P50, P90, P99, Max time.Duration

	// Collector figures, when CollectorPID was set: CPU time used in the window, that as
	// cores, peak RSS seen while sampling, and VmHWM at the end.
	CollectorCPU       time.Duration
	CollectorCores     float64
	CollectorRSSPeak   uint64
	CollectorHWM       uint64
	CollectorHeapInuse float64 // bytes, at the end of the window (MetricsURL)
	// LoadgenCPU is this process's CPU time over the window: the simulated fleet's cost,
	// which shares the machine with the collector.
	LoadgenCPU           time.Duration
	LoadStart, LoadEnd   string
	OfferedEventsPerSec  float64
	BytesPerEventAverage float64
}

// String formats the result on one line per figure group, for logs and bench output.
func (r Result) String() string {
	s := fmt.Sprintf("agents=%d batch=%d window=%s events=%d calls=%d events/s=%.0f p50=%s p90=%s p99=%s max=%s failed=%d throttled=%d",
		r.Agents, r.BatchEvents, r.Window.Round(time.Millisecond), r.Events, r.Calls, r.EventsPerSec,
		r.P50.Round(10*time.Microsecond), r.P90.Round(10*time.Microsecond), r.P99.Round(10*time.Microsecond), r.Max.Round(10*time.Microsecond),
		r.Failed, r.Throttled)
	if r.OfferedEventsPerSec > 0 {
		s += fmt.Sprintf(" offered/s=%.0f", r.OfferedEventsPerSec)
	}
	if r.CollectorCPU > 0 {
		s += fmt.Sprintf("\n  collector: cpu=%s (%.2f cores) rss_peak=%.0fMiB hwm=%.0fMiB heap_inuse=%.0fMiB",
			r.CollectorCPU.Round(10*time.Millisecond), r.CollectorCores, float64(r.CollectorRSSPeak)/(1<<20),
			float64(r.CollectorHWM)/(1<<20), r.CollectorHeapInuse/(1<<20))
	}
	s += fmt.Sprintf("\n  loadgen: cpu=%s (%.2f cores) bytes/event=%.0f; load %s -> %s",
		r.LoadgenCPU.Round(10*time.Millisecond), r.LoadgenCPU.Seconds()/max(r.Window.Seconds(), 1e-9),
		r.BytesPerEventAverage, r.LoadStart, r.LoadEnd)
	return s
}

// phases of a run, read by every agent goroutine.
const (
	phaseWarmup int32 = iota
	phaseMeasure
	phaseDone
)

type agentStats struct {
	acked, events, calls, failed, throttled, bytes uint64
	lat                                            []time.Duration
}

// Run drives the fleet and returns the measurements. It fails when an agent cannot get a
// batch acknowledged by the end of the run, or when an acknowledgement misses an event.
func Run(ctx context.Context, cfg RunConfig) (Result, error) {
	if len(cfg.Fleet) == 0 {
		return Result{}, errors.New("loadtest: empty fleet")
	}
	if cfg.Mix == (Mix{}) {
		cfg.Mix = DefaultMix
	}
	if err := cfg.Mix.validate(); err != nil {
		return Result{}, err
	}
	if cfg.BatchEvents <= 0 {
		cfg.BatchEvents = 50
	}
	if cfg.Duration <= 0 {
		cfg.Duration = 10 * time.Second
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 30 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	c, err := newCorpus(cfg.Fleet[0].FingerprintKey())
	if err != nil {
		return Result{}, err
	}

	var phase atomic.Int32
	// ready counts agents whose first batch was acknowledged: the warm-up starts once the
	// whole fleet is connected, so TLS handshakes do not fall inside the window.
	var ready sync.WaitGroup
	ready.Add(len(cfg.Fleet))
	stats := make([]agentStats, len(cfg.Fleet))
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, len(cfg.Fleet))
	var interval time.Duration
	if cfg.Rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(cfg.BatchEvents) * float64(len(cfg.Fleet)) / cfg.Rate)
	}
	for i, id := range cfg.Fleet {
		target := id.Collector()
		if len(cfg.Targets) > 0 {
			target = cfg.Targets[i%len(cfg.Targets)]
		}
		a := &simAgent{n: i, id: id, target: target, gen: newGenerator(id.AgentID(), i, c, cfg.Mix), cfg: &cfg,
			phase: &phase, st: &stats[i], interval: interval, ready: ready.Done}
		wg.Go(func() {
			defer a.markReady()
			if err := a.run(runCtx); err != nil {
				errc <- fmt.Errorf("agent %d (%s): %w", i, id.AgentID(), err)
				cancel()
			}
		})
	}

	res := Result{Agents: len(cfg.Fleet), BatchEvents: cfg.BatchEvents, OfferedEventsPerSec: cfg.Rate}
	connected := make(chan struct{})
	go func() { ready.Wait(); close(connected) }()
	select {
	case <-connected:
	case <-runCtx.Done():
	}
	sleepCtx(runCtx, cfg.Warmup)
	var before ProcSample
	if cfg.CollectorPID > 0 {
		if before, err = ReadProc(cfg.CollectorPID); err != nil {
			cancel()
			wg.Wait()
			return res, err
		}
	}
	res.LoadStart = LoadAvg()
	selfBefore := SelfCPU()
	start := time.Now()
	phase.Store(phaseMeasure)

	// Sample the collector's RSS once a second through the window.
	tick := time.NewTicker(time.Second)
	end := time.NewTimer(cfg.Duration)
sampling:
	for {
		select {
		case <-runCtx.Done():
			break sampling
		case <-end.C:
			break sampling
		case <-tick.C:
			if cfg.CollectorPID > 0 {
				if s, err := ReadProc(cfg.CollectorPID); err == nil {
					res.CollectorRSSPeak = max(res.CollectorRSSPeak, s.RSS)
				}
			}
		}
	}
	tick.Stop()
	phase.Store(phaseDone)
	res.Window = time.Since(start)
	res.LoadgenCPU = SelfCPU() - selfBefore
	res.LoadEnd = LoadAvg()
	if cfg.CollectorPID > 0 {
		if after, err := ReadProc(cfg.CollectorPID); err == nil {
			res.CollectorCPU = after.CPU - before.CPU
			res.CollectorCores = res.CollectorCPU.Seconds() / res.Window.Seconds()
			res.CollectorRSSPeak = max(res.CollectorRSSPeak, after.RSS)
			res.CollectorHWM = after.HWM
		}
	}
	if cfg.MetricsURL != "" {
		if v, err := ScrapeGauge(ctx, cfg.MetricsURL, "go_memstats_heap_inuse_bytes"); err == nil {
			res.CollectorHeapInuse = v
		}
	}
	// Let calls in flight finish (agents stop sending new ones in phaseDone), so every
	// batch the collector committed is also acknowledged and counted; cut them off only if
	// they take longer than a call timeout.
	drained := make(chan struct{})
	go func() { wg.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(cfg.CallTimeout):
		cancel()
		<-drained
	}
	cancel()
	close(errc)
	var errs []error
	for err := range errc {
		errs = append(errs, err)
	}
	if len(errs) > 0 && ctx.Err() == nil {
		return res, fmt.Errorf("loadtest: %d agents failed, first: %w", len(errs), errs[0])
	}

	var lat []time.Duration
	var bytes uint64
	for i := range stats {
		res.Events += stats[i].events
		res.Acked += stats[i].acked
		res.Calls += stats[i].calls
		res.Failed += stats[i].failed
		res.Throttled += stats[i].throttled
		bytes += stats[i].bytes
		lat = append(lat, stats[i].lat...)
	}
	res.EventsPerSec = float64(res.Events) / res.Window.Seconds()
	if res.Events > 0 {
		res.BytesPerEventAverage = float64(bytes) / float64(res.Events)
	}
	slices.Sort(lat)
	if n := len(lat); n > 0 {
		q := func(p float64) time.Duration { return lat[min(n-1, int(p*float64(n)))] }
		res.P50, res.P90, res.P99, res.Max = q(0.50), q(0.90), q(0.99), lat[n-1]
	}
	return res, ctx.Err()
}

// simAgent is one simulated agent: its own identity, connection and seq counter.
type simAgent struct {
	n        int
	id       *identity.Identity
	target   string
	gen      *generator
	cfg      *RunConfig
	phase    *atomic.Int32
	st       *agentStats
	interval time.Duration
	ready    func()
	readied  bool
}

func (a *simAgent) markReady() {
	if !a.readied {
		a.readied = true
		a.ready()
	}
}

func (a *simAgent) run(ctx context.Context) error {
	conn, err := grpc.NewClient(a.target, grpc.WithTransportCredentials(a.id.TransportCredentials()))
	if err != nil {
		return fmt.Errorf("connect %s: %w", a.target, err)
	}
	defer conn.Close()
	client := wardv1.NewAgentServiceClient(conn)
	// Agents do not start in lockstep: spread the first call over one interval (or 100 ms).
	first := a.interval
	if first <= 0 {
		first = 100 * time.Millisecond
	}
	next := time.Now().Add(rand.N(first))
	for ctx.Err() == nil && a.phase.Load() != phaseDone {
		if a.interval > 0 || a.phase.Load() == phaseWarmup {
			if !sleepUntil(ctx, next) {
				return nil
			}
			next = next.Add(max(a.interval, 0))
		}
		batch := make([]*wardv1.Event, a.cfg.BatchEvents)
		for i := range batch {
			ev, err := a.gen.next()
			if err != nil {
				return err
			}
			batch[i] = ev
		}
		req := &wardv1.ExportRequest{Events: batch}
		if err := a.export(ctx, client, req); err != nil {
			return err
		}
	}
	return nil
}

// export sends one batch until the collector acknowledged all of it, as the agent's
// shipper does (it resends what was not acknowledged; the collector deduplicates).
func (a *simAgent) export(ctx context.Context, client wardv1.AgentServiceClient, req *wardv1.ExportRequest) error {
	backoff := 50 * time.Millisecond
	for attempt := 0; ; attempt++ {
		measuring := a.phase.Load() == phaseMeasure
		t0 := time.Now()
		cctx, cancel := context.WithTimeout(ctx, a.cfg.CallTimeout)
		resp, err := client.Export(cctx, req)
		cancel()
		lat := time.Since(t0)
		if err == nil {
			if missing := unacked(req.Events, resp.GetAcked()); missing > 0 {
				return fmt.Errorf("collector acknowledged %d of %d events (rejected %d: %s)",
					len(req.Events)-missing, len(req.Events), resp.GetRejected(), resp.GetErrorMessage())
			}
			a.st.acked += uint64(len(req.Events))
			a.markReady()
			if measuring && a.phase.Load() == phaseMeasure {
				a.st.calls++
				a.st.events += uint64(len(req.Events))
				a.st.bytes += uint64(proto.Size(req))
				a.st.lat = append(a.st.lat, lat)
			}
			return nil
		}
		if ctx.Err() != nil || a.phase.Load() == phaseDone {
			return nil // the run ended mid-call
		}
		if a.phase.Load() == phaseMeasure {
			a.st.failed++
		}
		delay := backoff + rand.N(backoff)
		if status.Code(err) == codes.ResourceExhausted {
			if a.phase.Load() == phaseMeasure {
				a.st.throttled++
			}
			if d, ok := retryInfo(err); ok {
				delay = d
			}
		} else if attempt > 0 && attempt%20 == 0 {
			a.cfg.Log.Warn("export keeps failing", "agent", a.n, "attempt", attempt, "err", err)
		}
		backoff = min(2*backoff, 2*time.Second)
		if !sleepUntil(ctx, time.Now().Add(delay)) {
			return nil
		}
	}
}

func unacked(evs []*wardv1.Event, acked []*wardv1.SeqRange) int {
	missing := 0
	for _, ev := range evs {
		if !slices.ContainsFunc(acked, func(r *wardv1.SeqRange) bool {
			return ev.GetSeq() >= r.GetFirst() && ev.GetSeq() <= r.GetLast()
		}) {
			missing++
		}
	}
	return missing
}

func retryInfo(err error) (time.Duration, bool) {
	st, ok := status.FromError(err)
	if !ok {
		return 0, false
	}
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			return min(max(ri.GetRetryDelay().AsDuration(), time.Millisecond), 30*time.Second), true
		}
	}
	return 0, false
}

func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-tm.C:
		return true
	}
}

func sleepCtx(ctx context.Context, d time.Duration) { sleepUntil(ctx, time.Now().Add(d)) }
