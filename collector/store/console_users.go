package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Errors about console accounts and sessions.
var (
	ErrUserExists   = errors.New("a console user with that name already exists")
	ErrUserUnknown  = errors.New("no such console user")
	ErrNoSession    = errors.New("no such console session")
	ErrTOTPReplayed = errors.New("this TOTP code was already used")
)

// ConsoleUser is one console account. Secrets are stored only in derived form: the
// password as an argon2id hash, the TOTP secret sealed with the console key.
type ConsoleUser struct {
	ID                int64
	Username          string
	Role              string
	PasswordHash      string
	MustChange        bool
	TOTPSecret        []byte
	TOTPEnabled       bool
	TOTPLastStep      int64
	FailedLogins      int
	LockedUntil       time.Time
	Disabled          bool
	OIDCSubject       string
	CreatedAt         time.Time
	PasswordChangedAt time.Time
	LastLoginAt       time.Time
}

const userSelect = `SELECT id, username, role, password_hash, must_change, totp_secret, totp_enabled, totp_last_step,
	failed_logins, locked_until, disabled, oidc_subject, created_at, password_changed_at, last_login_at FROM console_users`

func scanUser(r scanner) (ConsoleUser, error) {
	var u ConsoleUser
	var locked, created, changed, last int64
	if err := r.Scan(&u.ID, &u.Username, &u.Role, &u.PasswordHash, &u.MustChange, &u.TOTPSecret, &u.TOTPEnabled,
		&u.TOTPLastStep, &u.FailedLogins, &locked, &u.Disabled, &u.OIDCSubject, &created, &changed, &last); err != nil {
		return ConsoleUser{}, err
	}
	u.LockedUntil = unixOrZero(locked)
	u.CreatedAt = unixOrZero(created)
	u.PasswordChangedAt = unixOrZero(changed)
	u.LastLoginAt = unixOrZero(last)
	return u, nil
}

func unixOrZero(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}

func zeroOrUnix(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// CreateConsoleUser adds an account and returns its id.
func (s *Store) CreateConsoleUser(ctx context.Context, u ConsoleUser, now time.Time) (int64, error) {
	var id int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		// RETURNING rather than LastInsertId: PostgreSQL's driver has no last insert id.
		err := tx.QueryRowContext(ctx, `INSERT INTO console_users(username, role, password_hash, must_change, oidc_subject,
			created_at, password_changed_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id`,
			u.Username, u.Role, u.PasswordHash, u.MustChange, u.OIDCSubject, now.UnixNano(), now.UnixNano()).Scan(&id)
		if err != nil {
			// SQLite says "UNIQUE constraint failed", PostgreSQL "duplicate key value".
			if strings.Contains(err.Error(), "UNIQUE") || strings.Contains(err.Error(), "duplicate key") {
				return ErrUserExists
			}
			return err
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("store: create console user %q: %w", u.Username, err)
	}
	return id, nil
}

// ConsoleUserByName returns the account called name.
func (s *Store) ConsoleUserByName(ctx context.Context, name string) (ConsoleUser, error) {
	return s.oneUser(ctx, `WHERE username = ?`, name)
}

// ConsoleUserByID returns the account with id.
func (s *Store) ConsoleUserByID(ctx context.Context, id int64) (ConsoleUser, error) {
	return s.oneUser(ctx, `WHERE id = ?`, id)
}

// ConsoleUserByOIDC returns the single-sign-on account for an issuer|subject pair.
func (s *Store) ConsoleUserByOIDC(ctx context.Context, subject string) (ConsoleUser, error) {
	return s.oneUser(ctx, `WHERE oidc_subject = ? AND oidc_subject != ''`, subject)
}

func (s *Store) oneUser(ctx context.Context, where string, arg any) (ConsoleUser, error) {
	u, err := scanUser(s.db.QueryRowContext(ctx, userSelect+" "+where, arg))
	if errors.Is(err, sql.ErrNoRows) {
		return ConsoleUser{}, fmt.Errorf("store: console user %v: %w", arg, ErrUserUnknown)
	}
	if err != nil {
		return ConsoleUser{}, fmt.Errorf("store: console user %v: %w", arg, err)
	}
	return u, nil
}

// ConsoleUsers lists every account by name.
func (s *Store) ConsoleUsers(ctx context.Context) ([]ConsoleUser, error) {
	rows, err := s.db.QueryContext(ctx, userSelect+` ORDER BY username`)
	if err != nil {
		return nil, fmt.Errorf("store: list console users: %w", err)
	}
	defer rows.Close()
	var out []ConsoleUser
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list console users: %w", err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list console users: %w", err)
	}
	return out, nil
}

