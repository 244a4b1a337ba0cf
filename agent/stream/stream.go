// Package stream reassembles what one process writes through one open file descriptor into
// the content a classifier can read: write() calls arrive one by one, possibly at explicit
// offsets (pwrite), possibly cut to the probe's copy bound, and the file is worth classifying
// when the writer closes it or goes quiet.
package stream

import (
	"time"
)

// Key names one open descriptor of one process.
type Key struct {
	TGID uint32
	FD   int32
}

// File identifies the file behind a descriptor.
type File struct {
	Path   string
	Device uint64
	Inode  uint64
	// WatchDir is the watched directory (egress target) the file is under, when known.
	WatchDir string
}

// Note records something done to a descriptor besides write(): it travels with the content
// into the activity event.
type Note uint8

// Notes.
const (
	// NoteFtruncate: ftruncate(2) through the descriptor.
	NoteFtruncate Note = 1 << iota
	// NoteMmapShared: a writable shared mapping of the file; stores through it are not seen.
	NoteMmapShared
	// NoteIOURing: the process used io_uring while holding the descriptor.
	NoteIOURing
	// NoteDup: the descriptor is a dup of another one.
	NoteDup
	// NoteTruncate: truncate(2) of the file by path.
	NoteTruncate
	// NoteInherited: the writer got the descriptor from its parent across fork.
	NoteInherited
	// NoteMprotect: a read-only shared mapping of the file was made writable with
	// mprotect; stores through it are not seen.
	NoteMprotect
)

var noteNames = [...]string{"ftruncate", "mmap_shared", "io_uring", "dup", "truncate", "inherited", "mprotect"}

// Strings names the notes set, in a fixed order.
func (n Note) Strings() []string {
	var out []string
	for i, name := range noteNames {
		if n&(1<<i) != 0 {
			out = append(out, name)
		}
	}
	return out
}

// unseen are the notes that mean bytes may have reached the file without a write() the
// probe copied.
const unseen = NoteMmapShared | NoteIOURing | NoteMprotect

// Reason says why a Content was emitted.
type Reason int

const (
	// Closed means the descriptor was closed.
	Closed Reason = iota + 1
	// Idle means no write arrived for the idle interval; the descriptor is still open.
	Idle
	// Exited means the process exited with the descriptor open.
	Exited
	// Pressure means the buffer budget ran out and this stream, the oldest, was emitted early.
	Pressure
	// Renamed means a file was renamed into a watched directory: there were no writes, the
	// content is the file itself (Complete is false, so it is read from disk).
	Renamed
	// Flagged means something was done to a watched file that cannot be classified as it
	// happens (Content.Flag says what); the content carries no data.
	Flagged
)

func (r Reason) String() string {
	switch r {
	case Closed:
		return "closed"
	case Idle:
		return "idle"
	case Exited:
		return "exited"
	case Pressure:
		return "pressure"
	case Renamed:
		return "renamed"
	case Flagged:
		return "flagged"
	}
	return "unknown"
}

// Content is one reassembled run of writes, ready to classify.
type Content struct {
	Key    Key
	File   File
	Reason Reason
	// Data holds the written bytes from file offset Base on. The Content owns it.
	Data []byte
	Base int64
	// Complete is true when Data holds every byte written in this run, in place. When it is
	// false the agent re-reads the file from disk instead of trusting a partial copy.
	Complete      bool
	BytesWritten  uint64
	BytesCaptured uint64
	WriteCalls    uint32
	First, Last   time.Time
	// Unobserved is set when a descriptor opened for writing was closed without a single
	// write the probe could see: the data, if any, went in through copy_file_range,
	// sendfile, splice, mmap or io_uring. Data is empty; the agent decides from the file's
	// size and modification time whether to read it back.
	Unobserved bool
	// Notes are what else happened on the descriptor during the run.
	Notes Note
	// RenamedFrom is the path before the rename, for Reason Renamed.
	RenamedFrom string
	// Flag is what was flagged, for Reason Flagged.
	Flag Note
}

// RenamedInto is the content of a file that arrived in a watched directory by a rename.
func RenamedInto(tgid uint32, f File, from string, at time.Time) Content {
	return Content{Key: Key{TGID: tgid, FD: -1}, File: f, Reason: Renamed, RenamedFrom: from, First: at, Last: at}
}

