package agent

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ward-dlp/ward/agent/config"
	"github.com/ward-dlp/ward/agent/proc"
	"github.com/ward-dlp/ward/agent/tlsplain"
	probe "github.com/ward-dlp/ward/bpf/tlsplain"
	"github.com/ward-dlp/ward/classifiers/engine"
	"github.com/ward-dlp/ward/policy"
)

func TestTLSInputAndOutcome(t *testing.T) {
	a := &agent{cfg: config.Default(), groups: newGroupCache(), hostName: "ws-1"}
	d := tlsplain.Done{Key: tlsplain.Key{PID: 9}, Library: probe.GnuTLS, Comm: "gnutls-cli", UID: 1000,
		Socket: probe.Socket{Remote: netip.MustParseAddrPort("[::ffff:192.0.2.7]:8443")}, Resolved: true,
		ServerName: "chatgpt.com", Last: time.Now(), Inspected: 4000,
		Matches: []engine.Match{{Detector: "part2.fhir", Class: engine.Part2, Confidence: 95, Count: 3}}}
	in := a.tlsInput(d, proc.Info{Exe: "/usr/bin/gnutls-cli"})
	if in.Kind != policy.EventNetwork || in.Destination.Kind != policy.DestNetworkApp || in.Destination.Domain != "chatgpt.com" ||
		in.Destination.Address != "192.0.2.7" || in.Destination.Port != 8443 || in.Network.Direction != "send" ||
		in.Process.Name != "gnutls-cli" || in.Classes[policy.ClassPart2] != 95 || in.Records != 3 || in.Bytes != 4000 {
		t.Errorf("input %+v", in)
	}
	pol, err := policy.Builtin()
	if err != nil {
		t.Fatal(err)
	}
	// Part 2 to a generative-AI app the pack does not sanction: block, carried out as alert.
	dec := pol.Evaluate(in)
	out := tlsOutcome(dec)
	if dec.Action != policy.ActionBlock || out.Taken != policy.ActionAlert || !strings.Contains(out.Enforcement, "TLS plaintext") {
		t.Errorf("decision %+v outcome %+v", dec, out)
	}
	d.Recv = true
	if in := a.tlsInput(d, proc.Info{}); in.Destination.Kind != policy.DestLocal || in.Network.Direction != "receive" || in.Process.Name != "gnutls-cli" {
		t.Errorf("received input %+v", in)
	}
}
