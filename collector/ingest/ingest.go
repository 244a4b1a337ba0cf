// Package ingest serves ward.v1.AgentService: enrolment, certificate renewal and event export,
// over one TLS 1.3 listener with client certificates.
//
// Authentication is layered: the TLS handshake verifies any presented client certificate
// against the collector CA (so a foreign certificate never reaches an RPC handler), and the
// RPC layer then requires such a certificate, for a known and unrevoked agent, on every call
// except Enroll. Failures of the second layer are UNAUTHENTICATED, which agents take as
// "enrol again".
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/collector/enroll"
	"github.com/ward-dlp/ward/collector/store"
)

// Limits bounds what one agent can make the collector do per call.
type Limits struct {
	// MaxBatchEvents is the most events one Export may carry (default 1000).
	MaxBatchEvents int
	// MaxMessageBytes is the largest request the server decodes (default 4 MiB); larger ones
	// fail with RESOURCE_EXHAUSTED before any decoding.
	MaxMessageBytes int
	// MaxEventBytes is the largest single encoded event (default 256 KiB); larger events are
	// rejected (and acknowledged) individually.
	MaxEventBytes int

	// MaxInflightEvents and MaxInflightBytes bound, over all agents, what has been accepted
	// but not yet committed (defaults 50,000 events and 64 MiB). A batch that does not fit
	// is pushed back with RESOURCE_EXHAUSTED and RetryInfo.
	MaxInflightEvents int
	MaxInflightBytes  int64
	// CommitLatencyThreshold pushes back while the moving average of commit times is above
	// it (default 2 s; negative disables).
	CommitLatencyThreshold time.Duration
	// OutboxDepthThreshold pushes back while the sink outbox holds more deliveries than
	// this (0 disables: a SIEM outage then grows the outbox, which retention caps).
	OutboxDepthThreshold int64
	// AgentEventsPerSecond and AgentBurst are each agent's token bucket (defaults 2000/s and
	// the larger of 10 s of rate and MaxBatchEvents; a negative rate disables the limit).
	AgentEventsPerSecond float64
	AgentBurst           int
	// RetryBase and RetryMax bound the RetryInfo delay (defaults 1 s and 30 s).
	RetryBase time.Duration
	RetryMax  time.Duration
}

func (l *Limits) defaults() {
	if l.MaxBatchEvents <= 0 {
		l.MaxBatchEvents = 1000
	}
	if l.MaxMessageBytes <= 0 {
		l.MaxMessageBytes = 4 << 20
	}
	if l.MaxEventBytes <= 0 {
		l.MaxEventBytes = 256 << 10
	}
	if l.MaxInflightEvents <= 0 {
		l.MaxInflightEvents = 50_000
	}
	if l.MaxInflightBytes <= 0 {
		l.MaxInflightBytes = 64 << 20
	}
	if l.CommitLatencyThreshold == 0 {
		l.CommitLatencyThreshold = 2 * time.Second
	}
	if l.AgentEventsPerSecond == 0 {
		l.AgentEventsPerSecond = 2000
	}
	if l.AgentBurst <= 0 {
		l.AgentBurst = max(int(10*l.AgentEventsPerSecond), l.MaxBatchEvents)
	}
	if l.RetryBase <= 0 {
		l.RetryBase = time.Second
	}
	if l.RetryMax <= 0 {
		l.RetryMax = 30 * time.Second
	}
	l.RetryMax = max(l.RetryMax, l.RetryBase)
}

// Service implements wardv1.AgentServiceServer.
type Service struct {
	wardv1.UnimplementedAgentServiceServer
	enr    *enroll.Enroller
	store  *store.Store
	log    *slog.Logger
	limits Limits
	now    func() time.Time

	adm      *admission
	limiters *agentLimiters
	metrics  *Metrics
	// sanctioning returns the signed sanctioning overlay for a group's agents (nil: none).
	sanctioning func(ctx context.Context, group string) ([]byte, error)

	// contacts are agents heard from without a store write (pushed back), flushed to
	// agents.last_seen by RunBackground so throttled agents do not look silent.
	contactMu sync.Mutex
	contacts  map[string]time.Time

	// revokedSeen throttles AGENT_REVOKED_CONTACT alerts in memory (the store throttles
	// them too, across restarts and replicas).
	revokedMu   sync.Mutex
	revokedSeen map[string]time.Time
}

// Option configures a Service.
type Option func(*Service)

// WithMetrics makes the service report to m.
func WithMetrics(m *Metrics) Option { return func(s *Service) { s.metrics = m } }

// WithSanctioning makes FetchPolicy hand agents the sanctioning overlay f returns for their
// group (collector/policy.Sanctioner.OverlayFor).
func WithSanctioning(f func(ctx context.Context, group string) ([]byte, error)) Option {
	return func(s *Service) { s.sanctioning = f }
}

