package tlsplain

import (
	"bytes"
	"crypto/tls"
	"debug/elf"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/ward-dlp/ward/bpf/internal/kernel"
)

func TestLayout(t *testing.T) {
	var e tlsplainTlsEvent
	for _, x := range []struct {
		name      string
		got, want uintptr
	}{
		{"size", unsafe.Sizeof(e), headerLen},
		{"conn", unsafe.Offsetof(e.Conn), 16},
		{"tid", unsafe.Offsetof(e.Tid), 24},
		{"lib", unsafe.Offsetof(e.Lib), 36},
		{"recv", unsafe.Offsetof(e.Recv), 37},
		{"flags", unsafe.Offsetof(e.Flags), 38},
		{"total", unsafe.Offsetof(e.Total), 40},
		{"offset", unsafe.Offsetof(e.Offset), 44},
		{"len", unsafe.Offsetof(e.Len), 48},
		{"sock", unsafe.Offsetof(e.Sock), 56},
		{"sock.fd", unsafe.Offsetof(e.Sock) + unsafe.Offsetof(e.Sock.Fd), 64},
		{"sock.family", unsafe.Offsetof(e.Sock) + unsafe.Offsetof(e.Sock.Family), 68},
		{"sock.sport", unsafe.Offsetof(e.Sock) + unsafe.Offsetof(e.Sock.Sport), 70},
		{"sock.dport", unsafe.Offsetof(e.Sock) + unsafe.Offsetof(e.Sock.Dport), 72},
		{"sock.saddr", unsafe.Offsetof(e.Sock) + unsafe.Offsetof(e.Sock.Saddr), 80},
		{"sock.daddr", unsafe.Offsetof(e.Sock) + unsafe.Offsetof(e.Sock.Daddr), 96},
		{"comm", unsafe.Offsetof(e.Comm), 112},
	} {
		if x.got != x.want {
			t.Errorf("%s: C layout %d, decoder assumes %d", x.name, x.got, x.want)
		}
	}
}

// record builds a raw ring record as the BPF program writes it.
type record struct {
	lib            Library
	recv           bool
	flags          uint16
	total, offset  uint32
	data           []byte
	family         uint16
	saddr, daddr   []byte
	sport, dport   uint16
	cookie         uint64
	fd             int32
	typ            uint32
	lenOverride    int64 // announce a different data length than present
	familyOverride bool
}

func (r record) bytes() []byte {
	b := make([]byte, headerLen+len(r.data))
	typ := r.typ
	if typ == 0 {
		typ = evData
	}
	le.PutUint32(b, typ)
	le.PutUint32(b[4:], 4242)
	le.PutUint64(b[8:], 1)
	le.PutUint64(b[16:], 0xdeadbeef)
	le.PutUint32(b[24:], 4243)
	le.PutUint32(b[28:], 1000)
	le.PutUint32(b[32:], 1001)
	b[36] = byte(r.lib)
	if r.recv {
		b[37] = 1
	}
	le.PutUint16(b[38:], r.flags)
	le.PutUint32(b[40:], r.total)
	le.PutUint32(b[44:], r.offset)
	n := uint32(len(r.data))
	if r.lenOverride != 0 {
		n = uint32(r.lenOverride)
	}
	le.PutUint32(b[48:], n)
	le.PutUint64(b[56:], r.cookie)
	le.PutUint32(b[64:], uint32(r.fd))
	le.PutUint16(b[68:], r.family)
	le.PutUint16(b[70:], r.sport)
	le.PutUint16(b[72:], r.dport)
	copy(b[80:96], r.saddr)
	copy(b[96:112], r.daddr)
	copy(b[112:], "curl")
	copy(b[headerLen:], r.data)
	return b
}

