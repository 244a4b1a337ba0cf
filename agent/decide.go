package agent

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ward-dlp/ward/agent/event"
	"github.com/ward-dlp/ward/agent/proc"
	"github.com/ward-dlp/ward/agent/stream"
	"github.com/ward-dlp/ward/classifiers/engine"
	"github.com/ward-dlp/ward/policy"
)

// fileInput builds the policy input for one classified run of writes to a watched file.
// data is the classified content; it is hashed only when the policy has consents naming
// documents, and never leaves this function.
func (a *agent) fileInput(c stream.Content, info proc.Info, matches []engine.Match, size uint64, data []byte, pol *policy.Policy) *policy.Input {
	tgt, isTarget := a.targetOf(c)
	in := &policy.Input{
		Time: c.Last, Kind: policy.EventFileWrite, Classes: make(map[policy.Class]int, 2), Bytes: int64(size),
		Destination: destination(tgt, isTarget, c.File.Path),
		File:        policy.File{Path: c.File.Path},
		Process:     policy.Process{Exe: info.Exe, Args: info.Args},
		User:        policy.User{Name: info.User, UID: int64(info.UID), Groups: a.groups.lookup(info.UID, time.Now())},
		Host:        policy.Host{Name: a.hostName, Tags: a.cfg.Policy.HostTags},
	}
	if info.Exe == "" {
		in.Process.Name = info.Comm
	} else {
		in.Process.Name = path.Base(info.Exe)
	}
	for _, m := range matches {
		cls, ok := event.PolicyClass(m.Class)
		if !ok {
			continue
		}
		in.Classes[cls] = max(in.Classes[cls], m.Confidence)
		in.Records += int64(m.Count)
		in.Detectors = append(in.Detectors, m.Detector)
		if strings.HasPrefix(m.Detector, "edm.") {
			in.Patients = append(in.Patients, m.Fingerprints...)
		}
	}
	if len(matches) > 0 && pol.NeedsDocumentHash() {
		sum := sha256.Sum256(data)
		in.Document = hex.EncodeToString(sum[:])
	}
	return in
}

// outcome says what the agent does about a decision. File writes are seen after they
// happened, so block cannot be enforced on them: the decision keeps the decided action, the
// agent alerts, and the event says why. Kill is carried out by enforce.
func outcome(d policy.Decision) event.Outcome {
	taken := d.Taken()
	switch {
	case d.ConsentID != "":
		return event.Outcome{Taken: taken, Enforcement: "consented disclosure (consent " + d.ConsentID + "): recorded"}
	case d.ExceptionID != "":
		return event.Outcome{Taken: taken, Enforcement: "exception " + d.ExceptionID + " applies: recorded"}
	case d.Monitor && d.Action > policy.ActionRecord:
		return event.Outcome{Taken: taken, Enforcement: "monitor mode: " + d.Action.String() + " not carried out, recorded"}
	case taken >= policy.ActionBlock:
		return event.Outcome{Taken: policy.ActionAlert,
			Enforcement: d.Action.String() + " not enforceable on file writes yet (the write had completed when it was classified): alerted instead"}
	}
	return event.Outcome{Taken: taken}
}

// groupCache resolves a uid's group names for user.groups, cached because os/user reads
// /etc/group on every call.
type groupCache struct {
	mu      sync.Mutex
	entries map[uint32]groupEntry
}

type groupEntry struct {
	names []string
	at    time.Time
}

const (
	groupTTL        = 5 * time.Minute
	maxGroupEntries = 1024
)

func newGroupCache() *groupCache { return &groupCache{entries: make(map[uint32]groupEntry)} }

func (g *groupCache) lookup(uid uint32, now time.Time) []string {
	g.mu.Lock()
	e, ok := g.entries[uid]
	g.mu.Unlock()
	if ok && now.Sub(e.at) < groupTTL {
		return e.names
	}
	var names []string
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		if gids, err := u.GroupIds(); err == nil {
			for _, gid := range gids {
				if gr, err := user.LookupGroupId(gid); err == nil {
					names = append(names, gr.Name)
				}
				if len(names) == 64 {
					break
				}
			}
		}
	}
	g.mu.Lock()
	if len(g.entries) >= maxGroupEntries {
		clear(g.entries)
	}
	g.entries[uid] = groupEntry{names: names, at: now}
	g.mu.Unlock()
	return names
}

