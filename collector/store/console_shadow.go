package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// AppUsage is one application's traffic in a period, from the flows the agents named.
type AppUsage struct {
	App       string    `json:"app"`
	AppName   string    `json:"app_name"`
	Category  string    `json:"category"`
	Flows     int64     `json:"flows"`
	Users     int64     `json:"users"`
	Hosts     int64     `json:"hosts"`
	BytesUp   int64     `json:"bytes_up"`
	BytesDown int64     `json:"bytes_down"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	// FirstSeenEver is the app's first flow in the whole store: an app whose FirstSeenEver is
	// inside the period is new in it.
	FirstSeenEver time.Time `json:"first_seen_ever"`
	// Blocked counts flows the agent denied.
	Blocked int64 `json:"blocked"`
}

// AppUsageInPeriod aggregates named flows in [from, to) per app, most bytes up first.
// Unnamed flows are summarised by UnnamedFlows.
func (s *Store) AppUsageInPeriod(ctx context.Context, from, to time.Time) ([]AppUsage, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT f.app, MAX(f.app_name), MAX(f.category), COUNT(*), COUNT(DISTINCT f.user_key),
		COUNT(DISTINCT f.agent_id), SUM(f.bytes_up), SUM(f.bytes_down), MIN(f.time), MAX(f.time),
		(SELECT MIN(g.time) FROM event_facts g WHERE g.kind = 'flow' AND g.app = f.app),
		SUM(CASE WHEN f.action = 3 THEN 1 ELSE 0 END)
		FROM event_facts f WHERE f.kind = 'flow' AND f.app != '' AND f.time >= ? AND f.time < ?
		GROUP BY f.app ORDER BY SUM(f.bytes_up) DESC, f.app`, from.UnixNano(), to.UnixNano())
	if err != nil {
		return nil, fmt.Errorf("store: app usage: %w", err)
	}
	defer rows.Close()
	out := []AppUsage{}
	for rows.Next() {
		var u AppUsage
		var first, last, ever int64
		if err := rows.Scan(&u.App, &u.AppName, &u.Category, &u.Flows, &u.Users, &u.Hosts, &u.BytesUp, &u.BytesDown,
			&first, &last, &ever, &u.Blocked); err != nil {
			return nil, fmt.Errorf("store: app usage: %w", err)
		}
		u.FirstSeen, u.LastSeen, u.FirstSeenEver = unixOrZero(first), unixOrZero(last), unixOrZero(ever)
		out = append(out, u)
	}
	return out, rows.Err()
}

// UnnamedFlows counts flows in [from, to) that no catalog app named, and their bytes up.
func (s *Store) UnnamedFlows(ctx context.Context, from, to time.Time) (flows, bytesUp int64, err error) {
	err = s.db.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(bytes_up), 0) FROM event_facts
		WHERE kind = 'flow' AND app = '' AND time >= ? AND time < ?`, from.UnixNano(), to.UnixNano()).Scan(&flows, &bytesUp)
	if err != nil {
		return 0, 0, fmt.Errorf("store: unnamed flows: %w", err)
	}
	return flows, bytesUp, nil
}

// AppPrincipal is one user on one host using an app. User is read from the payload of
// SampleRowID (the index keeps only a keyed pseudonym).
type AppPrincipal struct {
	UserKey     string    `json:"-"`
	SampleRowID int64     `json:"-"`
	User        string    `json:"user"`
	Host        string    `json:"host"`
	Flows       int64     `json:"flows"`
	BytesUp     int64     `json:"bytes_up"`
	BytesDown   int64     `json:"bytes_down"`
	LastSeen    time.Time `json:"last_seen"`
}

// AppPrincipals lists who used app in [from, to) from where, most bytes up first.
func (s *Store) AppPrincipals(ctx context.Context, app string, from, to time.Time) ([]AppPrincipal, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT user_key, MAX(rowid), host, COUNT(*), SUM(bytes_up), SUM(bytes_down), MAX(time) FROM event_facts
		WHERE kind = 'flow' AND app = ? AND time >= ? AND time < ? GROUP BY user_key, host ORDER BY SUM(bytes_up) DESC, host LIMIT 1000`,
		app, from.UnixNano(), to.UnixNano())
	if err != nil {
		return nil, fmt.Errorf("store: app principals: %w", err)
	}
	defer rows.Close()
	out := []AppPrincipal{}
	for rows.Next() {
		var p AppPrincipal
		var last int64
		if err := rows.Scan(&p.UserKey, &p.SampleRowID, &p.Host, &p.Flows, &p.BytesUp, &p.BytesDown, &last); err != nil {
			return nil, err
		}
		p.LastSeen = unixOrZero(last)
		out = append(out, p)
	}
	return out, rows.Err()
}

