package store

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"time"
)

// Replica liveness for collectors sharing a PostgreSQL store. Each replica heartbeats into
// collector_replicas; an outbox lease held by a replica whose heartbeat is older than
// replicaStaleAfter is claimable at once, so the batches a killed replica had claimed are
// delivered by a survivor within seconds rather than after the lease (minutes). A live
// replica's leases are never taken: two replicas never deliver the same batch at once.
const (
	// localReplica owns the outbox leases of a SQLite store (one collector).
	localReplica      = "local"
	replicaHeartbeat  = 2 * time.Second
	replicaStaleAfter = 10 * time.Second
)

// claimable is the SQL condition under which an outbox row (table alias t) may be claimed:
// its lease has passed, or it is held by a replica that stopped heartbeating (the
// placeholder p is bound to staleBefore(now)). The lease time is the first parameter.
func (s *Store) claimable(t, p string) string {
	if !s.pg { // one collector: only the lease time counts (p is bound but unused)
		return `(` + t + `.lease_until <= ? OR ` + p + ` < 0)`
	}
	return `(` + t + `.lease_until <= ? OR (` + t + `.lease_owner <> '' AND NOT EXISTS (SELECT 1 FROM collector_replicas cr
		WHERE cr.id = ` + t + `.lease_owner AND cr.heartbeat_at >= ` + p + `)))`
}

// staleBefore is the heartbeat time below which a replica counts as dead.
func (s *Store) staleBefore(now time.Time) int64 {
	return now.Add(-replicaStaleAfter).UnixNano()
}

// skipLocked makes a claim skip rows another replica's claim transaction holds, instead of
// waiting for it and then claiming the same rows (PostgreSQL; SQLite has one writer).
func (s *Store) skipLocked(alias string) string {
	if !s.pg {
		return ""
	}
	return ` FOR UPDATE OF ` + alias + ` SKIP LOCKED`
}

// Heartbeat records this replica as alive now. A collector on PostgreSQL calls it once
// before its sink dispatchers start (a replica without a fresh heartbeat counts as dead, and
// its leases may be taken), then keeps it fresh with RunReplicaHeartbeat.
func (s *Store) Heartbeat(ctx context.Context) error {
	if !s.pg {
		return nil
	}
	now := time.Now().UnixNano()
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO collector_replicas(id, started_at, heartbeat_at) VALUES (?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at`, s.replica, now, now)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: replica heartbeat: %w", err)
	}
	return nil
}

// RunReplicaHeartbeat records this replica as alive until ctx ends, then removes it so its
// leases are taken over at once. It does nothing on SQLite.
func (s *Store) RunReplicaHeartbeat(ctx context.Context, log *slog.Logger) {
	if !s.pg {
		return
	}
	beat := s.Heartbeat
	t := time.NewTicker(replicaHeartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_, err := s.db.ExecContext(dctx, `DELETE FROM collector_replicas WHERE id = ?`, s.replica)
			cancel()
			if err != nil {
				log.Warn("replica heartbeat: deregister", "replica", s.replica, "err", err)
			}
			return
		case <-t.C:
			if err := beat(ctx); err != nil && ctx.Err() == nil {
				log.Error("replica heartbeat", "replica", s.replica, "err", err)
			}
		}
	}
}
