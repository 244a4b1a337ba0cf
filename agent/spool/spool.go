// Package spool is the agent's on-disk, bounded, crash-safe event queue. It is why the
// agent survives collector outages without losing findings: every event is written here
// before anything tries to ship it, and removed only after the collector acknowledged it
// as durably stored.
//
// Layout under the spool directory:
//
//	findings/<first-seq>.seg   findings and health events (fsync'ed before Append returns)
//	telemetry/<first-seq>.seg  process and file activity (group-committed, see below)
//	state.json                 acknowledged ranges and the highest seq ever assigned
//
// Durability. A finding is on stable storage when Append returns nil. Telemetry is written
// to the page cache at once and fsync'ed by a background group commit at most every
// Options.SyncInterval (default 100 ms), or on Sync and Close: a power loss or kernel crash
// can lose up to that window of telemetry (a crash of the agent process alone loses
// nothing, the kernel still has the pages). Nothing is handed to the shipper before it is
// fsync'ed, so a seq the collector has seen can never be reused for a different event after
// a crash; the lost window shows up as a gap in seq, never as a duplicate.
//
// Bound. The total size of all segments is kept under Options.MaxBytes by deleting whole
// segments: the oldest telemetry first, findings only when no telemetry is left. Append
// never blocks on a full spool; the evicted events are counted in Stats.
package spool

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
)

// ErrClosed is returned by operations on a closed spool.
var ErrClosed = errors.New("spool: closed")

// Defaults for Options.
const (
	DefaultMaxBytes       = 256 << 20
	DefaultSegmentBytes   = 4 << 20
	DefaultMaxRecordBytes = 1 << 20
	DefaultSyncInterval   = 100 * time.Millisecond
	// How often dirty ack state is written when no segment deletion forces it earlier.
	DefaultStateInterval = time.Second
)

// Options configure a Spool. Zero values take the defaults.
type Options struct {
	// MaxBytes bounds the total size of all segment files.
	MaxBytes int64
	// SegmentBytes is the size at which a segment is sealed and a new one started. It is
	// lowered to MaxBytes/4 when needed so eviction always has whole segments to drop.
	SegmentBytes int64
	// MaxRecordBytes bounds one marshalled event; larger events are refused by Append.
	MaxRecordBytes int
	// SyncInterval is the telemetry group-commit interval.
	SyncInterval time.Duration
	// StateInterval is how often ack state is persisted when nothing forces it.
	StateInterval time.Duration
	Logger        *slog.Logger
}

// Log names one of the two priority logs.
type Log int

// The two logs. Findings are shipped first and evicted last.
const (
	Findings Log = iota
	Telemetry
	numLogs
)

func (l Log) String() string {
	if l == Findings {
		return "findings"
	}
	return "telemetry"
}

// LogFor says which log an event belongs in: findings and health outrank telemetry.
func LogFor(ev *wardv1.Event) Log {
	switch ev.GetPayload().(type) {
	case *wardv1.Event_Finding, *wardv1.Event_Health:
		return Findings
	default:
		return Telemetry
	}
}

// Stats is a snapshot of the spool's counters; they feed the Health event.
type Stats struct {
	Bytes            int64
	FindingsEvents   int // un-acked events in the findings log
	TelemetryEvents  int // un-acked events in the telemetry log
	InFlight         int
	FindingsEvicted  uint64
	TelemetryEvicted uint64
	// CorruptRecords counts records dropped at recovery or read time (torn tails, bad CRCs).
	CorruptRecords uint64
	TruncatedBytes uint64
	Segments       int
	LastSeq        uint64
}

const (
	statePending uint8 = iota
	stateInFlight
	stateAcked
)

// entry indexes one record. The index costs 24 bytes per un-deleted event in memory
// (about 20 MiB for a full 256 MiB spool of small events); event bodies stay on disk.
type entry struct {
	seq   uint64
	off   uint32 // offset of the payload (after the header)
	n     uint32 // payload length
	state uint8
}

