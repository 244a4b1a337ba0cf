// Package filewrite captures data written into watched directory trees.
//
// Filtering happens in the kernel: a write to a descriptor that was not
// opened under a watched directory costs one hash lookup, so the agent can
// run on busy hosts. For tracked descriptors the probe reports the open (with
// the path relative to the watched directory), every write with up to
// Config.MaxCapture bytes of the written data, and the close. When a capture
// is incomplete (Write.Truncated) the consumer should re-read the file.
package filewrite

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/ward-dlp/ward/bpf/internal/kernel"
)

// Status reports how one hook (e.g. "write/writev") is attached.
type Status = kernel.Status

// ErrClosed is returned by Next once the probe is closed.
var ErrClosed = fmt.Errorf("filewrite probe closed: %w", os.ErrClosed)

// ErrMalformed wraps every record decode failure.
var ErrMalformed = errors.New("malformed filewrite record")

const (
	// DefaultMaxCapture covers the common buffered-I/O chunk sizes (glibc
	// stdio 4-8 KiB, Go bufio 4 KiB, most editors' saves) in one record
	// while keeping a burst of large writes from draining the ring.
	DefaultMaxCapture = 16 << 10
	// MaxCaptureLimit is the compiled-in hard bound. The BPF scratch buffer
	// is twice this (verifier proof for iovec copies at variable offsets);
	// larger writes are flagged truncated and re-read from disk instead.
	MaxCaptureLimit = 32 << 10
	// DefaultRingBytes holds ~500 full-size write records of burst.
	DefaultRingBytes = 8 << 20
)

// Config tunes the probe; zero fields take defaults.
type Config struct {
	MaxCapture uint32 // bytes captured per write syscall, <= MaxCaptureLimit
	RingBytes  uint32 // ring buffer size, rounded up to a power of two
	IgnoreTGID uint32 // the agent's own pid: never report it (0: off)
	// PlainPrograms skips the BTF variants and loads the programs kernels without
	// bpf_rdonly_cast use (for tests of that path, and for troubleshooting).
	PlainPrograms bool
}

// WriteKind is the syscall that produced a Write.
type WriteKind uint16

// Syscalls reported as Write.Kind.
const (
	KindWrite    WriteKind = 1
	KindPwrite64 WriteKind = 2
	KindWritev   WriteKind = 3
	KindPwritev  WriteKind = 4
	KindPwritev2 WriteKind = 5
	// In-kernel copies into a tracked descriptor, reported at syscall exit
	// with Requested = bytes actually moved. They carry no data (there is no
	// user buffer) and are always Truncated: the consumer knows bytes landed
	// in the file and must re-read it.
	KindCopyFileRange WriteKind = 6
	KindSendfile      WriteKind = 7
	KindSplice        WriteKind = 8
)

func (k WriteKind) String() string {
	switch k {
	case KindWrite:
		return "write"
	case KindPwrite64:
		return "pwrite64"
	case KindWritev:
		return "writev"
	case KindPwritev:
		return "pwritev"
	case KindPwritev2:
		return "pwritev2"
	case KindCopyFileRange:
		return "copy_file_range"
	case KindSendfile:
		return "sendfile"
	case KindSplice:
		return "splice"
	}
	return fmt.Sprintf("kind(%d)", uint16(k))
}

// Record is an Open, a Write or a Close.
type Record interface{ isRecord() }

// Open is a regular file opened for writing under a watched directory.
type Open struct {
	Time     time.Time
	PID, TID uint32
	UID, GID uint32
	FD       int32
	Dev      uint32 // kernel dev_t encoding (major<<20 | minor), see KernelDev
	Ino      uint64
	Flags    uint32 // open(2) flags as stored in the file (O_APPEND, O_SYNC...; the kernel clears O_CREAT, O_EXCL, O_TRUNC)
	WatchID  uint32
	Comm     string
	// Path is <watched dir>/<RelPath>. Empty when the watch id is unknown.
	Path    string
	RelPath string
	// WatchDir is the watched directory the file is under (empty when unknown).
	WatchDir string
	// PathTruncated: the relative path was longer than the kernel name
	// buffer; RelPath holds only its deepest components.
	PathTruncated bool
	// Untracked: the descriptor table map was full; writes through this
	// descriptor will not be reported.
	Untracked bool
}

