package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
)

// Group commit. With synchronous=FULL every commit is an fsync of the WAL, and one fsync
// costs about as much as inserting a few hundred rows. A thousand agents exporting at once
// would each pay for their own, serialised behind the write lock, so ingest commits
// concurrent batches together: a single committer goroutine takes every batch that queued
// while the previous commit was on disk, runs each in its own savepoint of one transaction
// and commits once. Nobody waits for a timer: under light load a group is one batch and
// commits at once; under heavy load groups grow by themselves. Each caller still gets its
// answer only after the commit that holds its rows, so acknowledgements stay durable.

// maxGroup bounds how many batches share one transaction, so one commit (and the write
// lock it holds) stays short even when thousands of agents are queued.
const maxGroup = 128

// errStoreClosed is returned to writers queued when the store closes.
var errStoreClosed = errors.New("store is closed")

type groupReq struct {
	ctx  context.Context
	fn   func(*sql.Tx) error
	done chan error
}

// grouper is the committer's state; its zero value is ready (the goroutine starts lazily).
type grouper struct {
	once  sync.Once
	stop  sync.Once
	reqs  chan *groupReq
	quit  chan struct{}
	ended chan struct{}
}

// writeGrouped runs fn in a write transaction shared with other concurrent writeGrouped
// calls and returns once that transaction committed (nil) or fn's own error. fn runs inside
// a savepoint: when it fails, only its own changes are rolled back. fn may run on the
// committer goroutine, so it must not call other Store write methods.
func (s *Store) writeGrouped(ctx context.Context, fn func(*sql.Tx) error) error {
	g := &s.group
	g.once.Do(func() {
		g.reqs = make(chan *groupReq, maxGroup)
		g.quit = make(chan struct{})
		g.ended = make(chan struct{})
		go s.commitGroups()
	})
	r := &groupReq{ctx: ctx, fn: fn, done: make(chan error, 1)}
	select {
	case <-g.quit:
		return errStoreClosed
	default:
	}
	select {
	case g.reqs <- r:
	case <-g.quit:
		return errStoreClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	// Wait for the outcome even when ctx ends: the committer may be running fn right now.
	// A cancelled request is noticed by fn's statements, which fail and roll back. A
	// request queued as the store closed is never run.
	select {
	case err := <-r.done:
		return err
	case <-g.ended:
		select {
		case err := <-r.done:
			return err
		default:
			return errStoreClosed
		}
	}
}

// stopGroups ends the committer; queued writers get errStoreClosed. It is idempotent, as
// Close may be called twice.
func (s *Store) stopGroups() {
	g := &s.group
	g.once.Do(func() {}) // a never-started grouper stays stopped
	g.stop.Do(func() {
		if g.quit != nil {
			close(g.quit)
			<-g.ended
		}
	})
}

func (s *Store) commitGroups() {
	g := &s.group
	defer close(g.ended)
	batch := make([]*groupReq, 0, maxGroup)
	for {
		batch = batch[:0]
		select {
		case r := <-g.reqs:
			batch = append(batch, r)
		case <-g.quit:
			s.failQueued(errStoreClosed)
			return
		}
	fill:
		for len(batch) < maxGroup {
			select {
			case r := <-g.reqs:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		s.commitGroup(batch)
	}
}

func (s *Store) failQueued(err error) {
	for {
		select {
		case r := <-s.group.reqs:
			r.done <- err
		default:
			return
		}
	}
}

// commitGroup runs batch in one transaction, one savepoint per request.
func (s *Store) commitGroup(batch []*groupReq) {
	errs := make([]error, len(batch))
	live := 0
	for i, r := range batch {
		if err := r.ctx.Err(); err != nil {
			errs[i] = err
		} else {
			live++
		}
	}
	if live == 0 {
		for i, r := range batch {
			r.done <- errs[i]
		}
		return
	}
	// The transaction belongs to no caller; its context must outlive any one of them.
	ctx := context.Background()
	err := s.write(ctx, func(tx *sql.Tx) error {
		// PostgreSQL: one replica inserts events at a time, so rowids follow commit order.
		if err := s.lockEvents(ctx, tx); err != nil {
			return err
		}
		single := live == 1
		var savepoint, rollback, release *sql.Stmt
		if !single {
			var err error
			if savepoint, err = s.txStmt(ctx, tx, `SAVEPOINT ingest`); err != nil {
				return err
			}
			if rollback, err = s.txStmt(ctx, tx, `ROLLBACK TO ingest`); err != nil {
				return err
			}
			if release, err = s.txStmt(ctx, tx, `RELEASE ingest`); err != nil {
				return err
			}
		}
		for i, r := range batch {
			if errs[i] != nil {
				continue
			}
			if single {
				errs[i] = r.fn(tx)
				if errs[i] != nil {
					return errRolledBack
				}
				continue
			}
			if _, err := savepoint.ExecContext(ctx); err != nil {
				return fmt.Errorf("savepoint: %w", err)
			}
			if errs[i] = r.fn(tx); errs[i] != nil {
				if _, err := rollback.ExecContext(ctx); err != nil {
					return fmt.Errorf("rollback to savepoint: %w", err)
				}
			}
			if _, err := release.ExecContext(ctx); err != nil {
				return fmt.Errorf("release savepoint: %w", err)
			}
		}
		return nil
	})
	for i, r := range batch {
		switch {
		case errs[i] != nil:
			r.done <- errs[i]
		case err != nil:
			r.done <- err
		default:
			r.done <- nil
		}
	}
}

// errRolledBack aborts a single-request group whose fn failed; the caller gets fn's error.
var errRolledBack = errors.New("rolled back")
