package store

import "context"

// AgentStatus is an agent with what it last reported about its policy: the row both the
// console's fleet view and the admin API's agent list (wardctl agents) start from, so the
// two cannot disagree about an agent.
type AgentStatus struct {
	Agent
	// Policy is nil until the agent has reported a policy version.
	Policy *AgentPolicy `json:"policy,omitempty"`
}

// AgentStatuses lists every agent, as Agents orders them, with its last policy report.
func (s *Store) AgentStatuses(ctx context.Context) ([]AgentStatus, error) {
	agents, err := s.Agents(ctx)
	if err != nil {
		return nil, err // already says which query failed
	}
	pols, err := s.AgentPolicies(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]AgentStatus, 0, len(agents))
	for _, a := range agents {
		v := AgentStatus{Agent: a}
		if p, ok := pols[a.ID]; ok {
			v.Policy = &p
		}
		out = append(out, v)
	}
	return out, nil
}
