package collector

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadFileStrict(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("listen: 0.0.0.0:9443\nextra_sans: [collector.clinic.example]\ntoken_ttl: 30m\ncert_ttl: 168h\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadFile(good, Defaults("/var/lib/ward"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "0.0.0.0:9443" || cfg.TokenTTL != 30*time.Minute || cfg.CertTTL != 168*time.Hour ||
		len(cfg.ExtraSANs) != 1 || cfg.MaxBatchEvents != 1000 {
		t.Fatalf("cfg = %+v", cfg)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("listne: 0.0.0.0:9443\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadFile(bad, Defaults("/var/lib/ward"))
	if err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "listne") {
		t.Fatalf("unknown key: %v", err)
	}
	if _, err := LoadFile(filepath.Join(dir, "missing.yaml"), Defaults("x")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("missing file: %v", err)
	}
}

// TestRunStartsAndStops runs the whole collector on loopback and stops it by cancelling.
func TestRunStartsAndStops(t *testing.T) {
	home := t.TempDir()
	cfg := Defaults(home)
	cfg.Listen = "127.0.0.1:0"
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))) }()

	sock := DefaultAdminSocket(home)
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := client.Get("http://ward/v1/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("healthz %d", resp.StatusCode)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("collector not ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, p := range []string{"collector", "collector/pki"} {
		fi, err := os.Stat(filepath.Join(home, p))
		if err != nil || fi.Mode().Perm() != 0o700 {
			t.Fatalf("%s: %v %v", p, fi.Mode().Perm(), err)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("socket left behind: %v", err)
	}
}
