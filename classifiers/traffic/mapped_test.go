package traffic

import (
	"bytes"
	"crypto/tls"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/ward-dlp/ward/classifiers/traffic/synth"
)

// mixedCapture is a small capture with TLS, QUIC, DNS-named and STUN flows.
func mixedCapture(t testing.TB) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := synth.NewWriter(&buf, time.Unix(1_700_000_000, 123456789))
	if err != nil {
		t.Fatal(err)
	}
	tlsFlow(t, w, "10.0.0.1:40001", "192.0.2.5:443", "www.dropbox.com")
	tlsFlow(t, w, "[2001:db8::1]:40002", "[2001:db8::2]:443", "chatgpt.com")
	hello, _ := synth.QUICClientHello(&tls.Config{ServerName: "meet.google.com", NextProtos: []string{"h3"}, MinVersion: tls.VersionTLS13})
	p, _ := synth.QUICInitial(1, []byte{1, 2, 3, 4, 5, 6, 7, 8}, nil, 0, false, []synth.CryptoFrame{{Offset: 0, Data: hello}})
	_ = w.UDP(netip.MustParseAddrPort("10.0.0.1:5000"), netip.MustParseAddrPort("192.0.2.1:443"), p)
	_ = w.UDP(netip.MustParseAddrPort("10.0.0.1:5001"), netip.MustParseAddrPort("192.0.2.1:3478"), unhex(t, rfc5769IPv4Response))
	_ = w.Flush()
	return buf.Bytes()
}

func recordsOf(t *testing.T, feed func(a *Analyzer)) []FlowRecord {
	t.Helper()
	a, col := newTestAnalyzer(t, "", nil)
	feed(a)
	a.Flush()
	return col.recs
}

// TestMappedReaderMatchesPcapgo: the zero-copy reader must see exactly what pcapgo sees,
// for pcapng and for classic pcap in both timestamp resolutions.
func TestMappedReaderMatchesPcapgo(t *testing.T) {
	ng := mixedCapture(t)
	dir := t.TempDir()
	// Classic pcap copies (microsecond and nanosecond) written by pcapgo.
	var frames [][]byte
	var cis []gopacket.CaptureInfo
	r, err := pcapgo.NewNgReader(bytes.NewReader(ng), pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatal(err)
	}
	for {
		d, ci, err := r.ReadPacketData()
		if err != nil {
			break
		}
		frames, cis = append(frames, d), append(cis, ci)
	}
	files := map[string][]byte{"ng": ng}
	for name, nano := range map[string]bool{"us": false, "ns": true} {
		var b bytes.Buffer
		var pw *pcapgo.Writer
		if nano {
			pw = pcapgo.NewWriterNanos(&b)
		} else {
			pw = pcapgo.NewWriter(&b)
		}
		if err := pw.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
			t.Fatal(err)
		}
		for i := range frames {
			if err := pw.WritePacket(cis[i], frames[i]); err != nil {
				t.Fatal(err)
			}
		}
		files[name] = b.Bytes()
	}
	for name, img := range files {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, img, 0o644); err != nil {
			t.Fatal(err)
		}
		stream := recordsOf(t, func(a *Analyzer) {
			if _, err := readStream(bytes.NewReader(img), a); err != nil {
				t.Fatal(err)
			}
		})
		mapped := recordsOf(t, func(a *Analyzer) {
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			n, ok, err := readMappedFile(f, a)
			if !ok || err != nil || n != len(frames) {
				t.Fatalf("mapped read: n=%d ok=%v err=%v", n, ok, err)
			}
		})
		if len(stream) != 4 || !reflect.DeepEqual(stream, mapped) {
			t.Errorf("%s: stream and mapped readers differ:\n%+v\n%+v", name, stream, mapped)
		}
		// Every truncation of the image reads cleanly (a capture still being written).
		for cut := 0; cut < len(img); cut += 97 {
			a, _ := newTestAnalyzer(t, "", nil)
			_, _ = readImage(img[:cut], a)
		}
	}
}

func FuzzCaptureImage(f *testing.F) {
	f.Add(mixedCapture(f))
	f.Add([]byte{0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0})
	a, _ := newTestAnalyzer(f, "", nil)
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = readImage(b, a)
		if a.Stats().Panics != 0 {
			t.Fatal("analyzer panicked")
		}
	})
}