type segment struct {
	first   uint64
	path    string
	f       *os.File
	size    int64
	entries []entry
	acked   int
	// pendingFrom is a lower bound on the index of the first pending entry.
	pendingFrom int
}

func (sg *segment) last() uint64 {
	if len(sg.entries) == 0 {
		return sg.first
	}
	return sg.entries[len(sg.entries)-1].seq
}

type plog struct {
	kind   Log
	dir    string
	segs   []*segment // oldest first; the last one is active when active != nil
	active *segment
	// durable is the highest seq in this log known to be fsync'ed; only records at or
	// below it are handed to the shipper.
	durable uint64
	lastSeq uint64 // highest seq appended to this log
	bytes   int64
	live    int // entries not yet acked
	evicted uint64
	// syncing is true while one appender fsyncs on behalf of all (group commit);
	// synced is broadcast when it finishes.
	syncing bool
	synced  *sync.Cond
}

// Spool is safe for concurrent use.
type Spool struct {
	opts Options
	dir  string
	log  *slog.Logger

	mu       sync.Mutex
	logs     [numLogs]*plog
	nextSeq  uint64
	inFlight int
	corrupt  uint64
	truncB   uint64
	dirty    bool // ack state changed since last persisted
	closed   bool
	changed  chan struct{} // closed and replaced when shippable data appears
	buf      []byte

	stop chan struct{}
	done chan struct{}
}

// Open opens or creates the spool in dir, recovering whatever a crash left behind.
func Open(dir string, opts Options) (*Spool, error) {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = DefaultSegmentBytes
	}
	if opts.SegmentBytes > opts.MaxBytes/4 {
		opts.SegmentBytes = max(opts.MaxBytes/4, 1)
	}
	if opts.MaxRecordBytes <= 0 {
		opts.MaxRecordBytes = DefaultMaxRecordBytes
	}
	if opts.SyncInterval <= 0 {
		opts.SyncInterval = DefaultSyncInterval
	}
	if opts.StateInterval <= 0 {
		opts.StateInterval = DefaultStateInterval
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Spool{
		opts:    opts,
		dir:     dir,
		log:     opts.Logger.With("component", "spool"),
		changed: make(chan struct{}),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: create %s: %w", dir, err)
	}
	st, err := readState(filepath.Join(dir, stateFile), s.log)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	maxSeq := st.MaxSeq
	for k := range numLogs {
		l := &plog{kind: k, dir: filepath.Join(dir, k.String())}
		s.logs[k] = l
		if err := os.MkdirAll(l.dir, 0o700); err != nil {
			return nil, fmt.Errorf("spool: create %s: %w", l.dir, err)
		}
		seen, err := s.recoverLog(l, st.ranges(k))
		if err != nil {
			s.closeFiles()
			return nil, err
		}
		maxSeq = max(maxSeq, seen)
	}
	s.nextSeq = maxSeq + 1
	go s.background()
	return s, nil
}

