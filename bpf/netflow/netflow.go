// Package netflow reports network connections per process: every connect(2)
// and unconnected UDP send with the caller's pid, uid and comm, the TCP
// lifecycle (SYN_SENT, ESTABLISHED, CLOSE) with byte counts at close, and
// refuses connections to destinations the agent's policy denies.
//
// It attaches cgroup sock_addr programs to the root of the cgroup v2
// hierarchy (so every process on the host is covered) and the
// sock/inet_sock_set_state tracepoint; no kprobes, fentry or LSM. Records of
// one socket share its kernel socket cookie, which the consumer joins on.
package netflow

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"

	"github.com/ward-dlp/ward/bpf/internal/kernel"
)

// Status reports how one hook (e.g. "connect/connect4") is attached.
type Status = kernel.Status

// ErrClosed is returned by Next once the probe is closed.
var ErrClosed = fmt.Errorf("netflow probe closed: %w", os.ErrClosed)

// ErrMalformed wraps every record decode failure.
var ErrMalformed = errors.New("malformed netflow record")

// DefaultRingBytes holds ~35,000 records of burst (120 B each).
const DefaultRingBytes = 4 << 20

// Config tunes the probe; zero fields take defaults.
type Config struct {
	RingBytes  uint32 // ring buffer size, rounded up to a power of two
	IgnoreTGID uint32 // the agent's own pid: never report or deny it (0: off)
	// Cgroup is the cgroup v2 directory the sock_addr programs attach to.
	// Empty: the root of the first cgroup2 mount in /proc/mounts, so every
	// process is covered.
	Cgroup string
}

// Protocol is an IP protocol number.
type Protocol uint8

// Protocols the probe reports.
const (
	TCP Protocol = 6
	UDP Protocol = 17
)

func (p Protocol) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	}
	return fmt.Sprintf("proto(%d)", uint8(p))
}

// TCPState is a Linux TCP state (include/net/tcp_states.h).
type TCPState int32

// The states the probe reports transitions into, and the ones they come from.
const (
	StateEstablished TCPState = 1
	StateSynSent     TCPState = 2
	StateSynRecv     TCPState = 3
	StateFinWait1    TCPState = 4
	StateFinWait2    TCPState = 5
	StateTimeWait    TCPState = 6
	StateClose       TCPState = 7
	StateCloseWait   TCPState = 8
	StateLastAck     TCPState = 9
	StateListen      TCPState = 10
	StateClosing     TCPState = 11
	StateNewSynRecv  TCPState = 12
)

var stateNames = [...]string{"", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2",
	"TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV"}

func (s TCPState) String() string {
	if s > 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", int32(s))
}

// Task is the thread that made the call, as the kernel saw it.
type Task struct {
	PID, TID uint32 // thread-group id and thread id
	UID, GID uint32
	Comm     string
}

// Record is a Connect, UDPSend, State or Deny.
type Record interface{ isRecord() }

// Connect is a connect(2) that the probe let through (TCP or UDP).
type Connect struct {
	Time   time.Time
	Task   Task
	Cookie uint64
	Proto  Protocol
	Dst    netip.AddrPort
}

// UDPSend is a sendto/sendmsg with a destination on an unconnected UDP
// socket. One is reported per (socket, destination) at most once a second;
// Sends counts the calls since the previous report.
type UDPSend struct {
	Time   time.Time
	Task   Task
	Cookie uint64
	Dst    netip.AddrPort
	Sends  uint32
}

// State is a TCP state change. Task is only set for SynSent (which runs in
// the connecting process); the other transitions usually run in softirq
// context. BytesAcked/BytesReceived are set at Close: payload bytes the peer
// acknowledged and bytes received. Each counts sequence space, so it can
// exceed payload by up to 2 (SYN and FIN).
type State struct {
	Time          time.Time
	Task          Task
	Cookie        uint64 // 0 for sockets nobody asked a cookie for (accepted ones)
	Src, Dst      netip.AddrPort
	Old, New      TCPState
	BytesAcked    uint64
	BytesReceived uint64
}

// DenyVia says which call a denial refused.
type DenyVia uint8