// Write is one write syscall on a tracked descriptor, observed at entry, or an
// in-kernel copy into one (Kind copy_file_range/sendfile/splice), observed at
// exit with Requested = bytes moved and no Data.
type Write struct {
	Time      time.Time
	PID, TID  uint32
	FD        int32
	Dev       uint32
	Ino       uint64
	WatchID   uint32
	Kind      WriteKind
	Offset    int64  // file offset written at; -1 when unknown (O_APPEND)
	Requested uint64 // bytes the process asked to write
	Data      []byte // captured prefix of the data (owned by the record)
	// Truncated: Data is shorter than Requested (capture bound, more than 8
	// iovecs, or unreadable memory): re-read the file for full content.
	Truncated  bool
	ReadFailed bool
}

// Close is the close(2) of a tracked descriptor.
type Close struct {
	Time     time.Time
	PID, TID uint32
	FD       int32
	Dev      uint32
	Ino      uint64
	WatchID  uint32
}

// PathOpKind is the syscall family of a PathOp.
type PathOpKind uint16

// Path operations.
const (
	OpRename   PathOpKind = 1 // rename, renameat, renameat2
	OpTruncate PathOpKind = 2 // truncate(2) by path
)

func (k PathOpKind) String() string {
	switch k {
	case OpRename:
		return "rename"
	case OpTruncate:
		return "truncate"
	}
	return fmt.Sprintf("pathop(%d)", uint16(k))
}

// PathOp is a successful rename, or truncate(2), whose destination is under a watched
// directory, or may be (Unresolved). A rename moves an inode without a byte being written,
// so the consumer classifies the file from its new path.
type PathOp struct {
	Time     time.Time
	PID, TID uint32
	UID, GID uint32
	Comm     string
	Op       PathOpKind
	// Path is the destination, absolute and cleaned; empty when its watched directory
	// was unwatched before the record was decoded.
	Path string
	// WatchID and WatchDir name the watched directory the kernel found Path under. Both
	// are zero when Unresolved: the destination was relative with a '/' and its base
	// directory is not watched, so only the consumer, which knows every watched path,
	// can tell whether Path is in one.
	WatchID    uint32
	WatchDir   string
	Unresolved bool
	// OldPath is the rename's source, absolute when the kernel could name its base
	// directory; otherwise OldName as the process passed it.
	OldPath     string
	RenameFlags uint32 // renameat2 flags (RENAME_NOREPLACE, RENAME_EXCHANGE...)
	Length      int64  // truncate(2) length
	// NameTruncated: a path argument filled its 512-byte buffer; PathTruncated: a
	// directory name on the way up could not be read. Either way Path may be wrong.
	NameTruncated bool
	PathTruncated bool
}

// FdOpKind is what a process did with a tracked descriptor besides writing to it.
type FdOpKind uint16

// Descriptor operations.
const (
	// OpFtruncate is ftruncate(2) of a tracked file; Arg is the length asked for.
	OpFtruncate FdOpKind = 1
	// OpMmapShared is a writable MAP_SHARED mapping of a tracked file: stores through it
	// reach the file with no syscall. Arg is the length, Prot the protection.
	OpMmapShared FdOpKind = 2
	// OpIOURingSetup and OpIOURingEnter are io_uring used by a process that holds tracked
	// descriptors (FD is the ring's descriptor; Arg of enter is to_submit). What the ring
	// moves is not seen.
	OpIOURingSetup FdOpKind = 3
	OpIOURingEnter FdOpKind = 4
	// OpDup is a dup/dup2/dup3/fcntl(F_DUPFD) of a tracked descriptor: FD is the new one,
	// now tracked too, Arg the old one.
	OpDup FdOpKind = 5
	// OpInherit is a tracked descriptor inherited across fork: PID is the child, FD the
	// descriptor (the same number in both), Arg the parent's tgid.
	OpInherit FdOpKind = 6
	// OpMprotectShared is mprotect(PROT_WRITE) over a shared mapping of a tracked file
	// that was mapped read-only: stores through it reach the file with no syscall. FD is
	// -1 (the descriptor may be closed by then), Arg the length, Prot the protection.
	OpMprotectShared FdOpKind = 7
)

func (k FdOpKind) String() string {
	switch k {
	case OpFtruncate:
		return "ftruncate"
	case OpMmapShared:
		return "mmap_shared"
	case OpIOURingSetup:
		return "io_uring_setup"
	case OpIOURingEnter:
		return "io_uring_enter"
	case OpDup:
		return "dup"
	case OpInherit:
		return "inherit"
	case OpMprotectShared:
		return "mprotect_shared"
	}
	return fmt.Sprintf("fdop(%d)", uint16(k))
}