// recoverLog scans the segments of one log, truncating torn or corrupt tails, and applies
// the persisted ack ranges. Every existing segment is sealed: appends go to a new one.
//
// It returns the highest seq the log shows was ever assigned, counting segment names of
// segments whose records were all lost.
func (s *Spool) recoverLog(l *plog, acked []seqRange) (uint64, error) {
	des, err := os.ReadDir(l.dir)
	if err != nil {
		return 0, fmt.Errorf("spool: read %s: %w", l.dir, err)
	}
	var seen uint64
	for _, de := range des {
		name := de.Name()
		if strings.HasSuffix(name, ".tmp") {
			_ = os.Remove(filepath.Join(l.dir, name))
			continue
		}
		if !strings.HasSuffix(name, ".seg") {
			continue
		}
		first, err := strconv.ParseUint(strings.TrimSuffix(name, ".seg"), 10, 64)
		if err != nil || first == 0 {
			s.log.Warn("ignoring unexpected file in spool", "log", l.kind.String(), "file", name)
			continue
		}
		sg, err := s.recoverSegment(l, filepath.Join(l.dir, name), first)
		if err != nil {
			return 0, err
		}
		seen = max(seen, sg.last())
		l.segs = append(l.segs, sg)
	}
	slices.SortFunc(l.segs, func(a, b *segment) int { return cmp.Compare(a.first, b.first) })
	keep := l.segs[:0]
	for _, sg := range l.segs {
		applyAcks(sg, acked)
		if sg.acked == len(sg.entries) {
			// Fully acked (or emptied by recovery): nothing left to ship.
			sg.f.Close()
			if err := os.Remove(sg.path); err != nil && !errors.Is(err, os.ErrNotExist) {
				return 0, fmt.Errorf("spool: remove %s: %w", sg.path, err)
			}
			continue
		}
		keep = append(keep, sg)
		l.bytes += sg.size
		l.live += len(sg.entries) - sg.acked
		l.lastSeq = max(l.lastSeq, sg.last())
	}
	l.segs = keep
	l.durable = l.lastSeq
	return seen, nil
}

// recoverSegment reads one segment file, verifying every record. A record with a bad
// checksum but an intact length is skipped when the record after it verifies; anything
// less certain truncates the segment at the damage, since a wrong length would make
// every later "record" garbage.
func (s *Spool) recoverSegment(l *plog, path string, first uint64) (*segment, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spool: open segment %s: %w", path, err)
	}
	data, err := readAll(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("spool: read segment %s: %w", path, err)
	}
	maxN := s.opts.MaxRecordBytes
	valid := func(off int, prev uint64) (int, uint64, bool) {
		n, crc, seq, err := parseHeader(data[off:], maxN)
		if err != nil || off+headerSize+n > len(data) || seq <= prev {
			return 0, 0, false
		}
		return n, seq, checkRecord(data[off:off+headerSize], data[off+headerSize:off+headerSize+n], crc)
	}
	sg := &segment{first: first, path: path, f: f}
	off := 0
	prev := first - 1
	truncateAt := -1
	for off < len(data) {
		if n, seq, ok := valid(off, prev); ok {
			sg.entries = append(sg.entries, entry{seq: seq, off: uint32(off + headerSize), n: uint32(n)})
			prev = seq
			off += headerSize + n
			continue
		}
		// Damaged record. Can we trust its length to find the next one?
		n, _, _, herr := parseHeader(data[off:], maxN)
		next := off + headerSize + n
		if herr == nil && next < len(data) {
			if _, _, ok := valid(next, prev); ok {
				s.corrupt++
				s.log.Warn("spool: skipping corrupt record", "log", l.kind.String(), "segment", filepath.Base(path), "offset", off)
				off = next
				continue
			}
		}
		truncateAt = off
		break
	}
	if truncateAt >= 0 {
		s.corrupt++
		s.truncB += uint64(len(data) - truncateAt)
		s.log.Warn("spool: truncating torn or corrupt segment tail", "log", l.kind.String(),
			"segment", filepath.Base(path), "offset", truncateAt, "bytes", len(data)-truncateAt)
		if err := f.Truncate(int64(truncateAt)); err != nil {
			f.Close()
			return nil, fmt.Errorf("spool: truncate %s: %w", path, err)
		}
		data = data[:truncateAt]
	}
	// The process may have died with data only in the page cache; make it durable now,
	// since it is about to become shippable.
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("spool: sync %s: %w", path, err)
	}
	sg.size = int64(len(data))
	return sg, nil
}

func readAll(f *os.File) ([]byte, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	buf := make([]byte, fi.Size())
	n, err := f.ReadAt(buf, 0)
	if err != nil && n != len(buf) {
		return nil, err
	}
	return buf[:n], nil
}

