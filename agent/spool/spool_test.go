package spool

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func finding(i int) *wardv1.Event {
	return &wardv1.Event{
		Id: "f", AgentId: "agent-1", Time: timestamppb.Now(),
		Payload: &wardv1.Event_Finding{Finding: &wardv1.Finding{
			DataClass: wardv1.DataClass_DATA_CLASS_PHI, Confidence: uint32(i % 100),
			Matches: []*wardv1.Match{{Detector: "phi.ssn", Count: 1, MaskedSamples: []string{"***-**-6789"}}},
		}},
	}
}

func telemetry(i int) *wardv1.Event {
	return &wardv1.Event{
		Id: "t", AgentId: "agent-1", Time: timestamppb.Now(),
		Payload: &wardv1.Event_Process{Process: &wardv1.ProcessEvent{
			Kind:    wardv1.ProcessEvent_KIND_EXEC,
			Process: &wardv1.Process{Pid: uint32(i), Exe: "/usr/bin/cat", Args: []string{"cat", "/srv/notes.txt"}},
		}},
	}
}

func open(t testing.TB, dir string, o Options) *Spool {
	t.Helper()
	o.Logger = quiet()
	s, err := Open(dir, o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func mustAppend(t testing.TB, s *Spool, ev *wardv1.Event) uint64 {
	t.Helper()
	seq, err := s.Append(ev)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	return seq
}

func seqs(evs []*wardv1.Event) []uint64 {
	out := make([]uint64, len(evs))
	for i, e := range evs {
		out[i] = e.Seq
	}
	return out
}

func ackAll(t testing.TB, s *Spool, evs []*wardv1.Event) {
	t.Helper()
	var r []*wardv1.SeqRange
	for _, e := range evs {
		r = append(r, &wardv1.SeqRange{First: e.Seq, Last: e.Seq})
	}
	if err := s.Ack(r); err != nil {
		t.Fatalf("Ack: %v", err)
	}
}

func TestRoundTripFindingsFirst(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	defer s.Close()
	for i := range 6 {
		if i%2 == 0 {
			mustAppend(t, s, telemetry(i))
		} else {
			mustAppend(t, s, finding(i))
		}
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	evs, err := s.Next(100, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	got := seqs(evs)
	want := []uint64{2, 4, 6, 1, 3, 5}
	if !slicesEqual(got, want) {
		t.Fatalf("Next order = %v, want %v (findings first)", got, want)
	}
	if evs[0].GetFinding().GetMatches()[0].GetDetector() != "phi.ssn" {
		t.Fatalf("event content not round-tripped: %v", evs[0])
	}
	if more, _ := s.Next(100, 1<<20); len(more) != 0 {
		t.Fatalf("in-flight events handed out twice: %v", seqs(more))
	}
	if err := s.Ack([]*wardv1.SeqRange{{First: 1, Last: 6}}); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	if st.FindingsEvents != 0 || st.TelemetryEvents != 0 || st.InFlight != 0 || st.Segments != 0 || st.Bytes != 0 {
		t.Fatalf("after full ack stats = %+v", st)
	}
}

func slicesEqual(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestMaxBytesPerBatch(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	defer s.Close()
	for i := range 10 {
		mustAppend(t, s, finding(i))
	}
	evs, _ := s.Next(100, 1) // smaller than one event: still makes progress
	if len(evs) != 1 {
		t.Fatalf("got %d events, want 1", len(evs))
	}
	evs, _ = s.Next(3, 1<<20)
	if !slicesEqual(seqs(evs), []uint64{2, 3, 4}) {
		t.Fatalf("got %v", seqs(evs))
	}
}

func TestSeqContinuesAfterReopen(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	for i := range 5 {
		mustAppend(t, s, telemetry(i))
	}
	s.Close()

	s = open(t, dir, Options{})
	if seq := mustAppend(t, s, finding(0)); seq != 6 {
		t.Fatalf("seq after reopen = %d, want 6", seq)
	}
	// Ack everything so every segment is deleted: the seq must still continue.
	evs, _ := s.Next(100, 1<<20)
	ackAll(t, s, evs)
	if st := s.Stats(); st.Segments != 0 {
		t.Fatalf("segments left after full ack: %+v", st)
	}
	s.Close()

	s = open(t, dir, Options{})
	defer s.Close()
	if seq := mustAppend(t, s, telemetry(0)); seq != 7 {
		t.Fatalf("seq after reopen of empty spool = %d, want 7", seq)
	}
}

func TestAckStateSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	for i := range 10 {
		mustAppend(t, s, finding(i))
	}
	evs, _ := s.Next(10, 1<<20)
	if err := s.Ack([]*wardv1.SeqRange{{First: 1, Last: 3}, {First: 5, Last: 7}}); err != nil {
		t.Fatal(err)
	}
	_ = evs
	s.Close()

	s = open(t, dir, Options{})
	defer s.Close()
	evs, _ = s.Next(100, 1<<20)
	if got, want := seqs(evs), []uint64{4, 8, 9, 10}; !slicesEqual(got, want) {
		t.Fatalf("after reopen Next = %v, want %v", got, want)
	}
}

func segFiles(t *testing.T, dir string, k Log) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, k.String(), "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(m)
	return m
}

// TestCrashTornTail simulates power loss mid-write: the last record is cut in half.
func TestCrashTornTail(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	for i := range 20 {
		mustAppend(t, s, finding(i))
	}
	s.Close()
	files := segFiles(t, dir, Findings)
	last := files[len(files)-1]
	fi, _ := os.Stat(last)
	if err := os.Truncate(last, fi.Size()-7); err != nil {
		t.Fatal(err)
	}

	s = open(t, dir, Options{})
	defer s.Close()
	st := s.Stats()
	if st.CorruptRecords != 1 || st.FindingsEvents != 19 || st.TruncatedBytes == 0 {
		t.Fatalf("stats after torn tail = %+v", st)
	}
	evs, _ := s.Next(100, 1<<20)
	if len(evs) != 19 || evs[18].Seq != 19 {
		t.Fatalf("recovered %d events, last %v", len(evs), seqs(evs))
	}
	// The truncated seq 20 was never fsync'ed-and-shipped in this scenario; the state file
	// remembers it was assigned, so it is not reused.
	if seq := mustAppend(t, s, finding(0)); seq != 21 {
		t.Fatalf("seq after torn tail = %d, want 21", seq)
	}
}

// recordOffsets parses a segment's framing to find where each record starts.
func recordOffsets(t *testing.T, path string) []int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var offs []int
	for off := 0; off < len(data); {
		n, _, _, err := parseHeader(data[off:], DefaultMaxRecordBytes)
		if err != nil {
			t.Fatalf("bad framing at %d", off)
		}
		offs = append(offs, off)
		off += headerSize + n
	}
	return offs
}

func flipByte(t *testing.T, path string, at int) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[at] ^= 0x5a
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestCrashFlippedPayloadByteSkipsOneRecord(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	for i := range 10 {
		mustAppend(t, s, finding(i))
	}
	s.Close()
	seg := segFiles(t, dir, Findings)[0]
	offs := recordOffsets(t, seg)
	flipByte(t, seg, offs[4]+headerSize+3) // payload of seq 5

	s = open(t, dir, Options{})
	defer s.Close()
	if st := s.Stats(); st.CorruptRecords != 1 || st.FindingsEvents != 9 || st.TruncatedBytes != 0 {
		t.Fatalf("stats = %+v", st)
	}
	evs, _ := s.Next(100, 1<<20)
	if got, want := seqs(evs), []uint64{1, 2, 3, 4, 6, 7, 8, 9, 10}; !slicesEqual(got, want) {
		t.Fatalf("recovered %v, want %v", got, want)
	}
}

func TestCrashFlippedLengthTruncatesSegment(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	for i := range 10 {
		mustAppend(t, s, finding(i))
	}
	s.Close()
	seg := segFiles(t, dir, Findings)[0]
	offs := recordOffsets(t, seg)
	flipByte(t, seg, offs[6]+3) // high byte of seq 7's length: framing after it is untrustworthy

	s = open(t, dir, Options{})
	defer s.Close()
	if st := s.Stats(); st.CorruptRecords != 1 || st.FindingsEvents != 6 {
		t.Fatalf("stats = %+v", st)
	}
	evs, _ := s.Next(100, 1<<20)
	if got, want := seqs(evs), []uint64{1, 2, 3, 4, 5, 6}; !slicesEqual(got, want) {
		t.Fatalf("recovered %v, want %v", got, want)
	}
	if seq := mustAppend(t, s, finding(0)); seq != 11 {
		t.Fatalf("seq after truncation = %d, want 11", seq)
	}
}

func TestEvictionTelemetryFirst(t *testing.T) {
	dir := t.TempDir()
	// 16 KiB bound, 4 KiB segments.
	s := open(t, dir, Options{MaxBytes: 16 << 10, SegmentBytes: 4 << 10})
	defer s.Close()
	var findingSeqs []uint64
	for i := range 20 {
		findingSeqs = append(findingSeqs, mustAppend(t, s, finding(i)))
	}
	for i := range 2000 {
		mustAppend(t, s, telemetry(i))
	}
	st := s.Stats()
	if st.Bytes > 16<<10 {
		t.Fatalf("spool over its bound: %+v", st)
	}
	if st.FindingsEvicted != 0 || st.FindingsEvents != 20 {
		t.Fatalf("findings evicted while telemetry was left: %+v", st)
	}
	if st.TelemetryEvicted == 0 || st.TelemetryEvicted+uint64(st.TelemetryEvents) != 2000 {
		t.Fatalf("telemetry counters wrong: %+v", st)
	}
	// The surviving telemetry is the newest.
	_ = s.Sync()
	evs, _ := s.Next(10000, 1<<30)
	if !slicesEqual(seqs(evs[:20]), findingSeqs) {
		t.Fatalf("findings not intact: %v", seqs(evs[:20]))
	}
	if last := evs[len(evs)-1].Seq; last != 2020 {
		t.Fatalf("newest telemetry evicted: last seq %d", last)
	}
	s.Requeue(evs)

	// Only findings now: they fill the spool, all telemetry goes first, then the oldest findings.
	for i := range 1000 {
		mustAppend(t, s, finding(i))
	}
	st = s.Stats()
	if st.Bytes > 16<<10 || st.TelemetryEvents != 0 {
		t.Fatalf("after findings flood: %+v", st)
	}
	if st.TelemetryEvicted != 2000 {
		t.Fatalf("telemetry evicted = %d, want all 2000", st.TelemetryEvicted)
	}
	if st.FindingsEvicted == 0 || st.FindingsEvicted+uint64(st.FindingsEvents) != 1020 || st.InFlight != 0 {
		t.Fatalf("findings counters wrong: %+v", st)
	}
	evs, _ = s.Next(10000, 1<<30)
	if evs[len(evs)-1].Seq != 3020 || evs[0].Seq == 1 {
		t.Fatalf("expected the newest findings to survive, got %d..%d", evs[0].Seq, evs[len(evs)-1].Seq)
	}
}

func TestInFlightAndRequeue(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	defer s.Close()
	for i := range 12 {
		mustAppend(t, s, finding(i))
	}
	a, _ := s.Next(5, 1<<20)
	b, _ := s.Next(5, 1<<20)
	if !slicesEqual(seqs(a), []uint64{1, 2, 3, 4, 5}) || !slicesEqual(seqs(b), []uint64{6, 7, 8, 9, 10}) {
		t.Fatalf("batches %v %v", seqs(a), seqs(b))
	}
	if st := s.Stats(); st.InFlight != 10 {
		t.Fatalf("in flight = %d", st.InFlight)
	}
	s.Requeue(a) // send failure
	c, _ := s.Next(100, 1<<20)
	if !slicesEqual(seqs(c), []uint64{1, 2, 3, 4, 5, 11, 12}) {
		t.Fatalf("after requeue %v", seqs(c))
	}
	// Partial ack of batch b, then requeue the whole batch: only the un-acked come back.
	if err := s.Ack([]*wardv1.SeqRange{{First: 6, Last: 8}}); err != nil {
		t.Fatal(err)
	}
	s.Requeue(b)
	d, _ := s.Next(100, 1<<20)
	if !slicesEqual(seqs(d), []uint64{9, 10}) {
		t.Fatalf("after partial ack + requeue %v", seqs(d))
	}
	s.RequeueAll()
	e, _ := s.Next(100, 1<<20)
	if !slicesEqual(seqs(e), []uint64{1, 2, 3, 4, 5, 9, 10, 11, 12}) {
		t.Fatalf("after RequeueAll %v", seqs(e))
	}
}

func TestWaitWakesOnFindingAndGroupCommit(t *testing.T) {
	s := open(t, t.TempDir(), Options{SyncInterval: 20 * time.Millisecond})
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	if err := s.Wait(ctx); err == nil {
		t.Fatal("Wait returned on an empty spool")
	}
	cancel()

	go func() { time.Sleep(20 * time.Millisecond); _, _ = s.Append(telemetry(1)) }()
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := s.Wait(ctx); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	evs, _ := s.Next(10, 1<<20)
	if len(evs) != 1 {
		t.Fatalf("after Wait got %d events", len(evs))
	}
	t.Logf("telemetry shippable after %v (group commit)", time.Since(start))
}

// TestConcurrentAppendAndShip: several writers, one reader that sometimes "fails" and
// requeues; in the end every seq is acked exactly once.
func TestConcurrentAppendAndShip(t *testing.T) {
	s := open(t, t.TempDir(), Options{SyncInterval: 5 * time.Millisecond, SegmentBytes: 64 << 10})
	defer s.Close()
	const writers, per = 4, 2500
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				ev := telemetry(i)
				if (i+w)%10 == 0 {
					ev = finding(i)
				}
				if _, err := s.Append(ev); err != nil {
					t.Errorf("Append: %v", err)
					return
				}
			}
		}()
	}
	acked := make(map[uint64]int)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		rng := rand.New(rand.NewPCG(1, 2))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for len(acked) < writers*per {
			if err := s.Wait(ctx); err != nil {
				t.Errorf("Wait: %v (acked %d)", err, len(acked))
				return
			}
			evs, err := s.Next(200, 64<<10)
			if err != nil {
				t.Errorf("Next: %v", err)
				return
			}
			if rng.IntN(5) == 0 {
				s.Requeue(evs)
				continue
			}
			for _, e := range evs {
				acked[e.Seq]++
			}
			ackAll(t, s, evs)
		}
	}()
	wg.Wait()
	<-readerDone
	for seq := uint64(1); seq <= writers*per; seq++ {
		if acked[seq] != 1 {
			t.Fatalf("seq %d acked %d times", seq, acked[seq])
		}
	}
	if st := s.Stats(); st.FindingsEvents+st.TelemetryEvents != 0 || st.InFlight != 0 {
		t.Fatalf("spool not empty: %+v", st)
	}
}

