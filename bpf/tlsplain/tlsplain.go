// Package tlsplain reports the plaintext processes hand to TLS libraries, before encryption
// (and, when asked, after decryption), with the socket it travels on.
//
// Uprobes hook OpenSSL/BoringSSL (SSL_write, SSL_write_ex, SSL_read, SSL_read_ex), GnuTLS
// (gnutls_record_send/recv), NSS through NSPR (PR_Write, PR_Send, PR_Read, PR_Recv on an SSL
// layered socket) and Go's crypto/tls.(*Conn).Write. A uprobe is set on a file (an inode), so
// one Attach covers every process that maps that library or runs that executable, now and
// later; deciding which files to hook is the caller's job (see agent/tlsplain).
//
// Library calls are joined to their socket in the kernel: the first socket send a thread
// makes inside a hooked call names the connection (Go: the descriptor is read from the
// tls.Conn). Records carry the socket's cookie, which bpf/netflow reports too, and its
// 4-tuple.
package tlsplain

import (
	"debug/elf"
	"debug/gosym"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"

	"github.com/ward-dlp/ward/bpf/internal/kernel"
)

// Status reports how one hook is attached.
type Status = kernel.Status

// ErrClosed is returned by Next once the probe is closed.
var ErrClosed = fmt.Errorf("tlsplain probe closed: %w", os.ErrClosed)

// ErrMalformed wraps every record decode failure.
var ErrMalformed = errors.New("malformed tlsplain record")

// ErrNoHooks is returned by Attach when a file has none of its library's functions.
var ErrNoHooks = errors.New("no TLS function to hook")

// Library names a TLS implementation the probe can hook.
type Library uint8

// Hookable libraries.
const (
	OpenSSL Library = 1 // OpenSSL 1.1/3.x and shared BoringSSL builds (same API)
	GnuTLS  Library = 2
	NSS     Library = 3 // NSS over NSPR (libnspr4)
	GoTLS   Library = 4 // Go crypto/tls, in the executable
)

func (l Library) String() string {
	switch l {
	case OpenSSL:
		return "openssl"
	case GnuTLS:
		return "gnutls"
	case NSS:
		return "nss"
	case GoTLS:
		return "go-crypto-tls"
	}
	return fmt.Sprintf("library(%d)", uint8(l))
}

const (
	// DefaultMaxCapture is how many bytes of one call are copied by default.
	DefaultMaxCapture = 64 << 10
	// MaxCaptureLimit is the most one call can copy (16 ring records of 16 KiB).
	MaxCaptureLimit = 256 << 10
	// DefaultRingBytes holds several hundred full 16 KiB records of burst.
	DefaultRingBytes = 8 << 20
	// ChunkBytes is the most data one ring record carries.
	ChunkBytes = 16 << 10
)

// Config tunes the probe; zero fields take defaults.
type Config struct {
	RingBytes  uint32 // ring buffer size, rounded up to a power of two
	MaxCapture uint32 // bytes copied per call, at most MaxCaptureLimit
	IgnoreTGID uint32 // the agent's own pid: never reported (0: off)
	// WakeupBytes is how much must be pending before the kernel wakes the reader (default
	// 256 KiB, at most a quarter of the ring); FlushInterval is how often the reader looks
	// anyway (default 100ms). Waking per record costs more than a small record's copy.
	WakeupBytes   uint32
	FlushInterval time.Duration
}

// Socket is the connection a call's bytes travel on, as the kernel knows it. Remote is
// invalid when the call could not be joined to a socket.
type Socket struct {
	Cookie        uint64 // kernel socket cookie; 0 when nothing asked the kernel for one
	FD            int32
	Local, Remote netip.AddrPort
}

// Data is plaintext of one library call, or one piece of it (Offset > 0): calls larger than
// ChunkBytes arrive as consecutive records with the same Conn.
type Data struct {
	Time           time.Time
	PID, TID       uint32
	UID, GID       uint32
	Comm           string
	Conn           uint64 // the library's connection object (SSL *, session, PRFileDesc *, *tls.Conn)
	Library        Library
	Recv           bool   // plaintext received (read) rather than sent
	Total          uint32 // bytes the call moved (Go: bytes it was asked to write)
	Offset         uint32 // of Bytes within the call
	Bytes          []byte
	Truncated      bool // the call moved more than the capture bound
	ReadFailed     bool // the buffer could not be read (not resident): Bytes is empty
	AtEntry        bool // captured when the call started; the write may still fail
	Socket         Socket
	SocketResolved bool
}

