// Package kernel holds the loader plumbing shared by Ward's BPF capabilities:
// per-program loading with hook fallback, tracefs mounting, drop counters
// and boot-clock conversion. It is internal to bpf/ so nothing outside the
// BPF layer depends on how programs are loaded.
package kernel

import (
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// DropReasons names the indexes of the ward_drops per-CPU array, in the
// order of enum ward_drop_reason in bpf/include/ward_common.h.
var DropReasons = [...]string{
	"ringbuf_full",
	"map_full",
	"capture_truncated",
	"read_failed",
	"path_too_deep",
	"path_too_long",
	"args_truncated",
}

// Status reports whether one capability is attached and through which hook.
// Loaders report one Status per capability so callers can degrade precisely
// (e.g. "writev capture is off on this kernel") instead of all-or-nothing.
type Status struct {
	Name     string // capability, e.g. "exec" or "write/pwrite64"
	Hook     string // hook that attached ("tp_btf/sched_process_exec"), or the last one tried
	Program  string // the program attached there, when several variants exist for one hook
	Attached bool
	Err      error // why no hook attached; nil when Attached
}

func (s Status) String() string {
	if s.Attached {
		return fmt.Sprintf("%s: attached via %s (%s)", s.Name, s.Hook, s.Program)
	}
	return fmt.Sprintf("%s: NOT attached (%s): %v", s.Name, s.Hook, s.Err)
}

// Hook is one way of attaching a program. Kind is "tp_btf", "raw_tp",
// "tracepoint" or "cgroup"; Group/Event name the tracepoint (Group is unused
// for tp_btf/raw_tp). For "cgroup", Group is the cgroup v2 directory, Event
// names the attach point for reporting (e.g. "connect4") and Attach is its
// attach type.
type Hook struct {
	Kind    string
	Program string
	Group   string
	Event   string
	Attach  ebpf.AttachType
}

func (h Hook) String() string {
	switch h.Kind {
	case "tracepoint":
		return fmt.Sprintf("tracepoint/%s/%s", h.Group, h.Event)
	case "cgroup":
		return fmt.Sprintf("cgroup/%s@%s", h.Event, h.Group)
	}
	return h.Kind + "/" + h.Event
}

// Loader loads programs of one collection individually, so that a program
// the running kernel rejects (e.g. tp_btf without BTF) only disables its own
// capability. All programs share the maps created by NewLoader.
type Loader struct {
	spec  *ebpf.CollectionSpec
	maps  map[string]*ebpf.Map
	log   *slog.Logger
	progs map[string]*ebpf.Collection
	errs  map[string]error
	links []link.Link
}

// NewLoader creates every non-data map of spec once. The caller must have
// set variables and map sizes on spec already.
func NewLoader(spec *ebpf.CollectionSpec, log *slog.Logger) (*Loader, error) {
	l := &Loader{
		spec:  spec,
		maps:  make(map[string]*ebpf.Map),
		log:   log,
		progs: make(map[string]*ebpf.Collection),
		errs:  make(map[string]error),
	}
	for name, ms := range spec.Maps {
		if isDataSection(name) {
			continue // .rodata/.bss: per program, constants are identical
		}
		m, err := ebpf.NewMap(ms)
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("create map %q: %w", name, err)
		}
		l.maps[name] = m
	}
	return l, nil
}

func isDataSection(name string) bool {
	return len(name) > 0 && name[0] == '.'
}

// Map returns a shared map by its C name.
func (l *Loader) Map(name string) *ebpf.Map { return l.maps[name] }

// program loads (once) the named program in a collection of its own.
func (l *Loader) program(name string) (*ebpf.Program, error) {
	if c, ok := l.progs[name]; ok {
		return c.Programs[name], nil
	}
	if err, ok := l.errs[name]; ok {
		return nil, err
	}
	cs := l.spec.Copy()
	for n := range cs.Programs {
		if n != name {
			delete(cs.Programs, n)
		}
	}
	if _, ok := cs.Programs[name]; !ok {
		return nil, fmt.Errorf("program %q not in object", name)
	}
	c, err := ebpf.NewCollectionWithOptions(cs, ebpf.CollectionOptions{MapReplacements: l.maps})
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			// Keep the tail of the log: that is where the rejection is.
			err = fmt.Errorf("load program %s: %w (verifier: %.2000s)", name, err, fmt.Sprintf("%+v", ve))
		} else {
			err = fmt.Errorf("load program %s: %w", name, err)
		}
		l.errs[name] = err
		return nil, err
	}
	l.progs[name] = c
	return c.Programs[name], nil
}

// Program loads (once) the named program for a caller that attaches it itself: uprobes,
// whose target files come and go while the probe runs. The caller owns those links and
// must close them before the loader.
func (l *Loader) Program(name string) (*ebpf.Program, error) { return l.program(name) }

func (l *Loader) attachOne(h Hook) (link.Link, error) {
	p, err := l.program(h.Program)
	if err != nil {
		return nil, err
	}
	switch h.Kind {
	case "tp_btf":
		return link.AttachTracing(link.TracingOptions{Program: p, AttachType: ebpf.AttachTraceRawTp})
	case "raw_tp":
		return link.AttachRawTracepoint(link.RawTracepointOptions{Name: h.Event, Program: p})
	case "tracepoint":
		return link.Tracepoint(h.Group, h.Event, p, nil)
	case "cgroup":
		return link.AttachCgroup(link.CgroupOptions{Path: h.Group, Attach: h.Attach, Program: p})
	default:
		return nil, fmt.Errorf("unknown hook kind %q", h.Kind)
	}
}

