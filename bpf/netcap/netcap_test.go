package netcap

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ward-dlp/ward/bpf/internal/kernel"
)

func TestLayout(t *testing.T) {
	var h netcapCapHdr
	for _, x := range []struct {
		name      string
		got, want uintptr
	}{
		{"size", unsafe.Sizeof(h), hdrLen},
		{"cookie", unsafe.Offsetof(h.Cookie), 8},
		{"pkt_len", unsafe.Offsetof(h.PktLen), 16},
		{"ifindex", unsafe.Offsetof(h.Ifindex), 20},
		{"cap_len", unsafe.Offsetof(h.CapLen), 24},
		{"dir", unsafe.Offsetof(h.Dir), 26},
		{"flags", unsafe.Offsetof(h.Flags), 27},
		{"type", unsafe.Offsetof(h.Type), 28},
		{"rule", unsafe.Offsetof(h.Rule), 32},
	} {
		if x.got != x.want {
			t.Errorf("%s: C layout %d, decoder assumes %d", x.name, x.got, x.want)
		}
	}
	var r netcapCapRec
	if unsafe.Offsetof(r.Data) != hdrLen || len(r.Data) != MaxSnap {
		t.Errorf("cap_rec: data at %d (%d bytes), decoder assumes %d (%d)", unsafe.Offsetof(r.Data), len(r.Data), hdrLen, MaxSnap)
	}
	if len(CounterNames) != 10 {
		t.Errorf("%d counter names, enum cap_counter has 10", len(CounterNames))
	}
}

func record(typ, dir, flags uint8, cookie uint64, pktLen uint32, data []byte) []byte {
	b := make([]byte, hdrLen+len(data))
	le.PutUint64(b, 1)
	le.PutUint64(b[8:], cookie)
	le.PutUint32(b[16:], pktLen)
	le.PutUint32(b[20:], 1)
	le.PutUint16(b[24:], uint16(len(data)))
	b[26], b[27], b[28] = dir, flags, typ
	le.PutUint32(b[32:], 77)
	copy(b[hdrLen:], data)
	return b
}

func TestDecode(t *testing.T) {
	var clock kernel.Clock
	r, err := decode(record(recPacket, 1, flagDNS|flagTruncated, 5, 100, []byte{0x45, 1, 2}), &clock)
	p, ok := r.(Packet)
	if err != nil || !ok || p.Cookie != 5 || p.Dir != Ingress || !p.DNS || !p.Truncated || p.TCX || p.Len != 100 || !bytes.Equal(p.Data, []byte{0x45, 1, 2}) {
		t.Errorf("packet: %+v, %v", r, err)
	}
	r, err = decode(record(recDrop, 0, 0, 9, 0, nil), &clock)
	if d, ok := r.(Drop); err != nil || !ok || d.Cookie != 9 || d.Rule != 77 || d.Dir != Egress {
		t.Errorf("drop: %+v, %v", r, err)
	}
	for name, b := range map[string][]byte{
		"empty":        nil,
		"short":        make([]byte, hdrLen-1),
		"type":         record(9, 0, 0, 1, 10, []byte{1}),
		"dir":          record(recPacket, 2, 0, 1, 10, []byte{1}),
		"no data":      record(recPacket, 0, 0, 1, 10, nil),
		"over packet":  record(recPacket, 0, 0, 1, 1, []byte{1, 2}),
		"past record":  record(recPacket, 0, 0, 1, 10, []byte{1, 2})[:hdrLen+1],
		"over maxsnap": append(record(recPacket, 0, 0, 1, 9000, nil), make([]byte, MaxSnap+1)...),
	} {
		if name == "over maxsnap" {
			le.PutUint16(b[24:], MaxSnap+1)
		}
		if r, err := decode(b, &clock); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: decode = %+v, %v; want ErrMalformed", name, r, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(record(recPacket, 0, 0, 1, 3, []byte{0x45, 0, 0}))
	f.Add(record(recDrop, 1, 0, 1, 0, nil))
	var clock kernel.Clock
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decode(b, &clock)
		if (r == nil) == (err == nil) {
			t.Fatalf("decode = %v, %v: want exactly one of record and error", r, err)
		}
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("error %v does not wrap ErrMalformed", err)
		}
		if p, ok := r.(Packet); ok && (len(p.Data) == 0 || len(p.Data) > MaxSnap) {
			t.Fatalf("packet with %d bytes", len(p.Data))
		}
	})
}

