// Package process reports process executions, forks and exits from the kernel.
//
// The DLP agent uses these records to attribute file writes (reported by
// bpf/filewrite with a pid only) to a command line, a user and a container,
// and to drop per-process state when a process exits.
package process

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/cilium/ebpf/rlimit"

	"github.com/ward-dlp/ward/bpf/internal/kernel"
)

// Status reports how one capability ("exec", "exit", "fork") is attached.
type Status = kernel.Status

// ErrClosed is returned by Next once the probe is closed.
var ErrClosed = fmt.Errorf("process probe closed: %w", os.ErrClosed)

// Config tunes the probe. The zero value is usable.
type Config struct {
	// RingBytes is the ring buffer size (rounded up to a power of two).
	// Default 4 MiB: exec records are 1.6 KiB, so ~2600 execs of burst.
	RingBytes uint32
	// IgnoreTGID suppresses records about this process (normally the
	// agent's own pid). 0 disables the filter.
	IgnoreTGID uint32

	// onlyKind restricts hooks to one kind ("raw_tp", "tracepoint") so
	// tests can exercise the fallbacks on a kernel that has tp_btf.
	onlyKind string
}

// DefaultRingBytes is used when Config.RingBytes is 0.
const DefaultRingBytes = 4 << 20

// Record is an Exec, an Exit or a Fork.
type Record interface{ isRecord() }

// Exec is one successful execve/execveat.
type Exec struct {
	Time      time.Time // when the exec completed
	PID       uint32    // thread-group id
	PPID      uint32    // real parent's thread-group id
	UID, GID  uint32
	Comm      string // task comm after exec (basename of the binary, 15 bytes max)
	Filename  string // path passed to execve, as the kernel resolved it for bprm
	Args      []string
	StartTime time.Time // process start (task start_boottime): with PID, a reuse-proof process key
	CgroupID  uint64    // cgroup v2 id, to map to a container
	// ExeDev (kernel dev_t encoding) and ExeIno name the executable file the process runs
	// (0 when the kernel's mm->exe_file could not be read): with Filename, a key to cache
	// the resolved path by instead of reading /proc/<pid>/exe on every exec.
	ExeDev uint32
	ExeIno uint64

	ArgsTruncated     bool // argv was longer than the 1024-byte capture bound
	FilenameTruncated bool
	ArgsReadFailed    bool // argv could not be read (Args is empty)
}

// Exit is the exit of a thread-group leader, i.e. of a process.
type Exit struct {
	Time      time.Time
	PID       uint32
	PPID      uint32
	Comm      string
	StartTime time.Time
	CgroupID  uint64
	// Status is the raw wait(2) status; ExitCode and Signal decode it.
	Status   uint32
	ExitCode int // valid when Signal == 0
	Signal   int // terminating signal, 0 for a normal exit
}

// Fork is a fork (clone without CLONE_THREAD) that created a process. Threads are filtered
// in the kernel. The child runs its parent's program until it execs, so it inherits what is
// known of the parent.
type Fork struct {
	Time time.Time
	// PID is the child's pid (its thread-group id: it is a new process).
	PID uint32
	// ParentTGID and ParentPID are the forking process and thread.
	ParentTGID, ParentPID uint32
	UID, GID              uint32
	Comm                  string // the parent's comm, which the child shares until exec
	// StartTime is the child's start; zero when the classic-tracepoint fallback could not
	// reach the child's task (user space then reads it from /proc).
	StartTime       time.Time
	ParentStartTime time.Time // the forking process's start: with ParentTGID, a reuse-proof key
	CgroupID        uint64
}

func (Exec) isRecord() {}
func (Fork) isRecord() {}
func (Exit) isRecord() {}

// Probe is a loaded and attached process probe.
type Probe struct {
	log    *slog.Logger
	ring   *kernel.Ring
	clock  kernel.Clock
	status []Status
}

// Load loads the BPF objects and attaches exec, exit and fork, each through
// the best hook the kernel accepts (tp_btf, then raw_tp, then tracepoint). It
// fails only when no capability could be attached.
func Load(cfg Config, log *slog.Logger) (*Probe, error) {
	if log == nil {
		log = slog.Default()
	}
	log = log.With("probe", "process")
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("remove memlock rlimit: %w", err)
	}
	spec, err := loadProcess()
	if err != nil {
		return nil, fmt.Errorf("load process BPF spec: %w", err)
	}
	ring := cfg.RingBytes
	if ring == 0 {
		ring = DefaultRingBytes
	}
	spec.Maps["events"].MaxEntries = kernel.RingSize(ring)
	if err := spec.Variables["ward_ignore_tgid"].Set(cfg.IgnoreTGID); err != nil {
		return nil, fmt.Errorf("set ward_ignore_tgid: %w", err)
	}

	loader, err := kernel.NewLoader(spec, log)
	if err != nil {
		return nil, fmt.Errorf("process probe: %w", err)
	}
	p := &Probe{log: log}

	if err := kernel.EnsureTracefs(log); err != nil {
		// Only the last-resort tracepoint hooks need it.
		log.Warn("tracefs unavailable; classic tracepoint fallback disabled", "err", err)
	}
	for _, c := range []struct{ name, prog string }{{"exec", "exec"}, {"exit", "exit"}, {"fork", "fork"}} {
		event := "sched_process_" + c.name
		var hooks []kernel.Hook
		for _, h := range []kernel.Hook{
			{Kind: "tp_btf", Program: c.prog + "_btf", Event: event},
			{Kind: "raw_tp", Program: c.prog + "_raw", Event: event},
			{Kind: "tracepoint", Program: c.prog + "_tp", Group: "sched", Event: event},
		} {
			if cfg.onlyKind == "" || cfg.onlyKind == h.Kind {
				hooks = append(hooks, h)
			}
		}
		p.status = append(p.status, loader.AttachFirst(c.name, hooks...))
	}
	var errs []error
	for _, s := range p.status {
		if s.Attached {
			errs = nil
			break
		}
		errs = append(errs, s.Err)
	}
	if errs != nil {
		loader.Close()
		return nil, fmt.Errorf("process probe: no capability attached: %w", errors.Join(errs...))
	}

	if p.ring, err = kernel.OpenRing(loader); err != nil {
		loader.Close()
		return nil, fmt.Errorf("process probe: %w", err)
	}
	return p, nil
}

