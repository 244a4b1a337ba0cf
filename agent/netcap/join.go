// Package netcap joins the packets the kernel captured at the start of each flow
// (bpf/netcap) to the flows the kernel's connect and TCP-state hooks report (agent/flows):
// it feeds the packets to the traffic analyzer, which names the application (TLS/QUIC SNI,
// HTTP Host, DNS answers, STUN) and raises detections, and it hands each finished flow what
// the analyzer learned about it, joined by socket cookie. It also turns the policy's network
// block list into the kernel's deny list and packet drops (enforce.go).
//
// A Joiner is owned by one goroutine: the analyzer is not safe for concurrent use.
package netcap

import (
	"encoding/binary"
	"errors"
	"log/slog"
	"net/netip"
	"time"

	"github.com/ward-dlp/ward/agent/flows"
	capprobe "github.com/ward-dlp/ward/bpf/netcap"
	"github.com/ward-dlp/ward/bpf/netflow"
	"github.com/ward-dlp/ward/classifiers/catalog"
	"github.com/ward-dlp/ward/classifiers/traffic"
)

// Config sets up a Joiner.
type Config struct {
	Catalog *catalog.Catalog // required
	Policy  *catalog.Policy  // the organisation's sanctioning; nil: catalog.DefaultPolicy()
	Log     *slog.Logger
	// MaxSockets bounds the per-socket state (process, 5-tuples, finished records, pending
	// detections); past it the oldest half is forgotten. Default 65536.
	MaxSockets int
	// Plaintext, when set, samples the captured payload of outbound TCP flows that are not
	// TLS through the content classifiers (see plain.go).
	Plaintext *PlainConfig
}

// Annotation is what the analyzer learned about one flow.
type Annotation struct {
	Record     traffic.FlowRecord
	Detections []traffic.Detection
}

// Stats are the joiner's counters, for health events.
type Stats struct {
	Packets      uint64 // captured packets fed to the analyzer
	Undecodable  uint64 // packets whose IP/L4 header the joiner could not read
	DNSAnswers   uint64 // DNS responses handed to the enforcer
	Joined       uint64 // flows annotated from the analyzer
	NotJoined    uint64 // finished flows the analyzer had no record of
	Detections   uint64
	Plaintext    PlainStats
	Analyzer     traffic.Stats
	SocketsKnown int
}

type tupleKey struct {
	cookie uint64
	remote netip.AddrPort
	proto  uint8
}

type flowKey struct {
	proto          uint8
	client, server netip.AddrPort
}

// Joiner feeds captured packets to the analyzer and annotates finished flows.
type Joiner struct {
	an    *traffic.Analyzer
	log   *slog.Logger
	procs gens[uint64, *traffic.Process]
	local gens[tupleKey, netip.AddrPort] // local endpoint of (socket, remote), from egress packets
	done  gens[flowKey, traffic.FlowRecord]
	dets  gens[flowKey, []traffic.Detection]
	stats Stats
	plain *plainSampler
	// Detections is called for every detection as the analyzer raises it (after it is
	// queued for the flow's event); nil is fine.
	OnDetection func(traffic.Detection)
}

// New builds a Joiner around a fresh analyzer.
func New(cfg Config) (*Joiner, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxSockets <= 0 {
		cfg.MaxSockets = 65536
	}
	j := &Joiner{log: cfg.Log,
		procs: newGens[uint64, *traffic.Process](cfg.MaxSockets),
		local: newGens[tupleKey, netip.AddrPort](cfg.MaxSockets),
		done:  newGens[flowKey, traffic.FlowRecord](cfg.MaxSockets / 4),
		dets:  newGens[flowKey, []traffic.Detection](cfg.MaxSockets / 4),
	}
	an, err := traffic.New(traffic.Config{
		Catalog: cfg.Catalog, Policy: cfg.Policy, Log: cfg.Log, MaxFlows: cfg.MaxSockets,
		OnRecord:    j.finished,
		OnDetection: j.detection,
	})
	if err != nil {
		return nil, err
	}
	j.an = an
	if cfg.Plaintext != nil {
		if cfg.Plaintext.Engine == nil {
			return nil, errors.New("netcap: plaintext sampling needs a classification engine")
		}
		j.plain = newPlainSampler(*cfg.Plaintext, cfg.MaxSockets)
		j.plain.proc = func(cookie uint64) (uint32, uint32, string) {
			if p, ok := j.procs.get(cookie); ok {
				return uint32(p.PID), uint32(p.UID), p.Comm
			}
			return 0, 0, ""
		}
	}
	return j, nil
}

