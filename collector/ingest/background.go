package ingest

import (
	"context"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/tap"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/collector/enroll"
)

// pushBack refuses a batch for load: counted, the agent's contact recorded, and the
// RESOURCE_EXHAUSTED status with RetryInfo returned.
func (s *Service) pushBack(agentID, reason string, delay time.Duration, events int, now time.Time, detail string) error {
	m := s.metrics
	m.batches.WithLabelValues(outcomeThrottled).Inc()
	m.events.WithLabelValues(outcomeThrottled).Add(float64(events))
	m.rejected.WithLabelValues(reason).Inc()
	m.retryDelay.Observe(delay.Seconds())
	s.contact(agentID, now)
	s.log.Debug("export pushed back", "agent_id", agentID, "reason", reason, "retry_in", delay, "events", events)
	return throttled(reason, delay, detail)
}

// tap runs when a call's headers arrive, before its message is read. When the in-flight
// budget is already full it refuses Export there, so an overloaded collector does not also
// decode the requests it is going to refuse.
func (s *Service) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	if info.FullMethodName != wardv1.AgentService_Export_FullMethodName {
		return ctx, nil
	}
	reason, ratio, over := s.adm.overloaded()
	if !over {
		return ctx, nil
	}
	now := s.now()
	delay := s.adm.delay(ratio, now)
	m := s.metrics
	m.batches.WithLabelValues(outcomeThrottled).Inc()
	m.rejected.WithLabelValues(reason).Inc()
	m.retryDelay.Observe(delay.Seconds())
	// The certificate was verified against our CA by the handshake; its agent id is good
	// enough to record contact (revocation is checked on calls that get further).
	if id := peerAgentID(ctx); id != "" {
		s.contact(id, now)
	}
	return ctx, throttled(reason, delay, "load at or above the limit")
}

func peerAgentID(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return ""
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return ""
	}
	id, err := enroll.AgentIDFromCert(ti.State.VerifiedChains[0][0])
	if err != nil {
		return ""
	}
	return id
}

// contact notes that agentID called in at t without a store write.
func (s *Service) contact(agentID string, t time.Time) {
	if agentID == "" {
		return
	}
	s.contactMu.Lock()
	if len(s.contacts) < 1<<20 { // bounded even if flushing fails for a long time
		s.contacts[agentID] = t
	}
	s.contactMu.Unlock()
}

// flushContacts writes the noted contacts to agents.last_seen.
func (s *Service) flushContacts(ctx context.Context) {
	s.contactMu.Lock()
	seen := s.contacts
	s.contacts = map[string]time.Time{}
	s.contactMu.Unlock()
	if len(seen) == 0 {
		return
	}
	if err := s.store.TouchAgents(ctx, seen); err != nil {
		s.log.Warn("recording contact of pushed-back agents failed; retrying later", "agents", len(seen), "err", err)
		s.contactMu.Lock()
		for id, t := range seen {
			if cur, ok := s.contacts[id]; !ok || t.After(cur) {
				s.contacts[id] = t
			}
		}
		s.contactMu.Unlock()
	}
}

// sampleOutbox reads the outbox depth for the outbox_depth signal and the metric.
func (s *Service) sampleOutbox(ctx context.Context) {
	n, err := s.store.OutboxTotal(ctx)
	if err != nil {
		s.log.Warn("sampling outbox depth failed", "err", err)
		return
	}
	s.adm.outboxDepth.Store(n)
	s.metrics.outboxDepth.Set(float64(n))
}

// RunBackground runs the service's periodic work until ctx ends: it samples the outbox
// depth (every 5 s) and records the contact of agents that were pushed back (every 10 s,
// and once more on the way out). Run it beside the gRPC server.
func (s *Service) RunBackground(ctx context.Context) {
	s.sampleOutbox(ctx)
	sample := time.NewTicker(5 * time.Second)
	defer sample.Stop()
	flush := time.NewTicker(10 * time.Second)
	defer flush.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			s.flushContacts(fctx)
			cancel()
			return
		case <-sample.C:
			s.sampleOutbox(ctx)
			s.metrics.limitedAgents.Set(float64(s.limiters.size()))
		case <-flush.C:
			s.flushContacts(ctx)
		}
	}
}

// refused counts a batch refused as invalid.
func (m *Metrics) refused(reason string, events int) {
	m.batches.WithLabelValues(outcomeRefused).Inc()
	m.events.WithLabelValues(outcomeRefused).Add(float64(events))
	m.rejected.WithLabelValues(reason).Inc()
}

func (m *Metrics) setInflight(events, bytes int64) {
	m.inflightEvents.Set(float64(events))
	m.inflightBytes.Set(float64(bytes))
}
