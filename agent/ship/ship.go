// Package ship moves events from the agent's spool to the collector: wait for data, send a
// batch with Export, acknowledge what the collector says it stored, repeat. It never drops
// anything: every failure puts the batch back in the spool and retries with backoff for as
// long as the agent runs; the spool's own bound is the only thing that ever loses events.
package ship

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"

	"github.com/ward-dlp/ward/agent/identity"
	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
)

// Source is what the shipper needs from the spool (implemented by *spool.Spool).
type Source interface {
	Wait(ctx context.Context) error
	Next(max, maxBytes int) ([]*wardv1.Event, error)
	Ack(ranges []*wardv1.SeqRange) error
	Requeue(events []*wardv1.Event)
}

// Defaults for Config.
const (
	DefaultBatchEvents = 500
	DefaultBatchBytes  = 1 << 20
	DefaultCallTimeout = 30 * time.Second
	DefaultMinBackoff  = 200 * time.Millisecond
	DefaultMaxBackoff  = 30 * time.Second
	// Longest RetryInfo delay honoured, so a misconfigured collector cannot park agents.
	maxThrottle = 5 * time.Minute
)

// Config configures a Shipper.
type Config struct {
	Spool Source
	// Identity supplies the collector address, TLS credentials and agent_id, and has its
	// certificate renewed by Run. Required unless Addr and Creds are both set.
	Identity *identity.Identity
	// Addr overrides Identity.Collector().
	Addr string
	// Fallbacks are further collector replicas (host:port) sharing the first one's store
	// and CA (docs/operations.md, "Scale-out"). The connection uses the first address that
	// answers, in order, and moves to the next when it fails; a batch in flight when a
	// collector dies is resent to the next one, which deduplicates it.
	Fallbacks []string
	// Creds overrides Identity.TransportCredentials().
	Creds credentials.TransportCredentials
	// BatchEvents and BatchBytes bound one Export (payload bytes; the collector's gRPC
	// receive limit, 4 MiB by default, must stay above BatchBytes).
	BatchEvents int
	BatchBytes  int
	// CallTimeout is the deadline of one Export.
	CallTimeout time.Duration
	// MinBackoff and MaxBackoff bound the retry delay (exponential ×2, full jitter).
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// DisableRenewal stops Run from also running Identity.RunRenewal on its connection.
	DisableRenewal bool
	Logger         *slog.Logger
	// DialOptions are appended to the shipper's own (tests).
	DialOptions []grpc.DialOption
	// Companions run for as long as Run does, on the shipper's connection, so other
	// agent↔collector exchanges (policy polling) share its mTLS channel.
	Companions []func(ctx context.Context, client wardv1.AgentServiceClient)
}

// Stats are the shipper's counters.
type Stats struct {
	Sent      uint64 // events sent in Export calls, including resends
	Acked     uint64 // events of sent batches the collector acknowledged
	Rejected  uint64 // events the collector refused as malformed (and acked)
	Retries   uint64 // failed Export attempts
	Throttled uint64 // of those, pushed back by the collector with a RetryInfo delay
	LastError string
	LastErrAt time.Time
	LastAckAt time.Time
	// Connected is true after a successful Export and false after a failed one.
	Connected bool
}

// Shipper sends spooled events to the collector. Use New, then Run.
type Shipper struct {
	cfg  Config
	log  *slog.Logger
	addr string
	cred credentials.TransportCredentials

	mu    sync.Mutex
	stats Stats
}

// New validates cfg and fills in defaults.
func New(cfg Config) (*Shipper, error) {
	if cfg.Spool == nil {
		return nil, errors.New("ship: no spool")
	}
	s := &Shipper{cfg: cfg, addr: cfg.Addr, cred: cfg.Creds}
	if s.addr == "" && cfg.Identity != nil {
		s.addr = cfg.Identity.Collector()
	}
	if s.cred == nil && cfg.Identity != nil {
		s.cred = cfg.Identity.TransportCredentials()
	}
	if s.addr == "" || s.cred == nil {
		return nil, errors.New("ship: need an identity, or an address and credentials")
	}
	if s.cfg.BatchEvents <= 0 {
		s.cfg.BatchEvents = DefaultBatchEvents
	}
	if s.cfg.BatchBytes <= 0 {
		s.cfg.BatchBytes = DefaultBatchBytes
	}
	if s.cfg.CallTimeout <= 0 {
		s.cfg.CallTimeout = DefaultCallTimeout
	}
	if s.cfg.MinBackoff <= 0 {
		s.cfg.MinBackoff = DefaultMinBackoff
	}
	if s.cfg.MaxBackoff <= 0 {
		s.cfg.MaxBackoff = DefaultMaxBackoff
	}
	if s.cfg.Logger == nil {
		s.cfg.Logger = slog.Default()
	}
	s.log = s.cfg.Logger.With("component", "ship", "collector", s.addr)
	return s, nil
}