// FdOp is an operation on a tracked descriptor that moves no user buffer the probe can
// copy. For io_uring, Dev and Ino are zero and WatchID is the watched directory of the
// process's most recently tracked file.
type FdOp struct {
	Time     time.Time
	PID, TID uint32
	FD       int32
	Dev      uint32
	Ino      uint64
	WatchID  uint32
	Op       FdOpKind
	Prot     uint32
	Arg      int64
}

func (Open) isRecord()   {}
func (Write) isRecord()  {}
func (Close) isRecord()  {}
func (PathOp) isRecord() {}
func (FdOp) isRecord()   {}

// Probe is a loaded and attached file-write probe.
type Probe struct {
	log    *slog.Logger
	ring   *kernel.Ring
	clock  kernel.Clock
	status []Status

	// mu guards the watch tables below. Watch and Unwatch take it inside ring.Maps (never
	// the other way round); decoding takes it alone to name paths.
	mu      sync.Mutex
	nextID  uint32
	byKey   map[filewriteWatchKey]uint32
	byPath  map[string]filewriteWatchKey
	idPaths map[uint32]string // kept after Unwatch for in-flight records
	// prefixes are the path hashes in the kernel's watch_prefix map, per watch id.
	prefixes map[uint32][]uint64
}

type hookDef struct {
	name, prog, event string
	optional          bool   // absent on some architectures/kernels
	kind              string // "" is a syscall tracepoint; "raw_tp" a raw tracepoint
}

// Tracepoints lists the syscall tracepoints the probe attaches to (absent ones included):
// benchmarks hang empty programs on the same set to measure the floor any sensor of these
// syscalls costs.
func Tracepoints() []string {
	var out []string
	for _, h := range hooks {
		if h.kind == "" && !slices.Contains(out, h.event) {
			out = append(out, h.event)
		}
	}
	return out
}

// fasterVariant names, per program, one that does the same through BTF pointers and
// kfuncs (fewer helper calls) and is tried first; kernels without those features reject
// it and the plain program attaches instead (logged as a fallback).
var fasterVariant = map[string]string{"exit_open": "exit_open_btf"}

// The open-family syscalls all return the new fd, so one program serves all.
var hooks = []hookDef{
	{"open/openat", "exit_open", "sys_exit_openat", false, ""},
	{"open/openat2", "exit_open", "sys_exit_openat2", true, ""}, // 5.6+
	{"open/open", "exit_open", "sys_exit_open", true, ""},       // not on arm64
	{"open/creat", "exit_open", "sys_exit_creat", true, ""},     // not on arm64
	{"write/write", "enter_write", "sys_enter_write", false, ""},
	{"write/pwrite64", "enter_pwrite64", "sys_enter_pwrite64", false, ""},
	{"write/writev", "enter_writev", "sys_enter_writev", false, ""},
	{"write/pwritev", "enter_pwritev", "sys_enter_pwritev", false, ""},
	{"write/pwritev2", "enter_pwritev2", "sys_enter_pwritev2", true, ""}, // 4.6+
	// In-kernel copies: the entry stashes the destination, the exit reports
	// the bytes moved. A missing one is a warning: that copy is then seen
	// only through the agent's mtime check at close.
	{"copy/copy_file_range", "enter_copy_file_range", "sys_enter_copy_file_range", false, ""},
	{"copy/copy_file_range_exit", "exit_copy", "sys_exit_copy_file_range", false, ""},
	{"copy/sendfile", "enter_sendfile64", "sys_enter_sendfile64", false, ""},
	{"copy/sendfile_exit", "exit_copy", "sys_exit_sendfile64", false, ""},
	{"copy/splice", "enter_splice", "sys_enter_splice", false, ""},
	{"copy/splice_exit", "exit_copy", "sys_exit_splice", false, ""},
	{"close/close", "enter_close", "sys_enter_close", false, ""},
	// Renames and truncates by path: the entry stashes the arguments, one exit program
	// decides for all four.
	{"rename/rename", "enter_rename", "sys_enter_rename", true, ""}, // not on arm64
	{"rename/rename_exit", "exit_pathop", "sys_exit_rename", true, ""},
	{"rename/renameat", "enter_renameat", "sys_enter_renameat", true, ""},
	{"rename/renameat_exit", "exit_pathop", "sys_exit_renameat", true, ""},
	{"rename/renameat2", "enter_renameat2", "sys_enter_renameat2", false, ""},
	{"rename/renameat2_exit", "exit_pathop", "sys_exit_renameat2", false, ""},
	{"truncate/truncate", "enter_truncate", "sys_enter_truncate", false, ""},
	{"truncate/truncate_exit", "exit_pathop", "sys_exit_truncate", false, ""},
	{"truncate/ftruncate", "enter_ftruncate", "sys_enter_ftruncate", false, ""},
	// Writes the probe cannot copy, flagged instead of missed.
	{"mmap/mmap", "enter_mmap", "sys_enter_mmap", false, ""},
	{"io_uring/setup", "exit_io_uring_setup", "sys_exit_io_uring_setup", true, ""}, // CONFIG_IO_URING
	{"io_uring/enter", "enter_io_uring_enter", "sys_enter_io_uring_enter", true, ""},
	// A read-only shared mapping made writable later (bpf_find_vma: 5.17+).
	{"mmap/mprotect", "enter_mprotect", "sys_enter_mprotect", true, ""},
	// Descriptor lifetime across processes: fork copies the parent's tracked entries to
	// the child, the last thread's exit forgets them (bpf_loop: 5.17+). Without them a
	// child writing through an inherited descriptor is missed.
	{"fork/inherit", "fork_inherit", "sched_process_fork", true, "raw_tp"},
	{"exit/forget", "exit_forget", "sched_process_exit", true, "raw_tp"},
	// Descriptor copies inherit tracking.
	{"dup/dup", "enter_dup", "sys_enter_dup", false, ""},
	{"dup/dup2", "enter_dup3", "sys_enter_dup2", true, ""}, // not on arm64
	{"dup/dup3", "enter_dup3", "sys_enter_dup3", false, ""},
	{"dup/fcntl", "enter_fcntl", "sys_enter_fcntl", false, ""},
	{"dup/dup_exit", "exit_dup", "sys_exit_dup", false, ""},
	{"dup/dup2_exit", "exit_dup", "sys_exit_dup2", true, ""},
	{"dup/dup3_exit", "exit_dup", "sys_exit_dup3", false, ""},
	{"dup/fcntl_exit", "exit_dup", "sys_exit_fcntl", false, ""},
}

