package netflow

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/ward-dlp/ward/bpf/internal/kernel"
)

// The test binary doubles as a child process that connects somewhere, so
// attribution to a pid other than the test's own can be checked.
const helperEnv = "WARD_NETFLOW_HELPER"

func TestMain(m *testing.M) {
	if addr := os.Getenv(helperEnv); addr != "" {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(2)
		}
		_, _ = c.Write([]byte("child"))
		c.Close()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestLayout(t *testing.T) {
	var e netflowFlowEvent
	for _, x := range []struct {
		name      string
		got, want uintptr
	}{
		{"size", unsafe.Sizeof(e), recordLen},
		{"cookie", unsafe.Offsetof(e.Cookie), 16},
		{"tid", unsafe.Offsetof(e.Tid), 24},
		{"family", unsafe.Offsetof(e.Family), 36},
		{"protocol", unsafe.Offsetof(e.Protocol), 38},
		{"saddr", unsafe.Offsetof(e.Saddr), 40},
		{"daddr", unsafe.Offsetof(e.Daddr), 56},
		{"sport", unsafe.Offsetof(e.Sport), 72},
		{"dport", unsafe.Offsetof(e.Dport), 74},
		{"oldstate", unsafe.Offsetof(e.Oldstate), 76},
		{"newstate", unsafe.Offsetof(e.Newstate), 80},
		{"count", unsafe.Offsetof(e.Count), 84},
		{"bytes_acked", unsafe.Offsetof(e.BytesAcked), 88},
		{"bytes_received", unsafe.Offsetof(e.BytesReceived), 96},
		{"comm", unsafe.Offsetof(e.Comm), 104},
	} {
		if x.got != x.want {
			t.Errorf("%s: C layout %d, decoder assumes %d", x.name, x.got, x.want)
		}
	}
	var k netflowDenyKey
	if unsafe.Sizeof(k) != 24 || unsafe.Offsetof(k.Addr) != 8 {
		t.Errorf("deny_key layout: size %d, addr at %d", unsafe.Sizeof(k), unsafe.Offsetof(k.Addr))
	}
}

func TestCgroupV2Root(t *testing.T) {
	hybrid := `sysfs /sys sysfs rw,nosuid 0 0
tmpfs /sys/fs/cgroup tmpfs ro 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nsdelegate 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0
`
	for _, c := range []struct{ mounts, want string }{
		{hybrid, "/sys/fs/cgroup/unified"},
		{"cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n", "/sys/fs/cgroup"},
		{`none /mnt/my\040cg cgroup2 rw 0 0` + "\n", "/mnt/my cg"},
		{`none /mnt/a\\b\0 cgroup2 rw 0 0` + "\n", `/mnt/a\\b\0`},
	} {
		got, err := cgroupV2Root(strings.NewReader(c.mounts))
		if err != nil || got != c.want {
			t.Errorf("cgroupV2Root = %q, %v; want %q", got, err, c.want)
		}
	}
	if _, err := cgroupV2Root(strings.NewReader("cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\n")); err == nil {
		t.Error("no cgroup2 mount: want an error")
	}
}

// ---- decoder ----

type rec struct {
	typ, tgid      uint32
	cookie         uint64
	family, proto  uint16
	saddr, daddr   []byte
	sport, dport   uint16
	old, new       int32
	count          uint32
	acked, receivd uint64
	comm           string
}

func (r rec) bytes() []byte {
	b := make([]byte, recordLen)
	le.PutUint32(b, r.typ)
	le.PutUint32(b[4:], r.tgid)
	le.PutUint64(b[8:], 1)
	le.PutUint64(b[16:], r.cookie)
	le.PutUint32(b[24:], r.tgid)
	le.PutUint32(b[28:], 1000)
	le.PutUint32(b[32:], 1000)
	le.PutUint16(b[36:], r.family)
	le.PutUint16(b[38:], r.proto)
	copy(b[40:56], r.saddr)
	copy(b[56:72], r.daddr)
	le.PutUint16(b[72:], r.sport)
	le.PutUint16(b[74:], r.dport)
	le.PutUint32(b[76:], uint32(r.old))
	le.PutUint32(b[80:], uint32(r.new))
	le.PutUint32(b[84:], r.count)
	le.PutUint64(b[88:], r.acked)
	le.PutUint64(b[96:], r.receivd)
	copy(b[104:120], r.comm)
	return b
}

var (
	lo4 = []byte{127, 0, 0, 1}
	lo6 = netip.IPv6Loopback().AsSlice()
)

func TestDecode(t *testing.T) {
	var clock kernel.Clock
	ok := []struct {
		name string
		in   rec
		want func(Record) bool
	}{
		{"connect4", rec{typ: evConnect, tgid: 7, cookie: 9, family: afInet, proto: 6, daddr: lo4, dport: 443, comm: "curl"},
			func(r Record) bool {
				c, ok := r.(Connect)
				return ok && c.Task.PID == 7 && c.Task.Comm == "curl" && c.Cookie == 9 && c.Proto == TCP &&
					c.Dst == netip.MustParseAddrPort("127.0.0.1:443")
			}},
		{"state6", rec{typ: evState, cookie: 9, family: afInet6, proto: 6, saddr: lo6, daddr: lo6, sport: 5000, dport: 80,
			old: 1, new: 7, acked: 10, receivd: 20},
			func(r Record) bool {
				s, ok := r.(State)
				return ok && s.Src == netip.MustParseAddrPort("[::1]:5000") && s.Dst.Port() == 80 &&
					s.Old == StateEstablished && s.New == StateClose && s.BytesAcked == 10 && s.BytesReceived == 20
			}},
		{"udp", rec{typ: evUDPSend, family: afInet, proto: 17, daddr: lo4, dport: 53, count: 3},
			func(r Record) bool { u, ok := r.(UDPSend); return ok && u.Sends == 3 && u.Dst.Port() == 53 }},
		{"deny", rec{typ: evDeny, family: afInet, proto: 6, daddr: lo4, dport: 22, old: 1, count: 42},
			func(r Record) bool { d, ok := r.(Deny); return ok && d.RuleID == 42 && d.Via == ViaConnect }},
	}
	for _, c := range ok {
		r, err := decode(c.in.bytes(), &clock)
		if err != nil || !c.want(r) {
			t.Errorf("%s: decode = %+v, %v", c.name, r, err)
		}
	}
	bad := map[string][]byte{
		"empty":       nil,
		"short":       rec{typ: evConnect, family: afInet, proto: 6}.bytes()[:recordLen-1],
		"type":        rec{typ: 99, family: afInet, proto: 6}.bytes(),
		"family":      rec{typ: evConnect, family: 1, proto: 6}.bytes(),
		"proto":       rec{typ: evConnect, family: afInet, proto: 1}.bytes(),
		"udp as tcp":  rec{typ: evUDPSend, family: afInet, proto: 6}.bytes(),
		"state range": rec{typ: evState, family: afInet, proto: 6, old: 0, new: 99}.bytes(),
		"state udp":   rec{typ: evState, family: afInet, proto: 17, old: 1, new: 7}.bytes(),
		"deny via":    rec{typ: evDeny, family: afInet, proto: 6, old: 9}.bytes(),
	}
	for name, b := range bad {
		if r, err := decode(b, &clock); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: decode = %+v, %v; want ErrMalformed", name, r, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(rec{typ: evConnect, family: afInet, proto: 6, daddr: lo4, dport: 80}.bytes())
	f.Add(rec{typ: evState, family: afInet6, proto: 6, saddr: lo6, daddr: lo6, old: 2, new: 1}.bytes())
	f.Add(rec{typ: evDeny, family: afInet, proto: 17, old: 2}.bytes())
	f.Add([]byte{1, 0, 0, 0})
	var clock kernel.Clock
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decode(b, &clock)
		if (r == nil) == (err == nil) {
			t.Fatalf("decode = %v, %v: want exactly one of record and error", r, err)
		}
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("error %v does not wrap ErrMalformed", err)
		}
	})
}

