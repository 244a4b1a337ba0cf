package store

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
)

// Facts are the attributes of a finding or flow that the console filters and aggregates
// on, copied out of the payload by IndexFacts. Nothing here is not already in the event.
type Facts struct {
	RowID     int64
	AgentID   string
	Kind      string
	Time      time.Time
	Severity  wardv1.Severity
	DataClass wardv1.DataClass
	Host      string
	// User is the user name (from the payload, not stored in the index); UserKey is its
	// keyed HMAC, which the index stores so that filters and distinct counts work without
	// putting names beside encrypted evidence in clear.
	User     string
	UserKey  string
	App      string
	AppName  string
	Category string
	// Action is what the agent actually did (Decision.action_taken, or the flow's action).
	Action  wardv1.Action
	Rule    string
	Consent string
	// Detection marks what the console lists as events: every finding, and flows a rule
	// acted on (denied, or named by a rule).
	Detection bool
	BytesUp   uint64
	BytesDown uint64
}

// UserKey is the keyed HMAC-SHA256 of a user name as the facts index stores it ("" for "").
func UserKey(key []byte, user string) string {
	if user == "" {
		return ""
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte("ward-facts-user-v1\x00" + user))
	return hex.EncodeToString(m.Sum(nil)[:16])
}

// FactsOf extracts the facts of a stored event; ok is false for kinds that have none. key
// keys the user pseudonym (UserKey).
func FactsOf(e StoredEvent, key []byte) (Facts, bool, error) {
	if e.Kind != KindFinding && e.Kind != KindFlow {
		return Facts{}, false, nil
	}
	ev, err := e.Event()
	if err != nil {
		return Facts{}, false, err
	}
	f := Facts{RowID: e.RowID, AgentID: e.AgentID, Kind: e.Kind, Time: e.Time, Severity: e.Severity,
		DataClass: e.DataClass, Host: e.Host}
	switch {
	case ev.GetFinding() != nil:
		f.User = ev.GetFinding().GetProcess().GetUser()
		d := ev.GetFinding().GetDecision()
		f.Action = d.GetActionTaken()
		if f.Action == wardv1.Action_ACTION_UNSPECIFIED {
			f.Action = d.GetAction()
		}
		f.Rule = d.GetRuleId()
		f.Consent = d.GetConsentId()
		f.Detection = true
	case ev.GetFlow() != nil:
		fl := ev.GetFlow()
		f.User = fl.GetProcess().GetUser()
		f.App, f.AppName, f.Category = fl.GetApp(), fl.GetAppName(), fl.GetAppCategory()
		f.Action = fl.GetAction()
		f.Rule = fl.GetRuleId()
		f.BytesUp, f.BytesDown = fl.GetBytesSent(), fl.GetBytesReceived()
		f.Detection = fl.GetDenied() || fl.GetRuleId() != "" ||
			(f.Action != wardv1.Action_ACTION_UNSPECIFIED && f.Action != wardv1.Action_ACTION_RECORD)
		if f.Detection && f.Severity == wardv1.Severity_SEVERITY_UNSPECIFIED {
			f.Severity = wardv1.Severity_SEVERITY_MEDIUM
		}
	}
	f.UserKey = UserKey(key, f.User)
	return f, true, nil
}

// FactsCursor is the rowid up to which events have been indexed.
func (s *Store) FactsCursor(ctx context.Context) (int64, error) {
	var v int64
	if err := s.db.QueryRowContext(ctx, `SELECT rowid FROM event_facts_cursor WHERE id = 1`).Scan(&v); err != nil {
		return 0, fmt.Errorf("store: facts cursor: %w", err)
	}
	return v, nil
}

