//go:build amd64

// Package benchfloor holds benchmark-only BPF programs that the agent never loads: empty
// programs for syscall tracepoints (the floor any syscall-tracepoint sensor pays before
// doing work of its own) and single sys_enter/sys_exit dispatchers running Ward's
// unwatched-write filter, to compare one tracepoint per syscall against one program for
// all syscalls. The sensor benchmarks (bpf/filewrite, scripts/bench-sensors.sh) attach
// them next to the real probes in the same run.
package benchfloor

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"

	"github.com/ward-dlp/ward/bpf/internal/kernel"
)

// Dispatcher names one way of running a program on every syscall.
type Dispatcher string

// Dispatchers.
const (
	// RawEmpty is raw_tp/sys_enter and raw_tp/sys_exit returning at once: the floor of
	// any dispatcher.
	RawEmpty Dispatcher = "raw-empty"
	// RawInline is a raw_tp dispatcher with the write filter inlined behind a switch.
	RawInline Dispatcher = "raw-inline"
	// BTFInline is the same on tp_btf, which reads pt_regs without bpf_probe_read.
	BTFInline Dispatcher = "btf-inline"
	// BTFTail is a tp_btf dispatcher tail-calling per-syscall programs from a prog array
	// (Falco modern_bpf style).
	BTFTail Dispatcher = "btf-tail"
)

// Dispatchers lists every dispatcher variant.
var Dispatchers = []Dispatcher{RawEmpty, RawInline, BTFInline, BTFTail}

// Syscall numbers (x86-64) the tail-call dispatcher has programs for: the ones filewrite
// hooks with a descriptor-keyed filter at entry, and with a per-thread lookup at exit.
var (
	tailEnter = []uint32{1, 18, 20, 296, 328, 326, 40, 275, 3, 77, 9, 426, 32, 33, 292, 72}
	tailExit  = []uint32{326, 40, 275, 82, 264, 316, 76, 32, 33, 292, 72}
)

// Set is a group of attached benchmark programs. Close detaches them.
type Set struct {
	coll  *ebpf.Collection
	links []link.Link // referenced until Close: a collected link detaches
}

func load(ignoreTGID uint32, keep func(name string) bool) (*ebpf.Collection, error) {
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("remove memlock rlimit: %w", err)
	}
	spec, err := loadBenchfloor()
	if err != nil {
		return nil, fmt.Errorf("load benchfloor spec: %w", err)
	}
	if err := spec.Variables["ignore_tgid"].Set(ignoreTGID); err != nil {
		return nil, fmt.Errorf("set ignore_tgid: %w", err)
	}
	for name := range spec.Programs {
		if !keep(name) {
			delete(spec.Programs, name)
		}
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		return nil, fmt.Errorf("load benchfloor programs: %w", err)
	}
	return coll, nil
}

// AttachEmpty attaches the empty program to each named tracepoint of the syscalls group
// ("sys_enter_write", "sys_exit_openat"...). A name the kernel lacks is an error: the
// caller lists what exists with SyscallEvents.
func AttachEmpty(events []string) (*Set, error) {
	if err := kernel.EnsureTracefs(slog.Default()); err != nil {
		return nil, err
	}
	coll, err := load(0, func(n string) bool { return n == "empty" })
	if err != nil {
		return nil, err
	}
	s := &Set{coll: coll}
	for _, ev := range events {
		l, err := link.Tracepoint("syscalls", ev, coll.Programs["empty"], nil)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("attach empty program to syscalls/%s: %w", ev, err)
		}
		s.links = append(s.links, l)
	}
	return s, nil
}

// AttachDispatcher attaches one dispatcher variant to sys_enter and sys_exit. Processes
// with tgid ignoreTGID are skipped before the lookup, as filewrite skips the agent.
func AttachDispatcher(d Dispatcher, ignoreTGID uint32) (*Set, error) {
	var enter, exit string
	var progs []string
	switch d {
	case RawEmpty:
		enter, exit = "raw_empty_enter", "raw_empty_exit"
	case RawInline:
		enter, exit = "raw_inline_enter", "raw_inline_exit"
	case BTFInline:
		enter, exit = "btf_inline_enter", "btf_inline_exit"
	case BTFTail:
		enter, exit = "btf_tail_enter", "btf_tail_exit"
		progs = []string{"btf_tail_fd_filter", "btf_tail_pending_exit"}
	default:
		return nil, fmt.Errorf("unknown dispatcher %q", d)
	}
	progs = append(progs, enter, exit)
	coll, err := load(ignoreTGID, func(n string) bool {
		for _, p := range progs {
			if p == n {
				return true
			}
		}
		return false
	})
	if err != nil {
		return nil, err
	}
	s := &Set{coll: coll}
	if d == BTFTail {
		for _, t := range []struct {
			m    string
			prog string
			nrs  []uint32
		}{{"enter_calls", "btf_tail_fd_filter", tailEnter}, {"exit_calls", "btf_tail_pending_exit", tailExit}} {
			for _, nr := range t.nrs {
				if err := coll.Maps[t.m].Put(nr, coll.Programs[t.prog]); err != nil {
					s.Close()
					return nil, fmt.Errorf("install tail call %s[%d]: %w", t.m, nr, err)
				}
			}
		}
	}
	for _, p := range []struct{ prog, tp string }{{enter, "sys_enter"}, {exit, "sys_exit"}} {
		var l link.Link
		if strings.HasPrefix(p.prog, "raw_") {
			l, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: p.tp, Program: coll.Programs[p.prog]})
		} else {
			l, err = link.AttachTracing(link.TracingOptions{Program: coll.Programs[p.prog], AttachType: ebpf.AttachTraceRawTp})
		}
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("attach %s to %s: %w", p.prog, p.tp, err)
		}
		s.links = append(s.links, l)
	}
	return s, nil
}