// Append writes ev to its log, assigning and returning its seq (also set on ev.Seq).
// A finding is fsync'ed before Append returns; telemetry is group-committed. If the
// finding's fsync fails, Append returns the seq with the error: the record is written but
// is shipped only once a later fsync succeeds. The spool never blocks on being full: it
// evicts instead (see the package doc).
func (s *Spool) Append(ev *wardv1.Event) (uint64, error) {
	k := LogFor(ev)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return 0, ErrClosed
	}
	seq := s.nextSeq
	ev.Seq = seq
	payload, err := proto.MarshalOptions{Deterministic: true}.MarshalAppend(s.buf[:0], ev)
	if err != nil {
		ev.Seq = 0
		s.mu.Unlock()
		return 0, fmt.Errorf("spool: marshal event: %w", err)
	}
	if len(payload) > s.opts.MaxRecordBytes {
		ev.Seq = 0
		s.mu.Unlock()
		return 0, fmt.Errorf("spool: event of %d bytes exceeds the %d byte record limit", len(payload), s.opts.MaxRecordBytes)
	}
	l := s.logs[k]
	sg, err := s.writeLocked(l, seq, payload)
	s.buf = payload[:0]
	if err != nil {
		ev.Seq = 0
		s.mu.Unlock()
		return 0, err
	}
	s.nextSeq++
	l.lastSeq = seq
	s.evictLocked()
	if k != Findings {
		s.mu.Unlock()
		return seq, nil
	}
	defer s.mu.Unlock()
	return seq, s.groupSyncLocked(l, sg, seq)
}

// groupSyncLocked returns once seq is durable. Concurrent finding appends share fsyncs: one
// appender (the leader) fsyncs everything written so far, outside the lock, while the others
// wait; an appender whose record was written after the leader started waits for the next
// round. Records are written in seq order and earlier segments were fsync'ed when sealed,
// so one fsync of the active segment covers every earlier record. Under load this turns
// one fsync per finding into one per batch without weakening the guarantee.
func (s *Spool) groupSyncLocked(l *plog, sg *segment, seq uint64) error {
	if l.synced == nil {
		l.synced = sync.NewCond(&s.mu)
	}
	for l.durable < seq {
		if l.syncing {
			l.synced.Wait()
			continue
		}
		target, f := l.lastSeq, sg.f
		if l.active != nil {
			f = l.active.f
		}
		l.syncing = true
		s.mu.Unlock()
		err := f.Sync()
		s.mu.Lock()
		l.syncing = false
		l.synced.Broadcast()
		if err != nil && !errors.Is(err, os.ErrClosed) {
			return fmt.Errorf("spool: fsync findings segment: %w", err)
		}
		if target > l.durable {
			l.durable = target
			s.notifyLocked()
		}
		if errors.Is(err, os.ErrClosed) {
			return nil // closed under us: Close synced what was written
		}
	}
	return nil
}

// writeLocked appends one framed record to the log's active segment, rotating as needed.
func (s *Spool) writeLocked(l *plog, seq uint64, payload []byte) (*segment, error) {
	recLen := int64(headerSize + len(payload))
	if l.active != nil && l.active.size > 0 && l.active.size+recLen > s.opts.SegmentBytes {
		if err := s.sealLocked(l); err != nil {
			return nil, err
		}
	}
	if l.active == nil {
		path := filepath.Join(l.dir, fmt.Sprintf("%020d.seg", seq))
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return nil, fmt.Errorf("spool: create segment: %w", err)
		}
		if err := syncDir(l.dir); err != nil {
			f.Close()
			return nil, fmt.Errorf("spool: sync dir: %w", err)
		}
		l.active = &segment{first: seq, path: path, f: f}
		l.segs = append(l.segs, l.active)
	}
	sg := l.active
	rec := appendRecord(make([]byte, 0, recLen), seq, payload)
	if _, err := sg.f.WriteAt(rec, sg.size); err != nil {
		// Cut a partial write back off so the segment stays well-formed.
		_ = sg.f.Truncate(sg.size)
		return nil, fmt.Errorf("spool: write %s record: %w", l.kind, err)
	}
	sg.entries = append(sg.entries, entry{seq: seq, off: uint32(sg.size + headerSize), n: uint32(len(payload))})
	sg.size += recLen
	l.bytes += recLen
	l.live++
	return sg, nil
}