// hookKind selects the programs one function needs.
type hookKind uint8

const (
	hookRW   hookKind = iota // (conn, buf, len) -> count
	hookRWEx                 // (conn, buf, len, size_t *done) -> 1
	hookNSPR                 // PR_Write & co. on a PRFileDesc
	hookGo                   // Go ABIInternal, entry only
)

// Attach-cookie bits, mirrored from tlsplain.bpf.c.
const (
	cookieRecv  = 1 << 8
	cookieRet32 = 1 << 9
)

type function struct {
	symbol string
	kind   hookKind
	recv   bool
	ret32  bool
}

// Functions lists the hooked functions of each library.
var functions = map[Library][]function{
	OpenSSL: {
		{"SSL_write", hookRW, false, true}, {"SSL_write_ex", hookRWEx, false, false},
		{"SSL_read", hookRW, true, true}, {"SSL_read_ex", hookRWEx, true, false},
	},
	GnuTLS: {{"gnutls_record_send", hookRW, false, false}, {"gnutls_record_recv", hookRW, true, false}},
	NSS: {
		{"PR_Write", hookNSPR, false, true}, {"PR_Send", hookNSPR, false, true},
		{"PR_Read", hookNSPR, true, true}, {"PR_Recv", hookNSPR, true, true},
	},
	GoTLS: {{GoWriteSymbol, hookGo, false, false}},
}

// GoWriteSymbol is the Go function hooked in Go executables.
const GoWriteSymbol = "crypto/tls.(*Conn).Write"

// Symbols returns the functions hooked for a library (sending ones first).
func Symbols(l Library) []string {
	var out []string
	for _, f := range functions[l] {
		out = append(out, f.symbol)
	}
	return out
}

var programs = [...]string{"rw_enter", "rw_exit", "rw_ex_enter", "rw_ex_exit", "nspr_enter", "go_write"}

// Probe is a loaded TLS plaintext probe. Attach hooks files into it.
type Probe struct {
	log    *slog.Logger
	ring   *kernel.Ring
	clock  kernel.Clock
	status []Status

	stop, flushed chan struct{} // end and acknowledge the flush loop

	mu     sync.Mutex // guards attached and closed; held while attaching
	closed bool
	next   uint64
	files  map[uint64][]link.Link // by Attachment id; every link referenced until Detach
}

// Load loads the BPF objects and attaches the socket-binding tracepoints. Files are hooked
// later with Attach. Load fails when a program does not load (no uprobes in this kernel's
// BPF) or when no binding tracepoint attaches.
func Load(cfg Config, log *slog.Logger) (*Probe, error) {
	if log == nil {
		log = slog.Default()
	}
	log = log.With("probe", "tlsplain")
	if cfg.RingBytes == 0 {
		cfg.RingBytes = DefaultRingBytes
	}
	if cfg.MaxCapture == 0 {
		cfg.MaxCapture = DefaultMaxCapture
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = 100 * time.Millisecond
	}
	if cfg.WakeupBytes == 0 {
		cfg.WakeupBytes = 256 << 10
	}
	cfg.WakeupBytes = min(cfg.WakeupBytes, kernel.RingSize(cfg.RingBytes)/4)
	if cfg.MaxCapture > MaxCaptureLimit {
		return nil, fmt.Errorf("tlsplain: max capture %d is above the limit %d", cfg.MaxCapture, MaxCaptureLimit)
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("remove memlock rlimit: %w", err)
	}
	spec, err := loadTlsplain()
	if err != nil {
		return nil, fmt.Errorf("load tlsplain BPF spec: %w", err)
	}
	spec.Maps["events"].MaxEntries = kernel.RingSize(cfg.RingBytes)
	if err := spec.Variables["ward_ignore_tgid"].Set(cfg.IgnoreTGID); err != nil {
		return nil, fmt.Errorf("set ward_ignore_tgid: %w", err)
	}
	if err := spec.Variables["max_capture"].Set(cfg.MaxCapture); err != nil {
		return nil, fmt.Errorf("set max_capture: %w", err)
	}
	if err := spec.Variables["wakeup_bytes"].Set(cfg.WakeupBytes); err != nil {
		return nil, fmt.Errorf("set wakeup_bytes: %w", err)
	}
	if err := kernel.EnsureTracefs(log); err != nil {
		return nil, fmt.Errorf("tlsplain: %w", err)
	}
	loader, err := kernel.NewLoader(spec, log)
	if err != nil {
		return nil, fmt.Errorf("tlsplain: %w", err)
	}
	for _, name := range programs {
		if _, err := loader.Program(name); err != nil {
			loader.Close()
			return nil, fmt.Errorf("tlsplain: %w", err)
		}
	}
	p := &Probe{log: log, files: make(map[uint64][]link.Link)}
	bound := 0
	for _, sc := range []string{"write", "writev", "sendto", "sendmsg"} {
		st := loader.AttachFirst("bind/"+sc, kernel.Hook{Kind: "tracepoint", Program: "enter_" + sc, Group: "syscalls", Event: "sys_enter_" + sc})
		if st.Attached {
			bound++
		}
		p.status = append(p.status, st)
	}
	if bound == 0 {
		loader.Close()
		return nil, errors.New("tlsplain: no socket-binding tracepoint attached (see the warnings above)")
	}
	if p.ring, err = kernel.OpenRing(loader); err != nil {
		loader.Close()
		return nil, fmt.Errorf("tlsplain: %w", err)
	}
	p.stop = make(chan struct{})
	p.flushed = make(chan struct{})
	go p.flushLoop(cfg.FlushInterval)
	return p, nil
}