// revokedAlertEvery is the least time between two AGENT_REVOKED_CONTACT alerts per agent.
const revokedAlertEvery = time.Hour

// New builds the service.
func New(enr *enroll.Enroller, st *store.Store, limits Limits, log *slog.Logger, opts ...Option) *Service {
	limits.defaults()
	s := &Service{enr: enr, store: st, log: log, limits: limits, now: time.Now,
		adm: &admission{
			maxEvents: int64(limits.MaxInflightEvents), maxBytes: limits.MaxInflightBytes,
			latencyThreshold: limits.CommitLatencyThreshold, outboxThreshold: limits.OutboxDepthThreshold,
			retryBase: limits.RetryBase, retryMax: limits.RetryMax,
		},
		limiters:    newAgentLimiters(limits.AgentEventsPerSecond, limits.AgentBurst),
		contacts:    map[string]time.Time{},
		revokedSeen: map[string]time.Time{},
	}
	for _, o := range opts {
		o(s)
	}
	if s.metrics == nil {
		s.metrics, _ = NewMetrics(nil) // a private registry cannot collide
	}
	return s
}

// NewGRPCServer returns a gRPC server with the service registered, TLS from the enroller's CA,
// and limits for hostile clients: bounded message size and concurrent streams, a handshake
// deadline, and keepalive enforcement (clients pinging more often than every 20 s are
// disconnected; idle connections are closed after 30 min).
func (s *Service) NewGRPCServer() *grpc.Server {
	srv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(s.enr.Authority().ServerTLSConfig())),
		grpc.MaxRecvMsgSize(s.limits.MaxMessageBytes),
		grpc.MaxSendMsgSize(1<<20),
		grpc.MaxConcurrentStreams(32),
		grpc.MaxHeaderListSize(16<<10),
		grpc.ConnectionTimeout(10*time.Second),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             20 * time.Second,
			PermitWithoutStream: true,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: 30 * time.Minute,
			Time:              2 * time.Minute,
			Timeout:           20 * time.Second,
		}),
		// Before a request is even read: when the in-flight budget is already full, push
		// back without decoding up to MaxMessageBytes of it.
		grpc.InTapHandle(s.tap),
		grpc.ChainUnaryInterceptor(s.recoverUnary, s.authUnary),
		grpc.ChainStreamInterceptor(refuseStreams),
	)
	wardv1.RegisterAgentServiceServer(srv, s)
	return srv
}

type agentKey struct{}

// agentFrom returns the authenticated agent id put in ctx by authUnary.
func agentFrom(ctx context.Context) string {
	id, _ := ctx.Value(agentKey{}).(string)
	return id
}

// authUnary requires a verified client certificate of a known, unrevoked agent on every
// method except Enroll.
func (s *Service) authUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if info.FullMethod == wardv1.AgentService_Enroll_FullMethodName {
		return handler(ctx, req)
	}
	id, err := s.authenticate(ctx)
	if err != nil {
		s.log.Warn("refused unauthenticated call", "method", info.FullMethod, "peer", peerAddr(ctx), "err", err)
		return nil, status.Error(codes.Unauthenticated, err.Error()+"; enrol again")
	}
	return handler(context.WithValue(ctx, agentKey{}, id), req)
}

func (s *Service) authenticate(ctx context.Context) (string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", errors.New("no peer information")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return "", errors.New("connection is not TLS")
	}
	// VerifiedChains is set only when the handshake verified the certificate against our CA.
	if len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return "", errors.New("no client certificate")
	}
	id, err := enroll.AgentIDFromCert(ti.State.VerifiedChains[0][0])
	if err != nil {
		return "", err
	}
	a, err := s.store.Agent(ctx, id)
	if errors.Is(err, store.ErrAgentUnknown) {
		return "", fmt.Errorf("agent %s is not enrolled", id)
	}
	if err != nil {
		return "", fmt.Errorf("look up agent %s: %w", id, err)
	}
	if a.Revoked {
		s.revokedContact(ctx, id)
		return "", fmt.Errorf("agent %s has been revoked", id)
	}
	return id, nil
}

// revokedContact raises AGENT_REVOKED_CONTACT for a revoked agent's certificate presented
// again (a decommissioned or stolen machine still running the agent), at most once per
// revokedAlertEvery per agent.
func (s *Service) revokedContact(ctx context.Context, id string) {
	now := s.now()
	s.revokedMu.Lock()
	last, ok := s.revokedSeen[id]
	if ok && now.Sub(last) < revokedAlertEvery {
		s.revokedMu.Unlock()
		return
	}
	s.revokedSeen[id] = now
	s.revokedMu.Unlock()
	ev, err := s.store.RaiseFleetAlert(ctx, store.FleetCheck{
		Kind: wardv1.FleetAlert_KIND_AGENT_REVOKED_CONTACT, AgentID: id, Now: now, Throttle: revokedAlertEvery,
	})
	if err != nil {
		s.log.Error("raising revoked-agent alert failed", "agent_id", id, "err", err)
		return
	}
	if ev != nil {
		s.log.Warn("a revoked agent called in; alert raised", "agent_id", id, "hostname", ev.GetHost().GetHostname(), "peer", peerAddr(ctx))
	}
}

