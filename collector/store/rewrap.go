package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// RewrapProgress is reported after every committed batch of Rewrap.
type RewrapProgress struct {
	Done      int            // rows rewritten so far in this run
	Remaining int            // rows not yet under the current key
	ByOldKey  map[string]int // rows rewritten, by the key they were under ("" = stored in clear)
}

// RewrapResult is what Rewrap did.
type RewrapResult struct {
	RewrapProgress
	// RetiredKeys are the key ids no row uses any more, removed from the record of keys in
	// use: the collector now starts without them, so they can leave the ring.
	RetiredKeys []string
	CurrentKey  string
}

// Rewrap re-encrypts, under the ring's current key, every event row stored in clear (before
// evidence encryption was enabled) or under an older key, batch rows per transaction. Each
// row is decrypted with its key, sealed under the current one, and the new ciphertext is
// opened again before the update is written, in the same transaction that read the row:
// a row is never left unreadable, and an interrupted run resumes where it stopped (the
// rows already rewritten are under the current key and are not selected again). Rows
// stored in clear lose their clear path, exe and user columns, as encrypted rows have none.
// Keys no row uses any more are retired from evidence_keys at the end. progress may be nil.
func (s *Store) Rewrap(ctx context.Context, batch int, progress func(RewrapProgress)) (RewrapResult, error) {
	ring := s.evidence.Load()
	if ring == nil || ring.current == "" {
		return RewrapResult{}, errors.New("store: rewrap needs evidence encryption configured (evidence_encryption.key_file or " + EvidenceKeyEnv + "): there is no key to rewrap to")
	}
	if batch <= 0 {
		batch = 500
	}
	res := RewrapResult{CurrentKey: ring.current}
	res.ByOldKey = map[string]int{}
	var after int64
	for {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		n := 0
		err := s.write(ctx, func(tx *sql.Tx) error {
			rows, err := tx.QueryContext(ctx, `SELECT rowid, agent_id, seq, payload, key_id FROM events
				WHERE key_id <> ? AND rowid > ? ORDER BY rowid LIMIT ?`, ring.current, after, batch)
			if err != nil {
				return fmt.Errorf("select rows to rewrap: %w", err)
			}
			type row struct {
				id      int64
				agent   string
				seq     int64
				payload []byte
				key     string
			}
			var todo []row
			for rows.Next() {
				var r row
				if err := rows.Scan(&r.id, &r.agent, &r.seq, &r.payload, &r.key); err != nil {
					rows.Close()
					return fmt.Errorf("read row to rewrap: %w", err)
				}
				todo = append(todo, r)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return fmt.Errorf("read rows to rewrap: %w", err)
			}
			if len(todo) == 0 {
				return nil
			}
			sl, err := ring.newSealer()
			if err != nil {
				return err
			}
			op := &opener{keys: ring}
			check := &opener{keys: ring}
			for _, r := range todo {
				plain := r.payload
				if r.key != "" {
					if plain, err = op.open(r.key, r.agent, r.seq, r.payload); err != nil {
						return fmt.Errorf("row %d (agent %s seq %d): %w", r.id, r.agent, r.seq, err)
					}
				}
				sealed := sl.seal(r.agent, r.seq, plain)
				back, err := check.open(sl.keyID, r.agent, r.seq, sealed)
				if err != nil || string(back) != string(plain) {
					return fmt.Errorf("row %d: the rewrapped payload does not decrypt back to the original (%v); nothing of this batch is written", r.id, err)
				}
				upd, err := tx.ExecContext(ctx, `UPDATE events SET payload = ?, key_id = ?, path = '', exe = '', user = ''
					WHERE rowid = ? AND key_id = ?`, sealed, sl.keyID, r.id, r.key)
				if err != nil {
					return fmt.Errorf("rewrap row %d: %w", r.id, err)
				}
				if k, _ := upd.RowsAffected(); k != 1 {
					return fmt.Errorf("rewrap row %d: changed underneath (rows affected %d)", r.id, k)
				}
				res.ByOldKey[r.key]++
				after = r.id
				n++
			}
			return nil
		})
		if err != nil {
			return res, fmt.Errorf("store: rewrap: %w", err)
		}
		res.Done += n
		var left int
		if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM events WHERE key_id <> ?`, ring.current).Scan(&left); err != nil {
			return res, fmt.Errorf("store: rewrap: count remaining: %w", err)
		}
		res.Remaining = left
		if progress != nil {
			progress(res.RewrapProgress)
		}
		if n == 0 {
			break
		}
	}
	// Retire keys no row uses. New rows are written only under the current key, so a key
	// unused now stays unused.
	err := s.write(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT id FROM evidence_keys WHERE id <> ? AND NOT EXISTS
			(SELECT 1 FROM events WHERE events.key_id = evidence_keys.id)`, ring.current)
		if err != nil {
			return err
		}
		var ids []string
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return err
			}
			ids = append(ids, id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, id := range ids {
			if _, err := tx.ExecContext(ctx, `DELETE FROM evidence_keys WHERE id = ?`, id); err != nil {
				return err
			}
		}
		res.RetiredKeys = ids
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("store: rewrap: retire keys: %w", err)
	}
	return res, nil
}
