package tlsplain

import (
	"context"
	"errors"
	"hash/maphash"
	"log/slog"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	probe "github.com/ward-dlp/ward/bpf/tlsplain"
	"github.com/ward-dlp/ward/classifiers/engine"
)

// Source is what a Pipeline reads: the probe's records.
type Source interface {
	Next() (probe.Data, error)
}

// PipelineConfig tunes a Pipeline.
type PipelineConfig struct {
	Tracker TrackerConfig
	// Shards is how many goroutines classify, each owning the sessions whose key hashes to
	// it (default min(GOMAXPROCS, 4)). A connection's records stay in order.
	Shards int
}

// Pipeline reads the probe, keeps sessions per connection on a few shards and hands every
// finished session to a handler (which applies policy and spools events).
type Pipeline struct {
	cfg    PipelineConfig
	src    Source
	eng    *engine.Engine
	handle func(context.Context, Done)
	log    *slog.Logger
	seed   maphash.Seed
	shards []chan shardMsg
	seen   *seenSet
	sni    *nameSet

	decodeErrors atomic.Uint64
	mu           sync.Mutex
	stats        []TrackerStats
}

type shardMsg struct {
	data probe.Data
	exit uint32 // non-zero: the process exited
}

// NewPipeline returns a Pipeline; handle is called from the shard goroutines.
func NewPipeline(src Source, eng *engine.Engine, cfg PipelineConfig, handle func(context.Context, Done), log *slog.Logger) *Pipeline {
	if cfg.Shards <= 0 {
		cfg.Shards = min(runtime.GOMAXPROCS(0), 4)
	}
	if log == nil {
		log = slog.Default()
	}
	p := &Pipeline{cfg: cfg, src: src, eng: eng, handle: handle, log: log, seed: maphash.MakeSeed(),
		seen: newSeenSet(1 << 16), sni: newNameSet(1 << 14), stats: make([]TrackerStats, cfg.Shards)}
	for range cfg.Shards {
		p.shards = append(p.shards, make(chan shardMsg, 1024))
	}
	return p
}

// Run reads records until the source is closed or ctx ends, then reports what is open.
func (p *Pipeline) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for i, ch := range p.shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.shard(ctx, i, ch)
		}()
	}
	defer wg.Wait()
	for {
		d, err := p.src.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, probe.ErrClosed) {
				return nil
			}
			p.decodeErrors.Add(1)
			p.log.Debug("tls plaintext record", "err", err)
			continue
		}
		if d.SocketResolved {
			p.seen.add(d.Socket, d.Library)
		}
		select {
		case p.shards[p.shardOf(d.PID, d.Conn)] <- shardMsg{data: d}:
		case <-ctx.Done():
			return nil
		}
	}
}

func (p *Pipeline) shardOf(pid uint32, conn uint64) int {
	var h maphash.Hash
	h.SetSeed(p.seed)
	var b [12]byte
	for i := range 4 {
		b[i] = byte(pid >> (8 * i))
	}
	for i := range 8 {
		b[4+i] = byte(conn >> (8 * i))
	}
	_, _ = h.Write(b[:])
	return int(h.Sum64() % uint64(len(p.shards)))
}

func (p *Pipeline) shard(ctx context.Context, i int, in <-chan shardMsg) {
	t := NewTracker(p.eng, p.cfg.Tracker)
	tick := time.NewTicker(max(t.cfg.Idle/4, 100*time.Millisecond))
	defer tick.Stop()
	report := func(ctx context.Context, ds []Done) {
		for _, d := range ds {
			p.handle(ctx, d)
		}
		p.mu.Lock()
		p.stats[i] = t.Stats()
		p.mu.Unlock()
	}
	for {
		select {
		case <-ctx.Done():
			// Classify what is open so a stop does not swallow a finding.
			report(context.Background(), t.Flush())
			return
		case m := <-in:
			if m.exit != 0 {
				report(ctx, t.Exit(m.exit))
			} else {
				report(ctx, t.Apply(m.data))
			}
		case now := <-tick.C:
			report(ctx, t.Tick(now))
		}
	}
}