// ResetConsoleUser gives the account a new password hash (and role, when role is not empty),
// clears its TOTP enrolment, recovery codes, failure count and lock, enables it, and ends
// every session it has: the next login enrols a new authenticator.
func (s *Store) ResetConsoleUser(ctx context.Context, name, passwordHash, role string, now time.Time) (ConsoleUser, error) {
	err := s.write(ctx, func(tx *sql.Tx) error {
		var id int64
		if err := tx.QueryRowContext(ctx, `SELECT id FROM console_users WHERE username = ?`, name).Scan(&id); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return ErrUserUnknown
			}
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE console_users SET password_hash = ?, must_change = 1, totp_secret = NULL,
			totp_enabled = 0, totp_last_step = 0, failed_logins = 0, locked_until = 0, disabled = 0,
			password_changed_at = ?, role = CASE WHEN ? = '' THEN role ELSE ? END WHERE id = ?`,
			passwordHash, now.UnixNano(), role, role, id); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM console_recovery_codes WHERE user_id = ?`, id); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM console_sessions WHERE user_id = ?`, id)
		return err
	})
	if err != nil {
		return ConsoleUser{}, fmt.Errorf("store: reset console user %q: %w", name, err)
	}
	return s.ConsoleUserByName(ctx, name)
}

// SetConsoleUserDisabled disables or enables an account; disabling ends its sessions.
func (s *Store) SetConsoleUserDisabled(ctx context.Context, name string, disabled bool) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE console_users SET disabled = ? WHERE username = ?`, disabled, name)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrUserUnknown
		}
		if disabled {
			_, err = tx.ExecContext(ctx, `DELETE FROM console_sessions WHERE user_id = (SELECT id FROM console_users WHERE username = ?)`, name)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("store: disable console user %q: %w", name, err)
	}
	return nil
}

// SetConsolePassword replaces an account's password hash and clears must_change.
func (s *Store) SetConsolePassword(ctx context.Context, id int64, hash string, now time.Time) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE console_users SET password_hash = ?, must_change = 0, password_changed_at = ? WHERE id = ?`,
			hash, now.UnixNano(), id)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: set console password: %w", err)
	}
	return nil
}

// RehashConsolePassword replaces a hash with one of the current parameters, keeping the
// password and its change time.
func (s *Store) RehashConsolePassword(ctx context.Context, id int64, hash string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE console_users SET password_hash = ? WHERE id = ?`, hash, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: rehash console password: %w", err)
	}
	return nil
}

// SetPendingTOTP stores a sealed TOTP secret awaiting its first code (enrolment).
func (s *Store) SetPendingTOTP(ctx context.Context, id int64, sealed []byte) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE console_users SET totp_secret = ?, totp_enabled = 0, totp_last_step = 0 WHERE id = ? AND totp_enabled = 0`,
			sealed, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: set pending TOTP: %w", err)
	}
	return nil
}

// EnableTOTP confirms enrolment at step and replaces the recovery codes with hashes.
func (s *Store) EnableTOTP(ctx context.Context, id int64, step int64, recoveryHashes [][]byte) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE console_users SET totp_enabled = 1, totp_last_step = ? WHERE id = ? AND totp_enabled = 0 AND totp_secret IS NOT NULL`, step, id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return errors.New("no pending enrolment")
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM console_recovery_codes WHERE user_id = ?`, id); err != nil {
			return err
		}
		for _, h := range recoveryHashes {
			if _, err := tx.ExecContext(ctx, `INSERT INTO console_recovery_codes(user_id, hash) VALUES (?, ?)`, id, h); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: enable TOTP: %w", err)
	}
	return nil
}

// UseTOTPStep records that the code of step was used, refusing a step at or below the last
// accepted one: a code is good once, even within its validity window.
func (s *Store) UseTOTPStep(ctx context.Context, id, step int64) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE console_users SET totp_last_step = ? WHERE id = ? AND totp_last_step < ?`, step, id, step)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return ErrTOTPReplayed
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: use TOTP step: %w", err)
	}
	return nil
}

// UseRecoveryCode consumes the unused recovery code with hash; false when there is none.
func (s *Store) UseRecoveryCode(ctx context.Context, id int64, hash []byte, now time.Time) (bool, error) {
	var ok bool
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE console_recovery_codes SET used_at = ? WHERE user_id = ? AND hash = ? AND used_at = 0`,
			now.UnixNano(), id, hash)
		if err != nil {
			return err
		}
		n, _ := res.RowsAffected()
		ok = n == 1
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("store: use recovery code: %w", err)
	}
	return ok, nil
}

// RecoveryCodesLeft counts an account's unused recovery codes.
func (s *Store) RecoveryCodesLeft(ctx context.Context, id int64) (int, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM console_recovery_codes WHERE user_id = ? AND used_at = 0`, id).Scan(&n); err != nil {
		return 0, fmt.Errorf("store: count recovery codes: %w", err)
	}
	return n, nil
}

