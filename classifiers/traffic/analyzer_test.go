package traffic

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/gopacket/gopacket/layers"

	"github.com/ward-dlp/ward/classifiers/catalog"
	"github.com/ward-dlp/ward/classifiers/traffic/synth"
)

type collector struct {
	recs []FlowRecord
	dets []Detection
}

func newTestAnalyzer(t testing.TB, policy string, tune func(*Config)) (*Analyzer, *collector) {
	t.Helper()
	cat, err := catalog.Builtin()
	if err != nil {
		t.Fatal(err)
	}
	var pol *catalog.Policy
	if policy != "" {
		if pol, err = catalog.ParsePolicy([]byte(policy), cat); err != nil {
			t.Fatal(err)
		}
	}
	c := &collector{}
	cfg := Config{Catalog: cat, Policy: pol, OnRecord: func(r FlowRecord) { c.recs = append(c.recs, r) }, OnDetection: func(d Detection) { c.dets = append(c.dets, d) }}
	if tune != nil {
		tune(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a, c
}

func feedCapture(t testing.TB, a *Analyzer, buf *bytes.Buffer) {
	t.Helper()
	if _, err := ReadCapture(buf, a); err != nil {
		t.Fatal(err)
	}
	a.Flush()
	if a.Stats().Panics != 0 {
		t.Fatalf("panics: %d", a.Stats().Panics)
	}
}

// TestQUICReassemblyVariants sends one real crypto/tls QUIC ClientHello per version
// (v1, v2, draft-29) as out-of-order, overlapping CRYPTO frames over two Initials, the
// second coalesced with a Handshake packet, and once more after a Retry-style DCID change.
func TestQUICReassemblyVariants(t *testing.T) {
	hello, err := synth.QUICClientHello(&tls.Config{ServerName: "api.openai.com", NextProtos: []string{"h3"}, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	if len(hello) < 1100 {
		t.Fatalf("expected a post-quantum hello over 1100 bytes, got %d", len(hello))
	}
	var buf bytes.Buffer
	w, err := synth.NewWriter(&buf, time.Unix(1_700_000_000, 0))
	if err != nil {
		t.Fatal(err)
	}
	dcid, scid := []byte{1, 2, 3, 4, 5, 6, 7, 8}, []byte{9, 9, 9, 9}
	a, b, c := hello[:400], hello[400:900], hello[900:]
	for i, v := range []uint32{1, 0x6b3343cf, 0xff00001d} {
		cl := netip.AddrPortFrom(netip.MustParseAddr("10.1.0.1"), uint16(50000+i))
		sv := netip.MustParseAddrPort("192.0.2.10:443")
		p1, err := synth.QUICInitial(v, dcid, scid, 0, false, []synth.CryptoFrame{{Offset: 900, Data: c}, {Offset: 0, Data: a}})
		if err != nil {
			t.Fatal(err)
		}
		p2, err := synth.QUICInitial(v, dcid, scid, 1, false, []synth.CryptoFrame{{Offset: 200, Data: hello[200:700]}, {Offset: 400, Data: b}})
		if err != nil {
			t.Fatal(err)
		}
		// Coalesce a Handshake-type long header packet after the Initial.
		hs := []byte{0xe0 | byte((v>>31)&0)}
		if v == 0x6b3343cf {
			hs[0] = 0xf0 // v2 Handshake type is 3
		} else {
			hs[0] = 0xe0
		}
		hs = binary.BigEndian.AppendUint32(hs, v)
		hs = append(hs, 8)
		hs = append(hs, dcid...)
		hs = append(hs, 4)
		hs = append(hs, scid...)
		hs = append(hs, 0x40, 30)
		hs = append(hs, make([]byte, 30)...)
		_ = w.UDP(cl, sv, p1)
		_ = w.UDP(cl, sv, append(p2[:len(p2):len(p2)], hs...))
	}
	// Retry: the first Initial (DCID A) carries part of the hello; after a Retry the
	// client starts over with DCID B, whose keys differ.
	cl := netip.MustParseAddrPort("10.1.0.2:40000")
	sv := netip.MustParseAddrPort("192.0.2.11:443")
	r1, _ := synth.QUICInitial(1, dcid, scid, 0, false, []synth.CryptoFrame{{Offset: 0, Data: a}})
	r2, _ := synth.QUICInitial(1, []byte{7, 7, 7, 7, 7, 7, 7, 7, 7}, scid, 1, false, []synth.CryptoFrame{{Offset: 0, Data: hello[:1000]}})
	r3, _ := synth.QUICInitial(1, []byte{7, 7, 7, 7, 7, 7, 7, 7, 7}, scid, 2, false, []synth.CryptoFrame{{Offset: 1000, Data: hello[1000:]}})
	for _, p := range [][]byte{r1, r2, r3} {
		_ = w.UDP(cl, sv, p)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	an, col := newTestAnalyzer(t, "", nil)
	feedCapture(t, an, &buf)
	if len(col.recs) != 4 {
		t.Fatalf("records: %+v", col.recs)
	}
	want := map[uint16]string{50000: "v1", 50001: "v2", 50002: "draft-29", 40000: "v1"}
	for _, r := range col.recs {
		if r.SNI != "api.openai.com" || r.App != "openai-api" || r.QUICVersion != want[r.Client.Port()] || !strings.HasPrefix(r.JA4, "q13d") {
			t.Errorf("flow %v: %+v", r.Client, r)
		}
	}
}

// frameVariants wraps one IPv4 packet in each supported link layer.
func TestLinkTypes(t *testing.T) {
	rec, err := synth.TLSClientHello(&tls.Config{ServerName: "www.wetransfer.com"})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w, _ := synth.NewWriter(&buf, time.Unix(1_700_000_000, 0))
	_ = w.TCP(netip.MustParseAddrPort("10.0.0.1:40000"), netip.MustParseAddrPort("192.0.2.1:443"), 1000, 1, synth.TCPFlags{ACK: true, PSH: true}, rec)
	_ = w.Flush()
	// Pull the Ethernet frame back out.
	var eth []byte
	a0, _ := newTestAnalyzer(t, "", nil)
	_ = a0
	{
		r := bytes.NewReader(buf.Bytes())
		ng, err := newNgReaderForTest2(r)
		if err != nil {
			t.Fatal(err)
		}
		d, _, err := ng.ReadPacketData()
		if err != nil {
			t.Fatal(err)
		}
		eth = d
	}
	ip := eth[14:]
	sll := append([]byte{0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x08, 0x00}, ip...)
	sll2 := append([]byte{0x08, 0x00, 0, 0, 0, 0, 0, 1, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0}, ip...)
	null := append([]byte{2, 0, 0, 0}, ip...)
	vlan := append(append(append([]byte{}, eth[:12]...), 0x81, 0x00, 0x00, 0x64, 0x08, 0x00), ip...)
	for name, tc := range map[string]struct {
		lt   layers.LinkType
		data []byte
	}{
		"ethernet": {layers.LinkTypeEthernet, eth}, "raw": {layers.LinkTypeRaw, ip}, "raw-dlt12": {12, ip}, "ipv4": {layers.LinkTypeIPv4, ip},
		"sll": {layers.LinkTypeLinuxSLL, sll}, "sll2": {layers.LinkTypeLinuxSLL2, sll2}, "null": {layers.LinkTypeNull, null}, "vlan": {layers.LinkTypeEthernet, vlan},
	} {
		a, col := newTestAnalyzer(t, "", nil)
		a.Packet(time.Unix(1_700_000_000, 0), tc.lt, tc.data)
		a.Flush()
		if len(col.recs) != 1 || col.recs[0].SNI != "www.wetransfer.com" || col.recs[0].App != "wetransfer" {
			t.Errorf("%s: %+v stats %+v", name, col.recs, a.Stats())
		}
	}
}

func tlsFlow(t testing.TB, w *synth.Writer, client, server string, sni string) {
	t.Helper()
	rec, err := synth.TLSClientHello(&tls.Config{ServerName: sni})
	if err != nil {
		t.Fatal(err)
	}
	cl, sv := netip.MustParseAddrPort(client), netip.MustParseAddrPort(server)
	_ = w.TCP(cl, sv, 100, 0, synth.TCPFlags{SYN: true}, nil)
	_ = w.TCP(sv, cl, 500, 101, synth.TCPFlags{SYN: true, ACK: true}, nil)
	_ = w.TCP(cl, sv, 101, 501, synth.TCPFlags{ACK: true, PSH: true}, rec)
	w.Now = w.Now.Add(time.Second)
}

// TestTenantPolicy: the clinic sanctions Zoom only for its own tenant. A host that joined
// through the tenant keeps media and API flows sanctioned for a while; another host using
// Zoom without the tenant is unsanctioned.
func TestTenantPolicy(t *testing.T) {
	var buf bytes.Buffer
	w, _ := synth.NewWriter(&buf, time.Unix(1_700_000_000, 0))
	tlsFlow(t, w, "10.0.0.1:40001", "192.0.2.5:443", "clinic.zoom.us")
	tlsFlow(t, w, "10.0.0.1:40002", "192.0.2.6:443", "us05web.zoom.us")
	tlsFlow(t, w, "10.0.0.2:40003", "192.0.2.6:443", "us05web.zoom.us")
	tlsFlow(t, w, "10.0.0.3:40004", "192.0.2.7:443", "agency.zoomgov.com")
	_ = w.Flush()
	a, col := newTestAnalyzer(t, "version: 1\ndefault: unsanctioned\napps:\n  zoom: {status: sanctioned, tenants: [clinic.zoom.us, '*.zoomgov.com']}\n", nil)
	feedCapture(t, a, &buf)
	got := map[uint16]FlowRecord{}
	for _, r := range col.recs {
		got[r.Client.Port()] = r
	}
	for port, want := range map[uint16][2]string{40001: {"sanctioned", "clinic.zoom.us"}, 40002: {"sanctioned", "inferred:clinic.zoom.us"}, 40003: {"unsanctioned", ""}, 40004: {"sanctioned", "*.zoomgov.com"}} {
		if r := got[port]; string(r.Status) != want[0] || r.Tenant != want[1] {
			t.Errorf("port %d: status %s tenant %q, want %v", port, r.Status, r.Tenant, want)
		}
	}
	n := 0
	for _, d := range col.dets {
		if d.Kind == DetectUnsanctionedApp {
			n++
			if d.Client.Addr() != netip.MustParseAddr("10.0.0.2") {
				t.Errorf("unsanctioned detection for the wrong host: %+v", d)
			}
		}
	}
	if n != 1 {
		t.Errorf("want one unsanctioned detection, got %+v", col.dets)
	}
}

// TestFlowTableBounds: a flood of one-packet flows never grows the table past MaxFlows,
// every flow is still reported once, and idle flows expire by packet time.
func TestFlowTableBounds(t *testing.T) {
	a, col := newTestAnalyzer(t, "", func(c *Config) { c.MaxFlows = 100; c.UDPIdle = 10 * time.Second })
	var buf bytes.Buffer
	w, _ := synth.NewWriter(&buf, time.Unix(1_700_000_000, 0))
	for i := 0; i < 1000; i++ {
		_ = w.UDP(netip.AddrPortFrom(netip.MustParseAddr("10.9.0.1"), uint16(10000+i)), netip.MustParseAddrPort("192.0.2.9:9999"), []byte("x"))
	}
	w.Now = w.Now.Add(time.Minute)
	_ = w.UDP(netip.MustParseAddrPort("10.9.0.2:1"), netip.MustParseAddrPort("192.0.2.9:9999"), []byte("y"))
	_ = w.Flush()
	if _, err := ReadCapture(&buf, a); err != nil {
		t.Fatal(err)
	}
	if a.flows.len() != 1 {
		t.Fatalf("live flows after expiry: %d", a.flows.len())
	}
	st := a.Stats()
	if st.FlowsEvicted != 900 || st.FlowsExpired != 100 || len(col.recs) != 1000 {
		t.Fatalf("evicted %d expired %d records %d", st.FlowsEvicted, st.FlowsExpired, len(col.recs))
	}
}

// TestHostileFrames throws truncations and random mutations of real frames at every link
// type: nothing may panic (not even recovered ones) and every frame is counted.
func TestHostileFrames(t *testing.T) {
	var buf bytes.Buffer
	w, _ := synth.NewWriter(&buf, time.Unix(1_700_000_000, 0))
	tlsFlow(t, w, "10.0.0.1:40001", "192.0.2.5:443", "chatgpt.com")
	hello, _ := synth.QUICClientHello(&tls.Config{ServerName: "x.example", NextProtos: []string{"h3"}, MinVersion: tls.VersionTLS13})
	p, _ := synth.QUICInitial(1, []byte{1, 2, 3, 4, 5, 6, 7, 8}, nil, 0, false, []synth.CryptoFrame{{Offset: 0, Data: hello}})
	_ = w.UDP(netip.MustParseAddrPort("10.0.0.1:5000"), netip.MustParseAddrPort("192.0.2.1:443"), p)
	_ = w.UDP(netip.MustParseAddrPort("10.0.0.1:5001"), netip.MustParseAddrPort("192.0.2.1:3478"), unhex(t, rfc5769IPv4Response))
	_ = w.Flush()
	var frames [][]byte
	ng, _ := newNgReaderForTest2(bytes.NewReader(buf.Bytes()))
	for {
		d, _, err := ng.ReadPacketData()
		if err != nil {
			break
		}
		frames = append(frames, d)
	}
	a, _ := newTestAnalyzer(t, "", nil)
	rng := rand.New(rand.NewPCG(1, 2))
	n := 0
	for _, f := range frames {
		for cut := 0; cut <= len(f); cut += 1 + len(f)/64 {
			a.Packet(time.Unix(1_700_000_000, int64(n)), layers.LinkTypeEthernet, f[:cut])
			n++
		}
		for i := 0; i < 300; i++ {
			m := bytes.Clone(f)
			for j := 0; j < 1+rng.IntN(8); j++ {
				m[14+rng.IntN(len(m)-14)] = byte(rng.Uint32())
			}
			a.Packet(time.Unix(1_700_000_000, int64(n)), layers.LinkTypeEthernet, m)
			n++
		}
	}
	a.Flush()
	st := a.Stats()
	if st.Panics != 0 || st.Packets != uint64(n) {
		t.Fatalf("panics %d packets %d/%d", st.Panics, st.Packets, n)
	}
}

// TestFlowLayout: flows are a multiple of 64 bytes (so a size class keeps them
// line-aligned) and the fields every packet touches sit in the first two lines.
func TestFlowLayout(t *testing.T) {
	if sz := unsafe.Sizeof(flow{}); sz%64 != 0 {
		t.Errorf("flow is %d bytes: adjust flowPad to reach a multiple of 64", sz)
	}
	if end := unsafe.Offsetof(flow{}.app) + unsafe.Sizeof(flow{}.app); end > 128 {
		t.Errorf("hot fields end at byte %d, past two cache lines", end)
	}
}
