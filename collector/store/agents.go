package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Errors about enrolment tokens. They are distinct so an operator reading the agent's log
// learns what to do (make a new token, or stop reusing one).
var (
	ErrTokenUnknown = errors.New("enrolment token is not known to this collector")
	ErrTokenUsed    = errors.New("enrolment token has already been used")
	ErrTokenExpired = errors.New("enrolment token has expired")
	ErrAgentUnknown = errors.New("agent is not enrolled")
)

// Agent is one enrolled agent.
type Agent struct {
	ID         string     `json:"id"`
	Hostname   string     `json:"hostname"`
	MachineID  string     `json:"machine_id"`
	Version    string     `json:"version"`
	EnrolledAt time.Time  `json:"enrolled_at"`
	LastSeen   *time.Time `json:"last_seen,omitempty"`
	Revoked    bool       `json:"revoked"`
	RevokedAt  *time.Time `json:"revoked_at,omitempty"`
	// LastHealthAt is when the agent's last Health event (its heartbeat) arrived.
	LastHealthAt *time.Time `json:"last_health_at,omitempty"`
	// SilentSince is set while an "agent silent" alert is open for the agent.
	SilentSince *time.Time `json:"silent_since,omitempty"`
}

// AddToken records the SHA-256 hash of a new enrolment token.
func (s *Store) AddToken(ctx context.Context, hash []byte, createdAt, expiresAt time.Time) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO enroll_tokens(hash, created_at, expires_at) VALUES (?, ?, ?)`,
			hash, createdAt.UnixNano(), expiresAt.UnixNano())
		return err
	})
	if err != nil {
		return fmt.Errorf("store: add enrolment token: %w", err)
	}
	return nil
}

// EnrollAgent consumes the token with the given hash and records agent, in one transaction.
// issue runs inside the transaction after the token has been claimed; if it fails, nothing is
// committed and the token stays usable. This is what makes a token strictly single-use even
// when two agents race with it: only one transaction can mark it used.
func (s *Store) EnrollAgent(ctx context.Context, tokenHash []byte, now time.Time, agent Agent, issue func() error) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		var expires int64
		var usedAt sql.NullInt64
		err := tx.QueryRowContext(ctx, `SELECT expires_at, used_at FROM enroll_tokens WHERE hash = ?`, tokenHash).
			Scan(&expires, &usedAt)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return ErrTokenUnknown
		case err != nil:
			return fmt.Errorf("look up token: %w", err)
		case usedAt.Valid:
			return ErrTokenUsed
		case now.UnixNano() >= expires:
			return ErrTokenExpired
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO agents(id, hostname, machine_id, version, enrolled_at) VALUES (?, ?, ?, ?, ?)`,
			agent.ID, agent.Hostname, agent.MachineID, agent.Version, now.UnixNano()); err != nil {
			return fmt.Errorf("insert agent: %w", err)
		}
		res, err := tx.ExecContext(ctx, `UPDATE enroll_tokens SET used_at = ?, used_by = ? WHERE hash = ? AND used_at IS NULL`,
			now.UnixNano(), agent.ID, tokenHash)
		if err != nil {
			return fmt.Errorf("consume token: %w", err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return ErrTokenUsed
		}
		return issue()
	})
	if err != nil {
		return fmt.Errorf("store: enrol agent: %w", err)
	}
	return nil
}

// Agent returns one agent.
func (s *Store) Agent(ctx context.Context, id string) (Agent, error) {
	// Prepared once: ingest looks the agent up on every call (revocation check).
	st, err := s.prepared(ctx, agentSelect+` WHERE id = ?`)
	if err != nil {
		return Agent{}, fmt.Errorf("store: agent %q: %w", id, err)
	}
	a, err := scanAgent(st.QueryRowContext(ctx, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Agent{}, fmt.Errorf("store: agent %q: %w", id, ErrAgentUnknown)
	}
	if err != nil {
		return Agent{}, fmt.Errorf("store: agent %q: %w", id, err)
	}
	return a, nil
}

// Agents lists every agent, oldest enrolment first.
func (s *Store) Agents(ctx context.Context) ([]Agent, error) {
	rows, err := s.db.QueryContext(ctx, agentSelect+` ORDER BY enrolled_at, id`)
	if err != nil {
		return nil, fmt.Errorf("store: list agents: %w", err)
	}
	defer rows.Close()
	var out []Agent
	for rows.Next() {
		a, err := scanAgent(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list agents: %w", err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list agents: %w", err)
	}
	return out, nil
}

// RevokeAgent marks an agent revoked; its certificate is refused from the next call on.
// Revoking a revoked agent is a no-op.
func (s *Store) RevokeAgent(ctx context.Context, id string, now time.Time) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE agents SET revoked = 1, revoked_at = COALESCE(revoked_at, ?) WHERE id = ?`,
			now.UnixNano(), id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrAgentUnknown
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: revoke agent %q: %w", id, err)
	}
	return nil
}

// TouchAgent records that the agent called in.
func (s *Store) TouchAgent(ctx context.Context, id string, now time.Time) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE agents SET last_seen = MAX(COALESCE(last_seen, 0), ?) WHERE id = ?`, now.UnixNano(), id)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: touch agent %q: %w", id, err)
	}
	return nil
}

const agentSelect = `SELECT id, hostname, machine_id, version, enrolled_at, last_seen, revoked, revoked_at,
	last_health_at, silent_since FROM agents`

type scanner interface{ Scan(dest ...any) error }

func scanAgent(r scanner) (Agent, error) {
	var a Agent
	var enrolled int64
	var lastSeen, revokedAt, lastHealth, silentSince sql.NullInt64
	if err := r.Scan(&a.ID, &a.Hostname, &a.MachineID, &a.Version, &enrolled, &lastSeen, &a.Revoked, &revokedAt,
		&lastHealth, &silentSince); err != nil {
		return Agent{}, err
	}
	a.LastHealthAt = nullTime(lastHealth)
	a.SilentSince = nullTime(silentSince)
	a.EnrolledAt = time.Unix(0, enrolled).UTC()
	a.LastSeen = nullTime(lastSeen)
	a.RevokedAt = nullTime(revokedAt)
	return a, nil
}

func nullTime(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := time.Unix(0, v.Int64).UTC()
	return &t
}
