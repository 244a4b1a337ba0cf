package policy

import (
	"testing"
	"time"
)

// BenchmarkEvaluateDefaultPack is the cost of one decision with the default pack over a mix
// of the inputs the agent and (later) the network sensor produce. Target: < 2 µs per event.
func BenchmarkEvaluateDefaultPack(b *testing.B) {
	p := builtin(b)
	inputs := []*Input{
		in(func(x *Input) {}), // plain write, nothing found: the common case
		in(func(x *Input) { x.Classes[ClassPHI] = 80; x.Records = 3 }),
		in(func(x *Input) { x.Classes[ClassPart2] = 95; x.Destination = Destination{Kind: DestRemovableMedia} }),
		in(func(x *Input) {
			x.Kind = EventNetwork
			x.Classes[ClassPHI] = 70
			x.Destination = Destination{Kind: DestNetworkApp, Domain: "chatgpt.com"}
		}),
		in(func(x *Input) { x.File.Path = "/home/a/Zoom/rec.mp4"; x.Process.Exe = "/opt/zoom/zoom" }),
		in(func(x *Input) {
			x.Kind = EventNetwork
			x.Destination = Destination{Kind: DestNetworkApp, Domain: "dns.example"}
			x.Network.Evasion = []string{"doh"}
		}),
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		x := inputs[i%len(inputs)]
		x.Time = t0.Add(time.Duration(i) * time.Second)
		_ = p.Evaluate(x)
	}
}

// BenchmarkEvaluateNothingFound is the per-write cost when content has no findings.
func BenchmarkEvaluateNothingFound(b *testing.B) {
	p := builtin(b)
	x := in(func(x *Input) {})
	b.ReportAllocs()
	for b.Loop() {
		_ = p.Evaluate(x)
	}
}
