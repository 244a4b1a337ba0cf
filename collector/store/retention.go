package store

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"time"
)

// Retention: events are deleted oldest first (rowid order, which is commit order) when they
// are older than a maximum age or the database is larger than a maximum size. An event
// still queued for a sink is kept — retention must not be how a SIEM outage loses data —
// unless the database is past a hard size cap, where disk exhaustion would stop ingest for
// everyone; those deletions are counted separately as dropped.
//
// Freed pages are returned to the file system with incremental vacuum (auto_vacuum =
// INCREMENTAL), a few thousand pages per transaction so ingest is never blocked for long.

// RetentionPolicy configures ApplyRetention. Zero fields disable their rule.
type RetentionPolicy struct {
	// MaxAge deletes events received longer ago than this.
	MaxAge time.Duration
	// MaxBytes deletes the oldest events while the database's used pages exceed it, down
	// to 90% of it so that each run frees a useful amount.
	MaxBytes int64
	// HardMaxBytes is the size above which events still queued for a sink are deleted too.
	HardMaxBytes int64
	// BatchRows bounds the events deleted per transaction (default 2000).
	BatchRows int
	// VacuumPages bounds the pages freed per incremental_vacuum transaction (default 4096).
	VacuumPages int
}

// RetentionReport says what one ApplyRetention run removed.
type RetentionReport struct {
	// DeletedByAge and DeletedBySize count events removed by each rule, none of them pending.
	DeletedByAge  int64
	DeletedBySize int64
	// DroppedPending counts events deleted while still queued for a sink (hard cap only).
	DroppedPending int64
	// DroppedSinks counts, per sink, the queued deliveries DroppedPending discarded.
	DroppedSinks map[string]int64
	// KeptPending counts events past a limit kept because a sink still needs them.
	KeptPending int64
	// OldestDroppedRowID and NewestDroppedRowID bound the dropped events (0 when none).
	OldestDroppedRowID, NewestDroppedRowID int64
	// UsedBefore and UsedAfter are the used bytes (pages not on the free list).
	UsedBefore, UsedAfter int64
	// FileBefore and FileAfter are the sizes of the database file plus its WAL.
	FileBefore, FileAfter int64
	// VacuumedPages counts pages returned to the file system.
	VacuumedPages int64
}

// Deleted is the total number of events removed.
func (r RetentionReport) Deleted() int64 { return r.DeletedByAge + r.DeletedBySize + r.DroppedPending }

