package ingest

import (
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Backpressure. The collector never queues agents' data in memory beyond a fixed budget:
// an Export is admitted only if its events and bytes fit in what is still awaiting commit,
// and is refused with RESOURCE_EXHAUSTED plus a google.rpc.RetryInfo (the OTLP convention
// agents follow) when the budget is full, when the store commits slowly, or when the sink
// outbox is deeper than configured. Agents keep refused batches in their disk spool, so
// pushing back loses nothing; it moves the queue to where there is disk for it.

// Reasons a batch is refused for load, used in messages and as metric labels.
const (
	reasonRateLimit      = "rate_limit"
	reasonInflightEvents = "inflight_events"
	reasonInflightBytes  = "inflight_bytes"
	reasonCommitLatency  = "commit_latency"
	reasonOutboxDepth    = "outbox_depth"
)

// admission tracks work awaiting commit and the store's health signals.
type admission struct {
	maxEvents, maxBytes int64
	latencyThreshold    time.Duration // <= 0: not used
	outboxThreshold     int64         // <= 0: not used
	retryBase, retryMax time.Duration

	mu      sync.Mutex
	events  int64
	bytes   int64
	batches int64

	// latency is an exponentially weighted moving average of commit time, in nanoseconds.
	latency atomic.Int64
	// outboxDepth is the last sampled number of queued sink deliveries.
	outboxDepth atomic.Int64

	// A refusal episode: refusals closer than episodeGap to each other. Its length
	// lengthens the delay given, so a crowd of agents spreads out further the longer the
	// overload lasts.
	episodeMu   sync.Mutex
	lastRefusal time.Time
	episode     int
}

const episodeGap = 5 * time.Second

// pressure reports the strongest load signal: its reason and its ratio to its threshold
// (>= 1 means over). need* are what a new batch would add to the in-flight totals.
func (a *admission) pressureLocked(needEvents, needBytes int64) (string, float64) {
	reason, ratio := "", 0.0
	consider := func(r string, v float64) {
		if v > ratio {
			reason, ratio = r, v
		}
	}
	if a.maxEvents > 0 {
		consider(reasonInflightEvents, float64(a.events+needEvents)/float64(a.maxEvents))
	}
	if a.maxBytes > 0 {
		consider(reasonInflightBytes, float64(a.bytes+needBytes)/float64(a.maxBytes))
	}
	// Slow commits throttle only while something is in flight: one batch at a time still
	// goes through as a probe, and its commit time is what brings the average back down.
	if a.latencyThreshold > 0 && a.batches > 0 {
		consider(reasonCommitLatency, float64(a.latency.Load())/float64(a.latencyThreshold))
	}
	if a.outboxThreshold > 0 {
		consider(reasonOutboxDepth, float64(a.outboxDepth.Load())/float64(a.outboxThreshold))
	}
	return reason, ratio
}

// acquire admits a batch of n events and b bytes, or says why not and by how much the
// limit would be exceeded.
func (a *admission) acquire(n, b int64) (ok bool, reason string, ratio float64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	reason, ratio = a.pressureLocked(n, b)
	// A batch larger than the whole budget is admitted when nothing else is in flight,
	// or it could never be stored.
	if ratio > 1 && !(a.batches == 0 && (reason == reasonInflightEvents || reason == reasonInflightBytes)) {
		return false, reason, ratio
	}
	a.events += n
	a.bytes += b
	a.batches++
	return true, "", ratio
}

func (a *admission) release(n, b int64) {
	a.mu.Lock()
	a.events -= n
	a.bytes -= b
	a.batches--
	a.mu.Unlock()
}

// overloaded is the cheap check run before a request is read: is the budget already full?
func (a *admission) overloaded() (string, float64, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	reason, ratio := a.pressureLocked(0, 0)
	return reason, ratio, ratio >= 1
}

// inflight reports events and bytes awaiting commit.
func (a *admission) inflight() (int64, int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.events, a.bytes
}

// observeCommit folds one commit time into the moving average (weight 1/5).
func (a *admission) observeCommit(d time.Duration) {
	for {
		old := a.latency.Load()
		next := old + (int64(d)-old)/5
		if old == 0 {
			next = int64(d)
		}
		if a.latency.CompareAndSwap(old, next) {
			return
		}
	}
}

// delay is the RetryInfo delay for a refusal at ratio: the base delay scaled by how far
// over the limit the collector is and by how long the overload has lasted (log2 of the
// refusals in this episode), capped at retryMax. Agents add jitter.
func (a *admission) delay(ratio float64, now time.Time) time.Duration {
	a.episodeMu.Lock()
	if now.Sub(a.lastRefusal) > episodeGap {
		a.episode = 0
	}
	a.episode++
	a.lastRefusal = now
	ep := a.episode
	a.episodeMu.Unlock()
	f := max(ratio, 1) * (1 + math.Log2(float64(ep)))
	d := time.Duration(float64(a.retryBase) * f)
	return min(max(d, a.retryBase), a.retryMax)
}

// throttled builds the RESOURCE_EXHAUSTED status with RetryInfo.
func throttled(reason string, delay time.Duration, detail string) error {
	msg := fmt.Sprintf("collector is throttling (%s): %s; retry in %s", reason, detail, delay.Round(time.Millisecond))
	st, err := status.New(codes.ResourceExhausted, msg).WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(delay)})
	if err != nil {
		return status.Error(codes.ResourceExhausted, msg)
	}
	return st.Err()
}

// agentLimiters holds one token bucket per agent.
type agentLimiters struct {
	limit rate.Limit
	burst int

	mu     sync.Mutex
	m      map[string]*agentLimiter
	swept  time.Time
	maxIdl time.Duration
}

type agentLimiter struct {
	lim  *rate.Limiter
	last time.Time
}

func newAgentLimiters(perSecond float64, burst int) *agentLimiters {
	if perSecond <= 0 {
		return nil
	}
	return &agentLimiters{limit: rate.Limit(perSecond), burst: burst, m: map[string]*agentLimiter{}, maxIdl: 10 * time.Minute}
}

// reserve takes n events' worth of tokens from the agent's bucket. When the bucket cannot
// cover them now it takes nothing and returns how long until it can; otherwise it returns
// the reservation, which the caller cancels if the batch is refused for another reason.
// A batch above the burst is charged the burst (Validate keeps the burst at or above the
// batch limit, so this happens only if an operator lowers it under agents' batch size).
func (l *agentLimiters) reserve(agent string, n int, now time.Time) (*rate.Reservation, time.Duration) {
	if l == nil || n <= 0 {
		return nil, 0
	}
	l.mu.Lock()
	e, ok := l.m[agent]
	if !ok {
		e = &agentLimiter{lim: rate.NewLimiter(l.limit, l.burst)}
		l.m[agent] = e
	}
	e.last = now
	if now.Sub(l.swept) > l.maxIdl {
		// A bucket idle for longer than it takes to refill is full again: dropping it and
		// starting a new full one is the same thing, and bounds the map by active agents.
		for id, x := range l.m {
			if now.Sub(x.last) > l.maxIdl {
				delete(l.m, id)
			}
		}
		l.swept = now
	}
	l.mu.Unlock()
	r := e.lim.ReserveN(now, min(n, l.burst))
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return nil, d
	}
	return r, 0
}

// size reports how many agents have a bucket.
func (l *agentLimiters) size() int {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}
