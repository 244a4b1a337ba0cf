package store

import (
	"context"
	"fmt"
)

// OutboxTotal counts deliveries queued in the outbox over all sinks: the backlog ingest
// weighs when deciding whether to push back on agents.
func (s *Store) OutboxTotal(ctx context.Context) (int64, error) {
	if !s.outbox {
		return 0, nil
	}
	var n int64
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM outbox`).Scan(&n); err != nil {
		return 0, fmt.Errorf("store: outbox total: %w", err)
	}
	return n, nil
}