// sealLocked fsyncs the active segment and stops appending to it.
func (s *Spool) sealLocked(l *plog) error {
	sg := l.active
	if err := sg.f.Sync(); err != nil {
		return fmt.Errorf("spool: fsync sealed %s segment: %w", l.kind, err)
	}
	l.active = nil
	if l.lastSeq > l.durable {
		l.durable = l.lastSeq
		s.notifyLocked()
	}
	return nil
}

// evictLocked drops whole segments, oldest telemetry first, until the spool fits.
func (s *Spool) evictLocked() {
	total := s.logs[Findings].bytes + s.logs[Telemetry].bytes
	if total <= s.opts.MaxBytes {
		return
	}
	var victims []*segment
	var from []*plog
	for _, k := range []Log{Telemetry, Findings} {
		l := s.logs[k]
		for _, sg := range l.segs {
			if total <= s.opts.MaxBytes {
				break
			}
			// Never evict the findings segment being written: with SegmentBytes <=
			// MaxBytes/4 the spool fits once everything else is gone.
			if k == Findings && sg == l.active {
				break
			}
			victims = append(victims, sg)
			from = append(from, l)
			total -= sg.size
		}
	}
	if len(victims) == 0 {
		return
	}
	// Persist the highest seq first: if the evicted segment held it, a restart must still
	// not hand it out again.
	s.persistStateLocked()
	for i, sg := range victims {
		l := from[i]
		lost := 0
		for _, e := range sg.entries {
			switch e.state {
			case stateInFlight:
				s.inFlight--
				lost++
			case statePending:
				lost++
			}
		}
		l.evicted += uint64(lost)
		s.log.Warn("spool full: evicted oldest segment", "log", l.kind.String(), "events", lost, "bytes", sg.size)
		s.removeSegmentLocked(l, sg)
	}
}

// removeSegmentLocked closes and deletes a segment and drops it from its log's index.
func (s *Spool) removeSegmentLocked(l *plog, sg *segment) {
	if l.active == sg {
		l.active = nil
	}
	l.segs = slices.DeleteFunc(l.segs, func(x *segment) bool { return x == sg })
	l.bytes -= sg.size
	l.live -= len(sg.entries) - sg.acked
	sg.f.Close()
	if err := os.Remove(sg.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Error("spool: cannot remove segment", "segment", sg.path, "err", err)
	}
}