// Load loads the BPF objects and attaches every hook it can. A hook that
// fails to attach is logged and reported by Status; Load fails only when
// the openat or write hook is missing, since nothing works without them.
func Load(cfg Config, log *slog.Logger) (*Probe, error) {
	if log == nil {
		log = slog.Default()
	}
	log = log.With("probe", "filewrite")
	if cfg.MaxCapture == 0 {
		cfg.MaxCapture = DefaultMaxCapture
	}
	if cfg.MaxCapture > MaxCaptureLimit {
		return nil, fmt.Errorf("filewrite: MaxCapture %d exceeds limit %d", cfg.MaxCapture, MaxCaptureLimit)
	}
	if cfg.RingBytes == 0 {
		cfg.RingBytes = DefaultRingBytes
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("remove memlock rlimit: %w", err)
	}
	spec, err := loadFilewrite()
	if err != nil {
		return nil, fmt.Errorf("load filewrite BPF spec: %w", err)
	}
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, fmt.Errorf("count possible CPUs: %w", err)
	}
	spec.Maps["events"].MaxEntries = kernel.RingSize(cfg.RingBytes)
	spec.Maps["write_scratch"].MaxEntries = uint32(ncpu)
	for name, v := range map[string]uint32{"ward_ignore_tgid": cfg.IgnoreTGID, "max_capture": cfg.MaxCapture} {
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("set %s: %w", name, err)
		}
	}
	// Syscall tracepoints are classic tracepoints: they need tracefs.
	if err := kernel.EnsureTracefs(log); err != nil {
		return nil, fmt.Errorf("filewrite: %w", err)
	}
	loader, err := kernel.NewLoader(spec, log)
	if err != nil {
		return nil, fmt.Errorf("filewrite: %w", err)
	}
	p := &Probe{
		log:      log,
		nextID:   1,
		byKey:    make(map[filewriteWatchKey]uint32),
		byPath:   make(map[string]filewriteWatchKey),
		idPaths:  make(map[uint32]string),
		prefixes: make(map[uint32][]uint64),
	}
	for _, h := range hooks {
		hk := []kernel.Hook{{Kind: "tracepoint", Program: h.prog, Group: "syscalls", Event: h.event}}
		if h.kind != "" {
			hk = []kernel.Hook{{Kind: h.kind, Program: h.prog, Event: h.event}}
		}
		if fast, ok := fasterVariant[h.prog]; ok && !cfg.PlainPrograms {
			hk = append([]kernel.Hook{{Kind: "tracepoint", Program: fast, Group: "syscalls", Event: h.event}}, hk...)
		}
		var st Status
		if h.optional {
			st = loader.AttachOptional(h.name, hk...)
		} else {
			st = loader.AttachFirst(h.name, hk...)
		}
		p.status = append(p.status, st)
		if !st.Attached && (h.name == "open/openat" || h.name == "write/write") {
			loader.Close()
			return nil, fmt.Errorf("filewrite: required hook %s: %w", h.name, st.Err)
		}
	}
	if p.ring, err = kernel.OpenRing(loader); err != nil {
		loader.Close()
		return nil, fmt.Errorf("filewrite: %w", err)
	}
	return p, nil
}

