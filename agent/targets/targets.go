// Package targets finds the places data leaves a workstation through the file system, and
// keeps the list current: removable media, network shares, cloud-sync folders, the print
// spool, and the directories the configuration names. Each becomes a watched directory of
// the file-write probe; the kind travels with every event about a file written there, so
// policy can tell a USB stick from an export folder.
//
// Mounts come from /proc/self/mountinfo, re-read when the kernel signals a change (POLLPRI on
// the open file), so a stick plugged in after the agent started is watched within a second.
// Sync folders and print output directories come from the users' home directories and the
// clients' own configuration files, rescanned on an interval.
//
// Real USB detection: a mount of a removable-media file system type (vfat, exfat, ntfs,
// ntfs3, fuseblk, udf, iso9660, hfsplus) counts as removable when its block device's sysfs
// node, /sys/dev/block/MAJ:MIN resolved, has removable=1 (on the disk, for a partition), or
// sits under a USB host controller (a "usbN" component in its device path), or under an MMC
// host (SD cards, which often report removable=0). Loop devices, device-mapper and NVMe or
// SATA disks do not; an operator can declare more devices removable with
// Config.RemovableDevices (glob patterns on the device path, e.g. a card reader that
// presents as a fixed SCSI disk), and the tests declare their loop device that way.
package targets

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Kind is what sort of egress a target is.
type Kind string

// Target kinds, from most to least specific: when two discoveries name the same
// directory, the earlier kind wins.
const (
	Removable  Kind = "removable"
	Share      Kind = "share"
	Sync       Kind = "sync"
	Print      Kind = "print"
	Configured Kind = "configured"
)

func (k Kind) rank() int {
	switch k {
	case Removable:
		return 5
	case Share:
		return 4
	case Sync:
		return 3
	case Print:
		return 2
	case Configured:
		return 1
	}
	return 0
}

// Target is one watched egress directory.
type Target struct {
	Kind Kind
	// Path is the directory watched (recursively, across mounts inside it).
	Path string
	// MountPoint, FSType and Device describe the mount Path is on; Device is the mount
	// source (/dev/sdb1, //server/share, host:/export, an rclone remote).
	MountPoint string
	FSType     string
	Device     string
	// Label names the target for people: a file system label, a share, a sync client.
	Label string
}

func (t Target) String() string {
	s := string(t.Kind) + " " + t.Path
	if t.FSType != "" {
		s += " (" + t.FSType
		if t.Device != "" {
			s += " on " + t.Device
		}
		s += ")"
	}
	if t.Label != "" {
		s += " " + strconv.Quote(t.Label)
	}
	return s
}

// Config says where to look. Zero values read the live system.
type Config struct {
	// Configured are directories the operator names; they are targets whether or not they
	// exist yet (the watcher waits for them).
	Configured []string
	// RemovableDevices are glob patterns (path.Match) on mount source device paths to treat
	// as removable although sysfs does not say so.
	RemovableDevices []string
	// Disable switches discovery of some kinds off (e.g. print on a host without printers).
	Disable []Kind
	// Root prefixes every path read (for tests): /etc/passwd, /home, /var/spool, /sys, /dev.
	Root string
	// Mountinfo is the mount table to read; default /proc/self/mountinfo (never prefixed).
	Mountinfo string
}

// Discoverer finds targets.
type Discoverer struct {
	cfg Config
	log *slog.Logger
}

// New returns a Discoverer.
func New(cfg Config, log *slog.Logger) *Discoverer {
	if log == nil {
		log = slog.Default()
	}
	if cfg.Mountinfo == "" {
		cfg.Mountinfo = "/proc/self/mountinfo"
	}
	return &Discoverer{cfg: cfg, log: log.With("component", "targets")}
}

func (d *Discoverer) path(p string) string {
	if d.cfg.Root == "" {
		return p
	}
	return filepath.Join(d.cfg.Root, p)
}

func (d *Discoverer) enabled(k Kind) bool { return !slices.Contains(d.cfg.Disable, k) }

// File system types that removable media carry.
var removableFS = map[string]bool{
	"vfat": true, "msdos": true, "exfat": true, "ntfs": true, "ntfs3": true, "fuseblk": true,
	"udf": true, "iso9660": true, "hfsplus": true,
}

// Network file systems.
var shareFS = map[string]bool{
	"cifs": true, "smb3": true, "smbfs": true, "nfs": true, "nfs4": true,
	"fuse.sshfs": true, "davfs": true, "fuse.davfs2": true,
}