func protoNum(p netflow.Protocol) uint8 { return uint8(p) }

func keyOf(r *traffic.FlowRecord) flowKey {
	p := uint8(6)
	if r.Proto == "udp" {
		p = 17
	}
	return flowKey{p, unmap(r.Client), unmap(r.Server)}
}

func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// finished keeps the analyzer's final record of a flow it expired, for a flow event that
// comes later (a long TCP connection outlives the analyzer's idle timeout: only its first
// packets are captured).
func (j *Joiner) finished(r traffic.FlowRecord) { j.done.put(keyOf(&r), r) }

func (j *Joiner) detection(d traffic.Detection) {
	j.stats.Detections++
	k := flowKey{6, unmap(d.Client), unmap(d.Server)}
	if d.Proto == "udp" {
		k.proto = 17
	}
	ds, _ := j.dets.get(k)
	if len(ds) < 16 {
		j.dets.put(k, append(ds, d))
	}
	if j.OnDetection != nil {
		j.OnDetection(d)
	}
}

// Process records who owns a socket (from the connect/send records), so detections name
// the process.
func (j *Joiner) Process(cookie uint64, t netflow.Task) {
	if cookie == 0 || t.PID == 0 {
		return
	}
	p, ok := j.procs.get(cookie)
	if !ok {
		p = &traffic.Process{Cookie: cookie}
		j.procs.put(cookie, p)
	}
	p.PID, p.UID, p.Comm = int(t.PID), int(t.UID), t.Comm
}

// Seen describes a captured packet: its flow as seen from the local socket, and the DNS
// message it carried when it was a DNS response.
type Seen struct {
	Cookie        uint64
	Proto         uint8
	Local, Remote netip.AddrPort
	DNS           *traffic.DNSMessage
}

// Packet feeds one captured packet to the analyzer.
func (j *Joiner) Packet(p capprobe.Packet) Seen {
	j.stats.Packets++
	s, payload, ok := parse(p.Data, p.Dir)
	if !ok {
		j.stats.Undecodable++
		return Seen{}
	}
	s.Cookie = p.Cookie
	var proc *traffic.Process
	if p.Cookie != 0 {
		var known bool
		if proc, known = j.procs.get(p.Cookie); !known {
			proc = &traffic.Process{Cookie: p.Cookie}
			j.procs.put(p.Cookie, proc)
		}
		if p.Dir == capprobe.Egress {
			j.local.put(tupleKey{p.Cookie, s.Remote, s.Proto}, s.Local)
		}
	}
	j.an.PacketFrom(p.Time, 101 /* LINKTYPE_RAW: the capture starts at the IP header */, p.Data, proc)
	if j.plain != nil && p.Dir == capprobe.Egress && p.Cookie != 0 && s.Proto == 6 && !p.DNS {
		if l4, n, ok := tcpSegment(p.Data, p.Len); ok {
			j.plain.segment(p, s.Local, s.Remote, l4, n)
		}
	}
	if s.Proto == 17 && s.Remote.Port() == 53 && p.Dir == capprobe.Ingress || s.Proto == 17 && s.Local.Port() == 53 && p.Dir == capprobe.Egress {
		// A DNS response: from a resolver to us, or from a local resolver's socket.
		if m, err := traffic.ParseDNS(payload); m != nil && m.Response && (err == nil || len(m.Answers) > 0) {
			j.stats.DNSAnswers++
			s.DNS = m
		}
	}
	return s
}

