package store

import (
	"context"
	"database/sql"
	"fmt"
)

// SetConsoleUserRole changes the role of a single-sign-on account, whose role follows the
// identity provider's claims at every sign-in. Local accounts change role with
// ResetConsoleUser, which also ends their sessions.
func (s *Store) SetConsoleUserRole(ctx context.Context, id int64, role string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE console_users SET role = ? WHERE id = ? AND oidc_subject != ''`, role, id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return fmt.Errorf("no single-sign-on account %d", id)
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM console_sessions WHERE user_id = ?`, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: set role of console user %d: %w", id, err)
	}
	return nil
}