// KernelDev converts a stat(2) st_dev (userspace new_encode_dev layout) to
// the in-kernel dev_t layout of super_block.s_dev (MAJOR<<20 | MINOR), which
// is what the BPF side reads while walking dentries.
func KernelDev(statDev uint64) uint32 {
	return unix.Major(statDev)<<20 | unix.Minor(statDev)&(1<<20-1)
}

// Watch starts reporting writes to regular files anywhere below dir
// (recursively, across mounts inside it). Files already open for writing
// are not picked up; only opens after Watch are. Watching the same
// directory (or another path to it) again returns the same id.
//
// Known limit: on btrfs subvolumes stat(2) reports an anonymous device that
// differs from the superblock's s_dev, so such directories never match.
func (p *Probe) Watch(dir string) (uint32, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return 0, fmt.Errorf("watch %q: %w", dir, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(abs, &st); err != nil {
		return 0, fmt.Errorf("watch %q: %w", abs, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return 0, fmt.Errorf("watch %q: not a directory", abs)
	}
	key := filewriteWatchKey{Dev: KernelDev(st.Dev), Ino: st.Ino}

	var id uint32
	err = p.ring.Maps(func(l *kernel.Loader) error {
		p.mu.Lock()
		defer p.mu.Unlock()
		if known, ok := p.byKey[key]; ok {
			p.byPath[abs] = key
			id = known
			return p.addPrefixes(l, id, abs)
		}
		id = p.nextID
		if err := l.Map("watched").Update(&key, &id, ebpf.UpdateNoExist); err != nil {
			return fmt.Errorf("watch %q: add to kernel map: %w", abs, err)
		}
		p.nextID++
		p.byKey[key] = id
		p.byPath[abs] = key
		p.idPaths[id] = abs
		p.log.Debug("watching", "dir", abs, "id", id, "dev", key.Dev, "ino", key.Ino)
		return p.addPrefixes(l, id, abs)
	})
	if errors.Is(err, os.ErrClosed) {
		return 0, ErrClosed
	}
	return id, err
}

// Unwatch stops reporting for dir, including writes through descriptors
// that were opened under it before.
func (p *Probe) Unwatch(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("unwatch %q: %w", dir, err)
	}
	err = p.ring.Maps(func(l *kernel.Loader) error {
		p.mu.Lock()
		defer p.mu.Unlock()
		key, ok := p.byPath[abs]
		if !ok {
			return fmt.Errorf("unwatch %q: not watched", abs)
		}
		id := p.byKey[key]
		for path, k := range p.byPath {
			if k == key {
				delete(p.byPath, path)
			}
		}
		delete(p.byKey, key)
		if err := l.Map("watched").Delete(&key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("unwatch %q: remove from kernel map: %w", abs, err)
		}
		for _, h := range p.prefixes[id] {
			if err := l.Map("watch_prefix").Delete(&h); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("unwatch %q: remove path prefix: %w", abs, err)
			}
		}
		delete(p.prefixes, id)
		return untrack(l, id)
	})
	if errors.Is(err, os.ErrClosed) {
		return ErrClosed
	}
	return err
}

// addPrefixes registers the watched directory's path, as given and with symlinks
// resolved, for the kernel's match of absolute rename destinations. Callers hold p.mu.
func (p *Probe) addPrefixes(l *kernel.Loader, id uint32, abs string) error {
	paths := []string{abs}
	if real, err := filepath.EvalSymlinks(abs); err == nil && real != abs {
		paths = append(paths, real)
	}
	for _, path := range paths {
		h := PathHash(path)
		if slices.Contains(p.prefixes[id], h) {
			continue
		}
		if err := l.Map("watch_prefix").Update(&h, &id, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("watch %q: add path prefix: %w", path, err)
		}
		p.prefixes[id] = append(p.prefixes[id], h)
	}
	return nil
}