func TestDecode(t *testing.T) {
	var clock kernel.Clock
	d, err := decode(record{lib: OpenSSL, total: 5, data: []byte("hello"), family: afInet,
		saddr: []byte{127, 0, 0, 1}, daddr: []byte{10, 1, 2, 3}, sport: 40000, dport: 443, cookie: 77, fd: 5}.bytes(), &clock)
	if err != nil {
		t.Fatal(err)
	}
	if d.PID != 4242 || d.TID != 4243 || d.UID != 1000 || d.GID != 1001 || d.Comm != "curl" || d.Conn != 0xdeadbeef ||
		d.Library != OpenSSL || d.Recv || string(d.Bytes) != "hello" || d.Time.IsZero() {
		t.Errorf("decoded %+v", d)
	}
	if !d.SocketResolved || d.Socket.Cookie != 77 || d.Socket.FD != 5 ||
		d.Socket.Remote != netip.MustParseAddrPort("10.1.2.3:443") || d.Socket.Local != netip.MustParseAddrPort("127.0.0.1:40000") {
		t.Errorf("socket %+v", d.Socket)
	}
	v6 := netip.MustParseAddr("2001:db8::1").As16()
	d, err = decode(record{lib: GoTLS, total: 100000, offset: 16384, data: []byte("x"), flags: flagAtEntry | flagTruncated,
		family: afInet6, daddr: v6[:], dport: 8443}.bytes(), &clock)
	if err != nil {
		t.Fatal(err)
	}
	if !d.AtEntry || !d.Truncated || d.ReadFailed || d.Offset != 16384 || d.Socket.Remote.Addr() != netip.AddrFrom16(v6) {
		t.Errorf("decoded %+v", d)
	}
	d, err = decode(record{lib: NSS, recv: true, total: 9, flags: flagReadFailed}.bytes(), &clock)
	if err != nil || !d.Recv || !d.ReadFailed || d.SocketResolved || len(d.Bytes) != 0 {
		t.Errorf("unresolved read-failed record: %+v %v", d, err)
	}
	for name, b := range map[string][]byte{
		"short":          make([]byte, headerLen-1),
		"type":           record{typ: 9, lib: OpenSSL, total: 1, data: []byte("a")}.bytes(),
		"library":        record{lib: 99, total: 1, data: []byte("a")}.bytes(),
		"length":         record{lib: OpenSSL, total: 10, data: []byte("abc"), lenOverride: 5}.bytes(),
		"huge length":    record{lib: OpenSSL, total: 10, data: []byte("abc"), lenOverride: 1 << 20}.bytes(),
		"beyond call":    record{lib: OpenSSL, total: 2, data: []byte("abc")}.bytes(),
		"address family": record{lib: OpenSSL, total: 3, data: []byte("abc"), family: 1}.bytes(),
	} {
		if _, err := decode(b, &clock); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(record{lib: OpenSSL, total: 5, data: []byte("hello"), family: afInet}.bytes())
	f.Add(record{lib: GoTLS, total: 1 << 20, offset: 1 << 14, data: []byte("x"), family: afInet6}.bytes())
	f.Add(make([]byte, headerLen))
	var clock kernel.Clock
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := decode(b, &clock)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		if len(d.Bytes) > ChunkBytes || uint64(d.Offset)+uint64(len(d.Bytes)) > uint64(d.Total) {
			t.Fatalf("accepted an impossible record: %+v", d)
		}
	})
}

func TestGoWriteOffsetMatchesTheRunningFunction(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	off, ok, err := GoWriteOffset(exe)
	if err != nil || !ok || off == 0 {
		t.Fatalf("GoWriteOffset(test binary) = %#x, %v, %v; the test links crypto/tls", off, ok, err)
	}
	// The test binary is not position independent: the function's address in this process
	// is its ELF virtual address; map it to a file offset independently of GoWriteOffset.
	pc := reflect.ValueOf((*tls.Conn).Write).Pointer()
	if fn := runtime.FuncForPC(pc); fn == nil || fn.Name() != GoWriteSymbol {
		t.Skipf("method expression resolves to %v, not the method", fn)
	}
	f, err := elf.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Type != elf.ET_EXEC {
		t.Skip("position-independent test binary")
	}
	var want uint64
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && p.Vaddr <= uint64(pc) && uint64(pc) < p.Vaddr+p.Memsz {
			want = uint64(pc) - p.Vaddr + p.Off
		}
	}
	if off != want {
		t.Fatalf("GoWriteOffset = %#x, want %#x (running function at %#x)", off, want, pc)
	}
	// Found through the line table when the symbol table is gone (release builds, -s -w).
	if f.Section(".symtab") != nil {
		stripped := filepath.Join(t.TempDir(), "stripped")
		if out, err := exec.Command("objcopy", "--strip-all", exe, stripped).CombinedOutput(); err != nil {
			t.Skipf("objcopy unavailable: %v %s", err, out)
		}
		if off2, ok, err := GoWriteOffset(stripped); err != nil || !ok || off2 != want {
			t.Fatalf("stripped: offset %#x ok %v err %v, want %#x", off2, ok, err, want)
		}
	}
	if _, ok, err := GoWriteOffset("/bin/sh"); ok || err != nil {
		t.Errorf("/bin/sh is not Go: ok %v err %v", ok, err)
	}
}

