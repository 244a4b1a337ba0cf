package engine

import (
	"errors"
	"slices"
)

// StreamConfig bounds a Stream's memory.
type StreamConfig struct {
	// Window is how many bytes are classified at once (default 256 KiB). Memory per stream
	// is Window+Overlap.
	Window int
	// Overlap is how many bytes of the previous window are classified again with the next,
	// so an identifier, a label or a notice that straddles a chunk boundary is seen whole
	// with Overlap/2 bytes of context on each side (default 8 KiB: keyword windows are at
	// most a few hundred bytes, the longest §2.32 notice under 2 KiB). It must be less than
	// Window.
	Overlap int
}

// Stream classifies content that arrives in chunks (write() calls, TCP segments, TLS
// records) with bounded memory: chunks are gathered into windows that overlap by
// StreamConfig.Overlap bytes, each occurrence is counted in exactly one window (the one in
// which it starts before the overlap), and matches are merged. Offsets are stream offsets.
// Structure-aware detectors (FHIR JSON, CDA) see each window as a truncated document and
// report what it shows. A Stream is not safe for concurrent use; the Engine is.
type Stream struct {
	e       *Engine
	cfg     StreamConfig
	buf     []byte
	base    int64 // stream offset of buf[0]
	merged  []Match
	closed  bool
	written int64
}

// ErrStreamClosed is returned by Write after Close.
var ErrStreamClosed = errors.New("engine: write to closed stream")

// NewStream starts a stream.
func (e *Engine) NewStream(cfg StreamConfig) (*Stream, error) {
	if cfg.Window == 0 {
		cfg.Window = 256 << 10
	}
	if cfg.Overlap == 0 {
		cfg.Overlap = 8 << 10
	}
	if cfg.Window <= 0 || cfg.Overlap <= 0 || cfg.Overlap >= cfg.Window {
		return nil, errors.New("engine: stream window must be positive and larger than the overlap")
	}
	return &Stream{e: e, cfg: cfg, buf: make([]byte, 0, cfg.Window)}, nil
}

// Write adds a chunk. It never fails except after Close.
func (s *Stream) Write(p []byte) (int, error) {
	if s.closed {
		return 0, ErrStreamClosed
	}
	n := len(p)
	s.written += int64(n)
	for len(p) > 0 {
		room := s.cfg.Window - len(s.buf)
		take := min(room, len(p))
		s.buf = append(s.buf, p[:take]...)
		p = p[take:]
		if len(s.buf) == s.cfg.Window {
			s.flush(false)
		}
	}
	return n, nil
}

// flush classifies the buffered window. A non-final window owns occurrences starting
// before its overlap tail; the tail is kept and owned by the next window, which therefore
// sees whatever starts in it whole (up to Overlap bytes long).
func (s *Stream) flush(final bool) {
	// The overlap is split: an occurrence starting in its first half belongs to the earlier
	// window (which sees at least Overlap/2 bytes after it), one in its second half to the
	// later window (which sees at least Overlap/2 bytes before it), so validators that look
	// at neighbouring bytes and keywords decide the same as on the whole content.
	ctx := s.cfg.Overlap / 2
	lo, end := 0, len(s.buf)
	if s.base > 0 {
		lo = ctx
	}
	if !final {
		end -= s.cfg.Overlap - ctx
	}
	if end > lo {
		own := Span{lo, end}
		ms := s.e.classify(s.buf, &own, false)
		s.merge(ms)
	}
	if final {
		return
	}
	tail := s.buf[len(s.buf)-s.cfg.Overlap:]
	s.base += int64(len(s.buf) - s.cfg.Overlap)
	s.buf = append(s.buf[:0], tail...)
}

// merge folds window matches (window offsets) into the stream's matches.
func (s *Stream) merge(ms []Match) {
	cfg := &s.e.cfg
	for _, m := range ms {
		for i := range m.Offsets {
			m.Offsets[i] += s.base
		}
		j := slices.IndexFunc(s.merged, func(x Match) bool { return x.Detector == m.Detector && x.Class == m.Class })
		if j < 0 {
			s.merged = append(s.merged, m)
			continue
		}
		t := &s.merged[j]
		t.Count += m.Count
		if m.Confidence > t.Confidence {
			t.Confidence, t.Evidence = m.Confidence, m.Evidence
		}
		for _, o := range m.Offsets {
			if len(t.Offsets) < cfg.MaxOffsets {
				t.Offsets = append(t.Offsets, o)
			}
		}
		for k, fp := range m.Fingerprints {
			if len(t.Masked) < cfg.MaxSamples && !slices.Contains(t.Fingerprints, fp) {
				t.Masked = append(t.Masked, m.Masked[k])
				t.Fingerprints = append(t.Fingerprints, fp)
			}
		}
	}
}

// Close classifies what is left, runs the combiners over the whole stream's matches and
// returns them, strongest class first. Further writes fail.
func (s *Stream) Close() []Match {
	if s.closed {
		return nil
	}
	s.closed = true
	s.flush(true)
	s.buf = nil
	out := s.merged
	if len(out) > 0 {
		out = s.e.combine(out)
	}
	slices.SortStableFunc(out, compareMatches)
	return out
}

// Len is the number of bytes written so far.
func (s *Stream) Len() int64 { return s.written }
