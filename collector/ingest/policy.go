package ingest

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/collector/store"
)

// FetchPolicy implements AgentService.FetchPolicy: record what the agent reports applying,
// and hand it the newest bundle of its group when that is newer. The agent verifies the
// bundle itself; the collector is not trusted with what agents enforce.
func (s *Service) FetchPolicy(ctx context.Context, req *wardv1.FetchPolicyRequest) (*wardv1.FetchPolicyResponse, error) {
	agentID := agentFrom(ctx)
	group := req.GetTargetGroup()
	if !validGroup(group) {
		return nil, status.Errorf(codes.InvalidArgument, "target_group %q: use 1-64 of a-z, 0-9, '-', '_' and '.'", bound(group, 64))
	}
	rep := store.AgentPolicy{
		TargetGroup: group, Version: req.GetCurrentVersion(), SHA256: bound(req.GetCurrentSha256(), 64),
		LastError: bound(req.GetLastError(), 512), RejectedVersion: req.GetRejectedVersion(), ReportedAt: s.now(),
	}
	if err := s.store.RecordAgentPolicy(ctx, agentID, rep); err != nil {
		s.log.Error("recording agent policy report failed", "agent_id", agentID, "err", err)
		return nil, storeStatus(ctx, err)
	}
	if rep.LastError != "" {
		s.log.Warn("agent refused a policy bundle", "agent_id", agentID, "group", group,
			"applied_version", rep.Version, "rejected_version", rep.RejectedVersion, "reason", rep.LastError)
	}
	b, err := s.store.LatestPolicyBundle(ctx, group)
	if errors.Is(err, store.ErrNoPolicy) {
		return &wardv1.FetchPolicyResponse{}, nil
	}
	if err != nil {
		s.log.Error("reading policy bundle failed", "group", group, "err", err)
		return nil, storeStatus(ctx, err)
	}
	resp := &wardv1.FetchPolicyResponse{LatestVersion: b.Version}
	// A version the agent already refused for good is not sent again on every poll; the
	// agent reports only permanent refusals (signature, hash, group, expiry, compile) there,
	// and a new push carries a new version.
	if b.Version > req.GetCurrentVersion() && b.Version != req.GetRejectedVersion() {
		resp.Bundle = &wardv1.PolicyBundle{SignedNote: b.SignedNote, Payload: b.Payload, Version: b.Version, TargetGroup: b.TargetGroup}
	}
	if s.sanctioning != nil {
		// The agent verifies the overlay against its bundle's delegation; a failure here
		// only delays sanctioning changes to the next poll.
		if o, err := s.sanctioning(ctx, group); err != nil {
			s.log.Warn("sanctioning overlay unavailable", "group", group, "err", err)
		} else {
			resp.SanctioningOverlay = o
		}
	}
	return resp, nil
}

func validGroup(g string) bool {
	if g == "" || len(g) > 64 {
		return false
	}
	for _, r := range g {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}
