package agent

import (
	"os"
	"strconv"
	"time"

	"github.com/ward-dlp/ward/bpf/process"
)

// exePaths resolves an exec's executable to the absolute path /proc/<pid>/exe names
// (symlinks and relative paths resolved), remembering the answer per executable inode and
// the filename passed to execve. Reading the link on every exec cost ~16 µs of the agent's
// CPU per exec in an exec storm; the same few binaries run again and again. A different
// file behind the same name has another inode and misses the cache; entries expire so
// that a renamed directory is picked up. Used by one goroutine only.
type exePaths struct {
	ttl   time.Duration
	max   int
	cache map[exeKey]exeEntry
	now   func() time.Time
}

type exeKey struct {
	dev      uint32
	ino      uint64
	filename string
}

type exeEntry struct {
	path string
	at   time.Time
}

func newExePaths() *exePaths {
	return &exePaths{ttl: 5 * time.Minute, max: 4096, cache: make(map[exeKey]exeEntry), now: time.Now}
}

// resolve returns the executable's path, or "" when neither the cache nor /proc know it
// (the process already exited).
func (e *exePaths) resolve(r process.Exec) string {
	k := exeKey{dev: r.ExeDev, ino: r.ExeIno, filename: r.Filename}
	now := e.now()
	if r.ExeIno != 0 {
		if c, ok := e.cache[k]; ok && now.Sub(c.at) < e.ttl {
			return c.path
		}
	}
	path, err := os.Readlink("/proc/" + strconv.FormatUint(uint64(r.PID), 10) + "/exe")
	if err != nil {
		return ""
	}
	if r.ExeIno != 0 {
		if len(e.cache) >= e.max {
			clear(e.cache) // cheaper than LRU bookkeeping; refills from the hot binaries
		}
		e.cache[k] = exeEntry{path: path, at: now}
	}
	return path
}
