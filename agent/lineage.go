package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/ward-dlp/ward/agent/event"
	"github.com/ward-dlp/ward/agent/lineage"
	"github.com/ward-dlp/ward/agent/proc"
	"github.com/ward-dlp/ward/agent/stream"
	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/bpf/fileread"
	"github.com/ward-dlp/ward/classifiers/engine"
	"github.com/ward-dlp/ward/policy"
)

// lineageDetector names the match a tainted writer's content gets for a class the
// classifiers did not find in it: the finding is a lineage finding.
const lineageDetector = "lineage.taint"

// lineageState is the access and lineage sensor: the tagged-file set, the fileread probe
// that reports reads of tagged files, and the taint table those reads feed. Nil when
// lineage.enabled is off.
type lineageState struct {
	tags  *lineage.Tags
	taint *lineage.Table
	probe *fileread.Probe // nil when the probe could not load
	err   error           // why probe is nil
	// tagClasses are the classes whose findings tag the file.
	tagClasses []lineage.Class
}

// LineageDir is where the agent keeps the tagged-file set under its state dir.
func LineageDir(stateDir string) string { return filepath.Join(stateDir, "lineage") }

// startLineage opens the tag set and loads the fileread probe (unless eBPF is off).
func (a *agent) startLineage(self uint32, bpf bool) error {
	lc := a.cfg.Lineage
	if !lc.Enabled {
		return nil
	}
	tags, err := lineage.OpenTags(lineage.TagsConfig{Path: filepath.Join(LineageDir(a.cfg.StateDir), "tagged.json"),
		Max: lc.MaxTagged, Log: a.log})
	if err != nil {
		return err
	}
	l := &lineageState{tags: tags, taint: lineage.New(lineage.Config{
		TTL: lc.TTL, MaxProcesses: lc.MaxProcesses, Parent: a.parentOf,
	})}
	for _, c := range lc.TagClasses {
		if cls, ok := lineage.ParseClass(c); ok {
			l.tagClasses = append(l.tagClasses, cls)
		}
	}
	if !bpf {
		l.err = errors.New("eBPF is off (capture.force_fsnotify)")
	} else if l.probe, l.err = fileread.Load(fileread.Config{MaxTagged: uint32(lc.MaxTagged), EmitInterval: lc.EmitInterval,
		IgnoreTGID: self}, a.log); l.err != nil {
		a.log.Error("file read probe unavailable: reads of tagged files are not seen and nothing is tainted", "err", l.err)
	} else if err := tags.Attach(l.probe); err != nil {
		a.log.Warn("tagged files not all loaded into the kernel", "err", err)
	}
	a.lin = l
	a.log.Info("lineage", "tagged_files", tags.Stats().Tagged, "ttl", lc.TTL, "read_probe", l.probe != nil)
	return nil
}

// parentOf resolves a process's parent and start time for the taint table's ancestry walk.
// It waits only briefly for an exec record in flight: the walk runs on the flow and classify
// paths, and a writer's own record was already waited for by the lookup that attributed it.
func (a *agent) parentOf(pid uint32) (uint32, time.Time, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	info, ok := a.procs.Lookup(ctx, pid)
	if !ok {
		return 0, time.Time{}, false
	}
	return info.PPID, info.Start, true
}

// runLineage starts the lineage goroutines: the read-record reader and the sweeper that
// also persists the tag set.
func (a *agent) runLineage(g *errgroup.Group, ctx context.Context) {
	l := a.lin
	if l == nil {
		return
	}
	if l.probe != nil {
		g.Go(func() error { return a.readAccesses(ctx) })
	}
	g.Go(func() error {
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				if err := l.tags.Save(); err != nil {
					a.log.Error("tagged-file set not saved", "err", err)
				}
				return nil
			case now := <-t.C:
				l.taint.Sweep(now)
				if err := l.tags.Save(); err != nil {
					a.count("lineage.save_error", 1)
					a.log.Error("tagged-file set not saved", "err", err)
				}
			}
		}
	})
}