// flushLoop has the reader look at the ring every interval: the programs wake it only
// when WakeupBytes are pending.
func (p *Probe) flushLoop(every time.Duration) {
	defer close(p.flushed)
	t := time.NewTicker(every)
	defer t.Stop()
	var n int
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			_ = p.ring.Flush()
			if n++; n%100 == 0 {
				if err := p.recount(); err != nil {
					p.log.Debug("recount TLS calls in flight", "err", err)
				}
			}
		}
	}
}

// recount drops in-flight entries of threads that died inside a TLS call (their return
// probe never ran) and resets the in-flight counter the syscall tracepoints filter on. A
// call that starts or ends during the recount can leave the counter one off for one
// interval; too low only means such a call's socket is learned on its next call.
func (p *Probe) recount() error {
	return p.ring.Maps(func(l *kernel.Loader) error {
		in := l.Map("inflight")
		var (
			key   uint64
			val   tlsplainInflight
			live  int64
			stale []uint64
		)
		it := in.Iterate()
		for it.Next(&key, &val) {
			tgid, tid := key>>32, key&0xffffffff
			if _, err := os.Stat("/proc/" + strconv.FormatUint(tgid, 10) + "/task/" + strconv.FormatUint(tid, 10)); err != nil {
				stale = append(stale, key)
				continue
			}
			live++
		}
		if err := it.Err(); err != nil {
			return fmt.Errorf("iterate in-flight calls: %w", err)
		}
		for _, k := range stale {
			_ = in.Delete(k)
		}
		return l.Map("active").Update(uint32(0), live, 0)
	})
}

// Target is one file to hook: a shared library or an executable carrying the library's
// functions (statically linked with symbols, or Go).
type Target struct {
	Path    string
	Library Library
	// Receive also hooks the reading functions (not Go).
	Receive bool
	// GoWrite is the file offset of crypto/tls.(*Conn).Write; 0 looks the symbol up in the
	// ELF symbol table (see GoWriteOffset for stripped binaries).
	GoWrite uint64
}

// Attachment identifies the hooks Attach set on one file.
type Attachment struct {
	ID      uint64
	Symbols []string // functions hooked
}

