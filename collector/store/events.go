package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
)

// Event kinds, named after the Event payload oneof.
const (
	KindProcess = "process"
	KindFile    = "file"
	KindFinding = "finding"
	KindHealth  = "health"
	// KindFlow is a network connection summary from the agent's flow sensor.
	KindFlow = "flow"
	// KindFleet is an alert the collector raises about an agent (silent, back, revoked
	// contact); stored under that agent's id with a negative seq (fleet.go).
	KindFleet = "fleet"
	// KindAccess is a process reading a file tagged as holding regulated data (lineage).
	KindAccess = "access"
)

// Record is one event ready to store: the proto bytes plus the columns the admin API filters
// and displays on. The columns are derived from the proto only, so they hold nothing the
// agent did not already put in the event.
type Record struct {
	EventID   string
	AgentID   string
	Seq       uint64
	Time      time.Time
	Kind      string
	Severity  wardv1.Severity
	DataClass wardv1.DataClass
	Host      string
	Path      string
	PID       uint32
	Exe       string
	User      string
	// Payload is the Event in protobuf wire format.
	Payload []byte
}

// StoredEvent is a Record as read back, with the store's metadata.
type StoredEvent struct {
	Record
	RowID      int64
	ReceivedAt time.Time
	// Encrypted is true when the row is encrypted at rest (evidence.go); Payload is then the
	// decrypted Event.
	Encrypted bool

	// decoded is the Event already decoded while decrypting; decodeErr is why the row could
	// not be decrypted or decoded.
	decoded   *wardv1.Event
	decodeErr error
}

// Event decodes the stored payload. For a row encrypted with a key the store does not
// have, the error wraps ErrEvidenceKey.
func (e StoredEvent) Event() (*wardv1.Event, error) {
	if e.decodeErr != nil {
		return nil, e.decodeErr
	}
	if e.decoded != nil {
		return e.decoded, nil
	}
	return e.decode()
}

func (e StoredEvent) decode() (*wardv1.Event, error) {
	ev := &wardv1.Event{}
	if err := proto.Unmarshal(e.Payload, ev); err != nil {
		return nil, fmt.Errorf("store: decode event rowid %d: %w", e.RowID, err)
	}
	return ev, nil
}

// RecordFromEvent derives the stored columns from ev and marshals it.
func RecordFromEvent(ev *wardv1.Event) (Record, error) {
	payload, err := proto.MarshalOptions{Deterministic: true}.Marshal(ev)
	if err != nil {
		return Record{}, fmt.Errorf("store: marshal event: %w", err)
	}
	r := deriveColumns(ev)
	if r.Kind == "" {
		return Record{}, errors.New("store: event has no payload")
	}
	r.Payload = payload
	return r, nil
}

// deriveColumns computes the stored columns of ev (Kind "" for an event without payload).
func deriveColumns(ev *wardv1.Event) Record {
	r := Record{
		EventID: ev.GetId(),
		AgentID: ev.GetAgentId(),
		Seq:     ev.GetSeq(),
		Time:    ev.GetTime().AsTime(),
		Host:    ev.GetHost().GetHostname(),
	}
	var proc *wardv1.Process
	switch p := ev.GetPayload().(type) {
	case *wardv1.Event_Process:
		r.Kind = KindProcess
		proc = p.Process.GetProcess()
	case *wardv1.Event_File:
		r.Kind = KindFile
		r.Path = p.File.GetPath()
		proc = p.File.GetProcess()
	case *wardv1.Event_Finding:
		r.Kind = KindFinding
		r.Severity = p.Finding.GetDecision().GetSeverity()
		r.DataClass = p.Finding.GetDataClass()
		r.Path = p.Finding.GetFile().GetPath()
		proc = p.Finding.GetProcess()
	case *wardv1.Event_Health:
		r.Kind = KindHealth
	case *wardv1.Event_Flow:
		r.Kind = KindFlow
		r.Path = net.JoinHostPort(p.Flow.GetRemoteAddress(), strconv.FormatUint(uint64(p.Flow.GetRemotePort()), 10))
		proc = p.Flow.GetProcess()
	case *wardv1.Event_Access:
		r.Kind = KindAccess
		r.DataClass = p.Access.GetDataClass()
		r.Path = p.Access.GetPath()
		proc = p.Access.GetProcess()
	case *wardv1.Event_Fleet:
		r.Kind = KindFleet
		r.Severity = FleetSeverity(p.Fleet.GetKind())
	default:
		return r
	}
	r.PID = proc.GetPid()
	r.Exe = proc.GetExe()
	r.User = proc.GetUser()
	return r
}

