package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// The audit log is an append-only Merkle tree (RFC 6962 hashing, golang.org/x/mod/sumdb/tlog).
// audit_log holds the records, each the exact bytes its leaf hash covers; audit_hashes holds
// the tree's stored hashes (tlog's numbering), written in the transaction that appends the
// record, so the tree head for any size can be recomputed from the database alone; and
// audit_checkpoints holds signed tree heads. The package that gives the records meaning and
// signs checkpoints is collector/audit; this file only keeps the rows.

// AuditRecord is one stored audit record.
type AuditRecord struct {
	// Index is the record's position in the tree, from 0, dense.
	Index int64
	// Data is the exact byte string the leaf hash covers.
	Data []byte
	// LeafHash is the leaf hash stored when the record was appended; nil when no hash row
	// exists for it (a row inserted outside the audit log).
	LeafHash []byte
}

// AppendAudit appends data as the next record and stores the tree hashes it completes, in one
// transaction. It returns the record's index.
func (s *Store) AppendAudit(ctx context.Context, data []byte) (int64, error) {
	var idx int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		var next sql.NullInt64
		if err := tx.QueryRowContext(ctx, `SELECT MAX(idx) FROM audit_log`).Scan(&next); err != nil {
			return fmt.Errorf("read size: %w", err)
		}
		idx = 0
		if next.Valid {
			idx = next.Int64 + 1
		}
		hashes, err := tlog.StoredHashes(idx, data, auditHashReader(ctx, tx))
		if err != nil {
			return fmt.Errorf("tree hashes: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO audit_log(idx, record) VALUES (?, ?)`, idx, data); err != nil {
			return fmt.Errorf("insert record: %w", err)
		}
		first := tlog.StoredHashIndex(0, idx)
		for i, h := range hashes {
			if _, err := tx.ExecContext(ctx, `INSERT INTO audit_hashes(id, hash) VALUES (?, ?)`, first+int64(i), h[:]); err != nil {
				return fmt.Errorf("insert hash %d: %w", first+int64(i), err)
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("store: append audit record: %w", err)
	}
	return idx, nil
}

type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// auditHashReader reads stored tree hashes through q (the database or a transaction).
func auditHashReader(ctx context.Context, q queryer) tlog.HashReader {
	return tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(indexes))
		if len(indexes) == 0 {
			return out, nil
		}
		args := make([]any, len(indexes))
		for i, x := range indexes {
			args[i] = x
		}
		rows, err := q.QueryContext(ctx, `SELECT id, hash FROM audit_hashes WHERE id IN (?`+
			strings.Repeat(`, ?`, len(indexes)-1)+`)`, args...)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		got := map[int64]tlog.Hash{}
		for rows.Next() {
			var id int64
			var b []byte
			if err := rows.Scan(&id, &b); err != nil {
				return nil, err
			}
			if len(b) != tlog.HashSize {
				return nil, fmt.Errorf("stored hash %d has %d bytes", id, len(b))
			}
			got[id] = tlog.Hash(b)
		}
		if err := rows.Err(); err != nil {
			return nil, err
		}
		for i, x := range indexes {
			h, ok := got[x]
			if !ok {
				return nil, fmt.Errorf("stored hash %d is missing", x)
			}
			out[i] = h
		}
		return out, nil
	})
}

// AuditSize is the number of records in the audit log.
func (s *Store) AuditSize(ctx context.Context) (int64, error) {
	var n sql.NullInt64
	if err := s.db.QueryRowContext(ctx, `SELECT MAX(idx) FROM audit_log`).Scan(&n); err != nil {
		return 0, fmt.Errorf("store: audit size: %w", err)
	}
	if !n.Valid {
		return 0, nil
	}
	return n.Int64 + 1, nil
}