func TestParseLinkEvents(t *testing.T) {
	msg := func(typ uint16, index int32) []byte {
		b := make([]byte, unix.NLMSG_HDRLEN+16)
		binary.NativeEndian.PutUint32(b, uint32(len(b)))
		binary.NativeEndian.PutUint16(b[4:], typ)
		binary.NativeEndian.PutUint32(b[unix.NLMSG_HDRLEN+4:], uint32(index))
		return b
	}
	b := append(msg(unix.RTM_NEWLINK, 7), msg(unix.RTM_DELLINK, 3)...)
	b = append(b, msg(unix.RTM_NEWADDR, 9)...)
	b = append(b, 1, 2, 3) // trailing garbage
	got := parseLinkEvents(b)
	if len(got) != 2 || got[0] != (linkEvent{7, false}) || got[1] != (linkEvent{3, true}) {
		t.Errorf("events = %+v", got)
	}
	bad := msg(unix.RTM_NEWLINK, 1)
	binary.NativeEndian.PutUint32(bad, 4000) // length past the buffer
	if got := parseLinkEvents(bad); len(got) != 0 {
		t.Errorf("overlong message parsed: %+v", got)
	}
}

// ---- kernel tests (root) ----

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to load BPF programs")
	}
}

// collector reads the probe's records in the background so tests can wait for one.
type collector struct {
	p    *Probe
	mu   sync.Mutex
	recs []Record
	done chan struct{}
}

func load(t *testing.T, cfg Config) *collector {
	t.Helper()
	requireRoot(t)
	p, err := Load(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	c := &collector{p: p, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			r, err := p.Next()
			if errors.Is(err, ErrClosed) {
				return
			}
			if err != nil {
				continue
			}
			c.mu.Lock()
			c.recs = append(c.recs, r)
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		p.Close()
		<-c.done
	})
	return c
}

func (c *collector) packets(cookie uint64, dir Direction) []Packet {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Packet
	for _, r := range c.recs {
		if p, ok := r.(Packet); ok && p.Cookie == cookie && p.Dir == dir {
			out = append(out, p)
		}
	}
	return out
}

func (c *collector) wait(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func cookieOf(t *testing.T, c syscall.Conn) uint64 {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var cookie uint64
	var serr error
	if err := rc.Control(func(fd uintptr) {
		cookie, serr = unix.GetsockoptUint64(int(fd), unix.SOL_SOCKET, unix.SO_COOKIE)
	}); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatalf("SO_COOKIE: %v", serr)
	}
	return cookie
}

