// Package flows turns the kernel's per-socket network records (connect, TCP state changes,
// UDP sends, denials) into one Flow per connection: who opened it, the 5-tuple, how long it
// lived, the bytes each way and how it ended. Records of one socket are joined by the kernel
// socket cookie; accepted sockets, which have none, by their 4-tuple.
//
// A Tracker is owned by one goroutine: records are applied in ring-buffer order without locks.
package flows

import (
	"net/netip"
	"time"

	"github.com/ward-dlp/ward/bpf/netflow"
)

// End says why a Flow was reported.
type End uint8

// Why a flow was reported.
const (
	// Closed: the TCP connection closed.
	Closed End = iota + 1
	// Idle: no activity for the idle timeout (UDP), or a long TCP flow's interim report.
	Idle
	// Denied: the kernel refused the connect or send (deny list).
	Denied
	// Failed: a TCP connection that never established.
	Failed
	// Stopped: still open when the tracker was flushed (agent shutdown) or evicted.
	Stopped
)

func (e End) String() string {
	switch e {
	case Closed:
		return "closed"
	case Idle:
		return "idle"
	case Denied:
		return "denied"
	case Failed:
		return "failed"
	case Stopped:
		return "stopped"
	}
	return "unknown"
}

// Direction says which side initiated a flow.
type Direction uint8

// Flow directions.
const (
	Outbound Direction = iota + 1
	Inbound
)

// Flow is one connection (TCP) or one UDP socket's traffic to one destination.
type Flow struct {
	Cookie    uint64
	Proto     netflow.Protocol
	Local     netip.AddrPort // zero until the kernel bound it (known from ESTABLISHED on)
	Remote    netip.AddrPort
	Direction Direction
	// Task made the connect or send; zero for inbound flows (reported outside the process).
	Task          netflow.Task
	Start, End    time.Time
	BytesSent     uint64 // TCP bytes acked by the peer, at close
	BytesReceived uint64 // TCP bytes received, at close
	UDPSends      uint64
	Established   bool
	Reason        End
	RuleID        uint32 // deny-list rule id when Reason is Denied
	// Via says which call a denial refused (connect or sendmsg); zero for a Cut flow.
	Via netflow.DenyVia
	// Cut: the flow was established and then cut by dropping its packets (Reason Denied).
	Cut bool
}

// Config bounds a Tracker.
type Config struct {
	// IdleTimeout ends a UDP flow without sends for this long, reports a TCP flow that has
	// been open this long (again every IdleTimeout), and fails a TCP connect that saw no
	// state change in this time.
	IdleTimeout time.Duration
	// MaxFlows bounds memory; past it the least recently active flow is reported (Stopped).
	MaxFlows int
}

// Stats are the tracker's counters, for health events.
type Stats struct {
	Open           int
	Evicted        uint64 // flows reported early to stay within MaxFlows
	StateWithout   uint64 // TCP state records whose connect was not seen (lost or pre-start)
	CloseWithout   uint64 // CLOSE records of sockets the tracker did not know
	Denied         uint64
	InboundClosed  uint64
	OutboundClosed uint64
}

type key struct {
	cookie        uint64
	local, remote netip.AddrPort // only for sockets without a cookie, and per-destination UDP
}

type entry struct {
	Flow
	last       time.Time // last record
	reported   time.Time // last interim report (TCP)
	sawState   bool
	prev, next *entry // LRU by last activity, oldest at head
	k          key
}

// Tracker joins records into flows.
type Tracker struct {
	cfg        Config
	flows      map[key]*entry
	head, tail *entry
	stats      Stats
	cut        map[uint64]bool // sockets reported by Cut whose later records are ignored
}

// New returns an empty Tracker.
func New(cfg Config) *Tracker {
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 2 * time.Minute
	}
	if cfg.MaxFlows <= 0 {
		cfg.MaxFlows = 65536
	}
	return &Tracker{cfg: cfg, flows: make(map[key]*entry)}
}

func tcpKey(cookie uint64, local, remote netip.AddrPort) key {
	if cookie != 0 {
		return key{cookie: cookie}
	}
	return key{local: local, remote: remote}
}

// Apply feeds one record and returns the flows it finished.
func (t *Tracker) Apply(r netflow.Record) []Flow {
	switch r := r.(type) {
	case netflow.Connect:
		if r.Proto == netflow.UDP {
			e, out := t.get(key{cookie: r.Cookie, remote: r.Dst}, r.Time)
			e.init(r.Cookie, netflow.UDP, r.Dst, r.Task, r.Time)
			return out
		}
		k := key{cookie: r.Cookie}
		var out []Flow
		if old, ok := t.flows[k]; ok && r.Cookie != 0 {
			// A second connect on the same socket (after a failed attempt): report the first.
			out = append(out, t.finish(old, failedOrClosed(old), r.Time))
		}
		e, ev := t.get(k, r.Time)
		e.init(r.Cookie, netflow.TCP, r.Dst, r.Task, r.Time)
		return append(out, ev...)
	case netflow.UDPSend:
		e, out := t.get(key{cookie: r.Cookie, remote: r.Dst}, r.Time)
		if e.Start.IsZero() {
			e.init(r.Cookie, netflow.UDP, r.Dst, r.Task, r.Time)
		}
		e.UDPSends += uint64(r.Sends)
		return out
	case netflow.Deny:
		t.stats.Denied++
		return []Flow{{Cookie: r.Cookie, Proto: r.Proto, Remote: r.Dst, Direction: Outbound, Task: r.Task,
			Start: r.Time, End: r.Time, Reason: Denied, RuleID: r.RuleID, Via: r.Via}}
	case netflow.State:
		return t.state(r)
	}
	return nil
}