// TestSpoolHoldsOnlyWhatItWasGiven guards against the agent ever writing raw matched
// values: only the masked sample handed to Append may appear in the files.
func TestSpoolHoldsOnlyWhatItWasGiven(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	for i := range 50 {
		mustAppend(t, s, finding(i))
		mustAppend(t, s, telemetry(i))
	}
	s.Close()
	raw, masked := []byte("123-45-6789"), []byte("***-**-6789")
	sawMasked := false
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.Contains(b, raw) {
			t.Errorf("%s contains a raw SSN", p)
		}
		sawMasked = sawMasked || bytes.Contains(b, masked)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !sawMasked {
		t.Fatal("masked sample not found: the guard is not looking at the right files")
	}
}

func TestFilePermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	s := open(t, dir, Options{})
	mustAppend(t, s, finding(1))
	s.Close()
	for _, p := range append(segFiles(t, dir, Findings), filepath.Join(dir, stateFile)) {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s mode %v: readable by others", p, fi.Mode())
		}
	}
}

func benchAppend(b *testing.B, mk func(int) *wardv1.Event) {
	s := open(b, b.TempDir(), Options{MaxBytes: 1 << 30})
	defer s.Close()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := s.Append(mk(i)); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkAppendTelemetry(b *testing.B) { benchAppend(b, telemetry) }
func BenchmarkAppendFinding(b *testing.B)   { benchAppend(b, finding) }

// TestTelemetryNotShippedBeforeFsync: the shipper never sees a record that a power loss
// could still take away, so a seq the collector stored is never reused.
func TestTelemetryNotShippedBeforeFsync(t *testing.T) {
	s := open(t, t.TempDir(), Options{SyncInterval: time.Hour})
	defer s.Close()
	mustAppend(t, s, telemetry(1))
	if evs, _ := s.Next(10, 1<<20); len(evs) != 0 {
		t.Fatalf("un-fsync'ed telemetry handed out: %v", seqs(evs))
	}
	mustAppend(t, s, finding(2)) // findings are durable on return
	if evs, _ := s.Next(10, 1<<20); !slicesEqual(seqs(evs), []uint64{2}) {
		t.Fatalf("got %v, want the finding only", seqs(evs))
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if evs, _ := s.Next(10, 1<<20); !slicesEqual(seqs(evs), []uint64{1}) {
		t.Fatalf("after Sync got %v", seqs(evs))
	}
}

// TestKillWithoutClose: the process dies without Close (no state write, no final sync);
// a copy of the directory taken at that moment opens with everything appended.
func TestKillWithoutClose(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{SegmentBytes: 4 << 10})
	for i := range 200 {
		if i%3 == 0 {
			mustAppend(t, s, finding(i))
		} else {
			mustAppend(t, s, telemetry(i))
		}
	}
	evs, _ := s.Next(50, 1<<20)
	ackAll(t, s, evs) // may or may not reach state.json before the "kill"
	snap := t.TempDir()
	copyDir(t, dir, snap)
	s.Close()

	r := open(t, snap, Options{SegmentBytes: 4 << 10})
	defer r.Close()
	st := r.Stats()
	if st.CorruptRecords != 0 || st.FindingsEvents+st.TelemetryEvents < 150 {
		t.Fatalf("after kill: %+v", st)
	}
	if seq := mustAppend(t, r, finding(0)); seq != 201 {
		t.Fatalf("seq after kill = %d, want 201", seq)
	}
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestOversizedEventRefused(t *testing.T) {
	s := open(t, t.TempDir(), Options{MaxRecordBytes: 256})
	defer s.Close()
	ev := telemetry(1)
	ev.GetProcess().Process.Args = []string{string(make([]byte, 1024))}
	if _, err := s.Append(ev); err == nil {
		t.Fatal("oversized event accepted")
	}
	if seq := mustAppend(t, s, telemetry(2)); seq != 1 {
		t.Fatalf("refused event consumed a seq: next is %d", seq)
	}
}

// TestConcurrentFindingsShareFsyncs: findings appended from many goroutines at once are all
// durable (handed to the shipper) when their Append returns, whether their own fsync or a
// concurrent one covered them.
func TestConcurrentFindingsShareFsyncs(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	defer s.Close()
	const writers, each = 8, 200
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				mustAppend(t, s, finding(w*each+i))
			}
		}()
	}
	wg.Wait()
	got, err := s.Next(writers*each+10, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != writers*each {
		t.Fatalf("%d findings shippable after all Appends returned, want %d", len(got), writers*each)
	}
}

func BenchmarkAppendFindingsParallel(b *testing.B) {
	s := open(b, b.TempDir(), Options{MaxBytes: 1 << 30})
	defer s.Close()
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := s.Append(finding(i)); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}
