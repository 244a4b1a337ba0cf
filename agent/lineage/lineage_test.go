package lineage

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var t0 = time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)

func src(ino uint64, at time.Time) Source {
	return Source{Inode: Inode{Dev: 8<<20 | 1, Ino: ino}, Class: ClassPart2, Path: fmt.Sprintf("/exports/%d.xml", ino), ReadTime: at}
}

func TestReadTaintsAndDecays(t *testing.T) {
	tb := New(Config{TTL: time.Minute})
	start := t0.Add(-time.Hour)
	tb.Read(100, start, src(1, t0))
	got := tb.Taint(100, start, t0.Add(30*time.Second))
	if len(got) != 1 || got[0].Ino != 1 || got[0].ReadBy != 100 || got[0].Inherited {
		t.Fatalf("taint = %+v", got)
	}
	if c := tb.Confidence(got[0], t0.Add(30*time.Second)); c != 45 {
		t.Errorf("confidence at half the TTL = %d, want 45", c)
	}
	if c := tb.Confidence(got[0], t0); c != ConfidenceFresh {
		t.Errorf("fresh confidence = %d", c)
	}
	if got := tb.Taint(100, start, t0.Add(time.Minute)); got != nil {
		t.Errorf("taint after the TTL: %+v", got)
	}
	if got := tb.Taint(200, time.Time{}, t0); got != nil {
		t.Errorf("an unrelated process is tainted: %+v", got)
	}
	tb.Sweep(t0.Add(2 * time.Minute))
	if s := tb.Stats(); s.Tainted != 0 || s.Expired != 1 || s.Reads != 1 {
		t.Errorf("stats after sweep %+v", s)
	}
}

func TestRereadRefreshesOneSource(t *testing.T) {
	tb := New(Config{TTL: time.Minute, MaxSources: 2})
	tb.Read(1, t0, src(1, t0))
	tb.Read(1, t0, src(1, t0.Add(50*time.Second)))
	if got := tb.Taint(1, t0, t0.Add(90*time.Second)); len(got) != 1 {
		t.Fatalf("re-read did not refresh the taint: %+v", got)
	}
	tb.Read(1, t0, src(2, t0.Add(51*time.Second)))
	tb.Read(1, t0, src(3, t0.Add(52*time.Second)))
	got := tb.Taint(1, t0, t0.Add(60*time.Second))
	if len(got) != 2 || got[0].Ino != 3 || got[1].Ino != 2 {
		t.Errorf("bounded sources, freshest first: %+v", got)
	}
}

func TestExecInherits(t *testing.T) {
	tb := New(Config{TTL: time.Hour})
	shell := t0.Add(-time.Hour)
	tb.Read(10, shell, src(1, t0))
	// Started after the read: inherits. Started before (an older child): does not.
	tb.Exec(11, 10, t0.Add(time.Second), t0.Add(time.Second))
	tb.Exec(12, 10, t0.Add(-time.Minute), t0.Add(time.Second))
	got := tb.Taint(11, t0.Add(time.Second), t0.Add(time.Minute))
	if len(got) != 1 || !got[0].Inherited || got[0].ReadBy != 10 || !got[0].ReadTime.Equal(t0) {
		t.Errorf("child taint = %+v", got)
	}
	if got := tb.Taint(12, t0.Add(-time.Minute), t0.Add(time.Minute)); got != nil {
		t.Errorf("child started before the read is tainted: %+v", got)
	}
	// The inherited taint decays on the parent's clock.
	if got := tb.Taint(11, t0.Add(time.Second), t0.Add(time.Hour)); got != nil {
		t.Errorf("inherited taint outlived the TTL: %+v", got)
	}
}

// TestParentWalk: a grandchild whose exec record never reached the table (fork without
// exec, or records out of order) inherits through the resolver.
func TestParentWalk(t *testing.T) {
	parents := map[uint32]struct {
		ppid  uint32
		start time.Time
	}{
		30: {20, t0.Add(3 * time.Second)},
		20: {10, t0.Add(2 * time.Second)},
		10: {1, t0.Add(-time.Hour)},
		40: {1, t0.Add(5 * time.Second)},
	}
	calls := 0
	tb := New(Config{TTL: time.Hour, Parent: func(pid uint32) (uint32, time.Time, bool) {
		calls++
		p, ok := parents[pid]
		return p.ppid, p.start, ok
	}})
	tb.Read(10, t0.Add(-time.Hour), src(7, t0))
	got := tb.Taint(30, time.Time{}, t0.Add(time.Minute))
	if len(got) != 1 || got[0].ReadBy != 10 || !got[0].Inherited {
		t.Fatalf("grandchild taint = %+v", got)
	}
	n := calls
	if got := tb.Taint(30, t0.Add(3*time.Second), t0.Add(time.Minute)); len(got) != 1 || calls != n {
		t.Errorf("second lookup: %+v, resolver calls %d → %d (want cached)", got, n, calls)
	}
	if got := tb.Taint(40, time.Time{}, t0.Add(time.Minute)); got != nil {
		t.Errorf("unrelated process tainted: %+v", got)
	}
}

