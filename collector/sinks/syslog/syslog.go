// Package syslog sends events as RFC 5424 syslog messages over TLS with RFC 5425
// octet-counting framing ("MSG-LEN SP SYSLOG-MSG"), the transport rsyslog, syslog-ng,
// QRadar, ArcSight and Sentinel's AMA accept on 6514. The message body is CEF (default) or
// JSON (OCSF). Go's log/syslog does neither TLS framing nor 5424, so both are done here.
//
// RFC 5425 has no application acknowledgement: a write that reached the kernel counts as
// delivered. To avoid the usual loss (writing a batch into a connection the receiver has
// already closed), the connection is probed for EOF before every batch and redialled.
package syslog

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ward-dlp/ward/collector/sinks/core"
	"github.com/ward-dlp/ward/collector/sinks/ocsf"
)

// Config is the syslog sink's block.
type Config struct {
	// Address is host:port of the TLS syslog receiver (usually port 6514).
	Address string `yaml:"address"`
	// Format of the MSG part: cef (default) or json (OCSF; kinds without a class skipped).
	Format string `yaml:"format"`
	// Facility number 0-23; default 10 (authpriv). 13 (log audit) and 16-23 (local0-7) are
	// other common choices.
	Facility *int   `yaml:"facility"`
	AppName  string `yaml:"app_name"`
	// Timeout bounds dialling and each batch write; default 10s.
	Timeout time.Duration  `yaml:"timeout"`
	TLS     core.TLSConfig `yaml:"tls"`
}

// Format names for Config.Format.
const (
	FormatCEF  = "cef"
	FormatJSON = "json"
)

// Validate checks the block.
func (c *Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Address); err != nil || c.Address == "" {
		return fmt.Errorf("address %q: want host:port", c.Address)
	}
	switch c.Format {
	case "", FormatCEF, FormatJSON:
	default:
		return fmt.Errorf("format %q: want cef or json", c.Format)
	}
	if c.Facility != nil && (*c.Facility < 0 || *c.Facility > 23) {
		return fmt.Errorf("facility %d: want 0-23", *c.Facility)
	}
	if len(c.AppName) > 48 || !printASCII(c.AppName) {
		return fmt.Errorf("app_name %q: want at most 48 printable ASCII characters", c.AppName)
	}
	if c.Timeout < 0 {
		return errors.New("timeout must not be negative")
	}
	return c.TLS.Validate()
}

// Sink is the syslog sink.
type Sink struct {
	cfg      Config
	o        ocsf.Options
	tls      *tls.Config
	log      *slog.Logger
	facility int
	procID   string

	mu   sync.Mutex
	conn *tls.Conn
}

// New builds the sink; it dials on first delivery.
func New(cfg Config, o ocsf.Options, log *slog.Logger) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tc, err := cfg.TLS.Build()
	if err != nil {
		return nil, err
	}
	if tc.ServerName == "" {
		host, _, _ := net.SplitHostPort(cfg.Address)
		tc.ServerName = host
	}
	if cfg.Format == "" {
		cfg.Format = FormatCEF
	}
	if cfg.AppName == "" {
		cfg.AppName = "ward-collector"
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	fac := 10
	if cfg.Facility != nil {
		fac = *cfg.Facility
	}
	return &Sink{cfg: cfg, o: o, tls: tc, log: log, facility: fac, procID: strconv.Itoa(os.Getpid())}, nil
}

// Message renders one RFC 5424 message (without framing) for it.
func (s *Sink) Message(it core.Item) ([]byte, error) {
	v := core.NewView(it)
	var body string
	switch s.cfg.Format {
	case FormatJSON:
		e, err := ocsf.Map(v, s.o)
		if err != nil {
			return nil, err
		}
		b, err := json.Marshal(e)
		if err != nil {
			return nil, core.Permanent(fmt.Errorf("encode: %w", err))
		}
		body = string(b)
	default:
		body = CEF(v, s.o.ProductVersion)
	}
	pri := s.facility*8 + syslogSeverity(v)
	var b bytes.Buffer
	fmt.Fprintf(&b, "<%d>1 %s %s %s %s %s - %s", pri,
		v.Time.UTC().Format("2006-01-02T15:04:05.000000Z07:00"),
		header(v.Host.Hostname, 255), s.cfg.AppName, s.procID, header(msgID(v), 32), body)
	return b.Bytes(), nil
}

