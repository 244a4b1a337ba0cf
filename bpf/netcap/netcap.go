// Package netcap captures the first packets of every network flow on the host, for the
// network-intelligence parsers (TLS and QUIC ClientHello, DNS answers, HTTP Host, STUN),
// each tagged with the kernel socket cookie so it joins the process that owns the socket.
// It also drops the packets of sockets the agent marks (enforcement against a flow whose
// server name belongs to a blocked app).
//
// The preferred hooks are cgroup_skb ingress and egress on the root of the cgroup v2
// hierarchy: one attachment covers every local socket on every interface, including
// interfaces that appear later, and the packet's socket is at hand. When they cannot attach,
// tcx programs are attached to every interface and to each new one as netlink announces it.
// See bpf/README.md for the trade-offs.
package netcap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/ward-dlp/ward/bpf/internal/kernel"
	"github.com/ward-dlp/ward/bpf/netflow"
)

// Status reports how one hook is attached.
type Status = kernel.Status

// ErrClosed is returned by Next once the probe is closed.
var ErrClosed = fmt.Errorf("netcap probe closed: %w", os.ErrClosed)

// ErrMalformed wraps every record decode failure.
var ErrMalformed = errors.New("malformed netcap record")

// Hook selects how packets are captured.
type Hook string

// Hooks.
const (
	// HookAuto tries cgroup_skb and falls back to tcx.
	HookAuto Hook = "auto"
	// HookCgroup uses cgroup_skb on the cgroup v2 root only.
	HookCgroup Hook = "cgroup"
	// HookTCX uses tcx on every interface only.
	HookTCX Hook = "tcx"
)

// Defaults and bounds of Config.
const (
	DefaultRingBytes    = 8 << 20
	DefaultPackets      = 10
	DefaultBytes        = 8192
	DefaultSnap         = 2048
	MaxSnap             = 4096
	DefaultDNSPerSecond = 2000
)

// Config tunes the probe; zero fields take defaults.
type Config struct {
	RingBytes  uint32 // ring buffer size, rounded up to a power of two
	IgnoreTGID uint32 // the agent's pid: its own egress is not captured (0: off)
	// Cgroup is the cgroup v2 directory cgroup_skb attaches to. Empty: the root of the
	// first cgroup2 mount in /proc/mounts.
	Cgroup string
	// Packets and Bytes bound the capture per flow direction: after Packets packets or
	// Bytes captured bytes, the flow's packets are only counted.
	Packets, Bytes uint32
	// Snap is the most bytes (from the IP header on) captured of one packet (≤ MaxSnap).
	Snap uint32
	// DNSPerSecond bounds, per CPU, DNS packets captured beyond their flow's budget.
	DNSPerSecond uint32
	Hook         Hook
}

func (c *Config) defaults() error {
	if c.RingBytes == 0 {
		c.RingBytes = DefaultRingBytes
	}
	if c.Packets == 0 {
		c.Packets = DefaultPackets
	}
	if c.Bytes == 0 {
		c.Bytes = DefaultBytes
	}
	if c.Snap == 0 {
		c.Snap = DefaultSnap
	}
	if c.Snap < 64 || c.Snap > MaxSnap {
		return fmt.Errorf("netcap: snap length %d outside 64..%d", c.Snap, MaxSnap)
	}
	if c.DNSPerSecond == 0 {
		c.DNSPerSecond = DefaultDNSPerSecond
	}
	switch c.Hook {
	case "":
		c.Hook = HookAuto
	case HookAuto, HookCgroup, HookTCX:
	default:
		return fmt.Errorf("netcap: hook %q: want auto, cgroup or tcx", c.Hook)
	}
	return nil
}

// Direction says which way a packet went.
type Direction uint8

// Directions.
const (
	Egress  Direction = 0
	Ingress Direction = 1
)

func (d Direction) String() string {
	if d == Ingress {
		return "ingress"
	}
	return "egress"
}

// Record is a Packet or a Drop.
type Record interface{ isRecord() }

