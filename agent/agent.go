// Package agent wires the agent's pipeline: kernel probes → decode → enrich (processes,
// users) → per-file reassembly → classify → policy → event → spool → ship. Each stage is its
// own package; this one only connects them, owns their goroutines and reports their health.
package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/ward-dlp/ward/agent/config"
	"github.com/ward-dlp/ward/agent/event"
	"github.com/ward-dlp/ward/agent/flows"
	"github.com/ward-dlp/ward/agent/identity"
	"github.com/ward-dlp/ward/agent/metrics"
	"github.com/ward-dlp/ward/agent/policysync"
	"github.com/ward-dlp/ward/agent/proc"
	"github.com/ward-dlp/ward/agent/ship"
	"github.com/ward-dlp/ward/agent/spool"
	"github.com/ward-dlp/ward/agent/stream"
	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/bpf/filewrite"
	capprobe "github.com/ward-dlp/ward/bpf/netcap"
	"github.com/ward-dlp/ward/bpf/netflow"
	"github.com/ward-dlp/ward/bpf/process"
	"github.com/ward-dlp/ward/classifiers"
	"github.com/ward-dlp/ward/classifiers/engine"
)

// Options are what Run needs besides a context.
type Options struct {
	Config  config.Config
	Version string
	Log     *slog.Logger
}

// IdentityDir and SpoolDir place the agent's state under its state dir.
func IdentityDir(stateDir string) string { return filepath.Join(stateDir, "identity") }

// SpoolDir is where the spool lives under the state dir.
func SpoolDir(stateDir string) string { return filepath.Join(stateDir, "spool") }

// agent holds the running pipeline's parts.
type agent struct {
	cfg     config.Config
	log     *slog.Logger
	policy  *policysync.Syncer
	groups  *groupCache
	build   *event.Builder
	spool   *spool.Spool
	engine  *engine.Engine
	procs   *proc.Table
	files   *filewrite.Probe
	execs   *process.Probe
	nets    *netflow.Probe  // nil unless network.enabled and the probes loaded
	tls     *tlsSensor      // nil unless network.tls_plaintext.enabled and the probe loaded
	caps    *capprobe.Probe // nil unless network.capture.enabled and the probe loaded
	netView netView         // capture/enforcement counters, copied out by trackFlows
	shipper *shipper
	watches *watcher
	// lin is the access and lineage sensor (nil when lineage.enabled is off); degraded is
	// the fsnotify fallback (nil while eBPF file capture works); metrics is nil unless
	// telemetry.metrics_addr is set.
	lin      *lineageState
	degraded *degradedState
	metrics  *metrics.Metrics
	// hostName is host.name for policy rules.
	hostName string

	// counters of user-space stages, reported in health events.
	mu        sync.Mutex
	counters  map[string]uint64
	asmStats  stream.Stats
	flowStats flows.Stats
}

type shipper = ship.Shipper