// ---- kernel ----

type harness struct {
	t  *testing.T
	p  *Probe
	ch chan Record
}

func load(t *testing.T, cfg Config) *harness {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to load BPF programs")
	}
	p, err := Load(cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	h := &harness{t: t, p: p, ch: make(chan Record, 65536)}
	go func() {
		defer close(h.ch)
		for {
			r, err := p.Next()
			if errors.Is(err, ErrClosed) {
				return
			}
			if err != nil {
				t.Errorf("Next: %v", err)
				return
			}
			select {
			case h.ch <- r:
			default: // a busy host: the test only looks for its own records
			}
		}
	}()
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		for range h.ch {
		}
	})
	return h
}

// await returns the first record that match accepts.
func (h *harness) await(what string, match func(Record) bool) Record {
	h.t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case r := <-h.ch:
			if match(r) {
				return r
			}
		case <-timeout:
			h.t.Fatalf("timeout waiting for %s", what)
			return nil
		}
	}
}

// serve accepts one connection on ln, reads everything, answers reply, closes.
func serve(ln net.Listener, reply []byte) <-chan []byte {
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		_, _ = c.Write(reply)
		got <- b
	}()
	return got
}

func TestTCPLifecycle(t *testing.T) {
	h := load(t, Config{})
	for _, network := range []struct{ net, addr string }{{"tcp4", "127.0.0.1:0"}, {"tcp6", "[::1]:0"}} {
		t.Run(network.net, func(t *testing.T) {
			h.t = t
			ln, err := net.Listen(network.net, network.addr)
			if err != nil {
				if network.net == "tcp6" {
					t.Skipf("no IPv6 loopback: %v", err)
				}
				t.Fatal(err)
			}
			defer ln.Close()
			sent, reply := bytes.Repeat([]byte("x"), 100_000), bytes.Repeat([]byte("y"), 3000)
			got := serve(ln, reply)
			server := netip.MustParseAddrPort(ln.Addr().String())
			c, err := net.Dial(network.net, ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			client := netip.MustParseAddrPort(c.LocalAddr().String())
			if _, err := c.Write(sent); err != nil {
				t.Fatal(err)
			}
			_ = c.(*net.TCPConn).CloseWrite()
			back, err := io.ReadAll(c)
			if err != nil || len(back) != len(reply) || len(<-got) != len(sent) {
				t.Fatalf("exchange failed: %v", err)
			}
			c.Close()

			me := uint32(os.Getpid())
			conn := h.await("connect", func(r Record) bool {
				c, ok := r.(Connect)
				return ok && c.Dst == server && c.Task.PID == me
			}).(Connect)
			if conn.Cookie == 0 || conn.Proto != TCP || conn.Task.UID != uint32(os.Getuid()) || conn.Time.IsZero() {
				t.Errorf("connect = %+v", conn)
			}
			mine := func(s State, st TCPState) bool { return s.Cookie == conn.Cookie && s.New == st }
			syn := h.await("SYN_SENT", func(r Record) bool { s, ok := r.(State); return ok && mine(s, StateSynSent) }).(State)
			if syn.Task.PID != me || syn.Dst != server {
				t.Errorf("SYN_SENT = %+v", syn)
			}
			est := h.await("ESTABLISHED", func(r Record) bool { s, ok := r.(State); return ok && mine(s, StateEstablished) }).(State)
			if est.Src != client || est.Dst != server || est.Old != StateSynSent {
				t.Errorf("ESTABLISHED = %+v, want %v -> %v", est, client, server)
			}
			cl := h.await("CLOSE", func(r Record) bool { s, ok := r.(State); return ok && mine(s, StateClose) }).(State)
			if cl.Src != client || cl.Dst != server || cl.BytesAcked < uint64(len(sent)) || cl.BytesReceived < uint64(len(reply)) ||
				cl.BytesAcked > uint64(len(sent))+2 || cl.BytesReceived > uint64(len(reply))+2 {
				t.Errorf("CLOSE = %+v, want bytes acked ~%d received ~%d", cl, len(sent), len(reply))
			}
		})
	}
}

func TestUDPSendmsg(t *testing.T) {
	h := load(t, Config{})
	srv, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cl, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	dst := netip.MustParseAddrPort(srv.LocalAddr().String())
	for range 3 {
		if _, err := cl.WriteToUDPAddrPort([]byte("query"), dst); err != nil {
			t.Fatal(err)
		}
	}
	u := h.await("udp send", func(r Record) bool { u, ok := r.(UDPSend); return ok && u.Dst == dst }).(UDPSend)
	if u.Task.PID != uint32(os.Getpid()) || u.Cookie == 0 || u.Sends != 1 {
		t.Errorf("udp send = %+v, want the first of three sends from pid %d", u, os.Getpid())
	}
	// The other two are counted, not reported, within the second; the next
	// send after it reports them.
	time.Sleep(1100 * time.Millisecond)
	if _, err := cl.WriteToUDPAddrPort([]byte("query"), dst); err != nil {
		t.Fatal(err)
	}
	u2 := h.await("second udp report", func(r Record) bool { u, ok := r.(UDPSend); return ok && u.Dst == dst }).(UDPSend)
	if u2.Sends != 3 || u2.Cookie != u.Cookie {
		t.Errorf("second report = %+v, want 3 sends on cookie %d", u2, u.Cookie)
	}
}

func TestDeny(t *testing.T) {
	h := load(t, Config{})
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dst := netip.MustParseAddrPort(ln.Addr().String())
	if err := h.p.Deny(dst, 42); err != nil {
		t.Fatal(err)
	}
	_, err = net.Dial("tcp4", dst.String())
	if !errors.Is(err, syscall.EPERM) {
		t.Fatalf("dial denied destination: %v, want EPERM", err)
	}
	d := h.await("deny", func(r Record) bool { d, ok := r.(Deny); return ok && d.Dst == dst }).(Deny)
	if d.RuleID != 42 || d.Via != ViaConnect || d.Proto != TCP || d.Task.PID != uint32(os.Getpid()) {
		t.Errorf("deny = %+v", d)
	}
	// UDP to the same address on another port is unaffected; an address-wide
	// entry (port 0) catches it.
	udpDst := netip.AddrPortFrom(dst.Addr(), 9)
	u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if _, err := u.WriteToUDPAddrPort([]byte("x"), udpDst); err != nil {
		t.Fatalf("send to an allowed port: %v", err)
	}
	if err := h.p.Deny(netip.AddrPortFrom(dst.Addr(), 0), 7); err != nil {
		t.Fatal(err)
	}
	if _, err := u.WriteToUDPAddrPort([]byte("x"), udpDst); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("send to a denied address: %v, want EPERM", err)
	}
	d = h.await("udp deny", func(r Record) bool { d, ok := r.(Deny); return ok && d.Dst == udpDst }).(Deny)
	if d.RuleID != 7 || d.Via != ViaSendmsg || d.Proto != UDP {
		t.Errorf("udp deny = %+v", d)
	}
	// Lifting both lets the connection through.
	for _, a := range []netip.AddrPort{dst, netip.AddrPortFrom(dst.Addr(), 0)} {
		if err := h.p.Allow(a); err != nil {
			t.Fatal(err)
		}
	}
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	c, err := net.Dial("tcp4", dst.String())
	if err != nil {
		t.Fatalf("dial after Allow: %v", err)
	}
	c.Close()
}

