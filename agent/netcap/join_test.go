package netcap

import (
	"crypto/tls"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ward-dlp/ward/agent/flows"
	capprobe "github.com/ward-dlp/ward/bpf/netcap"
	"github.com/ward-dlp/ward/bpf/netflow"
	"github.com/ward-dlp/ward/classifiers/catalog"
)

// clientHello returns the first flight a Go TLS client sends for sni.
func clientHello(t *testing.T, sni string) []byte {
	t.Helper()
	c, s := net.Pipe()
	go func() {
		_ = tls.Client(c, &tls.Config{ServerName: sni, InsecureSkipVerify: true}).Handshake()
	}()
	buf := make([]byte, 8192)
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := s.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	c.Close()
	return buf[:n]
}

// ipv4 builds an IPv4 packet with a TCP (syn/psh) or UDP header around payload.
func ipv4(proto uint8, src, dst netip.AddrPort, seq uint32, syn bool, payload []byte) []byte {
	l4 := make([]byte, 20)
	if proto == 17 {
		l4 = make([]byte, 8)
		binary.BigEndian.PutUint16(l4[4:], uint16(8+len(payload)))
	} else {
		binary.BigEndian.PutUint32(l4[4:], seq)
		l4[12] = 5 << 4
		l4[13] = 0x18
		if syn {
			l4[13] = 0x02
		}
	}
	binary.BigEndian.PutUint16(l4, src.Port())
	binary.BigEndian.PutUint16(l4[2:], dst.Port())
	ip := make([]byte, 20)
	ip[0], ip[8], ip[9] = 0x45, 64, proto
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4)+len(payload)))
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	return append(append(ip, l4...), payload...)
}

func newJoiner(t *testing.T) *Joiner {
	t.Helper()
	cat, err := catalog.Builtin()
	if err != nil {
		t.Fatal(err)
	}
	j, err := New(Config{Catalog: cat})
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func TestJoinBySocketCookie(t *testing.T) {
	j := newJoiner(t)
	local, remote := netip.MustParseAddrPort("10.1.1.1:40000"), netip.MustParseAddrPort("93.184.216.34:443")
	now := time.Now()
	j.Process(5, netflow.Task{PID: 42, UID: 1000, Comm: "curl"})
	j.Packet(capprobe.Packet{Time: now, Cookie: 5, Dir: capprobe.Egress, Data: ipv4(6, local, remote, 100, true, nil)})
	s := j.Packet(capprobe.Packet{Time: now, Cookie: 5, Dir: capprobe.Egress, Data: ipv4(6, local, remote, 101, false, clientHello(t, "zoom.us"))})
	if s.Local != local || s.Remote != remote || s.Proto != 6 || s.Cookie != 5 {
		t.Fatalf("seen %+v", s)
	}
	// The flow event knows only the cookie and the remote end (UDP-style): the local end is
	// found from the egress packets of that socket.
	ann, ok := j.Annotate(flows.Flow{Cookie: 5, Proto: netflow.TCP, Remote: remote, Reason: flows.Closed}, true)
	if !ok || ann.Record.SNI != "zoom.us" || ann.Record.App != "zoom" || ann.Record.NameSource != "sni" ||
		ann.Record.Process == nil || ann.Record.Process.PID != 42 || ann.Record.JA4 == "" {
		t.Fatalf("annotation %+v, %v", ann.Record, ok)
	}
	if _, ok := j.Annotate(flows.Flow{Cookie: 6, Proto: netflow.TCP, Remote: remote, Reason: flows.Closed}, true); ok {
		t.Error("another socket's flow was joined")
	}
	if st := j.Stats(); st.Joined != 1 || st.NotJoined != 1 || st.Analyzer.TLSClientHellos != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestDNSAnswerIsSeen(t *testing.T) {
	j := newJoiner(t)
	m := new(dns.Msg)
	m.SetQuestion("example.org.", dns.TypeA)
	m.Response = true
	rr, _ := dns.NewRR("example.org. 60 IN A 192.0.2.44")
	m.Answer = append(m.Answer, rr)
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	resolver, me := netip.MustParseAddrPort("10.0.0.53:53"), netip.MustParseAddrPort("10.1.1.1:5555")
	s := j.Packet(capprobe.Packet{Time: time.Now(), Cookie: 9, Dir: capprobe.Ingress, Data: ipv4(17, resolver, me, 0, false, b)})
	if s.DNS == nil || s.DNS.Question != "example.org" || len(s.DNS.Answers) != 1 || s.DNS.Answers[0].Addr != netip.MustParseAddr("192.0.2.44") {
		t.Fatalf("dns %+v", s.DNS)
	}
	// The same bytes sent as a query (egress to port 53) are not an answer.
	if s := j.Packet(capprobe.Packet{Time: time.Now(), Cookie: 9, Dir: capprobe.Egress, Data: ipv4(17, me, resolver, 0, false, b)}); s.DNS != nil {
		t.Error("an egress packet to port 53 was taken as an answer")
	}
}

func FuzzPacket(f *testing.F) {
	f.Add(ipv4(6, netip.MustParseAddrPort("1.2.3.4:5"), netip.MustParseAddrPort("5.6.7.8:443"), 1, false, []byte{0x16, 3, 1, 0, 5, 1}), uint8(0))
	f.Add(ipv4(17, netip.MustParseAddrPort("1.2.3.4:53"), netip.MustParseAddrPort("5.6.7.8:999"), 0, false, make([]byte, 12)), uint8(1))
	f.Add([]byte{0x60, 0, 0, 0}, uint8(0))
	cat, err := catalog.Builtin()
	if err != nil {
		f.Fatal(err)
	}
	j, err := New(Config{Catalog: cat, MaxSockets: 64})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte, dir uint8) {
		s := j.Packet(capprobe.Packet{Time: time.Now(), Cookie: 1, Dir: capprobe.Direction(dir & 1), Data: b})
		j.Annotate(flows.Flow{Cookie: 1, Proto: netflow.Protocol(s.Proto), Remote: s.Remote, Local: s.Local, Reason: flows.Closed}, true)
	})
}
