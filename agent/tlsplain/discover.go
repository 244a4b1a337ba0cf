package tlsplain

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	probe "github.com/ward-dlp/ward/bpf/tlsplain"
)

// Hooker is what Discovery needs of the probe.
type Hooker interface {
	Attach(probe.Target) (probe.Attachment, error)
}

// DiscoveryConfig tunes Discovery; zero fields take defaults.
type DiscoveryConfig struct {
	// Self is the agent's pid: its executable is never hooked.
	Self uint32
	// Receive also hooks the reading functions.
	Receive bool
	// LibraryDirs are searched at start for TLS libraries, so a library is hooked before the
	// first process that maps it runs (default: the usual multiarch and lib directories).
	LibraryDirs []string
	// ExecDelay is when a new process's maps are read a second time, after the dynamic
	// loader mapped its libraries (default 250ms).
	ExecDelay time.Duration
	// Rescan is how old a process's last look may be before a new connection looks again
	// (dlopen'ed libraries; default 30s).
	Rescan time.Duration
	// MaxFiles bounds the files hooked (default 512).
	MaxFiles int
	// MaxProcs bounds the processes remembered (default 16384).
	MaxProcs int
}

func (c *DiscoveryConfig) defaults() {
	if c.LibraryDirs == nil {
		c.LibraryDirs = []string{"/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib",
			"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu"}
	}
	if c.ExecDelay <= 0 {
		c.ExecDelay = 250 * time.Millisecond
	}
	if c.Rescan <= 0 {
		c.Rescan = 30 * time.Second
	}
	if c.MaxFiles <= 0 {
		c.MaxFiles = 512
	}
	if c.MaxProcs <= 0 {
		c.MaxProcs = 16384
	}
}

// FileID is a file's identity: device and inode as stat reports them.
type FileID struct{ Dev, Ino uint64 }

type fileInfo struct {
	lib     probe.Library // 0: nothing hookable
	hooked  bool
	path    string
	err     string
	static  string // statically linked TLS found by the marker scan ("" if none)
	scanned bool   // marker scan done
}

type procInfo struct {
	exe      FileID
	exePath  string
	libs     []probe.Library
	static   string // TLS library name when it cannot be hooked
	reason   string
	looked   time.Time // last scan (or queued scan)
	static1  bool      // a connect look is queued or done within Rescan
	exited   time.Time
	selfProc bool
}

// ProcessTLS is what Discovery knows about a process's TLS stack.
type ProcessTLS struct {
	// Libraries are the hooked TLS libraries the process maps or is built with.
	Libraries []string
	// Static names a statically linked TLS library that cannot be hooked, with the reason.
	Static, Reason string
}

// DiscoveryStats are counters for health events.
type DiscoveryStats struct {
	Scans, QueueFull, AttachErrors, FilesOverLimit uint64
}

// Discovery finds TLS libraries and Go executables and hooks each file once.
type Discovery struct {
	cfg   DiscoveryConfig
	hook  Hooker
	log   *slog.Logger
	reqs  chan scanReq
	later chan scanReq

	mu     sync.Mutex
	files  map[FileID]*fileInfo
	procs  map[uint32]*procInfo
	hooked map[probe.Library][]string // paths, for Status
	errs   map[probe.Library]string
	stats  DiscoveryStats
	selfID FileID
}

type scanReq struct {
	pid     uint32
	exe     string // the executable the exec record named, for processes gone before the look
	at      time.Time
	connect bool // asked because the process connected
}

// NewDiscovery returns a Discovery that attaches through hook.
func NewDiscovery(hook Hooker, cfg DiscoveryConfig, log *slog.Logger) *Discovery {
	cfg.defaults()
	if log == nil {
		log = slog.Default()
	}
	d := &Discovery{cfg: cfg, hook: hook, log: log.With("component", "tls-discovery"),
		reqs: make(chan scanReq, 4096), later: make(chan scanReq, 4096),
		files: make(map[FileID]*fileInfo), procs: make(map[uint32]*procInfo),
		hooked: make(map[probe.Library][]string), errs: make(map[probe.Library]string)}
	if id, err := statID("/proc/self/exe"); err == nil {
		d.selfID = id
	}
	return d
}

