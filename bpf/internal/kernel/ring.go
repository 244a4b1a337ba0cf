package kernel

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/cilium/ebpf/ringbuf"
)

// Ring is what every probe shares once its programs are attached: the loader with its maps,
// the reader of its "events" ring buffer, and a Close that runs once, unblocks a reader
// blocked in Read, and frees the maps only when no caller of Maps is using them.
type Ring struct {
	loader *Loader
	rd     *ringbuf.Reader

	mu     sync.Mutex // held while the loader's maps are in use; Close takes it to free them
	closed bool
	// closing is set before the reader is closed, so Fill stops reading its mapping.
	closing bool

	once sync.Once
	err  error
}

// OpenRing starts reading the loader's "events" ring buffer. On error the caller still owns
// the loader.
func OpenRing(l *Loader) (*Ring, error) {
	rd, err := ringbuf.NewReader(l.Map("events"))
	if err != nil {
		return nil, fmt.Errorf("open ring buffer: %w", err)
	}
	return &Ring{loader: l, rd: rd}, nil
}

// Read blocks until the next raw record, which the caller owns. After Close it returns an
// error wrapping os.ErrClosed.
func (r *Ring) Read() ([]byte, error) {
	rec, err := r.rd.Read()
	if err != nil {
		return nil, err
	}
	return rec.RawSample, nil
}

// ErrFlushed is returned by Read once it has returned the records that were pending when
// Flush was called.
var ErrFlushed = ringbuf.ErrFlushed

// Flush makes a blocked Read return the records already in the ring, then ErrFlushed. A
// probe whose programs skip the ring's wakeup for most records (to save the cost of the
// notification per record) calls it periodically.
func (r *Ring) Flush() error { return r.rd.Flush() }

// Maps runs f with the loader under the lock Close takes, so f never touches a freed map.
// After Close it returns os.ErrClosed without calling f.
func (r *Ring) Maps(f func(*Loader) error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return os.ErrClosed
	}
	return f(r.loader)
}

// Fill reports the bytes written to the ring buffer and not yet read, and the buffer's
// size: how close the probe is to dropping records (ringbuf_full).
func (r *Ring) Fill() (used, size int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closing {
		return 0, r.rd.BufferSize() // the mapping may be gone
	}
	return r.rd.AvailableBytes(), r.rd.BufferSize()
}

// Drops returns the probe's in-kernel drop counters summed over CPUs.
func (r *Ring) Drops() (map[string]uint64, error) {
	var d map[string]uint64
	err := r.Maps(func(l *Loader) error {
		var err error
		d, err = Drops(l.Map("ward_drops"))
		return err
	})
	return d, err
}

// Close detaches every hook, unblocks Read and frees the maps. It is safe to call twice.
func (r *Ring) Close() error {
	r.once.Do(func() {
		r.mu.Lock()
		r.closing = true
		r.mu.Unlock()
		rdErr := r.rd.Close()
		r.mu.Lock()
		r.closed = true
		r.err = errors.Join(rdErr, r.loader.Close())
		r.mu.Unlock()
	})
	return r.err
}