// Next returns up to max of the oldest un-acked, not in-flight events (findings first),
// stopping before maxBytes of payload unless the batch would otherwise be empty. The events
// stay in the spool, marked in flight, until Ack or Requeue. It does not block: use Wait.
func (s *Spool) Next(max, maxBytes int) ([]*wardv1.Event, error) {
	if max <= 0 {
		return nil, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	var out []*wardv1.Event
	bytes := 0
nextLog:
	for _, l := range s.logs {
		for _, sg := range l.segs {
			for i := sg.pendingFrom; i < len(sg.entries); i++ {
				e := &sg.entries[i]
				if e.state != statePending {
					if i == sg.pendingFrom {
						sg.pendingFrom++
					}
					continue
				}
				if e.seq > l.durable {
					// Not fsync'ed yet; the rest of this log is newer still.
					continue nextLog
				}
				if len(out) >= max || (len(out) > 0 && bytes+int(e.n) > maxBytes) {
					return out, nil
				}
				ev, err := s.readLocked(sg, e)
				if err != nil {
					// Rotted on disk since recovery: drop it rather than wedge the shipper.
					s.corrupt++
					s.log.Warn("spool: dropping unreadable record", "log", l.kind.String(), "segment", filepath.Base(sg.path), "err", err)
					s.ackEntryLocked(l, sg, e)
					continue
				}
				e.state = stateInFlight
				s.inFlight++
				bytes += int(e.n)
				out = append(out, ev)
			}
		}
	}
	return out, nil
}

func (s *Spool) readLocked(sg *segment, e *entry) (*wardv1.Event, error) {
	buf := make([]byte, headerSize+int(e.n))
	if _, err := sg.f.ReadAt(buf, int64(e.off)-headerSize); err != nil {
		return nil, fmt.Errorf("read record: %w", err)
	}
	_, crc, seq, err := parseHeader(buf, s.opts.MaxRecordBytes)
	if err != nil || seq != e.seq || !checkRecord(buf[:headerSize], buf[headerSize:], crc) {
		return nil, errBadRecord
	}
	ev := &wardv1.Event{}
	if err := proto.Unmarshal(buf[headerSize:], ev); err != nil {
		return nil, fmt.Errorf("unmarshal record: %w", err)
	}
	return ev, nil
}

// ackEntryLocked marks one entry acked; it does not delete segments.
func (s *Spool) ackEntryLocked(l *plog, sg *segment, e *entry) {
	if e.state == stateAcked {
		return
	}
	if e.state == stateInFlight {
		s.inFlight--
	}
	e.state = stateAcked
	sg.acked++
	l.live--
	s.dirty = true
}

// Ack marks the inclusive seq ranges as durably stored by the collector. Seqs not in the
// spool (evicted, already acked, never assigned) are ignored. Fully acked segments are
// deleted after the ack state is persisted.
func (s *Spool) Ack(ranges []*wardv1.SeqRange) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	var done []*segment
	var from []*plog
	for _, r := range ranges {
		if r == nil || r.Last < r.First {
			continue
		}
		for _, l := range s.logs {
			for _, sg := range l.segs {
				if sg.last() < r.First || sg.first > r.Last {
					continue
				}
				i, _ := slices.BinarySearchFunc(sg.entries, r.First, func(e entry, t uint64) int { return cmp.Compare(e.seq, t) })
				for ; i < len(sg.entries) && sg.entries[i].seq <= r.Last; i++ {
					s.ackEntryLocked(l, sg, &sg.entries[i])
				}
				if sg.acked == len(sg.entries) && !slices.Contains(done, sg) {
					done = append(done, sg)
					from = append(from, l)
				}
			}
		}
	}
	if len(done) == 0 {
		return nil
	}
	if err := s.persistStateLocked(); err != nil {
		// Keep the segments: without persisted state a restart could reuse their seqs.
		return err
	}
	for i, sg := range done {
		s.removeSegmentLocked(from[i], sg)
	}
	return nil
}

// Requeue returns in-flight events (after a failed send) so Next hands them out again.
// Events already acked are left alone, so calling it for a whole batch after a partial
// ack is correct.
func (s *Spool) Requeue(events []*wardv1.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	requeued := false
	for _, ev := range events {
		seq := ev.GetSeq()
		for _, l := range s.logs {
			i, ok := slices.BinarySearchFunc(l.segs, seq, func(sg *segment, t uint64) int {
				if sg.last() < t {
					return -1
				}
				if sg.first > t {
					return 1
				}
				return 0
			})
			if !ok {
				continue
			}
			sg := l.segs[i]
			j, ok := slices.BinarySearchFunc(sg.entries, seq, func(e entry, t uint64) int { return cmp.Compare(e.seq, t) })
			if !ok || sg.entries[j].state != stateInFlight {
				continue
			}
			sg.entries[j].state = statePending
			s.inFlight--
			sg.pendingFrom = min(sg.pendingFrom, j)
			requeued = true
		}
	}
	if requeued {
		s.notifyLocked()
	}
}

