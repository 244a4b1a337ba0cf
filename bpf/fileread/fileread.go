// Package fileread reports which process opens a file known to hold regulated data.
//
// The agent tags a file's inode after a finding was made about it (42 CFR Part 2 records,
// PHI); from then on every open of that inode for reading is reported with the process and
// user that opened it. The access log answers "who read this record", and the agent's
// lineage table uses it to carry the data's taint into the process, so what the process
// writes or sends next is attributed to the source even when the bytes no longer look like
// it (renamed, re-encoded, encrypted).
package fileread

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/ward-dlp/ward/bpf/internal/kernel"
)

// Status reports how one capability is attached.
type Status = kernel.Status

// ErrClosed is returned by Next once the probe is closed.
var ErrClosed = fmt.Errorf("file read probe closed: %w", os.ErrClosed)

// ErrMalformed wraps every decode failure.
var ErrMalformed = errors.New("malformed file read record")

// Config tunes the probe. The zero value is usable.
type Config struct {
	// RingBytes is the ring buffer size (rounded up to a power of two). Default 1 MiB:
	// records are 88 bytes and rate limited per process and file.
	RingBytes uint32
	// MaxTagged bounds the tagged inodes the kernel holds. Default 65536.
	MaxTagged uint32
	// EmitInterval is the least time between two reports of one process opening one
	// tagged file (a reader in a loop is reported once per interval). Default 1 minute.
	EmitInterval time.Duration
	// IgnoreTGID suppresses records about this process (the agent, which re-reads files
	// to classify them). 0 disables the filter.
	IgnoreTGID uint32
	// PlainPrograms skips the BTF variants and loads the programs kernels without
	// bpf_rdonly_cast use (for tests of that path, and for troubleshooting).
	PlainPrograms bool
}

// Defaults used when a Config field is zero.
const (
	DefaultRingBytes    = 1 << 20
	DefaultMaxTagged    = 65536
	DefaultEmitInterval = time.Minute
)

// Read is one open of a tagged file for reading.
type Read struct {
	Time      time.Time
	TID       uint32 // thread that opened
	PID       uint32 // thread-group id
	PPID      uint32
	UID, GID  uint32
	Dev       uint32 // kernel s_dev encoding (see KernelDev)
	Ino       uint64
	Class     uint32 // the value the file was tagged with
	Flags     uint32 // the file's open flags (O_ACCMODE bits say read-only or read-write)
	StartTime time.Time
	CgroupID  uint64
	Comm      string
}

// ReadWrite reports whether the file was opened for reading and writing.
func (r Read) ReadWrite() bool { return r.Flags&unix.O_ACCMODE == unix.O_RDWR }

// Probe is a loaded and attached file read probe.
type Probe struct {
	log    *slog.Logger
	ring   *kernel.Ring
	clock  kernel.Clock
	status []Status
}

// KernelDev converts a stat(2) st_dev to the kernel's s_dev encoding, the form the probe
// keys inodes by.
func KernelDev(statDev uint64) uint32 {
	return unix.Major(statDev)<<20 | unix.Minor(statDev)&(1<<20-1)
}

// Load loads and attaches the probe at the exit of open, openat and openat2 (classic
// tracepoints: the result descriptor is all it needs). It fails only when neither openat
// nor openat2 attached; open(2) does not exist on every architecture.
func Load(cfg Config, log *slog.Logger) (*Probe, error) {
	if log == nil {
		log = slog.Default()
	}
	log = log.With("probe", "fileread")
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("remove memlock rlimit: %w", err)
	}
	spec, err := loadFileread()
	if err != nil {
		return nil, fmt.Errorf("load fileread BPF spec: %w", err)
	}
	ring := cfg.RingBytes
	if ring == 0 {
		ring = DefaultRingBytes
	}
	spec.Maps["events"].MaxEntries = kernel.RingSize(ring)
	if cfg.MaxTagged > 0 {
		spec.Maps["tagged"].MaxEntries = cfg.MaxTagged
	}
	interval := cfg.EmitInterval
	if interval <= 0 {
		interval = DefaultEmitInterval
	}
	if err := spec.Variables["emit_interval_ns"].Set(uint64(interval.Nanoseconds())); err != nil {
		return nil, fmt.Errorf("set emit_interval_ns: %w", err)
	}
	if err := spec.Variables["ward_ignore_tgid"].Set(cfg.IgnoreTGID); err != nil {
		return nil, fmt.Errorf("set ward_ignore_tgid: %w", err)
	}
	if err := kernel.EnsureTracefs(log); err != nil {
		return nil, fmt.Errorf("fileread probe needs tracefs: %w", err)
	}
	loader, err := kernel.NewLoader(spec, log)
	if err != nil {
		return nil, fmt.Errorf("fileread probe: %w", err)
	}
	p := &Probe{log: log}
	for _, c := range []struct {
		name, prog, event string
		optional          bool
	}{
		{"openat", "exit_openat", "sys_exit_openat", false},
		{"openat2", "exit_openat2", "sys_exit_openat2", true},
		{"open", "exit_open", "sys_exit_open", true},
	} {
		// The BTF variant (fewer helper calls per open) first; kernels without
		// bpf_rdonly_cast reject it and the plain program attaches (logged).
		hs := []kernel.Hook{
			{Kind: "tracepoint", Program: "exit_open_btf", Group: "syscalls", Event: c.event},
			{Kind: "tracepoint", Program: c.prog, Group: "syscalls", Event: c.event},
		}
		if cfg.PlainPrograms {
			hs = hs[1:]
		}
		if c.optional {
			p.status = append(p.status, loader.AttachOptional(c.name, hs...))
		} else {
			p.status = append(p.status, loader.AttachFirst(c.name, hs...))
		}
	}
	if !p.status[0].Attached && !p.status[1].Attached {
		loader.Close()
		return nil, fmt.Errorf("fileread probe: no capability attached: %w", errors.Join(p.status[0].Err, p.status[1].Err))
	}
	if p.ring, err = kernel.OpenRing(loader); err != nil {
		loader.Close()
		return nil, fmt.Errorf("fileread probe: %w", err)
	}
	return p, nil
}

