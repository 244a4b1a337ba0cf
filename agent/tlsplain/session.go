// Package tlsplain turns the TLS plaintext probe's records into classified connection
// sessions, and decides which files the probe hooks.
//
// Discovery finds TLS libraries (libssl, libgnutls, libnspr4) and Go executables that link
// crypto/tls as processes map them, hooks each file once (a uprobe on a file covers every
// process that maps it), and remembers per process which TLS stack it uses or why it cannot
// be inspected (statically linked TLS without symbols). A Tracker gathers the plaintext of
// one connection and direction into an engine.Stream and reports it when the connection goes
// quiet, its process exits or its byte budget is spent. Pipeline wires the two to a probe.
package tlsplain

import (
	"net/netip"
	"time"

	probe "github.com/ward-dlp/ward/bpf/tlsplain"
	"github.com/ward-dlp/ward/classifiers/engine"
)

// Key names one direction of one TLS connection of one process.
type Key struct {
	PID  uint32
	Conn uint64 // the library's connection object
	Recv bool
}

// End says why a session was reported.
type End uint8

// Why a session was reported.
const (
	// Idle: no plaintext for the idle interval.
	Idle End = iota + 1
	// Exited: the process exited.
	Exited
	// Budget: the session's classification budget is spent; later bytes start a new session.
	Budget
	// Evicted: too many sessions open at once; the least recently active was reported.
	Evicted
	// Stopped: the agent is stopping.
	Stopped
)

func (e End) String() string {
	switch e {
	case Idle:
		return "idle"
	case Exited:
		return "exited"
	case Budget:
		return "budget"
	case Evicted:
		return "evicted"
	case Stopped:
		return "stopped"
	}
	return "unknown"
}

// Done is one finished session: the plaintext's matches and where it went.
type Done struct {
	Key
	Library     probe.Library
	UID, GID    uint32
	Comm        string
	Socket      probe.Socket // last socket the kernel joined the connection to
	Resolved    bool         // Socket is known
	ServerName  string       // HTTP Host / :authority from the plaintext, lower case, no port
	First, Last time.Time
	// Bytes is what the library calls moved; Inspected what was classified. They differ when
	// the per-call capture bound or the session budget cut the stream.
	Bytes, Inspected int64
	// Incomplete: some plaintext was not classified (capture bound, unreadable buffer,
	// budget, or a lost ring record).
	Incomplete bool
	Matches    []engine.Match
	Reason     End
}

// Remote is the peer when known.
func (d Done) Remote() netip.AddrPort {
	if !d.Resolved {
		return netip.AddrPort{}
	}
	return d.Socket.Remote
}

// TrackerConfig bounds a Tracker.
type TrackerConfig struct {
	// Idle reports a session after this long without plaintext (default 2s).
	Idle time.Duration
	// MaxSessions bounds the sessions open at once (default 256); each holds a stream window.
	MaxSessions int
	// Budget is how many bytes one session classifies (default 8 MiB).
	Budget int64
	// Window and Overlap size each session's engine.Stream (defaults 64 KiB and 8 KiB).
	Window, Overlap int
}

func (c *TrackerConfig) defaults() {
	if c.Idle <= 0 {
		c.Idle = 2 * time.Second
	}
	if c.MaxSessions <= 0 {
		c.MaxSessions = 256
	}
	if c.Budget <= 0 {
		c.Budget = 8 << 20
	}
	if c.Window <= 0 {
		c.Window = 64 << 10
	}
	if c.Overlap <= 0 {
		c.Overlap = 8 << 10
	}
}

type session struct {
	Done
	stream *engine.Stream
	head   []byte // first bytes of a send, for the server name
	named  bool
	// next is the call offset the next record should start at (0: a new call); a record
	// that does not continue the call in progress means a record was lost.
	next, total uint32
	cut         bool // the call in progress was cut by the capture bound: no gap at its end
	prev, nxt   *session
}

// TrackerStats are counters for health events.
type TrackerStats struct {
	Open       int
	Sessions   uint64 // sessions reported
	Evicted    uint64
	Gaps       uint64 // calls whose records did not all arrive
	OverBudget uint64 // bytes not classified because a session's budget was spent
}

// Tracker holds the open sessions. It is owned by one goroutine.
type Tracker struct {
	cfg        TrackerConfig
	eng        *engine.Engine
	open       map[Key]*session
	head, tail *session // LRU by last activity
	stats      TrackerStats
}

// NewTracker returns an empty Tracker classifying with eng.
func NewTracker(eng *engine.Engine, cfg TrackerConfig) *Tracker {
	cfg.defaults()
	return &Tracker{cfg: cfg, eng: eng, open: make(map[Key]*session)}
}