// FlaggedActivity is a record that something happened to a watched file that the agent cannot
// classify as it happens (a truncate by path, a shared mapping, io_uring).
func FlaggedActivity(k Key, f File, flag Note, at time.Time) Content {
	return Content{Key: k, File: f, Reason: Flagged, Flag: flag, Notes: flag, First: at, Last: at}
}

// Config bounds reassembly.
type Config struct {
	// MaxFileBytes bounds the content held per descriptor.
	MaxFileBytes int
	// MaxBufferedBytes bounds the content held across all descriptors.
	MaxBufferedBytes int
	// MaxOpen bounds the number of descriptors tracked.
	MaxOpen int
	// IdleFlush emits a still-open descriptor whose writes have stopped for this long.
	IdleFlush time.Duration
}

// Stats counts what reassembly had to give up.
type Stats struct {
	Open          int
	BufferedBytes int
	// PressureFlushes counts streams emitted early because MaxBufferedBytes was reached.
	PressureFlushes uint64
	// OpenEvictions counts streams emitted early because MaxOpen was reached.
	OpenEvictions uint64
	// Overflows counts runs that went past MaxFileBytes (classified from disk instead).
	Overflows uint64
	// WritesWithoutOpen and OpensOverLive count descriptors whose open or close record
	// never arrived (ring-buffer drops, or descriptors opened before the agent started):
	// the content is still classified, with a path from /proc when it can be found.
	WritesWithoutOpen uint64
	OpensOverLive     uint64
}

type state struct {
	key  Key
	file File
	// base is the file offset of buf[0]; -1 until the first write fixes it.
	base int64
	buf  []byte
	// contiguous is the file offset up to which every byte since base was captured.
	contiguous int64
	// pos is where a write with an unknown offset lands: after the previous one.
	pos        int64
	incomplete bool
	written    uint64
	captured   uint64
	calls      uint32
	first      time.Time
	last       time.Time
	overflowed bool
	// opened is set when the stream began with an open record, so a close without writes
	// means "written some other way" rather than "we never knew this descriptor".
	opened bool
	notes  Note
}

// Assembler holds the streams. It is owned by one goroutine (the file-record reader), which
// keeps ordering simple and needs no locks on the per-write path.
type Assembler struct {
	cfg      Config
	streams  map[Key]*state
	buffered int
	stats    Stats
}

// New returns an Assembler with the given bounds.
func New(cfg Config) *Assembler {
	if cfg.MaxFileBytes <= 0 {
		cfg.MaxFileBytes = 1 << 20
	}
	if cfg.MaxBufferedBytes < cfg.MaxFileBytes {
		cfg.MaxBufferedBytes = cfg.MaxFileBytes
	}
	if cfg.MaxOpen <= 0 {
		cfg.MaxOpen = 4096
	}
	if cfg.IdleFlush <= 0 {
		cfg.IdleFlush = 2 * time.Second
	}
	return &Assembler{cfg: cfg, streams: make(map[Key]*state)}
}

// Open starts tracking a descriptor. A descriptor number reused without a close we saw (a
// lost close record) first emits the old stream, so two files never merge.
func (a *Assembler) Open(k Key, f File, at time.Time) []Content {
	var out []Content
	if old, ok := a.streams[k]; ok {
		a.stats.OpensOverLive++
		if c, ok := a.emit(old, Closed); ok {
			out = append(out, c)
		}
		a.drop(old)
	}
	out = append(out, a.ensureRoom()...)
	a.streams[k] = &state{key: k, file: f, base: -1, first: at, last: at, opened: true}
	return out
}

// Note adds a note to a descriptor's stream and reports whether the descriptor is tracked.
// Notes of bytes the probe could not see (mmap, io_uring) make the run incomplete, so it is
// read back from disk.
func (a *Assembler) Note(k Key, n Note) bool {
	s, ok := a.streams[k]
	if !ok {
		return false
	}
	s.note(n)
	return true
}

// NoteProcess adds a note to every stream of a process and returns how many it has.
func (a *Assembler) NoteProcess(tgid uint32, n Note) int {
	c := 0
	for k, s := range a.streams {
		if k.TGID == tgid {
			s.note(n)
			c++
		}
	}
	return c
}

func (s *state) note(n Note) {
	s.notes |= n
	if n&unseen != 0 {
		s.incomplete = true
	}
}