func TestChildAttribution(t *testing.T) {
	h := load(t, Config{})
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := serve(ln, nil)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"="+ln.Addr().String())
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("child: %v", err)
	}
	if b := <-got; string(b) != "child" {
		t.Fatalf("server got %q", b)
	}
	dst := netip.MustParseAddrPort(ln.Addr().String())
	c := h.await("child connect", func(r Record) bool { c, ok := r.(Connect); return ok && c.Dst == dst }).(Connect)
	if c.Task.PID != uint32(cmd.Process.Pid) || c.Task.PID == uint32(os.Getpid()) {
		t.Errorf("connect attributed to pid %d, child is %d", c.Task.PID, cmd.Process.Pid)
	}
}

func TestIgnoreTGID(t *testing.T) {
	h := load(t, Config{IgnoreTGID: uint32(os.Getpid())})
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dst := netip.MustParseAddrPort(ln.Addr().String())
	// Even a denied destination is not refused for the ignored process.
	if err := h.p.Deny(dst, 1); err != nil {
		t.Fatal(err)
	}
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	c, err := net.Dial("tcp4", dst.String())
	if err != nil {
		t.Fatalf("ignored process was refused: %v", err)
	}
	c.Close()
	// A child (not ignored) connecting afterwards is the sentinel: its
	// connect is reported, and by ring order ours would have been before it.
	if err := h.p.Allow(dst); err != nil {
		t.Fatal(err)
	}
	got := serve(ln, nil)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"="+dst.String())
	if err := cmd.Run(); err != nil {
		t.Fatalf("child: %v", err)
	}
	<-got
	h.await("sentinel", func(r Record) bool {
		switch r := r.(type) {
		case Connect:
			if r.Dst == dst && r.Task.PID == uint32(os.Getpid()) {
				t.Fatalf("ignored process reported: %+v", r)
			}
			return r.Dst == dst && r.Task.PID == uint32(cmd.Process.Pid)
		case Deny:
			if r.Dst == dst {
				t.Fatalf("ignored process denied: %+v", r)
			}
		}
		return false
	})
}

