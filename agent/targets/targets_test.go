package targets

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestParseMountinfo(t *testing.T) {
	in := "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n" +
		"\n" +
		"40 36 8:17 / /media/u/MY\\040STICK rw - vfat /dev/sdb1 rw,uid=1000\n" +
		"41 36 0:50 / /mnt/share rw shared:7 - cifs //srv/clinic\\134x rw\n"
	ms, err := ParseMountinfo(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 3 {
		t.Fatalf("mounts %+v", ms)
	}
	if m := ms[0]; m.ID != 36 || m.ParentID != 35 || m.Major != 98 || m.Root != "/mnt1" || m.MountPoint != "/mnt2" || m.FSType != "ext3" || m.Source != "/dev/root" || m.SuperOptions != "rw,errors=continue" {
		t.Errorf("line 1: %+v", m)
	}
	if m := ms[1]; m.MountPoint != "/media/u/MY STICK" || m.Major != 8 || m.Minor != 17 {
		t.Errorf("escaped space: %+v", m)
	}
	if m := ms[2]; m.Source != `//srv/clinic\x` || m.FSType != "cifs" {
		t.Errorf("escaped backslash: %+v", m)
	}
	for _, bad := range []string{
		"36 35 98:0 /a /b rw ext3 /dev/root rw",   // no separator
		"x 35 98:0 /a /b rw - ext3 /dev/root rw",  // id
		"36 35 98 /a /b rw - ext3 /dev/root rw",   // device
		"36 35 98:0 a /b rw - ext3 /dev/root rw",  // relative root
		"36 35 98:0 /a /b rw - ext3",              // source missing
		"36 35 98:x /a /b rw - ext3 /dev/root rw", // minor
		"36 35 98:0 /a /b - ext3 /dev/root rw",    // too few fields
	} {
		if _, err := ParseMountinfo(strings.NewReader(bad)); !errors.Is(err, ErrMountinfo) {
			t.Errorf("%q: want ErrMountinfo, got %v", bad, err)
		}
	}
}

func FuzzParseMountinfo(f *testing.F) {
	f.Add("36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n")
	f.Add("40 36 8:17 / /media/u/MY\\040STICK rw - vfat /dev/sdb1 rw\n")
	f.Add("1 2 3:4 / / rw - - - -\n\\")
	f.Fuzz(func(t *testing.T, s string) {
		ms, err := ParseMountinfo(strings.NewReader(s))
		if err != nil {
			if !errors.Is(err, ErrMountinfo) && !strings.Contains(err.Error(), "read mountinfo") {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		for _, m := range ms {
			if !strings.HasPrefix(m.MountPoint, "/") || m.FSType == "" {
				t.Fatalf("accepted mount %+v", m)
			}
		}
	})
}

func TestFATLabel(t *testing.T) {
	bs := make([]byte, 512)
	bs[510], bs[511] = 0x55, 0xAA
	copy(bs[0x52:], "FAT32   ")
	bs[0x42] = 0x29
	copy(bs[0x47:], "CLINICUSB  ")
	if got := FATLabel(bs); got != "CLINICUSB" {
		t.Errorf("FAT32 label %q", got)
	}
	copy(bs[0x47:], "NO NAME    ")
	if got := FATLabel(bs); got != "" {
		t.Errorf("NO NAME label %q", got)
	}
	bs16 := make([]byte, 512)
	bs16[510], bs16[511] = 0x55, 0xAA
	bs16[0x26] = 0x29
	copy(bs16[0x2B:], "STICK16    ")
	if got := FATLabel(bs16); got != "STICK16" {
		t.Errorf("FAT16 label %q", got)
	}
	if FATLabel(bs16[:100]) != "" || FATLabel(make([]byte, 512)) != "" {
		t.Error("label from a non-boot sector")
	}
}

// fakeRoot builds a file system tree with a sysfs, users, client configs and a mount table.
func fakeRoot(t *testing.T) (root, mountinfo string) {
	t.Helper()
	root = t.TempDir()
	mk := func(p string) {
		if err := os.MkdirAll(filepath.Join(root, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p, s string) {
		mk(filepath.Dir(p))
		if err := os.WriteFile(filepath.Join(root, p), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(p, target string) {
		mk(filepath.Dir(p))
		if err := os.Symlink(target, filepath.Join(root, p)); err != nil {
			t.Fatal(err)
		}
	}
	// A USB stick (removable=0, as many report, but on a USB bus), a fixed SATA disk, an
	// SD card on an MMC host, and a disk that only says removable=1.
	usb := "/sys/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb"
	write(usb+"/removable", "0\n")
	mk(usb + "/sdb1")
	link("/sys/dev/block/8:17", "../../.."+usb+"/sdb1")
	sata := "/sys/devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda"
	write(sata+"/removable", "0\n")
	mk(sata + "/sda1")
	mk(sata + "/sda2")
	link("/sys/dev/block/8:1", "../../.."+sata+"/sda1")
	link("/sys/dev/block/8:2", "../../.."+sata+"/sda2")
	mmc := "/sys/devices/platform/soc/mmc_host/mmc0/mmc0:aaaa/block/mmcblk0"
	write(mmc+"/removable", "0\n")
	mk(mmc + "/mmcblk0p1")
	link("/sys/dev/block/179:1", "../../.."+mmc+"/mmcblk0p1")
	rem := "/sys/devices/pci0000:00/0000:00:1f.2/ata2/host1/target1:0:0/1:0:0:0/block/sdc"
	write(rem+"/removable", "1\n")
	link("/sys/dev/block/8:32", "../../.."+rem)
	write("/dev/disk/by-label/CLINIC\\x20USB", "")
	os.Remove(filepath.Join(root, "/dev/disk/by-label/CLINIC\\x20USB"))
	write("/dev/sdb1", "")
	link("/dev/disk/by-label/CLINIC\\x20USB", "../../sdb1")

	write("/etc/passwd", "root:x:0:0:root:/root:/bin/bash\n"+
		"daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"+
		"alice:x:1000:1000:Alice:/home/alice:/bin/bash\n"+
		"bob:x:1001:1001:Bob:/home/bob:/bin/bash\n"+
		"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
	mk("/root")
	mk("/usr/sbin/Dropbox") // a system user's home is never scanned
	// alice: Dropbox at a custom path (info.json), Nextcloud with two folders, CUPS-PDF.
	write("/home/alice/.dropbox/info.json", `{"personal": {"path": "/home/alice/Work Dropbox", "host": 1}}`)
	mk("/home/alice/Work Dropbox")
	write("/home/alice/.config/Nextcloud/nextcloud.cfg", "[Accounts]\n0\\Folders\\1\\localPath=/home/alice/Cloud/\n0\\Folders\\2\\localPath=/home/alice/Team\n0\\Folders\\3\\localPath=/home/alice/missing\n")
	mk("/home/alice/Cloud")
	mk("/home/alice/Team")
	mk("/home/alice/PDF")
	// bob: OneDrive at a configured sync_dir, an Insync folder, Box.
	write("/home/bob/.config/onedrive/config", "# comment\nsync_dir = \"~/MyOneDrive\"\nskip_file = \"~*\"\n")
	mk("/home/bob/MyOneDrive")
	mk("/home/bob/Insync")
	mk("/home/bob/Box")
	// carol: in /home without a passwd entry (directory users), default Dropbox.
	mk("/home/carol/Dropbox")
	mk("/var/spool/cups")
	write("/etc/cups/cups-pdf.conf", "### comment\nOut ${HOME}/PDF\n")

	mountinfo = filepath.Join(root, "mountinfo")
	write("/mountinfo", ""+
		"1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"+
		"2 1 8:2 / /boot/efi rw - vfat /dev/sda2 rw\n"+
		"3 1 8:17 / /media/alice/CLINIC\\040USB rw - vfat /dev/sdb1 rw\n"+
		"4 1 179:1 / /media/alice/SD rw - exfat /dev/mmcblk0p1 rw\n"+
		"5 1 8:32 / /mnt/dvd ro - iso9660 /dev/sr0 ro\n"+
		"6 1 0:60 / /mnt/share rw - cifs //fileserver/clinic rw\n"+
		"7 1 0:61 / /mnt/nfs rw - nfs4 nas:/export rw\n"+
		"8 1 0:62 / /home/bob/remote rw - fuse.sshfs bob@host:/srv rw\n"+
		"9 1 0:63 / /home/alice/gdrive rw - fuse.rclone gdrive: rw\n"+
		"10 1 7:0 / /mnt/image rw - vfat /dev/loop0 rw\n"+
		"11 1 0:64 / /mnt/over rw - cifs //a/b rw\n"+
		"12 1 0:65 / /mnt/over rw - tmpfs tmpfs rw\n")
	return root, mountinfo
}

func TestDiscover(t *testing.T) {
	root, mi := fakeRoot(t)
	d := New(Config{Root: root, Mountinfo: mi, Configured: []string{"/srv/exports", "/mnt/share"}}, nil)
	ts, err := d.Discover()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Target{}
	for _, x := range ts {
		got[x.Path] = x
		t.Log(x)
	}
	want := map[string]Kind{
		"/media/alice/CLINIC USB":  Removable,
		"/media/alice/SD":          Removable,
		"/mnt/dvd":                 Removable,
		"/mnt/share":               Share, // also configured: the more specific kind wins
		"/mnt/nfs":                 Share,
		"/home/bob/remote":         Share,
		"/home/alice/gdrive":       Sync,
		"/home/alice/Work Dropbox": Sync,
		"/home/alice/Cloud":        Sync,
		"/home/alice/Team":         Sync,
		"/home/bob/MyOneDrive":     Sync,
		"/home/bob/Insync":         Sync,
		"/home/bob/Box":            Sync,
		"/home/carol/Dropbox":      Sync,
		"/var/spool/cups":          Print,
		"/home/alice/PDF":          Print,
		"/srv/exports":             Configured,
	}
	for p, k := range want {
		if got[p].Kind != k {
			t.Errorf("%s: kind %q, want %q", p, got[p].Kind, k)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("unexpected target %v", got[p])
		}
	}
	// The fixed disk's EFI partition, the loop image and the over-mounted share are not targets.
	if u := got["/media/alice/CLINIC USB"]; u.FSType != "vfat" || u.Device != "/dev/sdb1" || u.Label != "CLINIC USB" || u.MountPoint != u.Path {
		t.Errorf("usb target %+v", u)
	}
	if s := got["/home/bob/MyOneDrive"]; s.Label != "onedrive" || s.MountPoint != "/" || s.FSType != "ext4" {
		t.Errorf("sync target %+v", s)
	}
	if s := got["/home/alice/gdrive"]; s.Label != "rclone" || s.Device != "gdrive:" {
		t.Errorf("rclone target %+v", s)
	}

	// Declaring the loop device removable makes the image a target; disabling kinds drops them.
	d = New(Config{Root: root, Mountinfo: mi, RemovableDevices: []string{"/dev/loop*"}, Disable: []Kind{Sync, Print, Share}}, nil)
	ts, err = d.Discover()
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, x := range ts {
		paths = append(paths, x.Path)
	}
	if !slices.Equal(paths, []string{"/media/alice/CLINIC USB", "/media/alice/SD", "/mnt/dvd", "/mnt/image"}) {
		t.Errorf("removable only, loop declared: %v", paths)
	}
}

func TestDiscoverBadMountinfo(t *testing.T) {
	mi := filepath.Join(t.TempDir(), "mountinfo")
	os.WriteFile(mi, []byte("garbage\n"), 0o644)
	if _, err := New(Config{Mountinfo: mi}, nil).Discover(); !errors.Is(err, ErrMountinfo) {
		t.Errorf("want ErrMountinfo, got %v", err)
	}
	if _, err := New(Config{Mountinfo: mi + ".missing"}, nil).Discover(); err == nil {
		t.Error("missing mount table: want error")
	}
}

// ---- real kernel: a loop-mounted FAT image plays the USB stick ----

// loopImage creates a FAT image and attaches it to a loop device (not mounted).
func loopImage(t *testing.T, label string) (dev string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for loop devices and mounts")
	}
	if _, err := exec.LookPath("mkfs.vfat"); err != nil {
		t.Skip("mkfs.vfat missing (scripts/deps.sh test installs dosfstools)")
	}
	img := filepath.Join(t.TempDir(), "usb.img")
	if out, err := exec.Command("truncate", "-s", "16M", img).CombinedOutput(); err != nil {
		t.Fatalf("truncate: %v %s", err, out)
	}
	if out, err := exec.Command("mkfs.vfat", "-n", label, img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.vfat: %v %s", err, out)
	}
	out, err := exec.Command("losetup", "--find", "--show", img).Output()
	if err != nil {
		t.Skipf("no loop device: %v", err)
	}
	dev = strings.TrimSpace(string(out))
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", dev).Run() })
	return dev
}

// mountFAT mounts a FAT image's loop device on mnt with the kernel's vfat driver, or, on
// kernels built without it (this project's CI VMs), through FUSE with fusefat in block-device
// mode, which the kernel reports as fuseblk on the loop device, as it does an NTFS stick
// mounted by ntfs-3g. It returns the file system type the mount table shows.
func mountFAT(t *testing.T, dev, mnt string) string {
	t.Helper()
	err := unix.Mount(dev, mnt, "vfat", 0, "")
	if err == nil {
		t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })
		return "vfat"
	}
	if !errors.Is(err, unix.ENODEV) {
		t.Fatalf("mount vfat: %v", err)
	}
	if _, lerr := exec.LookPath("fusefat"); lerr != nil {
		t.Skip("kernel has no vfat and fusefat is missing (scripts/deps.sh test installs it)")
	}
	if out, err := exec.Command("fusefat", "-o", "rw+,blkdev,fsname="+dev, dev, mnt).CombinedOutput(); err != nil {
		t.Fatalf("fusefat: %v %s", err, out)
	}
	t.Cleanup(func() { _ = unix.Unmount(mnt, 0) })
	return "fuseblk"
}

func TestLiveMountAppearsAndGoes(t *testing.T) {
	dev := loopImage(t, "WARDUSB")
	mnt := filepath.Join(t.TempDir(), "usb")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	// Honest detection first: a loop device is not removable unless declared.
	plain := New(Config{Disable: []Kind{Sync, Print}}, nil)
	d := New(Config{RemovableDevices: []string{dev}, Disable: []Kind{Sync, Print}},
		slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := make(chan []Target, 16)
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, time.Hour, out) }() // the interval never fires: only POLLPRI can
	find := func(ts []Target) (Target, bool) {
		for _, x := range ts {
			if x.Path == mnt {
				return x, true
			}
		}
		return Target{}, false
	}
	first := <-out
	if _, ok := find(first); ok {
		t.Fatal("target before the mount")
	}
	fstype := mountFAT(t, dev, mnt)
	mounted := time.Now()
	var got Target
	for ok := false; !ok; {
		select {
		case ts := <-out:
			got, ok = find(ts)
		case <-time.After(5 * time.Second):
			t.Fatal("mounted image not discovered within 5s")
		}
	}
	t.Logf("discovered %v %s after the mount", got, time.Since(mounted))
	if got.Kind != Removable || got.FSType != fstype || got.Device != dev || got.Label != "WARDUSB" {
		t.Errorf("target %+v", got)
	}
	if ts, err := plain.Discover(); err != nil {
		t.Fatal(err)
	} else if x, ok := find(ts); ok {
		t.Errorf("an undeclared loop device counted as removable: %v", x)
	}
	if err := unix.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}
	for gone := false; !gone; {
		select {
		case ts := <-out:
			_, present := find(ts)
			gone = !present
		case <-time.After(5 * time.Second):
			t.Fatal("unmounted image still a target after 5s")
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