// LibraryOf names the TLS library a shared-object file name belongs to (0 when none).
func LibraryOf(name string) probe.Library {
	base := filepath.Base(name)
	switch {
	case strings.HasPrefix(base, "libssl.so"), strings.HasPrefix(base, "libboringssl.so"):
		return probe.OpenSSL
	case strings.HasPrefix(base, "libgnutls.so"):
		return probe.GnuTLS
	case strings.HasPrefix(base, "libnspr4.so"):
		return probe.NSS
	}
	return 0
}

// Start hooks the TLS libraries in the library directories, then looks at every running
// process, and logs "TLS discovery done". It may run alongside Run, which handles what
// comes later.
func (d *Discovery) Start(ctx context.Context) {
	start := time.Now()
	defer func() {
		d.mu.Lock()
		n := 0
		for _, paths := range d.hooked {
			n += len(paths)
		}
		d.mu.Unlock()
		d.log.Info("TLS discovery done", "hooked_files", n, "took", time.Since(start).Round(time.Millisecond))
	}()
	for _, dir := range d.cfg.LibraryDirs {
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			lib := LibraryOf(e.Name())
			if lib == 0 {
				continue
			}
			p := filepath.Join(dir, e.Name())
			id, err := statID(p)
			if err != nil {
				continue // dangling symlink
			}
			d.hookFile(id, p, lib, 0)
		}
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		d.log.Warn("cannot list processes; TLS libraries are hooked as processes start", "err", err)
		return
	}
	for _, e := range ents {
		if ctx.Err() != nil {
			return
		}
		if pid, err := strconv.ParseUint(e.Name(), 10, 32); err == nil {
			d.scan(scanReq{pid: uint32(pid)})
		}
	}
}

// Run serves Exec and Connect requests until ctx ends.
func (d *Discovery) Run(ctx context.Context) error {
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case r := <-d.later:
				if wait := time.Until(r.at); wait > 0 {
					select {
					case <-ctx.Done():
						return
					case <-time.After(wait):
					}
				}
				select {
				case d.reqs <- r:
				default:
					d.count(func(s *DiscoveryStats) { s.QueueFull++ })
				}
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case r := <-d.reqs:
			d.scan(r)
		}
	}
}

func (d *Discovery) count(f func(*DiscoveryStats)) {
	d.mu.Lock()
	f(&d.stats)
	d.mu.Unlock()
}

func (d *Discovery) enqueue(ch chan scanReq, r scanReq) {
	select {
	case ch <- r:
	default:
		d.count(func(s *DiscoveryStats) { s.QueueFull++ })
	}
}

// Exec looks at a new process now (its executable) and again after ExecDelay (the
// libraries the dynamic loader maps). exe is the executable's path as the exec record
// named it: a process that exits before the look is still judged by its file, so the next
// run of the same executable is hooked.
func (d *Discovery) Exec(pid uint32, exe string) {
	d.mu.Lock()
	delete(d.procs, pid) // a new image: forget what the pid ran before
	d.mu.Unlock()
	now := time.Now()
	d.enqueue(d.reqs, scanReq{pid: pid, exe: exe, at: now})
	d.enqueue(d.later, scanReq{pid: pid, at: now.Add(d.cfg.ExecDelay)})
}

// Connect looks at a process that opened a connection again, at most once per Rescan, for
// libraries it loaded after it started (dlopen).
func (d *Discovery) Connect(pid uint32) {
	now := time.Now()
	d.mu.Lock()
	p := d.procs[pid]
	fresh := p != nil && p.static1 && now.Sub(p.looked) < d.cfg.Rescan
	if !fresh {
		if p == nil {
			d.evictProcsLocked()
			p = &procInfo{}
			d.procs[pid] = p
		}
		p.looked = now // one queued look per interval, however many connections
		p.static1 = true
	}
	d.mu.Unlock()
	if !fresh {
		d.enqueue(d.reqs, scanReq{pid: pid, at: now, connect: true})
	}
}

// Exit forgets a process after a while (its flows are reported after it exits).
func (d *Discovery) Exit(pid uint32) {
	d.mu.Lock()
	if p := d.procs[pid]; p != nil {
		p.exited = time.Now()
	}
	d.mu.Unlock()
}

// Process reports what is known of a process's TLS stack.
func (d *Discovery) Process(pid uint32) ProcessTLS {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.procs[pid]
	if p == nil {
		return ProcessTLS{}
	}
	out := ProcessTLS{Static: p.static, Reason: p.reason}
	for _, l := range p.libs {
		out.Libraries = append(out.Libraries, l.String())
	}
	return out
}

