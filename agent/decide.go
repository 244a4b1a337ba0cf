package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"os/user"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

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
	in := &policy.Input{
		Time: c.Last, Kind: policy.EventFileWrite, Classes: make(map[policy.Class]int, 2), Bytes: int64(size),
		Destination: policy.Destination{Kind: policy.DestWatchedPath, Path: c.File.Path},
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
// happened, so block and kill cannot be enforced on them yet (that comes with the sensors
// work): the decision keeps the decided action, the agent alerts, and the event says why.
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