// recoverUnary turns a panic in a handler into INTERNAL for that call instead of a crash.
func (s *Service) recoverUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("panic in handler", "method", info.FullMethod, "panic", r, "stack", string(debug.Stack()))
			err = status.Error(codes.Internal, "internal error")
		}
	}()
	return handler(ctx, req)
}

func refuseStreams(any, grpc.ServerStream, *grpc.StreamServerInfo, grpc.StreamHandler) error {
	return status.Error(codes.Unimplemented, "no streaming methods")
}

// Enroll implements AgentService.Enroll.
func (s *Service) Enroll(ctx context.Context, req *wardv1.EnrollRequest) (*wardv1.EnrollResponse, error) {
	id, err := s.enr.Enroll(ctx, enroll.Request{
		Token:        req.GetToken(),
		CSRDER:       req.GetCsrDer(),
		Hostname:     req.GetHostname(),
		MachineID:    req.GetMachineId(),
		AgentVersion: req.GetAgentVersion(),
	})
	if err != nil {
		s.log.Warn("enrolment refused", "peer", peerAddr(ctx), "hostname", req.GetHostname(), "err", err)
		switch {
		case errors.Is(err, enroll.ErrBadCSR):
			return nil, status.Error(codes.InvalidArgument, err.Error())
		case errors.Is(err, enroll.ErrTokenUnknown), errors.Is(err, enroll.ErrTokenUsed), errors.Is(err, enroll.ErrTokenExpired):
			// Not UNAUTHENTICATED: that code tells an agent to enrol again, which cannot help.
			return nil, status.Error(codes.PermissionDenied, err.Error()+"; ask the administrator for a new token (wardctl token create)")
		default:
			return nil, storeStatus(ctx, err)
		}
	}
	return &wardv1.EnrollResponse{
		AgentId:          id.AgentID,
		CertificateDer:   id.CertificateDER,
		CaCertificateDer: id.CADER,
		FingerprintKey:   id.FingerprintKey,
	}, nil
}

// RenewCertificate implements AgentService.RenewCertificate.
func (s *Service) RenewCertificate(ctx context.Context, req *wardv1.RenewCertificateRequest) (*wardv1.RenewCertificateResponse, error) {
	agentID := agentFrom(ctx)
	der, err := s.enr.Renew(ctx, agentID, req.GetCsrDer())
	switch {
	case errors.Is(err, enroll.ErrBadCSR):
		return nil, status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, enroll.ErrRevoked), errors.Is(err, store.ErrAgentUnknown):
		return nil, status.Error(codes.Unauthenticated, err.Error())
	case err != nil:
		return nil, storeStatus(ctx, err)
	}
	return &wardv1.RenewCertificateResponse{CertificateDer: der}, nil
}

