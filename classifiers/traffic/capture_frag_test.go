package traffic

import (
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/ward-dlp/ward/classifiers/traffic/synth"
)

// vethPair creates a veth pair with the given MTU whose peer end lives in a network
// namespace of its own, addressed 10.213.N.1/.2 and fd00:213:N::1/::2; it returns the
// host-side interface and the namespace-side addresses. Everything is removed at cleanup.
func vethPair(t *testing.T, mtu int) (iface string, peer4, peer6 string) {
	t.Helper()
	requireRoot(t)
	n := 1 + rand.IntN(250)
	ns := fmt.Sprintf("wardfrag%d", n)
	host, inner := fmt.Sprintf("wfh%d", n), fmt.Sprintf("wfn%d", n)
	run := func(args ...string) error {
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := run("netns", "add", ns); err != nil {
		t.Skipf("network namespaces unavailable: %v", err)
	}
	t.Cleanup(func() {
		_ = run("link", "del", host)
		_ = run("netns", "del", ns)
	})
	m := fmt.Sprint(mtu)
	steps := [][]string{
		{"link", "add", host, "mtu", m, "type", "veth", "peer", "name", inner, "mtu", m},
		{"link", "set", inner, "netns", ns},
		{"addr", "add", fmt.Sprintf("10.213.%d.1/30", n), "dev", host},
		{"addr", "add", fmt.Sprintf("fd00:213:%d::1/64", n), "dev", host, "nodad"},
		{"link", "set", host, "up"},
		{"-n", ns, "addr", "add", fmt.Sprintf("10.213.%d.2/30", n), "dev", inner},
		{"-n", ns, "addr", "add", fmt.Sprintf("fd00:213:%d::2/64", n), "dev", inner, "nodad"},
		{"-n", ns, "link", "set", inner, "up"},
		{"-n", ns, "link", "set", "lo", "up"},
	}
	for _, s := range steps {
		if err := run(s...); err != nil {
			t.Fatal(err)
		}
	}
	return host, fmt.Sprintf("10.213.%d.2", n), fmt.Sprintf("fd00:213:%d::2", n)
}

// sendUDP sends one datagram from laddr to raddr with path MTU discovery off, so the
// kernel fragments it at the interface MTU like a resolver answering over a small-MTU
// path (IPv6 hosts fragment at the source anyway).
func sendUDP(t *testing.T, network, laddr, raddr string, payload []byte) {
	t.Helper()
	la, err := net.ResolveUDPAddr(network, laddr)
	if err != nil {
		t.Fatal(err)
	}
	ra, err := net.ResolveUDPAddr(network, raddr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenUDP(network, la)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if network == "udp4" {
		rc, err := c.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		_ = rc.Control(func(fd uintptr) {
			err = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_MTU_DISCOVER, syscall.IP_PMTUDISC_DONT)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.WriteToUDP(payload, ra); err != nil {
		t.Fatalf("send %d bytes to %s: %v", len(payload), raddr, err)
	}
}

// TestCaptureKernelFragments: the kernel itself fragments a large DNS answer (IPv4 and
// IPv6) and a QUIC Initial (IPv4) on a veth with a small MTU into a namespace the test
// creates; the AF_PACKET capture holds real fragments, and the analyzer reassembles them
// into the DNS question, the answered addresses and the QUIC SNI.
func TestCaptureKernelFragments(t *testing.T) {
	// IPv6 needs a 1280-byte link MTU (the v6 answer is larger); the IPv4 datagrams
	// then go out after the MTU drops to 576, as on an old VPN or satellite path.
	iface, peer4, peer6 := vethPair(t, 1280)
	host4 := strings.TrimSuffix(peer4, "2") + "1"
	host6 := strings.TrimSuffix(peer6, "2") + "1"
	hello, err := synth.QUICClientHello(&tls.Config{ServerName: "www.dropbox.com", NextProtos: []string{"h3"}, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	initial, err := synth.QUICInitial(1, []byte{1, 2, 3, 4, 5, 6, 7, 8}, nil, 0, false, []synth.CryptoFrame{{Offset: 0, Data: hello}})
	if err != nil {
		t.Fatal(err)
	}
	c := startCaptureOn(t, iface)
	sendUDP(t, "udp6", "["+host6+"]:53", "["+peer6+"]:35353", bigDNSAnswer(t, "www.wetransfer.com", 150))
	if out, err := exec.Command("ip", "link", "set", iface, "mtu", "576").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	sendUDP(t, "udp4", host4+":53", peer4+":35353", bigDNSAnswer(t, "www.wetransfer.com", 80))
	sendUDP(t, "udp4", host4+":44444", peer4+":443", initial)
	recs, _, st := analyzeFile(t, c.stop(), nil, nil)
	if st.Fragments < 6 || st.FragReassembled != 3 || st.FragOverlaps != 0 || st.FragInvalid != 0 {
		t.Fatalf("fragments %d reassembled %d (stats %+v)", st.Fragments, st.FragReassembled, st)
	}
	for _, server := range []string{host4 + ":53", "[" + host6 + "]:53"} {
		// the answer went from the "resolver" (host side, port 53) to the namespace
		var got []FlowRecord
		for _, r := range recs {
			if r.Proto == "udp" && (r.Server.String() == server || r.Client.String() == server) {
				got = append(got, r)
			}
		}
		if len(got) != 1 || got[0].DNSQuery != "www.wetransfer.com" || got[0].Protocol != "dns" {
			t.Errorf("dns answer via %s: %+v", server, got)
		}
	}
	q := findFlow(recs, "udp", peer4+":443")
	if len(q) != 1 || q[0].SNI != "www.dropbox.com" || q[0].App != "dropbox" || q[0].BytesUp < uint64(len(initial)) {
		t.Errorf("quic flow: %+v", q)
	}
}
