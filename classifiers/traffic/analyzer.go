package traffic

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"runtime/debug"
	"time"

	"github.com/gopacket/gopacket/layers"

	"github.com/ward-dlp/ward/classifiers/catalog"
)

// Config tunes an Analyzer. Zero values take the documented defaults.
type Config struct {
	Catalog *catalog.Catalog // required
	Policy  *catalog.Policy  // nil: catalog.DefaultPolicy()
	Log     *slog.Logger

	// OnRecord receives each finished flow; OnDetection each detection. Both are called
	// synchronously from Packet/Flush on the caller's goroutine.
	OnRecord    func(FlowRecord)
	OnDetection func(Detection)

	MaxFlows      int           // live flows kept (default 262144); the oldest is evicted beyond
	TCPIdle       time.Duration // open TCP flow idle timeout (default 5m)
	TCPClosedIdle time.Duration // after FIN/RST (default 10s)
	UDPIdle       time.Duration // default 2m
	MaxDNSCache   int           // IP→name entries (default 131072)

	// IP fragment reassembly bounds (see frag.go for the overlap policy).
	MaxFragDatagrams int           // datagrams pending reassembly (default 1024)
	MaxFragBytes     int           // bytes buffered across them (default 8 MiB)
	FragTimeout      time.Duration // since a datagram's first fragment (default 30s, as Linux)

	// Detection thresholds.
	UploadBytes     uint64        // bytes up to one unsanctioned storage/AI app per client and window (default 10 MiB)
	UploadWindow    time.Duration // default 1h
	VideoMinPackets uint64        // media packets (both ways) that make a call (default 400)
	VideoMinBytes   uint64        // media bytes (both ways) that make a call (default 256 KiB)
	AlertEvery      time.Duration // repeat the same (client, app, kind) detection at most this often (default 1h)
}