// FUSE file systems of cloud-sync clients that mount the remote (rather than syncing a
// folder), with the label to give them.
var syncFS = map[string]string{
	"fuse.rclone":                 "rclone",
	"fuse.google-drive-ocamlfuse": "google-drive-ocamlfuse",
	"fuse.onedriver":              "onedriver",
	"fuse.insync":                 "insync",
	"fuse.pcloud":                 "pcloud",
	"fuse.gcsfuse":                "gcsfuse",
	"fuse.s3fs":                   "s3fs",
	"fuse.GoogleDriveFS":          "google-drive",
	"fuse.dropbox":                "dropbox",
	"fuse.mega":                   "mega",
	"fuse.nextcloud":              "nextcloud",
}

// Discover returns the targets as the system is now, sorted by path.
func (d *Discoverer) Discover() ([]Target, error) {
	f, err := os.Open(d.cfg.Mountinfo)
	if err != nil {
		return nil, fmt.Errorf("open mount table: %w", err)
	}
	mounts, err := ParseMountinfo(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	return d.discover(mounts), nil
}

func (d *Discoverer) discover(mounts []Mount) []Target {
	byPath := map[string]Target{}
	add := func(t Target) {
		t.Path = filepath.Clean(t.Path)
		if t.MountPoint == "" {
			if m, ok := containing(mounts, t.Path); ok {
				t.MountPoint, t.FSType, t.Device = m.MountPoint, m.FSType, m.Source
			}
		}
		if old, ok := byPath[t.Path]; ok && old.Kind.rank() >= t.Kind.rank() {
			return
		}
		byPath[t.Path] = t
	}
	for _, m := range visible(mounts) {
		switch {
		case removableFS[m.FSType] && d.enabled(Removable):
			if ok, why := d.removable(m); ok {
				add(Target{Kind: Removable, Path: m.MountPoint, MountPoint: m.MountPoint, FSType: m.FSType,
					Device: m.Source, Label: d.label(m)})
				d.log.Debug("removable mount", "mount", m.MountPoint, "device", m.Source, "why", why)
			}
		case shareFS[m.FSType] && d.enabled(Share):
			add(Target{Kind: Share, Path: m.MountPoint, MountPoint: m.MountPoint, FSType: m.FSType, Device: m.Source, Label: m.Source})
		case syncFS[m.FSType] != "" && d.enabled(Sync):
			add(Target{Kind: Sync, Path: m.MountPoint, MountPoint: m.MountPoint, FSType: m.FSType, Device: m.Source, Label: syncFS[m.FSType]})
		}
	}
	homes := d.homes()
	if d.enabled(Sync) {
		for _, h := range homes {
			for _, t := range d.syncFolders(h) {
				add(t)
			}
		}
	}
	if d.enabled(Print) {
		for _, t := range d.printDirs(homes) {
			add(t)
		}
	}
	for _, p := range d.cfg.Configured {
		add(Target{Kind: Configured, Path: p, Label: "configured"})
	}
	out := make([]Target, 0, len(byPath))
	for _, t := range byPath {
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b Target) int { return strings.Compare(a.Path, b.Path) })
	return out
}

// visible drops mounts hidden under a later mount on the same mount point: only the top one
// receives writes.
func visible(mounts []Mount) []Mount {
	top := map[string]int{}
	for i, m := range mounts {
		top[m.MountPoint] = i
	}
	out := make([]Mount, 0, len(mounts))
	for i, m := range mounts {
		if top[m.MountPoint] == i {
			out = append(out, m)
		}
	}
	return out
}

// containing returns the visible mount a path is on: the longest mount point prefix.
func containing(mounts []Mount, path string) (Mount, bool) {
	var best Mount
	found := false
	for _, m := range visible(mounts) {
		mp := m.MountPoint
		if path == mp || mp == "/" || strings.HasPrefix(path, mp+"/") {
			if !found || len(mp) > len(best.MountPoint) {
				best, found = m, true
			}
		}
	}
	return best, found
}