// Calls a denial can refuse.
const (
	ViaConnect DenyVia = 1
	ViaSendmsg DenyVia = 2
)

func (v DenyVia) String() string {
	switch v {
	case ViaConnect:
		return "connect"
	case ViaSendmsg:
		return "sendmsg"
	}
	return fmt.Sprintf("via(%d)", uint8(v))
}

// Deny is a connect or UDP send the probe refused with EPERM because its
// destination is in the deny map. RuleID is the id given to Deny.
type Deny struct {
	Time   time.Time
	Task   Task
	Cookie uint64
	Proto  Protocol
	Dst    netip.AddrPort
	Via    DenyVia
	RuleID uint32
}

func (Connect) isRecord() {}
func (UDPSend) isRecord() {}
func (State) isRecord()   {}
func (Deny) isRecord()    {}

// Probe is a loaded and attached network-flow probe.
type Probe struct {
	log    *slog.Logger
	ring   *kernel.Ring
	clock  kernel.Clock
	status []Status

	denyMu   sync.Mutex // serialises deny-list changes (the swap and single updates)
	denySpec *ebpf.MapSpec
	denyTrie *ebpf.Map // the trie installed in denied[0]; nil until the first denial
}

type hookDef struct {
	name, prog string
	hook       kernel.Hook
}

func hooks(cgroup string) []hookDef {
	cg := func(prog, event string, at ebpf.AttachType) kernel.Hook {
		return kernel.Hook{Kind: "cgroup", Program: prog, Group: cgroup, Event: event, Attach: at}
	}
	return []hookDef{
		{"connect/connect4", "connect4", cg("connect4", "connect4", ebpf.AttachCGroupInet4Connect)},
		{"connect/connect6", "connect6", cg("connect6", "connect6", ebpf.AttachCGroupInet6Connect)},
		{"udp/sendmsg4", "sendmsg4", cg("sendmsg4", "sendmsg4", ebpf.AttachCGroupUDP4Sendmsg)},
		{"udp/sendmsg6", "sendmsg6", cg("sendmsg6", "sendmsg6", ebpf.AttachCGroupUDP6Sendmsg)},
		{"tcp/state", "sock_set_state", kernel.Hook{Kind: "tracepoint", Program: "sock_set_state", Group: "sock", Event: "inet_sock_set_state"}},
	}
}

// Load loads the BPF objects and attaches every hook it can. A hook that
// fails to attach is logged once and reported by Status; Load fails only
// when neither connect/connect4 nor tcp/state attaches, since then the
// probe would see nothing of IPv4 TCP.
func Load(cfg Config, log *slog.Logger) (*Probe, error) {
	if log == nil {
		log = slog.Default()
	}
	log = log.With("probe", "netflow")
	if cfg.RingBytes == 0 {
		cfg.RingBytes = DefaultRingBytes
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("remove memlock rlimit: %w", err)
	}
	spec, err := loadNetflow()
	if err != nil {
		return nil, fmt.Errorf("load netflow BPF spec: %w", err)
	}
	spec.Maps["events"].MaxEntries = kernel.RingSize(cfg.RingBytes)
	if err := spec.Variables["ward_ignore_tgid"].Set(cfg.IgnoreTGID); err != nil {
		return nil, fmt.Errorf("set ward_ignore_tgid: %w", err)
	}
	cgErr := error(nil)
	if cfg.Cgroup == "" {
		cfg.Cgroup, cgErr = CgroupV2Root("/proc/mounts")
	}
	if err := kernel.EnsureTracefs(log); err != nil {
		return nil, fmt.Errorf("netflow: %w", err)
	}
	loader, err := kernel.NewLoader(spec, log)
	if err != nil {
		return nil, fmt.Errorf("netflow: %w", err)
	}
	p := &Probe{log: log, denySpec: spec.Maps["denied"].InnerMap.Copy()}
	attached := map[string]bool{}
	for _, h := range hooks(cfg.Cgroup) {
		var st Status
		if h.hook.Kind == "cgroup" && cgErr != nil {
			st = Status{Name: h.name, Hook: h.hook.String(), Err: cgErr}
			log.Warn("bpf capability unavailable", "capability", h.name, "err", cgErr)
		} else {
			st = loader.AttachFirst(h.name, h.hook)
		}
		attached[h.name] = st.Attached
		p.status = append(p.status, st)
	}
	if !attached["connect/connect4"] && !attached["tcp/state"] {
		loader.Close()
		return nil, errors.New("netflow: neither connect/connect4 nor tcp/state attached (see the warnings above)")
	}
	if p.ring, err = kernel.OpenRing(loader); err != nil {
		loader.Close()
		return nil, fmt.Errorf("netflow: %w", err)
	}
	return p, nil
}