// Dup starts tracking a copy of a descriptor (dup, dup2, dup3, fcntl F_DUPFD) as a stream of
// its own for the same file. A stream already under the new number was implicitly closed
// by dup2 and is emitted. It reports false when the original is not tracked.
func (a *Assembler) Dup(old, k Key, at time.Time) ([]Content, bool) {
	s, ok := a.streams[old]
	if !ok {
		return nil, false
	}
	out := a.Open(k, s.file, at)
	a.streams[k].notes = s.notes | NoteDup
	return out, true
}

// Inherit starts tracking a descriptor a child process got from its parent across fork, as
// a stream of its own for the same file. It reports false when the parent's is not tracked.
func (a *Assembler) Inherit(parent, child Key, at time.Time) ([]Content, bool) {
	s, ok := a.streams[parent]
	if !ok {
		return nil, false
	}
	out := a.Open(child, s.file, at)
	a.streams[child].notes = s.notes | NoteInherited
	return out, true
}

// Lookup returns the file behind a tracked descriptor.
func (a *Assembler) Lookup(k Key) (File, bool) {
	s, ok := a.streams[k]
	if !ok {
		return File{}, false
	}
	return s.file, true
}

// Write adds one write() to its stream. offset is the file offset of the write, or -1 when
// unknown; requested is what the process asked to write, data what the probe copied (a
// prefix when the write exceeded the copy bound). A write on a descriptor never opened
// (the agent started after the open) starts a stream for file f.
func (a *Assembler) Write(k Key, f File, offset int64, requested uint64, data []byte, at time.Time) []Content {
	var out []Content
	s, ok := a.streams[k]
	if !ok {
		a.stats.WritesWithoutOpen++
		out = append(out, a.ensureRoom()...)
		s = &state{key: k, file: f, base: -1, first: at}
		a.streams[k] = s
	}
	if s.file.Path == "" && f.Path != "" {
		s.file = f
	}
	s.last = at
	s.calls++
	s.written += requested
	s.captured += uint64(len(data))
	if offset < 0 {
		offset = s.pos
	}
	if s.base < 0 {
		s.base = offset
		s.contiguous = offset
	}
	if uint64(len(data)) < requested {
		s.incomplete = true
	}
	if offset < s.base {
		// A rewrite before the start of this run (e.g. a header patched after an idle flush).
		s.incomplete = true
	} else {
		if offset > s.contiguous {
			s.incomplete = true // a hole: sparse write or a lost record
		}
		end := offset + int64(len(data))
		if end > s.contiguous && offset <= s.contiguous {
			s.contiguous = end
		}
		out = append(out, a.place(s, offset, data)...)
	}
	s.pos = offset + int64(requested)
	return out
}

// place copies data into the stream buffer at its offset, within the per-file bound.
func (a *Assembler) place(s *state, offset int64, data []byte) []Content {
	rel := offset - s.base
	limit := int64(a.cfg.MaxFileBytes)
	if rel >= limit {
		s.markOverflow(&a.stats)
		return nil
	}
	if rel+int64(len(data)) > limit {
		data = data[:limit-rel]
		s.markOverflow(&a.stats)
	}
	need := int(rel) + len(data)
	var out []Content
	if grow := need - len(s.buf); grow > 0 {
		for a.buffered+grow > a.cfg.MaxBufferedBytes {
			victim := a.oldest(s)
			if victim == nil {
				// Only this stream is left to give up room: treat as overflow.
				s.markOverflow(&a.stats)
				return out
			}
			a.stats.PressureFlushes++
			if c, ok := a.emit(victim, Pressure); ok {
				out = append(out, c)
			}
			a.reset(victim)
		}
		if need > cap(s.buf) {
			nb := make([]byte, need, max(need, 2*cap(s.buf), 4096))
			copy(nb, s.buf)
			s.buf = nb
		} else {
			s.buf = s.buf[:need]
		}
		a.buffered += grow
	}
	copy(s.buf[rel:], data)
	return out
}

func (s *state) markOverflow(st *Stats) {
	if !s.overflowed {
		s.overflowed = true
		st.Overflows++
	}
	s.incomplete = true
}

