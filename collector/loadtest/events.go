package loadtest

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"time"

	"github.com/ward-dlp/ward/agent/event"
	"github.com/ward-dlp/ward/agent/flows"
	"github.com/ward-dlp/ward/agent/proc"
	"github.com/ward-dlp/ward/agent/stream"
	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/bpf/netflow"
	"github.com/ward-dlp/ward/classifiers"
	"github.com/ward-dlp/ward/classifiers/engine"
	"github.com/ward-dlp/ward/policy"
)

// Mix is the share of each event kind in generated traffic, in percent; the rest of 100 is
// process events (exec/exit).
type Mix struct {
	Findings, Files, Flows int
}

// DefaultMix approximates a clinical workstation's stream as the agent ships it: mostly
// file activity and network flows, a steady share of process events, and findings as the
// rarer, larger events (each carries its matches, masks and fingerprints).
var DefaultMix = Mix{Findings: 10, Files: 40, Flows: 30}

func (m Mix) validate() error {
	if m.Findings < 0 || m.Files < 0 || m.Flows < 0 || m.Findings+m.Files+m.Flows > 100 {
		return fmt.Errorf("loadtest: event mix %+v: shares must be non-negative and sum to at most 100", m)
	}
	return nil
}

// corpus holds classifier output computed once per fleet: the matches a real agent's engine
// produces for a few synthetic clinical documents, with the fleet's fingerprint key. Every
// value in these documents is synthetic (test SSN ranges, a made-up MRN).
type corpus struct {
	matches [][]engine.Match
}

// syntheticDocs are what simulated clinicians "write"; the classifiers turn them into
// findings exactly as on an endpoint.
var syntheticDocs = []string{
	"Patient intake form\nName: Test Patient\nSSN: 219-45-8765\nDOB: 01/02/1980\nPhone: (555) 010-0199\n",
	"Discharge summary. Patient SSN 219-45-8766, follow-up in the SUD program.\n" +
		"This record is protected by federal confidentiality rules (42 CFR part 2). " +
		"The federal rules prohibit you from making any further disclosure of information in this record " +
		"that identifies a patient as having or having had a substance use disorder.\n",
	"billing export\nssn,name\n219-45-8767,A Test\n219-45-8768,B Test\n219-45-8769,C Test\n",
}

func newCorpus(fingerprintKey []byte) (*corpus, error) {
	eng, err := classifiers.Default(engine.Config{FingerprintKey: fingerprintKey})
	if err != nil {
		return nil, fmt.Errorf("loadtest: classifiers: %w", err)
	}
	c := &corpus{}
	for i, d := range syntheticDocs {
		ms := eng.Classify([]byte(d))
		if len(ms) == 0 {
			return nil, fmt.Errorf("loadtest: synthetic document %d yields no match; the classifiers changed", i)
		}
		c.matches = append(c.matches, ms)
	}
	return c, nil
}

// generator builds one simulated agent's events with the agent's own event builders and a
// dense seq, as the spool would number them.
type generator struct {
	b      *event.Builder
	c      *corpus
	mix    Mix
	rng    *rand.Rand
	seq    uint64
	procs  []proc.Info
	remote []netip.AddrPort
}

func newGenerator(agentID string, n int, c *corpus, mix Mix) *generator {
	host := &wardv1.Host{
		Hostname: fmt.Sprintf("ws-%04d.clinic.example", n), MachineId: strings.Repeat(fmt.Sprintf("%02x", n%256), 16),
		Os: "Debian GNU/Linux 12 (bookworm)", Kernel: "6.1.0-28-amd64", AgentVersion: "loadtest",
	}
	g := &generator{
		b: event.NewBuilder(agentID, host), c: c, mix: mix,
		rng: rand.New(rand.NewPCG(uint64(n), 0x5eed)),
	}
	start := time.Now().Add(-time.Hour)
	for i, exe := range []string{"/usr/bin/libreoffice", "/usr/lib/firefox-esr/firefox-esr", "/usr/bin/python3", "/usr/bin/evince"} {
		user := fmt.Sprintf("clinician%02d", n%50)
		g.procs = append(g.procs, proc.Info{
			PID: uint32(2000 + i), PPID: 1500, UID: uint32(1000 + n%50), GID: 1000, User: user,
			Exe: exe, Args: []string{exe, "/home/" + user + "/Documents/notes.odt"}, Comm: exe[strings.LastIndexByte(exe, '/')+1:],
			Start: start, CgroupID: uint64(4000 + i), ParentExe: "/usr/bin/gnome-shell",
		})
	}
	for _, a := range []string{"93.184.215.14:443", "10.20.0.15:443", "10.20.0.53:53", "142.250.72.110:443"} {
		g.remote = append(g.remote, netip.MustParseAddrPort(a))
	}
	return g
}