// removable decides whether a mount's block device is removable media, and says why.
func (d *Discoverer) removable(m Mount) (bool, string) {
	maj, min := m.Major, m.Minor
	if strings.HasPrefix(m.Source, "/dev/") {
		// fuseblk (ntfs-3g) reports an anonymous device; the source node names the real one.
		var st unix.Stat_t
		if maj == 0 && unix.Stat(d.path(m.Source), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK {
			maj, min = unix.Major(st.Rdev), unix.Minor(st.Rdev)
		}
		names := []string{m.Source}
		if real, err := filepath.EvalSymlinks(d.path(m.Source)); err == nil {
			names = append(names, strings.TrimPrefix(real, d.cfg.Root))
		}
		for _, pat := range d.cfg.RemovableDevices {
			for _, n := range names {
				if ok, _ := filepath.Match(pat, n); ok {
					return true, "configured removable device " + pat
				}
			}
		}
	}
	if maj == 0 {
		return false, "no block device"
	}
	link := d.path(fmt.Sprintf("/sys/dev/block/%d:%d", maj, min))
	dev, err := filepath.EvalSymlinks(link)
	if err != nil {
		return false, "no sysfs node"
	}
	for _, c := range strings.Split(dev, "/") {
		if strings.HasPrefix(c, "usb") && len(c) > 3 && strings.Trim(c[3:], "0123456789") == "" {
			return true, "on a USB bus"
		}
		if c == "mmc_host" {
			return true, "on an MMC/SD host"
		}
	}
	// removable is an attribute of the disk; a partition's node sits inside its disk's.
	for _, p := range []string{dev, filepath.Dir(dev)} {
		if b, err := os.ReadFile(filepath.Join(p, "removable")); err == nil && strings.TrimSpace(string(b)) == "1" {
			return true, "sysfs removable=1"
		}
	}
	return false, "fixed disk"
}

// label names removable media: the udev by-label link, else (FAT) the boot sector's label.
func (d *Discoverer) label(m Mount) string {
	dir := d.path("/dev/disk/by-label")
	if real, err := filepath.EvalSymlinks(d.path(m.Source)); err == nil {
		if ents, err := os.ReadDir(dir); err == nil {
			for _, e := range ents {
				if r, err := filepath.EvalSymlinks(filepath.Join(dir, e.Name())); err == nil && r == real {
					return unescape(strings.ReplaceAll(e.Name(), `\x20`, " "))
				}
			}
		}
	}
	// FAT sticks, also when mounted through FUSE (fuseblk); FATLabel checks the signature.
	if m.FSType == "vfat" || m.FSType == "msdos" || m.FSType == "fuseblk" {
		if f, err := os.Open(d.path(m.Source)); err == nil {
			defer f.Close()
			var bs [512]byte
			if _, err := io.ReadFull(f, bs[:]); err == nil {
				return FATLabel(bs[:])
			}
		}
	}
	return ""
}

// FATLabel reads the volume label from a FAT12/16/32 boot sector ("" when none).
func FATLabel(bs []byte) string {
	if len(bs) < 512 || bs[510] != 0x55 || bs[511] != 0xAA {
		return ""
	}
	if oem := string(bs[3:11]); oem == "NTFS    " || oem == "EXFAT   " {
		return ""
	}
	off := 0x2B // FAT12/16 extended BPB
	if string(bs[0x52:0x5A]) == "FAT32   " {
		off = 0x47
	}
	if bs[off-5] != 0x29 { // extended boot signature: label and serial present
		return ""
	}
	l := strings.TrimRight(string(bs[off:off+11]), " \x00")
	if l == "NO NAME" {
		return ""
	}
	for _, r := range l {
		if r < 0x20 || r == 0x7f {
			return ""
		}
	}
	return l
}

// home is a user's home directory.
type home struct {
	user string
	dir  string
}

// homes lists login users' home directories that exist: /etc/passwd entries with a uid of
// 1000 or more (and root), plus directories under /home without an entry (LDAP/SSSD users).
func (d *Discoverer) homes() []home {
	var out []home
	seen := map[string]bool{}
	if f, err := os.Open(d.path("/etc/passwd")); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			p := strings.Split(sc.Text(), ":")
			if len(p) < 7 {
				continue
			}
			uid, err := strconv.Atoi(p[2])
			if err != nil || (uid != 0 && uid < 1000) || uid == 65534 || !filepath.IsAbs(p[5]) || p[5] == "/" {
				continue
			}
			if fi, err := os.Stat(d.path(p[5])); err == nil && fi.IsDir() && !seen[p[5]] {
				seen[p[5]] = true
				out = append(out, home{user: p[0], dir: filepath.Clean(p[5])})
			}
		}
		f.Close()
	}
	if ents, err := os.ReadDir(d.path("/home")); err == nil {
		for _, e := range ents {
			dir := filepath.Join("/home", e.Name())
			if e.IsDir() && !seen[dir] {
				seen[dir] = true
				out = append(out, home{user: e.Name(), dir: dir})
			}
		}
	}
	return out
}