// RecordLoginFailure counts a failed password or second-factor attempt and locks the account
// for lockFor once it reaches maxFailures in a row. It returns the new lock time (zero when
// not locked).
func (s *Store) RecordLoginFailure(ctx context.Context, id int64, now time.Time, maxFailures int, lockFor time.Duration) (time.Time, error) {
	var locked int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		var failed int
		if err := tx.QueryRowContext(ctx, `UPDATE console_users SET failed_logins = failed_logins + 1 WHERE id = ? RETURNING failed_logins`, id).Scan(&failed); err != nil {
			return err
		}
		if failed >= maxFailures {
			locked = now.Add(lockFor).UnixNano()
			_, err := tx.ExecContext(ctx, `UPDATE console_users SET locked_until = ?, failed_logins = 0 WHERE id = ?`, locked, id)
			return err
		}
		return nil
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("store: record login failure: %w", err)
	}
	return unixOrZero(locked), nil
}

// RecordLoginSuccess clears the failure count and records the login time.
func (s *Store) RecordLoginSuccess(ctx context.Context, id int64, now time.Time) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE console_users SET failed_logins = 0, last_login_at = ? WHERE id = ?`, now.UnixNano(), id)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: record login: %w", err)
	}
	return nil
}

// ConsoleSession is a console login, in progress (stage mfa or enrol) or complete (full).
type ConsoleSession struct {
	IDHash    []byte
	UserID    int64
	Stage     string
	CSRF      string
	CreatedAt time.Time
	LastSeen  time.Time
	ExpiresAt time.Time
	Remote    string
	UserAgent string
}

// CreateConsoleSession stores a session.
func (s *Store) CreateConsoleSession(ctx context.Context, cs ConsoleSession) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO console_sessions(id_hash, user_id, stage, csrf, created_at, last_seen, expires_at, remote, user_agent)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, cs.IDHash, cs.UserID, cs.Stage, cs.CSRF, cs.CreatedAt.UnixNano(),
			cs.LastSeen.UnixNano(), cs.ExpiresAt.UnixNano(), cs.Remote, cs.UserAgent)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: create console session: %w", err)
	}
	return nil
}

// ConsoleSessionByHash returns a session by the hash of its cookie value.
func (s *Store) ConsoleSessionByHash(ctx context.Context, hash []byte) (ConsoleSession, error) {
	var cs ConsoleSession
	var created, seen, exp int64
	err := s.db.QueryRowContext(ctx, `SELECT id_hash, user_id, stage, csrf, created_at, last_seen, expires_at, remote, user_agent
		FROM console_sessions WHERE id_hash = ?`, hash).Scan(&cs.IDHash, &cs.UserID, &cs.Stage, &cs.CSRF, &created, &seen, &exp, &cs.Remote, &cs.UserAgent)
	if errors.Is(err, sql.ErrNoRows) {
		return ConsoleSession{}, ErrNoSession
	}
	if err != nil {
		return ConsoleSession{}, fmt.Errorf("store: console session: %w", err)
	}
	cs.CreatedAt, cs.LastSeen, cs.ExpiresAt = unixOrZero(created), unixOrZero(seen), unixOrZero(exp)
	return cs, nil
}

// TouchConsoleSession moves a session's idle clock.
func (s *Store) TouchConsoleSession(ctx context.Context, hash []byte, now time.Time) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE console_sessions SET last_seen = ? WHERE id_hash = ?`, now.UnixNano(), hash)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: touch console session: %w", err)
	}
	return nil
}

// DeleteConsoleSession ends a session.
func (s *Store) DeleteConsoleSession(ctx context.Context, hash []byte) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM console_sessions WHERE id_hash = ?`, hash)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: delete console session: %w", err)
	}
	return nil
}

// PurgeConsoleSessions deletes sessions past their absolute timeout or idle for longer
// than idle.
func (s *Store) PurgeConsoleSessions(ctx context.Context, now time.Time, idle time.Duration) (int64, error) {
	var n int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM console_sessions WHERE expires_at <= ? OR last_seen <= ?`,
			now.UnixNano(), now.Add(-idle).UnixNano())
		if err != nil {
			return err
		}
		n, _ = res.RowsAffected()
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("store: purge console sessions: %w", err)
	}
	return n, nil
}