// headBytes is how much of a send is kept to find the server name.
const headBytes = 8 << 10

// Apply adds one probe record and returns the sessions it finished.
func (t *Tracker) Apply(d probe.Data) []Done {
	k := Key{PID: d.PID, Conn: d.Conn, Recv: d.Recv}
	var out []Done
	s := t.open[k]
	if s != nil && s.Inspected >= t.cfg.Budget && d.Offset == 0 {
		out = append(out, t.finish(s, Budget))
		s = nil
	}
	if s == nil {
		for len(t.open) >= t.cfg.MaxSessions && t.head != nil {
			t.stats.Evicted++
			out = append(out, t.finish(t.head, Evicted))
		}
		st, err := t.eng.NewStream(engine.StreamConfig{Window: t.cfg.Window, Overlap: t.cfg.Overlap})
		if err != nil {
			return out // only a bad window/overlap pair fails, and defaults() prevents it
		}
		s = &session{stream: st, Done: Done{Key: k, Library: d.Library, First: d.Time}}
		t.open[k] = s
		t.push(s)
	} else {
		t.unlink(s)
		t.push(s)
	}
	s.UID, s.GID, s.Comm, s.Last = d.UID, d.GID, d.Comm, d.Time
	if d.SocketResolved {
		s.Socket, s.Resolved = d.Socket, true
	}
	// Calls arrive as records at offsets 0, 16 KiB, ...: count each call's bytes once and
	// notice records that went missing (the ring was full).
	if d.Offset == 0 {
		if s.next != 0 && s.next < s.total && !s.cut {
			t.stats.Gaps++
			s.Incomplete = true
		}
		s.Bytes += int64(d.Total)
		s.total = d.Total
	} else if d.Offset != s.next {
		t.stats.Gaps++
		s.Incomplete = true
	}
	s.next, s.cut = d.Offset+uint32(len(d.Bytes)), d.Truncated || d.ReadFailed
	if d.Truncated || d.ReadFailed {
		s.Incomplete = true
	}
	b := d.Bytes
	if room := t.cfg.Budget - s.Inspected; int64(len(b)) > room {
		t.stats.OverBudget += uint64(int64(len(b)) - max(room, 0))
		b = b[:max(room, 0)]
		s.Incomplete = true
	}
	if len(b) > 0 {
		_, _ = s.stream.Write(b) // fails only after Close, which removes the session first
		s.Inspected += int64(len(b))
		if !s.Recv && !s.named && len(s.head) < headBytes {
			s.head = append(s.head, b[:min(len(b), headBytes-len(s.head))]...)
			if name, done := ServerName(s.head); done {
				s.ServerName, s.named, s.head = name, true, nil
			}
		}
	}
	return out
}

// Tick reports sessions idle since before now-Idle.
func (t *Tracker) Tick(now time.Time) []Done {
	var out []Done
	for s := t.head; s != nil; {
		next := s.nxt
		if now.Sub(s.Last) < t.cfg.Idle {
			break // LRU order: the rest are younger
		}
		out = append(out, t.finish(s, Idle))
		s = next
	}
	return out
}

// Exit reports the sessions of an exited process.
func (t *Tracker) Exit(pid uint32) []Done {
	var out []Done
	for s := t.head; s != nil; {
		next := s.nxt
		if s.PID == pid {
			out = append(out, t.finish(s, Exited))
		}
		s = next
	}
	return out
}

// Flush reports every open session.
func (t *Tracker) Flush() []Done {
	var out []Done
	for t.head != nil {
		out = append(out, t.finish(t.head, Stopped))
	}
	return out
}

// Stats returns the counters.
func (t *Tracker) Stats() TrackerStats {
	s := t.stats
	s.Open = len(t.open)
	return s
}

func (t *Tracker) finish(s *session, why End) Done {
	t.unlink(s)
	delete(t.open, s.Key)
	if !s.named && len(s.head) > 0 {
		s.ServerName, _ = ServerName(s.head)
	}
	d := s.Done
	d.Matches = s.stream.Close()
	d.Reason = why
	t.stats.Sessions++
	return d
}

func (t *Tracker) push(s *session) {
	s.prev, s.nxt = t.tail, nil
	if t.tail != nil {
		t.tail.nxt = s
	} else {
		t.head = s
	}
	t.tail = s
}

func (t *Tracker) unlink(s *session) {
	if s.prev != nil {
		s.prev.nxt = s.nxt
	} else {
		t.head = s.nxt
	}
	if s.nxt != nil {
		s.nxt.prev = s.prev
	} else {
		t.tail = s.prev
	}
	s.prev, s.nxt = nil, nil
}