// Export implements AgentService.Export: validate, store in one transaction, then acknowledge.
func (s *Service) Export(ctx context.Context, req *wardv1.ExportRequest) (*wardv1.ExportResponse, error) {
	agentID := agentFrom(ctx)
	events := req.GetEvents()
	m := s.metrics
	if len(events) > s.limits.MaxBatchEvents {
		m.refused("too_large", len(events))
		return nil, status.Errorf(codes.InvalidArgument, "batch of %d events exceeds the limit of %d; send smaller batches", len(events), s.limits.MaxBatchEvents)
	}
	// Impersonation check first, over the whole batch: nothing of a batch that claims another
	// agent's identity is stored.
	for _, ev := range events {
		if ev.GetAgentId() != agentID {
			s.log.Warn("agent sent events labelled with another agent id; batch refused",
				"agent_id", agentID, "claimed_agent_id", bound(ev.GetAgentId(), 64), "seq", ev.GetSeq(), "peer", peerAddr(ctx))
			m.refused("impersonation", len(events))
			return nil, status.Errorf(codes.PermissionDenied, "event seq %d is labelled agent_id %q but the certificate is for %s",
				ev.GetSeq(), bound(ev.GetAgentId(), 64), agentID)
		}
	}

	recs := make([]store.Record, 0, len(events))
	acked := make([]uint64, 0, len(events))
	var rejected uint32
	var firstReason string
	for _, ev := range events {
		rec, err := s.validate(ev)
		if err != nil {
			rejected++
			if firstReason == "" {
				firstReason = fmt.Sprintf("seq %d: %v", ev.GetSeq(), err)
			}
			// Malformed events are acknowledged so the agent does not resend them forever;
			// one without a usable seq cannot be, and is only counted.
			if validSeq(ev.GetSeq()) {
				acked = append(acked, ev.GetSeq())
			}
			continue
		}
		recs = append(recs, rec)
		acked = append(acked, rec.Seq)
	}

	if len(recs) > 0 {
		// Per-agent rate first (its delay is exact: when the bucket covers the batch), then
		// the collector-wide budget. A batch pushed back is not stored in part: the agent
		// resends all of it after the delay, and what was stored before is deduplicated.
		now := s.now()
		r, wait := s.limiters.reserve(agentID, len(recs), now)
		if wait > 0 {
			return nil, s.pushBack(agentID, reasonRateLimit, max(wait, 50*time.Millisecond), len(events), now,
				fmt.Sprintf("agent over its rate of %.0f events/s", s.limits.AgentEventsPerSecond))
		}
		size := int64(proto.Size(req))
		ok, reason, ratio := s.adm.acquire(int64(len(recs)), size)
		if !ok {
			if r != nil {
				r.CancelAt(now)
			}
			return nil, s.pushBack(agentID, reason, s.adm.delay(ratio, now), len(events), now,
				fmt.Sprintf("load at %.0f%% of the limit", 100*ratio))
		}
		m.setInflight(s.adm.inflight())
		defer func() {
			s.adm.release(int64(len(recs)), size)
			m.setInflight(s.adm.inflight())
		}()
	}

	var res store.InsertResult
	var err error
	if len(recs) > 0 {
		start := time.Now()
		res, err = s.store.InsertEvents(ctx, agentID, recs, s.now())
		d := time.Since(start)
		s.adm.observeCommit(d)
		m.commit.Observe(d.Seconds())
	} else {
		err = s.store.TouchAgent(ctx, agentID, s.now())
	}
	if err != nil {
		s.log.Error("storing batch failed", "agent_id", agentID, "events", len(recs), "err", err)
		m.batches.WithLabelValues(outcomeFailed).Inc()
		m.events.WithLabelValues(outcomeFailed).Add(float64(len(events)))
		m.rejected.WithLabelValues("store_unavailable").Inc()
		return nil, storeStatus(ctx, err)
	}
	m.batches.WithLabelValues("ok").Inc()
	m.events.WithLabelValues(outcomeStored).Add(float64(res.Inserted))
	m.events.WithLabelValues(outcomeDuplicate).Add(float64(res.Duplicates))
	m.events.WithLabelValues(outcomeMalformed).Add(float64(rejected))

	resp := &wardv1.ExportResponse{Rejected: rejected}
	for _, r := range store.CoalesceSeqs(acked) {
		resp.Acked = append(resp.Acked, &wardv1.SeqRange{First: r.First, Last: r.Last})
	}
	if rejected > 0 {
		resp.ErrorMessage = fmt.Sprintf("%d of %d events rejected as malformed; first: %s", rejected, len(events), firstReason)
		s.log.Warn("rejected malformed events", "agent_id", agentID, "rejected", rejected, "first", firstReason)
	}
	s.log.Debug("export", "agent_id", agentID, "events", len(events), "inserted", res.Inserted, "duplicates", res.Duplicates, "rejected", rejected)
	return resp, nil
}

// validate checks one event and derives its stored record.
func (s *Service) validate(ev *wardv1.Event) (store.Record, error) {
	if !validSeq(ev.GetSeq()) {
		return store.Record{}, fmt.Errorf("seq must be between 1 and 2^63-1")
	}
	if _, err := uuid.Parse(ev.GetId()); err != nil || len(ev.GetId()) != 36 {
		return store.Record{}, fmt.Errorf("id %q is not a UUID", bound(ev.GetId(), 64))
	}
	if ev.GetPayload() == nil {
		return store.Record{}, errors.New("no payload")
	}
	if ev.GetTime() == nil {
		return store.Record{}, errors.New("no time")
	}
	if err := ev.GetTime().CheckValid(); err != nil {
		return store.Record{}, fmt.Errorf("time: %w", err)
	}
	if n := proto.Size(ev); n > s.limits.MaxEventBytes {
		return store.Record{}, fmt.Errorf("%d bytes exceeds the %d-byte event limit", n, s.limits.MaxEventBytes)
	}
	return store.RecordFromEvent(ev)
}

func validSeq(seq uint64) bool { return seq != 0 && seq <= 1<<63-1 }

// storeStatus maps internal failures: a cancelled call keeps its code, anything else is
// UNAVAILABLE so the agent keeps the batch in its spool and retries.
func storeStatus(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	return status.Error(codes.Unavailable, "collector storage unavailable, retry later")
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

func bound(s string, n int) string {
	if len(s) > n {
		s = s[:n] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}
