package stream

import (
	"bytes"
	"testing"
	"time"
)

var t0 = time.Unix(1_800_000_000, 0)

func TestSequentialWritesReassembleAtClose(t *testing.T) {
	a := New(Config{MaxFileBytes: 1 << 10, MaxBufferedBytes: 4 << 10, MaxOpen: 8, IdleFlush: time.Second})
	k := Key{TGID: 10, FD: 3}
	f := File{Path: "/w/a.json", Device: 1, Inode: 2}
	a.Open(k, f, t0)
	a.Write(k, File{}, -1, 5, []byte("hello"), t0)
	a.Write(k, File{}, -1, 6, []byte(" world"), t0)
	c, ok := a.Close(k, t0)
	if !ok {
		t.Fatal("no content at close")
	}
	if string(c.Data) != "hello world" || !c.Complete || c.Reason != Closed || c.File != f {
		t.Fatalf("got %+v", c)
	}
	if c.BytesWritten != 11 || c.BytesCaptured != 11 || c.WriteCalls != 2 {
		t.Fatalf("counters %+v", c)
	}
	if st := a.Stats(); st.Open != 0 || st.BufferedBytes != 0 {
		t.Fatalf("state left behind: %+v", st)
	}
}

func TestPwriteOutOfOrderFillsInPlace(t *testing.T) {
	a := New(Config{MaxFileBytes: 1 << 10})
	k := Key{TGID: 1, FD: 4}
	a.Open(k, File{Path: "/w/x"}, t0)
	a.Write(k, File{}, 0, 4, []byte("abcd"), t0)
	a.Write(k, File{}, 8, 4, []byte("ijkl"), t0) // hole 4..8: incomplete
	a.Write(k, File{}, 4, 4, []byte("efgh"), t0)
	c, _ := a.Close(k, t0)
	if string(c.Data) != "abcdefghijkl" {
		t.Fatalf("data %q", c.Data)
	}
	if c.Complete {
		t.Fatal("a write past a hole must make the run incomplete (re-read from disk)")
	}
}

func TestTruncatedCaptureIsIncomplete(t *testing.T) {
	a := New(Config{MaxFileBytes: 1 << 10})
	k := Key{TGID: 1, FD: 4}
	a.Write(k, File{Path: "/w/x"}, -1, 100, []byte("only a prefix"), t0)
	c, ok := a.Close(k, t0)
	if !ok || c.Complete || c.BytesWritten != 100 || c.BytesCaptured != 13 {
		t.Fatalf("got %+v ok=%v", c, ok)
	}
}

func TestPerFileBoundOverflows(t *testing.T) {
	a := New(Config{MaxFileBytes: 8, MaxBufferedBytes: 64})
	k := Key{TGID: 1, FD: 4}
	a.Write(k, File{Path: "/w/x"}, -1, 6, []byte("012345"), t0)
	a.Write(k, File{}, -1, 6, []byte("6789ab"), t0)
	c, _ := a.Close(k, t0)
	if string(c.Data) != "01234567" || c.Complete {
		t.Fatalf("got %q complete=%v", c.Data, c.Complete)
	}
	if a.Stats().Overflows != 1 {
		t.Fatalf("overflows %d", a.Stats().Overflows)
	}
}

func TestIdleFlushStartsANewRun(t *testing.T) {
	a := New(Config{MaxFileBytes: 64, IdleFlush: time.Second})
	k := Key{TGID: 1, FD: 4}
	a.Open(k, File{Path: "/w/log"}, t0)
	a.Write(k, File{}, -1, 3, []byte("one"), t0)
	if out := a.Tick(t0.Add(500 * time.Millisecond)); len(out) != 0 {
		t.Fatalf("flushed too early: %d", len(out))
	}
	out := a.Tick(t0.Add(2 * time.Second))
	if len(out) != 1 || string(out[0].Data) != "one" || out[0].Reason != Idle {
		t.Fatalf("idle flush %+v", out)
	}
	if out := a.Tick(t0.Add(5 * time.Second)); len(out) != 0 {
		t.Fatal("an idle stream with nothing new must not be emitted again")
	}
	a.Write(k, File{}, -1, 3, []byte("two"), t0.Add(6*time.Second))
	c, ok := a.Close(k, t0.Add(7*time.Second))
	if !ok || string(c.Data) != "two" || c.Base != 3 || !c.Complete {
		t.Fatalf("second run %+v", c)
	}
}