// AuditTreeHash computes the tree head of the first n records from the stored hashes.
func (s *Store) AuditTreeHash(ctx context.Context, n int64) (tlog.Hash, error) {
	h, err := tlog.TreeHash(n, auditHashReader(ctx, s.db))
	if err != nil {
		return tlog.Hash{}, fmt.Errorf("store: audit tree hash at %d: %w", n, err)
	}
	return h, nil
}

// AuditRecords returns up to limit records with index > after, in index order, each with the
// leaf hash stored when it was appended.
func (s *Store) AuditRecords(ctx context.Context, after int64, limit int) ([]AuditRecord, error) {
	if limit <= 0 || limit > MaxLimit {
		limit = MaxLimit
	}
	// The leaf hash of record n is stored at tlog.StoredHashIndex(0, n), which is
	// n*2 - popcount(n); SQLite has no popcount, so the hashes are read in a second query.
	rows, err := s.db.QueryContext(ctx, `SELECT idx, record FROM audit_log WHERE idx > ? ORDER BY idx LIMIT ?`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("store: audit records: %w", err)
	}
	var out []AuditRecord
	for rows.Next() {
		var r AuditRecord
		if err := rows.Scan(&r.Index, &r.Data); err != nil {
			rows.Close()
			return nil, fmt.Errorf("store: audit records: %w", err)
		}
		out = append(out, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: audit records: %w", err)
	}
	const chunk = 500
	for lo := 0; lo < len(out); lo += chunk {
		hi := min(lo+chunk, len(out))
		at := make(map[int64]int, hi-lo)
		args := make([]any, 0, hi-lo)
		for i := lo; i < hi; i++ {
			id := tlog.StoredHashIndex(0, out[i].Index)
			at[id] = i
			args = append(args, id)
		}
		rows, err := s.db.QueryContext(ctx, `SELECT id, hash FROM audit_hashes WHERE id IN (?`+
			strings.Repeat(`, ?`, len(args)-1)+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("store: audit leaf hashes: %w", err)
		}
		for rows.Next() {
			var id int64
			var h []byte
			if err := rows.Scan(&id, &h); err != nil {
				rows.Close()
				return nil, fmt.Errorf("store: audit leaf hashes: %w", err)
			}
			out[at[id]].LeafHash = h
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("store: audit leaf hashes: %w", err)
		}
	}
	return out, nil
}

// AuditCheckpoint is one signed tree head as stored.
type AuditCheckpoint struct {
	Size      int64
	Root      []byte
	Note      []byte
	CreatedAt time.Time
}

// ErrCheckpointExists is returned when a checkpoint for that size is already stored.
var ErrCheckpointExists = errors.New("store: an audit checkpoint for this size exists")

// AddAuditCheckpoint stores a signed tree head and queues it for every configured SIEM sink,
// so that the SIEM holds a copy the collector cannot rewrite.
func (s *Store) AddAuditCheckpoint(ctx context.Context, c AuditCheckpoint) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO audit_checkpoints(size, root, note, created_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (size) DO NOTHING`, c.Size, c.Root, c.Note, c.CreatedAt.UnixNano())
		if err != nil {
			return fmt.Errorf("insert: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrCheckpointExists
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO audit_outbox(sink, size, enqueued_at)
			SELECT DISTINCT sink, CAST(? AS BIGINT), CAST(? AS BIGINT) FROM outbox_routes`, c.Size, c.CreatedAt.UnixNano()); err != nil {
			return fmt.Errorf("enqueue for sinks: %w", err)
		}
		return nil
	})
	if err != nil && !errors.Is(err, ErrCheckpointExists) {
		return fmt.Errorf("store: add audit checkpoint at %d: %w", c.Size, err)
	}
	if err == nil {
		s.notify() // wake sink dispatchers
	}
	return err
}