// IndexFacts indexes every event above the facts cursor, in batches, and returns how many
// events it read. It is idempotent (facts are keyed by rowid and the cursor only moves
// forward), so concurrent callers do duplicate work but never corrupt the index. Callers
// that need the index complete up to now (reports) call it before querying.
func (s *Store) IndexFacts(ctx context.Context, key []byte) (int, error) {
	total := 0
	for {
		cur, err := s.FactsCursor(ctx)
		if err != nil {
			return total, err
		}
		batch, err := s.ListEvents(ctx, Filter{AfterRowID: cur, Limit: 1000})
		if err != nil {
			return total, err
		}
		if len(batch) == 0 {
			return total, nil
		}
		err = s.write(ctx, func(tx *sql.Tx) error {
			for _, e := range batch {
				if e.Kind == KindHealth {
					if _, err := tx.ExecContext(ctx, `INSERT INTO agent_health(agent_id, event_rowid, time) VALUES (?, ?, ?)
						ON CONFLICT(agent_id) DO UPDATE SET event_rowid = excluded.event_rowid, time = excluded.time
						WHERE excluded.event_rowid > agent_health.event_rowid`, e.AgentID, e.RowID, e.Time.UnixNano()); err != nil {
						return fmt.Errorf("index health rowid %d: %w", e.RowID, err)
					}
					continue
				}
				f, ok, err := FactsOf(e, key)
				if err != nil {
					// A payload that does not decode is skipped, not fatal: it was stored as
					// received and stays readable to wardctl; the console cannot filter on it.
					continue
				}
				if !ok {
					continue
				}
				if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO event_facts(rowid, agent_id, kind, time, severity, data_class,
					host, user_key, app, app_name, category, action, rule, consent, detection, bytes_up, bytes_down)
					VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
					f.RowID, f.AgentID, f.Kind, f.Time.UnixNano(), int32(f.Severity), int32(f.DataClass), f.Host, f.UserKey,
					f.App, f.AppName, f.Category, int32(f.Action), f.Rule, f.Consent, f.Detection,
					int64(min(f.BytesUp, 1<<63-1)), int64(min(f.BytesDown, 1<<63-1))); err != nil {
					return fmt.Errorf("index rowid %d: %w", f.RowID, err)
				}
			}
			last := batch[len(batch)-1].RowID
			_, err := tx.ExecContext(ctx, `UPDATE event_facts_cursor SET rowid = MAX(rowid, ?) WHERE id = 1`, last)
			return err
		})
		if err != nil {
			return total, fmt.Errorf("store: index facts: %w", err)
		}
		total += len(batch)
	}
}

// RunFactsIndexer keeps the facts index current until ctx ends: it indexes whatever is
// pending, then waits for the next commit of events (or a minute, as a backstop).
func (s *Store) RunFactsIndexer(ctx context.Context, key []byte, onError func(error)) {
	for {
		changed := s.changedCh()
		if _, err := s.IndexFacts(ctx, key); err != nil && ctx.Err() == nil && onError != nil {
			onError(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-time.After(time.Minute):
		}
	}
}

// DetectionQuery selects events for the console's list. Empty fields do not filter.
type DetectionQuery struct {
	From, To    time.Time
	MinSeverity wardv1.Severity
	DataClass   wardv1.DataClass
	Host        string
	UserKey     string // UserKey of the user name
	App         string
	Category    string
	Action      wardv1.Action
	Rule        string
	Status      string // triage status; "new" also matches events never triaged
	Kind        string
	// BeforeRowID pages backwards (newest first); AfterRowID polls for newer ones.
	BeforeRowID int64
	AfterRowID  int64
	Limit       int
}

// Detection is one row of the console's event list. User is empty: the caller reads it,
// with the path and process, from the decrypted event.
type Detection struct {
	Facts
	Status       string
	StatusReason string
}

// Triage statuses.
const (
	TriageNew           = "new"
	TriageInvestigating = "investigating"
	TriageClosed        = "closed"
)

func (q DetectionQuery) where() (string, []any) {
	w := []string{"f.detection = 1"}
	var args []any
	add := func(cond string, a ...any) { w = append(w, cond); args = append(args, a...) }
	if !q.From.IsZero() {
		add("f.time >= ?", q.From.UnixNano())
	}
	if !q.To.IsZero() {
		add("f.time < ?", q.To.UnixNano())
	}
	if q.MinSeverity > 0 {
		add("f.severity >= ?", int32(q.MinSeverity))
	}
	if q.DataClass > 0 {
		add("f.data_class = ?", int32(q.DataClass))
	}
	for _, c := range []struct{ col, v string }{{"f.host", q.Host}, {"f.user_key", q.UserKey}, {"f.app", q.App},
		{"f.category", q.Category}, {"f.rule", q.Rule}, {"f.kind", q.Kind}} {
		if c.v != "" {
			add(c.col+" = ?", c.v)
		}
	}
	if q.Action > 0 {
		add("f.action = ?", int32(q.Action))
	}
	switch q.Status {
	case "":
	case TriageNew:
		w = append(w, "(t.status IS NULL OR t.status = 'new')")
	default:
		add("t.status = ?", q.Status)
	}
	if q.BeforeRowID > 0 {
		add("f.rowid < ?", q.BeforeRowID)
	}
	if q.AfterRowID > 0 {
		add("f.rowid > ?", q.AfterRowID)
	}
	return strings.Join(w, " AND "), args
}

// Detections lists events for the console, newest first.
func (s *Store) Detections(ctx context.Context, q DetectionQuery) ([]Detection, error) {
	where, args := q.where()
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultLimit
	}
	limit = min(limit, MaxLimit)
	rows, err := s.db.QueryContext(ctx, `SELECT f.rowid, f.agent_id, f.kind, f.time, f.severity, f.data_class, f.host, f.user_key,
		f.app, f.app_name, f.category, f.action, f.rule, f.consent, f.detection, f.bytes_up, f.bytes_down,
		COALESCE(t.status, 'new'), COALESCE(t.reason, '')
		FROM event_facts f LEFT JOIN event_triage t ON t.event_rowid = f.rowid
		WHERE `+where+` ORDER BY f.rowid DESC LIMIT ?`, append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("store: list detections: %w", err)
	}
	defer rows.Close()
	var out []Detection
	for rows.Next() {
		d, err := scanDetection(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list detections: %w", err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list detections: %w", err)
	}
	return out, nil
}