// PathHash is the 64-bit FNV-1a of a cleaned absolute path, as the kernel computes it
// over each directory prefix of an absolute rename destination.
func PathHash(path string) uint64 {
	h := uint64(0xcbf29ce484222325)
	for i := 0; i < len(path); i++ {
		h ^= uint64(path[i])
		h *= 0x100000001b3
	}
	return h
}

// WatchDir returns the directory a watch id was registered for (also after Unwatch, for
// records still in flight).
func (p *Probe) WatchDir(id uint32) (string, bool) { return p.watchPath(id) }

// untrack drops tracked descriptors of one watch id from the kernel map.
func untrack(l *kernel.Loader, id uint32) error {
	m := l.Map("tracked")
	var (
		key   uint64
		val   filewriteTrackedFd
		stale []uint64
	)
	it := m.Iterate()
	for it.Next(&key, &val) {
		if val.WatchId == id {
			stale = append(stale, key)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate tracked descriptors: %w", err)
	}
	// Zeroed, not deleted: the kernel deletes an entry with watch id 0 at its next use
	// and lowers its fd_hot count, which user space cannot do atomically.
	for _, k := range stale {
		if err := m.Lookup(&k, &val); err != nil {
			continue // gone meanwhile
		}
		val.WatchId = 0
		if err := m.Update(&k, &val, ebpf.UpdateExist); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("untrack descriptor: %w", err)
		}
	}
	return nil
}

// Status reports, per hook, whether it is attached.
func (p *Probe) Status() []Status { return slices.Clone(p.status) }

// Next blocks until the next record and returns ErrClosed after Close. A
// malformed record yields an error wrapping ErrMalformed; the caller may
// keep reading.
func (p *Probe) Next() (Record, error) {
	b, err := p.ring.Read()
	if err != nil {
		if errors.Is(err, os.ErrClosed) {
			return nil, ErrClosed
		}
		return nil, fmt.Errorf("read filewrite ring buffer: %w", err)
	}
	return decode(b, p.watchPath, &p.clock)
}

func (p *Probe) watchPath(id uint32) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s, ok := p.idPaths[id]
	return s, ok
}

// Drops returns the in-kernel drop counters summed over CPUs.
func (p *Probe) Drops() (map[string]uint64, error) {
	d, err := p.ring.Drops()
	if errors.Is(err, os.ErrClosed) {
		return nil, ErrClosed
	}
	return d, err
}

// Close detaches all hooks and unblocks Next.
func (p *Probe) Close() error { return p.ring.Close() }

// Record layouts, mirrored from filewrite.bpf.c and checked against the
// bpf2go types in filewrite_test.go.
const (
	evOpen  = 1
	evWrite = 2
	evClose = 3

	openHeaderLen  = 72
	writeHeaderLen = 64
	closeLen       = 40
	nameSlot       = 256 // NAME_MAX + NUL, one path component per slot
	maxNameSlots   = 33  // file name + MAX_DEPTH ancestors

	writeFlagTruncated  = 1 << 0
	writeFlagIovLimit   = 1 << 1
	writeFlagReadFailed = 1 << 2

	pathFlagTruncated = 1 << 0
	pathFlagUntracked = 1 << 1

	evPathOp        = 4
	evFdOp          = 5
	pathOpHeaderLen = 72
	pathName        = 512 // bytes of each user path argument copied
	baseDepth       = 24  // name slots per base directory walk
	pathOpLen       = pathOpHeaderLen + 2*pathName + 2*baseDepth*nameSlot
	fdOpLen         = 56

	pathOpBaseWatched    = 1 << 0
	pathOpPrefix         = 1 << 1
	pathOpUnresolved     = 1 << 2
	pathOpNameTruncated  = 1 << 3
	pathOpOldBaseWatched = 1 << 4
	pathOpOldBaseRoot    = 1 << 5
	pathOpPathTruncated  = 1 << 6
)

var le = binary.LittleEndian