// Packet is the start of one captured packet.
type Packet struct {
	Time    time.Time
	Cookie  uint64 // socket cookie; 0 when the packet had no socket (tcx ingress)
	Dir     Direction
	Ifindex uint32
	Len     uint32 // the packet's length from the IP header on
	// Data is the packet from its IP header, at most Config.Snap bytes. It is the
	// caller's (the ring buffer copy).
	Data []byte
	// DNS: captured under the DNS rule after the flow's budget was spent.
	DNS bool
	// Truncated: Data is shorter than the packet.
	Truncated bool
	// TCX: captured by the tcx fallback rather than cgroup_skb.
	TCX bool
}

// Drop reports the first packet dropped for a socket the agent marked with DropCookie.
type Drop struct {
	Time    time.Time
	Cookie  uint64
	Dir     Direction
	Ifindex uint32
	Rule    uint32
}

func (Packet) isRecord() {}
func (Drop) isRecord()   {}

// Probe is a loaded and attached capture probe.
type Probe struct {
	log    *slog.Logger
	ring   *kernel.Ring
	clock  kernel.Clock
	loader *kernel.Loader

	mu      sync.Mutex // guards links, status, drops
	links   []link.Link
	tcx     map[int][]link.Link // tcx links per ifindex
	status  []Status
	drops   map[uint64]bool
	closed  bool
	nlFD    int
	nlDone  chan struct{}
	hookErr error
}

// Load loads the programs and attaches them: cgroup_skb on the cgroup v2 root, or tcx on
// every interface when that fails (Config.Hook). Load fails only when neither works.
func Load(cfg Config, log *slog.Logger) (*Probe, error) {
	if log == nil {
		log = slog.Default()
	}
	log = log.With("probe", "netcap")
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("remove memlock rlimit: %w", err)
	}
	spec, err := loadNetcap()
	if err != nil {
		return nil, fmt.Errorf("load netcap BPF spec: %w", err)
	}
	spec.Maps["events"].MaxEntries = kernel.RingSize(cfg.RingBytes)
	for name, v := range map[string]uint32{"ward_ignore_tgid": cfg.IgnoreTGID, "max_packets": cfg.Packets,
		"max_bytes": cfg.Bytes, "snap_len": cfg.Snap, "dns_per_sec": cfg.DNSPerSecond} {
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("set %s: %w", name, err)
		}
	}
	loader, err := kernel.NewLoader(spec, log)
	if err != nil {
		return nil, fmt.Errorf("netcap: %w", err)
	}
	p := &Probe{log: log, loader: loader, tcx: map[int][]link.Link{}, drops: map[uint64]bool{}, nlFD: -1}
	attached := false
	if cfg.Hook != HookTCX {
		attached = p.attachCgroup(cfg.Cgroup)
	}
	if !attached && cfg.Hook != HookCgroup {
		if cfg.Hook == HookAuto {
			log.Warn("cgroup_skb capture unavailable; falling back to tcx on every interface")
		}
		attached = p.attachTCX()
	}
	if !attached {
		p.closeLinks()
		loader.Close()
		return nil, fmt.Errorf("netcap: no capture hook attached: %w", p.hookErr)
	}
	if p.ring, err = kernel.OpenRing(loader); err != nil {
		p.closeLinks()
		loader.Close()
		return nil, fmt.Errorf("netcap: %w", err)
	}
	return p, nil
}

// attachCgroup attaches both cgroup_skb programs, or neither: half a capture (egress only)
// would look like a working probe while missing every DNS answer.
func (p *Probe) attachCgroup(cg string) bool {
	if cg == "" {
		var err error
		if cg, err = netflow.CgroupV2Root("/proc/mounts"); err != nil {
			p.fail("capture/cgroup_skb", "cgroup_skb", err)
			return false
		}
	}
	var ls []link.Link
	for _, h := range []struct {
		prog string
		at   ebpf.AttachType
	}{{"cg_egress", ebpf.AttachCGroupInetEgress}, {"cg_ingress", ebpf.AttachCGroupInetIngress}} {
		hook := fmt.Sprintf("cgroup_skb/%s@%s", strings.TrimPrefix(h.prog, "cg_"), cg)
		prog, err := p.loader.Program(h.prog)
		var l link.Link
		if err == nil {
			l, err = link.AttachCgroup(link.CgroupOptions{Path: cg, Attach: h.at, Program: prog})
		}
		if err != nil {
			for _, l := range ls {
				l.Close()
			}
			p.fail("capture/cgroup_skb", hook, err)
			return false
		}
		ls = append(ls, l)
	}
	p.links = append(p.links, ls...)
	p.status = append(p.status, Status{Name: "capture/cgroup_skb", Hook: "cgroup_skb/{egress,ingress}@" + cg, Attached: true})
	return true
}

