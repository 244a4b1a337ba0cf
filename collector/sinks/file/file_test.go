package file

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/collector/sinks/core"
	"github.com/ward-dlp/ward/collector/sinks/internal/sinktest"
	"github.com/ward-dlp/ward/collector/sinks/ocsf"
)

func readLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		sinktest.CheckAllowed(t, path, sc.Bytes(), any(m), sinktest.OCSFAllowed)
		out = append(out, m)
	}
	return out
}

// TestRotation writes enough events to rotate several times and checks that the live file
// and Keep rotated files hold the newest events, in order, with nothing torn.
func TestRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out", "ward.ocsf.jsonl")
	s, err := New(Config{Path: path, MaxBytes: 8192, Keep: 2}, ocsf.Options{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for seq := uint64(1); seq <= 60; seq++ {
		ev := sinktest.Finding("a1", seq, wardv1.Severity_SEVERITY_HIGH)
		ids = append(ids, ev.GetId())
		if err := s.Deliver(context.Background(), sinktest.Items(ev)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + ".3"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("keep=2 but %s.3 exists", path)
	}
	var all []map[string]any
	for _, p := range []string{path + ".2", path + ".1", path} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > 8192 || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: size %d mode %v", p, fi.Size(), fi.Mode().Perm())
		}
		all = append(all, readLines(t, p)...)
	}
	if len(all) == 0 || len(all) >= 60 {
		t.Fatalf("%d lines kept; rotation should have dropped the oldest", len(all))
	}
	// The kept lines are the newest events, oldest first.
	first := len(ids) - len(all)
	for i, m := range all {
		if uid := m["metadata"].(map[string]any)["uid"]; uid != ids[first+i] {
			t.Fatalf("line %d is %v, want %s", i, uid, ids[first+i])
		}
	}
}

func TestFormats(t *testing.T) {
	dir := t.TempDir()
	for _, format := range []string{ocsf.FormatOCSF, ocsf.FormatJSON} {
		path := filepath.Join(dir, format+".jsonl")
		s, err := New(Config{Path: path, Format: format}, ocsf.Options{}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		err = s.Deliver(context.Background(), sinktest.Items(sinktest.Finding("a1", 1, wardv1.Severity_SEVERITY_HIGH), sinktest.Health("a1", 2), sinktest.File("a1", 3)))
		b, _ := os.ReadFile(path)
		lines := 0
		for _, l := range splitLines(b) {
			var m any
			if err := json.Unmarshal(l, &m); err != nil {
				t.Fatal(err)
			}
			allowed := sinktest.OCSFAllowed
			if format == ocsf.FormatJSON {
				allowed = sinktest.ViewAllowed
			}
			sinktest.CheckAllowed(t, format, l, m, allowed)
			lines++
		}
		switch format {
		case ocsf.FormatOCSF:
			var be *core.BatchError
			if !errors.As(err, &be) || !errors.Is(be.Failed[1], core.ErrSkip) || lines != 2 {
				t.Errorf("ocsf: err %v, %d lines", err, lines)
			}
		default:
			if err != nil || lines != 3 {
				t.Errorf("json: err %v, %d lines", err, lines)
			}
		}
		_ = s.Close()
	}
}

func splitLines(b []byte) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		i := 0
		for i < len(b) && b[i] != '\n' {
			i++
		}
		out = append(out, b[:i])
		if i < len(b) {
			i++
		}
		b = b[i:]
	}
	return out
}

func TestValidate(t *testing.T) {
	for _, c := range []Config{{}, {Path: "rel.jsonl"}, {Path: "/x", MaxBytes: 10}, {Path: "/x", Format: "cef"}, {Path: "/x", Keep: -1}} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}