func TestStatusAndDrops(t *testing.T) {
	h := load(t, Config{})
	for _, s := range h.p.Status() {
		t.Log(s)
		if !s.Attached {
			t.Errorf("%s not attached: %v", s.Name, s.Err)
		}
	}
	if len(h.p.Status()) != 5 {
		t.Errorf("status = %v", h.p.Status())
	}
	d, err := h.p.Drops()
	if err != nil {
		t.Fatal(err)
	}
	if len(d) != len(kernel.DropReasons) {
		t.Errorf("drops = %v", d)
	}
}

func TestLoadWithoutCgroup2(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to load BPF programs")
	}
	// A cgroup path that is not a cgroup v2 directory: the sock_addr hooks
	// fail alone and say so; the state tracepoint still works.
	p, err := Load(Config{Cgroup: t.TempDir()}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	defer p.Close()
	for _, s := range p.Status() {
		want := s.Name == "tcp/state"
		if s.Attached != want || (!s.Attached && s.Err == nil) {
			t.Errorf("%v: attached=%v, want %v", s, s.Attached, want)
		}
	}
}

// TestDenyListCIDRSwap: a CIDR is one entry; SetDenyList replaces the list as a whole.
func TestDenyListCIDRSwap(t *testing.T) {
	h := load(t, Config{})
	dial := func(addr string) error {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := h.p.SetDenyList([]DenyEntry{{Prefix: netip.MustParsePrefix("127.77.0.0/16"), Rule: 5}}); err != nil {
		t.Fatal(err)
	}
	if err := dial("127.77.1.2:4000"); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("dial inside the denied /16: %v, want EPERM", err)
	}
	d := h.await("cidr deny", func(r Record) bool { d, ok := r.(Deny); return ok && d.Dst.String() == "127.77.1.2:4000" }).(Deny)
	if d.RuleID != 5 {
		t.Errorf("deny = %+v", d)
	}
	if err := dial("127.78.0.1:4000"); errors.Is(err, syscall.EPERM) {
		t.Fatal("an address outside the /16 was denied")
	}
	// The new list replaces the old one entirely.
	if err := h.p.SetDenyList([]DenyEntry{
		{Prefix: netip.MustParsePrefix("127.78.0.0/24"), Port: 4000, Rule: 6},
		{Prefix: netip.MustParsePrefix("::1/128"), Port: 4001, Rule: 8},
	}); err != nil {
		t.Fatal(err)
	}
	if err := dial("127.77.1.2:4000"); errors.Is(err, syscall.EPERM) {
		t.Fatal("the replaced list still denies")
	}
	if err := dial("127.78.0.9:4000"); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("port-scoped CIDR: %v, want EPERM", err)
	}
	if err := dial("127.78.0.9:4001"); errors.Is(err, syscall.EPERM) {
		t.Fatal("another port of a port-scoped entry was denied")
	}
	if err := dial("[::1]:4001"); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("IPv6 entry: %v, want EPERM", err)
	}
	d = h.await("v6 deny", func(r Record) bool { d, ok := r.(Deny); return ok && d.Dst.String() == "[::1]:4001" }).(Deny)
	if d.RuleID != 8 {
		t.Errorf("v6 deny = %+v", d)
	}
	if err := h.p.SetDenyList(nil); err != nil {
		t.Fatal(err)
	}
	if err := dial("127.78.0.9:4000"); errors.Is(err, syscall.EPERM) {
		t.Fatal("an empty list still denies")
	}
	if err := h.p.SetDenyList([]DenyEntry{{Prefix: netip.Prefix{}}}); err == nil {
		t.Error("an invalid prefix was accepted")
	}
}
