package policy

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/ward-dlp/ward/collector/store"
	"github.com/ward-dlp/ward/policy"
)

func TestSanctionerKeyAndOverlay(t *testing.T) {
	ctx := context.Background()
	for i := range 8 { // keys whose base64 holds '+' must load too
		dir := t.TempDir()
		st, err := store.Open(ctx, filepath.Join(dir, "ward.db"))
		if err != nil {
			t.Fatal(err)
		}
		s, err := OpenSanctioner(dir, st, nil)
		if err != nil {
			t.Fatalf("key %d: %v", i, err)
		}
		again, err := OpenSanctioner(dir, st, nil)
		if err != nil || again.VerifierKey() != s.VerifierKey() {
			t.Fatalf("reopened key differs: %v", err)
		}
		if o, err := s.Overlay(ctx); err != nil || o != nil {
			t.Fatalf("overlay with no decisions: %q %v", o, err)
		}
		at := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
		if _, err := st.SetAppSanction(ctx, store.AppSanction{AppID: "dropbox", Status: "sanctioned", ChangedAt: at, ChangedBy: "a"}, nil); err != nil {
			t.Fatal(err)
		}
		o, err := s.Overlay(ctx)
		if err != nil {
			t.Fatal(err)
		}
		del := &policy.Sanctioning{Keys: []string{s.VerifierKey()}}
		ov, err := del.OpenOverlay(o)
		if err != nil {
			t.Fatalf("own overlay does not verify: %v", err)
		}
		if ov.Sequence != uint64(at.UnixNano()) {
			t.Fatalf("sequence %d", ov.Sequence)
		}
		if cached, _ := s.Overlay(ctx); string(cached) != string(o) {
			t.Fatal("unchanged decisions were signed again")
		}
		st.Close()
	}
}