// Run starts the agent and blocks until ctx is cancelled or a stage fails for good.
func Run(ctx context.Context, opts Options) error {
	cfg, log := opts.Config, opts.Log
	if log == nil {
		log = slog.Default()
	}
	if cfg.Capture.ForceFsnotify {
		forceNoBPF(&cfg)
	}
	id, err := identity.Load(IdentityDir(cfg.StateDir), identity.WithLogger(log), identity.WithServerName(cfg.ServerName))
	if err != nil {
		return err
	}
	if cfg.Collector != "" && cfg.Collector != id.Collector() {
		log.Warn("configured collector differs from the enrolled one; using the enrolled one",
			"configured", cfg.Collector, "enrolled", id.Collector())
	}
	sp, err := spool.Open(SpoolDir(cfg.StateDir), spool.Options{MaxBytes: cfg.Spool.MaxBytes, Logger: log})
	if err != nil {
		return fmt.Errorf("open spool: %w", err)
	}
	defer func() {
		if err := sp.Close(); err != nil {
			log.Error("closing spool", "err", err)
		}
	}()
	cc := cfg.Classifiers
	copts, err := classifiers.FileOptions{
		Definitions: cc.Definitions, Enable: cc.Enable, Disable: cc.Disable,
		EDMIndex: cc.EDMIndex, EDMKeyFile: cc.EDMKeyFile,
		FingerprintIndex: cc.FingerprintIndex, FingerprintKeyFile: cc.FingerprintKeyFile,
	}.Load()
	if err != nil {
		return fmt.Errorf("classifiers: %w", err)
	}
	eng, err := classifiers.New(engine.Config{FingerprintKey: id.FingerprintKey()}, copts)
	if err != nil {
		return err
	}
	host := event.HostInfo(opts.Version)
	a := &agent{
		cfg: cfg, log: log, spool: sp, engine: eng, groups: newGroupCache(), hostName: host.GetHostname(),
		build:    event.NewBuilder(id.AgentID(), host),
		procs:    proc.New(proc.Config{}, proc.NewUsers(5*time.Minute), log),
		counters: make(map[string]uint64),
	}
	// The policy in force: the last good signed bundle from the state dir, else the built-in
	// pack; newer bundles arrive over the shipper's connection. A refusal spools a Health
	// event at once.
	a.policy, err = policysync.New(policysync.Config{
		Dir: filepath.Join(cfg.StateDir, "policy"), Keys: cfg.Policy.Keys, Group: cfg.Policy.Group,
		PollInterval: cfg.Policy.PollInterval, Logger: log,
		OnChange: func() { a.append(a.build.Health(a.health(), time.Now())) },
	})
	if err != nil {
		return err
	}
	// The policy's targets are watched too; targets of a bundle applied later take effect at
	// the next start (the watcher's set is fixed while it runs).
	for _, d := range a.policy.Policy().Bundle().Watch {
		if !slices.Contains(cfg.Watch, d) {
			cfg.Watch = append(cfg.Watch, d)
		}
	}
	a.cfg.Watch = cfg.Watch
	sh, err := ship.New(ship.Config{Spool: sp, Identity: id, Logger: log, Fallbacks: cfg.FallbackCollectors,
		Companions: []func(context.Context, wardv1.AgentServiceClient){func(ctx context.Context, c wardv1.AgentServiceClient) { _ = a.policy.Run(ctx, c) }}})
	if err != nil {
		return err
	}
	a.shipper = sh
	if err := a.procs.Seed(ctx); err != nil {
		log.Warn("could not seed the process table from /proc; attribution of older processes degrades", "err", err)
	}
	self := uint32(os.Getpid())
	fileErr := errForced
	if !cfg.Capture.ForceFsnotify {
		if a.execs, err = process.Load(process.Config{RingBytes: cfg.Capture.RingBytes, IgnoreTGID: self}, log); err != nil {
			log.Error("process probes unavailable: processes are read from /proc on demand", "err", err)
		}
		if a.files, fileErr = filewrite.Load(filewrite.Config{MaxCapture: cfg.Capture.MaxWriteBytes, RingBytes: cfg.Capture.RingBytes, IgnoreTGID: self}, log); fileErr != nil {
			log.Error("file write probes unavailable: falling back to fsnotify", "err", fileErr)
		}
	}
	if cfg.Network.Enabled {
		if a.nets, err = netflow.Load(netflow.Config{IgnoreTGID: self}, log); err != nil {
			log.Error("network flow probes unavailable: no flow events on this host", "err", err)
		}
	}
	a.startTLS(self)
	a.startCapture(self)
	if err := a.startLineage(self, !cfg.Capture.ForceFsnotify); err != nil {
		return err
	}
	defer a.closeProbes()
	if a.files != nil {
		a.watches = newWatcher(a.files, cfg.Targets, cfg.Watch, log)
	} else if err := a.startDegraded(fileErr); err != nil {
		return err
	}
	log.Info("agent running", "agent_id", id.AgentID(), "collector", id.Collector(), "watch", cfg.Watch,
		"process_probes", a.execs != nil, "file_probes", a.files != nil, "network_probes", a.nets != nil, "policy", a.policy.Policy().String())

	g, gctx := errgroup.WithContext(ctx)
	contents := make(chan stream.Content, 256)
	exits := make(chan uint32, 1024)
	if err := a.startMetrics(g, gctx); err != nil {
		return err
	}
	g.Go(func() error { return sh.Run(gctx) })
	a.runLineage(g, gctx)
	a.runDegraded(g, gctx)
	if a.execs != nil {
		g.Go(func() error { return a.readProcesses(gctx, exits) })
	}
	var records chan filewrite.Record
	if a.files != nil {
		records = make(chan filewrite.Record, 1024)
		g.Go(func() error { return a.readFiles(gctx, records) })
		g.Go(func() error { return a.watches.run(gctx) })
	}
	if a.nets != nil {
		netRecords := make(chan netflow.Record, 1024)
		g.Go(func() error { return a.readFlows(gctx, netRecords) })
		capRecords := a.readCaptures(g, gctx) // nil without capture
		g.Go(func() error { return a.trackFlows(gctx, netRecords, capRecords) })
	}
	if a.tls != nil {
		g.Go(func() error { return a.tls.run(gctx) })
	}
	g.Go(func() error { return a.assemble(gctx, records, exits, contents) })
	// Workers spend much of their time waiting for the spool's fsync of findings (shared
	// across concurrent appends), so more of them than cores keeps the CPU busy and lets
	// group commit batch.
	workers := min(4*runtime.GOMAXPROCS(0), 16)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		g.Go(func() error {
			defer wg.Done()
			return a.classifyLoop(gctx, contents)
		})
	}
	g.Go(func() error { return a.healthLoop(gctx) })
	g.Go(func() error {
		<-gctx.Done()
		a.closeProbes() // unblocks the ring buffer readers
		return nil
	})
	err = g.Wait()
	if errors.Is(err, context.Canceled) || ctx.Err() != nil {
		log.Info("agent stopped")
		return nil
	}
	return err
}