func TestPIDReuse(t *testing.T) {
	tb := New(Config{TTL: time.Hour})
	tb.Read(50, t0, src(1, t0.Add(time.Second)))
	tb.Exit(50, t0.Add(2*time.Second))
	// Still attributable to the exited process (its file is classified after it exited).
	if got := tb.Taint(50, t0, t0.Add(3*time.Second)); len(got) != 1 {
		t.Errorf("exited writer lost its taint: %+v", got)
	}
	// A new process with the same pid is not.
	if got := tb.Taint(50, t0.Add(10*time.Second), t0.Add(11*time.Second)); got != nil {
		t.Errorf("reused pid inherited the taint: %+v", got)
	}
	if s := tb.Stats(); s.Reused != 1 {
		t.Errorf("reused = %d", s.Reused)
	}
}

func TestExitGraceAndBound(t *testing.T) {
	tb := New(Config{TTL: time.Hour, ExitGrace: time.Minute, MaxProcesses: 3})
	tb.Read(1, t0, src(1, t0))
	tb.Exit(1, t0.Add(time.Second))
	tb.Sweep(t0.Add(2 * time.Minute))
	if got := tb.Taint(1, t0, t0.Add(2*time.Minute)); got != nil {
		t.Errorf("exited process kept its taint past the grace: %+v", got)
	}
	for pid := uint32(10); pid < 15; pid++ {
		tb.Read(pid, t0, src(uint64(pid), t0.Add(time.Duration(pid)*time.Second)))
	}
	s := tb.Stats()
	if s.Tainted != 3 || s.Evicted != 2 {
		t.Errorf("stats %+v, want 3 tainted and 2 evicted", s)
	}
	if got := tb.Taint(10, t0, t0.Add(time.Minute)); got != nil {
		t.Errorf("the oldest taint survived eviction")
	}
	if got := tb.Taint(14, t0, t0.Add(time.Minute)); len(got) != 1 {
		t.Errorf("the freshest taint was evicted")
	}
}

type fakeKernel struct{ tags map[Inode]uint32 }

func (k *fakeKernel) Tag(dev uint32, ino uint64, class uint32) error {
	k.tags[Inode{dev, ino}] = class
	return nil
}

func (k *fakeKernel) Untag(dev uint32, ino uint64) error {
	delete(k.tags, Inode{dev, ino})
	return nil
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestTagsPersistAndBound(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lineage", "tagged.json")
	tags, err := OpenTags(TagsConfig{Path: path, Max: 3, Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	k := &fakeKernel{tags: map[Inode]uint32{}}
	if err := tags.Attach(k); err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 4; i++ {
		cls := ClassPart2
		if i == 2 {
			cls = ClassPHI
		}
		if !tags.Add(Tag{Inode: Inode{1, i}, Class: cls, Path: fmt.Sprint(i), At: t0, Origin: "content"}) {
			t.Errorf("tag %d reported as known", i)
		}
	}
	if _, ok := tags.Lookup(Inode{1, 1}); ok {
		t.Error("least recent tag not evicted")
	}
	if len(k.tags) != 3 || k.tags[Inode{1, 2}] != uint32(ClassPHI) {
		t.Errorf("kernel tags %v", k.tags)
	}
	// PHI never downgrades Part 2; Part 2 upgrades PHI.
	tags.Add(Tag{Inode: Inode{1, 3}, Class: ClassPHI, At: t0})
	tags.Add(Tag{Inode: Inode{1, 2}, Class: ClassPart2, At: t0})
	if tg, _ := tags.Lookup(Inode{1, 3}); tg.Class != ClassPart2 {
		t.Errorf("Part 2 tag downgraded to %v", tg.Class)
	}
	if k.tags[Inode{1, 2}] != uint32(ClassPart2) {
		t.Errorf("kernel class not upgraded: %v", k.tags)
	}
	if err := tags.Save(); err != nil {
		t.Fatal(err)
	}
	re, err := OpenTags(TagsConfig{Path: path, Max: 3, Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	k2 := &fakeKernel{tags: map[Inode]uint32{}}
	if err := re.Attach(k2); err != nil {
		t.Fatal(err)
	}
	if len(k2.tags) != 3 || k2.tags[Inode{1, 4}] != uint32(ClassPart2) {
		t.Errorf("reopened set into the kernel: %v", k2.tags)
	}
	if tg, ok := re.Lookup(Inode{1, 4}); !ok || tg.Path != "4" || tg.Origin != "content" || !tg.At.Equal(t0) {
		t.Errorf("reopened tag %+v %v", tg, ok)
	}
	re.Remove(Inode{1, 4})
	if _, ok := k2.tags[Inode{1, 4}]; ok || re.Stats().Evicted != 0 {
		t.Errorf("remove: kernel %v stats %+v", k2.tags, re.Stats())
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm()&0o077 != 0 {
		t.Errorf("tag file mode: %v %v", st.Mode(), err)
	}
}

func TestTagsCorruptFileSetAside(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tagged.json")
	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	tags, err := OpenTags(TagsConfig{Path: path, Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	if tags.Stats().Tagged != 0 {
		t.Error("corrupt set loaded")
	}
	if _, err := os.Stat(path + ".corrupt"); err != nil {
		t.Errorf("corrupt file not kept aside: %v", err)
	}
}