func scanDetection(r scanner) (Detection, error) {
	var d Detection
	var t, up, down int64
	var sev, class, action int32
	if err := r.Scan(&d.RowID, &d.AgentID, &d.Kind, &t, &sev, &class, &d.Host, &d.UserKey, &d.App, &d.AppName, &d.Category,
		&action, &d.Rule, &d.Consent, &d.Detection, &up, &down, &d.Status, &d.StatusReason); err != nil {
		return Detection{}, err
	}
	d.Time = time.Unix(0, t).UTC()
	d.Severity, d.DataClass, d.Action = wardv1.Severity(sev), wardv1.DataClass(class), wardv1.Action(action)
	d.BytesUp, d.BytesDown = uint64(up), uint64(down)
	return d, nil
}

// Detection returns one listed event by rowid, or ErrNoEvent.
func (s *Store) Detection(ctx context.Context, rowid int64) (Detection, error) {
	row := s.db.QueryRowContext(ctx, `SELECT f.rowid, f.agent_id, f.kind, f.time, f.severity, f.data_class, f.host, f.user_key,
		f.app, f.app_name, f.category, f.action, f.rule, f.consent, f.detection, f.bytes_up, f.bytes_down,
		COALESCE(t.status, 'new'), COALESCE(t.reason, '')
		FROM event_facts f LEFT JOIN event_triage t ON t.event_rowid = f.rowid
		WHERE f.rowid = ?`, rowid)
	d, err := scanDetection(row)
	if errors.Is(err, sql.ErrNoRows) {
		return Detection{}, ErrNoEvent
	}
	if err != nil {
		return Detection{}, fmt.Errorf("store: detection %d: %w", rowid, err)
	}
	return d, nil
}

// ErrNoEvent is returned for a rowid that holds no (indexed) event.
var ErrNoEvent = errors.New("no such event")

// EventByRowID returns one stored event.
func (s *Store) EventByRowID(ctx context.Context, rowid int64) (StoredEvent, error) {
	evs, err := s.ListEvents(ctx, Filter{AfterRowID: rowid - 1, Limit: 1})
	if err != nil {
		return StoredEvent{}, err
	}
	if len(evs) == 0 || evs[0].RowID != rowid {
		return StoredEvent{}, ErrNoEvent
	}
	return evs[0], nil
}

// ProcessExec returns the newest exec event of pid on agent at or before t, or ErrNoEvent.
func (s *Store) ProcessExec(ctx context.Context, agentID string, pid uint32, t time.Time) (StoredEvent, error) {
	var rowid int64
	err := s.db.QueryRowContext(ctx, `SELECT rowid FROM events WHERE kind = 'process' AND agent_id = ? AND pid = ? AND time <= ?
		ORDER BY time DESC LIMIT 1`, agentID, int64(pid), t.UnixNano()).Scan(&rowid)
	if errors.Is(err, sql.ErrNoRows) {
		return StoredEvent{}, ErrNoEvent
	}
	if err != nil {
		return StoredEvent{}, fmt.Errorf("store: process exec: %w", err)
	}
	return s.EventByRowID(ctx, rowid)
}