// initNewFile sets incremental auto-vacuum on an empty database file, then WAL mode. The
// order matters: switching to WAL writes the file's header, after which auto_vacuum changes
// only through a VACUUM. It runs on a private connection, so no pool connection ever
// issues the pragma (on a database with tables, setting it waits for the write lock).
func initNewFile(ctx context.Context, path string) error {
	db, err := sql.Open("sqlite", dsn(path, false))
	if err != nil {
		return err
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	for _, q := range []string{`PRAGMA auto_vacuum = INCREMENTAL`, `PRAGMA journal_mode = WAL`} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	return nil
}

// AutoVacuumMode reports the database's auto_vacuum mode: 0 none, 1 full, 2 incremental.
func (s *Store) AutoVacuumMode(ctx context.Context) (int, error) {
	if s.pg {
		return 2, nil // PostgreSQL's autovacuum reclaims deleted rows by itself
	}
	var m int
	if err := s.db.QueryRowContext(ctx, `PRAGMA auto_vacuum`).Scan(&m); err != nil {
		return 0, fmt.Errorf("store: auto_vacuum: %w", err)
	}
	return m, nil
}

// EnableIncrementalVacuum converts a database created before incremental vacuum (auto_vacuum
// NONE) by rewriting it with VACUUM. That takes the write lock for as long as the rewrite
// takes (ingest answers RESOURCE_EXHAUSTED meanwhile and agents keep their spools) and
// needs free disk space about the size of the database, so callers log before and after.
// It reports whether a conversion happened.
func (s *Store) EnableIncrementalVacuum(ctx context.Context) (bool, error) {
	mode, err := s.AutoVacuumMode(ctx)
	if err != nil || mode == 2 {
		return false, err
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return false, fmt.Errorf("store: enable incremental vacuum: %w", err)
	}
	defer conn.Close()
	// Both statements on one connection: the mode set here is what the VACUUM applies.
	if _, err := conn.ExecContext(ctx, `PRAGMA auto_vacuum = INCREMENTAL`); err != nil {
		return false, fmt.Errorf("store: enable incremental vacuum: %w", err)
	}
	if _, err := conn.ExecContext(ctx, `VACUUM`); err != nil {
		return false, fmt.Errorf("store: enable incremental vacuum: VACUUM: %w", err)
	}
	return true, nil
}

// UsedBytes is the size of the database's pages that hold data (page_count minus the free
// list), the figure MaxBytes limits: freed pages count as free before they are vacuumed.
func (s *Store) UsedBytes(ctx context.Context) (int64, error) {
	if s.pg {
		var n int64
		if err := s.db.QueryRowContext(ctx, `SELECT pg_database_size(current_database())`).Scan(&n); err != nil {
			return 0, fmt.Errorf("store: database size: %w", err)
		}
		return n, nil
	}
	var pages, free, size int64
	if err := s.db.QueryRowContext(ctx, `SELECT p.page_count, f.freelist_count, s.page_size
		FROM pragma_page_count() p, pragma_freelist_count() f, pragma_page_size() s`).Scan(&pages, &free, &size); err != nil {
		return 0, fmt.Errorf("store: database size: %w", err)
	}
	return (pages - free) * size, nil
}

// FileBytes is the size of the database file and its WAL on disk.
func (s *Store) FileBytes() int64 {
	var n int64
	for _, suffix := range []string{"", "-wal"} {
		if st, err := os.Stat(s.path + suffix); err == nil {
			n += st.Size()
		}
	}
	return n
}

// ApplyRetention deletes events as p says, as of now, then vacuums the freed pages.
func (s *Store) ApplyRetention(ctx context.Context, p RetentionPolicy, now time.Time) (RetentionReport, error) {
	if p.BatchRows <= 0 {
		p.BatchRows = 2000
	}
	if p.VacuumPages <= 0 {
		p.VacuumPages = 4096
	}
	var rep RetentionReport
	var err error
	rep.FileBefore = s.FileBytes()
	if rep.UsedBefore, err = s.UsedBytes(ctx); err != nil {
		return rep, err
	}
	if p.MaxAge > 0 {
		cutoff := now.Add(-p.MaxAge).UnixNano()
		n, kept, err := s.deleteOldest(ctx, p.BatchRows, func(received int64) bool { return received < cutoff }, nil)
		rep.DeletedByAge, rep.KeptPending = n, kept
		if err != nil {
			return rep, err
		}
	}
	if p.MaxBytes > 0 {
		target := p.MaxBytes / 10 * 9
		perRow, err := s.bytesPerEvent(ctx)
		if err != nil {
			return rep, err
		}
		// Each batch deletes about what is still over the target, so a run of large rows
		// does not overshoot by a whole batch.
		over := func() (int, error) {
			used, err := s.UsedBytes(ctx)
			if err != nil || used <= target {
				return 0, err
			}
			return int(min(int64(p.BatchRows), (used-target)/perRow+1)), nil
		}
		n, kept, err := s.deleteOldest(ctx, p.BatchRows, nil, over)
		rep.DeletedBySize = n
		rep.KeptPending = max(rep.KeptPending, kept)
		if err != nil {
			return rep, err
		}
		if p.HardMaxBytes > 0 {
			if err := s.dropPending(ctx, p, &rep); err != nil {
				return rep, err
			}
		}
	}
	if rep.Deleted() > 0 {
		if rep.VacuumedPages, err = s.incrementalVacuum(ctx, p.VacuumPages); err != nil {
			return rep, err
		}
		// Best effort: a reader holding an old snapshot keeps the WAL until it finishes.
		if !s.pg {
			_, _ = s.db.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`)
		}
	}
	if rep.UsedAfter, err = s.UsedBytes(ctx); err != nil {
		return rep, err
	}
	rep.FileAfter = s.FileBytes()
	return rep, nil
}

// deleteOldest walks events in rowid order deleting those not queued for any sink, while
// expired(received_at) holds for the row (age rule; the walk stops at the first row that is
// not expired, since rowids follow arrival) or over() says how many more rows the database
// needs to lose (size rule; 0 when it is small enough). It returns how many it deleted and
// how many it kept because they are pending.
func (s *Store) deleteOldest(ctx context.Context, batch int, expired func(int64) bool, over func() (int, error)) (deleted, kept int64, err error) {
	var cursor int64
	want := batch
	for {
		if over != nil {
			need, err := over()
			if err != nil || need == 0 {
				return deleted, kept, err
			}
			want = need
		}
		rows, err := s.db.QueryContext(ctx, `SELECT e.rowid, e.received_at,
				EXISTS (SELECT 1 FROM outbox o WHERE o.event_rowid = e.rowid)
			FROM events e WHERE e.rowid > ? ORDER BY e.rowid LIMIT ?`, cursor, batch)
		if err != nil {
			return deleted, kept, fmt.Errorf("store: retention: scan: %w", err)
		}
		var ids []int64
		seen, done := 0, false
		for rows.Next() {
			var rowid, received int64
			var pending bool
			if err := rows.Scan(&rowid, &received, &pending); err != nil {
				rows.Close()
				return deleted, kept, fmt.Errorf("store: retention: scan: %w", err)
			}
			seen++
			if expired != nil && !expired(received) {
				done = true
				break
			}
			cursor = rowid
			if pending {
				kept++
				continue
			}
			ids = append(ids, rowid)
			if len(ids) == want {
				break
			}
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return deleted, kept, fmt.Errorf("store: retention: scan: %w", err)
		}
		n, err := s.deleteEvents(ctx, ids, false)
		deleted += n
		if err != nil {
			return deleted, kept, err
		}
		if done || seen < batch && len(ids) < want {
			return deleted, kept, nil
		}
	}
}

// deleteEvents deletes the given events in one transaction; unless pendingToo, rows that
// were queued for a sink since they were selected are left alone.
func (s *Store) deleteEvents(ctx context.Context, ids []int64, pendingToo bool) (int64, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	var n int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		q := `DELETE FROM events WHERE rowid = ?`
		if !pendingToo {
			q += ` AND NOT EXISTS (SELECT 1 FROM outbox WHERE event_rowid = ?)`
		}
		stmt, err := tx.PrepareContext(ctx, q)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, id := range ids {
			args := []any{id}
			if !pendingToo {
				args = append(args, id)
			}
			res, err := stmt.ExecContext(ctx, args...)
			if err != nil {
				return err
			}
			k, _ := res.RowsAffected()
			n += k
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("store: retention: delete %d events: %w", len(ids), err)
	}
	return n, nil
}

// dropPending deletes the oldest events regardless of the outbox once the used size is
// above the hard cap, down to 90% of the cap, counting what each sink lost.
func (s *Store) dropPending(ctx context.Context, p RetentionPolicy, rep *RetentionReport) error {
	target := p.HardMaxBytes / 10 * 9
	for {
		used, err := s.UsedBytes(ctx)
		if err != nil {
			return err
		}
		if rep.DroppedPending == 0 && used <= p.HardMaxBytes || used <= target {
			return nil
		}
		perRow, err := s.bytesPerEvent(ctx)
		if err != nil {
			return err
		}
		take := min(int64(p.BatchRows), (used-target)/perRow+1)
		rows, err := s.db.QueryContext(ctx, `SELECT rowid FROM events ORDER BY rowid LIMIT ?`, take)
		if err != nil {
			return fmt.Errorf("store: retention: scan: %w", err)
		}
		var ids []int64
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return fmt.Errorf("store: retention: scan: %w", err)
			}
			ids = append(ids, id)
		}
		rows.Close()
		if len(ids) == 0 {
			return nil
		}
		lost, err := s.outboxCounts(ctx, ids[0], ids[len(ids)-1])
		if err != nil {
			return err
		}
		n, err := s.deleteEvents(ctx, ids, true)
		if err != nil {
			return err
		}
		if rep.DroppedSinks == nil {
			rep.DroppedSinks = map[string]int64{}
		}
		for sink, k := range lost {
			rep.DroppedSinks[sink] += k
		}
		if rep.OldestDroppedRowID == 0 {
			rep.OldestDroppedRowID = ids[0]
		}
		rep.NewestDroppedRowID = ids[len(ids)-1]
		rep.DroppedPending += n
	}
}

// bytesPerEvent estimates the database bytes one event accounts for (at least 1).
func (s *Store) bytesPerEvent(ctx context.Context) (int64, error) {
	used, err := s.UsedBytes(ctx)
	if err != nil {
		return 0, err
	}
	var n int64
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM events`).Scan(&n); err != nil {
		return 0, fmt.Errorf("store: retention: count events: %w", err)
	}
	if n == 0 {
		return max(used, 1), nil
	}
	return max(used/n, 1), nil
}

// outboxCounts counts queued deliveries per sink for events with rowids in [first, last].
func (s *Store) outboxCounts(ctx context.Context, first, last int64) (map[string]int64, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT sink, COUNT(*) FROM outbox WHERE event_rowid BETWEEN ? AND ? GROUP BY sink`, first, last)
	if err != nil {
		return nil, fmt.Errorf("store: retention: count queued: %w", err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var sink string
		var n int64
		if err := rows.Scan(&sink, &n); err != nil {
			return nil, fmt.Errorf("store: retention: count queued: %w", err)
		}
		out[sink] = n
	}
	return out, rows.Err()
}

// incrementalVacuum returns free pages to the file system, chunk pages per transaction.
// On a database without incremental auto-vacuum it does nothing (the pages stay free for
// reuse; EnableIncrementalVacuum converts it).
func (s *Store) incrementalVacuum(ctx context.Context, chunk int) (int64, error) {
	if s.pg {
		return 0, nil
	}
	mode, err := s.AutoVacuumMode(ctx)
	if err != nil || mode != 2 {
		return 0, err
	}
	var total int64
	for {
		var before, after int64
		err := s.write(ctx, func(tx *sql.Tx) error {
			if err := tx.QueryRowContext(ctx, `PRAGMA freelist_count`).Scan(&before); err != nil {
				return err
			}
			if before == 0 {
				return nil
			}
			// incremental_vacuum returns no rows but must be stepped to completion.
			rows, err := tx.QueryContext(ctx, fmt.Sprintf(`PRAGMA incremental_vacuum(%d)`, chunk))
			if err != nil {
				return err
			}
			for rows.Next() {
			}
			if err := rows.Close(); err != nil {
				return err
			}
			return tx.QueryRowContext(ctx, `PRAGMA freelist_count`).Scan(&after)
		})
		if err != nil {
			return total, fmt.Errorf("store: incremental vacuum: %w", err)
		}
		if before == 0 || after >= before {
			return total, nil
		}
		total += before - after
		if after == 0 {
			return total, nil
		}
	}
}