func (c *Config) defaults() {
	if c.Policy == nil {
		c.Policy = catalog.DefaultPolicy()
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	setDur := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if c.MaxFlows <= 0 {
		c.MaxFlows = 1 << 18
	}
	if c.MaxDNSCache <= 0 {
		c.MaxDNSCache = 1 << 17
	}
	if c.MaxFragDatagrams <= 0 {
		c.MaxFragDatagrams = 1024
	}
	if c.MaxFragBytes <= 0 {
		c.MaxFragBytes = 8 << 20
	}
	setDur(&c.FragTimeout, 30*time.Second)
	setDur(&c.TCPIdle, 5*time.Minute)
	setDur(&c.TCPClosedIdle, 10*time.Second)
	setDur(&c.UDPIdle, 2*time.Minute)
	setDur(&c.UploadWindow, time.Hour)
	setDur(&c.AlertEvery, time.Hour)
	if c.UploadBytes == 0 {
		c.UploadBytes = 10 << 20
	}
	if c.VideoMinPackets == 0 {
		c.VideoMinPackets = 400
	}
	if c.VideoMinBytes == 0 {
		c.VideoMinBytes = 256 << 10
	}
}

// flowKey identifies a flow regardless of direction: endpoints are ordered.
type flowKey struct {
	loAddr, hiAddr [16]byte
	loPort, hiPort uint16
	proto          uint8
}

// lruGranularity is how stale a flow's position in its activity list may be.
const lruGranularity = 250 * time.Millisecond

const (
	listTCP = iota
	listTCPClosed
	listUDP
	numLists
)

type flow struct {
	// The first two cache lines hold everything a packet of an already-classified flow
	// touches (the index compares key; counters, activity and the inspection/volume
	// checks follow). flowPad keeps the struct a multiple of 64 bytes so the allocator's
	// size class keeps every flow line-aligned.
	key        flowKey
	clientIsLo bool
	closed     bool
	proto      uint8
	list       uint8
	volume     bool // an app whose byte counts can raise a detection (see decide)
	media      bool // RTP/RTCP/TURN/DTLS/STUN or UDP to a calling app
	fired      uint8
	last       int64
	moved      int64 // packet time of the last move to its list's tail
	pkts       [2]uint64
	bytes      [2]uint64
	insp       *inspect
	host       *hostApp // set when the app is known
	app        *catalog.App
	prev, next *flow

	hash        uint64
	client      netip.AddrPort
	server      netip.AddrPort
	start       int64
	proc        *Process
	name        string
	nameSrc     NameSource
	status      catalog.Status
	tenant      string
	protocol    string
	sni         string
	alpn        []string
	ja4         string
	tlsVersion  uint16
	clientMax   uint16
	cipher      uint16
	ech         bool
	quicVersion uint32
	dnsQuery    string
	realm       string
	flags       []string
	_           [flowPad]byte
}

// flowPad rounds flow up to a multiple of 64 bytes (checked by TestFlowLayout).
const flowPad = 16

// per-flow detection bits
const (
	firedWeakTLS = 1 << iota
	firedVideo
	firedECH
)

type flowList struct{ head, tail *flow }

func (l *flowList) push(f *flow) {
	f.prev, f.next = l.tail, nil
	if l.tail != nil {
		l.tail.next = f
	} else {
		l.head = f
	}
	l.tail = f
}

func (l *flowList) remove(f *flow) {
	if f.prev != nil {
		f.prev.next = f.next
	} else {
		l.head = f.next
	}
	if f.next != nil {
		f.next.prev = f.prev
	} else {
		l.tail = f.prev
	}
	f.prev, f.next = nil, nil
}

// hostApp is per (client address, app) state: when signalling was last seen, which
// sanctioned tenant this host was last on, how much it uploaded in the window, and when
// each detection kind last fired (rate limiting).
type hostApp struct {
	signalAt    int64
	tenant      string
	tenantUntil int64
	upStart     int64
	upBytes     uint64
	alerted     map[DetectionKind]int64
}

type hostAppKey struct {
	client netip.Addr
	app    string
}

// Analyzer turns packets into flow records and detections. It is not safe for concurrent
// use: feed it from one goroutine (shard by flow hash for more cores).
type Analyzer struct {
	cfg      Config
	cat      *catalog.Catalog
	pol      *catalog.Policy
	log      *slog.Logger
	flows    flowIndex
	seed     uint64
	lists    [numLists]flowList
	dns      ttlCache[netip.Addr]
	media    ttlCache[netip.AddrPort]
	echNames ttlCache[string]
	hosts    map[hostAppKey]*hostApp
	stats    Stats
	now      int64
	sweptAt  int64

	frags   reassembler
	fr      frame // the packet being decoded (a field, so decoding allocates nothing)
	scratch []byte
	lastLog int64
}

// New builds an Analyzer.
func New(cfg Config) (*Analyzer, error) {
	if cfg.Catalog == nil {
		return nil, errors.New("traffic: a catalog is required")
	}
	cfg.defaults()
	a := &Analyzer{
		cfg: cfg, cat: cfg.Catalog, pol: cfg.Policy, log: cfg.Log,
		flows:    newFlowIndex(1024),
		seed:     rand.Uint64() | 1,
		dns:      newTTLCache[netip.Addr](cfg.MaxDNSCache),
		media:    newTTLCache[netip.AddrPort](cfg.MaxDNSCache),
		echNames: newTTLCache[string](4096),
		hosts:    make(map[hostAppKey]*hostApp),
		frags:    newReassembler(cfg.MaxFragDatagrams, cfg.MaxFragBytes, int64(cfg.FragTimeout)),
	}
	return a, nil
}

// Stats returns a copy of the counters.
func (a *Analyzer) Stats() Stats { return a.stats }

// Packet feeds one captured frame of the given link type (offline path).
func (a *Analyzer) Packet(ts time.Time, lt layers.LinkType, data []byte) {
	a.PacketFrom(ts, lt, data, nil)
}

// PacketFrom feeds one frame with the local process that sent or received it (live path;
// proc may be nil). A malformed or hostile packet is counted and dropped; it never panics.
func (a *Analyzer) PacketFrom(ts time.Time, lt layers.LinkType, data []byte, proc *Process) {
	a.stats.Packets++
	a.stats.Bytes += uint64(len(data))
	defer func() {
		if r := recover(); r != nil {
			a.stats.Panics++
			if now := time.Now().UnixNano(); now-a.lastLog > int64(time.Second) {
				a.lastLog = now
				a.log.Error("traffic: recovered from a panic on a packet", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			}
		}
	}()
	now := ts.UnixNano()
	if now > a.now {
		a.now = now
	}
	if a.now-a.sweptAt >= int64(time.Second) {
		a.expire(a.now)
		a.frags.expire(a.now, &a.stats)
		a.sweptAt = a.now
	}
	fr := &a.fr
	switch a.decodeFrame(lt, data, fr) {
	case frameOK:
	case frameNotIP:
		a.stats.NotIP++
		return
	case frameNotTCPUDP:
		a.stats.NotTCPUDP++
		return
	case frameBad:
		a.stats.DecodeErrors++
		return
	case frameFragment:
		return // held for reassembly (or dropped and counted by the reassembler)
	}
	var t *tcpInfo
	if fr.proto == ipProtoTCP {
		t = &fr.tcp
	}
	a.packet(fr.proto, fr.src, fr.dst, fr.sp, fr.dp, fr.payload, fr.ipLen, proc, t)
}

type tcpInfo struct {
	seq                uint32
	syn, ack, fin, rst bool
}

func makeKey(proto uint8, src, dst netip.Addr, sp, dp uint16) (k flowKey, srcIsLo bool) {
	s, d := src.As16(), dst.As16()
	c := compare16(s, d)
	if c < 0 || c == 0 && sp <= dp {
		return flowKey{s, d, sp, dp, proto}, true
	}
	return flowKey{d, s, dp, sp, proto}, false
}

func compare16(a, b [16]byte) int {
	x, y := binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(b[:8])
	if x == y {
		x, y = binary.BigEndian.Uint64(a[8:]), binary.BigEndian.Uint64(b[8:])
	}
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

// serverPort reports ports that are services: the side that owns one is the server when
// the start of the flow was not seen.
func serverPort(p uint16) bool {
	switch {
	case p < 1024, p == 3478, p == 3479, p == 3480, p == 3481, p == 5349, p == 8443, p == 8080,
		p == 5222, p == 5223, p == 5228, p >= 8801 && p <= 8810, p >= 19302 && p <= 19309:
		return true
	}
	return false
}

func (a *Analyzer) packet(proto uint8, src, dst netip.Addr, sp, dp uint16, payload []byte, ipLen int, proc *Process, t *tcpInfo) {
	key, srcIsLo := makeKey(proto, src, dst, sp, dp)
	h := a.hashKey(&key)
	f := a.flows.get(h, &key)
	if f == nil {
		clientIsSrc := true
		switch {
		case t != nil && t.syn && !t.ack:
		case t != nil && t.syn && t.ack:
			clientIsSrc = false
		case serverPort(sp) && !serverPort(dp):
			clientIsSrc = false
		}
		f = a.newFlow(key, h, proto, src, dst, sp, dp, clientIsSrc == srcIsLo, clientIsSrc)
	}
	dir := 0
	if srcIsLo != f.clientIsLo {
		dir = 1
	}
	f.last = a.now
	f.pkts[dir]++
	f.bytes[dir] += uint64(ipLen)
	if proc != nil && f.proc == nil {
		f.proc = proc
	}
	if t != nil && (t.fin || t.rst) && !f.closed {
		f.closed = true
		a.lists[f.list].remove(f)
		f.list = listTCPClosed
		a.lists[f.list].push(f)
	} else if a.now-f.moved > int64(lruGranularity) && a.lists[f.list].tail != f {
		// Keep lists ordered by activity to within lruGranularity: moving a busy flow on
		// every packet would cost more than the whole rest of the bookkeeping.
		a.lists[f.list].remove(f)
		a.lists[f.list].push(f)
		f.moved = a.now
	}
	if f.insp != nil {
		a.inspect(f, dir, payload, t)
	}
	if f.volume {
		a.volume(f, dir, ipLen)
	}
}

func (a *Analyzer) newFlow(key flowKey, h uint64, proto uint8, src, dst netip.Addr, sp, dp uint16, clientIsLo, clientIsSrc bool) *flow {
	if a.flows.len() >= a.cfg.MaxFlows {
		// Evict the least recently active flow, preferring closed TCP, then UDP.
		for _, l := range []int{listTCPClosed, listUDP, listTCP} {
			if h := a.lists[l].head; h != nil {
				a.finish(h)
				a.stats.FlowsEvicted++
				break
			}
		}
	}
	f := &flow{key: key, hash: h, proto: proto, clientIsLo: clientIsLo, start: a.now, last: a.now, moved: a.now, insp: &inspect{}, status: catalog.Unknown}
	if clientIsSrc {
		f.client, f.server = netip.AddrPortFrom(src, sp), netip.AddrPortFrom(dst, dp)
	} else {
		f.client, f.server = netip.AddrPortFrom(dst, dp), netip.AddrPortFrom(src, sp)
	}
	f.list = listTCP
	if proto == 17 {
		f.list = listUDP
		f.protocol = "udp"
	} else {
		f.protocol = "tcp"
	}
	a.flows.put(f)
	a.lists[f.list].push(f)
	a.stats.FlowsCreated++
	a.nameFromCaches(f)
	return f
}

// expire finishes flows idle past their timeout. Lists are ordered by last activity, so
// each list is scanned only up to its first live flow.
func (a *Analyzer) expire(now int64) {
	idle := [numLists]int64{int64(a.cfg.TCPIdle), int64(a.cfg.TCPClosedIdle), int64(a.cfg.UDPIdle)}
	for l := range a.lists {
		for f := a.lists[l].head; f != nil && now-f.moved > idle[l]; f = a.lists[l].head {
			if now-f.last <= idle[l] { // active since its last move: requeue
				a.lists[l].remove(f)
				a.lists[l].push(f)
				f.moved = now
				continue
			}
			a.finish(f)
			a.stats.FlowsExpired++
		}
	}
	if len(a.hosts) > 4*a.cfg.MaxFlows { // bound per-host state
		for k, h := range a.hosts {
			if now-max(h.signalAt, h.upStart, h.tenantUntil) > int64(a.cfg.UploadWindow) {
				delete(a.hosts, k)
			}
		}
	}
}

// Flush finishes every live flow (end of a capture file, or shutdown).
func (a *Analyzer) Flush() {
	for l := range a.lists {
		for f := a.lists[l].head; f != nil; f = a.lists[l].head {
			a.finish(f)
		}
	}
}

func (a *Analyzer) finish(f *flow) {
	a.lists[f.list].remove(f)
	a.unlink(f)
	a.finalChecks(f)
	if a.cfg.OnRecord != nil {
		a.cfg.OnRecord(a.record(f))
	}
	f.insp = nil
}

func (a *Analyzer) record(f *flow) FlowRecord {
	r := FlowRecord{
		Client: f.client, Server: f.server, Process: f.proc,
		Status: f.status, Tenant: f.tenant, Name: f.name, NameSource: f.nameSrc,
		Protocol: f.protocol, SNI: f.sni, ALPN: f.alpn, JA4: f.ja4,
		TLSVersion: TLSVersionName(f.tlsVersion), TLSClientMax: TLSVersionName(f.clientMax),
		ECH: f.ech, DNSQuery: f.dnsQuery, STUNRealm: f.realm, Flags: f.flags,
		BytesUp: f.bytes[0], BytesDown: f.bytes[1], PacketsUp: f.pkts[0], PacketsDown: f.pkts[1],
		Start: time.Unix(0, f.start).UTC(), End: time.Unix(0, f.last).UTC(),
	}
	r.Proto = "tcp"
	if f.proto == 17 {
		r.Proto = "udp"
	}
	if f.cipher != 0 {
		r.TLSCipher = fmt.Sprintf("0x%04x", f.cipher)
	}
	if f.quicVersion != 0 {
		r.QUICVersion = QUICVersionName(f.quicVersion)
	}
	if f.app != nil {
		r.App, r.AppName, r.Vendor, r.Category = f.app.ID, f.app.Name, f.app.Vendor, string(f.app.Category)
		r.Risk, r.BAA = f.app.Risk.Score, f.app.BAA.Offered
	}
	return r
}

func (a *Analyzer) flag(f *flow, s string) {
	for _, x := range f.flags {
		if x == s {
			return
		}
	}
	if len(f.flags) < 8 {
		f.flags = append(f.flags, s)
	}
}

// hashKey mixes the flow key with a per-analyzer random seed (so an attacker cannot aim
// flows at one chain without knowing it) into the map key.
func (a *Analyzer) hashKey(k *flowKey) uint64 {
	h := a.seed
	mix := func(v uint64) {
		h ^= v
		h *= 0x9e3779b97f4a7c15
		h ^= h >> 32
	}
	mix(binary.LittleEndian.Uint64(k.loAddr[:8]))
	mix(binary.LittleEndian.Uint64(k.loAddr[8:]))
	mix(binary.LittleEndian.Uint64(k.hiAddr[:8]))
	mix(binary.LittleEndian.Uint64(k.hiAddr[8:]))
	mix(uint64(k.loPort)<<24 | uint64(k.hiPort)<<8 | uint64(k.proto))
	// The index uses the low bits: finish with a full avalanche so they depend on all.
	h ^= h >> 29
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 32
	return h
}

// unlink removes f from the index.
func (a *Analyzer) unlink(f *flow) { a.flows.del(f) }
