package tests

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// chrootCache holds debootstrap'ed Debian roots between runs, outside the repository, so
// only the first run on a machine pays for debootstrap (about two minutes).
const chrootCache = "/var/cache/ward-test-chroot"

// chrootSuite is the Debian release the install tests use, and chrootMirror its mirror.
const (
	chrootSuite  = "bookworm"
	chrootMirror = "http://deb.debian.org/debian"
)

// run runs a command with a timeout and returns its combined output.
func runCmd(t testing.TB, timeout time.Duration, env []string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s timed out after %s: %w", name, timeout, err)
	}
	return out.String(), err
}

// mustRun is runCmd that fails the test on error.
func mustRun(t testing.TB, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	out, err := runCmd(t, timeout, nil, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// debianRoot returns a cached minimal Debian root with systemd installed (for
// systemd-analyze verify), making it with debootstrap on first use.
func debianRoot(t testing.TB) string {
	t.Helper()
	base := filepath.Join(chrootCache, chrootSuite+"-systemd")
	if _, err := os.Stat(filepath.Join(base, "usr/bin/systemd-analyze")); err == nil {
		return base
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		t.Fatalf("debootstrap is not installed (scripts/deps.sh test installs it): %v", err)
	}
	if err := os.MkdirAll(chrootCache, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp, err := os.MkdirTemp(chrootCache, "."+chrootSuite+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("debootstrap %s into %s (cached for later runs)", chrootSuite, base)
	out, err := runCmd(t, 15*time.Minute, nil, "debootstrap", "--variant=minbase", "--include=systemd",
		chrootSuite, tmp, chrootMirror)
	if err != nil {
		_ = os.RemoveAll(tmp)
		t.Fatalf("debootstrap %s from %s failed (is the Debian mirror reachable?): %v\n%s",
			chrootSuite, chrootMirror, err, tail(out, 30))
	}
	if err := os.Rename(tmp, base); err != nil {
		_ = os.RemoveAll(tmp)
		if _, serr := os.Stat(filepath.Join(base, "usr/bin/systemd-analyze")); serr == nil {
			return base // another run finished first
		}
		t.Fatal(err)
	}
	return base
}

// disposableRoot mounts a throw-away overlay over the cached root with /proc, /sys and
// /dev bound in (the doctor loads real probes and reads kernel BTF), and undoes it all
// when the test ends.
func disposableRoot(t testing.TB) string {
	t.Helper()
	lower := debianRoot(t)
	work := t.TempDir()
	upper, wdir, root := filepath.Join(work, "upper"), filepath.Join(work, "work"), filepath.Join(work, "root")
	for _, d := range []string{upper, wdir, root} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mustRun(t, time.Minute, "mount", "-t", "overlay", "overlay",
		"-o", "lowerdir="+lower+",upperdir="+upper+",workdir="+wdir, root)
	mounted := []string{root}
	t.Cleanup(func() {
		for i := len(mounted) - 1; i >= 0; i-- {
			if out, err := runCmd(t, time.Minute, nil, "umount", "-l", mounted[i]); err != nil {
				t.Errorf("umount %s: %v\n%s", mounted[i], err, out)
			}
		}
	})
	for _, m := range []struct{ fs, dir string }{{"proc", "proc"}, {"sysfs", "sys"}, {"", "dev"}} {
		target := filepath.Join(root, m.dir)
		if m.fs == "" {
			mustRun(t, time.Minute, "mount", "--rbind", "/"+m.dir, target)
			mustRun(t, time.Minute, "mount", "--make-rslave", target)
		} else {
			mustRun(t, time.Minute, "mount", "-t", m.fs, m.fs, target)
		}
		mounted = append(mounted, target)
	}
	// tracefs and debugfs are not under a fresh sysfs mount; the agent needs tracefs.
	for _, m := range []struct{ fs, dir string }{{"tracefs", "sys/kernel/tracing"}} {
		target := filepath.Join(root, m.dir)
		if _, err := os.Stat(target); err == nil {
			if out, err := runCmd(t, time.Minute, nil, "mount", "-t", m.fs, m.fs, target); err == nil {
				mounted = append(mounted, target)
			} else {
				t.Logf("mount %s in the chroot: %v %s", m.fs, err, out)
			}
		}
	}
	return root
}

// inRoot runs a command inside root with chroot(8).
func inRoot(t testing.TB, root string, env []string, args ...string) (string, error) {
	t.Helper()
	env = append([]string{"DEBIAN_FRONTEND=noninteractive", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}, env...)
	return runCmd(t, 3*time.Minute, env, "chroot", append([]string{root}, args...)...)
}

// mustInRoot is inRoot that fails the test on error.
func mustInRoot(t testing.TB, root string, args ...string) string {
	t.Helper()
	out, err := inRoot(t, root, nil, args...)
	if err != nil {
		t.Fatalf("in chroot: %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}