// next returns the next event.
func (g *generator) next() (*wardv1.Event, error) {
	now := time.Now()
	p := g.procs[g.rng.IntN(len(g.procs))]
	roll := g.rng.IntN(100)
	var ev *wardv1.Event
	switch {
	case roll < g.mix.Findings:
		i := g.rng.IntN(len(g.c.matches))
		content := g.content(now, i)
		d := policy.Decision{
			Action: policy.ActionAlert, Severity: policy.SeverityHigh, RuleID: "phi-to-removable",
			Compliance: []string{"hipaa:164.312(b)", "42cfr2:2.13"}, Version: "7", PolicyName: "clinic-default",
		}
		var err error
		ev, err = g.b.Finding(content, p, content.BytesWritten, false, 0, g.c.matches[i], d, event.Outcome{Taken: policy.ActionAlert})
		if err != nil {
			return nil, fmt.Errorf("loadtest: build finding: %w", err)
		}
	case roll < g.mix.Findings+g.mix.Files:
		ev = g.b.FileActivity(g.content(now, g.rng.IntN(len(syntheticDocs))), p, false, 0)
	case roll < g.mix.Findings+g.mix.Files+g.mix.Flows:
		r := g.remote[g.rng.IntN(len(g.remote))]
		f := flows.Flow{
			Cookie: g.rng.Uint64(), Proto: netflow.TCP, Direction: flows.Outbound,
			Local:  netip.AddrPortFrom(netip.MustParseAddr("10.20.5.17"), uint16(32768+g.rng.IntN(28000))),
			Remote: r, Task: netflow.Task{PID: p.PID, TID: p.PID, UID: p.UID, GID: p.GID, Comm: p.Comm},
			Start: now.Add(-2 * time.Second), End: now, BytesSent: uint64(g.rng.IntN(64 << 10)),
			BytesReceived: uint64(g.rng.IntN(512 << 10)), Established: true, Reason: flows.Closed,
		}
		if r.Port() == 53 {
			f.Proto = netflow.UDP
			f.UDPSends = 1
		}
		ev = g.b.NetworkFlow(f, p, true)
	default:
		if g.rng.IntN(2) == 0 {
			ev = g.b.Exec(p, now)
		} else {
			ev = g.b.Exit(p, 0, now)
		}
	}
	g.seq++
	ev.Seq = g.seq
	return ev, nil
}

func (g *generator) content(now time.Time, doc int) stream.Content {
	n := uint64(len(syntheticDocs[doc]))
	user := g.procs[0].User
	return stream.Content{
		File:   stream.File{Path: fmt.Sprintf("/home/%s/Documents/export-%d.txt", user, g.rng.IntN(1000)), Device: 2049, Inode: g.rng.Uint64N(1 << 24)},
		Reason: stream.Closed, Complete: true, BytesWritten: n, BytesCaptured: n, WriteCalls: 1,
		First: now.Add(-time.Millisecond), Last: now,
	}
}

// Events is a simulated agent's event stream, for tests that drive real shippers.
type Events struct{ g *generator }

// NewEvents returns the stream of agent agentID (n varies the simulated host); findings
// carry matches computed with fingerprintKey, as the enrolled agent's engine would.
func NewEvents(agentID string, n int, fingerprintKey []byte) (*Events, error) {
	c, err := newCorpus(fingerprintKey)
	if err != nil {
		return nil, err
	}
	return &Events{g: newGenerator(agentID, n, c, DefaultMix)}, nil
}

// Next returns the next event (its seq is the stream's own count; a spool renumbers it).
func (e *Events) Next() (*wardv1.Event, error) { return e.g.next() }