// FactValues lists the distinct values of a facts column among detections (for filter
// pickers), at most limit of them.
func (s *Store) FactValues(ctx context.Context, column string, limit int) ([]string, error) {
	if !slices.Contains([]string{"host", "app", "category", "rule"}, column) {
		return nil, fmt.Errorf("store: fact column %q is not listable", column)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT DISTINCT `+column+` FROM event_facts WHERE detection = 1 AND `+column+` != '' ORDER BY 1 LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("store: fact values: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// Triage is an event's triage state.
type Triage struct {
	Status    string    `json:"status"`
	Reason    string    `json:"reason,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
	UpdatedBy string    `json:"updated_by"`
}

// TriageNote is an analyst's note on an event.
type TriageNote struct {
	ID        int64     `json:"id"`
	Author    string    `json:"author"`
	Body      string    `json:"body"`
	CreatedAt time.Time `json:"created_at"`
}

// EventTriage returns an event's triage state; never-triaged events are "new".
func (s *Store) EventTriage(ctx context.Context, rowid int64) (Triage, error) {
	var t Triage
	var at int64
	err := s.db.QueryRowContext(ctx, `SELECT status, reason, updated_at, updated_by FROM event_triage WHERE event_rowid = ?`, rowid).
		Scan(&t.Status, &t.Reason, &at, &t.UpdatedBy)
	if errors.Is(err, sql.ErrNoRows) {
		return Triage{Status: TriageNew}, nil
	}
	if err != nil {
		return Triage{}, fmt.Errorf("store: triage %d: %w", rowid, err)
	}
	t.UpdatedAt = unixOrZero(at)
	return t, nil
}

// SetTriage moves an event from status from to status to, adding note when not empty, in one
// transaction. It fails with ErrTriageConflict when the event's status is no longer from
// (another analyst moved it first).
func (s *Store) SetTriage(ctx context.Context, rowid int64, from string, t Triage, note string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		cur := TriageNew
		err := tx.QueryRowContext(ctx, `SELECT status FROM event_triage WHERE event_rowid = ?`, rowid).Scan(&cur)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if cur != from {
			return ErrTriageConflict
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO event_triage(event_rowid, status, reason, updated_at, updated_by) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT(event_rowid) DO UPDATE SET status = excluded.status, reason = excluded.reason,
			updated_at = excluded.updated_at, updated_by = excluded.updated_by`,
			rowid, t.Status, t.Reason, t.UpdatedAt.UnixNano(), t.UpdatedBy); err != nil {
			return err
		}
		if note != "" {
			if _, err := tx.ExecContext(ctx, `INSERT INTO event_notes(event_rowid, author, body, created_at) VALUES (?, ?, ?, ?)`,
				rowid, t.UpdatedBy, note, t.UpdatedAt.UnixNano()); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: set triage %d: %w", rowid, err)
	}
	return nil
}

// ErrTriageConflict says the event's triage status changed under the caller.
var ErrTriageConflict = errors.New("the event's triage status was changed by someone else")

// AddTriageNote adds a note to an event.
func (s *Store) AddTriageNote(ctx context.Context, rowid int64, author, body string, now time.Time) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO event_notes(event_rowid, author, body, created_at) VALUES (?, ?, ?, ?)`,
			rowid, author, body, now.UnixNano())
		return err
	})
	if err != nil {
		return fmt.Errorf("store: add note to %d: %w", rowid, err)
	}
	return nil
}

// TriageNotes lists an event's notes, oldest first.
func (s *Store) TriageNotes(ctx context.Context, rowid int64) ([]TriageNote, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, author, body, created_at FROM event_notes WHERE event_rowid = ? ORDER BY id`, rowid)
	if err != nil {
		return nil, fmt.Errorf("store: notes of %d: %w", rowid, err)
	}
	defer rows.Close()
	out := []TriageNote{}
	for rows.Next() {
		var n TriageNote
		var at int64
		if err := rows.Scan(&n.ID, &n.Author, &n.Body, &at); err != nil {
			return nil, err
		}
		n.CreatedAt = unixOrZero(at)
		out = append(out, n)
	}
	return out, rows.Err()
}