// Stats returns a snapshot of the counters.
func (s *Shipper) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Run ships until ctx ends (returning ctx.Err()) or the spool is closed. It retries every
// failure forever; events leave the spool only when the collector acknowledged them.
func (s *Shipper) Run(ctx context.Context) error {
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(s.cred),
		// Pings only while an Export is in flight, to notice a dead path faster than the
		// call deadline; collectors should permit this (EnforcementPolicy.MinTime <= 60 s).
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 60 * time.Second, Timeout: 20 * time.Second}),
		// gRPC's default reconnect backoff grows to 120 s; after an outage we want the
		// collector back within our own MaxBackoff.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: s.cfg.MinBackoff, Multiplier: 1.6, Jitter: 0.2, MaxDelay: s.cfg.MaxBackoff},
			MinConnectTimeout: 10 * time.Second,
		}),
	}
	target := s.addr
	if len(s.cfg.Fallbacks) > 0 {
		// A static resolver lists every replica; pick_first (gRPC's default policy) uses
		// them in order and reconnects to the next one when the current one goes away.
		r := manual.NewBuilderWithScheme("ward-collectors")
		var addrs []resolver.Address
		for _, a := range append([]string{s.addr}, s.cfg.Fallbacks...) {
			addrs = append(addrs, resolver.Address{Addr: a})
		}
		r.InitialState(resolver.State{Addresses: addrs})
		opts = append(opts, grpc.WithResolvers(r))
		target = r.Scheme() + ":///collectors"
	}
	conn, err := grpc.NewClient(target, append(opts, s.cfg.DialOptions...)...)
	if err != nil {
		return fmt.Errorf("ship: connect %s: %w", s.addr, err)
	}
	defer conn.Close()
	client := wardv1.NewAgentServiceClient(conn)

	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if s.cfg.Identity != nil && !s.cfg.DisableRenewal {
		wg.Go(func() { _ = s.cfg.Identity.RunRenewal(ctx, client) })
	}
	for _, c := range s.cfg.Companions {
		wg.Go(func() { c(ctx, client) })
	}

	attempt := 0
	unauthEpisode := false
	for {
		if err := s.cfg.Spool.Wait(ctx); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("ship: spool: %w", err)
		}
		batch, err := s.cfg.Spool.Next(s.cfg.BatchEvents, s.cfg.BatchBytes)
		if err != nil {
			return fmt.Errorf("ship: spool: %w", err)
		}
		if len(batch) == 0 {
			continue
		}
		s.stamp(batch)
		_, err = s.export(ctx, client, batch)
		// Whatever the collector did not acknowledge goes back to the queue (acked
		// events are unaffected by Requeue).
		s.cfg.Spool.Requeue(batch)
		if err == nil {
			attempt = 0
			if unauthEpisode {
				s.log.Info("collector accepts this agent's certificate again")
				unauthEpisode = false
			}
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		delay := s.backoff(attempt)
		attempt++
		code := status.Code(err)
		switch code {
		case codes.Unauthenticated, codes.PermissionDenied:
			if !unauthEpisode {
				s.log.Error("collector no longer accepts this agent's certificate; re-enrol (ward-agent enroll). Events stay spooled.",
					"code", code.String(), "err", err)
				unauthEpisode = true
			}
		case codes.ResourceExhausted:
			// The collector is pushing back (OTLP convention: RESOURCE_EXHAUSTED with
			// google.rpc.RetryInfo). Its delay is a floor; jitter on top keeps a crowd of
			// agents told the same delay from returning in the same instant. Without
			// RetryInfo, the ordinary backoff applies. The batch stays spooled either way.
			if d, ok := retryDelay(err); ok {
				delay = throttleJitter(d)
				s.mu.Lock()
				s.stats.Throttled++
				s.mu.Unlock()
			}
			s.log.Warn("collector is throttling; backing off", "retry_in", delay, "err", err)
		default:
			s.log.Warn("export failed; will retry", "retry_in", delay, "code", code.String(), "err", err)
		}
		if err := sleep(ctx, delay); err != nil {
			return err
		}
	}
}

