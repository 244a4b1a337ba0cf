package traffic

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket/afpacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/ward-dlp/ward/classifiers/catalog"
)

// loopCapture records every frame on the loopback interface into a pcapng file with the
// kernel's own AF_PACKET ring (pure Go), so tests exercise the same reader as `analyze`.
type loopCapture struct {
	t     *testing.T
	tp    *afpacket.TPacket
	path  string
	file  *os.File
	w     *pcapgo.NgWriter
	done  chan struct{}
	stopc chan struct{}
	mu    sync.Mutex
	n     int
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for an AF_PACKET capture on lo (CI runs tests as root)")
	}
}

func startCapture(t *testing.T) *loopCapture {
	t.Helper()
	return startCaptureOn(t, "lo")
}

// startCaptureOn records every frame on iface (see startCapture).
func startCaptureOn(t *testing.T, iface string) *loopCapture {
	t.Helper()
	requireRoot(t)
	tp, err := afpacket.NewTPacket(afpacket.OptInterface(iface), afpacket.OptFrameSize(1<<16), afpacket.OptBlockSize(1<<20),
		afpacket.OptNumBlocks(64), afpacket.OptPollTimeout(50*time.Millisecond))
	if err != nil {
		t.Skipf("AF_PACKET capture on %s unavailable: %v", iface, err)
	}
	path := filepath.Join(t.TempDir(), "capture.pcapng")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w, err := pcapgo.NewNgWriter(f, layers.LinkTypeEthernet)
	if err != nil {
		t.Fatal(err)
	}
	c := &loopCapture{t: t, tp: tp, path: path, file: f, w: w, done: make(chan struct{}), stopc: make(chan struct{})}
	started := make(chan struct{})
	go func() {
		defer close(c.done)
		close(started)
		for {
			data, ci, err := tp.ZeroCopyReadPacketData()
			if err != nil {
				if err == afpacket.ErrTimeout || err == afpacket.ErrPoll {
					select {
					case <-c.stopCh():
						return
					default:
						continue
					}
				}
				return
			}
			c.mu.Lock()
			ci.InterfaceIndex = 0
			_ = c.w.WritePacket(ci, data)
			c.n++
			c.mu.Unlock()
			select {
			case <-c.stopCh():
				return
			default:
			}
		}
	}()
	<-started
	time.Sleep(50 * time.Millisecond)
	return c
}

func (c *loopCapture) stopCh() chan struct{} { return c.stopc }

// stop waits for in-flight packets, closes the capture and returns the pcapng path.
func (c *loopCapture) stop() string {
	time.Sleep(300 * time.Millisecond)
	close(c.stopCh())
	<-c.done
	c.tp.Close()
	if err := c.w.Flush(); err != nil {
		c.t.Fatal(err)
	}
	if err := c.file.Close(); err != nil {
		c.t.Fatal(err)
	}
	return c.path
}

// analyzeFile runs the pipeline on a capture file like `ward-agent analyze`.
func analyzeFile(t *testing.T, path string, policy *catalog.Policy, tune func(*Config)) ([]FlowRecord, []Detection, Stats) {
	t.Helper()
	cat, err := catalog.Builtin()
	if err != nil {
		t.Fatal(err)
	}
	var recs []FlowRecord
	var dets []Detection
	cfg := Config{Catalog: cat, Policy: policy, OnRecord: func(r FlowRecord) { recs = append(recs, r) }, OnDetection: func(d Detection) { dets = append(dets, d) }}
	if tune != nil {
		tune(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := ReadCapture(f, a); err != nil {
		t.Fatal(err)
	}
	a.Flush()
	st := a.Stats()
	if st.Panics != 0 {
		t.Errorf("analyzer recovered from %d panics", st.Panics)
	}
	return recs, dets, st
}

// needTool finds a command, installing its Debian package as root when missing (CI runs
// as root with apt), and skips with the reason when that is impossible.
func needTool(t *testing.T, bin, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(bin); err == nil {
		return p
	}
	if os.Geteuid() != 0 {
		t.Skipf("%s not installed and not root to apt-get install %s", bin, pkg)
	}
	installMu.Lock()
	defer installMu.Unlock()
	if p, err := exec.LookPath(bin); err == nil {
		return p
	}
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	for _, args := range [][]string{{"update", "-qq"}, {"install", "-y", "-qq", pkg}} {
		cmd := exec.Command("apt-get", args...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Skipf("%s missing and apt-get %v failed: %v\n%s", bin, args, err, out)
		}
	}
	p, err := exec.LookPath(bin)
	if err != nil {
		t.Skipf("%s still missing after installing %s", bin, pkg)
	}
	return p
}

var installMu sync.Mutex

// testCert makes a throwaway certificate for names.
func testCert(t testing.TB, names ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// findFlow returns the flows to server (tests bind random ports; other processes on lo
// are captured too and must not match).
func findFlow(recs []FlowRecord, proto string, server string) []FlowRecord {
	want := netip.MustParseAddrPort(server)
	var out []FlowRecord
	for _, r := range recs {
		if r.Proto == proto && r.Server == want {
			out = append(out, r)
		}
	}
	return out
}

func newNgReaderForTest(f *os.File) (*pcapgo.NgReader, error) {
	return pcapgo.NewNgReader(f, pcapgo.DefaultNgReaderOptions)
}

func newNgReaderForTest2(r io.Reader) (*pcapgo.NgReader, error) {
	return pcapgo.NewNgReader(r, pcapgo.DefaultNgReaderOptions)
}