func (p *Probe) fail(name, hook string, err error) {
	p.hookErr = errors.Join(p.hookErr, fmt.Errorf("%s: %w", hook, err))
	p.status = append(p.status, Status{Name: name, Hook: hook, Err: err})
	p.log.Warn("bpf capability unavailable", "capability", name, "hook", hook, "err", err)
}

// attachTCX attaches to every interface now and starts following new ones.
func (p *Probe) attachTCX() bool {
	for _, name := range []string{"tc_egress", "tc_ingress"} {
		if _, err := p.loader.Program(name); err != nil {
			p.fail("capture/tcx", "tcx", err)
			return false
		}
	}
	fd, err := linkEvents()
	if err != nil {
		// Without netlink new interfaces are missed; say so but capture what exists.
		p.log.Warn("cannot follow new network interfaces; tcx capture covers the current ones only", "err", err)
		fd = -1
	}
	ifs, err := net.Interfaces()
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		p.fail("capture/tcx", "tcx", fmt.Errorf("list interfaces: %w", err))
		return false
	}
	n := 0
	for _, ifc := range ifs {
		if p.attachLink(ifc.Index, ifc.Name) {
			n++
		}
	}
	if n == 0 {
		if fd >= 0 {
			unix.Close(fd)
		}
		p.fail("capture/tcx", "tcx", errors.New("no interface accepted the tcx programs"))
		return false
	}
	hook := "tcx/{egress,ingress} on every interface"
	if fd >= 0 {
		p.nlFD, p.nlDone = fd, make(chan struct{})
		go p.followLinks(fd)
		hook += " (following new ones)"
	}
	p.status = append(p.status, Status{Name: "capture/tcx", Hook: hook, Attached: true})
	return true
}

// l2Len is the link-layer header length of an interface type (ARPHRD_*), or false for
// types whose frames the capture cannot parse.
func l2Len(name string) (uint32, bool) {
	b, err := os.ReadFile("/sys/class/net/" + name + "/type")
	if err != nil {
		return 0, false
	}
	t, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, false
	}
	switch t {
	case 1, 772: // ARPHRD_ETHER, ARPHRD_LOOPBACK (an Ethernet header with zero addresses)
		return 14, true
	case 65534, 768, 769, 776, 778, 823: // NONE (tun, wireguard), TUNNEL, TUNNEL6, SIT, IPGRE, IP6GRE
		return 0, true
	}
	return 0, false
}

func (p *Probe) attachLink(index int, name string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.tcx[index] != nil {
		return false
	}
	l2, ok := l2Len(name)
	if !ok {
		p.log.Info("interface not captured: link type without an IP parser", "interface", name)
		return false
	}
	if err := p.loader.Map("l2_len").Update(uint32(index), l2, ebpf.UpdateAny); err != nil {
		p.log.Warn("tcx capture: set link header length", "interface", name, "err", err)
		return false
	}
	var ls []link.Link
	for _, h := range []struct {
		prog string
		at   ebpf.AttachType
	}{{"tc_egress", ebpf.AttachTCXEgress}, {"tc_ingress", ebpf.AttachTCXIngress}} {
		prog, err := p.loader.Program(h.prog)
		var l link.Link
		if err == nil {
			l, err = link.AttachTCX(link.TCXOptions{Interface: index, Program: prog, Attach: h.at})
		}
		if err != nil {
			for _, l := range ls {
				l.Close()
			}
			p.log.Warn("tcx capture: attach failed", "interface", name, "direction", h.prog, "err", err)
			return false
		}
		ls = append(ls, l)
	}
	p.tcx[index] = ls // referenced until the link goes away or the probe closes
	p.log.Debug("tcx capture attached", "interface", name, "ifindex", index)
	return true
}

func (p *Probe) detachLink(index int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.tcx[index] {
		l.Close()
	}
	delete(p.tcx, index)
	_ = p.loader.Map("l2_len").Delete(uint32(index))
}

// linkEvents opens a netlink socket subscribed to link changes. A receive timeout lets the
// reader notice Close.
func linkEvents() (int, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return -1, fmt.Errorf("netlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: unix.RTMGRP_LINK}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("netlink bind: %w", err)
	}
	tv := unix.Timeval{Usec: 200000}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("netlink timeout: %w", err)
	}
	return fd, nil
}

