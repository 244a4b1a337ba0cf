package store

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
)

// Prepared statements for the ingest hot path. modernc's driver compiles the SQL of every
// ExecContext/QueryContext call from scratch, and on the ingest path parsing cost more than
// executing (a quarter of the collector's CPU under a thousand agents). Statements prepared
// once on the pool are prepared once per connection by database/sql, and a transaction
// reuses its connection's copy through Tx.StmtContext.
type stmtCache struct {
	m sync.Map // query → *sql.Stmt
}

// prepared returns the pool-level prepared statement for query, preparing it on first use.
func (s *Store) prepared(ctx context.Context, query string) (*sql.Stmt, error) {
	if st, ok := s.stmts.m.Load(query); ok {
		return st.(*sql.Stmt), nil
	}
	st, err := s.db.PrepareContext(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("prepare: %w", err)
	}
	if prev, loaded := s.stmts.m.LoadOrStore(query, st); loaded {
		_ = st.Close()
		return prev.(*sql.Stmt), nil
	}
	return st, nil
}

// txStmt returns query prepared for use inside tx (closed with tx; the connection keeps
// its compiled copy for the next transaction).
func (s *Store) txStmt(ctx context.Context, tx *sql.Tx, query string) (*sql.Stmt, error) {
	st, err := s.prepared(ctx, query)
	if err != nil {
		return nil, err
	}
	return tx.StmtContext(ctx, st), nil
}

// closeStmts releases every cached statement (Close).
func (s *Store) closeStmts() {
	s.stmts.m.Range(func(k, v any) bool {
		_ = v.(*sql.Stmt).Close()
		s.stmts.m.Delete(k)
		return true
	})
}