// CgroupV2Root returns the mount point of the first cgroup2 filesystem in a
// mounts file (/proc/mounts). Hybrid hosts mount it somewhere other than
// /sys/fs/cgroup (e.g. /sys/fs/cgroup/unified), so it is never hard-coded.
func CgroupV2Root(mountsFile string) (string, error) {
	f, err := os.Open(mountsFile)
	if err != nil {
		return "", fmt.Errorf("find cgroup v2 mount: %w", err)
	}
	defer f.Close()
	return cgroupV2Root(f)
}

func cgroupV2Root(r io.Reader) (string, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 3 && fields[2] == "cgroup2" {
			return unescapeMount(fields[1]), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("find cgroup v2 mount: %w", err)
	}
	return "", errors.New("find cgroup v2 mount: no cgroup2 filesystem is mounted (connect/sendmsg hooks need one)")
}

// unescapeMount undoes /proc/mounts' octal escapes (\040 for space, ...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	oct := func(c byte) bool { return c >= '0' && c <= '7' }
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) && s[i+1] <= '3' && oct(s[i+1]) && oct(s[i+2]) && oct(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// DenyEntry is one denied destination: every address in Prefix, on Port (0: every port).
type DenyEntry struct {
	Prefix netip.Prefix
	Port   uint16
	// Rule is echoed in the Deny record (RuleID) of each refused call.
	Rule uint32
}

// MaxDenyEntries bounds the deny list (the size of the kernel trie).
const MaxDenyEntries = 65536

// Deny makes connect(2) and UDP sends to dst fail with EPERM and report a
// Deny record carrying ruleID. Port 0 denies every port of the address. An
// IPv4 address also matches its IPv4-mapped IPv6 form.
func (p *Probe) Deny(dst netip.AddrPort, ruleID uint32) error {
	a := dst.Addr()
	if !a.IsValid() {
		return fmt.Errorf("deny: invalid address %v", dst)
	}
	return p.DenyPrefix(netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), dst.Port(), ruleID)
}

// DenyPrefix denies every address of a CIDR (on one port, or every port with port 0).
func (p *Probe) DenyPrefix(pfx netip.Prefix, port uint16, ruleID uint32) error {
	k, err := denyKey(pfx, port)
	if err != nil {
		return err
	}
	return p.withTrie(true, func(m *ebpf.Map) error {
		if err := m.Update(&k, &ruleID, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("deny %s port %d: update kernel map: %w", pfx, port, err)
		}
		return nil
	})
}

// Allow removes a destination added with Deny.
func (p *Probe) Allow(dst netip.AddrPort) error {
	a := dst.Addr()
	if !a.IsValid() {
		return fmt.Errorf("allow: invalid address %v", dst)
	}
	return p.AllowPrefix(netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), dst.Port())
}

// AllowPrefix removes an entry added with DenyPrefix (the same prefix and port).
func (p *Probe) AllowPrefix(pfx netip.Prefix, port uint16) error {
	k, err := denyKey(pfx, port)
	if err != nil {
		return err
	}
	return p.withTrie(false, func(m *ebpf.Map) error {
		if m == nil {
			return nil
		}
		if err := m.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("allow %s port %d: delete from kernel map: %w", pfx, port, err)
		}
		return nil
	})
}