func failedOrClosed(e *entry) End {
	if e.Established {
		return Closed
	}
	return Failed
}

func (e *entry) init(cookie uint64, p netflow.Protocol, dst netip.AddrPort, task netflow.Task, at time.Time) {
	e.Cookie, e.Proto, e.Remote, e.Direction, e.Task, e.Start = cookie, p, dst, Outbound, task, at
}

func (t *Tracker) state(r netflow.State) []Flow {
	k := tcpKey(r.Cookie, r.Src, r.Dst)
	e, known := t.flows[k]
	switch r.New {
	case netflow.StateSynSent, netflow.StateEstablished:
		var out []Flow
		if !known {
			if r.New == netflow.StateEstablished && r.Old == netflow.StateSynRecv {
				// Accepted connection: no connect, no cookie, no process context.
				e, out = t.get(k, r.Time)
				e.Cookie, e.Proto, e.Direction, e.Start = r.Cookie, netflow.TCP, Inbound, r.Time
			} else {
				t.stats.StateWithout++
				e, out = t.get(k, r.Time)
				e.init(r.Cookie, netflow.TCP, r.Dst, r.Task, r.Time)
			}
		} else {
			t.touch(e, r.Time)
		}
		e.sawState = true
		if r.Src.Port() != 0 {
			e.Local = r.Src
		}
		if r.Dst.IsValid() && r.Dst.Port() != 0 {
			e.Remote = r.Dst
		}
		if e.Task.PID == 0 && r.Task.PID != 0 {
			e.Task = r.Task
		}
		if r.New == netflow.StateEstablished {
			e.Established = true
		}
		return out
	case netflow.StateClose:
		if !known {
			if t.cut[r.Cookie] {
				delete(t.cut, r.Cookie)
				return nil
			}
			t.stats.CloseWithout++
			return nil
		}
		if r.Src.Port() != 0 {
			e.Local = r.Src
		}
		e.BytesSent, e.BytesReceived = r.BytesAcked, r.BytesReceived
		if e.Direction == Inbound {
			t.stats.InboundClosed++
		} else {
			t.stats.OutboundClosed++
		}
		return []Flow{t.finish(e, failedOrClosed(e), r.Time)}
	}
	return nil
}

// get returns the entry for k, creating it (and evicting past MaxFlows) when absent.
func (t *Tracker) get(k key, at time.Time) (*entry, []Flow) {
	if e, ok := t.flows[k]; ok {
		t.touch(e, at)
		return e, nil
	}
	var out []Flow
	for len(t.flows) >= t.cfg.MaxFlows && t.head != nil {
		t.stats.Evicted++
		out = append(out, t.finish(t.head, Stopped, at))
	}
	e := &entry{k: k, last: at, reported: at}
	t.flows[k] = e
	t.push(e)
	return e, out
}

func (t *Tracker) touch(e *entry, at time.Time) {
	if at.After(e.last) {
		e.last = at
	}
	t.unlink(e)
	t.push(e)
}

func (t *Tracker) push(e *entry) {
	e.prev, e.next = t.tail, nil
	if t.tail != nil {
		t.tail.next = e
	} else {
		t.head = e
	}
	t.tail = e
}

func (t *Tracker) unlink(e *entry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		t.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		t.tail = e.prev
	}
	e.prev, e.next = nil, nil
}

func (t *Tracker) finish(e *entry, why End, at time.Time) Flow {
	t.unlink(e)
	delete(t.flows, e.k)
	f := e.Flow
	f.End, f.Reason = at, why
	if f.End.Before(f.Start) {
		f.End = f.Start
	}
	return f
}

// Cut reports every flow of a socket whose packets enforcement started dropping (Reason
// Denied, Cut set) and forgets them: the connection cannot carry data any more, and its
// eventual close (after TCP gives up) is ignored rather than reported a second time.
func (t *Tracker) Cut(cookie uint64, at time.Time, rule uint32) []Flow {
	if cookie == 0 {
		return nil
	}
	var out []Flow
	for e := t.head; e != nil; {
		next := e.next
		if e.Cookie == cookie {
			f := t.finish(e, Denied, at)
			f.RuleID, f.Cut = rule, true
			out = append(out, f)
		}
		e = next
	}
	if len(out) > 0 {
		t.stats.Denied++
		if t.cut == nil || len(t.cut) >= 4096 {
			t.cut = make(map[uint64]bool) // bounded: a late CLOSE of an old cut is then merely counted
		}
		t.cut[cookie] = true
	}
	return out
}

// Tick ends idle UDP flows and TCP connects that never progressed, and reports long TCP
// flows (Idle, the flow stays tracked and its close reports the totals).
func (t *Tracker) Tick(now time.Time) []Flow {
	var out []Flow
	idle := t.cfg.IdleTimeout
	for e := t.head; e != nil; {
		next := e.next
		switch {
		case e.Proto == netflow.UDP && now.Sub(e.last) >= idle:
			out = append(out, t.finish(e, Idle, e.last))
		case e.Proto == netflow.TCP && !e.sawState && now.Sub(e.last) >= idle:
			out = append(out, t.finish(e, Failed, e.last))
		case e.Proto == netflow.TCP && now.Sub(e.reported) >= idle:
			e.reported = now
			f := e.Flow
			f.End, f.Reason = now, Idle
			out = append(out, f)
		}
		e = next
	}
	t.stats.Open = len(t.flows)
	return out
}

// Flush reports every open flow (Stopped) and forgets them.
func (t *Tracker) Flush(now time.Time) []Flow {
	var out []Flow
	for t.head != nil {
		out = append(out, t.finish(t.head, Stopped, now))
	}
	return out
}

// Stats returns the counters.
func (t *Tracker) Stats() Stats {
	s := t.stats
	s.Open = len(t.flows)
	return s
}