func (a *agent) closeProbes() {
	a.closeLineage()
	if a.files != nil {
		if err := a.files.Close(); err != nil {
			a.log.Warn("closing file probes", "err", err)
		}
	}
	if a.execs != nil {
		if err := a.execs.Close(); err != nil {
			a.log.Warn("closing process probes", "err", err)
		}
	}
	if a.nets != nil {
		if err := a.nets.Close(); err != nil {
			a.log.Warn("closing network flow probes", "err", err)
		}
	}
	if a.caps != nil {
		if err := a.caps.Close(); err != nil {
			a.log.Warn("closing packet capture probes", "err", err)
		}
	}
	if a.tls != nil {
		if err := a.tls.probe.Close(); err != nil {
			a.log.Warn("closing TLS plaintext probes", "err", err)
		}
	}
}

func (a *agent) count(name string, n uint64) {
	a.mu.Lock()
	a.counters[name] += n
	a.mu.Unlock()
}

// readProcesses keeps the process table current (forks insert children that inherit their
// parent's program until they exec) and forwards exits to reassembly.
func (a *agent) readProcesses(ctx context.Context, exits chan<- uint32) error {
	exes := newExePaths()
	for {
		r, err := a.execs.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, os.ErrClosed) {
				return nil
			}
			a.count("process.decode_error", 1)
			a.log.Debug("process record", "err", err)
			continue
		}
		switch r := r.(type) {
		case process.Exec:
			info := proc.Info{PID: r.PID, PPID: r.PPID, UID: r.UID, GID: r.GID, Exe: r.Filename,
				Args: r.Args, Comm: r.Comm, Start: r.StartTime, CgroupID: r.CgroupID,
				Truncated: r.ArgsTruncated || r.FilenameTruncated}
			if exe := exes.resolve(r); exe != "" {
				info.Exe = exe // resolved through symlinks and relative paths
			}
			a.procs.Exec(info)
			a.countProbeEvent("process")
			a.lineageExec(r.PID, r.PPID, r.StartTime)
			if a.tls != nil {
				a.tls.find.Exec(r.PID, info.Exe) // hook the TLS libraries it maps
			}
			if a.cfg.Telemetry.ProcessEvents {
				stored, _ := a.procs.Lookup(ctx, r.PID)
				a.append(a.build.Exec(stored, r.Time))
			}
		case process.Fork:
			child := a.procs.Fork(ctx, proc.Fork{PID: r.PID, ParentTGID: r.ParentTGID, UID: r.UID, GID: r.GID,
				CgroupID: r.CgroupID, Start: r.StartTime, At: r.Time})
			a.countProbeEvent("process")
			a.lineageExec(r.PID, r.ParentTGID, child.Start) // a child forked after a tainted read carries it
			if a.cfg.Telemetry.ProcessForks {
				a.append(a.build.Fork(child, r.Time))
			}
		case process.Exit:
			a.procs.Exit(r.PID, r.Time)
			a.countProbeEvent("process")
			a.lineageExit(r.PID, r.Time)
			if a.tls != nil {
				a.tls.find.Exit(r.PID)
				a.tls.pipe.Exit(r.PID) // classify its connections now
			}
			if a.cfg.Telemetry.ProcessEvents {
				info, _ := a.procs.Lookup(ctx, r.PID)
				a.append(a.build.Exit(info, int32(r.Status), r.Time))
			}
			select {
			case exits <- r.PID:
			case <-ctx.Done():
				return nil
			}
		}
	}
}

