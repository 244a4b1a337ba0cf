package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Errors about policy bundles.
var (
	ErrNoPolicy        = errors.New("no policy bundle has been pushed for this group")
	ErrPolicyNotNewer  = errors.New("policy version is not newer than the current one for its group")
	ErrPolicyDuplicate = errors.New("this policy version was already pushed for its group")
)

// PolicyBundle is a signed bundle as pushed, with the envelope fields the collector files it
// under. The collector does not hold the signing keys' trust: agents verify signatures.
type PolicyBundle struct {
	TargetGroup string    `json:"target_group"`
	Version     uint64    `json:"version"`
	Name        string    `json:"name"`
	SHA256      string    `json:"sha256"`
	NotBefore   time.Time `json:"not_before"`
	ExpiresAt   time.Time `json:"expires_at"`
	PushedAt    time.Time `json:"pushed_at"`
	PushedBy    int64     `json:"pushed_by_uid"`
	SignedNote  []byte    `json:"-"`
	Payload     []byte    `json:"-"`
}

// AgentPolicy is what an agent last reported about its policy.
type AgentPolicy struct {
	TargetGroup     string    `json:"target_group"`
	Version         uint64    `json:"version"`
	SHA256          string    `json:"sha256,omitempty"`
	LastError       string    `json:"last_error,omitempty"`
	RejectedVersion uint64    `json:"rejected_version,omitempty"`
	ReportedAt      time.Time `json:"reported_at"`
}

// AddPolicyBundle stores a bundle as the newest for its group. Versions only go up: a push
// at or below the group's newest version is refused, so the collector never offers agents
// something they would reject as a downgrade.
func (s *Store) AddPolicyBundle(ctx context.Context, b PolicyBundle) error {
	if b.Version == 0 || b.Version > 1<<63-1 {
		return fmt.Errorf("store: add policy bundle: version %d out of range", b.Version)
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		var latest sql.NullInt64
		if err := tx.QueryRowContext(ctx, `SELECT MAX(version) FROM policy_bundles WHERE target_group = ?`, b.TargetGroup).Scan(&latest); err != nil {
			return fmt.Errorf("read newest version: %w", err)
		}
		if latest.Valid && uint64(latest.Int64) == b.Version {
			return fmt.Errorf("%w (%s v%d)", ErrPolicyDuplicate, b.TargetGroup, b.Version)
		}
		if latest.Valid && uint64(latest.Int64) > b.Version {
			return fmt.Errorf("%w: group %s is at v%d, pushed v%d", ErrPolicyNotNewer, b.TargetGroup, latest.Int64, b.Version)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO policy_bundles(target_group, version, name, sha256, signed_note, payload, not_before, expires_at, pushed_at, pushed_by)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			b.TargetGroup, int64(b.Version), b.Name, b.SHA256, b.SignedNote, b.Payload,
			b.NotBefore.UnixNano(), b.ExpiresAt.UnixNano(), b.PushedAt.UnixNano(), b.PushedBy)
		if err != nil {
			return fmt.Errorf("insert: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: add policy bundle: %w", err)
	}
	return nil
}

const bundleCols = `target_group, version, name, sha256, not_before, expires_at, pushed_at, pushed_by`

func scanBundle(r scanner, withBody bool) (PolicyBundle, error) {
	var b PolicyBundle
	var v, nb, exp, at int64
	dest := []any{&b.TargetGroup, &v, &b.Name, &b.SHA256, &nb, &exp, &at, &b.PushedBy}
	if withBody {
		dest = append(dest, &b.SignedNote, &b.Payload)
	}
	if err := r.Scan(dest...); err != nil {
		return PolicyBundle{}, err
	}
	b.Version = uint64(v)
	b.NotBefore, b.ExpiresAt, b.PushedAt = time.Unix(0, nb).UTC(), time.Unix(0, exp).UTC(), time.Unix(0, at).UTC()
	return b, nil
}

// LatestPolicyBundle returns the newest bundle for a group, with its note and payload.
func (s *Store) LatestPolicyBundle(ctx context.Context, group string) (PolicyBundle, error) {
	row := s.db.QueryRowContext(ctx, `SELECT `+bundleCols+`, signed_note, payload FROM policy_bundles
		WHERE target_group = ? ORDER BY version DESC LIMIT 1`, group)
	b, err := scanBundle(row, true)
	if errors.Is(err, sql.ErrNoRows) {
		return PolicyBundle{}, ErrNoPolicy
	}
	if err != nil {
		return PolicyBundle{}, fmt.Errorf("store: latest policy for %q: %w", group, err)
	}
	return b, nil
}

// PolicyBundles lists every pushed bundle (without bodies), newest first per group.
func (s *Store) PolicyBundles(ctx context.Context) ([]PolicyBundle, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+bundleCols+` FROM policy_bundles ORDER BY target_group, version DESC`)
	if err != nil {
		return nil, fmt.Errorf("store: list policy bundles: %w", err)
	}
	defer rows.Close()
	var out []PolicyBundle
	for rows.Next() {
		b, err := scanBundle(rows, false)
		if err != nil {
			return nil, fmt.Errorf("store: list policy bundles: %w", err)
		}
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list policy bundles: %w", err)
	}
	return out, nil
}

// RecordAgentPolicy stores what an agent reports about its policy on each poll.
func (s *Store) RecordAgentPolicy(ctx context.Context, agentID string, p AgentPolicy) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO agent_policy(agent_id, target_group, version, sha256, last_error, rejected_version, reported_at)
			VALUES (?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT(agent_id) DO UPDATE SET target_group = excluded.target_group, version = excluded.version,
				sha256 = excluded.sha256, last_error = excluded.last_error, rejected_version = excluded.rejected_version,
				reported_at = excluded.reported_at`,
			agentID, p.TargetGroup, int64(min(p.Version, 1<<63-1)), p.SHA256, p.LastError, int64(min(p.RejectedVersion, 1<<63-1)), p.ReportedAt.UnixNano())
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE agents SET last_seen = ? WHERE id = ?`, p.ReportedAt.UnixNano(), agentID)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: record policy of agent %q: %w", agentID, err)
	}
	return nil
}

// AgentPolicies returns every agent's last policy report, by agent id.
func (s *Store) AgentPolicies(ctx context.Context) (map[string]AgentPolicy, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT agent_id, target_group, version, sha256, last_error, rejected_version, reported_at FROM agent_policy`)
	if err != nil {
		return nil, fmt.Errorf("store: agent policies: %w", err)
	}
	defer rows.Close()
	out := map[string]AgentPolicy{}
	for rows.Next() {
		var id string
		var p AgentPolicy
		var v, rv, at int64
		if err := rows.Scan(&id, &p.TargetGroup, &v, &p.SHA256, &p.LastError, &rv, &at); err != nil {
			return nil, fmt.Errorf("store: agent policies: %w", err)
		}
		p.Version, p.RejectedVersion, p.ReportedAt = uint64(v), uint64(rv), time.Unix(0, at).UTC()
		out[id] = p
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: agent policies: %w", err)
	}
	return out, nil
}