// ---- kernel ----

type harness struct {
	t  *testing.T
	p  *Probe
	ch chan Data
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
	h := &harness{t: t, p: p, ch: make(chan Data, 65536)}
	go func() {
		defer close(h.ch)
		for {
			d, err := p.Next()
			if errors.Is(err, ErrClosed) {
				return
			}
			if err != nil {
				t.Errorf("Next: %v", err)
				return
			}
			select {
			case h.ch <- d:
			default:
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

// collect gathers records accepted by keep until done says the set is complete.
func (h *harness) collect(what string, keep func(Data) bool, done func([]Data) bool) []Data {
	h.t.Helper()
	timeout := time.After(10 * time.Second)
	var got []Data
	for {
		select {
		case d, ok := <-h.ch:
			if !ok {
				h.t.Fatalf("probe closed while waiting for %s", what)
			}
			if keep(d) {
				d.Bytes = bytes.Clone(d.Bytes)
				got = append(got, d)
				if done(got) {
					return got
				}
			}
		case <-timeout:
			h.t.Fatalf("timed out waiting for %s (have %d records)", what, len(got))
		}
	}
}

func joined(ds []Data) []byte {
	var b []byte
	for _, d := range ds {
		b = append(b, d.Bytes...)
	}
	return b
}

// tlsServer answers every request with reply after reading the body.
func tlsServer(t *testing.T, reply string) (*httptest.Server, netip.AddrPort) {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, reply)
	}))
	srv.EnableHTTP2 = false
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, netip.MustParseAddrPort(srv.Listener.Addr().String())
}

// library finds a shared library through the dynamic linker's cache.
func library(t *testing.T, soname string) string {
	t.Helper()
	out, err := exec.Command("ldconfig", "-p").Output()
	if err != nil {
		t.Skipf("ldconfig -p: %v", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, soname+" ") && strings.Contains(line, "x86-64") {
			if _, p, ok := strings.Cut(line, "=> "); ok {
				return strings.TrimSpace(p)
			}
		}
	}
	t.Skipf("%s not installed", soname)
	return ""
}

func TestOpenSSLCurlSendAndReceive(t *testing.T) {
	h := load(t, Config{})
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not installed")
	}
	att, err := h.p.Attach(Target{Path: library(t, "libssl.so.3"), Library: OpenSSL, Receive: true})
	if err != nil {
		t.Fatalf("Attach libssl: %v", err)
	}
	if len(att.Symbols) < 2 {
		t.Errorf("hooked %v, want SSL_write and SSL_read at least", att.Symbols)
	}
	_, srv := tlsServer(t, "reply-marker-8c1f")
	body := "request-marker-51d2 " + strings.Repeat("b", 3000)
	cmd := exec.Command(curl, "-sS", "-k", "--http1.1", "--data-binary", "@-", "https://"+srv.String()+"/upload")
	cmd.Stdin = strings.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil || string(out) != "reply-marker-8c1f" {
		t.Fatalf("curl: %v %q", err, out)
	}
	pid := uint32(cmd.ProcessState.Pid())
	mine := func(recv bool) func(Data) bool {
		return func(d Data) bool { return d.PID == pid && d.Recv == recv && d.Library == OpenSSL }
	}
	sent := h.collect("curl's request", mine(false), func(ds []Data) bool {
		return bytes.Contains(joined(ds), []byte(body))
	})
	last := sent[len(sent)-1]
	if !bytes.HasPrefix(joined(sent), []byte("POST /upload HTTP/1.1\r\n")) {
		t.Errorf("plaintext starts %q", joined(sent)[:min(40, len(joined(sent)))])
	}
	if !last.SocketResolved || last.Socket.Remote != srv || last.Socket.FD < 0 || last.Socket.Local.Port() == 0 {
		t.Errorf("socket %+v (resolved %v), want remote %v", last.Socket, last.SocketResolved, srv)
	}
	if last.UID != uint32(os.Getuid()) || last.Comm != "curl" || last.AtEntry {
		t.Errorf("record %+v", last)
	}
	recv := h.collect("curl's response", mine(true), func(ds []Data) bool {
		return bytes.Contains(joined(ds), []byte("reply-marker-8c1f"))
	})
	if r := recv[len(recv)-1]; !r.SocketResolved || r.Socket.Remote != srv || r.Conn != last.Conn {
		t.Errorf("read record %+v: want the write's connection %#x and socket %v", r, last.Conn, srv)
	}
	if err := h.p.Detach(att.ID); err != nil {
		t.Fatal(err)
	}
}

