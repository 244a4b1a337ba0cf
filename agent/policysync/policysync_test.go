package policysync

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/policy"
)

type signer struct {
	t    *testing.T
	skey string
	vkey string
}

func newSigner(t *testing.T) signer {
	s, v, err := policy.GenerateKey("test-policy")
	if err != nil {
		t.Fatal(err)
	}
	return signer{t: t, skey: s, vkey: v}
}

// bundle signs the default pack as version v, with severity of phi-in-watched-path changed
// so versions decide differently.
func (s signer) bundle(v int, group string, nb, exp time.Time) *wardv1.PolicyBundle {
	s.t.Helper()
	src := strings.Replace(string(policy.DefaultPack()), "version: 1\n", "version: "+strconv.Itoa(v)+"\n", 1)
	b, err := policy.Sign("p.yaml", []byte(src), s.skey, policy.SignOptions{NotBefore: nb, ExpiresAt: exp, TargetGroup: group})
	if err != nil {
		s.t.Fatal(err)
	}
	n, p, err := policy.SplitBundle(b)
	if err != nil {
		s.t.Fatal(err)
	}
	return &wardv1.PolicyBundle{SignedNote: n, Payload: p, Version: uint64(v), TargetGroup: group}
}

func TestApplyRefuseKeepLastGoodAndReload(t *testing.T) {
	sg := newSigner(t)
	dir := t.TempDir()
	now := time.Now()
	var changes atomic.Int32
	cfg := Config{Dir: dir, Keys: []string{sg.vkey}, Group: "default", OnChange: func() { changes.Add(1) }}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s.Version() != 0 || !s.Status().GetBuiltin() || s.Policy().Name() != "behavioural-health-default" {
		t.Fatalf("fresh agent: %v", s.Status())
	}
	good := sg.bundle(5, "default", now.Add(-time.Hour), now.Add(24*time.Hour))
	if err := s.Offer(good); err != nil {
		t.Fatal(err)
	}
	if s.Version() != 5 || s.Status().GetBuiltin() || s.Status().GetLastError() != "" || changes.Load() != 1 {
		t.Fatalf("after apply: %v", s.Status())
	}

	tampered := sg.bundle(6, "default", now.Add(-time.Hour), now.Add(24*time.Hour))
	tampered.Payload = bytes.Replace(tampered.Payload, []byte("severity: critical"), []byte("severity: low"), 1)
	other := newSigner(t).bundle(7, "default", now.Add(-time.Hour), now.Add(24*time.Hour))
	refusals := []struct {
		name string
		b    *wardv1.PolicyBundle
		want error
	}{
		{"tampered payload", tampered, policy.ErrPayloadHash},
		{"unpinned key", other, policy.ErrSignature},
		{"expired", sg.bundle(8, "default", now.Add(-48*time.Hour), now.Add(-time.Hour)), policy.ErrExpired},
		{"downgrade", sg.bundle(4, "default", now.Add(-time.Hour), now.Add(time.Hour)), policy.ErrDowngrade},
		{"replay of the applied version", good, policy.ErrDowngrade},
		{"other group", sg.bundle(9, "lab", now.Add(-time.Hour), now.Add(time.Hour)), policy.ErrWrongGroup},
		{"garbage", &wardv1.PolicyBundle{SignedNote: []byte("\x00\xff"), Payload: []byte("x"), Version: 99}, policy.ErrBadEnvelope},
		{"empty", &wardv1.PolicyBundle{}, policy.ErrBadEnvelope},
	}
	for _, r := range refusals {
		t.Run(r.name, func(t *testing.T) {
			err := s.Offer(r.b)
			if !errors.Is(err, r.want) {
				t.Fatalf("got %v, want %v", err, r.want)
			}
			st := s.Status()
			if s.Version() != 5 || st.GetLastError() == "" || st.GetVersion() != 5 {
				t.Fatalf("last good not kept or refusal not reported: %v", st)
			}
		})
	}
	if changes.Load() != int32(1+len(refusals)) {
		t.Fatalf("OnChange called %d times, want %d (a health event per apply or refusal)", changes.Load(), 1+len(refusals))
	}
	if s.Status().GetRejectedVersion() == 0 {
		t.Fatal("a permanent refusal does not report the rejected version")
	}
	// Not yet valid is transient: the collector may resend it.
	if err := s.Offer(sg.bundle(10, "default", now.Add(time.Hour), now.Add(2*time.Hour))); !errors.Is(err, policy.ErrNotYetValid) || s.Status().GetRejectedVersion() == 10 {
		t.Fatalf("not yet valid: %v, rejected %d", err, s.Status().GetRejectedVersion())
	}

	// Restart: the last good bundle comes back from disk, re-verified.
	s2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s2.Version() != 5 || s2.Status().GetLastError() != "" {
		t.Fatalf("after restart: %v", s2.Status())
	}
	// A downgrade is refused after a restart too.
	if err := s2.Offer(sg.bundle(3, "default", now.Add(-time.Hour), now.Add(time.Hour))); !errors.Is(err, policy.ErrDowngrade) {
		t.Fatalf("downgrade after restart: %v", err)
	}

	// The stored bundle was tampered with on disk: built-in pack, error reported, and the
	// version floor still refuses replays of older bundles.
	path := filepath.Join(dir, bundleFile)
	b, _ := os.ReadFile(path)
	if err := os.WriteFile(path, bytes.Replace(b, []byte("severity: high"), []byte("severity: info"), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	s3, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s3.Version() != 0 || !strings.Contains(s3.Status().GetLastError(), "refused") {
		t.Fatalf("tampered store: %v", s3.Status())
	}
	if err := s3.Offer(sg.bundle(4, "default", now.Add(-time.Hour), now.Add(time.Hour))); !errors.Is(err, policy.ErrDowngrade) {
		t.Fatalf("replay of v4 after losing v5 from disk: %v", err)
	}
	if err := s3.Offer(sg.bundle(6, "default", now.Add(-time.Hour), now.Add(time.Hour))); err != nil {
		t.Fatalf("newer bundle after a tampered store: %v", err)
	}
}

func TestNoPinnedKeysRefusesEverything(t *testing.T) {
	sg := newSigner(t)
	s, err := New(Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Offer(sg.bundle(1, "default", time.Now().Add(-time.Hour), time.Now().Add(time.Hour)))
	if !errors.Is(err, policy.ErrSignature) || s.Version() != 0 {
		t.Fatalf("no keys: %v, version %d", err, s.Version())
	}
}

func TestExpiredLastGoodStaysButIsFlagged(t *testing.T) {
	sg := newSigner(t)
	clock := time.Now()
	cfg := Config{Dir: t.TempDir(), Keys: []string{sg.vkey}, Now: func() time.Time { return clock }}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Offer(sg.bundle(2, "default", clock.Add(-time.Hour), clock.Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(2 * time.Hour)
	if st := s.Status(); !st.GetExpired() || st.GetVersion() != 2 {
		t.Fatalf("expired bundle: %v", st)
	}
	s2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s2.Version() != 2 || !s2.Status().GetExpired() {
		t.Fatalf("expired bundle after restart: %v", s2.Status())
	}
}
