// Package policy is the collector's side of policy distribution: it checks a pushed bundle
// before storing it and answers agents' polls. The collector does not need the signing
// keys' trust — agents verify signatures against the keys they pin — but it refuses bundles
// that agents would certainly reject (malformed, payload not matching its signed hash, not
// compiling, expired, not newer than what the group has), so an operator learns at push time
// rather than from a fleet of health events.
package policy

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/ward-dlp/ward/collector/store"
	"github.com/ward-dlp/ward/policy"
)

// Check validates a bundle file as `wardctl policy sign` writes it and returns it ready to
// store.
func Check(file []byte, now time.Time) (store.PolicyBundle, error) {
	n, payload, err := policy.SplitBundle(file)
	if err != nil {
		return store.PolicyBundle{}, err
	}
	env, err := policy.ParseEnvelope(n)
	if err != nil {
		return store.PolicyBundle{}, err
	}
	if err := env.CheckPayload(payload); err != nil {
		return store.PolicyBundle{}, err
	}
	p, err := policy.Load(fmt.Sprintf("%s v%d", env.Name, env.Version), payload)
	if err != nil {
		return store.PolicyBundle{}, fmt.Errorf("payload does not compile: %w", err)
	}
	if p.Name() != env.Name || p.Version() != env.Version {
		return store.PolicyBundle{}, fmt.Errorf("%w: payload says %s v%d, signature says %s v%d",
			policy.ErrPayloadLabel, p.Name(), p.Version(), env.Name, env.Version)
	}
	if !now.Before(env.ExpiresAt) {
		return store.PolicyBundle{}, fmt.Errorf("%w at %s; sign it again with a later --expires", policy.ErrExpired, env.ExpiresAt.Format(time.RFC3339))
	}
	return store.PolicyBundle{
		TargetGroup: env.TargetGroup, Version: env.Version, Name: env.Name, SHA256: env.PayloadSHA256,
		NotBefore: env.NotBefore, ExpiresAt: env.ExpiresAt, SignedNote: n, Payload: payload,
	}, nil
}

// Push checks and stores a bundle pushed by the peer with uid.
func Push(ctx context.Context, st *store.Store, file []byte, uid int64, now time.Time) (store.PolicyBundle, error) {
	b, err := Check(file, now)
	if err != nil {
		return store.PolicyBundle{}, err
	}
	b.PushedAt, b.PushedBy = now, uid
	if err := st.AddPolicyBundle(ctx, b); err != nil {
		return store.PolicyBundle{}, err
	}
	return b, nil
}

// IsRefusal reports whether err is the bundle's fault (HTTP 400/409) rather than the
// collector's.
func IsRefusal(err error) bool {
	for _, e := range []error{policy.ErrBadEnvelope, policy.ErrPayloadHash, policy.ErrPayloadLabel, policy.ErrExpired,
		store.ErrPolicyNotNewer, store.ErrPolicyDuplicate} {
		if errors.Is(err, e) {
			return true
		}
	}
	var list policy.ErrorList
	return errors.As(err, &list)
}

// Fleet summarises which agents run which version, per group, for the admin API.
type Fleet struct {
	Bundles []store.PolicyBundle `json:"bundles"`
	Groups  []GroupStatus        `json:"groups"`
}

// GroupStatus is one group's newest bundle and how many agents apply each version.
type GroupStatus struct {
	TargetGroup string `json:"target_group"`
	Latest      uint64 `json:"latest_version"`
	// Agents maps a version (as a decimal string; "0" is the built-in pack) to agent ids.
	Agents map[string][]string `json:"agents"`
	// Refusing lists agents whose last poll reported refusing a bundle.
	Refusing []string `json:"refusing,omitempty"`
}

// Status builds the fleet summary.
func Status(ctx context.Context, st *store.Store) (Fleet, error) {
	bundles, err := st.PolicyBundles(ctx)
	if err != nil {
		return Fleet{}, err
	}
	reports, err := st.AgentPolicies(ctx)
	if err != nil {
		return Fleet{}, err
	}
	groups := map[string]*GroupStatus{}
	get := func(g string) *GroupStatus {
		if groups[g] == nil {
			groups[g] = &GroupStatus{TargetGroup: g, Agents: map[string][]string{}}
		}
		return groups[g]
	}
	for _, b := range bundles {
		g := get(b.TargetGroup)
		g.Latest = max(g.Latest, b.Version)
	}
	for id, r := range reports {
		g := get(r.TargetGroup)
		v := fmt.Sprint(r.Version)
		g.Agents[v] = append(g.Agents[v], id)
		if r.LastError != "" {
			g.Refusing = append(g.Refusing, id)
		}
	}
	f := Fleet{Bundles: bundles}
	if f.Bundles == nil {
		f.Bundles = []store.PolicyBundle{}
	}
	for _, g := range groups {
		for _, ids := range g.Agents {
			sort.Strings(ids)
		}
		sort.Strings(g.Refusing)
		f.Groups = append(f.Groups, *g)
	}
	sort.Slice(f.Groups, func(i, j int) bool { return f.Groups[i].TargetGroup < f.Groups[j].TargetGroup })
	return f, nil
}