// readAccesses turns reads of tagged files into taint and access events.
func (a *agent) readAccesses(ctx context.Context) error {
	l := a.lin
	for {
		r, err := l.probe.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, os.ErrClosed) {
				return nil
			}
			a.count("fileread.decode_error", 1)
			continue
		}
		a.countProbeEvent("fileread")
		tag, ok := l.tags.Lookup(lineage.Inode{Dev: r.Dev, Ino: r.Ino})
		if !ok {
			// Untagged between the open and now (evicted): the kernel's class still says what
			// it held.
			tag = lineage.Tag{Inode: lineage.Inode{Dev: r.Dev, Ino: r.Ino}, Class: lineage.Class(r.Class)}
		}
		l.taint.Read(r.PID, r.StartTime, lineage.Source{Inode: tag.Inode, Class: tag.Class, Path: tag.Path, ReadTime: r.Time})
		if !a.cfg.Lineage.AccessEvents {
			continue
		}
		info, known := a.procs.Lookup(ctx, r.PID)
		ev := a.build.Access(info, known, &wardv1.Process{Pid: r.PID, Ppid: r.PPID, Uid: r.UID, Gid: r.GID, Comm: r.Comm},
			tag, r.ReadWrite(), r.Time)
		a.append(ev)
		a.log.Info("tagged file read", "path", tag.Path, "class", tag.Class.String(), "pid", r.PID, "exe", info.Exe,
			"user", info.User, "uid", r.UID)
	}
}

// lineageExec and lineageExit keep the taint table's process view: a child started by a
// tainted process inherits its taint.
func (a *agent) lineageExec(pid, ppid uint32, start time.Time) {
	if a.lin != nil {
		a.lin.taint.Exec(pid, ppid, start, time.Now())
	}
}

func (a *agent) lineageExit(pid uint32, at time.Time) {
	if a.lin != nil {
		a.lin.taint.Exit(pid, at)
	}
}

// taintOf returns the live taint of the process behind a write, as of the write.
func (a *agent) taintOf(pid uint32, info proc.Info, at time.Time) []lineage.Source {
	if a.lin == nil || pid == 0 {
		return nil
	}
	return a.lin.taint.Taint(pid, info.Start, at)
}

// lineageMatches adds, for each tainted class the classifiers did not find in the content,
// one lineage match at the taint's decayed confidence: a re-encoded or encrypted copy is
// still attributed, below the detection thresholds so only rules about lineage act on it.
func (a *agent) lineageMatches(ms []engine.Match, taint []lineage.Source, at time.Time) []engine.Match {
	found := map[engine.DataClass]bool{}
	for _, m := range ms {
		found[m.Class] = true
	}
	for _, s := range taint { // freshest first: the first source of a class sets its confidence
		cls := engine.DataClass(s.Class)
		if found[cls] || cls == engine.ClassUnspecified {
			continue
		}
		found[cls] = true
		how := "read"
		if s.Inherited {
			how = fmt.Sprintf("started by pid %d after it read", s.ReadBy)
		}
		ms = append(ms, engine.Match{
			Detector: lineageDetector, Class: cls, Confidence: a.lin.taint.Confidence(s, at), Count: 1,
			Evidence: fmt.Sprintf("writer %s tagged file %s (%s, dev %d inode %d) at %s", how, s.Path, s.Class,
				s.Dev, s.Ino, s.ReadTime.UTC().Format(time.RFC3339)),
		})
	}
	return ms
}

// lineageInput is the policy's view of a taint.
func lineageInput(taint []lineage.Source) policy.Lineage {
	var in policy.Lineage
	for _, s := range taint {
		if c := s.Class.String(); !slices.Contains(in.Classes, c) {
			in.Classes = append(in.Classes, c)
		}
		if len(in.Sources) < 16 && s.Path != "" && !slices.Contains(in.Sources, s.Path) {
			in.Sources = append(in.Sources, s.Path)
		}
	}
	return in
}

