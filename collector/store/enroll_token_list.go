package store

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Errors about listing and revoking enrolment tokens.
var (
	ErrTokenNotFound = errors.New("no such enrolment token")
	ErrTokenSpent    = errors.New("the enrolment token was already used")
)

// EnrollToken is an enrolment token as the fleet view lists it: never the token, only an id
// made from the first 16 hex digits of its SHA-256 (the stored hash), which identifies it
// without helping anyone guess it.
type EnrollToken struct {
	ID        string     `json:"id"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt time.Time  `json:"expires_at"`
	UsedAt    *time.Time `json:"used_at,omitempty"`
	UsedBy    string     `json:"used_by,omitempty"`
	// UsesLeft is 1 for a token that can still enrol an agent (tokens are single use).
	UsesLeft int    `json:"uses_left"`
	State    string `json:"state"` // active | used | expired
}

// tokenIDLen is the length of a token id in hex digits.
const tokenIDLen = 16

// EnrollTokens lists the newest limit tokens, newest first.
func (s *Store) EnrollTokens(ctx context.Context, now time.Time, limit int) ([]EnrollToken, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT hash, created_at, expires_at, used_at, used_by FROM enroll_tokens
		ORDER BY created_at DESC LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("store: list enrolment tokens: %w", err)
	}
	defer rows.Close()
	out := []EnrollToken{}
	for rows.Next() {
		var hash []byte
		var created, expires int64
		var usedAt sql.NullInt64
		var usedBy sql.NullString
		if err := rows.Scan(&hash, &created, &expires, &usedAt, &usedBy); err != nil {
			return nil, fmt.Errorf("store: list enrolment tokens: %w", err)
		}
		t := EnrollToken{ID: tokenID(hash), CreatedAt: time.Unix(0, created).UTC(), ExpiresAt: time.Unix(0, expires).UTC(), UsedBy: usedBy.String}
		switch {
		case usedAt.Valid:
			u := time.Unix(0, usedAt.Int64).UTC()
			t.UsedAt, t.State = &u, "used"
		case !now.Before(t.ExpiresAt):
			t.State = "expired"
		default:
			t.State, t.UsesLeft = "active", 1
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

func tokenID(hash []byte) string {
	h := hex.EncodeToString(hash)
	if len(h) > tokenIDLen {
		h = h[:tokenIDLen]
	}
	return h
}

// RevokeEnrollToken deletes the unused token with id, so it can no longer enrol an agent
// (enrolment then fails as for an unknown token). The audit log keeps the record. A used
// token cannot be revoked: revoke the agent it enrolled instead.
func (s *Store) RevokeEnrollToken(ctx context.Context, id string) error {
	id = strings.ToLower(id)
	if len(id) != tokenIDLen {
		return fmt.Errorf("store: revoke enrolment token %q: %w", id, ErrTokenNotFound)
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT hash, used_at FROM enroll_tokens`)
		if err != nil {
			return err
		}
		var match []byte
		var used bool
		for rows.Next() {
			var h []byte
			var usedAt sql.NullInt64
			if err := rows.Scan(&h, &usedAt); err != nil {
				rows.Close()
				return err
			}
			if tokenID(h) == id {
				match, used = h, usedAt.Valid
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		switch {
		case match == nil:
			return ErrTokenNotFound
		case used:
			return ErrTokenSpent
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM enroll_tokens WHERE hash = ? AND used_at IS NULL`, match)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: revoke enrolment token %s: %w", id, err)
	}
	return nil
}
