// Package file writes events as JSON lines (OCSF by default) to a local file with size-based
// rotation, so any log shipper (Filebeat, Vector, Fluent Bit, the Splunk forwarder) can pick
// them up. A batch is fsync'ed before it counts as delivered.
package file

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/ward-dlp/ward/collector/sinks/core"
	"github.com/ward-dlp/ward/collector/sinks/ocsf"
)

// Config is the file sink's block.
type Config struct {
	// Path of the live file; rotated files are Path.1 (newest) … Path.Keep.
	Path string `yaml:"path"`
	// MaxBytes rotates the file before it would grow past this size; default 100 MiB.
	MaxBytes int64 `yaml:"max_bytes"`
	// Keep is how many rotated files to keep; default 5.
	Keep int `yaml:"keep"`
	// Format is ocsf (default) or json (Ward's view, every kind).
	Format string `yaml:"format"`
}

// Validate checks the block.
func (c *Config) Validate() error {
	switch {
	case c.Path == "":
		return errors.New("path: must be set")
	case !filepath.IsAbs(c.Path):
		return fmt.Errorf("path %q: must be absolute", c.Path)
	case c.MaxBytes < 0 || c.Keep < 0:
		return errors.New("max_bytes and keep must not be negative")
	case c.MaxBytes > 0 && c.MaxBytes < 4096:
		return fmt.Errorf("max_bytes %d: minimum 4096", c.MaxBytes)
	}
	return ocsf.CheckFormat(c.Format)
}

// Sink is the file sink.
type Sink struct {
	cfg  Config
	o    ocsf.Options
	log  *slog.Logger
	mu   sync.Mutex
	f    *os.File
	size int64
}

// New opens (creating, mode 0600) the file for appending.
func New(cfg Config, o ocsf.Options, log *slog.Logger) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = 100 << 20
	}
	if cfg.Keep == 0 {
		cfg.Keep = 5
	}
	if cfg.Format == "" {
		cfg.Format = ocsf.FormatOCSF
	}
	s := &Sink{cfg: cfg, o: o, log: log}
	if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o700); err != nil {
		return nil, fmt.Errorf("file sink: %w", err)
	}
	if err := s.open(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Sink) open() error {
	f, err := os.OpenFile(s.cfg.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("file sink: open %s: %w", s.cfg.Path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return fmt.Errorf("file sink: stat %s: %w", s.cfg.Path, err)
	}
	s.f, s.size = f, fi.Size()
	return nil
}

// rotate shifts Path.(n) to Path.(n+1), dropping the oldest, and starts a new Path.
func (s *Sink) rotate() error {
	if err := s.f.Close(); err != nil {
		return fmt.Errorf("file sink: close for rotation: %w", err)
	}
	s.f = nil
	p := s.cfg.Path
	_ = os.Remove(p + "." + strconv.Itoa(s.cfg.Keep))
	for i := s.cfg.Keep - 1; i >= 1; i-- {
		if err := os.Rename(p+"."+strconv.Itoa(i), p+"."+strconv.Itoa(i+1)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("file sink: rotate: %w", err)
		}
	}
	if err := os.Rename(p, p+".1"); err != nil {
		return fmt.Errorf("file sink: rotate: %w", err)
	}
	return s.open()
}

// Deliver appends one line per representable event and syncs.
func (s *Sink) Deliver(_ context.Context, items []core.Item) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		if err := s.open(); err != nil {
			return core.Retry(err, 0)
		}
	}
	failed := map[int]error{}
	var buf bytes.Buffer
	for i, it := range items {
		v, err := ocsf.Payload(s.cfg.Format, it, s.o)
		if err != nil {
			failed[i] = err
			continue
		}
		line, err := json.Marshal(v)
		if err != nil {
			failed[i] = core.Permanent(fmt.Errorf("encode event %s: %w", it.EventID(), err))
			continue
		}
		line = append(line, '\n')
		if s.size > 0 && s.size+int64(buf.Len()+len(line)) > s.cfg.MaxBytes {
			if err := s.flush(&buf); err != nil {
				return err
			}
			if err := s.rotate(); err != nil {
				return core.Retry(err, 0)
			}
		}
		buf.Write(line)
	}
	if err := s.flush(&buf); err != nil {
		return err
	}
	if len(failed) > 0 {
		return &core.BatchError{Failed: failed}
	}
	return nil
}

func (s *Sink) flush(buf *bytes.Buffer) error {
	if buf.Len() == 0 {
		return nil
	}
	n, err := s.f.Write(buf.Bytes())
	s.size += int64(n)
	if err != nil {
		return core.Retry(fmt.Errorf("file sink: write %s: %w", s.cfg.Path, err), 0)
	}
	if err := s.f.Sync(); err != nil {
		return core.Retry(fmt.Errorf("file sink: sync %s: %w", s.cfg.Path, err), 0)
	}
	buf.Reset()
	return nil
}

// Close closes the file.
func (s *Sink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	if err != nil {
		return fmt.Errorf("file sink: close: %w", err)
	}
	return nil
}
