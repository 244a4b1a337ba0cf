// Package lineage follows regulated data from the files known to hold it into the processes
// that read them, so that what those processes write or send afterwards is attributed to
// the source even when its bytes no longer look like it: a renamed copy, a re-encoded or
// encrypted one, a paste into a form.
//
// Two tables: Tags, the files (by device and inode) a finding showed to hold Part 2 records
// or PHI, persisted across restarts and mirrored into the kernel's fileread probe; and
// Table, the taint each process carries after opening a tagged file, inherited by the
// children it starts afterwards and decaying to nothing after a TTL.
package lineage

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// Class is the data class a tag or taint carries; the numbers are wardv1.DataClass's, so
// the value travels through the kernel map unchanged.
type Class uint32

// Classes a tag can carry.
const (
	ClassUnknown Class = 0
	ClassPart2   Class = 1
	ClassPHI     Class = 2
)

func (c Class) String() string {
	switch c {
	case ClassPart2:
		return "part2"
	case ClassPHI:
		return "phi"
	}
	return "unknown"
}

// ParseClass maps a policy class name (part2, phi) to a Class.
func ParseClass(s string) (Class, bool) {
	switch s {
	case "part2":
		return ClassPart2, true
	case "phi":
		return ClassPHI, true
	}
	return ClassUnknown, false
}

// Inode names a file independently of its path: a rename keeps it, a copy does not.
// Dev is in the kernel's s_dev encoding, as the probes report it.
type Inode struct {
	Dev uint32 `json:"dev"`
	Ino uint64 `json:"ino"`
}

// Tag is what is known about a file that holds regulated data.
type Tag struct {
	Inode
	Class Class `json:"class"`
	// Path is where the file was when it was tagged (it may have moved since).
	Path string    `json:"path"`
	At   time.Time `json:"tagged_at"`
	// Origin says what showed the file to hold the data: "content" (the classifiers) or
	// "lineage" (a tainted process wrote it).
	Origin string `json:"origin"`
}

// Kernel is the probe side of the tag set (bpf/fileread): opens of tagged inodes are
// reported.
type Kernel interface {
	Tag(dev uint32, ino uint64, class uint32) error
	Untag(dev uint32, ino uint64) error
}

// TagsConfig configures a tag set.
type TagsConfig struct {
	// Path is the file the set is persisted in; empty keeps it in memory only.
	Path string
	// Max bounds the set; past it the least recently tagged or read file is forgotten.
	Max int
	Log *slog.Logger
}

// DefaultMaxTags is used when TagsConfig.Max is 0.
const DefaultMaxTags = 65536

// Tags is the bounded, persistent set of tagged files. It is safe for concurrent use.
type Tags struct {
	cfg TagsConfig
	log *slog.Logger

	mu      sync.Mutex
	set     *lru.Cache[Inode, Tag]
	kernel  Kernel
	dirty   bool
	evicted uint64
	kerrs   uint64
}