// SeqRange is an inclusive range of sequence numbers.
type SeqRange struct{ First, Last uint64 }

// CoalesceSeqs turns sequence numbers (any order, duplicates allowed) into the fewest
// inclusive ranges, ascending.
func CoalesceSeqs(seqs []uint64) []SeqRange {
	if len(seqs) == 0 {
		return nil
	}
	s := slices.Clone(seqs)
	slices.Sort(s)
	out := []SeqRange{{s[0], s[0]}}
	for _, v := range s[1:] {
		last := &out[len(out)-1]
		switch {
		case v <= last.Last: // duplicate
		case v == last.Last+1:
			last.Last = v
		default:
			out = append(out, SeqRange{v, v})
		}
	}
	return out
}

// InsertResult says what a batch insert did.
type InsertResult struct {
	Inserted   int
	Duplicates int
	// Acked covers every record of the batch, stored now or before.
	Acked []SeqRange
}

// InsertEvents stores a batch from one agent in one transaction. Records already stored under
// the same (agent_id, seq) are skipped, not overwritten: the first copy wins, and resends are
// acknowledged like new events. It also updates the agent's last_seen. The result is returned
// only after the commit, so callers may acknowledge it to the agent.
func (s *Store) InsertEvents(ctx context.Context, agentID string, recs []Record, now time.Time) (InsertResult, error) {
	var res InsertResult
	seqs := make([]uint64, 0, len(recs))
	// Sealed outside the write lock: encryption is the only CPU-heavy part of a batch.
	rows, lastHealth, err := s.sealRecords(recs, now)
	if err != nil {
		return InsertResult{}, fmt.Errorf("store: insert %d events from %s: %w", len(recs), agentID, err)
	}
	// Grouped with other agents' batches into one commit (group.go), and still answered
	// only after that commit.
	err = s.writeGrouped(ctx, func(tx *sql.Tx) error {
		// The transaction is shared with other agents' batches: a caller that gives up must
		// not abort it (PostgreSQL closes a connection whose query is cancelled). The
		// committer skips requests already cancelled before running them.
		ctx := context.WithoutCancel(ctx)
		touch := `UPDATE agents SET last_seen = MAX(COALESCE(last_seen, 0), ?),
			last_health_at = COALESCE(?, last_health_at) WHERE id = ?`
		if !s.fleet { // schemas older than fleetSchema, which tests build with openAt
			touch = `UPDATE agents SET last_seen = MAX(COALESCE(last_seen, 0), ?), last_seen = COALESCE(?, last_seen) WHERE id = ?`
		}
		for _, r := range recs {
			if r.AgentID != agentID {
				return fmt.Errorf("event seq %d belongs to agent %q, not %q", r.Seq, r.AgentID, agentID)
			}
			if r.Seq == 0 || r.Seq > 1<<63-1 {
				return fmt.Errorf("event seq %d out of range", r.Seq)
			}
		}
		// Multi-row inserts and their outbox entries (ingest_rows.go).
		fresh, err := s.insertEventRows(ctx, tx, recs, rows, now)
		if err != nil {
			return err
		}
		for _, r := range recs {
			if fresh[int64(r.Seq)] {
				res.Inserted++
				delete(fresh, int64(r.Seq)) // a seq twice in one batch is stored once
			} else {
				res.Duplicates++
			}
			seqs = append(seqs, r.Seq)
		}
		touchStmt, err := s.txStmt(ctx, tx, touch)
		if err != nil {
			return fmt.Errorf("update last_seen: %w", err)
		}
		if _, err := touchStmt.ExecContext(ctx, now.UnixNano(), lastHealth, agentID); err != nil {
			return fmt.Errorf("update last_seen: %w", err)
		}
		return nil
	})
	if err != nil {
		return InsertResult{}, fmt.Errorf("store: insert %d events from %s: %w", len(recs), agentID, err)
	}
	if res.Inserted > 0 {
		s.notify()
	}
	res.Acked = CoalesceSeqs(seqs)
	return res, nil
}