// enforce carries out a decision on a classified file write. A kill is sent to the writer if
// it is still running; the race is inherent and the event says so: the write was classified
// after it happened (at close, or when the writer went idle), so the bytes already written
// stay on the target. SIGKILL stops what follows: the process's next write (and a large
// write in flight, which the kernel abandons between pages once a fatal signal is pending),
// the next files of a multi-file copy. Files are never deleted by the agent.
func (a *agent) enforce(c stream.Content, info proc.Info, d policy.Decision) event.Outcome {
	out := outcome(d)
	if d.Taken() != policy.ActionKill {
		return out
	}
	pid := c.Key.TGID
	if err := killWriter(pid, c.Last, uint32(os.Getpid())); err != nil {
		a.count("enforce.kill_failed", 1)
		a.log.Warn("kill decided but not carried out", "pid", pid, "exe", info.Exe, "path", c.File.Path, "err", err)
		return event.Outcome{Taken: policy.ActionAlert, Enforcement: "kill not carried out (" + err.Error() + "): alerted instead"}
	}
	a.count("enforce.killed", 1)
	a.log.Warn("killed a process writing regulated data", "pid", pid, "exe", info.Exe, "user", info.User, "path", c.File.Path, "rule", d.RuleID)
	return event.Outcome{Taken: policy.ActionKill,
		Enforcement: "SIGKILL sent to pid " + strconv.FormatUint(uint64(pid), 10) +
			" after its write was classified; bytes written before the kill stay on the target"}
}

// errWriterGone is returned when the writer exited before it could be killed.
var errWriterGone = errors.New("the writer had already exited")

// killWriter sends SIGKILL to pid if it is still the process that wrote at lastWrite. It
// holds a pidfd across the check, so a pid reused after the check cannot receive the signal;
// the check itself compares the process's start time with the write (a reused pid belongs to
// a process that started after the writer died, so after its last write).
func killWriter(pid uint32, lastWrite time.Time, self uint32) error {
	if pid <= 1 || pid == self {
		return fmt.Errorf("pid %d is never killed", pid)
	}
	pidfd, err := unix.PidfdOpen(int(pid), 0)
	switch {
	case errors.Is(err, unix.ESRCH):
		return errWriterGone
	case err != nil:
		pidfd = -1 // pidfds need 5.3: fall back to kill(2) after the same check
	default:
		defer unix.Close(pidfd)
	}
	start, err := processStart(pid)
	if err != nil {
		return errWriterGone
	}
	if start.After(lastWrite.Add(startSlack)) {
		return fmt.Errorf("pid %d now belongs to a process started after the write", pid)
	}
	if pidfd >= 0 {
		err = unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0)
	} else {
		err = unix.Kill(int(pid), unix.SIGKILL)
	}
	if errors.Is(err, unix.ESRCH) {
		return errWriterGone
	}
	if err != nil {
		return fmt.Errorf("signal pid %d: %w", pid, err)
	}
	return nil
}

// startSlack covers the clock-tick resolution of /proc/<pid>/stat start times.
const startSlack = 50 * time.Millisecond

// processStart reads a process's start time (field 22 of /proc/<pid>/stat, clock ticks
// since boot) as wall-clock time.
func processStart(pid uint32) (time.Time, error) {
	b, err := os.ReadFile("/proc/" + strconv.FormatUint(uint64(pid), 10) + "/stat")
	if err != nil {
		return time.Time{}, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return time.Time{}, errors.New("malformed stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return time.Time{}, errors.New("short stat")
	}
	ticks, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("stat starttime: %w", err)
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return time.Time{}, err
	}
	const clkTck = 100 // USER_HZ on every Linux ABI
	since := time.Duration(ts.Nano()) - time.Duration(ticks)*time.Second/clkTck
	return time.Now().Add(-since), nil
}