// RequeueAll returns every in-flight event to the queue, e.g. when a shipper restarts.
func (s *Spool) RequeueAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.logs {
		for _, sg := range l.segs {
			for j := range sg.entries {
				if sg.entries[j].state == stateInFlight {
					sg.entries[j].state = statePending
					s.inFlight--
					sg.pendingFrom = min(sg.pendingFrom, j)
				}
			}
		}
	}
	s.notifyLocked()
}

// Wait blocks until Next would return at least one event, ctx ends, or the spool closes.
func (s *Spool) Wait(ctx context.Context) error {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return ErrClosed
		}
		if s.hasShippableLocked() {
			s.mu.Unlock()
			return nil
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

func (s *Spool) hasShippableLocked() bool {
nextLog:
	for _, l := range s.logs {
		for _, sg := range l.segs {
			for i := sg.pendingFrom; i < len(sg.entries); i++ {
				e := &sg.entries[i]
				if e.state == statePending {
					if e.seq <= l.durable {
						return true
					}
					continue nextLog
				}
				if i == sg.pendingFrom {
					sg.pendingFrom++
				}
			}
		}
	}
	return false
}

func (s *Spool) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Sync fsyncs the telemetry log now, making everything appended so far shippable.
func (s *Spool) Sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	return s.syncLocked()
}

func (s *Spool) syncLocked() error {
	for _, l := range s.logs {
		if l.lastSeq <= l.durable || l.active == nil {
			continue
		}
		if err := l.active.f.Sync(); err != nil {
			return fmt.Errorf("spool: fsync %s segment: %w", l.kind, err)
		}
		l.durable = l.lastSeq
		s.notifyLocked()
	}
	return nil
}

// background runs the telemetry group commit and the periodic ack-state write.
func (s *Spool) background() {
	defer close(s.done)
	tick := time.NewTicker(s.opts.SyncInterval)
	defer tick.Stop()
	lastState := time.Now()
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
		}
		s.groupCommit()
		if time.Since(lastState) >= s.opts.StateInterval {
			lastState = time.Now()
			s.mu.Lock()
			if s.dirty && !s.closed {
				_ = s.persistStateLocked()
			}
			s.mu.Unlock()
		}
	}
}

// groupCommit fsyncs the active telemetry segment outside the lock.
func (s *Spool) groupCommit() {
	s.mu.Lock()
	l := s.logs[Telemetry]
	if s.closed || l.active == nil || l.lastSeq <= l.durable {
		s.mu.Unlock()
		return
	}
	f, target := l.active.f, l.lastSeq
	s.mu.Unlock()
	err := f.Sync()
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case err == nil:
		if target > l.durable {
			l.durable = target
			s.notifyLocked()
		}
	case errors.Is(err, os.ErrClosed):
		// Sealed (and fsync'ed) or evicted meanwhile.
	default:
		s.log.Error("spool: telemetry group commit failed", "err", err)
	}
}

// Stats returns a snapshot of the counters.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, t := s.logs[Findings], s.logs[Telemetry]
	return Stats{
		Bytes:            f.bytes + t.bytes,
		FindingsEvents:   f.live,
		TelemetryEvents:  t.live,
		InFlight:         s.inFlight,
		FindingsEvicted:  f.evicted,
		TelemetryEvicted: t.evicted,
		CorruptRecords:   s.corrupt,
		TruncatedBytes:   s.truncB,
		Segments:         len(f.segs) + len(t.segs),
		LastSeq:          s.nextSeq - 1,
	}
}

// Close fsyncs outstanding telemetry, persists ack state and closes all files. In-flight
// events are simply not acked; they are shipped again after the next Open.
func (s *Spool) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.stop)
	s.notifyLocked()
	s.mu.Unlock()
	<-s.done

	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.syncLocked()
	if perr := s.persistStateLocked(); err == nil {
		err = perr
	}
	s.closeFiles()
	return err
}

func (s *Spool) closeFiles() {
	for _, l := range s.logs {
		if l == nil {
			continue
		}
		for _, sg := range l.segs {
			sg.f.Close()
		}
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
