// Package store keeps the collector's state in SQLite: enrolled agents, enrolment tokens and
// the events agents export. It uses modernc.org/sqlite (pure Go) so the collector builds with
// CGO_ENABLED=0.
//
// Durability model: the database runs in WAL mode with synchronous=FULL, and every write is
// one transaction. Callers acknowledge anything to an agent only after the transaction that
// stored it has committed, so an acknowledged event survives a crash or power loss.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// Store is the collector's database. It is safe for concurrent use.
type Store struct {
	db   *sql.DB
	path string

	// writeMu serialises write transactions inside the process. SQLite allows one writer at a
	// time anyway; queueing here instead of in busy_timeout keeps latency fair and, more
	// importantly, makes rowids grow in commit order, which the follow cursor relies on.
	writeMu sync.Mutex

	// notifyMu guards changed, a channel closed (and replaced) whenever events commit.
	notifyMu sync.Mutex
	changed  chan struct{}

	// outbox is true when the schema has the SIEM outbox (always, except for the old
	// schemas tests build with openAt).
	outbox bool

	// fleet is true when the schema has fleetSchema's columns (as outbox above).
	fleet bool

	// evidence is the key ring for encryption at rest; nil stores events in clear.
	evidence atomic.Pointer[EvidenceKeys]

	// pg is true for a PostgreSQL store (postgres.go); replica identifies this process
	// among the collectors sharing it.
	pg      bool
	replica string

	// group commits concurrent ingest batches together (group.go).
	group grouper
	// stmts caches prepared statements of the hot paths (stmts.go).
	stmts stmtCache
}

// Open opens (creating if needed) the database at path and brings its schema up to date.
// The parent directory is created with mode 0700 and the database files are kept 0600,
// because the events table holds regulated metadata.
func Open(ctx context.Context, path string) (*Store, error) {
	return openAt(ctx, path, len(migrations))
}

// openAt is Open with a ceiling on the schema version; tests use it to build old databases.
func openAt(ctx context.Context, path string, version int) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store: create directory for %s: %w", path, err)
	}
	// Create the file ourselves so its mode is 0600 whatever the umask is.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	fi, statErr := f.Stat()
	_ = f.Close()
	if statErr == nil && fi.Size() == 0 {
		// A new file gets incremental auto-vacuum before anything is written to it
		// (retention.go).
		if err := initNewFile(ctx, path); err != nil {
			return nil, fmt.Errorf("store: initialise %s: %w", path, err)
		}
	}

	q := url.Values{}
	for _, p := range []string{
		"busy_timeout(10000)",
		"journal_mode(WAL)",
		"synchronous(FULL)",
		"foreign_keys(1)",
		"temp_store(2)",
	} {
		q.Add("_pragma", p)
	}
	// BEGIN IMMEDIATE takes the write lock up front, so two writers never deadlock on a
	// read-to-write lock upgrade (which SQLite reports as SQLITE_BUSY without waiting).
	q.Set("_txlock", "immediate")
	dsn := "file:" + path + "?" + q.Encode()

	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	db.SetMaxOpenConns(8)
	s := &Store{db: db, path: path, replica: localReplica, changed: make(chan struct{}), outbox: version >= outboxSchema,
		fleet: version >= slices.Index(migrations, fleetSchema)+1}
	if err := s.migrate(ctx, version); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store: migrate %s: %w", path, err)
	}
	// WAL and SHM files are created by SQLite with the process umask; tighten them.
	for _, suffix := range []string{"-wal", "-shm"} {
		if err := os.Chmod(path+suffix, 0o600); err != nil && !errors.Is(err, os.ErrNotExist) {
			_ = db.Close()
			return nil, fmt.Errorf("store: chmod %s%s: %w", path, suffix, err)
		}
	}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error {
	s.stopGroups()
	s.closeStmts()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.db.PingContext(ctx); err != nil {
		return fmt.Errorf("store: ping: %w", err)
	}
	return nil
}

// write runs fn in one write transaction, committing when fn returns nil.
func (s *Store) write(ctx context.Context, fn func(*sql.Tx) error) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// notify wakes every follower waiting for new events.
func (s *Store) notify() {
	s.notifyMu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.notifyMu.Unlock()
}

// changedCh returns a channel that is closed the next time events commit.
func (s *Store) changedCh() <-chan struct{} {
	s.notifyMu.Lock()
	defer s.notifyMu.Unlock()
	return s.changed
}