// SetDenyList replaces the whole deny list at once: a new trie is filled and then swapped
// into the programs' view in one map update, so no connect ever sees part of the old list
// and part of the new. An empty list removes the trie (nothing is denied, no lookup cost).
func (p *Probe) SetDenyList(entries []DenyEntry) error {
	if len(entries) > MaxDenyEntries {
		return fmt.Errorf("deny list of %d entries: the limit is %d", len(entries), MaxDenyEntries)
	}
	keys := make([]netflowDenyKey, len(entries))
	for i, e := range entries {
		k, err := denyKey(e.Prefix, e.Port)
		if err != nil {
			return err
		}
		keys[i] = k
	}
	p.denyMu.Lock()
	defer p.denyMu.Unlock()
	err := p.ring.Maps(func(l *kernel.Loader) error {
		outer := l.Map("denied")
		if len(entries) == 0 {
			if err := outer.Delete(uint32(0)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("clear deny list: %w", err)
			}
			p.swapTrie(nil)
			return nil
		}
		m, err := ebpf.NewMap(p.denySpec)
		if err != nil {
			return fmt.Errorf("create deny trie: %w", err)
		}
		for i := range keys {
			if err := m.Update(&keys[i], &entries[i].Rule, ebpf.UpdateAny); err != nil {
				m.Close()
				return fmt.Errorf("deny %s port %d: %w", entries[i].Prefix, entries[i].Port, err)
			}
		}
		if err := outer.Update(uint32(0), m, ebpf.UpdateAny); err != nil {
			m.Close()
			return fmt.Errorf("install deny list: %w", err)
		}
		p.swapTrie(m)
		return nil
	})
	if errors.Is(err, os.ErrClosed) {
		return ErrClosed
	}
	return err
}

func (p *Probe) swapTrie(m *ebpf.Map) {
	if p.denyTrie != nil {
		p.denyTrie.Close() // the kernel keeps it alive while a program still uses it
	}
	p.denyTrie = m
}

// withTrie runs f on the installed trie, creating and installing an empty one first when
// create is set and there is none (f gets nil otherwise).
func (p *Probe) withTrie(create bool, f func(*ebpf.Map) error) error {
	p.denyMu.Lock()
	defer p.denyMu.Unlock()
	err := p.ring.Maps(func(l *kernel.Loader) error {
		if p.denyTrie == nil && create {
			m, err := ebpf.NewMap(p.denySpec)
			if err != nil {
				return fmt.Errorf("create deny trie: %w", err)
			}
			if err := l.Map("denied").Update(uint32(0), m, ebpf.UpdateAny); err != nil {
				m.Close()
				return fmt.Errorf("install deny trie: %w", err)
			}
			p.denyTrie = m
		}
		return f(p.denyTrie)
	})
	if errors.Is(err, os.ErrClosed) {
		return ErrClosed
	}
	return err
}

func denyKey(pfx netip.Prefix, port uint16) (netflowDenyKey, error) {
	if !pfx.IsValid() {
		return netflowDenyKey{}, fmt.Errorf("deny: invalid prefix %v", pfx)
	}
	a := pfx.Addr()
	bits := pfx.Bits()
	if a.Is4In6() {
		a, bits = a.Unmap(), max(bits-96, 0)
	}
	pfx = netip.PrefixFrom(a, bits).Masked()
	k := netflowDenyKey{Port: port, Prefixlen: uint32(32 + bits)}
	if a.Is4() {
		k.Family = afInet
		v4 := pfx.Addr().As4()
		copy(k.Addr[:], v4[:])
	} else {
		k.Family = afInet6
		k.Addr = pfx.Addr().As16()
	}
	return k, nil
}

// Status reports, per hook, whether it is attached.
func (p *Probe) Status() []Status { return slices.Clone(p.status) }

// Next blocks until the next record and returns ErrClosed after Close. A
// malformed record yields an error wrapping ErrMalformed; the caller may
// keep reading.
func (p *Probe) Next() (Record, error) {
	b, err := p.ring.Read()
	if err != nil {
		if errors.Is(err, os.ErrClosed) {
			return nil, ErrClosed
		}
		return nil, fmt.Errorf("read netflow ring buffer: %w", err)
	}
	return decode(b, &p.clock)
}