func decode(b []byte, watchPath func(uint32) (string, bool), clock *kernel.Clock) (Record, error) {
	if len(b) < 4 {
		return nil, fmt.Errorf("%w: %d bytes, need at least 4", ErrMalformed, len(b))
	}
	switch typ := le.Uint32(b); typ {
	case evOpen:
		if len(b) < openHeaderLen {
			return nil, fmt.Errorf("%w: open record is %d bytes, want >= %d", ErrMalformed, len(b), openHeaderLen)
		}
		n := int(le.Uint16(b[52:]))
		if n == 0 || n%nameSlot != 0 || n > maxNameSlots*nameSlot || openHeaderLen+n > len(b) {
			return nil, fmt.Errorf("%w: open path length %d invalid for a %d-byte record", ErrMalformed, n, len(b))
		}
		pflags := le.Uint16(b[54:])
		o := Open{
			Time:          clock.Time(le.Uint64(b[8:])),
			PID:           le.Uint32(b[4:]),
			TID:           le.Uint32(b[16:]),
			UID:           le.Uint32(b[20:]),
			GID:           le.Uint32(b[24:]),
			FD:            int32(le.Uint32(b[28:])),
			Dev:           le.Uint32(b[32:]),
			WatchID:       le.Uint32(b[36:]),
			Ino:           le.Uint64(b[40:]),
			Flags:         le.Uint32(b[48:]),
			Comm:          kernel.CString(b[56:72]),
			RelPath:       relPath(b[openHeaderLen : openHeaderLen+n]),
			PathTruncated: pflags&pathFlagTruncated != 0,
			Untracked:     pflags&pathFlagUntracked != 0,
		}
		if o.RelPath == "" {
			return nil, fmt.Errorf("%w: open record without a file name", ErrMalformed)
		}
		if dir, ok := watchPath(o.WatchID); ok {
			o.Path = filepath.Join(dir, o.RelPath)
			o.WatchDir = dir
		}
		return o, nil
	case evWrite:
		if len(b) < writeHeaderLen {
			return nil, fmt.Errorf("%w: write record is %d bytes, want >= %d", ErrMalformed, len(b), writeHeaderLen)
		}
		n := le.Uint32(b[56:])
		if n > MaxCaptureLimit || uint64(writeHeaderLen)+uint64(n) > uint64(len(b)) {
			return nil, fmt.Errorf("%w: write captured length %d exceeds record (%d bytes)", ErrMalformed, n, len(b))
		}
		flags := le.Uint16(b[30:])
		return Write{
			Time:       clock.Time(le.Uint64(b[8:])),
			PID:        le.Uint32(b[4:]),
			TID:        le.Uint32(b[16:]),
			FD:         int32(le.Uint32(b[20:])),
			Dev:        le.Uint32(b[24:]),
			Kind:       WriteKind(le.Uint16(b[28:])),
			Ino:        le.Uint64(b[32:]),
			Offset:     int64(le.Uint64(b[40:])),
			Requested:  le.Uint64(b[48:]),
			WatchID:    le.Uint32(b[60:]),
			Data:       b[writeHeaderLen : writeHeaderLen+n : writeHeaderLen+n],
			Truncated:  flags&(writeFlagTruncated|writeFlagIovLimit) != 0,
			ReadFailed: flags&writeFlagReadFailed != 0,
		}, nil
	case evClose:
		if len(b) < closeLen {
			return nil, fmt.Errorf("%w: close record is %d bytes, want %d", ErrMalformed, len(b), closeLen)
		}
		return Close{
			Time:    clock.Time(le.Uint64(b[8:])),
			PID:     le.Uint32(b[4:]),
			TID:     le.Uint32(b[16:]),
			FD:      int32(le.Uint32(b[20:])),
			Dev:     le.Uint32(b[24:]),
			WatchID: le.Uint32(b[28:]),
			Ino:     le.Uint64(b[32:]),
		}, nil
	case evPathOp:
		return decodePathOp(b, watchPath, clock)
	case evFdOp:
		if len(b) < fdOpLen {
			return nil, fmt.Errorf("%w: fdop record is %d bytes, want %d", ErrMalformed, len(b), fdOpLen)
		}
		op := FdOpKind(le.Uint16(b[40:]))
		if op < OpFtruncate || op > OpMprotectShared {
			return nil, fmt.Errorf("%w: unknown fdop %d", ErrMalformed, op)
		}
		return FdOp{
			Time:    clock.Time(le.Uint64(b[8:])),
			PID:     le.Uint32(b[4:]),
			TID:     le.Uint32(b[16:]),
			FD:      int32(le.Uint32(b[20:])),
			Dev:     le.Uint32(b[24:]),
			WatchID: le.Uint32(b[28:]),
			Ino:     le.Uint64(b[32:]),
			Op:      op,
			Prot:    le.Uint32(b[44:]),
			Arg:     int64(le.Uint64(b[48:])),
		}, nil
	default:
		return nil, fmt.Errorf("%w: unknown record type %d", ErrMalformed, typ)
	}
}