// LibraryStatus is one library's hooks, for health events.
type LibraryStatus struct {
	Library probe.Library
	Files   []string // hooked files
	Err     string   // last attach failure
}

// Status reports the hooked files per library.
func (d *Discovery) Status() []LibraryStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []LibraryStatus
	for _, lib := range []probe.Library{probe.OpenSSL, probe.GnuTLS, probe.NSS, probe.GoTLS} {
		if len(d.hooked[lib]) == 0 && d.errs[lib] == "" {
			continue
		}
		out = append(out, LibraryStatus{Library: lib, Files: slices.Clone(d.hooked[lib]), Err: d.errs[lib]})
	}
	return out
}

// Stats returns the counters.
func (d *Discovery) Stats() DiscoveryStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stats
}

// scan looks at one process: its executable, its mapped libraries, and whether an
// unhookable TLS stack is built in.
func (d *Discovery) scan(r scanReq) {
	d.count(func(s *DiscoveryStats) { s.Scans++ })
	procDir := "/proc/" + strconv.FormatUint(uint64(r.pid), 10)
	exe := procDir + "/exe"
	exeID, err := statID(exe)
	alive := err == nil
	if !alive {
		if r.exe == "" || !filepath.IsAbs(r.exe) {
			return // gone, or a kernel thread
		}
		// Gone already (a short-lived client): judge the file the exec named.
		if exeID, err = statID(r.exe); err != nil {
			return
		}
		exe = r.exe
	}
	d.mu.Lock()
	p := d.procs[r.pid]
	if p == nil || p.exe != exeID {
		p = &procInfo{exe: exeID}
		d.evictProcsLocked()
		d.procs[r.pid] = p
	}
	p.looked = time.Now()
	if r.pid == d.cfg.Self || exeID == d.selfID {
		p.selfProc = true
	}
	self := p.selfProc
	d.mu.Unlock()
	if self {
		return // never hook the agent (its own TLS to the collector would feed itself)
	}
	exePath := r.exe
	if alive {
		exePath, _ = os.Readlink(exe)
		// Hook through a path that outlives the process: its executable by name, in its
		// mount namespace, when that still is the same file.
		for _, p := range []string{exePath, procDir + "/root" + exePath} {
			if id, err := statID(p); filepath.IsAbs(exePath) && err == nil && id == exeID {
				exe = p
				break
			}
		}
	}
	var libs []probe.Library
	if lib := d.exeLibrary(exeID, exe); lib != 0 {
		libs = append(libs, lib)
	}
	var maps []byte
	if alive {
		maps, _ = os.ReadFile(procDir + "/maps")
	}
	if maps != nil {
		for _, m := range parseMaps(maps) {
			lib := LibraryOf(m.path)
			if lib == 0 || slices.Contains(libs, lib) {
				continue
			}
			path := procDir + "/map_files/" + m.addr
			id, err := statID(path)
			if err != nil {
				path = procDir + "/root" + m.path
				if id, err = statID(path); err != nil {
					continue
				}
			}
			if d.hookFile(id, path, lib, 0) {
				libs = append(libs, lib)
			}
		}
	}
	// A TLS stack built into the executable without symbols cannot be hooked; say so. The
	// scan reads each executable once (cached by inode) and is skipped when a library is
	// hooked.
	var static, reason string
	if len(libs) == 0 {
		static, reason = d.staticTLS(exeID, exe, maps)
	}
	d.mu.Lock()
	p.exePath, p.libs, p.static, p.reason = exePath, libs, static, reason
	if r.connect {
		p.static1 = true
	}
	d.mu.Unlock()
}

// exeLibrary hooks an executable that carries TLS functions itself: Go with crypto/tls, or
// a static OpenSSL/GnuTLS build that kept its symbols (Node.js exports OpenSSL's).
func (d *Discovery) exeLibrary(id FileID, path string) probe.Library {
	d.mu.Lock()
	f := d.files[id]
	d.mu.Unlock()
	if f != nil {
		if f.hooked {
			return f.lib
		}
		return 0
	}
	lib, goOff, err := analyseExecutable(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0 // gone before the look: judge it next time
	}
	if err != nil || lib == 0 {
		d.mu.Lock()
		if d.files[id] == nil {
			d.files[id] = &fileInfo{path: path}
		}
		d.mu.Unlock()
		return 0
	}
	if d.hookFile(id, path, lib, goOff) {
		return lib
	}
	return 0
}

