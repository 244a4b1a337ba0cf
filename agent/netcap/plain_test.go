package netcap

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/ward-dlp/ward/agent/flows"
	"github.com/ward-dlp/ward/agent/tlsplain"
	capprobe "github.com/ward-dlp/ward/bpf/netcap"
	"github.com/ward-dlp/ward/bpf/netflow"
	"github.com/ward-dlp/ward/classifiers"
	"github.com/ward-dlp/ward/classifiers/catalog"
	"github.com/ward-dlp/ward/classifiers/engine"
)

func plainJoiner(t *testing.T) (*Joiner, *[]tlsplain.Done) {
	t.Helper()
	eng, err := classifiers.Default(engine.Config{FingerprintKey: bytes.Repeat([]byte{7}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	cat, err := catalog.Builtin()
	if err != nil {
		t.Fatal(err)
	}
	var got []tlsplain.Done
	j, err := New(Config{Catalog: cat, Plaintext: &PlainConfig{Engine: eng, Tracker: tlsplain.TrackerConfig{Idle: time.Second},
		Done: func(d tlsplain.Done) { got = append(got, d) }}})
	if err != nil {
		t.Fatal(err)
	}
	return j, &got
}

func capture(cookie uint64, at time.Time, pkt []byte) capprobe.Packet {
	return capprobe.Packet{Time: at, Cookie: cookie, Dir: capprobe.Egress, Len: uint32(len(pkt)), Data: pkt}
}

func hasPart2(ms []engine.Match) bool {
	for _, m := range ms {
		if m.Class == engine.Part2 {
			return true
		}
	}
	return false
}

// An HTTP POST of a Part 2 FHIR document, captured as segments (one of them sent twice, as a
// retransmission would be), is classified as one stream and attributed to the socket's owner
// even when the flow ended (and the joiner forgot the socket) before the sample went idle.
func TestPlaintextPOSTIsClassified(t *testing.T) {
	doc, err := os.ReadFile("../../classifiers/part2/testdata/fhir-r4-bundle-min.json")
	if err != nil {
		t.Fatal(err)
	}
	msg := append(fmt.Appendf(nil, "POST /upload HTTP/1.1\r\nHost: files.example.net\r\nContent-Type: application/fhir+json\r\nContent-Length: %d\r\n\r\n", len(doc)), doc...)
	j, got := plainJoiner(t)
	local, remote := netip.MustParseAddrPort("10.1.1.1:40000"), netip.MustParseAddrPort("203.0.113.7:80")
	now := time.Now()
	j.Packet(capture(5, now, ipv4(6, local, remote, 1000, true, nil)))
	seq := uint32(1001)
	for off := 0; off < len(msg); off += 700 {
		end := min(off+700, len(msg))
		j.Packet(capture(5, now, ipv4(6, local, remote, seq+uint32(off), false, msg[off:end])))
		if off == 700 { // retransmitted
			j.Packet(capture(5, now, ipv4(6, local, remote, seq+uint32(off), false, msg[off:end])))
		}
	}
	j.Process(5, netflow.Task{PID: 42, UID: 1000, Comm: "curl"}) // connect record read late
	j.Annotate(flows.Flow{Cookie: 5, Proto: netflow.TCP, Local: local, Remote: remote, Reason: flows.Closed}, true)
	j.Tick(now.Add(500 * time.Millisecond))
	if len(*got) != 0 {
		t.Fatalf("sample reported before it was idle: %+v", *got)
	}
	j.Tick(now.Add(2 * time.Second))
	if len(*got) != 1 {
		t.Fatalf("got %d samples, want 1", len(*got))
	}
	d := (*got)[0]
	if d.PID != 42 || d.UID != 1000 || d.Comm != "curl" || d.Remote() != remote || d.Socket.Cookie != 5 || d.Recv {
		t.Errorf("sample %+v", d)
	}
	if d.Inspected != int64(len(msg)) || d.Bytes != int64(len(msg)) || d.Incomplete {
		t.Errorf("inspected %d of %d (bytes %d), incomplete %v: the retransmission must not count twice",
			d.Inspected, len(msg), d.Bytes, d.Incomplete)
	}
	if d.ServerName != "files.example.net" {
		t.Errorf("server name %q from the Host header", d.ServerName)
	}
	if !hasPart2(d.Matches) {
		t.Errorf("no Part 2 match in %v", d.Matches)
	}
	if st := j.Stats().Plaintext; st.Retransmit != 700 || st.Bytes != uint64(len(msg)) || st.Sessions != 1 {
		t.Errorf("stats %+v", st)
	}
}

// A segment the capture did not see (past the flow's packet budget) makes the sample
// incomplete; a packet cut at the snap length too.
func TestPlaintextGapsAndCutsAreIncomplete(t *testing.T) {
	j, got := plainJoiner(t)
	local, remote := netip.MustParseAddrPort("10.1.1.1:40001"), netip.MustParseAddrPort("203.0.113.7:9000")
	now := time.Now()
	j.Packet(capture(6, now, ipv4(6, local, remote, 1, false, []byte("raw upload part one "))))
	j.Packet(capture(6, now, ipv4(6, local, remote, 5000, false, []byte("after a gap"))))
	pkt := ipv4(6, local, remote, 5011, false, bytes.Repeat([]byte("x"), 100))
	p := capture(6, now, pkt[:len(pkt)-50])
	p.Len, p.Truncated = uint32(len(pkt)), true
	j.Packet(p)
	j.Tick(now.Add(2 * time.Second))
	if len(*got) != 1 || !(*got)[0].Incomplete || (*got)[0].Inspected != 20+11+50 || (*got)[0].Bytes != 20+4979+11+100 {
		t.Fatalf("samples %+v", *got)
	}
	if st := j.Stats().Plaintext; st.Gaps != 1 {
		t.Errorf("stats %+v", st)
	}
}

// TLS flows are left to the library hooks: their records are not classified.
func TestPlaintextSkipsTLS(t *testing.T) {
	j, got := plainJoiner(t)
	local, remote := netip.MustParseAddrPort("10.1.1.1:40002"), netip.MustParseAddrPort("203.0.113.7:443")
	now := time.Now()
	j.Packet(capture(7, now, ipv4(6, local, remote, 1, false, clientHello(t, "example.net"))))
	j.Packet(capture(7, now, ipv4(6, local, remote, 9000, false, []byte{0x17, 3, 3, 0, 4, 1, 2, 3, 4})))
	j.Tick(now.Add(2 * time.Second))
	if len(*got) != 0 {
		t.Fatalf("TLS flow sampled: %+v", *got)
	}
	if st := j.Stats().Plaintext; st.Encrypted != 1 || st.Bytes != 0 {
		t.Errorf("stats %+v", st)
	}
}

// FuzzPlainSegments feeds arbitrary egress segments (sequence numbers, cuts, wire lengths)
// through the sampler: it must neither panic nor classify more than it was given.
func FuzzPlainSegments(f *testing.F) {
	local, remote := netip.MustParseAddrPort("10.1.1.1:40000"), netip.MustParseAddrPort("203.0.113.7:80")
	f.Add(uint32(1), []byte("POST / HTTP/1.1\r\nHost: a\r\n\r\n"), uint32(1), uint16(0), uint32(100), []byte("more"))
	f.Add(uint32(0xfffffff0), []byte("wraps around"), uint32(0xfffffffc), uint16(4), uint32(0), []byte{0x16, 3, 1})
	f.Add(uint32(7), []byte{0x17, 3, 3, 0, 1}, uint32(7), uint16(1), uint32(7), []byte("x"))
	eng, err := classifiers.Default(engine.Config{FingerprintKey: bytes.Repeat([]byte{7}, 32)})
	if err != nil {
		f.Fatal(err)
	}
	cat, err := catalog.Builtin()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, seq1 uint32, p1 []byte, seq2 uint32, cut uint16, seq3 uint32, p3 []byte) {
		var got []tlsplain.Done
		j, err := New(Config{Catalog: cat, MaxSockets: 64, Plaintext: &PlainConfig{Engine: eng,
			Done: func(d tlsplain.Done) { got = append(got, d) }}})
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		given := 0
		for _, s := range []struct {
			seq uint32
			p   []byte
		}{{seq1, p1}, {seq2, p1}, {seq3, p3}} {
			pkt := ipv4(6, local, remote, s.seq, false, s.p)
			c := capture(3, now, pkt)
			if n := int(cut) % (len(s.p) + 1); n > 0 {
				c.Data, c.Truncated = pkt[:len(pkt)-n], true
			}
			given += len(c.Data) - 40
			j.Packet(c)
		}
		j.Flush()
		for _, d := range got {
			if d.Inspected > int64(given) || d.Inspected > d.Bytes {
				t.Fatalf("inspected %d of %d given, %d counted", d.Inspected, given, d.Bytes)
			}
		}
	})
}