// Close ends a descriptor's stream and emits its content if anything was written since the
// last emission.
func (a *Assembler) Close(k Key, at time.Time) (Content, bool) {
	s, ok := a.streams[k]
	if !ok {
		return Content{}, false
	}
	c, ok := a.emit(s, Closed)
	if !ok && s.opened {
		c, ok = a.unobserved(s, Closed, at), true
	}
	a.drop(s)
	return c, ok
}

// unobserved describes a descriptor that was opened for writing and ended with no write
// seen, so the agent can check the file itself.
func (a *Assembler) unobserved(s *state, r Reason, at time.Time) Content {
	return Content{Key: s.key, File: s.file, Reason: r, Unobserved: true, Notes: s.notes, First: s.first, Last: at}
}

// Exit ends every stream of a process.
func (a *Assembler) Exit(tgid uint32, at time.Time) []Content {
	var out []Content
	for k, s := range a.streams {
		if k.TGID != tgid {
			continue
		}
		if c, ok := a.emit(s, Exited); ok {
			out = append(out, c)
		} else if s.opened {
			out = append(out, a.unobserved(s, Exited, at))
		}
		a.drop(s)
	}
	return out
}

// Tick emits streams whose writes have been idle for the idle interval; they stay tracked
// and later writes form a new run.
func (a *Assembler) Tick(now time.Time) []Content {
	var out []Content
	for _, s := range a.streams {
		if s.calls == 0 || now.Sub(s.last) < a.cfg.IdleFlush {
			continue
		}
		if c, ok := a.emit(s, Idle); ok {
			out = append(out, c)
		}
		a.reset(s)
	}
	return out
}

// Stats returns the current counters.
func (a *Assembler) Stats() Stats {
	st := a.stats
	st.Open = len(a.streams)
	st.BufferedBytes = a.buffered
	return st
}

// emit turns a stream's current run into a Content, copying nothing: the buffer moves to the
// Content and the stream gets a fresh one on reset.
func (a *Assembler) emit(s *state, r Reason) (Content, bool) {
	if s.calls == 0 {
		return Content{}, false
	}
	c := Content{
		Key: s.key, File: s.file, Reason: r,
		Data: s.buf, Base: max(s.base, 0),
		Complete:     !s.incomplete,
		BytesWritten: s.written, BytesCaptured: s.captured, WriteCalls: s.calls,
		First: s.first, Last: s.last, Notes: s.notes,
	}
	return c, true
}

// reset starts a new run on a still-open descriptor after an emission.
func (a *Assembler) reset(s *state) {
	a.buffered -= len(s.buf)
	next := s.pos
	// A new run continues where the last write ended, so the next write with an unknown
	// offset lands right after it.
	*s = state{key: s.key, file: s.file, base: -1, pos: next, contiguous: next, first: s.last, last: s.last,
		// Only a descriptor that can change the file unseen (a shared mapping, io_uring)
		// is checked again at close when no write follows.
		opened: s.notes&unseen != 0, notes: s.notes}
}

func (a *Assembler) drop(s *state) {
	a.buffered -= len(s.buf)
	delete(a.streams, s.key)
}

// oldest returns the stream with buffered data and the oldest last write, other than skip.
func (a *Assembler) oldest(skip *state) *state {
	var v *state
	for _, s := range a.streams {
		if s == skip || len(s.buf) == 0 {
			continue
		}
		if v == nil || s.last.Before(v.last) {
			v = s
		}
	}
	return v
}

// ensureRoom keeps the number of tracked descriptors under MaxOpen by emitting the stream
// whose last write is oldest.
func (a *Assembler) ensureRoom() []Content {
	var out []Content
	for len(a.streams) >= a.cfg.MaxOpen {
		var v *state
		for _, s := range a.streams {
			if v == nil || s.last.Before(v.last) {
				v = s
			}
		}
		a.stats.OpenEvictions++
		if c, ok := a.emit(v, Pressure); ok {
			out = append(out, c)
		}
		a.drop(v)
	}
	return out
}

// Has reports whether a descriptor is being tracked.
func (a *Assembler) Has(k Key) bool {
	_, ok := a.streams[k]
	return ok
}

// Flush emits every stream, for shutdown.
func (a *Assembler) Flush() []Content {
	var out []Content
	for _, s := range a.streams {
		if c, ok := a.emit(s, Closed); ok {
			out = append(out, c)
		}
		a.drop(s)
	}
	return out
}
