package event

import (
	"fmt"

	"github.com/ward-dlp/ward/agent/proc"
	"github.com/ward-dlp/ward/agent/tlsplain"
	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/policy"
)

// TLSFinding reports a decision on the plaintext of one TLS connection, or on the captured
// payload of a plaintext TCP flow (Library 0): the target is the network destination. sni is the server name the client addressed (empty if unknown).
func (b *Builder) TLSFinding(s tlsplain.Done, p proc.Info, known bool, sni string, d policy.Decision, out Outcome) (*wardv1.Event, error) {
	if len(s.Matches) == 0 && d.RuleID == "" {
		return nil, fmt.Errorf("TLS finding for pid %d without matches or a deciding rule", s.PID)
	}
	pr := Process(p)
	if !known {
		pr = &wardv1.Process{Pid: s.PID, Uid: s.UID, Gid: s.GID, Comm: s.Comm}
	}
	nt := &wardv1.NetworkTarget{Transport: "tcp", Sni: sni,
		Direction: wardv1.NetworkTarget_DIRECTION_SEND, BytesInspected: uint64(s.Inspected)}
	if s.Library != 0 { // 0: plaintext sampled from captured packets, no TLS library
		nt.TlsLibrary = s.Library.String()
	}
	if s.Recv {
		nt.Direction = wardv1.NetworkTarget_DIRECTION_RECEIVE
	}
	if r := s.Remote(); r.IsValid() {
		nt.RemoteAddress, nt.RemotePort = r.Addr().Unmap().String(), uint32(r.Port())
	}
	f := &wardv1.Finding{Process: pr, Target: &wardv1.Finding_Network{Network: nt}, Decision: Decision(d, out)}
	for _, m := range s.Matches {
		offs := make([]uint64, 0, len(m.Offsets))
		for _, o := range m.Offsets {
			offs = append(offs, uint64(o))
		}
		f.Matches = append(f.Matches, &wardv1.Match{
			Detector: m.Detector, DataClass: DataClass(m.Class), Confidence: uint32(m.Confidence),
			Count: uint32(m.Count), Offsets: offs, MaskedSamples: m.Masked,
			Fingerprints: m.Fingerprints, Evidence: m.Evidence,
		})
		cls := DataClass(m.Class)
		if rank(cls) > rank(f.DataClass) || (cls == f.DataClass && uint32(m.Confidence) > f.Confidence) {
			f.DataClass, f.Confidence = cls, uint32(m.Confidence)
		}
	}
	ev := b.envelope(s.Last)
	ev.Payload = &wardv1.Event_Finding{Finding: f}
	return ev, nil
}
