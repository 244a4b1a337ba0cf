package tests

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/policy"
)

// part2Fixture is a FHIR bundle labelled 42 CFR Part 2 (meta.security 42CFRPart2).
const part2Fixture = "../classifiers/part2/testdata/fhir-r4-bundle-pretty.json"

// usbImage creates a FAT image (mkfs.vfat, as on a USB stick) and attaches it to a loop
// device, not mounted yet.
func usbImage(t *testing.T, label string) string {
	t.Helper()
	needRoot(t)
	if _, err := exec.LookPath("mkfs.vfat"); err != nil {
		t.Skip("mkfs.vfat missing (scripts/deps.sh test installs dosfstools)")
	}
	img := filepath.Join(t.TempDir(), "usb.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 32<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.vfat", "-n", label, img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.vfat: %v %s", err, out)
	}
	out, err := exec.Command("losetup", "--find", "--show", img).Output()
	if err != nil {
		t.Skipf("no loop device: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", dev).Run() })
	return dev
}

// mountUSB mounts the image's loop device on mnt with the kernel's vfat driver or, where the
// kernel has none (this project's CI VMs), through fusefat in block-device mode, which the
// mount table shows as fuseblk on the loop device, like an NTFS stick under ntfs-3g. Either
// way the agent must have been told the loop device is removable (a loop device is not).
func mountUSB(t *testing.T, dev, mnt string) string {
	t.Helper()
	err := unix.Mount(dev, mnt, "vfat", 0, "")
	if err == nil {
		t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })
		return "vfat"
	}
	if !errors.Is(err, unix.ENODEV) {
		t.Fatalf("mount vfat: %v", err)
	}
	if _, err := exec.LookPath("fusefat"); err != nil {
		t.Skip("kernel has no vfat and fusefat is missing (scripts/deps.sh test installs it)")
	}
	if out, err := exec.Command("fusefat", "-o", "rw+,blkdev,fsname="+dev, dev, mnt).CombinedOutput(); err != nil {
		t.Fatalf("fusefat: %v %s", err, out)
	}
	t.Cleanup(func() { _ = unix.Unmount(mnt, 0) })
	return "fuseblk"
}

