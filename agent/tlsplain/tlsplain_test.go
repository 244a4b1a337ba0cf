package tlsplain

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2/hpack"

	probe "github.com/ward-dlp/ward/bpf/tlsplain"
	"github.com/ward-dlp/ward/classifiers"
	"github.com/ward-dlp/ward/classifiers/engine"
)

var fixture = func() []byte {
	b, err := os.ReadFile("../../tests/testdata/fhir-part2-bundle.json")
	if err != nil {
		panic(err)
	}
	return b
}()

func testEngine(t testing.TB) *engine.Engine {
	t.Helper()
	eng, err := classifiers.Default(engine.Config{FingerprintKey: bytes.Repeat([]byte{7}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	return eng
}

var t0 = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

var server = probe.Socket{Cookie: 9, FD: 5, Local: netip.MustParseAddrPort("127.0.0.1:40000"), Remote: netip.MustParseAddrPort("127.0.0.1:8443")}

// call splits one library call of b into probe records of at most chunk bytes.
func call(pid uint32, conn uint64, at time.Time, b []byte, chunk int) []probe.Data {
	var out []probe.Data
	for off := 0; off < len(b) || off == 0; off += chunk {
		end := min(off+chunk, len(b))
		out = append(out, probe.Data{Time: at, PID: pid, UID: 1000, Comm: "curl", Conn: conn, Library: probe.OpenSSL,
			Total: uint32(len(b)), Offset: uint32(off), Bytes: b[off:end], Socket: server, SocketResolved: true})
		if end == len(b) {
			break
		}
	}
	return out
}

func TestTrackerClassifiesAConnectionAcrossCallsAndChunks(t *testing.T) {
	tr := NewTracker(testEngine(t), TrackerConfig{})
	head := []byte("POST /fhir HTTP/1.1\r\nHost: EHR.Example.org:8443\r\nContent-Type: application/fhir+json\r\n\r\n")
	var done []Done
	for _, d := range append(call(7, 0xabc, t0, head, 16384), call(7, 0xabc, t0.Add(time.Millisecond), fixture, 1000)...) {
		done = append(done, tr.Apply(d)...)
	}
	if len(done) != 0 || tr.Stats().Open != 1 {
		t.Fatalf("a session ended early: %+v", done)
	}
	if got := tr.Tick(t0.Add(time.Second)); len(got) != 0 {
		t.Fatalf("ended before the idle interval: %+v", got)
	}
	done = tr.Tick(t0.Add(3 * time.Second))
	if len(done) != 1 {
		t.Fatalf("want one idle session, got %d", len(done))
	}
	d := done[0]
	if d.PID != 7 || d.Conn != 0xabc || d.Recv || d.Reason != Idle || d.Library != probe.OpenSSL || d.UID != 1000 {
		t.Errorf("session %+v", d)
	}
	if d.Bytes != int64(len(head)+len(fixture)) || d.Inspected != d.Bytes || d.Incomplete {
		t.Errorf("bytes %d inspected %d incomplete %v, want %d complete", d.Bytes, d.Inspected, d.Incomplete, len(head)+len(fixture))
	}
	if d.ServerName != "ehr.example.org" || d.Remote() != server.Remote {
		t.Errorf("server name %q remote %v", d.ServerName, d.Remote())
	}
	part2 := false
	for _, m := range d.Matches {
		part2 = part2 || m.Class == engine.Part2
		for _, s := range m.Masked {
			if strings.Contains(s, "512-64-7839") {
				t.Errorf("a raw SSN in a masked sample: %q", s)
			}
		}
	}
	if !part2 {
		t.Errorf("no Part 2 match in %+v", d.Matches)
	}
	if tr.Stats().Open != 0 || tr.Stats().Sessions != 1 {
		t.Errorf("stats %+v", tr.Stats())
	}
}

func TestTrackerGapsTruncationBudgetExitAndEviction(t *testing.T) {
	tr := NewTracker(testEngine(t), TrackerConfig{Budget: 64 << 10, MaxSessions: 2})
	// A missing middle record: the call at offset 16384 never arrived.
	big := bytes.Repeat([]byte("a"), 40000)
	recs := call(1, 1, t0, big, 16384)
	tr.Apply(recs[0])
	tr.Apply(recs[2])
	// A truncated call (capture bound) is incomplete but not a gap.
	cut := call(2, 2, t0, []byte("short"), 16384)[0]
	cut.Total, cut.Truncated = 100000, true
	tr.Apply(cut)
	if tr.Stats().Gaps != 1 {
		t.Errorf("gaps %d, want 1", tr.Stats().Gaps)
	}
	out := tr.Exit(2)
	if len(out) != 1 || out[0].Reason != Exited || !out[0].Incomplete || out[0].Bytes != 100000 || out[0].Inspected != 5 {
		t.Fatalf("exit: %+v", out)
	}
	// Budget: 64 KiB classified, then the next call starts a new session.
	var ended []Done
	for i := range 5 {
		ended = append(ended, tr.Apply(call(3, 3, t0.Add(time.Duration(i)*time.Millisecond), bytes.Repeat([]byte("b"), 16384), 16384)[0])...)
	}
	var budget *Done
	for i := range ended {
		if ended[i].Reason == Budget {
			budget = &ended[i]
		}
	}
	if budget == nil || budget.Inspected != 64<<10 || budget.Bytes != 4*16384 || budget.Incomplete {
		t.Fatalf("budget session %+v (ended %v)", budget, ended)
	}
	// One call larger than the budget: the rest of it is counted, not classified.
	tr.Apply(call(4, 4, t0, bytes.Repeat([]byte("c"), 80<<10), 16384)[0])
	for _, d := range call(4, 4, t0, bytes.Repeat([]byte("c"), 80<<10), 16384)[1:] {
		tr.Apply(d)
	}
	if tr.Stats().OverBudget != 16<<10 {
		t.Errorf("over budget %d, want 16384", tr.Stats().OverBudget)
	}
	// MaxSessions 2: pid 1 (oldest) was evicted when pid 3 needed a slot.
	if tr.Stats().Evicted == 0 {
		t.Errorf("no eviction with MaxSessions 2: %+v", tr.Stats())
	}
	for _, d := range tr.Flush() {
		if d.Reason != Stopped {
			t.Errorf("flush reason %v", d.Reason)
		}
	}
	if tr.Stats().Open != 0 {
		t.Errorf("open after flush: %d", tr.Stats().Open)
	}
}

func TestServerName(t *testing.T) {
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range []hpack.HeaderField{{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "https"},
		{Name: ":authority", Value: "API.OpenAI.com"}, {Name: ":path", Value: "/v1/files"}} {
		if err := enc.WriteField(f); err != nil {
			t.Fatal(err)
		}
	}
	frame := func(typ, flags byte, payload []byte) []byte {
		n := len(payload)
		return append([]byte{byte(n >> 16), byte(n >> 8), byte(n), typ, flags, 0, 0, 0, 1}, payload...)
	}
	h2 := append([]byte(http2Preface), frame(0x4, 0, make([]byte, 6))...) // SETTINGS
	h2 = append(h2, frame(0x1, 0x4|0x20, append(make([]byte, 5), hb.Bytes()...))...)
	padded := append([]byte(http2Preface), frame(0x1, 0x8, append(append([]byte{3}, hb.Bytes()...), 0, 0, 0))...)
	for _, c := range []struct {
		name, in, want string
		done           bool
	}{
		{"http1", "GET / HTTP/1.1\r\nUser-Agent: x\r\nHost: Example.COM:443\r\n\r\n", "example.com", true},
		{"http1 v6", "PUT /x HTTP/1.1\r\nhost: [2001:db8::1]:8443\r\n\r\n", "2001:db8::1", true},
		{"http1 partial", "POST /upload HTTP/1.1\r\nContent-Le", "", false},
		{"http1 no host", "GET / HTTP/1.0\r\nAccept: */*\r\n\r\n", "", true},
		{"not http", "\x16\x03\x01binary", "", true},
		{"lower-case method", "get / HTTP/1.1\r\nHost: a\r\n\r\n", "", true},
		{"h2", string(h2), "api.openai.com", true},
		{"h2 padded", string(padded), "api.openai.com", true},
		{"h2 preface only", http2Preface[:10], "", false},
		{"h2 short frame", http2Preface + "\x00\x00\x10\x01\x04\x00\x00\x00\x01ab", "", false},
	} {
		name, done := ServerName([]byte(c.in))
		if name != c.want || done != c.done {
			t.Errorf("%s: ServerName = %q, %v; want %q, %v", c.name, name, done, c.want, c.done)
		}
	}
}

func FuzzServerName(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"))
	f.Add([]byte(http2Preface + "\x00\x00\x05\x01\x24\x00\x00\x00\x01\x00\x00\x00\x00\x00"))
	f.Add([]byte(http2Preface + "\x00\x00\x01\x01\x08\x00\x00\x00\x01\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		name, _ := ServerName(b)
		if len(name) > 253 || strings.ToLower(name) != name {
			t.Fatalf("name %q", name)
		}
	})
}

func TestLibraryOfAndParseMaps(t *testing.T) {
	for name, want := range map[string]probe.Library{
		"/usr/lib/x86_64-linux-gnu/libssl.so.3": probe.OpenSSL, "libssl.so.1.1": probe.OpenSSL,
		"/opt/app/libboringssl.so": probe.OpenSSL, "libgnutls.so.30": probe.GnuTLS, "libnspr4.so": probe.NSS,
		"libssl3.so": 0, "libcrypto.so.3": 0, "libc.so.6": 0,
	} {
		if got := LibraryOf(name); got != want {
			t.Errorf("LibraryOf(%q) = %v, want %v", name, got, want)
		}
	}
	maps := `55d0c0a00000-55d0c0a0c000 r--p 00000000 fd:01 1316 /usr/bin/curl
7f1a2c000000-7f1a2c021000 rw-p 00000000 00:00 0
7f1a2d200000-7f1a2d26a000 r--p 00000000 fd:01 2281 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f1a2d26a000-7f1a2d2c5000 r-xp 0006a000 fd:01 2281 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f1a2d400000-7f1a2d401000 r--p 00000000 fd:01 99 /opt/my app/lib/libgnutls.so.30 (deleted)
7ffd1c3c1000-7ffd1c3e2000 rw-p 00000000 00:00 0                          [stack]
`
	got := parseMaps([]byte(maps))
	if len(got) != 3 || got[1].path != "/usr/lib/x86_64-linux-gnu/libssl.so.3" || got[1].addr != "7f1a2d200000-7f1a2d26a000" ||
		got[1].ino != 2281 || got[2].path != "/opt/my app/lib/libgnutls.so.30" {
		t.Errorf("parseMaps = %+v", got)
	}
}

func TestScanStaticTLS(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, parts ...string) string {
		p := filepath.Join(dir, name)
		// Markers straddling the 1 MiB read boundary must still be found.
		b := bytes.Repeat([]byte{0}, 1<<20-10)
		for _, s := range parts {
			b = append(append(b, s...), make([]byte, 100)...)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, c := range []struct {
		file, want string
	}{
		{write("boring", "TLS 1.3, server CertificateVerify", "BoringSSL", "OpenSSL"), "boringssl"},
		{write("rust", "key expansion", "rustls-0.23.5/src/conn.rs"), "rustls"},
		{write("plain", "TLS 1.3, server CertificateVerify"), "tls"},
		{write("none", "OpenSSL mentioned in a help text"), ""},
	} {
		got, err := scanStaticTLS(c.file, 1<<30)
		if err != nil || got != c.want {
			t.Errorf("%s: %q, %v; want %q", filepath.Base(c.file), got, err, c.want)
		}
	}
	if _, err := scanStaticTLS(filepath.Join(dir, "missing"), 1<<20); err == nil {
		t.Error("missing file: want an error")
	}
}

func TestSeenSet(t *testing.T) {
	s := newSeenSet(2)
	a := probe.Socket{Cookie: 1, Local: netip.MustParseAddrPort("10.0.0.1:1"), Remote: netip.MustParseAddrPort("10.0.0.2:443")}
	s.add(a, probe.GnuTLS)
	if lib, ok := s.get(1, netip.AddrPort{}, netip.AddrPort{}); !ok || lib != probe.GnuTLS {
		t.Error("by cookie")
	}
	// Without a cookie (a flow the kernel reported before any cookie existed), by 4-tuple,
	// IPv4-mapped or not.
	mapped := netip.AddrPortFrom(netip.AddrFrom16(a.Remote.Addr().As16()), 443)
	if _, ok := s.get(0, a.Local, mapped); !ok {
		t.Error("by 4-tuple")
	}
	s.add(probe.Socket{Cookie: 2}, probe.OpenSSL)
	if _, ok := s.get(1, netip.AddrPort{}, netip.AddrPort{}); ok {
		t.Error("the oldest entry should have been evicted (capacity 2)")
	}
	n := newNameSet(2)
	n.add(1, "a.example")
	n.add(1, "b.example") // updated in place, not a second slot
	n.add(2, "c.example")
	if v, ok := n.get(1); !ok || v != "b.example" {
		t.Errorf("name 1 = %q %v", v, ok)
	}
	n.add(3, "d.example")
	if _, ok := n.get(1); ok {
		t.Error("name 1 should have been evicted")
	}
}

// fakeHooker records attach requests.
type fakeHooker struct {
	mu      sync.Mutex
	targets []probe.Target
}

func (f *fakeHooker) Attach(t probe.Target) (probe.Attachment, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.targets = append(f.targets, t)
	return probe.Attachment{ID: uint64(len(f.targets)), Symbols: probe.Symbols(t.Library)}, nil
}

func (f *fakeHooker) libs() map[probe.Library]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := map[probe.Library]int{}
	for _, t := range f.targets {
		m[t.Library]++
	}
	return m
}

// TestDiscoveryHooksEachLibraryFileOnce: two curl processes map libssl; discovery reads
// their maps and hooks the file once, through /proc/<pid>/map_files. The Go test binary is
// hooked as a Go executable, and the agent's own executable never is.
func TestDiscoveryHooksEachLibraryFileOnce(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not installed")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // hold the connection: curl waits, mapped, until killed
		}
	}()
	var pids []uint32
	for range 2 {
		cmd := exec.Command(curl, "-s", "--max-time", "20", "http://"+ln.Addr().String()+"/")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		pids = append(pids, uint32(cmd.Process.Pid))
	}
	// Wait until the dynamic loader has mapped libssl into both.
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for {
			b, _ := os.ReadFile("/proc/" + itoa(pid) + "/maps")
			if bytes.Contains(b, []byte("libssl.so")) {
				break
			}
			if time.Now().After(deadline) {
				t.Skip("curl does not map libssl here")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// This test binary must link crypto/tls.(*Conn).Write to be hooked as a Go client.
	t.Logf("crypto/tls.(*Conn).Write at %p", (*tls.Conn).Write)
	h := &fakeHooker{}
	d := NewDiscovery(h, DiscoveryConfig{Self: uint32(os.Getpid()), LibraryDirs: []string{}}, nil)
	for _, pid := range pids {
		d.scan(scanReq{pid: pid})
	}
	if n := h.libs()[probe.OpenSSL]; n != 1 {
		t.Errorf("libssl hooked %d times, want once for both processes (targets %+v)", n, h.targets)
	}
	for _, tg := range h.targets {
		if tg.Library == probe.OpenSSL && !strings.Contains(tg.Path, "/map_files/") {
			t.Errorf("libssl attached by %q, want the /proc/<pid>/map_files link", tg.Path)
		}
	}
	pt := d.Process(pids[1])
	if !slices.Contains(pt.Libraries, "openssl") || pt.Static != "" {
		t.Errorf("Process(curl) = %+v", pt)
	}
	// The test binary is Go with crypto/tls: as the agent itself it is skipped ...
	d.scan(scanReq{pid: uint32(os.Getpid())})
	if h.libs()[probe.GoTLS] != 0 {
		t.Error("the agent's own executable was hooked")
	}
	// ... and as anyone else it is hooked by its Go symbol.
	other := NewDiscovery(h, DiscoveryConfig{Self: 1, LibraryDirs: []string{}}, nil)
	other.selfID = FileID{}
	other.scan(scanReq{pid: uint32(os.Getpid())})
	if h.libs()[probe.GoTLS] != 1 {
		t.Errorf("Go test binary not hooked: %+v", h.targets)
	}
	for _, tg := range h.targets {
		if tg.Library == probe.GoTLS && tg.GoWrite == 0 {
			t.Error("Go target without the crypto/tls.(*Conn).Write offset")
		}
	}
	// A process gone before the look is judged by the file its exec named.
	gone := NewDiscovery(&fakeHooker{}, DiscoveryConfig{LibraryDirs: []string{}}, nil)
	gone.selfID = FileID{} // judge this test binary as any other Go client
	exe, _ := os.Executable()
	gone.scan(scanReq{pid: 1 << 30, exe: exe})
	if pt := gone.Process(1 << 30); len(pt.Libraries) != 1 || pt.Libraries[0] != "go-crypto-tls" {
		t.Errorf("exited process: %+v", pt)
	}
}

func itoa(n uint32) string {
	var b [10]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}

// fakeSource replays records, then reports the probe closed.
type fakeSource struct {
	recs []probe.Data
	errs []error
	done chan struct{}
}

func (s *fakeSource) Next() (probe.Data, error) {
	if len(s.errs) > 0 {
		err := s.errs[0]
		s.errs = s.errs[1:]
		return probe.Data{}, err
	}
	if len(s.recs) > 0 {
		d := s.recs[0]
		s.recs = s.recs[1:]
		return d, nil
	}
	<-s.done
	return probe.Data{}, probe.ErrClosed
}

func TestPipelineShardsClassifyAndFlushOnStop(t *testing.T) {
	src := &fakeSource{done: make(chan struct{}), errs: []error{errors.New("broken record")}}
	for conn := uint64(1); conn <= 3; conn++ {
		src.recs = append(src.recs, call(uint32(10+conn), conn, time.Now(), fixture, 4096)...)
	}
	var mu sync.Mutex
	var got []Done
	p := NewPipeline(src, testEngine(t), PipelineConfig{Shards: 2, Tracker: TrackerConfig{Idle: time.Hour}},
		func(_ context.Context, d Done) { mu.Lock(); got = append(got, d); mu.Unlock() }, nil)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error)
	go func() { errc <- p.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if lib, ok := p.Seen(server.Cookie, netip.AddrPort{}, netip.AddrPort{}); ok && lib == probe.OpenSSL {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("connection never marked seen")
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.Exit(11)
	time.Sleep(100 * time.Millisecond)
	cancel()
	close(src.done)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("sessions %d, want 3 (one exited, two flushed at stop)", len(got))
	}
	reasons := map[End]int{}
	for _, d := range got {
		reasons[d.Reason]++
		if d.Inspected != int64(len(fixture)) || len(d.Matches) == 0 {
			t.Errorf("session %+v", d)
		}
	}
	if reasons[Exited] != 1 || reasons[Stopped] != 2 {
		t.Errorf("reasons %v", reasons)
	}
	if _, decodeErrors := p.Stats(); decodeErrors != 1 {
		t.Errorf("decode errors %d, want 1", decodeErrors)
	}
}

// TestChromiumIsStaticBoringSSL: Chromium links BoringSSL statically without symbols, the
// case the flow record must call uninspectable.
func TestChromiumIsStaticBoringSSL(t *testing.T) {
	const chromium = "/usr/lib/chromium/chromium"
	if _, err := os.Stat(chromium); err != nil {
		t.Skip("chromium not installed")
	}
	lib, _, err := analyseExecutable(chromium)
	if err != nil || lib != 0 {
		t.Fatalf("chromium hookable as %v (%v): it has no TLS symbols", lib, err)
	}
	name, err := scanStaticTLS(chromium, maxStaticScan)
	if err != nil || name != "boringssl" {
		t.Fatalf("static TLS = %q, %v; want boringssl", name, err)
	}
}