// Filter selects events. The zero value selects everything, oldest first.
type Filter struct {
	// AfterRowID returns only events with a larger rowid: the cursor for paging and following.
	AfterRowID int64
	// Since returns only events whose activity time is at or after it.
	Since   time.Time
	Kind    string
	AgentID string
	// Limit caps the result; 0 means DefaultLimit, and it is never above MaxLimit.
	Limit int
	// Newest returns the last Limit matching events instead of the first (still oldest first).
	Newest bool
}

// Limits on one List call.
const (
	DefaultLimit = 100
	MaxLimit     = 10000
)

// ListEvents returns events matching f in rowid (commit) order.
func (s *Store) ListEvents(ctx context.Context, f Filter) ([]StoredEvent, error) {
	var where []string
	var args []any
	if f.AfterRowID > 0 {
		where = append(where, "rowid > ?")
		args = append(args, f.AfterRowID)
	}
	if !f.Since.IsZero() {
		where = append(where, "time >= ?")
		args = append(args, f.Since.UnixNano())
	}
	if f.Kind != "" {
		where = append(where, "kind = ?")
		args = append(args, f.Kind)
	}
	if f.AgentID != "" {
		where = append(where, "agent_id = ?")
		args = append(args, f.AgentID)
	}
	limit := f.Limit
	if limit <= 0 {
		limit = DefaultLimit
	}
	limit = min(limit, MaxLimit)
	q := `SELECT rowid, event_id, agent_id, seq, time, received_at, kind, severity, data_class, host, path, pid, exe, user, payload, key_id FROM events`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	if f.Newest {
		q += " ORDER BY rowid DESC"
	} else {
		q += " ORDER BY rowid"
	}
	q += " LIMIT ?"
	args = append(args, limit)

	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("store: list events: %w", err)
	}
	defer rows.Close()
	var out []StoredEvent
	op := s.opener()
	for rows.Next() {
		var e StoredEvent
		var seq, t, recv, pid int64
		var sev, class int32
		var keyID string
		if err := rows.Scan(&e.RowID, &e.EventID, &e.AgentID, &seq, &t, &recv, &e.Kind, &sev, &class,
			&e.Host, &e.Path, &pid, &e.Exe, &e.User, &e.Payload, &keyID); err != nil {
			return nil, fmt.Errorf("store: list events: %w", err)
		}
		op.openStored(&e, keyID, seq)
		e.Seq = storedSeq(seq)
		e.Time = time.Unix(0, t).UTC()
		e.ReceivedAt = time.Unix(0, recv).UTC()
		e.Severity = wardv1.Severity(sev)
		e.DataClass = wardv1.DataClass(class)
		e.PID = uint32(pid)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list events: %w", err)
	}
	if f.Newest {
		slices.Reverse(out)
	}
	return out, nil
}

// LastRowID returns the largest event rowid (0 when there are none): where a follower that
// wants only new events starts.
func (s *Store) LastRowID(ctx context.Context) (int64, error) {
	var v sql.NullInt64
	if err := s.db.QueryRowContext(ctx, `SELECT MAX(rowid) FROM events`).Scan(&v); err != nil {
		return 0, fmt.Errorf("store: last rowid: %w", err)
	}
	return v.Int64, nil
}

// Follow calls fn for every event matching f with a rowid above f.AfterRowID, in order, now
// and as they are committed, until ctx ends or fn fails. f.Limit and f.Newest are ignored.
//
// It never misses or repeats an event: writes are serialised and rowids only grow, so a
// snapshot that shows rowid N also shows every committed rowid below N, and the cursor only
// moves past events fn has seen. The change channel is taken before each query, so a commit
// between the query and the wait still wakes the loop.
func (s *Store) Follow(ctx context.Context, f Filter, fn func(StoredEvent) error) error {
	f.Newest = false
	f.Limit = 1000
	for {
		changed := s.changedCh()
		batch, err := s.ListEvents(ctx, f)
		if err != nil {
			return err
		}
		for _, e := range batch {
			if err := fn(e); err != nil {
				return err
			}
			f.AfterRowID = e.RowID
		}
		if len(batch) == f.Limit {
			continue // more are waiting
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}
