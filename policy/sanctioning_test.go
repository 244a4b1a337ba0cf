package policy

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func TestOverlaySignOpen(t *testing.T) {
	skey, vkey, err := GenerateKey("collector")
	if err != nil {
		t.Fatal(err)
	}
	payload := []byte("version: 1\napps:\n  dropbox: {status: sanctioned}\n")
	o, err := SignOverlay(payload, skey, 42, "2026.11.23", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	del := &Sanctioning{Keys: []string{vkey}}
	got, err := del.OpenOverlay(o)
	if err != nil || got.Sequence != 42 || !bytes.Equal(got.Payload, payload) || got.Catalog != "2026.11.23" {
		t.Fatalf("open: %+v %v", got, err)
	}
	if _, err := (*Sanctioning)(nil).OpenOverlay(o); !errors.Is(err, ErrNotDelegated) {
		t.Errorf("no delegation: %v", err)
	}
	_, other, _ := GenerateKey("other")
	if _, err := (&Sanctioning{Keys: []string{other}}).OpenOverlay(o); !errors.Is(err, ErrOverlaySigner) {
		t.Errorf("other key: %v", err)
	}
	bad := bytes.Replace(o, []byte("sanctioned"), []byte("unsanctioned"), 1)
	if _, err := del.OpenOverlay(bad); !errors.Is(err, ErrOverlayHash) {
		t.Errorf("tampered: %v", err)
	}
	src := string(DefaultPack()) + "sanctioning:\n  keys: [\"" + vkey + "\"]\n  locked: [zoom]\n"
	p, err := Load("p.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if !p.Bundle().Sanctioning.Delegates(vkey) || !p.Bundle().Sanctioning.IsLocked("zoom") {
		t.Fatalf("sanctioning section: %+v", p.Bundle().Sanctioning)
	}
	if _, err := Load("p.yaml", []byte(string(DefaultPack())+"sanctioning:\n  keys: [\"not a key\"]\n")); err == nil {
		t.Error("a malformed delegated key was accepted")
	}
}

func FuzzOpenOverlay(f *testing.F) {
	skey, vkey, err := GenerateKey("collector")
	if err != nil {
		f.Fatal(err)
	}
	o, err := SignOverlay([]byte("version: 1\n"), skey, 7, "c", time.Unix(1, 0))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(o)
	f.Add([]byte("ward-sanctioning/v1\nsequence 1\n\n— x y\n"))
	del := &Sanctioning{Keys: []string{vkey}}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := del.OpenOverlay(b)
		if err == nil && (got.Sequence == 0 || len(got.PayloadSHA256) != 64) {
			t.Fatalf("accepted a malformed overlay: %+v", got)
		}
	})
}