// readFiles moves decoded file records off the ring buffer as fast as possible.
func (a *agent) readFiles(ctx context.Context, out chan<- filewrite.Record) error {
	for {
		r, err := a.files.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, os.ErrClosed) {
				return nil
			}
			a.count("filewrite.decode_error", 1)
			a.log.Debug("file record", "err", err)
			continue
		}
		a.countProbeEvent("filewrite")
		select {
		case out <- r:
		case <-ctx.Done():
			return nil
		}
	}
}

// assemble owns the reassembly state: one goroutine, so records of one descriptor are
// applied in ring-buffer order without locks.
func (a *agent) assemble(ctx context.Context, records <-chan filewrite.Record, exits <-chan uint32, out chan<- stream.Content) error {
	asm := stream.New(stream.Config{
		MaxFileBytes: a.cfg.Capture.MaxFileBytes, MaxBufferedBytes: a.cfg.Capture.MaxBufferedBytes,
		MaxOpen: a.cfg.Capture.MaxOpenFiles, IdleFlush: a.cfg.Capture.IdleFlush,
	})
	tick := time.NewTicker(max(a.cfg.Capture.IdleFlush/4, 100*time.Millisecond))
	defer tick.Stop()
	emit := func(cs []stream.Content) bool {
		for _, c := range cs {
			select {
			case out <- c:
			case <-ctx.Done():
				return false
			}
		}
		return true
	}
	defer func() {
		// Classify what is still open so a shutdown does not swallow a finding, but do not
		// hold up the stop: this runs on a short deadline of its own.
		rest := asm.Flush()
		if len(rest) > 0 {
			a.log.Info("classifying open files at shutdown", "files", len(rest))
			for _, c := range rest {
				a.handleContent(context.Background(), c)
			}
		}
		close(out)
	}()
	for {
		var cs []stream.Content
		select {
		case <-ctx.Done():
			return nil
		case r := <-records:
			cs = a.applyRecord(asm, r)
		case pid := <-exits:
			cs = asm.Exit(pid, time.Now())
		case now := <-tick.C:
			cs = asm.Tick(now)
			a.procs.Sweep(now)
			a.mu.Lock()
			a.asmStats = asm.Stats()
			a.mu.Unlock()
		}
		if !emit(cs) {
			return nil
		}
	}
}

func (a *agent) applyRecord(asm *stream.Assembler, r filewrite.Record) []stream.Content {
	switch r := r.(type) {
	case filewrite.Open:
		if r.PathTruncated {
			a.count("filewrite.path_truncated", 1)
		}
		return asm.Open(stream.Key{TGID: r.PID, FD: r.FD}, stream.File{Path: r.Path, Device: uint64(r.Dev), Inode: r.Ino, WatchDir: r.WatchDir}, r.Time)
	case filewrite.Write:
		k := stream.Key{TGID: r.PID, FD: r.FD}
		f := stream.File{Device: uint64(r.Dev), Inode: r.Ino}
		if !asm.Has(k) {
			// The open record was lost or preceded an idle flush: name the file from /proc.
			f.Path, _ = os.Readlink("/proc/" + strconv.FormatUint(uint64(r.PID), 10) + "/fd/" + strconv.Itoa(int(r.FD)))
		}
		return asm.Write(k, f, r.Offset, r.Requested, r.Data, r.Time)
	case filewrite.PathOp, filewrite.FdOp:
		return a.applyEgress(asm, r)
	case filewrite.Close:
		if c, ok := asm.Close(stream.Key{TGID: r.PID, FD: r.FD}, r.Time); ok {
			return []stream.Content{c}
		}
	}
	return nil
}

func (a *agent) classifyLoop(ctx context.Context, in <-chan stream.Content) error {
	for c := range in {
		a.handleContent(ctx, c)
	}
	return nil
}

