package tests

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestBackupRestore backs up a running collector, loses it, restores the backup into a
// fresh home at the same address and checks that wardctl shows the same events and that the
// agent enrolled with the old CA keeps shipping to the restored collector without
// re-enrolling.
func TestBackupRestore(t *testing.T) {
	w := startWard(t)
	fixture, err := os.ReadFile("testdata/fhir-part2-bundle.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(w.watch, "before.json"), fixture, 0o644); err != nil {
		t.Fatal(err)
	}
	hasFinding := func(name string) func([]stored) bool {
		return func(evs []stored) bool {
			for _, e := range evs {
				if f := e.Event.GetFinding(); f != nil && strings.HasSuffix(f.GetFile().GetPath(), name) {
					return true
				}
			}
			return false
		}
	}
	before := w.waitFor(30*time.Second, "finding for before.json", hasFinding("before.json"))

	archive := filepath.Join(t.TempDir(), "ward-backup.tar.gz")
	out, err := w.run("ward-collector", "backup", "--home", w.home, archive)
	if err != nil {
		t.Fatalf("backup of a running collector: %v\n%s", err, out)
	}
	if st, err := os.Stat(archive); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("backup archive must be 0600 (it holds the CA key): %v %v", st, err)
	}
	// Everything stored up to the backup; the agent may have added health events since.
	snapshot := w.events()
	if len(snapshot) < len(before) {
		t.Fatalf("events went from %d to %d", len(before), len(snapshot))
	}
	if out, err := w.run("ward-collector", "restore", "--home", w.home, archive); err == nil || !strings.Contains(out, "stop it first") {
		t.Fatalf("restore over a running collector: want a refusal, got %v\n%s", err, out)
	}

	// The collector's machine is lost.
	w.killCollector()
	lost := time.Now()
	fresh := filepath.Join(t.TempDir(), "restored")
	out, err = w.run("ward-collector", "restore", "--home", fresh, archive)
	if err != nil {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	if out, err := w.run("ward-collector", "restore", "--home", fresh, archive); err == nil || !strings.Contains(out, "--force") {
		t.Fatalf("second restore without --force: want a refusal, got %v\n%s", err, out)
	}
	oldCA, _ := os.ReadFile(filepath.Join(w.home, "collector", "pki", "ca.crt"))
	newCA, _ := os.ReadFile(filepath.Join(fresh, "collector", "pki", "ca.crt"))
	if len(oldCA) == 0 || string(oldCA) != string(newCA) {
		t.Fatal("the restored collector does not have the old CA")
	}

	w.home = fresh
	w.startCollector()
	restored := w.events()
	ids := func(evs []stored) []string {
		var s []string
		for _, e := range evs {
			s = append(s, e.Event.GetId())
		}
		slices.Sort(s)
		return s
	}
	// The backup was taken between the two listings: it holds every event of the first one
	// and nothing the second one lacks. The agent keeps running and ships new events (health,
	// flows) to the restored collector as soon as it is up: those are not from the backup.
	var fromBackup []stored
	for _, e := range restored {
		if e.ReceivedAt.Before(lost) {
			fromBackup = append(fromBackup, e)
		}
	}
	got := ids(fromBackup)
	for _, id := range ids(before) {
		if !slices.Contains(got, id) {
			t.Errorf("event %s stored before the backup is missing after the restore", id)
		}
	}
	all := ids(snapshot)
	for _, id := range got {
		if !slices.Contains(all, id) {
			t.Errorf("restored event %s was never stored by the old collector", id)
		}
	}
	if !hasFinding("before.json")(restored) {
		t.Fatal("the finding is not in the restored store")
	}

	// The agent, enrolled with the old CA, ships to the restored collector as it is.
	if err := os.WriteFile(filepath.Join(w.watch, "after.json"), fixture, 0o644); err != nil {
		t.Fatal(err)
	}
	w.waitFor(60*time.Second, "finding for after.json from the agent enrolled before the restore", hasFinding("after.json"))
	if log := w.readLog("agent.log"); strings.Contains(log, "not enrolled") {
		t.Error("the agent had to enrol again")
	}
}