// Attach hooks a file's TLS functions. Functions the file lacks are skipped (older
// libraries have no SSL_write_ex); ErrNoHooks means it had none. Each hook stays in place
// until Detach or Close.
func (p *Probe) Attach(t Target) (Attachment, error) {
	fns, ok := functions[t.Library]
	if !ok {
		return Attachment{}, fmt.Errorf("tlsplain: unknown library %d", t.Library)
	}
	ex, err := link.OpenExecutable(t.Path)
	if err != nil {
		return Attachment{}, fmt.Errorf("tlsplain: open %s: %w", t.Path, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return Attachment{}, ErrClosed
	}
	var links []link.Link
	var att Attachment
	var errs []error
	for _, fn := range fns {
		if fn.recv && !t.Receive {
			continue
		}
		cookie := uint64(t.Library)
		if fn.recv {
			cookie |= cookieRecv
		}
		if fn.ret32 {
			cookie |= cookieRet32
		}
		ls, err := p.attachFunction(ex, fn, t, cookie)
		if err != nil {
			if !errors.Is(err, link.ErrNoSymbol) {
				errs = append(errs, fmt.Errorf("%s: %w", fn.symbol, err))
			}
			continue
		}
		links = append(links, ls...)
		att.Symbols = append(att.Symbols, fn.symbol)
	}
	if len(links) == 0 {
		if len(errs) > 0 {
			return Attachment{}, fmt.Errorf("tlsplain: hook %s in %s: %w", t.Library, t.Path, errors.Join(errs...))
		}
		return Attachment{}, fmt.Errorf("tlsplain: %s in %s: %w", t.Library, t.Path, ErrNoHooks)
	}
	if len(errs) > 0 {
		p.log.Warn("some TLS functions could not be hooked", "path", t.Path, "library", t.Library.String(), "err", errors.Join(errs...))
	}
	p.next++
	att.ID = p.next
	p.files[att.ID] = links // keep a reference: a collected link detaches
	return att, nil
}

func (p *Probe) attachFunction(ex *link.Executable, fn function, t Target, cookie uint64) ([]link.Link, error) {
	var enter, exit string
	switch fn.kind {
	case hookRW:
		enter, exit = "rw_enter", "rw_exit"
	case hookRWEx:
		enter, exit = "rw_ex_enter", "rw_ex_exit"
	case hookNSPR:
		enter, exit = "nspr_enter", "rw_exit"
	case hookGo:
		enter = "go_write"
	}
	var ls []link.Link
	err := p.ring.Maps(func(l *kernel.Loader) error {
		prog, err := l.Program(enter)
		if err != nil {
			return err
		}
		opts := &link.UprobeOptions{Cookie: cookie}
		if fn.kind == hookGo {
			opts.Address = t.GoWrite
		}
		up, err := ex.Uprobe(fn.symbol, prog, opts)
		if err != nil {
			return err
		}
		ls = append(ls, up)
		if exit == "" {
			return nil
		}
		if prog, err = l.Program(exit); err != nil {
			up.Close()
			return err
		}
		ret, err := ex.Uretprobe(fn.symbol, prog, &link.UprobeOptions{Cookie: cookie})
		if err != nil {
			up.Close()
			return fmt.Errorf("uretprobe: %w", err)
		}
		ls = append(ls, ret)
		return nil
	})
	if errors.Is(err, os.ErrClosed) {
		return nil, ErrClosed
	}
	return ls, err
}

// Detach removes the hooks of one Attach.
func (p *Probe) Detach(id uint64) error {
	p.mu.Lock()
	ls := p.files[id]
	delete(p.files, id)
	p.mu.Unlock()
	var errs []error
	for _, l := range ls {
		errs = append(errs, l.Close())
	}
	return errors.Join(errs...)
}

// Status reports the socket-binding tracepoints.
func (p *Probe) Status() []Status { return slices.Clone(p.status) }

// Next blocks until the next record and returns ErrClosed after Close. A malformed record
// yields an error wrapping ErrMalformed; the caller may keep reading.
func (p *Probe) Next() (Data, error) {
	for {
		b, err := p.ring.Read()
		if errors.Is(err, kernel.ErrFlushed) {
			continue // the periodic look found what was pending; wait for more
		}
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return Data{}, ErrClosed
			}
			return Data{}, fmt.Errorf("read tlsplain ring buffer: %w", err)
		}
		return decode(b, &p.clock)
	}
}

// Drops returns the in-kernel drop counters summed over CPUs.
func (p *Probe) Drops() (map[string]uint64, error) {
	d, err := p.ring.Drops()
	if errors.Is(err, os.ErrClosed) {
		return nil, ErrClosed
	}
	return d, err
}

// Close removes every hook and unblocks Next.
func (p *Probe) Close() error {
	p.mu.Lock()
	if !p.closed {
		close(p.stop)
		<-p.flushed
	}
	p.closed = true
	var errs []error
	for id, ls := range p.files {
		for _, l := range ls {
			errs = append(errs, l.Close())
		}
		delete(p.files, id)
	}
	p.mu.Unlock()
	errs = append(errs, p.ring.Close())
	return errors.Join(errs...)
}

// Record layout, mirrored from tlsplain.bpf.c and checked against the bpf2go type in
// tlsplain_test.go.
const (
	evData    = 1
	headerLen = 128

	flagTruncated  = 1 << 0
	flagReadFailed = 1 << 1
	flagAtEntry    = 1 << 2

	afInet  = 2
	afInet6 = 10
)

var le = binary.LittleEndian