// AuditCheckpoints returns every stored checkpoint, smallest size first.
func (s *Store) AuditCheckpoints(ctx context.Context) ([]AuditCheckpoint, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT size, root, note, created_at FROM audit_checkpoints ORDER BY size`)
	if err != nil {
		return nil, fmt.Errorf("store: audit checkpoints: %w", err)
	}
	defer rows.Close()
	var out []AuditCheckpoint
	for rows.Next() {
		var c AuditCheckpoint
		var at int64
		if err := rows.Scan(&c.Size, &c.Root, &c.Note, &at); err != nil {
			return nil, fmt.Errorf("store: audit checkpoints: %w", err)
		}
		c.CreatedAt = time.Unix(0, at).UTC()
		out = append(out, c)
	}
	return out, rows.Err()
}

// LatestAuditCheckpointSize is the size of the largest stored checkpoint (0 when none).
func (s *Store) LatestAuditCheckpointSize(ctx context.Context) (int64, error) {
	var n sql.NullInt64
	if err := s.db.QueryRowContext(ctx, `SELECT MAX(size) FROM audit_checkpoints`).Scan(&n); err != nil {
		return 0, fmt.Errorf("store: latest audit checkpoint: %w", err)
	}
	return n.Int64, nil
}

// ClaimAuditOutbox returns up to max checkpoints due for sink, oldest first. Checkpoints are
// few and small, so there is no lease: the sink's single dispatcher is the only reader.
func (s *Store) ClaimAuditOutbox(ctx context.Context, sink string, now time.Time, max int) ([]AuditCheckpoint, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT c.size, c.root, c.note, c.created_at
		FROM audit_outbox o JOIN audit_checkpoints c ON c.size = o.size
		WHERE o.sink = ? AND o.dead = 0 AND o.next_attempt_at <= ? ORDER BY o.size LIMIT ?`, sink, now.UnixNano(), max)
	if err != nil {
		return nil, fmt.Errorf("store: claim audit outbox of %s: %w", sink, err)
	}
	defer rows.Close()
	var out []AuditCheckpoint
	for rows.Next() {
		var c AuditCheckpoint
		var at int64
		if err := rows.Scan(&c.Size, &c.Root, &c.Note, &at); err != nil {
			return nil, fmt.Errorf("store: claim audit outbox of %s: %w", sink, err)
		}
		c.CreatedAt = time.Unix(0, at).UTC()
		out = append(out, c)
	}
	return out, rows.Err()
}

// SettleAuditOutbox records the outcome of delivering checkpoints (by size) to sink:
// delivered ones leave the queue, retried ones wait until next, dead ones stay with reason
// and dead=1 (they are listed with the dead letters and can be replayed).
func (s *Store) SettleAuditOutbox(ctx context.Context, sink string, delivered, retry, dead []int64, next, now time.Time, reason string) error {
	reason = boundReason(reason)
	err := s.write(ctx, func(tx *sql.Tx) error {
		for _, n := range delivered {
			if _, err := tx.ExecContext(ctx, `DELETE FROM audit_outbox WHERE sink = ? AND size = ?`, sink, n); err != nil {
				return err
			}
		}
		for _, n := range retry {
			if _, err := tx.ExecContext(ctx, `UPDATE audit_outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?
				WHERE sink = ? AND size = ?`, next.UnixNano(), reason, sink, n); err != nil {
				return err
			}
		}
		for _, n := range dead {
			if _, err := tx.ExecContext(ctx, `UPDATE audit_outbox SET attempts = attempts + 1, dead = 1, failed_at = ?, last_error = ?
				WHERE sink = ? AND size = ?`, now.UnixNano(), reason, sink, n); err != nil {
				return err
			}
		}
		if len(delivered) > 0 {
			if _, err := tx.ExecContext(ctx, `INSERT INTO outbox_counters(sink, checkpoints_delivered) VALUES (?, ?)
				ON CONFLICT (sink) DO UPDATE SET checkpoints_delivered = outbox_counters.checkpoints_delivered + excluded.checkpoints_delivered`,
				sink, len(delivered)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: settle audit checkpoints for %s: %w", sink, err)
	}
	return nil
}