// isDir reports whether a (root-relative) path is a directory, following symlinks.
func (d *Discoverer) isDir(p string) bool {
	fi, err := os.Stat(d.path(p))
	return err == nil && fi.IsDir()
}

// syncFolders finds the cloud-sync folders of one home directory, from the clients'
// configuration where they have one and their default folder names otherwise.
func (d *Discoverer) syncFolders(h home) []Target {
	var out []Target
	add := func(p, label string) {
		if p == "" {
			return
		}
		if strings.HasPrefix(p, "~/") {
			p = filepath.Join(h.dir, p[2:])
		}
		if !filepath.IsAbs(p) {
			p = filepath.Join(h.dir, p)
		}
		p = filepath.Clean(p)
		if d.isDir(p) {
			out = append(out, Target{Kind: Sync, Path: p, Label: label})
		}
	}
	// Dropbox writes its folders to ~/.dropbox/info.json.
	if b, err := os.ReadFile(d.path(filepath.Join(h.dir, ".dropbox", "info.json"))); err == nil {
		var info map[string]struct {
			Path string `json:"path"`
		}
		if json.Unmarshal(b, &info) == nil {
			for _, acct := range []string{"personal", "business"} {
				add(info[acct].Path, "dropbox")
			}
		}
	}
	add("Dropbox", "dropbox")
	// OneDrive (abraunegg/onedrive): sync_dir in ~/.config/onedrive/config, default ~/OneDrive.
	add(iniValue(d.path(filepath.Join(h.dir, ".config", "onedrive", "config")), "sync_dir"), "onedrive")
	add("OneDrive", "onedrive")
	// Insync keeps one folder per account under ~/Insync.
	add("Insync", "insync")
	// Google Drive: folders of insync/rclone/ocamlfuse setups (mounts are found as mounts).
	add("GoogleDrive", "google-drive")
	add("Google Drive", "google-drive")
	// Nextcloud and ownCloud desktop clients: every localPath of every account.
	for _, c := range []struct{ file, label string }{
		{".config/Nextcloud/nextcloud.cfg", "nextcloud"},
		{".config/ownCloud/owncloud.cfg", "owncloud"},
	} {
		for _, p := range qtLocalPaths(d.path(filepath.Join(h.dir, c.file))) {
			add(p, c.label)
		}
	}
	add("Nextcloud", "nextcloud")
	add("ownCloud", "owncloud")
	add("Box", "box")
	add("MEGA", "mega")
	add("MEGAsync", "mega")
	return out
}

// iniValue returns the (unquoted) value of key in a "key = value" file, "" when absent.
func iniValue(file, key string) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if ok && strings.TrimSpace(k) == key {
			return strings.Trim(strings.TrimSpace(v), `"'`)
		}
	}
	return ""
}

// qtLocalPaths reads the folder paths of a Nextcloud/ownCloud client configuration (a Qt
// INI file with keys such as "0\Folders\1\localPath=/home/u/Nextcloud/").
func qtLocalPaths(file string) []string {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range bytes.Split(b, []byte("\n")) {
		k, v, ok := strings.Cut(strings.TrimSpace(string(line)), "=")
		if ok && strings.HasSuffix(k, `\localPath`) && strings.TrimSpace(v) != "" {
			out = append(out, strings.TrimSpace(v))
		}
	}
	return out
}

// printDirs finds the CUPS spool and CUPS-PDF output directories.
func (d *Discoverer) printDirs(homes []home) []Target {
	var out []Target
	if d.isDir("/var/spool/cups") {
		out = append(out, Target{Kind: Print, Path: "/var/spool/cups", Label: "cups spool"})
	}
	conf := "/etc/cups/cups-pdf.conf"
	if _, err := os.Stat(d.path(conf)); err != nil {
		return out
	}
	outDir := "/var/spool/cups-pdf/${USER}"
	if v := confDirective(d.path(conf), "Out"); v != "" {
		outDir = v
	}
	for _, h := range homes {
		p := strings.NewReplacer("${HOME}", h.dir, "${USER}", h.user).Replace(outDir)
		if filepath.IsAbs(p) && d.isDir(p) {
			out = append(out, Target{Kind: Print, Path: filepath.Clean(p), Label: "cups-pdf"})
		}
	}
	return out
}

// confDirective returns the value of a CUPS-style "Name value" directive.
func confDirective(file, name string) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == name {
			return f[1]
		}
	}
	return ""
}