func selfSigned(t *testing.T, name string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// tcpPayload returns the TCP payload of an IPv4 packet (nil for anything else).
func tcpPayload(b []byte) []byte {
	if len(b) < 20 || b[0]>>4 != 4 || b[9] != 6 {
		return nil
	}
	ihl := int(b[0]&0x0f) * 4
	if len(b) < ihl+20 {
		return nil
	}
	doff := int(b[ihl+12]>>4) * 4
	if len(b) < ihl+doff {
		return nil
	}
	return b[ihl+doff:]
}

// tlsRoundTrip runs a Go TLS client against a Go TLS server on 127.0.0.1 and returns the
// client's and the accepted socket's cookies.
func tlsRoundTrip(t *testing.T, sni string) (client, server uint64) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{selfSigned(t, sni)}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srvCookie := make(chan uint64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srvCookie <- 0
			return
		}
		defer c.Close()
		srvCookie <- cookieOf(t, c.(*tls.Conn).NetConn().(*net.TCPConn))
		buf := make([]byte, 64)
		_, _ = c.Read(buf)
		_, _ = c.Write([]byte("pong"))
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	client = cookieOf(t, raw.(*net.TCPConn))
	c := tls.Client(raw, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	c.Close()
	return client, <-srvCookie
}

func testClientHello(t *testing.T, hook Hook) {
	c := load(t, Config{Hook: hook})
	if st := c.p.Status(); len(st) == 0 || !st[len(st)-1].Attached {
		t.Fatalf("status %v", st)
	}
	const sni = "capture.example.test"
	client, server := tlsRoundTrip(t, sni)
	if client == 0 || server == 0 || client == server {
		t.Fatalf("cookies client=%d server=%d", client, server)
	}
	var hello []byte
	c.wait(t, "the ClientHello under the client's cookie", func() bool {
		for _, p := range c.packets(client, Egress) {
			if pl := tcpPayload(p.Data); len(pl) > 5 && pl[0] == 0x16 && pl[5] == 0x01 {
				hello = pl
				return true
			}
		}
		return false
	})
	if !bytes.Contains(hello, []byte(sni)) {
		t.Errorf("captured ClientHello does not hold the SNI %q", sni)
	}
	c.wait(t, "the ServerHello under the accepted socket's cookie", func() bool {
		for _, p := range c.packets(server, Egress) {
			if pl := tcpPayload(p.Data); len(pl) > 5 && pl[0] == 0x16 && pl[5] == 0x02 {
				return true
			}
		}
		return false
	})
	for _, p := range c.packets(client, Egress) {
		if p.TCX != (hook == HookTCX) {
			t.Errorf("packet TCX=%v under hook %s", p.TCX, hook)
		}
	}
	// Loopback ingress is skipped: each packet is captured once, at its sender.
	if in := c.packets(client, Ingress); len(in) != 0 && hook == HookCgroup {
		t.Errorf("%d loopback ingress packets captured under the client's cookie", len(in))
	}
	cn, err := c.p.Counters()
	if err != nil || cn["captured"] == 0 || cn["packets"] < cn["captured"] {
		t.Errorf("counters %v, %v", cn, err)
	}
}

func TestClientHelloCgroupSKB(t *testing.T) { testClientHello(t, HookCgroup) }

func TestClientHelloTCX(t *testing.T) { testClientHello(t, HookTCX) }

// TestBudget: a flow is captured only for its first packets; DNS beyond the budget still is.
func TestBudget(t *testing.T) {
	c := load(t, Config{Hook: HookCgroup, Packets: 4})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		s, err := ln.Accept()
		if err == nil {
			_, _ = io.Copy(io.Discard, s)
			s.Close()
		}
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	conn.(*net.TCPConn).SetNoDelay(true)
	cookie := cookieOf(t, conn.(*net.TCPConn))
	for i := 0; i < 40; i++ {
		if _, err := conn.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	conn.Close()

	// 30 DNS queries from one socket to a loopback "resolver" port 53 (nothing listens:
	// the egress packets are what is asserted).
	uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	dst := &net.UDPAddr{IP: net.IPv4(127, 53, 0, 9), Port: 53}
	for i := 0; i < 30; i++ {
		_, _ = uc.WriteToUDP([]byte("dns-query-bytes"), dst)
	}
	ucookie := cookieOf(t, uc)
	c.wait(t, "30 DNS packets", func() bool { return len(c.packets(ucookie, Egress)) >= 30 })
	time.Sleep(200 * time.Millisecond)
	if n := len(c.packets(cookie, Egress)); n != 4 {
		t.Errorf("TCP flow: %d egress packets captured, budget is 4", n)
	}
	dns := 0
	for _, p := range c.packets(ucookie, Egress) {
		if p.DNS {
			dns++
		}
	}
	if dns != 26 {
		t.Errorf("%d DNS packets captured past the budget, want 26", dns)
	}
	cn, _ := c.p.Counters()
	if cn["over_budget"] == 0 || cn["captured_dns"] < 26 {
		t.Errorf("counters %v", cn)
	}
}

// TestDropCookie: enforcement drops a marked socket's packets and reports the first.
func TestDropCookie(t *testing.T) {
	c := load(t, Config{Hook: HookCgroup})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 4)
	go func() {
		s, err := ln.Accept()
		if err != nil {
			return
		}
		defer s.Close()
		for {
			buf := make([]byte, 64)
			n, err := s.Read(buf)
			if err != nil {
				return
			}
			got <- buf[:n]
		}
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cookie := cookieOf(t, conn.(*net.TCPConn))
	conn.Write([]byte("before"))
	if b := <-got; string(b) != "before" {
		t.Fatalf("server read %q", b)
	}
	if err := c.p.DropCookie(cookie, 31); err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte("after"))
	select {
	case b := <-got:
		t.Fatalf("a dropped socket's data arrived: %q", b)
	case <-time.After(700 * time.Millisecond):
	}
	var drop Drop
	c.wait(t, "the drop record", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, r := range c.recs {
			if d, ok := r.(Drop); ok && d.Cookie == cookie {
				drop = d
				return true
			}
		}
		return false
	})
	if drop.Rule != 31 || drop.Dir != Egress {
		t.Errorf("drop %+v", drop)
	}
	if err := c.p.ForgetCookie(cookie); err != nil {
		t.Fatal(err)
	}
	// TCP retransmits the held data once the drop is lifted.
	select {
	case b := <-got:
		if string(b) != "after" {
			t.Errorf("after lifting the drop the server read %q", b)
		}
	case <-time.After(5 * time.Second):
		t.Error("the retransmission never arrived after ForgetCookie")
	}
}