// AttachFirst tries hooks in order and keeps the first that attaches. The
// probe is done by attaching, not by feature detection, because feature
// probes lie on patched/backported kernels. Failures are logged once here.
func (l *Loader) AttachFirst(capability string, hooks ...Hook) Status {
	return l.attach(capability, false, hooks)
}

// AttachOptional is AttachFirst for hooks that legitimately do not exist on
// some architectures or kernels (e.g. sys_enter_open on arm64): failure is
// logged at info level instead of as a warning.
func (l *Loader) AttachOptional(capability string, hooks ...Hook) Status {
	return l.attach(capability, true, hooks)
}

func (l *Loader) attach(capability string, optional bool, hooks []Hook) Status {
	st := Status{Name: capability}
	var errs []error
	for _, h := range hooks {
		st.Hook, st.Program = h.String(), h.Program
		lk, err := l.attachOne(h)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", h, err))
			continue
		}
		l.links = append(l.links, lk) // keep a reference: a GC'd link detaches
		st.Attached = true
		if len(errs) > 0 {
			l.log.Info("bpf hook fell back", "capability", capability, "hook", h.String(), "skipped", errors.Join(errs...))
		}
		return st
	}
	st.Err = errors.Join(errs...)
	if optional {
		l.log.Info("optional bpf hook unavailable", "capability", capability, "err", st.Err)
	} else {
		l.log.Warn("bpf capability unavailable", "capability", capability, "err", st.Err)
	}
	return st
}

// Close detaches all links, then closes programs and maps.
func (l *Loader) Close() error {
	var errs []error
	for _, lk := range l.links {
		errs = append(errs, lk.Close())
	}
	l.links = nil
	for _, c := range l.progs {
		c.Close()
	}
	l.progs = map[string]*ebpf.Collection{}
	for _, m := range l.maps {
		errs = append(errs, m.Close())
	}
	l.maps = map[string]*ebpf.Map{}
	return errors.Join(errs...)
}

// Drops sums the per-CPU ward_drops array by reason name.
func Drops(m *ebpf.Map) (map[string]uint64, error) {
	if m == nil {
		return nil, errors.New("drop counter map not loaded")
	}
	out := make(map[string]uint64, len(DropReasons))
	for i, name := range DropReasons {
		var perCPU []uint64
		if err := m.Lookup(uint32(i), &perCPU); err != nil {
			return nil, fmt.Errorf("read drop counter %s: %w", name, err)
		}
		var sum uint64
		for _, v := range perCPU {
			sum += v
		}
		out[name] = sum
	}
	return out, nil
}

var tracefsMu sync.Mutex

// EnsureTracefs mounts tracefs at /sys/kernel/tracing when no tracefs is
// reachable. Classic tracepoints need it; fresh hosts and minimal containers
// often lack the mount. It must run before the first tracepoint attach,
// because cilium/ebpf caches the tracefs lookup.
func EnsureTracefs(log *slog.Logger) error {
	tracefsMu.Lock()
	defer tracefsMu.Unlock()
	for _, p := range []string{"/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events"} {
		if _, err := os.Stat(p); err == nil {
			return nil
		}
	}
	if err := unix.Mount("tracefs", "/sys/kernel/tracing", "tracefs", 0, ""); err != nil {
		return fmt.Errorf("mount tracefs at /sys/kernel/tracing: %w", err)
	}
	log.Info("mounted tracefs", "path", "/sys/kernel/tracing")
	return nil
}

// RingSize rounds n up to a power of two of at least one page, as
// BPF_MAP_TYPE_RINGBUF requires.
func RingSize(n uint32) uint32 {
	page := uint32(os.Getpagesize())
	if n < page {
		return page
	}
	if n&(n-1) == 0 {
		return n
	}
	return 1 << (32 - bits.LeadingZeros32(n))
}

// SortStatus orders statuses by name for stable reporting.
func SortStatus(s []Status) {
	sort.Slice(s, func(i, j int) bool { return s[i].Name < s[j].Name })
}

// Clock converts bpf_ktime_get_boot_ns timestamps to wall time. BPF uses the
// boot clock because it is monotonic and keeps counting across suspend, so
// ordering is exact; the wall offset (CLOCK_REALTIME - CLOCK_BOOTTIME) is
// re-sampled at most once a second so NTP steps are followed.
type Clock struct {
	offset  atomic.Int64 // realtime - boottime, ns
	sampled atomic.Int64 // boottime of last sample, ns
}

const clockResample = int64(time.Second)

func clockNs(id int32) int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(id, &ts); err != nil {
		return 0
	}
	return ts.Nano()
}

func (c *Clock) sample() {
	// Bracket the realtime read between two boottime reads and keep the
	// midpoint: the error is then half the read latency.
	b1 := clockNs(unix.CLOCK_BOOTTIME)
	r := clockNs(unix.CLOCK_REALTIME)
	b2 := clockNs(unix.CLOCK_BOOTTIME)
	c.offset.Store(r - (b1 + (b2-b1)/2))
	c.sampled.Store(b2)
}

// Time converts a boot-clock timestamp in ns to wall time. Zero stays zero.
func (c *Clock) Time(bootNs uint64) time.Time {
	if bootNs == 0 {
		return time.Time{}
	}
	// Decide from the record's own timestamp whether the offset is stale:
	// reading CLOCK_BOOTTIME here would be a real system call per record
	// (x/sys/unix does not use the vDSO), which profiles showed to be a third
	// of the ring-buffer reader's CPU. Records are recent, so a record more
	// than clockResample past the last sample means the sample is that old.
	if s := c.sampled.Load(); s == 0 || int64(bootNs)-s > clockResample {
		c.sample()
	}
	return time.Unix(0, int64(bootNs)+c.offset.Load())
}

// CString returns b up to its first NUL.
func CString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}