// OpenTags loads the set persisted at cfg.Path (a missing file is an empty set; a corrupt
// one is logged, renamed aside and replaced, since the set is rebuilt by later findings).
func OpenTags(cfg TagsConfig) (*Tags, error) {
	if cfg.Max <= 0 {
		cfg.Max = DefaultMaxTags
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	t := &Tags{cfg: cfg, log: cfg.Log.With("component", "lineage")}
	set, err := lru.NewWithEvict[Inode, Tag](cfg.Max, t.onEvict)
	if err != nil {
		return nil, fmt.Errorf("lineage: tag set: %w", err)
	}
	t.set = set
	if cfg.Path == "" {
		return t, nil
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o700); err != nil {
		return nil, fmt.Errorf("lineage: create %s: %w", filepath.Dir(cfg.Path), err)
	}
	b, err := os.ReadFile(cfg.Path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return t, nil
	case err != nil:
		return nil, fmt.Errorf("lineage: read tag set: %w", err)
	}
	var tags []Tag
	if err := json.Unmarshal(b, &tags); err != nil {
		aside := cfg.Path + ".corrupt"
		_ = os.Rename(cfg.Path, aside)
		t.log.Error("tagged-file set unreadable; starting empty (the file was kept aside)", "path", aside, "err", err)
		return t, nil
	}
	// Saved least recent first, so adding in order restores the recency order.
	for _, tg := range tags {
		if tg.Ino == 0 || tg.Class == ClassUnknown {
			continue
		}
		t.set.Add(tg.Inode, tg)
	}
	t.evicted = 0
	return t, nil
}

// onEvict runs under mu (the cache calls it from Add).
func (t *Tags) onEvict(k Inode, _ Tag) {
	t.evicted++
	if t.kernel != nil {
		if err := t.kernel.Untag(k.Dev, k.Ino); err != nil {
			t.kerrs++
		}
	}
}

// Attach mirrors the set into the kernel probe, now and on every later change.
func (t *Tags) Attach(k Kernel) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.kernel = k
	var errs []error
	for _, tg := range t.set.Values() {
		if err := k.Tag(tg.Dev, tg.Ino, uint32(tg.Class)); err != nil {
			t.kerrs++
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("lineage: %d of %d tags not loaded into the kernel: %w", len(errs), t.set.Len(), errs[0])
	}
	return nil
}

// Add tags a file, or refreshes its tag. A stronger class replaces a weaker one, never the
// reverse (a Part 2 file later seen with only PHI keeps its Part 2 tag). It reports
// whether the file was not tagged before.
func (t *Tags) Add(tg Tag) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	old, had := t.set.Get(tg.Inode)
	if had && rank(old.Class) > rank(tg.Class) {
		tg.Class = old.Class
	}
	t.set.Add(tg.Inode, tg)
	t.dirty = true
	if t.kernel != nil && (!had || old.Class != tg.Class) {
		if err := t.kernel.Tag(tg.Dev, tg.Ino, uint32(tg.Class)); err != nil {
			t.kerrs++
			t.log.Warn("tag not loaded into the kernel: reads of this file are not seen", "path", tg.Path, "err", err)
		}
	}
	return !had
}

func rank(c Class) int {
	switch c {
	case ClassPart2:
		return 2
	case ClassPHI:
		return 1
	}
	return 0
}

// Lookup returns a file's tag and marks it recently used.
func (t *Tags) Lookup(k Inode) (Tag, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.set.Get(k)
}

// Remove forgets a file (deleted, or no longer holding the data).
func (t *Tags) Remove(k Inode) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.set.Contains(k) {
		t.set.Remove(k) // runs onEvict, which untags in the kernel
		t.evicted--     // a removal is not an eviction
		t.dirty = true
	}
}

// TagStats are the set's counters.
type TagStats struct {
	Tagged       int
	Evicted      uint64 // forgotten to stay within Max
	KernelErrors uint64 // tags the kernel map refused
}

// Stats returns the set's counters.
func (t *Tags) Stats() TagStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return TagStats{Tagged: t.set.Len(), Evicted: t.evicted, KernelErrors: t.kerrs}
}

// Save writes the set if it changed since the last save: to a temporary file, fsync'ed,
// then renamed over the old one, so a crash leaves the old or the new set, never half.
func (t *Tags) Save() error {
	if t.cfg.Path == "" {
		return nil
	}
	t.mu.Lock()
	if !t.dirty {
		t.mu.Unlock()
		return nil
	}
	tags := t.set.Values() // oldest first
	t.dirty = false
	t.mu.Unlock()
	b, err := json.Marshal(tags)
	if err != nil {
		return fmt.Errorf("lineage: encode tag set: %w", err)
	}
	if err := writeFileAtomic(t.cfg.Path, b); err != nil {
		t.mu.Lock()
		t.dirty = true
		t.mu.Unlock()
		return err
	}
	return nil
}

func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tagged-*")
	if err != nil {
		return fmt.Errorf("lineage: save tag set: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("lineage: save tag set: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("lineage: save tag set: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("lineage: save tag set: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("lineage: save tag set: %w", err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