func decode(b []byte, clock *kernel.Clock) (Data, error) {
	if len(b) < headerLen {
		return Data{}, fmt.Errorf("%w: %d bytes, want at least %d", ErrMalformed, len(b), headerLen)
	}
	if typ := le.Uint32(b); typ != evData {
		return Data{}, fmt.Errorf("%w: unknown record type %d", ErrMalformed, typ)
	}
	lib := Library(b[36])
	if _, ok := functions[lib]; !ok {
		return Data{}, fmt.Errorf("%w: library %d", ErrMalformed, b[36])
	}
	n := le.Uint32(b[48:])
	if n > ChunkBytes || int(n) != len(b)-headerLen {
		return Data{}, fmt.Errorf("%w: %d data bytes announced, %d present", ErrMalformed, n, len(b)-headerLen)
	}
	flags := le.Uint16(b[38:])
	d := Data{
		Time: clock.Time(le.Uint64(b[8:])), PID: le.Uint32(b[4:]), TID: le.Uint32(b[24:]),
		UID: le.Uint32(b[28:]), GID: le.Uint32(b[32:]), Conn: le.Uint64(b[16:]),
		Library: lib, Recv: b[37] != 0, Total: le.Uint32(b[40:]), Offset: le.Uint32(b[44:]),
		Truncated: flags&flagTruncated != 0, ReadFailed: flags&flagReadFailed != 0, AtEntry: flags&flagAtEntry != 0,
		Comm:  kernel.CString(b[112:128]),
		Bytes: b[headerLen : headerLen+int(n) : headerLen+int(n)],
	}
	if uint64(d.Offset)+uint64(n) > uint64(d.Total) {
		return Data{}, fmt.Errorf("%w: data [%d,+%d) beyond the call's %d bytes", ErrMalformed, d.Offset, n, d.Total)
	}
	s := b[56:112]
	family := le.Uint16(s[12:])
	var src, dst netip.Addr
	switch family {
	case 0:
	case afInet:
		src, dst = netip.AddrFrom4([4]byte(s[24:28])), netip.AddrFrom4([4]byte(s[40:44]))
	case afInet6:
		src, dst = netip.AddrFrom16([16]byte(s[24:40])), netip.AddrFrom16([16]byte(s[40:56]))
	default:
		return Data{}, fmt.Errorf("%w: socket address family %d", ErrMalformed, family)
	}
	if family != 0 {
		d.SocketResolved = true
		d.Socket = Socket{Cookie: le.Uint64(s), FD: int32(le.Uint32(s[8:])),
			Local: netip.AddrPortFrom(src, le.Uint16(s[14:])), Remote: netip.AddrPortFrom(dst, le.Uint16(s[16:]))}
	}
	return d, nil
}

// GoWriteOffset finds crypto/tls.(*Conn).Write in a Go executable and returns its file
// offset for Target.GoWrite. It reads .symtab when present and the Go line table
// (.gopclntab) of stripped binaries otherwise. ok is false for executables that are not Go
// or do not link crypto/tls.
func GoWriteOffset(path string) (off uint64, ok bool, err error) {
	f, err := elf.Open(path)
	if err != nil {
		return 0, false, fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	return goWriteOffset(f)
}

func goWriteOffset(f *elf.File) (uint64, bool, error) {
	pcln := f.Section(".gopclntab")
	if pcln == nil && f.Section(".go.buildinfo") == nil {
		return 0, false, nil // not Go
	}
	var addr uint64
	if syms, err := f.Symbols(); err == nil {
		for _, s := range syms {
			if s.Name == GoWriteSymbol && elf.ST_TYPE(s.Info) == elf.STT_FUNC {
				addr = s.Value
				break
			}
		}
	}
	if addr == 0 && pcln != nil {
		data, err := pcln.Data()
		if err != nil {
			return 0, false, fmt.Errorf("read .gopclntab: %w", err)
		}
		text := f.Section(".text")
		if text == nil {
			return 0, false, errors.New("go executable without .text")
		}
		tab, err := gosym.NewTable(nil, gosym.NewLineTable(data, text.Addr))
		if err != nil {
			return 0, false, fmt.Errorf("parse .gopclntab: %w", err)
		}
		if fn := tab.LookupFunc(GoWriteSymbol); fn != nil {
			addr = fn.Entry
		}
	}
	if addr == 0 {
		return 0, false, nil // Go, without crypto/tls
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_LOAD && prog.Flags&elf.PF_X != 0 && prog.Vaddr <= addr && addr < prog.Vaddr+prog.Memsz {
			return addr - prog.Vaddr + prog.Off, true, nil
		}
	}
	return 0, false, fmt.Errorf("%s at %#x is outside every executable segment", GoWriteSymbol, addr)
}
