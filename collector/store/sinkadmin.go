package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
)

// What operators see and do about SIEM delivery (wardctl sinks): per-sink figures that
// survive restarts, the dead letters with the event's envelope (never its payload), and
// replay, which puts dead letters back in the queue.

// SettleOutbox removes delivered and skipped items of sink and counts them, in one
// transaction, so the delivered figure in OutboxSummary matches what left the queue.
func (s *Store) SettleOutbox(ctx context.Context, sink string, delivered, skipped []int64) error {
	if len(delivered)+len(skipped) == 0 {
		return nil
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		for _, ids := range [][]int64{delivered, skipped} {
			for _, id := range ids {
				if _, err := tx.ExecContext(ctx, `DELETE FROM outbox WHERE sink = ? AND event_rowid = ?`, sink, id); err != nil {
					return err
				}
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO outbox_counters(sink, delivered, skipped) VALUES (?, ?, ?)
			ON CONFLICT (sink) DO UPDATE SET delivered = outbox_counters.delivered + excluded.delivered,
				skipped = outbox_counters.skipped + excluded.skipped`,
			sink, len(delivered), len(skipped))
		return err
	})
	if err != nil {
		return fmt.Errorf("store: settle %d outbox items of %s: %w", len(delivered)+len(skipped), sink, err)
	}
	return nil
}

// OutboxSummary is one sink's delivery figures.
type OutboxSummary struct {
	Sink string `json:"sink"`
	// Configured is false for a sink that has rows but is no longer in the configuration.
	Configured bool  `json:"configured"`
	Depth      int64 `json:"queue_depth"`
	// Oldest is when the oldest waiting event was enqueued (zero when none waits).
	Oldest      time.Time `json:"oldest_enqueued_at,omitzero"`
	Due         int64     `json:"due"`
	Retrying    int64     `json:"retrying"`
	LastError   string    `json:"last_error,omitempty"`
	Delivered   int64     `json:"delivered"`
	Skipped     int64     `json:"skipped"`
	DeadLetters int64     `json:"dead_letters"`
	// CheckpointsWaiting, CheckpointsDead and CheckpointsDelivered count the audit-log
	// checkpoints queued for, refused by and delivered to the sink.
	CheckpointsWaiting   int64 `json:"audit_checkpoints_waiting"`
	CheckpointsDead      int64 `json:"audit_checkpoints_dead"`
	CheckpointsDelivered int64 `json:"audit_checkpoints_delivered"`
}

// OutboxSummaries reports every sink that is configured or still has rows, by name.
func (s *Store) OutboxSummaries(ctx context.Context, now time.Time) ([]OutboxSummary, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT sink, MAX(configured) FROM (
			SELECT sink, 1 AS configured FROM outbox_routes
			UNION ALL SELECT sink, 0 FROM outbox
			UNION ALL SELECT sink, 0 FROM outbox_dead
			UNION ALL SELECT sink, 0 FROM outbox_counters
			UNION ALL SELECT sink, 0 FROM audit_outbox)
		GROUP BY sink ORDER BY sink`)
	if err != nil {
		return nil, fmt.Errorf("store: list sinks: %w", err)
	}
	var out []OutboxSummary
	for rows.Next() {
		var o OutboxSummary
		if err := rows.Scan(&o.Sink, &o.Configured); err != nil {
			rows.Close()
			return nil, fmt.Errorf("store: list sinks: %w", err)
		}
		out = append(out, o)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list sinks: %w", err)
	}
	for i := range out {
		o := &out[i]
		st, err := s.OutboxStats(ctx, o.Sink, now)
		if err != nil {
			return nil, err
		}
		o.Depth, o.Oldest, o.Due, o.DeadLetters = st.Depth, st.Oldest, st.Due, st.DeadLetters
		var lastErr sql.NullString
		if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM outbox WHERE sink = ? AND attempts > 0`, o.Sink).Scan(&o.Retrying); err != nil {
			return nil, fmt.Errorf("store: sink %s: %w", o.Sink, err)
		}
		err = s.db.QueryRowContext(ctx, `SELECT last_error FROM outbox WHERE sink = ? AND attempts > 0
			ORDER BY next_attempt_at DESC LIMIT 1`, o.Sink).Scan(&lastErr)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("store: sink %s: %w", o.Sink, err)
		}
		o.LastError = lastErr.String
		err = s.db.QueryRowContext(ctx, `SELECT delivered, skipped, checkpoints_delivered FROM outbox_counters WHERE sink = ?`, o.Sink).
			Scan(&o.Delivered, &o.Skipped, &o.CheckpointsDelivered)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("store: sink %s: %w", o.Sink, err)
		}
		if err := s.db.QueryRowContext(ctx, `SELECT COALESCE(SUM(dead = 0), 0), COALESCE(SUM(dead = 1), 0)
			FROM audit_outbox WHERE sink = ?`, o.Sink).Scan(&o.CheckpointsWaiting, &o.CheckpointsDead); err != nil {
			return nil, fmt.Errorf("store: sink %s: %w", o.Sink, err)
		}
	}
	return out, nil
}

// DeadLetterView is a dead letter with its event's envelope: enough to find the event and
// judge the refusal, nothing of its content.
type DeadLetterView struct {
	Sink       string          `json:"sink"`
	RowID      int64           `json:"rowid"`
	EventID    string          `json:"event_id"`
	AgentID    string          `json:"agent_id"`
	Kind       string          `json:"kind"`
	Severity   wardv1.Severity `json:"-"`
	Time       time.Time       `json:"time"`
	EnqueuedAt time.Time       `json:"enqueued_at"`
	FailedAt   time.Time       `json:"failed_at"`
	Attempts   int             `json:"attempts"`
	Reason     string          `json:"reason"`
}

// DeadLetterFilter selects dead letters; the zero value lists the first page of every sink.
type DeadLetterFilter struct {
	// Sink limits to one sink ("" for all).
	Sink string
	// After pages: only letters with (sink, rowid) after this pair.
	AfterSink  string
	AfterRowID int64
	Limit      int
}

// ListDeadLetterViews returns dead letters ordered by (sink, rowid).
func (s *Store) ListDeadLetterViews(ctx context.Context, f DeadLetterFilter) ([]DeadLetterView, error) {
	limit := f.Limit
	if limit <= 0 || limit > MaxLimit {
		limit = MaxLimit
	}
	q := `SELECT d.sink, d.event_rowid, e.event_id, e.agent_id, e.kind, e.severity, e.time, d.enqueued_at, d.failed_at,
			d.attempts, d.reason
		FROM outbox_dead d JOIN events e ON e.rowid = d.event_rowid
		WHERE (d.sink > ? OR (d.sink = ? AND d.event_rowid > ?))`
	args := []any{f.AfterSink, f.AfterSink, f.AfterRowID}
	if f.Sink != "" {
		q += ` AND d.sink = ?`
		args = append(args, f.Sink)
	}
	q += ` ORDER BY d.sink, d.event_rowid LIMIT ?`
	args = append(args, limit)
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("store: list dead letters: %w", err)
	}
	defer rows.Close()
	var out []DeadLetterView
	for rows.Next() {
		var d DeadLetterView
		var sev int32
		var t, enq, failed int64
		if err := rows.Scan(&d.Sink, &d.RowID, &d.EventID, &d.AgentID, &d.Kind, &sev, &t, &enq, &failed, &d.Attempts, &d.Reason); err != nil {
			return nil, fmt.Errorf("store: list dead letters: %w", err)
		}
		d.Severity = wardv1.Severity(sev)
		d.Time, d.EnqueuedAt, d.FailedAt = time.Unix(0, t).UTC(), time.Unix(0, enq).UTC(), time.Unix(0, failed).UTC()
		out = append(out, d)
	}
	return out, rows.Err()
}

// ErrSinkNotConfigured is returned when replaying to a sink that is not configured: the
// events would wait in a queue nothing drains.
var ErrSinkNotConfigured = errors.New("store: sink is not configured")

// ReplayDeadLetters moves dead letters of sink back into its queue as fresh items (attempts
// 0, due now): all of them when rowids is nil, else those listed. Dead audit checkpoints of
// the sink are requeued with all. It returns how many events were requeued.
func (s *Store) ReplayDeadLetters(ctx context.Context, sink string, rowids []int64, now time.Time) (int64, error) {
	var n int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		var configured int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM outbox_routes WHERE sink = ?`, sink).Scan(&configured); err != nil {
			return err
		}
		if configured == 0 {
			return ErrSinkNotConfigured
		}
		move := func(where string, args ...any) error {
			a := append([]any{now.UnixNano(), sink}, args...)
			res, err := tx.ExecContext(ctx, `INSERT INTO outbox(sink, event_rowid, enqueued_at)
				SELECT sink, event_rowid, ? FROM outbox_dead WHERE sink = ?`+where+`
				ON CONFLICT (sink, event_rowid) DO NOTHING`, a...)
			if err != nil {
				return err
			}
			c, _ := res.RowsAffected()
			n += c
			_, err = tx.ExecContext(ctx, `DELETE FROM outbox_dead WHERE sink = ?`+where, append([]any{sink}, args...)...)
			return err
		}
		if rowids == nil {
			if err := move(""); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, `UPDATE audit_outbox SET dead = 0, attempts = 0, next_attempt_at = 0
				WHERE sink = ? AND dead = 1`, sink)
			return err
		}
		for _, id := range rowids {
			if err := move(` AND event_rowid = ?`, id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrSinkNotConfigured) {
			return 0, fmt.Errorf("%w: %s", ErrSinkNotConfigured, sink)
		}
		return 0, fmt.Errorf("store: replay dead letters of %s: %w", sink, err)
	}
	s.notify()
	return n, nil
}
