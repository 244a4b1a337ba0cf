package policy

import (
	"math/rand/v2"
	"testing"
	"time"
)

// TestGuardsNeverChangeDecisions evaluates random inputs with and without the native guards:
// guards may only skip work, never change a decision.
func TestGuardsNeverChangeDecisions(t *testing.T) {
	guarded := builtin(t)
	plain := builtin(t)
	n := 0
	for i := range plain.rules {
		n += len(plain.rules[i].expr.guards)
		plain.rules[i].expr.guards = nil
	}
	if n < 10 {
		t.Fatalf("only %d guards derived from the default pack; the fast path is not working", n)
	}
	r := rand.New(rand.NewPCG(1, 2))
	pick := func(xs ...string) string { return xs[r.IntN(len(xs))] }
	for i := range 20000 {
		x := &Input{
			Time:    t0.Add(time.Duration(i) * 17 * time.Second),
			Kind:    pick(EventFileWrite, EventNetwork, EventProcess, ""),
			Classes: map[Class]int{},
			Records: int64(r.IntN(5)), Bytes: int64(r.IntN(1 << 20)),
			Destination: Destination{Kind: pick(DestWatchedPath, DestRemovableMedia, DestNetworkShare, DestSyncFolder, DestNetworkApp, DestLocal, "x"),
				Domain: pick("", "chatgpt.com", "zoom.us", "dropbox.com", "youtube.com", "example.org")},
			App:     AppInput{Name: pick("", "", "", "custom"), Category: pick("", "generative-ai", "cloud-storage"), Sanctioned: r.IntN(2) == 0},
			Network: Network{Evasion: []string{pick("doh", "ech", "x")}[:r.IntN(2)]},
			File:    File{Path: pick("", "/a/b.mp4", "/a/b.wav", "/a/b.txt", "/a/B.MKV")},
			Process: Process{Exe: pick("/opt/zoom/zoom", "/usr/bin/obs", "/usr/bin/cp", "")},
			User:    User{Name: pick("alice", "bob", "carol")},
			Host:    Host{Tags: []string{pick("clinical", "front-desk")}},
		}
		if r.IntN(2) == 0 {
			x.Classes[ClassPart2] = r.IntN(101)
		}
		if r.IntN(2) == 0 {
			x.Classes[ClassPHI] = r.IntN(101)
		}
		a, b := guarded.Evaluate(x), plain.Evaluate(x)
		if a.String() != b.String() {
			t.Fatalf("input %d %+v: guarded %s, plain %s", i, x, a, b)
		}
	}
}