// Exit reports the sessions of an exited process. It never blocks: if a shard is
// backlogged the sessions end when they go idle instead.
func (p *Pipeline) Exit(pid uint32) {
	for _, ch := range p.shards {
		select {
		case ch <- shardMsg{exit: pid}:
		default:
		}
	}
}

// Seen reports whether plaintext of the connection with this socket cookie, or else this
// local/remote pair, went through the pipeline, and through which library.
func (p *Pipeline) Seen(cookie uint64, local, remote netip.AddrPort) (probe.Library, bool) {
	return p.seen.get(cookie, local, remote)
}

// NoteSNI records the TLS server name the network sensors saw for a socket, so a session on
// that socket is reported with it.
func (p *Pipeline) NoteSNI(cookie uint64, name string) {
	if cookie != 0 && name != "" {
		p.sni.add(cookie, name)
	}
}

// SNI returns the server name noted for a socket.
func (p *Pipeline) SNI(cookie uint64) (string, bool) {
	if cookie == 0 {
		return "", false
	}
	return p.sni.get(cookie)
}

// nameSet is a bounded cookie -> name map, oldest out first.
type nameSet struct {
	mu   sync.Mutex
	m    map[uint64]string
	ring []uint64
	next int
}

func newNameSet(n int) *nameSet {
	return &nameSet{m: make(map[uint64]string, n), ring: make([]uint64, n)}
}

func (s *nameSet) add(k uint64, v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[k]; !ok {
		if old := s.ring[s.next]; old != 0 {
			delete(s.m, old)
		}
		s.ring[s.next] = k
		s.next = (s.next + 1) % len(s.ring)
	}
	s.m[k] = v
}

func (s *nameSet) get(k uint64) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[k]
	return v, ok
}

// Stats sums the shards' counters.
func (p *Pipeline) Stats() (TrackerStats, uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var s TrackerStats
	for _, x := range p.stats {
		s.Open += x.Open
		s.Sessions += x.Sessions
		s.Evicted += x.Evicted
		s.Gaps += x.Gaps
		s.OverBudget += x.OverBudget
	}
	return s, p.decodeErrors.Load()
}

// seenSet remembers recent connections whose plaintext was seen, bounded, oldest out first.
type seenSet struct {
	mu   sync.Mutex
	m    map[seenKey]probe.Library
	ring []seenKey
	next int
}

type seenKey struct {
	cookie        uint64
	local, remote netip.AddrPort
}

func newSeenSet(n int) *seenSet {
	return &seenSet{m: make(map[seenKey]probe.Library, n), ring: make([]seenKey, n)}
}

func keysOf(cookie uint64, local, remote netip.AddrPort) []seenKey {
	var ks []seenKey
	if cookie != 0 {
		ks = append(ks, seenKey{cookie: cookie})
	}
	if local.IsValid() && remote.IsValid() {
		ks = append(ks, seenKey{local: unmap(local), remote: unmap(remote)})
	}
	return ks
}

func unmap(a netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(a.Addr().Unmap(), a.Port()) }

func (s *seenSet) add(so probe.Socket, lib probe.Library) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range keysOf(so.Cookie, so.Local, so.Remote) {
		if _, ok := s.m[k]; ok {
			continue
		}
		if old := s.ring[s.next]; old != (seenKey{}) {
			delete(s.m, old)
		}
		s.ring[s.next] = k
		s.next = (s.next + 1) % len(s.ring)
		s.m[k] = lib
	}
}

func (s *seenSet) get(cookie uint64, local, remote netip.AddrPort) (probe.Library, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range keysOf(cookie, local, remote) {
		if lib, ok := s.m[k]; ok {
			return lib, true
		}
	}
	return 0, false
}
