package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
)

// TestForkedChildWritingWithoutExecIsAttributed: a bash subshell is a fork that never execs;
// it copies a Part 2 bundle into the watched directory with builtins only and exits at once.
// Neither /proc (gone) nor an exec record can name it, so without the fork record the
// finding would have no program; with it, the subshell is bash, child of the outer bash.
func TestForkedChildWritingWithoutExecIsAttributed(t *testing.T) {
	w := startWard(t)
	src, err := filepath.Abs("testdata/fhir-part2-bundle.json")
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(w.watch, "subshell-export.json")
	pidFile := filepath.Join(t.TempDir(), "subshell.pid")
	script := `( echo $BASHPID > "$3"; while IFS= read -r l; do echo "$l"; done < "$1" > "$2" )`
	cmd := exec.Command("bash", "-c", script, "bash", src, dst, pidFile)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("bash: %v\n%s", err, out)
	}
	outer := cmd.ProcessState.Pid()
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || sub == outer {
		t.Fatalf("subshell pid %q (outer %d): %v", b, outer, err)
	}
	bashPath, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal(err)
	}
	bashExe, _ := filepath.EvalSymlinks(bashPath)

	evs := w.waitFor(15*time.Second, "the subshell's finding", func(evs []stored) bool { return findingFor(evs, dst) != nil })
	f := findingFor(evs, dst).GetFinding()
	if f.GetDataClass() != wardv1.DataClass_DATA_CLASS_PART2 {
		t.Errorf("data class %v, want PART2", f.GetDataClass())
	}
	p := f.GetProcess()
	if int(p.GetPid()) != sub || int(p.GetPpid()) != outer {
		t.Errorf("pid/ppid %d/%d, want the subshell %d of bash %d", p.GetPid(), p.GetPpid(), sub, outer)
	}
	if p.GetExe() != bashExe || p.GetParentExe() != bashExe {
		t.Errorf("exe %q parent %q, want %q inherited from the forking shell", p.GetExe(), p.GetParentExe(), bashExe)
	}
	if len(p.GetArgs()) < 2 || p.GetArgs()[0] != "bash" || p.GetArgs()[1] != "-c" {
		t.Errorf("args %q, want the parent's bash -c command line", p.GetArgs())
	}
	if p.GetUid() != uint32(os.Getuid()) || p.GetUser() == "" {
		t.Errorf("uid %d user %q", p.GetUid(), p.GetUser())
	}
	if p.GetContainerId() != "" {
		t.Errorf("host process reported in container %q", p.GetContainerId())
	}
	w.stop()
	assertNoRaw(t, w.home, fixtureSSNs...)
}

// TestChildWritingThroughInheritedDescriptor: `{ cat doc; } > dst` opens dst in the shell
// and the bytes come from cat, which got fd 1 across fork and never opened anything in the
// watched directory. The finding must be cat's.
func TestChildWritingThroughInheritedDescriptor(t *testing.T) {
	w := startWard(t)
	src, err := filepath.Abs("testdata/fhir-part2-bundle.json")
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(w.watch, "compound-redirect.json")
	cmd := exec.Command("/bin/sh", "-c", `{ /bin/cat "$1"; } > "$2"`, "sh", src, dst)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sh: %v\n%s", err, out)
	}
	shell := cmd.ProcessState.Pid()
	catExe, _ := filepath.EvalSymlinks("/bin/cat")

	evs := w.waitFor(15*time.Second, "cat's finding", func(evs []stored) bool { return findingFor(evs, dst) != nil })
	f := findingFor(evs, dst).GetFinding()
	if f.GetDataClass() != wardv1.DataClass_DATA_CLASS_PART2 {
		t.Errorf("data class %v, want PART2", f.GetDataClass())
	}
	// Without the inherited tracking the shell's close would still find the file modified
	// and classify it from disk, but as the shell's: the pid tells the two apart.
	p := f.GetProcess()
	exe, _ := filepath.EvalSymlinks(p.GetExe())
	if exe != catExe || int(p.GetPid()) == shell || int(p.GetPpid()) != shell {
		t.Errorf("process %s pid %d ppid %d, want %s, a child of sh %d", p.GetExe(), p.GetPid(), p.GetPpid(), catExe, shell)
	}
	w.stop()
	assertNoRaw(t, w.home, fixtureSSNs...)
}
