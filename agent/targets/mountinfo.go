package targets

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// ErrMountinfo wraps every mountinfo parse failure.
var ErrMountinfo = errors.New("malformed mountinfo")

// Mount is one line of /proc/<pid>/mountinfo (see proc(5)).
type Mount struct {
	ID, ParentID int
	Major, Minor uint32
	// Root is the path within the file system that is mounted (not "/" for bind mounts).
	Root       string
	MountPoint string
	Options    string
	FSType     string
	// Source is the mount source: a device node, "//server/share", "host:/export"...
	Source       string
	SuperOptions string
}

// maxMountinfoLine bounds one line; the kernel's own limit is a page per path.
const maxMountinfoLine = 64 << 10

// ParseMountinfo reads a mountinfo table. Octal escapes (\040 for a space) are decoded.
func ParseMountinfo(r io.Reader) ([]Mount, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), maxMountinfoLine)
	var out []Mount
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		m, err := parseLine(line)
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", ErrMountinfo, n, err)
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	return out, nil
}

func parseLine(line string) (Mount, error) {
	// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
	pre, post, ok := strings.Cut(line, " - ")
	if !ok {
		return Mount{}, errors.New("no ' - ' separator")
	}
	f := strings.Fields(pre)
	if len(f) < 6 {
		return Mount{}, fmt.Errorf("%d fields before the separator, want at least 6", len(f))
	}
	g := strings.Fields(post)
	if len(g) < 2 {
		return Mount{}, fmt.Errorf("%d fields after the separator, want at least 2", len(g))
	}
	var m Mount
	var err error
	if m.ID, err = strconv.Atoi(f[0]); err != nil {
		return Mount{}, fmt.Errorf("mount id %q", f[0])
	}
	if m.ParentID, err = strconv.Atoi(f[1]); err != nil {
		return Mount{}, fmt.Errorf("parent id %q", f[1])
	}
	maj, min, ok := strings.Cut(f[2], ":")
	if !ok {
		return Mount{}, fmt.Errorf("device %q is not MAJ:MIN", f[2])
	}
	ma, err1 := strconv.ParseUint(maj, 10, 32)
	mi, err2 := strconv.ParseUint(min, 10, 32)
	if err1 != nil || err2 != nil {
		return Mount{}, fmt.Errorf("device %q is not MAJ:MIN", f[2])
	}
	m.Major, m.Minor = uint32(ma), uint32(mi)
	m.Root, m.MountPoint, m.Options = unescape(f[3]), unescape(f[4]), f[5]
	if !strings.HasPrefix(m.MountPoint, "/") || !strings.HasPrefix(m.Root, "/") {
		return Mount{}, fmt.Errorf("root %q or mount point %q is not absolute", m.Root, m.MountPoint)
	}
	m.FSType, m.Source = g[0], unescape(g[1])
	if len(g) > 2 {
		m.SuperOptions = g[2]
	}
	return m, nil
}

// unescape decodes the kernel's octal escapes of space, tab, newline and backslash.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