// stamp sets the current agent_id on events spooled under an earlier enrolment, so a
// re-enrolled agent can still deliver them (the collector requires agent_id == cert CN).
func (s *Shipper) stamp(batch []*wardv1.Event) {
	if s.cfg.Identity == nil {
		return
	}
	id := s.cfg.Identity.AgentID()
	for _, ev := range batch {
		if ev.AgentId != id {
			ev.AgentId = id
		}
	}
}

// errNothingAcked turns a successful call that acknowledged nothing into a retry with
// backoff instead of a hot resend loop.
var errNothingAcked = errors.New("collector acknowledged none of the batch")

// export sends one batch and acks what the collector stored. It returns the number of
// batch events acknowledged.
func (s *Shipper) export(ctx context.Context, client wardv1.AgentServiceClient, batch []*wardv1.Event) (int, error) {
	cctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
	defer cancel()
	s.mu.Lock()
	s.stats.Sent += uint64(len(batch))
	s.mu.Unlock()
	resp, err := client.Export(cctx, &wardv1.ExportRequest{Events: batch})
	if err != nil {
		s.failed(err)
		return 0, err
	}
	if err := s.cfg.Spool.Ack(resp.GetAcked()); err != nil {
		// The collector has the events; at worst they are resent and deduplicated.
		s.log.Error("cannot record acknowledgement in spool", "err", err)
	}
	n := covered(batch, resp.GetAcked())
	if resp.GetRejected() > 0 {
		s.log.Warn("collector rejected malformed events", "rejected", resp.GetRejected(), "reason", resp.GetErrorMessage())
	}
	if n == 0 {
		err := fmt.Errorf("%w (%d events): %s", errNothingAcked, len(batch), resp.GetErrorMessage())
		s.failed(err)
		return 0, err
	}
	s.mu.Lock()
	s.stats.Acked += uint64(n)
	s.stats.Rejected += uint64(resp.GetRejected())
	s.stats.Connected = true
	s.stats.LastAckAt = time.Now()
	s.mu.Unlock()
	return n, nil
}

func (s *Shipper) failed(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.Retries++
	s.stats.LastError = err.Error()
	s.stats.LastErrAt = time.Now()
	s.stats.Connected = false
}

// covered counts batch events inside the acked ranges.
func covered(batch []*wardv1.Event, acked []*wardv1.SeqRange) int {
	n := 0
	for _, ev := range batch {
		for _, r := range acked {
			if ev.GetSeq() >= r.GetFirst() && ev.GetSeq() <= r.GetLast() {
				n++
				break
			}
		}
	}
	return n
}

// backoff is "full jitter": uniform in [0, min(max, min·2^attempt)], at least 1 ms.
func (s *Shipper) backoff(attempt int) time.Duration {
	ceil := s.cfg.MinBackoff
	for range min(attempt, 30) {
		ceil *= 2
		if ceil >= s.cfg.MaxBackoff {
			ceil = s.cfg.MaxBackoff
			break
		}
	}
	return time.Millisecond + rand.N(ceil)
}

// retryDelay extracts google.rpc.RetryInfo from a status, as OTLP servers send it.
func retryDelay(err error) (time.Duration, bool) {
	st, ok := status.FromError(err)
	if !ok {
		return 0, false
	}
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			return min(max(ri.GetRetryDelay().AsDuration(), 0), maxThrottle), true
		}
	}
	return 0, false
}

// throttleJitter adds up to 20% (at least 1 ms) to a collector-given delay: never earlier
// than asked, spread out after.
func throttleJitter(d time.Duration) time.Duration {
	return d + rand.N(max(d/5, time.Millisecond))
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