func TestGoWriteFromThisProcess(t *testing.T) {
	h := load(t, Config{MaxCapture: 20000})
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	off, ok, err := GoWriteOffset(exe)
	if err != nil || !ok {
		t.Fatalf("GoWriteOffset: %v %v", ok, err)
	}
	if _, err := h.p.Attach(Target{Path: exe, Library: GoTLS, GoWrite: off}); err != nil {
		t.Fatalf("Attach: %v", err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", serverConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_, _ = io.Copy(io.Discard, c)
			c.Close()
		}
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	small := []byte("go-marker-7e21")
	big := append([]byte("go-big-marker-"), bytes.Repeat([]byte("z"), 40000)...)
	for _, b := range [][]byte{small, big} {
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	local := netip.MustParseAddrPort(c.LocalAddr().String())
	c.Close()
	me := uint32(os.Getpid())
	mine := func(d Data) bool {
		return d.PID == me && d.Library == GoTLS && d.Socket.Local == local
	}
	got := h.collect("the Go writes", mine, func(ds []Data) bool {
		return bytes.Contains(joined(ds), small) && bytes.Contains(joined(ds), big[:20000])
	})
	var chunks []Data
	for _, d := range got {
		if !d.AtEntry || d.Socket.Remote.String() != ln.Addr().String() || d.Socket.Cookie != 0 && d.Socket.FD < 0 {
			t.Errorf("record %+v", d)
		}
		if d.Total == uint32(len(big)) {
			chunks = append(chunks, d)
		}
	}
	// 40014 bytes at a 20000-byte bound: 16384 + 3616, then truncated.
	if len(chunks) != 2 || chunks[0].Offset != 0 || len(chunks[0].Bytes) != ChunkBytes ||
		chunks[1].Offset != ChunkBytes || len(chunks[1].Bytes) != 20000-ChunkBytes || !chunks[1].Truncated {
		for _, c := range chunks {
			t.Logf("chunk offset %d len %d truncated %v", c.Offset, len(c.Bytes), c.Truncated)
		}
		t.Errorf("big write: want two chunks covering the first 20000 bytes, truncated")
	}
	drops, err := h.p.Drops()
	if err != nil || drops["capture_truncated"] == 0 {
		t.Errorf("drops %v %v: the truncated write must be counted", drops, err)
	}
}

func serverConfig(t *testing.T) *tls.Config {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	srv.StartTLS()
	cfg := srv.TLS.Clone()
	srv.Close()
	return cfg
}

// cliSession pipes input into a TLS command-line client and returns its pid. Some clients
// (tstclnt) stay connected after the server closes: the client is killed at cleanup.
func cliSession(t *testing.T, name string, input string, args ...string) uint32 {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(input)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return uint32(cmd.Process.Pid)
}

func TestGnuTLSClient(t *testing.T) {
	cli, err := exec.LookPath("gnutls-cli")
	if err != nil {
		t.Skip("gnutls-cli not installed (Debian: gnutls-bin)")
	}
	h := load(t, Config{})
	if _, err := h.p.Attach(Target{Path: library(t, "libgnutls.so.30"), Library: GnuTLS}); err != nil {
		t.Fatalf("Attach: %v", err)
	}
	_, srv := tlsServer(t, "ok")
	req := "GET /gnutls-marker-3a9b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
	pid := cliSession(t, cli, req, "--insecure", "--port", itoa(srv.Port()), srv.Addr().String())
	got := h.collect("gnutls-cli's request", func(d Data) bool { return d.PID == pid && d.Library == GnuTLS },
		func(ds []Data) bool { return bytes.Contains(joined(ds), []byte("gnutls-marker-3a9b")) })
	if d := got[len(got)-1]; !d.SocketResolved || d.Socket.Remote != srv {
		t.Errorf("socket %+v, want remote %v", d.Socket, srv)
	}
}

func TestNSSClient(t *testing.T) {
	cli, err := exec.LookPath("tstclnt")
	if err != nil {
		t.Skip("tstclnt not installed (Debian: libnss3-tools)")
	}
	h := load(t, Config{})
	if _, err := h.p.Attach(Target{Path: library(t, "libnspr4.so"), Library: NSS}); err != nil {
		t.Fatalf("Attach: %v", err)
	}
	_, srv := tlsServer(t, "ok")
	req := "GET /nss-marker-6d0c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
	pid := cliSession(t, cli, req, "-h", srv.Addr().String(), "-p", itoa(srv.Port()), "-D", "-o")
	got := h.collect("tstclnt's request", func(d Data) bool { return d.PID == pid && d.Library == NSS },
		func(ds []Data) bool { return bytes.Contains(joined(ds), []byte("nss-marker-6d0c")) })
	if d := got[len(got)-1]; !d.SocketResolved || d.Socket.Remote != srv {
		t.Errorf("socket %+v, want remote %v", d.Socket, srv)
	}
}

func itoa(p uint16) string { return strconv.Itoa(int(p)) }

func TestIgnoreTGIDAndStatus(t *testing.T) {
	h := load(t, Config{IgnoreTGID: uint32(os.Getpid())})
	for _, s := range h.p.Status() {
		if !s.Attached {
			t.Errorf("%s", s)
		}
	}
	exe, _ := os.Executable()
	off, _, _ := GoWriteOffset(exe)
	if _, err := h.p.Attach(Target{Path: exe, Library: GoTLS, GoWrite: off}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.p.Attach(Target{Path: "/bin/sh", Library: OpenSSL}); !errors.Is(err, ErrNoHooks) {
		t.Errorf("attach OpenSSL to /bin/sh: %v, want ErrNoHooks", err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", serverConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			_, _ = io.Copy(io.Discard, c)
			c.Close()
		}
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c.Write([]byte("ignored-marker"))
	c.Close()
	deadline := time.After(time.Second)
	for {
		select {
		case d := <-h.ch:
			if d.PID == uint32(os.Getpid()) {
				t.Fatalf("record from the ignored tgid: %+v", d)
			}
		case <-deadline:
			return
		}
	}
}

// TestRecountDropsDeadThreads: a thread that died inside a TLS call leaves its in-flight
// entry and the counter the syscall tracepoints filter on; the periodic recount clears both.
func TestRecountDropsDeadThreads(t *testing.T) {
	h := load(t, Config{})
	dead := uint64(1<<22)<<32 | uint64(1<<22) // no such pid/tid (pid_max is at most 2^22)
	live := uint64(os.Getpid())<<32 | uint64(os.Getpid())
	err := h.p.ring.Maps(func(l *kernel.Loader) error {
		var v tlsplainInflight
		if err := l.Map("inflight").Put(dead, &v); err != nil {
			return err
		}
		if err := l.Map("inflight").Put(live, &v); err != nil {
			return err
		}
		return l.Map("active").Put(uint32(0), int64(5))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.p.recount(); err != nil {
		t.Fatal(err)
	}
	_ = h.p.ring.Maps(func(l *kernel.Loader) error {
		var n int64
		if err := l.Map("active").Lookup(uint32(0), &n); err != nil || n != 1 {
			t.Errorf("active = %d, %v; want 1 (this thread's entry)", n, err)
		}
		var v tlsplainInflight
		if err := l.Map("inflight").Lookup(dead, &v); err == nil {
			t.Error("the dead thread's entry survived the recount")
		}
		return nil
	})
}
