package policy

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ward-dlp/ward/collector/store"
	"github.com/ward-dlp/ward/policy"
)

func sign(t *testing.T, skey string, version int, nb, exp time.Time) []byte {
	t.Helper()
	src := strings.Replace(string(policy.DefaultPack()), "version: 1\n", "version: "+itoa(version)+"\n", 1)
	b, err := policy.Sign("p.yaml", []byte(src), skey, policy.SignOptions{NotBefore: nb, ExpiresAt: exp})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func itoa(v int) string { return strconv.Itoa(v) }

// TestPushChecksAndVersionsBundles runs pushes against a real SQLite store.
func TestPushChecksAndVersionsBundles(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "ward.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	skey, _, _ := policy.GenerateKey("t")
	now := time.Now()
	nb, exp := now.Add(-time.Hour), now.Add(time.Hour)

	b5 := sign(t, skey, 5, nb, exp)
	got, err := Push(ctx, st, b5, 0, now)
	if err != nil || got.Version != 5 || got.TargetGroup != "default" || got.PushedBy != 0 {
		t.Fatalf("push v5: %+v %v", got, err)
	}
	refusals := []struct {
		name string
		b    []byte
		want error
	}{
		{"same version", b5, store.ErrPolicyDuplicate},
		{"older version", sign(t, skey, 4, nb, exp), store.ErrPolicyNotNewer},
		{"expired", sign(t, skey, 6, now.Add(-3*time.Hour), now.Add(-time.Hour)), policy.ErrExpired},
		{"tampered payload", bytes.Replace(sign(t, skey, 7, nb, exp), []byte("severity: critical"), []byte("severity: low"), 1), policy.ErrPayloadHash},
		{"garbage", []byte("hello"), policy.ErrBadEnvelope},
	}
	for _, r := range refusals {
		t.Run(r.name, func(t *testing.T) {
			_, err := Push(ctx, st, r.b, 0, now)
			if !errors.Is(err, r.want) || !IsRefusal(err) {
				t.Fatalf("got %v, want %v (refusal %v)", err, r.want, IsRefusal(err))
			}
		})
	}
	latest, err := st.LatestPolicyBundle(ctx, "default")
	if err != nil || latest.Version != 5 || len(latest.Payload) == 0 || len(latest.SignedNote) == 0 {
		t.Fatalf("latest: %+v %v", latest, err)
	}
	if _, err := st.LatestPolicyBundle(ctx, "lab"); !errors.Is(err, store.ErrNoPolicy) {
		t.Fatalf("empty group: %v", err)
	}
	if _, err := Push(ctx, st, sign(t, skey, 9, nb, exp), 1000, now); err != nil {
		t.Fatal(err)
	}
	// Status: which agents run what (agents must exist for the foreign key).
	for _, id := range []string{"a1", "a2"} {
		if err := st.EnrollAgent(ctx, tokenFor(t, st, id, now), now, store.Agent{ID: id}, func() error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	st.RecordAgentPolicy(ctx, "a1", store.AgentPolicy{TargetGroup: "default", Version: 9, ReportedAt: now})
	st.RecordAgentPolicy(ctx, "a2", store.AgentPolicy{TargetGroup: "default", Version: 0, LastError: "signature", RejectedVersion: 9, ReportedAt: now})
	f, err := Status(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Bundles) != 2 || len(f.Groups) != 1 || f.Groups[0].Latest != 9 || len(f.Groups[0].Agents["9"]) != 1 ||
		len(f.Groups[0].Agents["0"]) != 1 || len(f.Groups[0].Refusing) != 1 {
		t.Fatalf("status: %+v", f)
	}
}

func tokenFor(t *testing.T, st *store.Store, id string, now time.Time) []byte {
	t.Helper()
	h := []byte("token-hash-" + id)
	if err := st.AddToken(context.Background(), h, now, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	return h
}