// parse reads the addresses and ports of an IP packet and returns the L4 payload.
func parse(b []byte, dir capprobe.Direction) (Seen, []byte, bool) {
	var s Seen
	var src, dst netip.Addr
	var l4 []byte
	switch {
	case len(b) >= 20 && b[0]>>4 == 4:
		ihl := int(b[0]&0x0f) * 4
		if ihl < 20 || len(b) < ihl+8 || binary.BigEndian.Uint16(b[6:])&0x1fff != 0 {
			return s, nil, false
		}
		s.Proto = b[9]
		src, dst = netip.AddrFrom4([4]byte(b[12:16])), netip.AddrFrom4([4]byte(b[16:20]))
		l4 = b[ihl:]
	case len(b) >= 48 && b[0]>>4 == 6:
		s.Proto = b[6]
		src, dst = netip.AddrFrom16([16]byte(b[8:24])), netip.AddrFrom16([16]byte(b[24:40]))
		l4 = b[40:]
	default:
		return s, nil, false
	}
	sp, dp := binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:])
	var payload []byte
	switch s.Proto {
	case 6:
		if len(l4) < 20 || int(l4[12]>>4)*4 < 20 || int(l4[12]>>4)*4 > len(l4) {
			return s, nil, false
		}
		payload = l4[int(l4[12]>>4)*4:]
	case 17:
		payload = l4[8:]
		if ul := int(binary.BigEndian.Uint16(l4[4:])); ul >= 8 && ul <= len(l4) {
			payload = l4[8:ul]
		}
	default:
		return s, nil, false
	}
	if dir == capprobe.Egress {
		s.Local, s.Remote = netip.AddrPortFrom(src.Unmap(), sp), netip.AddrPortFrom(dst.Unmap(), dp)
	} else {
		s.Local, s.Remote = netip.AddrPortFrom(dst.Unmap(), dp), netip.AddrPortFrom(src.Unmap(), sp)
	}
	return s, payload, true
}

// Lookup returns what the analyzer knows so far about a flow.
func (j *Joiner) Lookup(proto uint8, local, remote netip.AddrPort) (traffic.FlowRecord, bool) {
	if r, ok := j.an.Lookup(proto, local, remote); ok {
		return r, true
	}
	return j.done.get(flowKey{proto, unmap(local), unmap(remote)})
}

// Annotate returns what the analyzer learned about a finished (or interim) flow. final
// forgets the flow's queued detections and, for TCP, the socket.
func (j *Joiner) Annotate(f flows.Flow, final bool) (Annotation, bool) {
	if f.Reason == flows.Denied || !f.Remote.IsValid() {
		return Annotation{}, false
	}
	proto := protoNum(f.Proto)
	remote := unmap(f.Remote)
	local := unmap(f.Local)
	tk := tupleKey{f.Cookie, remote, proto}
	if l, ok := j.local.get(tk); ok && (!local.IsValid() || local.Port() == 0) {
		local = l
	}
	if !local.IsValid() {
		j.stats.NotJoined++
		return Annotation{}, false
	}
	rec, ok := j.Lookup(proto, local, remote)
	if !ok {
		j.stats.NotJoined++
		return Annotation{}, false
	}
	j.stats.Joined++
	k := keyOf(&rec)
	dets, _ := j.dets.get(k)
	if final {
		j.dets.del(k)
		j.local.del(tk)
		if f.Proto == netflow.TCP {
			if j.plain != nil {
				j.plain.closed(f.Cookie) // before the socket's owner is forgotten
			}
			j.procs.del(f.Cookie)
		}
	}
	return Annotation{Record: rec, Detections: dets}, true
}

// Tick advances the analyzer's clock so idle flows expire without packets, and reports
// plaintext samples that went quiet.
func (j *Joiner) Tick(now time.Time) {
	j.an.Advance(now)
	if j.plain != nil {
		j.plain.tick(now)
	}
}

// Flush reports every open plaintext sample (at stop).
func (j *Joiner) Flush() {
	if j.plain != nil {
		j.plain.flush()
	}
}

// Stats returns the counters.
func (j *Joiner) Stats() Stats {
	s := j.stats
	s.Analyzer = j.an.Stats()
	s.SocketsKnown = j.procs.len()
	if j.plain != nil {
		s.Plaintext = j.plain.stats
	}
	return s
}

// gens is a bounded map that forgets its oldest half at once: two generations, lookups in
// both, and when the current one fills it becomes the old one. No per-entry bookkeeping.
type gens[K comparable, V any] struct {
	cur, old map[K]V
	max      int
}

func newGens[K comparable, V any](n int) gens[K, V] {
	return gens[K, V]{cur: map[K]V{}, old: map[K]V{}, max: max(n/2, 16)}
}

func (g *gens[K, V]) get(k K) (V, bool) {
	if v, ok := g.cur[k]; ok {
		return v, true
	}
	v, ok := g.old[k]
	return v, ok
}

func (g *gens[K, V]) put(k K, v V) {
	if _, ok := g.cur[k]; !ok && len(g.cur) >= g.max {
		g.old, g.cur = g.cur, make(map[K]V, g.max)
	}
	delete(g.old, k)
	g.cur[k] = v
}

func (g *gens[K, V]) del(k K) {
	delete(g.cur, k)
	delete(g.old, k)
}

func (g *gens[K, V]) len() int { return len(g.cur) + len(g.old) }