// afterFinding attaches the writer's taint to a finding and tags the written file when the
// finding shows it holds a tagged class: its content was recognised at the bundle's
// threshold, or a tainted writer put it there (origin "lineage").
func (a *agent) afterFinding(ev *wardv1.Event, c stream.Content, taint []lineage.Source, ms []engine.Match, pol *policy.Policy) {
	if a.lin == nil {
		return
	}
	if f := ev.GetFinding(); f != nil && len(taint) > 0 {
		f.Taint = event.Taints(taint)
	}
	if c.File.Inode == 0 {
		return
	}
	best, origin := lineage.ClassUnknown, ""
	for _, m := range ms {
		cls := lineage.Class(m.Class)
		if !slices.Contains(a.lin.tagClasses, cls) {
			continue
		}
		o := "content"
		if m.Detector == lineageDetector {
			o = "lineage"
		} else if pc, ok := event.PolicyClass(m.Class); !ok || m.Confidence < pol.Bundle().Thresholds[pc] {
			continue
		}
		if rankClass(cls) > rankClass(best) || (cls == best && o == "content") {
			best, origin = cls, o
		}
	}
	if best == lineage.ClassUnknown {
		return
	}
	if a.lin.tags.Add(lineage.Tag{Inode: lineage.Inode{Dev: uint32(c.File.Device), Ino: c.File.Inode}, Class: best,
		Path: c.File.Path, At: c.Last, Origin: origin}) {
		a.count("lineage.tagged", 1)
		a.log.Info("file tagged", "path", c.File.Path, "class", best.String(), "origin", origin)
	}
}

func rankClass(c lineage.Class) int {
	switch c {
	case lineage.ClassPart2:
		return 2
	case lineage.ClassPHI:
		return 1
	}
	return 0
}

// attachFlowTaint adds the process's taint to a network flow, or to a finding made in TLS
// plaintext, as the event is spooled.
func (a *agent) attachFlowTaint(ev *wardv1.Event) {
	if a.lin == nil {
		return
	}
	var p *wardv1.Process
	var set func([]*wardv1.Taint)
	switch pl := ev.GetPayload().(type) {
	case *wardv1.Event_Flow:
		p, set = pl.Flow.GetProcess(), func(t []*wardv1.Taint) { pl.Flow.Taint = t }
	case *wardv1.Event_Finding:
		if pl.Finding.GetNetwork() == nil || len(pl.Finding.GetTaint()) > 0 {
			return
		}
		p, set = pl.Finding.GetProcess(), func(t []*wardv1.Taint) { pl.Finding.Taint = t }
	default:
		return
	}
	if p.GetPid() == 0 {
		return
	}
	var start time.Time
	if p.GetStartTime() != nil {
		start = p.GetStartTime().AsTime()
	}
	if taint := a.lin.taint.Taint(p.GetPid(), start, ev.GetTime().AsTime()); len(taint) > 0 {
		set(event.Taints(taint))
	}
}

// lineageHealth adds the fileread probe's status and the lineage counters.
func (a *agent) lineageHealth(addStatus func(prefix, name, hook string, attached bool, err error), drops map[string]uint64) {
	l := a.lin
	if l == nil {
		return
	}
	if l.probe == nil {
		addStatus("fileread.", "all", "", false, fmt.Errorf("file read probe failed to load: %w", l.err))
	} else {
		for _, s := range l.probe.Status() {
			addStatus("fileread.", s.Name, s.Hook, s.Attached, s.Err)
		}
		if d, err := l.probe.Drops(); err == nil {
			for k, v := range d {
				drops["bpf.fileread."+k] = v
			}
		}
	}
	ts, ls := l.tags.Stats(), l.taint.Stats()
	drops["lineage.tags_evicted"] = ts.Evicted
	drops["lineage.tags_kernel_errors"] = ts.KernelErrors
	drops["lineage.reads"] = ls.Reads
	drops["lineage.inherited"] = ls.Inherited
	drops["lineage.taints_expired"] = ls.Expired
	drops["lineage.taints_evicted"] = ls.Evicted
}

func (a *agent) closeLineage() {
	if a.lin != nil && a.lin.probe != nil {
		if err := a.lin.probe.Close(); err != nil {
			a.log.Warn("closing file read probe", "err", err)
		}
	}
}