// handleContent classifies one reassembled run, applies policy and spools the events.
func (a *agent) handleContent(ctx context.Context, c stream.Content) {
	if c.File.Path == "" && c.File.Inode != 0 {
		if p, dir, ok := a.watches.nameByInode(c.File.Device, c.File.Inode); ok {
			c.File.Path = p
			if c.File.WatchDir == "" {
				c.File.WatchDir = dir
			}
			a.count("filewrite.named_by_inode", 1)
		} else {
			a.count("filewrite.unnamed", 1)
		}
	}
	if c.Reason == stream.Flagged {
		a.flagged(ctx, c)
		return
	}
	if c.Unobserved && !modifiedSince(c.File.Path, c.First) {
		return // opened for writing, closed untouched: nothing left the process
	}
	start := time.Now()
	var info proc.Info
	ok := c.Key.TGID == 0 // fsnotify fallback: no writer to look up (the events say so)
	if !ok {
		info, ok = a.procs.Lookup(ctx, c.Key.TGID)
	}
	if !ok {
		a.count("enrich.process_unknown", 1)
	}
	data, base, reread := c.Data, c.Base, false
	size := uint64(max(c.Base, 0)) + uint64(len(c.Data))
	if !c.Complete && a.cfg.Capture.MaxRereadBytes > 0 {
		b, st, err := rereadFile(c.File, a.cfg.Capture.MaxRereadBytes)
		switch {
		case err == nil:
			data, base, reread, size = b, 0, true, uint64(st)
			a.count("classify.reread", 1)
		default:
			// Deleted or replaced before we could read it: classify what the probe copied.
			a.count("classify.reread_failed", 1)
			a.log.Debug("re-read failed; classifying the captured part", "path", c.File.Path, "err", err)
		}
	}
	matches := a.engine.Classify(data)
	taint := a.taintOf(c.Key.TGID, info, c.Last)
	if len(taint) > 0 {
		matches = a.lineageMatches(matches, taint, c.Last)
	}
	findings := 0
	// Every write is decided, not only those with matches: some rules are about the file
	// itself (a recording written by a video app).
	pol := a.policy.Policy()
	in := a.fileInput(c, info, matches, size, data, pol)
	in.Lineage = lineageInput(taint)
	d := pol.Evaluate(in)
	if d.RuleID != "" {
		out := a.enforce(c, info, d)
		a.observeDecision(start, d, out.Taken)
		ev, err := a.build.Finding(c, info, size, reread, base, matches, d, out)
		if err == nil {
			a.annotate(ev, c)
			markUnattributed(ev, c)
			a.afterFinding(ev, c, taint, matches, pol)
		}
		if err == nil {
			a.append(ev)
			findings = 1
			a.log.Info("finding", "path", c.File.Path, "pid", c.Key.TGID, "exe", info.Exe, "user", info.User,
				"rule", d.RuleID, "action", d.Action.String(), "taken", out.Taken.String(), "policy_version", d.Version,
				"classes", in.ClassList())
		}
	}
	if a.cfg.Telemetry.FileActivity {
		ev := a.build.FileActivity(c, info, reread, findings)
		a.annotate(ev, c)
		markUnattributed(ev, c)
		a.append(ev)
	}
	if d.RuleID == "" {
		a.observeDecision(start, d, 0)
	}
}

// mtimeSlack absorbs the coarse clock the kernel stamps mtimes with (up to a scheduler
// tick behind the precise clock the probe's timestamps come from).
const mtimeSlack = 50 * time.Millisecond

// modifiedSince reports whether a file has content that was modified after a descriptor to it
// was opened: the sign that a write the probe cannot copy (copy_file_range, sendfile, splice,
// mmap, io_uring) put data there.
func modifiedSince(path string, opened time.Time) bool {
	var st unix.Stat_t
	if path == "" || unix.Lstat(path, &st) != nil || st.Size == 0 {
		return false
	}
	return !time.Unix(st.Mtim.Unix()).Before(opened.Add(-mtimeSlack))
}