// analyseExecutable says which hookable TLS an executable carries.
func analyseExecutable(path string) (probe.Library, uint64, error) {
	f, err := elf.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	if off, ok, err := probe.GoWriteOffset(path); err == nil && ok {
		return probe.GoTLS, off, nil
	}
	has := func(syms []elf.Symbol, name string) bool {
		for _, s := range syms {
			if s.Name == name && s.Value != 0 && elf.ST_TYPE(s.Info) == elf.STT_FUNC {
				return true
			}
		}
		return false
	}
	for _, get := range []func() ([]elf.Symbol, error){f.DynamicSymbols, f.Symbols} {
		syms, err := get()
		if err != nil {
			continue
		}
		switch {
		case has(syms, "SSL_write"):
			return probe.OpenSSL, 0, nil
		case has(syms, "gnutls_record_send"):
			return probe.GnuTLS, 0, nil
		}
	}
	return 0, 0, nil
}

// hookFile attaches to a file once per (dev, inode) and reports whether it is hooked.
func (d *Discovery) hookFile(id FileID, path string, lib probe.Library, goOff uint64) bool {
	d.mu.Lock()
	f := d.files[id]
	if f != nil {
		d.mu.Unlock()
		return f.hooked
	}
	n := 0
	for _, paths := range d.hooked {
		n += len(paths)
	}
	if n >= d.cfg.MaxFiles {
		d.stats.FilesOverLimit++
		d.mu.Unlock()
		return false
	}
	f = &fileInfo{lib: lib, path: path}
	d.files[id] = f // claimed: a concurrent look at the same file does not attach twice
	d.mu.Unlock()

	att, err := d.hook.Attach(probe.Target{Path: path, Library: lib, Receive: d.cfg.Receive, GoWrite: goOff})
	name := displayPath(path)
	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			// The process (and with it the /proc path) went away before the attach: let the
			// next look at this file try again.
			delete(d.files, id)
			d.log.Debug("TLS library vanished before it was hooked", "path", path, "err", err)
			return false
		}
		f.err = err.Error()
		if !errors.Is(err, probe.ErrNoHooks) {
			d.stats.AttachErrors++
			d.errs[lib] = err.Error()
			d.log.Warn("cannot hook TLS library", "library", lib.String(), "path", name, "err", err)
		}
		return false
	}
	f.hooked = true
	d.hooked[lib] = append(d.hooked[lib], name)
	d.log.Info("hooked TLS library", "library", lib.String(), "path", name, "functions", att.Symbols)
	return true
}

// displayPath names a /proc/<pid>/map_files or /proc/<pid>/exe link by its target.
func displayPath(p string) string {
	if strings.HasPrefix(p, "/proc/") {
		if t, err := os.Readlink(p); err == nil {
			return t
		}
	}
	return p
}

func (d *Discovery) evictProcsLocked() {
	if len(d.procs) < d.cfg.MaxProcs {
		return
	}
	// Make room for an eighth of the table at once: evicting one entry per new process
	// scanned the whole table on every exec once it was full (an exec storm of short-lived
	// processes keeps it full), which was most of the agent's CPU per exec.
	target := d.cfg.MaxProcs - d.cfg.MaxProcs/8 - 1
	cutoff := time.Now().Add(-10 * time.Minute)
	for pid, p := range d.procs {
		if !p.exited.IsZero() && p.exited.Before(cutoff) {
			delete(d.procs, pid)
		}
	}
	for pid, p := range d.procs { // then exited ones of any age
		if len(d.procs) <= target {
			return
		}
		if !p.exited.IsZero() {
			delete(d.procs, pid)
		}
	}
	for pid := range d.procs { // still full: forget arbitrary ones (map order is random)
		if len(d.procs) <= target {
			return
		}
		delete(d.procs, pid)
	}
}