// Drops returns the in-kernel drop counters summed over CPUs.
func (p *Probe) Drops() (map[string]uint64, error) {
	d, err := p.ring.Drops()
	if errors.Is(err, os.ErrClosed) {
		return nil, ErrClosed
	}
	return d, err
}

// Close detaches all hooks (lifting every denial) and unblocks Next.
func (p *Probe) Close() error {
	err := p.ring.Close()
	p.denyMu.Lock()
	p.swapTrie(nil)
	p.denyMu.Unlock()
	return err
}

// Record layout, mirrored from netflow.bpf.c and checked against the bpf2go
// type in netflow_test.go.
const (
	evConnect = 1
	evState   = 2
	evUDPSend = 3
	evDeny    = 4

	recordLen = 120

	afInet  = 2
	afInet6 = 10
)

var le = binary.LittleEndian

func decode(b []byte, clock *kernel.Clock) (Record, error) {
	if len(b) < recordLen {
		return nil, fmt.Errorf("%w: %d bytes, want %d", ErrMalformed, len(b), recordLen)
	}
	typ := le.Uint32(b)
	family := le.Uint16(b[36:])
	var src, dst netip.Addr
	switch family {
	case afInet:
		src = netip.AddrFrom4([4]byte(b[40:44]))
		dst = netip.AddrFrom4([4]byte(b[56:60]))
	case afInet6:
		src = netip.AddrFrom16([16]byte(b[40:56]))
		dst = netip.AddrFrom16([16]byte(b[56:72]))
	default:
		return nil, fmt.Errorf("%w: type %d record with address family %d", ErrMalformed, typ, family)
	}
	proto := Protocol(le.Uint16(b[38:]))
	if proto != TCP && proto != UDP {
		return nil, fmt.Errorf("%w: type %d record with protocol %d", ErrMalformed, typ, le.Uint16(b[38:]))
	}
	t := clock.Time(le.Uint64(b[8:]))
	cookie := le.Uint64(b[16:])
	task := Task{PID: le.Uint32(b[4:]), TID: le.Uint32(b[24:]), UID: le.Uint32(b[28:]), GID: le.Uint32(b[32:]),
		Comm: kernel.CString(b[104:120])}
	sport, dport := le.Uint16(b[72:]), le.Uint16(b[74:])
	old, nw := int32(le.Uint32(b[76:])), int32(le.Uint32(b[80:]))
	count := le.Uint32(b[84:])
	dstAP := netip.AddrPortFrom(dst, dport)
	switch typ {
	case evConnect:
		return Connect{Time: t, Task: task, Cookie: cookie, Proto: proto, Dst: dstAP}, nil
	case evUDPSend:
		if proto != UDP {
			return nil, fmt.Errorf("%w: UDP send record with protocol %s", ErrMalformed, proto)
		}
		return UDPSend{Time: t, Task: task, Cookie: cookie, Dst: dstAP, Sends: count}, nil
	case evDeny:
		via := DenyVia(old)
		if old != int32(ViaConnect) && old != int32(ViaSendmsg) {
			return nil, fmt.Errorf("%w: deny record via %d", ErrMalformed, old)
		}
		return Deny{Time: t, Task: task, Cookie: cookie, Proto: proto, Dst: dstAP, Via: via, RuleID: count}, nil
	case evState:
		if proto != TCP {
			return nil, fmt.Errorf("%w: TCP state record with protocol %s", ErrMalformed, proto)
		}
		if old < 1 || old > int32(StateNewSynRecv) || nw < 1 || nw > int32(StateNewSynRecv) {
			return nil, fmt.Errorf("%w: TCP state %d -> %d out of range", ErrMalformed, old, nw)
		}
		return State{Time: t, Task: task, Cookie: cookie,
			Src: netip.AddrPortFrom(src, sport), Dst: dstAP, Old: TCPState(old), New: TCPState(nw),
			BytesAcked: le.Uint64(b[88:]), BytesReceived: le.Uint64(b[96:])}, nil
	default:
		return nil, fmt.Errorf("%w: unknown record type %d", ErrMalformed, typ)
	}
}
