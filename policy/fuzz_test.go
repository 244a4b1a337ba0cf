package policy

import (
	"strings"
	"testing"
	"time"
)

// FuzzLoad feeds arbitrary YAML (and CEL inside it) to the strict decoder and compiler: it
// must return a policy or positioned errors, never panic, and a policy it returns must
// evaluate without panicking.
func FuzzLoad(f *testing.F) {
	f.Add(DefaultPack())
	f.Add([]byte("name: x\nversion: 1\nrules:\n  - {id: r, when: 'data.records > 1', then: record, compliance: [x]}\n"))
	f.Add([]byte("name: x\nversion: 1\nrules:\n  - id: r\n    when: |\n      user.groups.exists(g, g.matches('^a+$'))\n    then: {action: kill, severity: critical}\n    compliance: [x]\n"))
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("name: x\nversion: 1\nrules:\n  - {id: r, mass_export: {class: phi, records: 5, bytes: 1KiB, window: 1h}, then: record, compliance: [x]}\nconsents:\n  - {id: c, patients: [p], recipient: {apps: [a]}, expires: 2027-01-01}\n"))
	f.Fuzz(func(t *testing.T, src []byte) {
		p, err := Load("fuzz.yaml", src)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.yaml") {
				t.Fatalf("error without position: %v", err)
			}
			return
		}
		for _, x := range []*Input{
			{},
			{Time: time.Unix(0, 0), Classes: map[Class]int{ClassPart2: 100, ClassPHI: 100, "other": 5}, Records: 1 << 40, Bytes: -1,
				Patients: []string{"p"}, Destination: Destination{Kind: DestNetworkApp, Domain: "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s"},
				Process: Process{Args: make([]string, 1000)}, User: User{Groups: []string{strings.Repeat("g", 10000)}}},
		} {
			_ = p.Evaluate(x)
		}
	})
}

// FuzzOpenBundle feeds arbitrary bytes as a bundle file to the agent's verification path.
func FuzzOpenBundle(f *testing.F) {
	skey, vkey, err := GenerateKey("fuzz")
	if err != nil {
		f.Fatal(err)
	}
	keys, err := ParseKeys([]string{vkey})
	if err != nil {
		f.Fatal(err)
	}
	now := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	good, err := Sign("p.yaml", DefaultPack(), skey, SignOptions{NotBefore: now.Add(-time.Hour), ExpiresAt: now.Add(time.Hour)})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte("ward-policy-bundle/v1\n\n— x AAAA\nname: y\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		n, p, err := SplitBundle(b)
		if err != nil {
			return
		}
		_, _ = ParseEnvelope(n)
		pol, env, err := keys.Open(n, p, 0, "default", now)
		if err == nil && (pol == nil || env == nil || env.Version == 0) {
			t.Fatal("accepted without a policy and envelope")
		}
	})
}

// FuzzParseFixtures feeds arbitrary YAML to the fixtures reader of `wardctl policy test`.
func FuzzParseFixtures(f *testing.F) {
	f.Add([]byte("events:\n  - name: x\n    input: {data.classes: {part2: 95}, destination.kind: removable-media}\n    expect: {rule: r}\n"))
	f.Add([]byte("events: [{input: {user.groups: [a, b], data.records: 5}}]\n"))
	f.Fuzz(func(t *testing.T, src []byte) {
		fx, err := ParseFixtures("f.yaml", src)
		if err != nil && !strings.HasPrefix(err.Error(), "f.yaml") {
			t.Fatalf("error without position: %v", err)
		}
		for i := range fx {
			_ = fx[i].Expect.Check(Decision{})
		}
	})
}