// Status reports, per capability, whether and how it is attached.
func (p *Probe) Status() []Status {
	return append([]Status(nil), p.status...)
}

// Next blocks until the next record. It returns ErrClosed after Close. A
// malformed record yields a decode error; the caller may keep reading.
func (p *Probe) Next() (Record, error) {
	b, err := p.ring.Read()
	if err != nil {
		if errors.Is(err, os.ErrClosed) {
			return nil, ErrClosed
		}
		return nil, fmt.Errorf("read process ring buffer: %w", err)
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

// Close detaches the probes and unblocks Next.
func (p *Probe) Close() error { return p.ring.Close() }

// Record layout, mirrored from process.bpf.c (checked in process_test.go
// against the bpf2go-generated types).
const (
	evExec = 1
	evExit = 2
	evFork = 3

	execHeaderLen   = 80
	execFilenameOff = 80
	execFilenameMax = 512
	execArgsOff     = execFilenameOff + execFilenameMax
	execArgsMax     = 1024
	execLen         = execArgsOff + execArgsMax

	exitLen = 56

	forkLen = 72

	flagArgsTruncated     = 1 << 0
	flagFilenameTruncated = 1 << 1
	flagArgsReadFailed    = 1 << 2
)

var le = binary.LittleEndian

// ErrMalformed wraps every decode failure.
var ErrMalformed = errors.New("malformed process record")

func decode(b []byte, clock *kernel.Clock) (Record, error) {
	if len(b) < 4 {
		return nil, fmt.Errorf("%w: %d bytes, need at least 4", ErrMalformed, len(b))
	}
	switch typ := le.Uint32(b); typ {
	case evExec:
		if len(b) < execLen {
			return nil, fmt.Errorf("%w: exec record is %d bytes, want %d", ErrMalformed, len(b), execLen)
		}
		fnLen := int(le.Uint16(b[64:]))
		argsLen := int(le.Uint16(b[66:]))
		if fnLen > execFilenameMax || argsLen > execArgsMax {
			return nil, fmt.Errorf("%w: exec lengths out of range (filename %d, args %d)", ErrMalformed, fnLen, argsLen)
		}
		flags := le.Uint32(b[28:])
		return Exec{
			Time:              clock.Time(le.Uint64(b[8:])),
			PID:               le.Uint32(b[4:]),
			PPID:              le.Uint32(b[16:]),
			UID:               le.Uint32(b[20:]),
			GID:               le.Uint32(b[24:]),
			StartTime:         clock.Time(le.Uint64(b[32:])),
			CgroupID:          le.Uint64(b[40:]),
			Comm:              kernel.CString(b[48:64]),
			ExeDev:            le.Uint32(b[68:]),
			ExeIno:            le.Uint64(b[72:]),
			Filename:          string(b[execFilenameOff : execFilenameOff+fnLen]),
			Args:              splitArgs(b[execArgsOff : execArgsOff+argsLen]),
			ArgsTruncated:     flags&flagArgsTruncated != 0,
			FilenameTruncated: flags&flagFilenameTruncated != 0,
			ArgsReadFailed:    flags&flagArgsReadFailed != 0,
		}, nil
	case evExit:
		if len(b) < exitLen {
			return nil, fmt.Errorf("%w: exit record is %d bytes, want %d", ErrMalformed, len(b), exitLen)
		}
		status := le.Uint32(b[20:])
		return Exit{
			Time:      clock.Time(le.Uint64(b[8:])),
			PID:       le.Uint32(b[4:]),
			PPID:      le.Uint32(b[16:]),
			Status:    status,
			ExitCode:  int(status>>8) & 0xff,
			Signal:    int(status & 0x7f),
			StartTime: clock.Time(le.Uint64(b[24:])),
			CgroupID:  le.Uint64(b[32:]),
			Comm:      kernel.CString(b[40:56]),
		}, nil
	case evFork:
		if len(b) < forkLen {
			return nil, fmt.Errorf("%w: fork record is %d bytes, want %d", ErrMalformed, len(b), forkLen)
		}
		return Fork{
			Time:            clock.Time(le.Uint64(b[8:])),
			PID:             le.Uint32(b[4:]),
			ParentTGID:      le.Uint32(b[16:]),
			ParentPID:       le.Uint32(b[20:]),
			UID:             le.Uint32(b[24:]),
			GID:             le.Uint32(b[28:]),
			ParentStartTime: clock.Time(le.Uint64(b[40:])),
			CgroupID:        le.Uint64(b[48:]),
			Comm:            kernel.CString(b[56:72]),
			StartTime:       clock.Time(le.Uint64(b[32:])), // 0 stays the zero time
		}, nil
	default:
		return nil, fmt.Errorf("%w: unknown record type %d", ErrMalformed, typ)
	}
}

// splitArgs splits the NUL-separated argv block. Only the terminator of the
// last argument is dropped, so empty arguments survive; a truncated final
// argument has no terminator and is kept as is.
func splitArgs(b []byte) []string {
	if len(b) > 0 && b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	if len(b) == 0 {
		return nil
	}
	return strings.Split(string(b), "\x00")
}
