package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
)

// The outbox is how events reach SIEM sinks without ever being lost between the store and a
// sink: InsertEvents writes one outbox row per interested sink in the same transaction as the
// event, a sink's dispatcher claims rows in batches under a lease, and a row disappears only
// when the sink confirmed delivery (Ack) or refused the event for good (DeadLetter). A crash
// at any point leaves the row in place, and an expired lease makes it claimable again, so
// delivery is at least once.

// outboxSchema is the migration that created the outbox tables.
const outboxSchema = 4

// OutboxRoute says which events one sink wants.
type OutboxRoute struct {
	Sink string
	// Kinds are event kinds (KindFinding, ...); empty means every kind.
	Kinds []string
	// MinSeverity applies to findings only: weaker findings are not enqueued.
	MinSeverity wardv1.Severity
}

// AllKinds lists the event kinds this build stores.
var AllKinds = []string{KindProcess, KindFile, KindFinding, KindHealth, KindFlow, KindFleet}

// SetOutboxRoutes replaces the routing table with routes. It is called once at start, before
// ingest runs, so every event stored afterwards is enqueued for the sinks configured now.
// Rows already queued for sinks no longer configured are kept (and reported by
// OrphanedOutbox) so that a configuration mistake does not discard a backlog.
func (s *Store) SetOutboxRoutes(ctx context.Context, routes []OutboxRoute) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM outbox_routes`); err != nil {
			return fmt.Errorf("clear routes: %w", err)
		}
		for _, r := range routes {
			if r.Sink == "" {
				return errors.New("route without a sink name")
			}
			kinds := r.Kinds
			if len(kinds) == 0 {
				kinds = AllKinds
			}
			for _, k := range kinds {
				if _, err := tx.ExecContext(ctx, `INSERT INTO outbox_routes(sink, kind, min_severity) VALUES (?, ?, ?)
					ON CONFLICT (sink, kind) DO NOTHING`, r.Sink, k, int32(r.MinSeverity)); err != nil {
					return fmt.Errorf("route %s/%s: %w", r.Sink, k, err)
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: set outbox routes: %w", err)
	}
	return nil
}

// enqueueOutbox queues the just-inserted event rowid for every sink whose route matches it.
// It runs inside InsertEvents' transaction.
func (s *Store) enqueueOutbox(ctx context.Context, tx *sql.Tx, rowid int64, r Record, now time.Time) error {
	if !s.outbox {
		return nil
	}
	sev := int32(r.Severity)
	if r.Kind != KindFinding {
		sev = int32(wardv1.Severity_SEVERITY_CRITICAL) // min_severity filters findings only
	}
	st, err := s.txStmt(ctx, tx, `INSERT INTO outbox(sink, event_rowid, enqueued_at)
		SELECT sink, ?, ? FROM outbox_routes WHERE kind = ? AND min_severity <= ?`)
	if err != nil {
		return err
	}
	_, err = st.ExecContext(ctx, rowid, now.UnixNano(), r.Kind, sev)
	return err
}

// OutboxItem is one claimed event for one sink.
type OutboxItem struct {
	StoredEvent
	EnqueuedAt time.Time
	// Attempts counts earlier failed deliveries of this item to this sink.
	Attempts int
	// InDoubtSince is set when an earlier claim of this item (by a collector that died,
	// was stopped mid-batch, or whose delivery timed out) did not end in an ack or a
	// definite failure: the destination may already have it. It is the earliest time that
	// delivery may have happened, so a sink that can look (Kafka) checks from there instead
	// of sending a duplicate.
	InDoubtSince time.Time
}

// ClaimOutbox leases up to maxEvents due items of sink, oldest first, stopping before the
// payloads exceed maxBytes (at least one item is returned when any is due). Leased items are
// invisible to other claims until lease has passed, so a dispatcher that dies mid-batch
// only delays them.
func (s *Store) ClaimOutbox(ctx context.Context, sink string, now time.Time, maxEvents, maxBytes int, lease time.Duration) ([]OutboxItem, error) {
	if maxEvents <= 0 {
		return nil, errors.New("store: claim outbox: maxEvents must be positive")
	}
	var items []OutboxItem
	err := s.write(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT o.enqueued_at, o.attempts,
				e.rowid, e.event_id, e.agent_id, e.seq, e.time, e.received_at, e.kind, e.severity, e.data_class,
				e.host, e.path, e.pid, e.exe, e.user, e.payload, e.key_id, o.lease_owner, o.lease_until
			FROM outbox o JOIN events e ON e.rowid = o.event_rowid
			WHERE o.sink = ? AND o.next_attempt_at <= ? AND `+s.claimable("o", "?")+`
			ORDER BY o.event_rowid LIMIT ?`+s.skipLocked("o"), sink, now.UnixNano(), now.UnixNano(), s.staleBefore(now), maxEvents)
		if err != nil {
			return fmt.Errorf("select: %w", err)
		}
		bytes := 0
		op := s.opener()
		for rows.Next() {
			var it OutboxItem
			var enq, seq, t, recv, pid int64
			var sev, class int32
			var keyID, prevOwner string
			var prevLease int64
			if err := rows.Scan(&enq, &it.Attempts, &it.RowID, &it.EventID, &it.AgentID, &seq, &t, &recv, &it.Kind,
				&sev, &class, &it.Host, &it.Path, &pid, &it.Exe, &it.User, &it.Payload, &keyID, &prevOwner, &prevLease); err != nil {
				rows.Close()
				return fmt.Errorf("scan: %w", err)
			}
			if len(items) > 0 && maxBytes > 0 && bytes+len(it.Payload) > maxBytes {
				break
			}
			bytes += len(it.Payload)
			op.openStored(&it.StoredEvent, keyID, seq)
			it.EnqueuedAt = time.Unix(0, enq).UTC()
			if prevOwner != "" {
				// Claimed before without an ack: from the start of that lease (or, when
				// the lease was released at a restart, from the enqueue).
				it.InDoubtSince = it.EnqueuedAt
				if prevLease > 0 {
					it.InDoubtSince = time.Unix(0, max(enq, prevLease-int64(lease))).UTC()
				}
			}
			it.Seq = storedSeq(seq)
			it.Time = time.Unix(0, t).UTC()
			it.ReceivedAt = time.Unix(0, recv).UTC()
			it.Severity = wardv1.Severity(sev)
			it.DataClass = wardv1.DataClass(class)
			it.PID = uint32(pid)
			items = append(items, it)
		}
		if err := rows.Err(); err != nil {
			rows.Close()
			return fmt.Errorf("rows: %w", err)
		}
		rows.Close()
		until := now.Add(lease).UnixNano()
		for _, it := range items {
			if _, err := tx.ExecContext(ctx, `UPDATE outbox SET lease_until = ?, lease_owner = ? WHERE sink = ? AND event_rowid = ?`,
				until, s.replica, sink, it.RowID); err != nil {
				return fmt.Errorf("lease: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: claim outbox for %s: %w", sink, err)
	}
	return items, nil
}