// decodePathOp rebuilds the destination (and source) paths of a rename or truncate from
// the names the kernel copied: the user string, and the base directory's names up to a
// watched directory or the root.
func decodePathOp(b []byte, watchPath func(uint32) (string, bool), clock *kernel.Clock) (Record, error) {
	if len(b) < pathOpLen {
		return nil, fmt.Errorf("%w: pathop record is %d bytes, want %d", ErrMalformed, len(b), pathOpLen)
	}
	op := PathOpKind(le.Uint16(b[32:]))
	if op != OpRename && op != OpTruncate {
		return nil, fmt.Errorf("%w: unknown path op %d", ErrMalformed, op)
	}
	flags := le.Uint16(b[34:])
	newDepth, oldDepth := int(le.Uint16(b[36:])), int(le.Uint16(b[38:]))
	if newDepth > baseDepth || oldDepth > baseDepth {
		return nil, fmt.Errorf("%w: pathop base depth %d/%d over %d", ErrMalformed, newDepth, oldDepth, baseDepth)
	}
	newName := kernel.CString(b[pathOpHeaderLen : pathOpHeaderLen+pathName])
	oldName := kernel.CString(b[pathOpHeaderLen+pathName : pathOpHeaderLen+2*pathName])
	if newName == "" {
		return nil, fmt.Errorf("%w: pathop without a destination", ErrMalformed)
	}
	newBase := b[pathOpHeaderLen+2*pathName:]
	oldBase := newBase[baseDepth*nameSlot:]
	o := PathOp{
		Time:          clock.Time(le.Uint64(b[8:])),
		PID:           le.Uint32(b[4:]),
		TID:           le.Uint32(b[16:]),
		UID:           le.Uint32(b[20:]),
		GID:           le.Uint32(b[24:]),
		Op:            op,
		RenameFlags:   le.Uint32(b[44:]),
		Length:        int64(le.Uint64(b[48:])),
		Comm:          kernel.CString(b[56:72]),
		NameTruncated: flags&pathOpNameTruncated != 0,
		PathTruncated: flags&pathOpPathTruncated != 0,
	}
	wid := le.Uint32(b[28:])
	switch {
	case flags&pathOpPrefix != 0:
		if !filepath.IsAbs(newName) {
			return nil, fmt.Errorf("%w: prefix-matched destination %q is not absolute", ErrMalformed, newName)
		}
		o.Path = filepath.Clean(newName)
		o.WatchID = wid
	case flags&pathOpBaseWatched != 0:
		o.WatchID = wid
		if dir, ok := watchPath(wid); ok {
			o.Path = filepath.Join(dir, relPath(newBase[:newDepth*nameSlot]), newName)
		}
	case flags&pathOpUnresolved != 0:
		o.Unresolved = true
		o.Path = filepath.Join("/", relPath(newBase[:newDepth*nameSlot]), newName)
	default:
		return nil, fmt.Errorf("%w: pathop without a resolution flag (%#x)", ErrMalformed, flags)
	}
	if o.WatchID != 0 {
		o.WatchDir, _ = watchPath(o.WatchID)
	}
	switch {
	case oldName == "" || filepath.IsAbs(oldName):
		o.OldPath = filepath.Clean(oldName)
		if oldName == "" {
			o.OldPath = ""
		}
	case flags&pathOpOldBaseWatched != 0:
		o.OldPath = oldName
		if dir, ok := watchPath(le.Uint32(b[40:])); ok {
			o.OldPath = filepath.Join(dir, relPath(oldBase[:oldDepth*nameSlot]), oldName)
		}
	case flags&pathOpOldBaseRoot != 0:
		o.OldPath = filepath.Join("/", relPath(oldBase[:oldDepth*nameSlot]), oldName)
	default:
		o.OldPath = oldName
	}
	return o, nil
}

// relPath rebuilds "a/b/file" from the kernel's fixed 256-byte name slots,
// file name first. Empty slots (mount crossings) are skipped, and so are
// components that could escape the watched dir (".", "..", or containing
// '/'): a dentry walk never yields them, only a corrupt record would.
func relPath(slots []byte) string {
	out := make([]string, 0, len(slots)/nameSlot)
	for i := len(slots)/nameSlot - 1; i >= 0; i-- {
		c := kernel.CString(slots[i*nameSlot : (i+1)*nameSlot])
		if c == "" || c == "." || c == ".." || strings.Contains(c, "/") {
			continue
		}
		out = append(out, c)
	}
	return strings.Join(out, "/")
}