// staticTLS decides whether a process that maps no hookable library has a TLS stack of
// its own that cannot be hooked, and names it.
func (d *Discovery) staticTLS(id FileID, exe string, maps []byte) (string, string) {
	for _, m := range parseMaps(maps) {
		if strings.HasPrefix(filepath.Base(m.path), "libjvm.so") {
			return "java-jsse", "Java TLS (JSSE) runs inside the JVM: there is no native TLS library to hook"
		}
	}
	d.mu.Lock()
	f := d.files[id]
	if f != nil && f.scanned {
		d.mu.Unlock()
		return f.static, staticReason(f.static)
	}
	d.mu.Unlock()
	name, err := scanStaticTLS(exe, maxStaticScan)
	if err != nil {
		d.log.Debug("static TLS scan", "exe", exe, "err", err)
		if errors.Is(err, fs.ErrNotExist) {
			return "", "" // gone before the look: scan it next time
		}
	}
	d.mu.Lock()
	if f = d.files[id]; f == nil {
		f = &fileInfo{path: exe}
		d.files[id] = f
	}
	f.static, f.scanned = name, true
	d.mu.Unlock()
	if name != "" {
		d.log.Info("TLS built into an executable cannot be hooked", "exe", displayPath(exe), "library", name)
	}
	return name, staticReason(name)
}

func staticReason(name string) string {
	if name == "" {
		return ""
	}
	return "statically linked " + name + " without symbols: its TLS functions cannot be hooked (only the destination is visible)"
}

// maxStaticScan bounds the bytes of one executable read by the marker scan.
const maxStaticScan = 1 << 30

// tlsMarkers are strings every TLS implementation carries: the TLS 1.3 CertificateVerify
// context (RFC 8446 §4.4.3) and the TLS 1.2 key-expansion PRF label (RFC 5246 §6.3). They
// are joined at run time so that no binary linking this package carries them whole and
// looks like a TLS stack itself.
var tlsMarkers = [][]byte{joined("TLS 1.3,", "server CertificateVerify"), joined("key", "expansion")}

// libraryMarkers name the implementation, most specific first (joined at run time too).
var libraryMarkers = []struct {
	marker []byte
	name   string
}{
	{joined("Boring", "SSL"), "boringssl"}, {joined("rust", "ls"), "rustls"}, {joined("wolf", "SSL"), "wolfssl"},
	{joined("mbed", "TLS"), "mbedtls"}, {joined("Gnu", "TLS"), "gnutls"}, {joined("Open", "SSL"), "openssl"},
}

func joined(a, b string) []byte {
	sep := " "
	if !strings.HasSuffix(a, ",") && a != "key" && a != "mbed" {
		sep = ""
	}
	return []byte(strings.Join([]string{a, b}, sep))
}

// scanStaticTLS reads up to limit bytes of a file looking for a TLS implementation. It
// returns the implementation's name ("tls" when it has no name marker), or "" when none.
func scanStaticTLS(path string, limit int64) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	const chunk, overlap = 1 << 20, 64
	buf := make([]byte, chunk+overlap)
	found := map[string]bool{}
	tls := false
	var keep int
	var read int64
	for read < limit {
		n, err := io.ReadFull(f, buf[keep:])
		read += int64(n)
		b := buf[:keep+n]
		for _, m := range tlsMarkers {
			if !tls && bytes.Contains(b, m) {
				tls = true
			}
		}
		for _, m := range libraryMarkers {
			if !found[m.name] && bytes.Contains(b, m.marker) {
				found[m.name] = true
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				break
			}
			return "", fmt.Errorf("read %s: %w", path, err)
		}
		keep = copy(buf, b[len(b)-overlap:])
	}
	if !tls {
		return "", nil
	}
	for _, m := range libraryMarkers {
		if found[m.name] {
			return m.name, nil
		}
	}
	return "tls", nil
}

type mapping struct {
	addr string // "start-end", the map_files name
	dev  string
	ino  uint64
	path string
}

// parseMaps returns the file-backed mappings of /proc/<pid>/maps, one per file.
func parseMaps(b []byte) []mapping {
	var out []mapping
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		// start-end perms offset dev inode path
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || !strings.HasPrefix(fields[5], "/") {
			continue
		}
		ino, err := strconv.ParseUint(fields[4], 10, 64)
		if err != nil || ino == 0 {
			continue
		}
		path := strings.Join(fields[5:], " ")
		path = strings.TrimSuffix(path, " (deleted)")
		if seen[path] {
			continue
		}
		seen[path] = true
		out = append(out, mapping{addr: fields[0], dev: fields[3], ino: ino, path: path})
	}
	return out
}

func statID(path string) (FileID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return FileID{}, err
	}
	return FileID{Dev: st.Dev, Ino: st.Ino}, nil
}
