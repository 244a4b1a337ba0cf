package store

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
)

// Several collector replicas may share one PostgreSQL database (docs/operations.md,
// "Scale-out"). What SQLite gets from being one process with one writer, PostgreSQL gets
// from locks:
//
//   - Migrations run under a session advisory lock, so replicas starting together apply
//     each migration once.
//   - Every transaction that inserts events takes a transaction advisory lock first. Event
//     rowids (an identity column) then grow in commit order across replicas, which is what
//     Follow, the facts indexer and every other rowid cursor rely on; group commit (one lock
//     per transaction of many agents' batches) keeps the serialised part short.
//   - Outbox claims lock their rows (FOR UPDATE SKIP LOCKED) and record the replica that
//     holds the lease; a replica releases at start only its own old leases, and takes over
//     another replica's leases only when that replica stopped heartbeating (outbox.go).

// Advisory lock keys ("ward" in ASCII, then a purpose).
const (
	pgLockMigrate = 0x77617264_0001
	pgLockEvents  = 0x77617264_0002
)

// OpenPostgres connects to the PostgreSQL database named by dsn (a libpq URL or key=value
// string) and brings its schema up to date. replica names this collector among those
// sharing the database; empty picks a random one.
func OpenPostgres(ctx context.Context, dsn, replica string) (*Store, error) {
	conn, err := newPGConnector(dsn)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(16)
	db.SetMaxIdleConns(16)
	db.SetConnMaxIdleTime(5 * time.Minute)
	if replica == "" {
		replica = uuid.NewString()
	}
	s := &Store{db: db, changed: make(chan struct{}), pg: true, replica: replica, outbox: true,
		fleet: true}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store: connect to postgres: %w", err)
	}
	lock, err := db.Conn(ctx)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store: postgres: %w", err)
	}
	defer lock.Close()
	if _, err := lock.ExecContext(ctx, `SELECT pg_advisory_lock(?)`, int64(pgLockMigrate)); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store: postgres: lock for migrations: %w", err)
	}
	err = s.migrate(ctx, len(migrations))
	if _, uerr := lock.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(?)`, int64(pgLockMigrate)); uerr != nil && err == nil {
		err = uerr
	}
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store: postgres: migrate: %w", err)
	}
	_ = slices.Index(migrations, fleetSchema)
	return s, nil
}

// Postgres reports whether the store is PostgreSQL (shared by replicas) rather than SQLite.
func (s *Store) Postgres() bool { return s.pg }

// Replica is this process's name among collectors sharing a PostgreSQL store.
func (s *Store) Replica() string { return s.replica }

// schemaSQL is migration v (0 for the bookkeeping table) in this store's dialect.
func (s *Store) schemaSQL(v int, sqlite string) string {
	if !s.pg {
		return sqlite
	}
	if o, ok := pgMigrationOverrides[v]; ok {
		return o
	}
	return pgDDL(sqlite)
}

// pgMigrationOverrides are PostgreSQL forms of migrations the translation cannot produce.
var pgMigrationOverrides = map[int]string{}

// lockEvents serialises event inserts across replicas for the rest of tx (PostgreSQL only).
func (s *Store) lockEvents(ctx context.Context, tx *sql.Tx) error {
	if !s.pg {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(?)`, int64(pgLockEvents)); err != nil {
		return fmt.Errorf("lock event inserts: %w", err)
	}
	return nil
}