// rereadFile reads a watched file back from disk, refusing it if the path now names a
// different file than the one written (renamed over, replaced by a symlink).
func rereadFile(f stream.File, limit int64) ([]byte, int64, error) {
	if f.Path == "" {
		return nil, 0, errors.New("no path")
	}
	fd, err := unix.Open(f.Path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("open %s: %w", f.Path, err)
	}
	file := os.NewFile(uintptr(fd), f.Path)
	defer file.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, 0, fmt.Errorf("stat %s: %w", f.Path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, 0, fmt.Errorf("%s is no longer a regular file", f.Path)
	}
	if st.Ino != f.Inode || (f.Device != 0 && uint64(filewrite.KernelDev(st.Dev)) != f.Device) {
		return nil, 0, fmt.Errorf("%s now names another file", f.Path)
	}
	b, err := io.ReadAll(io.LimitReader(file, limit))
	if err != nil {
		return nil, 0, fmt.Errorf("read %s: %w", f.Path, err)
	}
	return b, st.Size, nil
}

// append spools an event. The spool never blocks on the network; a failure here is a disk
// problem, logged and counted rather than stopping the pipeline.
func (a *agent) append(ev *wardv1.Event) {
	a.attachFlowTaint(ev)
	if _, err := a.spool.Append(ev); err != nil {
		a.count("spool.append_error", 1)
		a.log.Error("spool append failed", "kind", fmt.Sprintf("%T", ev.Payload), "err", err)
	}
}

// healthLoop reports probe status and every drop counter, once at start and then on the
// interval, so the SOC can tell "nothing happened" from "the agent was blind".
func (a *agent) healthLoop(ctx context.Context) error {
	t := time.NewTicker(a.cfg.HealthInterval)
	defer t.Stop()
	a.append(a.build.Health(a.health(), time.Now()))
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			a.append(a.build.Health(a.health(), now))
		}
	}
}

func (a *agent) health() *wardv1.Health {
	h := &wardv1.Health{Drops: map[string]uint64{}}
	addStatus := func(prefix string, name, hook string, attached bool, err error) {
		ps := &wardv1.ProbeStatus{Name: prefix + name, Hook: hook, Attached: attached}
		if err != nil {
			ps.Error = err.Error()
		}
		h.Probes = append(h.Probes, ps)
	}
	if a.execs != nil {
		for _, s := range a.execs.Status() {
			addStatus("process.", s.Name, s.Hook, s.Attached, s.Err)
		}
		if d, err := a.execs.Drops(); err == nil {
			for k, v := range d {
				h.Drops["bpf.process."+k] = v
			}
		}
	} else {
		addStatus("process.", "all", "", false, errors.New("process probes failed to load"))
	}
	if a.files != nil {
		for _, s := range a.files.Status() {
			addStatus("file.", s.Name, s.Hook, s.Attached, s.Err)
		}
		if d, err := a.files.Drops(); err == nil {
			for k, v := range d {
				h.Drops["bpf.filewrite."+k] = v
			}
		}
	} else {
		addStatus("file.", "all", "", false, errors.New("file write probes failed to load"))
	}
	a.flowHealth(addStatus, h.Drops)
	a.lineageHealth(addStatus, h.Drops)
	a.degradedHealth(addStatus, h.Drops)
	a.tlsHealth(addStatus, h.Drops)
	a.mu.Lock()
	for k, v := range a.counters {
		h.Drops[k] = v
	}
	as := a.asmStats
	a.mu.Unlock()
	h.Drops["stream.pressure_flushes"] = as.PressureFlushes
	h.Drops["stream.open_evictions"] = as.OpenEvictions
	h.Drops["stream.overflows"] = as.Overflows
	h.Drops["stream.writes_without_open"] = as.WritesWithoutOpen
	h.Drops["stream.opens_over_live"] = as.OpensOverLive
	_, misses, evicted := a.procs.Stats()
	h.Drops["proc.lookup_misses"] = misses
	h.Drops["proc.evicted"] = evicted
	forks, orphans := a.procs.ForkStats()
	h.Drops["proc.forks"] = forks
	h.Drops["proc.fork_parent_unknown"] = orphans
	es := a.engine.Stats()
	h.Drops["classify.detector_panics"] = es.DetectorPanics
	h.Drops["classify.hits_dropped"] = es.HitsDropped
	ss := a.spool.Stats()
	h.SpoolBytes = uint64(ss.Bytes)
	h.SpoolEvents = uint64(ss.FindingsEvents + ss.TelemetryEvents)
	h.SpoolFindingsEvicted = ss.FindingsEvicted
	h.SpoolTelemetryEvicted = ss.TelemetryEvicted
	h.Policy = a.policy.Status()
	h.Drops["policy.eval_errors"] = a.policy.Policy().EvalErrors()
	return h
}