func (w *ward) waitLog(timeout time.Duration, want string) time.Duration {
	w.t.Helper()
	start := time.Now()
	for !strings.Contains(w.readLog("agent.log"), want) {
		if time.Since(start) > timeout {
			w.t.Fatalf("agent log lacks %q after %s", want, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func fileActivities(evs []stored, path string) []*wardv1.FileActivity {
	var out []*wardv1.FileActivity
	for _, s := range evs {
		if fa := s.Event.GetFile(); fa != nil && fa.GetPath() == path {
			out = append(out, fa)
		}
	}
	return out
}

func waitFinding(w *ward, path string) *wardv1.Finding {
	w.t.Helper()
	var f *wardv1.Finding
	w.waitFor(30*time.Second, "finding for "+path, func(evs []stored) bool {
		if ev := findingFor(evs, path); ev != nil {
			f = ev.GetFinding()
			return true
		}
		return false
	}, "--kind", "finding")
	return f
}

// TestUSBStickMountedAfterStart: a USB stick (a FAT image on a loop device the config
// declares removable) is mounted after the agent started and is watched within a second;
// cp of a Part 2 document onto it is a finding naming the removable target, the process and
// the user; a cross-device mv (copy + unlink) is one too; a writable shared mapping in a
// configured directory is flagged as unclassified egress and its content still classified
// from disk at close; wardctl's table shows the target kind.
func TestUSBStickMountedAfterStart(t *testing.T) {
	dev := usbImage(t, "WARDUSB")
	w := startWard(t, "--config", writeConfig(t, "targets:\n  removable_devices: [\""+dev+"\"]\n  disable: [sync, print]\n"))
	mnt := filepath.Join(w.home, "usb")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	fstype := mountUSB(t, dev, mnt)
	took := w.waitLog(10*time.Second, `msg="watching directory" dir=`+mnt+` kind=removable`)
	t.Logf("%s stick watched %s after the mount", fstype, took)
	if took > 2*time.Second {
		t.Errorf("the stick was watched %s after the mount, want about a second", took)
	}

	cpPath, err := exec.LookPath("cp")
	if err != nil {
		t.Fatal(err)
	}
	cpPath, _ = filepath.EvalSymlinks(cpPath)
	dst := filepath.Join(mnt, "DISCHRG.JSN")
	cp := exec.Command(cpPath, part2Fixture, dst)
	if out, err := cp.CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	f := waitFinding(w, dst)
	ft := f.GetFile()
	if f.GetDataClass() != wardv1.DataClass_DATA_CLASS_PART2 || ft.GetTargetKind() != "removable" || ft.GetFstype() != fstype ||
		ft.GetTargetDevice() != dev || ft.GetMountPoint() != mnt || ft.GetTargetLabel() != "WARDUSB" {
		t.Errorf("finding target: class %v, %v", f.GetDataClass(), ft)
	}
	if p := f.GetProcess(); p.GetPid() != uint32(cp.Process.Pid) || p.GetExe() != cpPath || p.GetUser() != "root" {
		t.Errorf("finding process %v, want pid %d exe %s user root", p, cp.Process.Pid, cpPath)
	}
	if d := f.GetDecision(); d.GetRuleId() != "part2-removable-media" || d.GetAction() != wardv1.Action_ACTION_BLOCK ||
		d.GetActionTaken() != wardv1.Action_ACTION_ALERT {
		t.Errorf("decision %v", d)
	}

	// mv across devices is copy + unlink: the write hooks see the copy.
	src := filepath.Join(t.TempDir(), "moved.json")
	b, err := os.ReadFile(part2Fixture)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(src, b, 0o600); err != nil {
		t.Fatal(err)
	}
	mv := exec.Command("mv", src, mnt+"/")
	if out, err := mv.CombinedOutput(); err != nil {
		t.Fatalf("mv: %v %s", err, out)
	}
	moved := filepath.Join(mnt, "moved.json")
	if f := waitFinding(w, moved); f.GetFile().GetTargetKind() != "removable" || f.GetProcess().GetPid() != uint32(mv.Process.Pid) ||
		!strings.HasSuffix(f.GetProcess().GetExe(), "/mv") {
		t.Errorf("cross-device mv finding %v", f)
	}

	// A writable shared mapping in the configured directory: flagged at mmap, classified
	// from disk at close.
	if _, err := exec.LookPath("python3"); err == nil {
		mapped := filepath.Join(w.watch, "mapped.json")
		py := exec.Command("python3", "-c", `
import mmap, os, sys
data = open(sys.argv[2], 'rb').read()
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
os.ftruncate(fd, len(data))
m = mmap.mmap(fd, len(data), mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
m[:] = data
m.flush()
m.close()
os.close(fd)
`, mapped, part2Fixture)
		if out, err := py.CombinedOutput(); err != nil {
			t.Fatalf("python mmap writer: %v %s", err, out)
		}
		w.waitFor(20*time.Second, "mmap flag and classification of "+mapped, func(evs []stored) bool {
			var flagged, closed bool
			for _, fa := range fileActivities(evs, mapped) {
				if fa.GetKind() == wardv1.FileActivity_KIND_MMAP_SHARED && fa.GetUnclassifiedEgress() && fa.GetTargetKind() == "configured" &&
					fa.GetProcess().GetPid() == uint32(py.Process.Pid) {
					flagged = true
				}
				if fa.GetKind() == wardv1.FileActivity_KIND_WRITE_CLOSED && fa.GetContentSource() == wardv1.ContentSource_CONTENT_SOURCE_FILE_REREAD &&
					strings.Contains(strings.Join(fa.GetNotes(), ","), "mmap_shared") && fa.GetFindings() == 1 {
					closed = true
				}
			}
			return flagged && closed && findingFor(evs, mapped) != nil
		})
	}

	out, err := w.ctl("events", "--kind", "finding")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "TARGET") || !strings.Contains(out, "removable") {
		t.Errorf("wardctl events lacks the target kind:\n%s", out)
	}
	// The stick is unwatched when it goes.
	if err := unix.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}
	w.waitLog(10*time.Second, `msg="egress target gone" kind=removable dir=`+mnt)
}

// TestRenameIntoSyncFolder: a Dropbox folder in a home directory is found as a sync target;
// mv of a Part 2 document from elsewhere in the home (same file system: a rename, no byte
// written) is seen, classified from its new path, and reported with where it came from.
func TestRenameIntoSyncFolder(t *testing.T) {
	needRoot(t)
	if fi, err := os.Stat("/home"); err != nil || !fi.IsDir() {
		t.Skip("no /home")
	}
	home, err := os.MkdirTemp("/home", "ward-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	dropbox := filepath.Join(home, "Dropbox")
	if err := os.Mkdir(dropbox, 0o700); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(part2Fixture)
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(home, "intake.json")
	if err := os.WriteFile(src, b, 0o600); err != nil {
		t.Fatal(err)
	}
	w := startWard(t, "--config", writeConfig(t, "targets:\n  disable: [removable, share, print]\n"))
	w.waitLog(10*time.Second, `msg="watching directory" dir=`+dropbox+` kind=sync`)

	mv := exec.Command("mv", src, dropbox+"/")
	if out, err := mv.CombinedOutput(); err != nil {
		t.Fatalf("mv: %v %s", err, out)
	}
	dst := filepath.Join(dropbox, "intake.json")
	f := waitFinding(w, dst)
	ft := f.GetFile()
	if ft.GetTargetKind() != "sync" || ft.GetTargetLabel() != "dropbox" || ft.GetRenamedFrom() != src ||
		ft.GetContentSource() != wardv1.ContentSource_CONTENT_SOURCE_FILE_REREAD || f.GetDataClass() != wardv1.DataClass_DATA_CLASS_PART2 {
		t.Errorf("rename finding target %v class %v", ft, f.GetDataClass())
	}
	if p := f.GetProcess(); p.GetPid() != uint32(mv.Process.Pid) || !strings.HasSuffix(p.GetExe(), "/mv") || p.GetUser() != "root" {
		t.Errorf("rename finding process %v", p)
	}
	// Dropbox is not sanctioned in the default pack: Part 2 into it is a block, alerted.
	if d := f.GetDecision(); d.GetRuleId() != "part2-unsanctioned-destination" || d.GetAction() != wardv1.Action_ACTION_BLOCK {
		t.Errorf("decision %v", d)
	}
	w.waitFor(10*time.Second, "renamed-into activity", func(evs []stored) bool {
		for _, fa := range fileActivities(evs, dst) {
			if fa.GetKind() == wardv1.FileActivity_KIND_RENAMED_INTO && fa.GetRenamedFrom() == src && fa.GetTargetKind() == "sync" {
				return true
			}
		}
		return false
	}, "--kind", "file")
}

// TestKillWriterOnRemovableMedia: under a policy that kills on Part 2 written to removable
// media, a process that writes a Part 2 document to the stick and keeps writing is killed
// with SIGKILL, and the finding says ACTION_KILL was carried out. What it wrote before the
// kill stays on the stick (the agent classifies after the write).
func TestKillWriterOnRemovableMedia(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 is the writer")
	}
	dev := usbImage(t, "KILLUSB")
	work := t.TempDir()
	skey, vkey, err := policy.GenerateKey("e2e-kill")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(work, "policy.key")
	if err := os.WriteFile(keyFile, []byte(skey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, "policy:\n  keys: [\""+vkey+"\"]\n  poll_interval: 1s\n"+
		"targets:\n  removable_devices: [\""+dev+"\"]\n  disable: [sync, print]\n")
	mnt := filepath.Join(work, "usb")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	mountUSB(t, dev, mnt)
	w := startWard(t, "--config", cfg)

	src := string(policy.DefaultPack())
	src = strings.Replace(src, "version: 1\n", "version: 2\n", 1)
	old := "when: '\"part2\" in data.detected && destination.kind == \"removable-media\"'\n    then: {action: block, severity: critical}"
	if !strings.Contains(src, old) {
		t.Fatal("default pack changed; update the test")
	}
	src = strings.Replace(src, old, "when: '\"part2\" in data.detected && destination.kind == \"removable-media\"'\n    then: {action: kill, severity: critical}", 1)
	pol := filepath.Join(work, "v2.yaml")
	if err := os.WriteFile(pol, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(work, "v2.bundle")
	if out, err := w.ctl("policy", "sign", "--key", keyFile, "-o", bundle, pol); err != nil {
		t.Fatalf("sign: %v\n%s", err, out)
	}
	if out, err := w.ctl("policy", "push", bundle); err != nil {
		t.Fatalf("push: %v\n%s", err, out)
	}
	w.waitFor(30*time.Second, "v2 applied", func(evs []stored) bool {
		for _, s := range evs {
			if p := s.Event.GetHealth().GetPolicy(); p != nil && p.GetVersion() == 2 {
				return true
			}
		}
		return false
	}, "--kind", "health")

	export := filepath.Join(mnt, "export.json")
	py := exec.Command("python3", "-c", `
import os, sys, time
mnt, src = sys.argv[1], sys.argv[2]
data = open(src, 'rb').read()
with open(os.path.join(mnt, 'export.json'), 'wb') as f:
    f.write(data)
end = time.time() + 60
with open(os.path.join(mnt, 'more.txt'), 'ab') as f:
    while time.time() < end:
        f.write(b'more\n'); f.flush(); time.sleep(0.05)
`, mnt, part2Fixture)
	if err := py.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- py.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("writer ended with %v, want SIGKILL", err)
		}
	case <-time.After(45 * time.Second):
		_ = py.Process.Kill()
		t.Fatal("writer still running 45s after writing Part 2 data to the stick")
	}
	f := waitFinding(w, export)
	d := f.GetDecision()
	if d.GetAction() != wardv1.Action_ACTION_KILL || d.GetActionTaken() != wardv1.Action_ACTION_KILL ||
		!strings.Contains(d.GetEnforcement(), "SIGKILL") || d.GetPolicyVersion() != "2" {
		t.Errorf("kill decision %v", d)
	}
	if f.GetProcess().GetPid() != uint32(py.Process.Pid) || f.GetFile().GetTargetKind() != "removable" {
		t.Errorf("killed writer finding %v", f)
	}
	if st, err := os.Stat(export); err != nil || st.Size() == 0 {
		t.Errorf("the data written before the kill should still be there: %v", err)
	}
}