// Status reports, per capability, whether and how it is attached.
func (p *Probe) Status() []Status { return append([]Status(nil), p.status...) }

type inodeKey struct {
	Dev uint32
	_   uint32
	Ino uint64
}

// Tag makes opens of the inode reported from now on, with class as the record's Class.
// dev is in the kernel's encoding (KernelDev). Tagging an inode again updates its class.
func (p *Probe) Tag(dev uint32, ino uint64, class uint32) error {
	err := p.ring.Maps(func(l *kernel.Loader) error {
		if err := l.Map("tagged").Update(inodeKey{Dev: dev, Ino: ino}, class, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("tag inode %d:%d: %w", dev, ino, err)
		}
		return l.Map("tag_gate").Update(uint32(0), uint32(1), ebpf.UpdateAny)
	})
	if errors.Is(err, os.ErrClosed) {
		return ErrClosed
	}
	return err
}

// Untag stops reporting opens of the inode. Untagging an inode that is not tagged is not
// an error.
func (p *Probe) Untag(dev uint32, ino uint64) error {
	err := p.ring.Maps(func(l *kernel.Loader) error {
		err := l.Map("tagged").Delete(inodeKey{Dev: dev, Ino: ino})
		if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("untag inode %d:%d: %w", dev, ino, err)
		}
		// Close the gate when the last tag went, so an empty set costs one lookup again.
		var k inodeKey
		if err := l.Map("tagged").NextKey(nil, &k); errors.Is(err, ebpf.ErrKeyNotExist) {
			return l.Map("tag_gate").Update(uint32(0), uint32(0), ebpf.UpdateAny)
		}
		return nil
	})
	if errors.Is(err, os.ErrClosed) {
		return ErrClosed
	}
	return err
}

// Next blocks until the next record. It returns ErrClosed after Close. A malformed record
// yields a decode error; the caller may keep reading.
func (p *Probe) Next() (Read, error) {
	b, err := p.ring.Read()
	if err != nil {
		if errors.Is(err, os.ErrClosed) {
			return Read{}, ErrClosed
		}
		return Read{}, fmt.Errorf("read fileread ring buffer: %w", err)
	}
	return decode(b, &p.clock)
}

// Drops returns the in-kernel drop counters summed over CPUs.
func (p *Probe) Drops() (map[string]uint64, error) {
	d, err := p.ring.Drops()
	if errors.Is(err, os.ErrClosed) {
		return nil, ErrClosed
	}
	return d, err
}

// RingFill reports the bytes waiting in the ring buffer and its size.
func (p *Probe) RingFill() (used, size int) { return p.ring.Fill() }

// Close detaches the probe and unblocks Next.
func (p *Probe) Close() error { return p.ring.Close() }

// Record layout, mirrored from fileread.bpf.c (checked in fileread_test.go against the
// bpf2go-generated type).
const (
	evRead  = 1
	readLen = 88
)

var le = binary.LittleEndian

func decode(b []byte, clock *kernel.Clock) (Read, error) {
	if len(b) < 4 {
		return Read{}, fmt.Errorf("%w: %d bytes, need at least 4", ErrMalformed, len(b))
	}
	if typ := le.Uint32(b); typ != evRead {
		return Read{}, fmt.Errorf("%w: unknown record type %d", ErrMalformed, typ)
	}
	if len(b) < readLen {
		return Read{}, fmt.Errorf("%w: read record is %d bytes, want %d", ErrMalformed, len(b), readLen)
	}
	return Read{
		TID:       le.Uint32(b[4:]),
		PID:       le.Uint32(b[8:]),
		UID:       le.Uint32(b[12:]),
		GID:       le.Uint32(b[16:]),
		Dev:       le.Uint32(b[20:]),
		Ino:       le.Uint64(b[24:]),
		Time:      clock.Time(le.Uint64(b[32:])),
		StartTime: clock.Time(le.Uint64(b[40:])),
		PPID:      le.Uint32(b[48:]),
		Class:     le.Uint32(b[52:]),
		Flags:     le.Uint32(b[56:]),
		CgroupID:  le.Uint64(b[64:]),
		Comm:      kernel.CString(b[72:88]),
	}, nil
}