// DailyUsage is one app's traffic on one UTC day.
type DailyUsage struct {
	App       string `json:"app"`
	Day       string `json:"day"` // YYYY-MM-DD, UTC
	Flows     int64  `json:"flows"`
	Users     int64  `json:"users"`
	BytesUp   int64  `json:"bytes_up"`
	BytesDown int64  `json:"bytes_down"`
}

// AppDailyUsage aggregates named flows in [from, to) per app and UTC day; app "" means all
// apps together under the app name "".
func (s *Store) AppDailyUsage(ctx context.Context, app string, from, to time.Time) ([]DailyUsage, error) {
	q := `SELECT f.app, date(f.time / 1000000000, 'unixepoch'), COUNT(*), COUNT(DISTINCT f.user_key), SUM(f.bytes_up), SUM(f.bytes_down)
		FROM event_facts f WHERE f.kind = 'flow' AND f.app != '' AND f.time >= ? AND f.time < ?`
	args := []any{from.UnixNano(), to.UnixNano()}
	if app != "" {
		q += ` AND f.app = ?`
		args = append(args, app)
	}
	q += ` GROUP BY 1, 2 ORDER BY 2, 1`
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("store: daily usage: %w", err)
	}
	defer rows.Close()
	out := []DailyUsage{}
	for rows.Next() {
		var d DailyUsage
		if err := rows.Scan(&d.App, &d.Day, &d.Flows, &d.Users, &d.BytesUp, &d.BytesDown); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// AppSanction is the organisation's decision about one app, as made in the console.
type AppSanction struct {
	AppID     string    `json:"app"`
	Status    string    `json:"status"`
	ChangedAt time.Time `json:"changed_at"`
	ChangedBy string    `json:"changed_by"`
}

// AppSanctions returns every recorded decision by app id.
func (s *Store) AppSanctions(ctx context.Context) (map[string]AppSanction, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT app_id, status, changed_at, changed_by FROM app_sanctions`)
	if err != nil {
		return nil, fmt.Errorf("store: app sanctions: %w", err)
	}
	defer rows.Close()
	out := map[string]AppSanction{}
	for rows.Next() {
		var a AppSanction
		var at int64
		if err := rows.Scan(&a.AppID, &a.Status, &at, &a.ChangedBy); err != nil {
			return nil, err
		}
		a.ChangedAt = unixOrZero(at)
		out[a.AppID] = a
	}
	return out, rows.Err()
}

// SetAppSanction records a decision and returns the previous status ("" when none). after
// runs inside the transaction with every decision as it now stands, so a file derived from
// them (the organisation's sanctioning file) is written only if the decision commits and
// the decision commits only if the file was written.
func (s *Store) SetAppSanction(ctx context.Context, a AppSanction, after func(map[string]AppSanction) error) (string, error) {
	var prev string
	err := s.write(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `SELECT status FROM app_sanctions WHERE app_id = ?`, a.AppID).Scan(&prev)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO app_sanctions(app_id, status, changed_at, changed_by) VALUES (?, ?, ?, ?)
			ON CONFLICT(app_id) DO UPDATE SET status = excluded.status, changed_at = excluded.changed_at, changed_by = excluded.changed_by`,
			a.AppID, a.Status, a.ChangedAt.UnixNano(), a.ChangedBy); err != nil {
			return err
		}
		if after == nil {
			return nil
		}
		rows, err := tx.QueryContext(ctx, `SELECT app_id, status, changed_at, changed_by FROM app_sanctions`)
		if err != nil {
			return err
		}
		all := map[string]AppSanction{}
		for rows.Next() {
			var x AppSanction
			var at int64
			if err := rows.Scan(&x.AppID, &x.Status, &at, &x.ChangedBy); err != nil {
				rows.Close()
				return err
			}
			x.ChangedAt = unixOrZero(at)
			all[x.AppID] = x
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		return after(all)
	})
	if err != nil {
		return "", fmt.Errorf("store: set sanction of %q: %w", a.AppID, err)
	}
	return prev, nil
}

// AgentHealthRows returns the rowid of each agent's newest Health event.
func (s *Store) AgentHealthRows(ctx context.Context) (map[string]int64, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT agent_id, event_rowid FROM agent_health`)
	if err != nil {
		return nil, fmt.Errorf("store: agent health: %w", err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var id string
		var r int64
		if err := rows.Scan(&id, &r); err != nil {
			return nil, err
		}
		out[id] = r
	}
	return out, rows.Err()
}
