package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ward-dlp/ward/collector"
	"github.com/ward-dlp/ward/collector/report"
)

// TestUserAndReport runs a real collector and uses wardctl to make the first admin, list
// accounts and write both reports, which are verified against their manifests.
func TestUserAndReport(t *testing.T) {
	home := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	cfg := collector.Defaults(home)
	cfg.Listen = addr
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- collector.Run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	ctl := func(args ...string) (string, error) {
		var out, errb bytes.Buffer
		err := run(context.Background(), append([]string{"--home", home}, args...), &out, &errb)
		return out.String() + errb.String(), err
	}
	var out string
	for deadline := time.Now().Add(10 * time.Second); ; {
		if out, err = ctl("user", "add", "--role", "admin", "alice"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("collector not ready: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(out, "one-time password: ") {
		t.Fatalf("user add: %s", out)
	}
	if _, err := ctl("user", "add", "--role", "admin", "alice"); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("duplicate user: %v", err)
	}
	if _, err := ctl("user", "add", "--role", "root", "bob"); err == nil {
		t.Fatal("unknown role accepted")
	}
	if out, err = ctl("user", "list"); err != nil || !strings.Contains(out, "alice") || !strings.Contains(out, "pending") {
		t.Fatalf("user list: %v %s", err, out)
	}
	if out, err = ctl("user", "reset", "alice"); err != nil || !strings.Contains(out, "one-time password") {
		t.Fatalf("user reset: %v %s", err, out)
	}
	for _, kind := range []string{"shadow-it", "part2"} {
		dir := filepath.Join(t.TempDir(), kind)
		if out, err = ctl("report", kind, "--from", "2026-01-01", "--to", "2026-02-01", "-o", dir); err != nil {
			t.Fatalf("report %s: %v %s", kind, err, out)
		}
		m, err := report.VerifyDir(dir)
		if err != nil {
			t.Fatalf("verify %s: %v", kind, err)
		}
		if string(m.Report) != kind || len(m.Files) != 2 || !strings.HasPrefix(m.GeneratedBy, "unix:") {
			t.Fatalf("manifest %+v", m)
		}
		if _, err := os.Stat(filepath.Join(dir, report.SumsName)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err = ctl("report", "part2", "--from", "2026-02-01", "--to", "2026-01-01", "-o", t.TempDir()+"/x"); err == nil {
		t.Fatal("inverted period accepted")
	}
}