// Frame prefixes msg with its octet count (RFC 5425 section 4.3).
func Frame(msg []byte) []byte {
	out := make([]byte, 0, len(msg)+8)
	out = strconv.AppendInt(out, int64(len(msg)), 10)
	out = append(out, ' ')
	return append(out, msg...)
}

// Deliver writes the batch to the TLS connection, dialling when needed.
func (s *Sink) Deliver(ctx context.Context, items []core.Item) error {
	failed := map[int]error{}
	var buf bytes.Buffer
	for i, it := range items {
		m, err := s.Message(it)
		if err != nil {
			failed[i] = err
			continue
		}
		buf.Write(Frame(m))
	}
	if buf.Len() > 0 {
		if err := s.write(ctx, buf.Bytes()); err != nil {
			return core.Retry(err, 0)
		}
	}
	if len(failed) > 0 {
		return &core.BatchError{Failed: failed}
	}
	return nil
}

func (s *Sink) write(ctx context.Context, b []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil && !alive(s.conn) {
		s.log.Info("syslog receiver closed the connection; redialling")
		_ = s.conn.Close()
		s.conn = nil
	}
	if s.conn == nil {
		d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: s.cfg.Timeout, KeepAlive: 30 * time.Second}, Config: s.tls}
		dctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
		c, err := d.DialContext(dctx, "tcp", s.cfg.Address)
		cancel()
		if err != nil {
			return fmt.Errorf("syslog: dial %s: %w", s.cfg.Address, err)
		}
		s.conn = c.(*tls.Conn)
	}
	_ = s.conn.SetWriteDeadline(time.Now().Add(s.cfg.Timeout))
	if _, err := s.conn.Write(b); err != nil {
		_ = s.conn.Close()
		s.conn = nil
		return fmt.Errorf("syslog: write to %s: %w", s.cfg.Address, err)
	}
	return nil
}

// alive reports whether the receiver has not closed the connection: a syslog receiver never
// sends, so anything but a read timeout (EOF, reset, stray data) means start over.
func alive(c *tls.Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(time.Millisecond))
	var one [1]byte
	_, err := c.Read(one[:])
	_ = c.SetReadDeadline(time.Time{})
	var ne net.Error
	return err != nil && errors.As(err, &ne) && ne.Timeout()
}

// Close closes the connection.
func (s *Sink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close()
	s.conn = nil
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("syslog: close: %w", err)
	}
	return nil
}

// syslogSeverity maps a finding's severity to syslog's (2 crit … 6 info); other kinds are
// informational (health with losses: warning).
func syslogSeverity(v core.View) int {
	if v.Finding != nil {
		switch v.Finding.Decision.Severity {
		case "critical":
			return 2
		case "high":
			return 3
		case "medium":
			return 4
		case "low":
			return 5
		}
		return 6
	}
	if v.Fleet != nil {
		return fleetSyslogSeverity(v.Fleet)
	}
	return 6
}

func msgID(v core.View) string {
	switch v.Kind {
	case "finding":
		return "DLP_FINDING"
	case "file":
		return "FILE_ACTIVITY"
	case "process":
		return "PROCESS"
	case "health":
		return "HEALTH"
	case "fleet":
		return "FLEET_ALERT"
	}
	return strings.ToUpper(v.Kind)
}

// header makes a 5424 header field: printable ASCII without spaces, bounded, "-" when empty.
func header(s string, n int) string {
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < n; i++ {
		if c := s[i]; c > 32 && c < 127 {
			b.WriteByte(c)
		}
	}
	if b.Len() == 0 {
		return "-"
	}
	return b.String()
}

func printASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= 32 || s[i] >= 127 {
			return false
		}
	}
	return true
}
