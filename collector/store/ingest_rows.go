package store

import (
	"context"
	"database/sql"
	"fmt"
	"iter"
	"strings"
	"time"
)

// The ingest write path. One INSERT per event costs a statement execution each (binding
// through database/sql, a statement journal, cursor setup), which dominated the collector's
// CPU under a thousand agents. Rows are therefore written with one multi-row INSERT per
// chunk of a batch, whose RETURNING clause says which rows were new (ON CONFLICT DO NOTHING
// skips resends silently), and their outbox entries with one INSERT … SELECT per chunk.

// rowsPerInsert bounds the rows of one multi-row INSERT: 15 parameters per row keeps a
// statement far below SQLite's and PostgreSQL's parameter limits (32766 and 65535).
const rowsPerInsert = 256

// pieces splits n rows into statements of power-of-two sizes up to rowsPerInsert, yielding
// (offset, size): statements are prepared and cached per text, so a handful of sizes keeps
// the cache small (9 texts per query) while a batch of n rows needs at most a few statements.
func pieces(n int) iter.Seq2[int, int] {
	return func(yield func(int, int) bool) {
		off := 0
		for size := rowsPerInsert; size > 0; size /= 2 {
			for n-off >= size {
				if !yield(off, size) {
					return
				}
				off += size
			}
		}
	}
}

// insertedRow is an event row a chunk insert created.
type insertedRow struct {
	rowid int64
	seq   int64
}

// insertEventRows writes recs (already sealed as rows) and queues the new ones for the sinks.
// It returns the seqs that were new; the others were stored before.
func (s *Store) insertEventRows(ctx context.Context, tx *sql.Tx, recs []Record, rows []sealedRow, now time.Time) (map[int64]bool, error) {
	fresh := make(map[int64]bool, len(recs))
	for start, n := range pieces(len(recs)) {
		end := start + n
		ins, err := s.insertChunk(ctx, tx, recs[start:end], rows[start:end], now)
		if err != nil {
			return nil, err
		}
		if len(ins) == 0 {
			continue
		}
		rowids := make([]int64, len(ins))
		for i, r := range ins {
			fresh[r.seq] = true
			rowids[i] = r.rowid
		}
		if err := s.enqueueOutboxRows(ctx, tx, rowids, now); err != nil {
			return nil, fmt.Errorf("enqueue for sinks: %w", err)
		}
	}
	return fresh, nil
}

func (s *Store) insertChunk(ctx context.Context, tx *sql.Tx, recs []Record, rows []sealedRow, now time.Time) ([]insertedRow, error) {
	cols := 15
	if !s.fleet { // schemas older than fleetSchema (no key_id), which tests build with openAt
		cols = 14
	}
	var q strings.Builder
	q.WriteString(`INSERT INTO events
		(event_id, agent_id, seq, time, received_at, kind, severity, data_class, host, path, pid, exe, user, payload`)
	if cols == 15 {
		q.WriteString(`, key_id`)
	}
	q.WriteString(`) VALUES `)
	row := "(?" + strings.Repeat(", ?", cols-1) + ")"
	for i := range recs {
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString(row)
	}
	q.WriteString(` ON CONFLICT (agent_id, seq) DO NOTHING RETURNING rowid, seq`)
	args := make([]any, 0, cols*len(recs))
	for i, r := range recs {
		w := rows[i]
		args = append(args, r.EventID, r.AgentID, int64(r.Seq), r.Time.UnixNano(), now.UnixNano(),
			r.Kind, int32(r.Severity), int32(r.DataClass), r.Host, w.path, int64(r.PID), w.exe, w.user, w.payload)
		if cols == 15 {
			args = append(args, w.keyID)
		}
	}
	st, err := s.txStmt(ctx, tx, q.String())
	if err != nil {
		return nil, fmt.Errorf("prepare insert: %w", err)
	}
	defer st.Close()
	rs, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, fmt.Errorf("insert events: %w", err)
	}
	defer rs.Close()
	var out []insertedRow
	for rs.Next() {
		var r insertedRow
		if err := rs.Scan(&r.rowid, &r.seq); err != nil {
			return nil, fmt.Errorf("insert events: %w", err)
		}
		out = append(out, r)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("insert events: %w", err)
	}
	return out, nil
}

// enqueueOutboxRows queues the just-inserted event rows for every sink whose route matches,
// with the rule of enqueueOutbox: min_severity filters findings only.
func (s *Store) enqueueOutboxRows(ctx context.Context, tx *sql.Tx, rowids []int64, now time.Time) error {
	if !s.outbox {
		return nil
	}
	for start, n := range pieces(len(rowids)) {
		if err := s.enqueueOutboxPiece(ctx, tx, rowids[start:start+n], now); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) enqueueOutboxPiece(ctx context.Context, tx *sql.Tx, rowids []int64, now time.Time) error {
	q := `INSERT INTO outbox(sink, event_rowid, enqueued_at)
		SELECT r.sink, e.rowid, ? FROM events e JOIN outbox_routes r ON r.kind = e.kind
		WHERE e.rowid IN (?` + strings.Repeat(", ?", len(rowids)-1) + `)
		AND r.min_severity <= (CASE WHEN e.kind = 'finding' THEN e.severity ELSE 5 END)`
	args := make([]any, 0, 1+len(rowids))
	args = append(args, now.UnixNano())
	for _, id := range rowids {
		args = append(args, id)
	}
	st, err := s.txStmt(ctx, tx, q)
	if err != nil {
		return err
	}
	defer st.Close()
	_, err = st.ExecContext(ctx, args...)
	return err
}