// Track marks (tgid, fd) as a watched descriptor in a dispatcher's map, so its writes hit.
func (s *Set) Track(tgid uint32, fd int) error {
	m := s.coll.Maps["tracked"]
	key := uint64(tgid)<<32 | uint64(uint32(fd))
	val := make([]byte, m.ValueSize())
	if err := m.Put(key, val); err != nil {
		return fmt.Errorf("track fd %d of %d: %w", fd, tgid, err)
	}
	return nil
}

// Hits returns how many syscalls found their descriptor in the tracked map.
func (s *Set) Hits() (uint64, error) {
	var perCPU []uint64
	if err := s.coll.Maps["hits"].Lookup(uint32(0), &perCPU); err != nil {
		return 0, fmt.Errorf("read hits: %w", err)
	}
	var n uint64
	for _, v := range perCPU {
		n += v
	}
	return n, nil
}

// Programs returns the loaded programs by name, for run-time statistics.
func (s *Set) Programs() map[string]*ebpf.Program { return s.coll.Programs }

// Links returns how many attachments the set holds.
func (s *Set) Links() int { return len(s.links) }

// Close detaches every program and frees the objects. Links are closed concurrently:
// detaching a syscall tracepoint waits for an RCU grace period, and concurrent waits
// share one, so a set of hundreds detaches in about the time of a few.
func (s *Set) Close() error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, l := range s.links {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.Close(); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	s.links = nil
	if s.coll != nil {
		s.coll.Close()
		s.coll = nil
	}
	return errors.Join(errs...)
}

// SyscallEvents lists the syscalls group's tracepoints this kernel has, sorted
// ("sys_enter_accept", ..., "sys_exit_writev").
func SyscallEvents() ([]string, error) {
	if err := kernel.EnsureTracefs(slog.Default()); err != nil {
		return nil, err
	}
	var dir string
	for _, d := range []string{"/sys/kernel/tracing/events/syscalls", "/sys/kernel/debug/tracing/events/syscalls"} {
		if _, err := os.Stat(d); err == nil {
			dir = d
			break
		}
	}
	if dir == "" {
		return nil, errors.New("no syscalls tracepoint group in tracefs (CONFIG_FTRACE_SYSCALLS off?)")
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list syscall tracepoints: %w", err)
	}
	var out []string
	for _, e := range ents {
		if _, err := os.Stat(filepath.Join(dir, e.Name(), "id")); err == nil {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out, nil
}

// SyscallHooks counts the BPF attachments on syscall tracepoints in the whole system
// (perf-event links on syscalls:sys_{enter,exit}_*, raw_tp and tp_btf links on
// sys_enter/sys_exit), by name: "tracepoint/sys_enter_write", "raw_tp/sys_enter" (tp_btf
// attached through raw_tracepoint_open lists as raw_tp too). Any of them moves every syscall of every
// process to the slow entry path, so a "without" measurement taken while one exists (a
// forgotten agent, another test) is not without. Attachments made through the perf ioctl
// instead of a BPF link are not seen.
func SyscallHooks() ([]string, error) {
	var (
		out    []string
		kernel *btf.Spec
	)
	it := new(link.Iterator)
	defer it.Close()
	for it.Next() {
		info, err := it.Link.Info()
		if err != nil {
			continue // the link went away between listing and reading it
		}
		switch info.Type {
		case link.PerfEventType:
			if tp := info.PerfEvent().Tracepoint(); tp != nil &&
				(strings.HasPrefix(tp.Tracepoint, "sys_enter_") || strings.HasPrefix(tp.Tracepoint, "sys_exit_")) {
				out = append(out, "tracepoint/"+tp.Tracepoint)
			}
		case link.RawTracepointType:
			if rt := info.RawTracepoint(); rt != nil && (rt.Name == "sys_enter" || rt.Name == "sys_exit") {
				out = append(out, "raw_tp/"+rt.Name)
			}
		case link.TracingType:
			tr := info.Tracing()
			if tr == nil || ebpf.AttachType(tr.AttachType) != ebpf.AttachTraceRawTp {
				continue
			}
			if kernel == nil {
				if kernel, err = btf.LoadKernelSpec(); err != nil {
					return nil, fmt.Errorf("load kernel BTF to name tp_btf links: %w", err)
				}
			}
			if typ, err := kernel.TypeByID(btf.TypeID(tr.TargetBtfId)); err == nil &&
				(typ.TypeName() == "btf_trace_sys_enter" || typ.TypeName() == "btf_trace_sys_exit") {
				out = append(out, "tp_btf/"+strings.TrimPrefix(typ.TypeName(), "btf_trace_"))
			}
		}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list BPF links: %w", err)
	}
	sort.Strings(out)
	return out, nil
}