// followLinks attaches to interfaces as they appear and drops the links of removed ones.
// It gets the netlink descriptor as an argument because closeLinks resets p.nlFD under
// the lock while this loop is still receiving; the descriptor is closed only after the
// loop has returned.
func (p *Probe) followLinks(fd int) {
	defer close(p.nlDone)
	buf := make([]byte, 64<<10)
	for {
		p.mu.Lock()
		closed := p.closed
		p.mu.Unlock()
		if closed {
			return
		}
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			if errors.Is(err, unix.ENOBUFS) {
				// Events were lost: re-scan so no interface stays uncaptured.
				if ifs, err := net.Interfaces(); err == nil {
					for _, ifc := range ifs {
						p.attachLink(ifc.Index, ifc.Name)
					}
				}
				continue
			}
			p.log.Warn("netlink link events stopped; new interfaces are not captured", "err", err)
			return
		}
		for _, ev := range parseLinkEvents(buf[:n]) {
			if ev.del {
				p.detachLink(ev.index)
				continue
			}
			if ifc, err := net.InterfaceByIndex(ev.index); err == nil {
				p.attachLink(ifc.Index, ifc.Name)
			}
		}
	}
}

type linkEvent struct {
	index int
	del   bool
}

// parseLinkEvents reads RTM_NEWLINK/RTM_DELLINK messages (struct ifinfomsg: family, pad,
// type, index, flags, change).
func parseLinkEvents(b []byte) []linkEvent {
	var out []linkEvent
	for len(b) >= unix.NLMSG_HDRLEN {
		l := int(binary.NativeEndian.Uint32(b))
		typ := binary.NativeEndian.Uint16(b[4:])
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			break
		}
		body := b[unix.NLMSG_HDRLEN:l]
		if (typ == unix.RTM_NEWLINK || typ == unix.RTM_DELLINK) && len(body) >= 16 {
			idx := int(int32(binary.NativeEndian.Uint32(body[4:])))
			if idx > 0 {
				out = append(out, linkEvent{index: idx, del: typ == unix.RTM_DELLINK})
			}
		}
		al := (l + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1)
		if al > len(b) {
			break
		}
		b = b[al:]
	}
	return out
}

// Status reports which capture hook is attached (or why none is).
func (p *Probe) Status() []Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.status)
}

// Interfaces is how many interfaces the tcx fallback is attached to (0 with cgroup_skb).
func (p *Probe) Interfaces() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.tcx)
}

// DropCookie makes the probe drop every further packet of the socket, both ways, and
// report the first as a Drop carrying rule.
func (p *Probe) DropCookie(cookie uint64, rule uint32) error {
	if cookie == 0 {
		return errors.New("netcap: drop: cookie 0 names no socket")
	}
	err := p.ring.Maps(func(l *kernel.Loader) error {
		v := netcapDropVal{Rule: rule}
		if err := l.Map("drop_cookies").Update(cookie, &v, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("netcap: drop cookie %d: %w", cookie, err)
		}
		p.mu.Lock()
		p.drops[cookie] = true
		p.mu.Unlock()
		return setActive(l, true)
	})
	if errors.Is(err, os.ErrClosed) {
		return ErrClosed
	}
	return err
}

// ForgetCookie stops dropping a socket's packets (it closed, or the policy changed).
func (p *Probe) ForgetCookie(cookie uint64) error {
	err := p.ring.Maps(func(l *kernel.Loader) error {
		if err := l.Map("drop_cookies").Delete(cookie); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("netcap: forget cookie %d: %w", cookie, err)
		}
		p.mu.Lock()
		delete(p.drops, cookie)
		empty := len(p.drops) == 0
		p.mu.Unlock()
		if empty {
			return setActive(l, false)
		}
		return nil
	})
	if errors.Is(err, os.ErrClosed) {
		return ErrClosed
	}
	return err
}

func setActive(l *kernel.Loader, on bool) error {
	var c netcapCtl
	if on {
		c.DropsActive = 1
	}
	if err := l.Map("ctl").Update(uint32(0), &c, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("netcap: switch drops: %w", err)
	}
	return nil
}

