package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestScan(t *testing.T) {
	dir := t.TempDir()
	clean := filepath.Join(dir, "clean")
	os.MkdirAll(clean, 0o755)
	os.WriteFile(filepath.Join(clean, "note.txt"), []byte("Patient seen for follow-up; BP 128/82.\n"), 0o644)
	dirty := filepath.Join(dir, "dirty")
	os.MkdirAll(dirty, 0o755)
	os.WriteFile(filepath.Join(dirty, "intake.txt"), []byte("Name: Jordan Sample\nSSN: 219-45-8765\nDOB: 04/12/1985\nDx F11.20\n"), 0o644)

	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"scan", clean}, &out, &errb); code != 0 {
		t.Fatalf("clean: exit %d %s %s", code, out.String(), errb.String())
	}
	out.Reset()
	if code := run(context.Background(), []string{"scan", "-o", "json", dirty}, &out, &errb); code != 1 {
		t.Fatalf("dirty: exit %d %s", code, errb.String())
	}
	var res fileResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil || len(res.Findings) < 3 {
		t.Fatalf("json: %v %s", err, out.String())
	}
	if res.Findings[0].Detector != "part2.probable-record" {
		t.Errorf("first finding %+v", res.Findings[0])
	}
	for _, raw := range []string{"219-45-8765", "219458765", "04/12/1985", "Jordan"} {
		if strings.Contains(out.String(), raw) {
			t.Errorf("output leaks %q", raw)
		}
	}
	out.Reset()
	if code := run(context.Background(), []string{"scan", dirty}, &out, &errb); code != 1 || !strings.Contains(out.String(), "***-**-8765") {
		t.Fatalf("table: exit %d\n%s", code, out.String())
	}
	if code := run(context.Background(), []string{"scan", filepath.Join(dir, "missing")}, &out, &errb); code != 2 {
		t.Fatalf("missing path: exit %d", code)
	}
	if code := run(context.Background(), []string{"scan", "-o", "yaml", dirty}, &out, &errb); code != 2 {
		t.Fatalf("bad flag: exit %d", code)
	}
}
