package policy

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

func signed(t testing.TB, skey string, version int, group string, nb, exp time.Time) (signedNote, payload []byte) {
	t.Helper()
	src := strings.Replace(string(DefaultPack()), "version: 1\n", "version: "+itoa(version)+"\n", 1)
	b, err := Sign("pack.yaml", []byte(src), skey, SignOptions{NotBefore: nb, ExpiresAt: exp, TargetGroup: group})
	if err != nil {
		t.Fatal(err)
	}
	n, p, err := SplitBundle(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p, []byte(src)) {
		t.Fatal("SplitBundle did not return the payload")
	}
	return n, p
}

func itoa(i int) string { return strconv.Itoa(i) }

// flipSig changes one base64 character inside the last signature, keeping the length.
func flipSig(b []byte) []byte {
	out := bytes.Clone(b)
	i := len(out) - 6
	if out[i] == 'A' {
		out[i] = 'B'
	} else {
		out[i] = 'A'
	}
	return out
}

func TestSignedBundlesAreVerifiedAndJudged(t *testing.T) {
	skey, vkey, err := GenerateKey("clinic-policy")
	if err != nil {
		t.Fatal(err)
	}
	otherS, otherV, _ := GenerateKey("clinic-policy") // same name, different key
	keys, err := ParseKeys([]string{vkey})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	nb, exp := now.Add(-time.Hour), now.Add(90*24*time.Hour)
	n, p := signed(t, skey, 7, "default", nb, exp)

	pol, env, err := keys.Open(n, p, 6, "default", now)
	if err != nil {
		t.Fatal(err)
	}
	if pol.Version() != 7 || env.Version != 7 || env.Name != "behavioural-health-default" || len(env.Signers) != 1 || env.Signers[0] != "clinic-policy" {
		t.Fatalf("opened %v %+v", pol, env)
	}

	tamper := func(b []byte, old, new string) []byte {
		out := bytes.Replace(b, []byte(old), []byte(new), 1)
		if bytes.Equal(out, b) {
			t.Fatalf("tamper: %q not found", old)
		}
		return out
	}
	n10, p10 := signed(t, skey, 10, "default", nb, exp)
	nOther, pOther := signed(t, otherS, 11, "default", nb, exp)
	nGroup, pGroup := signed(t, skey, 12, "front-desk", nb, exp)
	nOld, pOld := signed(t, skey, 13, "default", now.Add(-100*24*time.Hour), now.Add(-time.Minute))
	nFuture, pFuture := signed(t, skey, 14, "default", now.Add(time.Hour), exp)
	cases := []struct {
		name    string
		note    []byte
		payload []byte
		current uint64
		want    error
	}{
		{"payload edited after signing", n, tamper(p, "severity: critical", "severity: low"), 6, ErrPayloadHash},
		{"payload truncated", n, p[:len(p)-10], 6, ErrPayloadHash},
		{"version line edited", tamper(n, "version 7", "version 9"), p, 6, ErrSignature},
		{"expiry line edited", tamper(n, "expires-at 2027", "expires-at 2099"), p, 6, ErrSignature},
		{"signature bytes flipped", flipSig(n), p, 6, ErrSignature},
		{"signed by an unpinned key", nOther, pOther, 6, ErrSignature},
		{"same version again", n, p, 7, ErrDowngrade},
		{"downgrade", n, p, 10, ErrDowngrade},
		{"expired", nOld, pOld, 6, ErrExpired},
		{"not yet valid", nFuture, pFuture, 6, ErrNotYetValid},
		{"other group", nGroup, pGroup, 6, ErrWrongGroup},
		{"no signature", []byte("ward-policy-bundle/v1\n\n"), p, 6, ErrBadEnvelope},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := keys.Open(c.note, c.payload, c.current, "default", now)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
	if _, _, err := keys.Open(n10, p10, 7, "default", now); err != nil {
		t.Fatalf("upgrade 7→10 refused: %v", err)
	}
	// Two pinned keys (rotation): either verifies.
	both, err := ParseKeys([]string{vkey, otherV})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := both.Open(nOther, pOther, 6, "default", now); err != nil {
		t.Fatalf("rotated key refused: %v", err)
	}
	// The signed payload must carry the signed name and version: a payload whose own version
	// differs cannot be smuggled in because the hash covers it, so check Sign fills both.
	e, err := ParseEnvelope(n)
	if err != nil || e.Version != 7 || e.TargetGroup != "default" || !e.ExpiresAt.Equal(exp.Truncate(time.Second)) {
		t.Fatalf("ParseEnvelope: %+v %v", e, err)
	}
}

func TestSignRefusesBrokenPolicies(t *testing.T) {
	skey, _, _ := GenerateKey("")
	now := time.Now()
	_, err := Sign("bad.yaml", []byte("name: x\nversion: 1\nrules: []\n"), skey, SignOptions{NotBefore: now, ExpiresAt: now.Add(time.Hour)})
	if err == nil || !strings.Contains(err.Error(), "bad.yaml:3:8") {
		t.Fatalf("signing a broken policy: %v", err)
	}
	if _, err := Sign("p.yaml", DefaultPack(), "not a key", SignOptions{NotBefore: now, ExpiresAt: now.Add(time.Hour)}); err == nil {
		t.Fatal("signed with garbage key")
	}
	if _, err := Sign("p.yaml", DefaultPack(), skey, SignOptions{NotBefore: now, ExpiresAt: now}); err == nil {
		t.Fatal("signed an empty window")
	}
	if _, err := ParseKeys([]string{"garbage"}); err == nil {
		t.Fatal("parsed a garbage verifier key")
	}
}