// CounterNames are the keys Counters returns, in the order of enum cap_counter.
var CounterNames = [...]string{"packets", "captured", "captured_dns", "over_budget", "dns_rate_limited",
	"not_ip", "not_tcp_udp", "loopback_ingress", "enforced_drops", "agent_own"}

// Counters returns what the programs saw, summed over CPUs.
func (p *Probe) Counters() (map[string]uint64, error) {
	out := make(map[string]uint64, len(CounterNames))
	err := p.ring.Maps(func(l *kernel.Loader) error {
		for i, name := range CounterNames {
			var perCPU []uint64
			if err := l.Map("counters").Lookup(uint32(i), &perCPU); err != nil {
				return fmt.Errorf("read counter %s: %w", name, err)
			}
			var sum uint64
			for _, v := range perCPU {
				sum += v
			}
			out[name] = sum
		}
		return nil
	})
	if errors.Is(err, os.ErrClosed) {
		return nil, ErrClosed
	}
	return out, err
}

// Drops returns the in-kernel drop counters (records lost) summed over CPUs.
func (p *Probe) Drops() (map[string]uint64, error) {
	d, err := p.ring.Drops()
	if errors.Is(err, os.ErrClosed) {
		return nil, ErrClosed
	}
	return d, err
}

// Next blocks until the next record and returns ErrClosed after Close. A malformed record
// yields an error wrapping ErrMalformed; the caller may keep reading.
func (p *Probe) Next() (Record, error) {
	b, err := p.ring.Read()
	if err != nil {
		if errors.Is(err, os.ErrClosed) {
			return nil, ErrClosed
		}
		return nil, fmt.Errorf("read netcap ring buffer: %w", err)
	}
	return decode(b, &p.clock)
}

func (p *Probe) closeLinks() {
	p.mu.Lock()
	p.closed = true
	for _, l := range p.links {
		l.Close()
	}
	p.links = nil
	for i, ls := range p.tcx {
		for _, l := range ls {
			l.Close()
		}
		delete(p.tcx, i)
	}
	fd, done := p.nlFD, p.nlDone
	p.nlFD = -1
	p.mu.Unlock()
	if fd >= 0 {
		<-done // the reader sees closed within its receive timeout
		unix.Close(fd)
	}
}

// Close detaches every hook (lifting every drop) and unblocks Next.
func (p *Probe) Close() error {
	p.closeLinks()
	return p.ring.Close()
}

// Record layout, mirrored from netcap.bpf.c and checked against the bpf2go type in
// netcap_test.go.
const (
	hdrLen = 40

	recPacket = 1
	recDrop   = 2

	flagDNS       = 1
	flagTruncated = 2
	flagTCX       = 4
)

var le = binary.LittleEndian

func decode(b []byte, clock *kernel.Clock) (Record, error) {
	if len(b) < hdrLen {
		return nil, fmt.Errorf("%w: %d bytes, want at least %d", ErrMalformed, len(b), hdrLen)
	}
	t := clock.Time(le.Uint64(b))
	cookie := le.Uint64(b[8:])
	pktLen, ifindex := le.Uint32(b[16:]), le.Uint32(b[20:])
	capLen := int(le.Uint16(b[24:]))
	dir, flags, typ := b[26], b[27], b[28]
	if dir > 1 {
		return nil, fmt.Errorf("%w: direction %d", ErrMalformed, dir)
	}
	switch typ {
	case recPacket:
		if capLen == 0 || capLen > MaxSnap || hdrLen+capLen > len(b) || uint32(capLen) > pktLen {
			return nil, fmt.Errorf("%w: %d captured bytes of a %d-byte packet in a %d-byte record", ErrMalformed, capLen, pktLen, len(b))
		}
		return Packet{Time: t, Cookie: cookie, Dir: Direction(dir), Ifindex: ifindex, Len: pktLen,
			Data: b[hdrLen : hdrLen+capLen], DNS: flags&flagDNS != 0, Truncated: flags&flagTruncated != 0,
			TCX: flags&flagTCX != 0}, nil
	case recDrop:
		return Drop{Time: t, Cookie: cookie, Dir: Direction(dir), Ifindex: ifindex, Rule: le.Uint32(b[32:])}, nil
	}
	return nil, fmt.Errorf("%w: record type %d", ErrMalformed, typ)
}