func TestBufferPressureEmitsOldestStream(t *testing.T) {
	a := New(Config{MaxFileBytes: 8, MaxBufferedBytes: 16, MaxOpen: 8})
	k1, k2, k3 := Key{1, 3}, Key{2, 3}, Key{3, 3}
	a.Write(k1, File{Path: "/a"}, -1, 8, bytes.Repeat([]byte("a"), 8), t0)
	a.Write(k2, File{Path: "/b"}, -1, 8, bytes.Repeat([]byte("b"), 8), t0.Add(time.Second))
	out := a.Write(k3, File{Path: "/c"}, -1, 8, bytes.Repeat([]byte("c"), 8), t0.Add(2*time.Second))
	if len(out) != 1 || out[0].File.Path != "/a" || out[0].Reason != Pressure {
		t.Fatalf("pressure emission %+v", out)
	}
	if st := a.Stats(); st.BufferedBytes > 16 || st.PressureFlushes != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestMaxOpenEvictsAndExitEndsStreams(t *testing.T) {
	a := New(Config{MaxFileBytes: 8, MaxOpen: 2})
	a.Write(Key{1, 3}, File{Path: "/a"}, -1, 1, []byte("a"), t0)
	a.Write(Key{1, 4}, File{Path: "/b"}, -1, 1, []byte("b"), t0.Add(time.Second))
	out := a.Write(Key{2, 3}, File{Path: "/c"}, -1, 1, []byte("c"), t0.Add(2*time.Second))
	if len(out) != 1 || out[0].File.Path != "/a" {
		t.Fatalf("eviction %+v", out)
	}
	out = a.Exit(1, t0.Add(3*time.Second))
	if len(out) != 1 || out[0].File.Path != "/b" || out[0].Reason != Exited {
		t.Fatalf("exit %+v", out)
	}
	if a.Stats().Open != 1 {
		t.Fatalf("open %d", a.Stats().Open)
	}
}

func TestReopenedDescriptorDoesNotMergeFiles(t *testing.T) {
	a := New(Config{})
	k := Key{TGID: 1, FD: 3}
	a.Open(k, File{Path: "/first"}, t0)
	a.Write(k, File{}, -1, 3, []byte("one"), t0)
	out := a.Open(k, File{Path: "/second"}, t0)
	if len(out) != 1 || out[0].File.Path != "/first" || string(out[0].Data) != "one" {
		t.Fatalf("lost-close handling %+v", out)
	}
	a.Write(k, File{}, -1, 3, []byte("two"), t0)
	c, _ := a.Close(k, t0)
	if c.File.Path != "/second" || string(c.Data) != "two" {
		t.Fatalf("second file %+v", c)
	}
}

func FuzzAssembler(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Add([]byte("\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\xff\xfe"))
	f.Fuzz(func(t *testing.T, ops []byte) {
		a := New(Config{MaxFileBytes: 32, MaxBufferedBytes: 64, MaxOpen: 3, IdleFlush: time.Second})
		now := t0
		for i := 0; i+2 < len(ops); i += 3 {
			k := Key{TGID: uint32(ops[i] % 3), FD: int32(ops[i+1] % 3)}
			now = now.Add(time.Duration(ops[i+2]) * 10 * time.Millisecond)
			switch ops[i] % 5 {
			case 0:
				a.Open(k, File{Path: "/p"}, now)
			case 1, 2:
				n := int(ops[i+2] % 40)
				off := int64(ops[i+1]%50) - 1
				a.Write(k, File{}, off, uint64(n+int(ops[i]%3)), bytes.Repeat([]byte{'x'}, n), now)
			case 3:
				a.Close(k, now)
			case 4:
				a.Tick(now)
			}
			st := a.Stats()
			if st.BufferedBytes < 0 || st.BufferedBytes > 64 || st.Open > 3 {
				t.Fatalf("bounds broken: %+v", st)
			}
		}
	})
}

func TestCloseWithoutWritesIsUnobserved(t *testing.T) {
	a := New(Config{})
	k := Key{TGID: 7, FD: 3}
	a.Open(k, File{Path: "/w/copied.json", Inode: 9}, t0)
	c, ok := a.Close(k, t0.Add(time.Millisecond))
	if !ok || !c.Unobserved || c.File.Path != "/w/copied.json" || len(c.Data) != 0 || c.Complete {
		t.Fatalf("got %+v ok=%v", c, ok)
	}
	// A descriptor we never saw opened says nothing when it closes.
	if _, ok := a.Close(Key{TGID: 8, FD: 3}, t0); ok {
		t.Fatal("close of an unknown descriptor emitted content")
	}
	// Same at process exit.
	a.Open(k, File{Path: "/w/mmapped"}, t0)
	out := a.Exit(7, t0.Add(time.Second))
	if len(out) != 1 || !out[0].Unobserved || out[0].Reason != Exited {
		t.Fatalf("exit %+v", out)
	}
}

func TestCopyWithoutDataIsIncomplete(t *testing.T) {
	// copy_file_range/sendfile/splice arrive as writes with a length and no bytes.
	a := New(Config{})
	k := Key{TGID: 7, FD: 3}
	a.Open(k, File{Path: "/w/c"}, t0)
	a.Write(k, File{}, 0, 4096, nil, t0)
	c, ok := a.Close(k, t0)
	if !ok || c.Complete || c.Unobserved || c.BytesWritten != 4096 || c.BytesCaptured != 0 {
		t.Fatalf("got %+v", c)
	}
}

func TestNotesDupAndRename(t *testing.T) {
	a := New(Config{})
	at := time.Unix(100, 0)
	k := Key{TGID: 1, FD: 3}
	f := File{Path: "/usb/a.txt", Inode: 9, WatchDir: "/usb"}
	a.Open(k, f, at)
	a.Write(k, f, 0, 5, []byte("hello"), at)
	if !a.Note(k, NoteFtruncate) || a.Note(Key{TGID: 1, FD: 99}, NoteFtruncate) {
		t.Fatal("Note on tracked/untracked descriptors")
	}
	// A dup is a stream of its own for the same file, carrying the notes.
	k2 := Key{TGID: 1, FD: 40}
	if _, ok := a.Dup(k, k2, at); !ok {
		t.Fatal("Dup of a tracked descriptor")
	}
	if _, ok := a.Dup(Key{TGID: 1, FD: 77}, Key{TGID: 1, FD: 78}, at); ok {
		t.Fatal("Dup of an untracked descriptor")
	}
	a.Write(k2, File{}, 5, 3, []byte("abc"), at)
	if n := a.NoteProcess(1, NoteMmapShared); n != 2 {
		t.Fatalf("NoteProcess touched %d streams", n)
	}
	c, ok := a.Close(k, at)
	if !ok || c.Complete || c.Notes != NoteFtruncate|NoteMmapShared || c.File.WatchDir != "/usb" {
		t.Fatalf("close = %+v", c)
	}
	if got := c.Notes.Strings(); len(got) != 2 || got[0] != "ftruncate" || got[1] != "mmap_shared" {
		t.Errorf("note names %v", got)
	}
	c2, ok := a.Close(k2, at)
	if !ok || c2.File.Path != "/usb/a.txt" || c2.Notes&NoteDup == 0 || string(c2.Data) != "abc" || c2.Base != 5 {
		t.Fatalf("dup close = %+v", c2)
	}
	// A descriptor mapped shared and idle-flushed is checked again at close, with no write.
	k3 := Key{TGID: 2, FD: 5}
	a.Open(k3, f, at)
	a.Write(k3, f, 0, 1, []byte("x"), at)
	a.Note(k3, NoteMmapShared)
	if cs := a.Tick(at.Add(time.Hour)); len(cs) != 1 {
		t.Fatalf("tick emitted %d", len(cs))
	}
	if c, ok := a.Close(k3, at.Add(2*time.Hour)); !ok || !c.Unobserved || c.Notes&NoteMmapShared == 0 {
		t.Fatalf("mapped close after idle = %+v %v", c, ok)
	}
	r := RenamedInto(7, f, "/home/u/a.txt", at)
	if r.Reason != Renamed || r.Complete || r.RenamedFrom != "/home/u/a.txt" || r.Reason.String() != "renamed" {
		t.Errorf("renamed = %+v", r)
	}
}

// A child's inherited descriptor is a stream of its own under the child's tgid, for the
// parent's file, noted as inherited; the parent's stream goes on separately.
func TestInherit(t *testing.T) {
	a := New(Config{})
	at := time.Unix(100, 0)
	parent, child := Key{TGID: 10, FD: 1}, Key{TGID: 11, FD: 1}
	f := File{Path: "/usb/out.txt", Inode: 7, WatchDir: "/usb"}
	a.Open(parent, f, at)
	if _, ok := a.Inherit(Key{TGID: 10, FD: 2}, child, at); ok {
		t.Fatal("Inherit of an untracked descriptor")
	}
	if _, ok := a.Inherit(parent, child, at); !ok {
		t.Fatal("Inherit of a tracked descriptor")
	}
	a.Write(child, File{}, 0, 6, []byte("first\n"), at)
	c, ok := a.Close(child, at)
	if !ok || c.File.Path != "/usb/out.txt" || c.Notes&NoteInherited == 0 || string(c.Data) != "first\n" {
		t.Fatalf("child close = %+v", c)
	}
	if got := c.Notes.Strings(); len(got) != 1 || got[0] != "inherited" {
		t.Errorf("note names %v", got)
	}
	if _, ok := a.Lookup(parent); !ok {
		t.Fatal("the parent's stream ended with the child's")
	}
}