// AckOutbox removes delivered (or deliberately skipped) items of sink.
func (s *Store) AckOutbox(ctx context.Context, sink string, rowids []int64) error {
	if len(rowids) == 0 {
		return nil
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		for _, id := range rowids {
			if _, err := tx.ExecContext(ctx, `DELETE FROM outbox WHERE sink = ? AND event_rowid = ?`, sink, id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: ack %d outbox items of %s: %w", len(rowids), sink, err)
	}
	return nil
}

// RetryOutbox releases items of sink for another attempt at next, counting the failure.
func (s *Store) RetryOutbox(ctx context.Context, sink string, rowids []int64, next time.Time, reason string) error {
	if len(rowids) == 0 {
		return nil
	}
	reason = boundReason(reason)
	err := s.write(ctx, func(tx *sql.Tx) error {
		for _, id := range rowids {
			if _, err := tx.ExecContext(ctx, `UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?,
				lease_until = 0, last_error = ? WHERE sink = ? AND event_rowid = ?`,
				next.UnixNano(), reason, sink, id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: reschedule %d outbox items of %s: %w", len(rowids), sink, err)
	}
	return nil
}

// DeadLetterOutbox moves items of sink that the destination refused for good (bad request,
// authentication, too large) to outbox_dead, keeping why, so they stop blocking the queue and
// can be inspected and replayed.
func (s *Store) DeadLetterOutbox(ctx context.Context, sink string, rowids []int64, now time.Time, reason string) error {
	if len(rowids) == 0 {
		return nil
	}
	reason = boundReason(reason)
	err := s.write(ctx, func(tx *sql.Tx) error {
		for _, id := range rowids {
			if _, err := tx.ExecContext(ctx, `INSERT INTO outbox_dead(sink, event_rowid, enqueued_at, failed_at, attempts, reason)
				SELECT sink, event_rowid, enqueued_at, ?, attempts + 1, ? FROM outbox WHERE sink = ? AND event_rowid = ?
				ON CONFLICT (sink, event_rowid) DO UPDATE SET failed_at = excluded.failed_at,
					attempts = excluded.attempts, reason = excluded.reason`,
				now.UnixNano(), reason, sink, id); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM outbox WHERE sink = ? AND event_rowid = ?`, sink, id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: dead-letter %d outbox items of %s: %w", len(rowids), sink, err)
	}
	return nil
}

// OutboxStats describes one sink's queue.
type OutboxStats struct {
	// Depth counts items waiting (due, backing off or leased).
	Depth int64
	// Oldest is when the oldest waiting item was enqueued; zero when Depth is 0.
	Oldest time.Time
	// Due counts items that may be claimed now.
	Due int64
	// DeadLetters counts items in the dead-letter table.
	DeadLetters int64
}

// OutboxStats reads sink's queue figures at now.
func (s *Store) OutboxStats(ctx context.Context, sink string, now time.Time) (OutboxStats, error) {
	var st OutboxStats
	var oldest sql.NullInt64
	n := now.UnixNano()
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*), MIN(enqueued_at),
			COALESCE(SUM(CASE WHEN next_attempt_at <= ? AND `+s.claimable("outbox", "?")+` THEN 1 ELSE 0 END), 0)
			FROM outbox WHERE sink = ?`, n, n, s.staleBefore(now), sink).
		Scan(&st.Depth, &oldest, &st.Due)
	if err != nil {
		return st, fmt.Errorf("store: outbox stats for %s: %w", sink, err)
	}
	if oldest.Valid {
		st.Oldest = time.Unix(0, oldest.Int64).UTC()
	}
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM outbox_dead WHERE sink = ?`, sink).Scan(&st.DeadLetters); err != nil {
		return st, fmt.Errorf("store: dead letters for %s: %w", sink, err)
	}
	return st, nil
}

// DeadLetter is one refused item as kept in outbox_dead.
type DeadLetter struct {
	Sink       string
	RowID      int64
	EnqueuedAt time.Time
	FailedAt   time.Time
	Attempts   int
	Reason     string
}

// ListDeadLetters returns up to limit dead letters of sink, oldest failure first.
func (s *Store) ListDeadLetters(ctx context.Context, sink string, limit int) ([]DeadLetter, error) {
	if limit <= 0 || limit > MaxLimit {
		limit = MaxLimit
	}
	rows, err := s.db.QueryContext(ctx, `SELECT sink, event_rowid, enqueued_at, failed_at, attempts, reason
		FROM outbox_dead WHERE sink = ? ORDER BY failed_at, event_rowid LIMIT ?`, sink, limit)
	if err != nil {
		return nil, fmt.Errorf("store: list dead letters of %s: %w", sink, err)
	}
	defer rows.Close()
	var out []DeadLetter
	for rows.Next() {
		var d DeadLetter
		var enq, failed int64
		if err := rows.Scan(&d.Sink, &d.RowID, &enq, &failed, &d.Attempts, &d.Reason); err != nil {
			return nil, fmt.Errorf("store: list dead letters of %s: %w", sink, err)
		}
		d.EnqueuedAt = time.Unix(0, enq).UTC()
		d.FailedAt = time.Unix(0, failed).UTC()
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list dead letters of %s: %w", sink, err)
	}
	return out, nil
}

// OrphanedOutbox counts queued items per sink name that is not in configured: backlogs left
// by sinks removed from the configuration.
func (s *Store) OrphanedOutbox(ctx context.Context, configured []string) (map[string]int64, error) {
	q := `SELECT sink, COUNT(*) FROM outbox`
	args := make([]any, 0, len(configured))
	if len(configured) > 0 {
		q += ` WHERE sink NOT IN (?` + strings.Repeat(`, ?`, len(configured)-1) + `)`
		for _, c := range configured {
			args = append(args, c)
		}
	}
	q += ` GROUP BY sink`
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("store: orphaned outbox: %w", err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var name string
		var n int64
		if err := rows.Scan(&name, &n); err != nil {
			return nil, fmt.Errorf("store: orphaned outbox: %w", err)
		}
		out[name] = n
	}
	return out, rows.Err()
}

// OutboxChanged returns a channel closed the next time events commit, so an idle dispatcher
// can sleep until there may be work.
func (s *Store) OutboxChanged() <-chan struct{} { return s.changedCh() }

func boundReason(r string) string {
	if len(r) > 1024 {
		r = r[:1024]
	}
	return strings.ToValidUTF8(r, "?")
}

// ReleaseOutboxLeases makes every leased item of sink claimable again. A collector calls it
// when a sink's dispatcher starts: leases left by a previous process that stopped mid-batch
// would otherwise delay those items until they expire.
func (s *Store) ReleaseOutboxLeases(ctx context.Context, sink string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		if s.pg {
			// Other replicas may be delivering their leased batches right now: release
			// only leases this replica (under its name) left behind. A dead replica's
			// leases become claimable through its stale heartbeat (claimable). The owner
			// stays recorded: those items are in doubt (OutboxItem.InDoubtSince).
			_, err := tx.ExecContext(ctx, `UPDATE outbox SET lease_until = 0 WHERE sink = ? AND lease_until > 0 AND lease_owner = ?`, sink, s.replica)
			return err
		}
		_, err := tx.ExecContext(ctx, `UPDATE outbox SET lease_until = 0 WHERE sink = ? AND lease_until > 0`, sink)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: release outbox leases of %s: %w", sink, err)
	}
	return nil
}
