// Package config is the agent's configuration: read once, validated, and handed to every
// stage as typed values so that no other package reads files or the environment itself.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"golang.org/x/mod/sumdb/note"
)

// Config is everything the agent can be told.
type Config struct {
	// Collector is the collector's gRPC address, host:port.
	Collector string `yaml:"collector"`
	// ServerName overrides the name checked in the collector's certificate (default: host of Collector).
	ServerName string `yaml:"server_name"`
	// FallbackCollectors are further collector replicas (host:port), tried in order when
	// Collector does not answer (docs/operations.md, "Scale-out"). They must present a
	// certificate for the same name and share the collector's CA.
	FallbackCollectors []string `yaml:"fallback_collectors"`
	// StateDir holds the agent's identity and spool.
	StateDir string `yaml:"state_dir"`
	// Watch lists directories whose files are watched for writes, recursively.
	Watch []string `yaml:"watch"`
	// Targets configures discovery of egress targets (removable media, network shares,
	// cloud-sync folders, the print spool), which are watched besides Watch.
	Targets Targets `yaml:"targets"`
	// Capture bounds what the agent copies and classifies.
	Capture Capture `yaml:"capture"`
	// Spool bounds the on-disk queue that carries events through collector outages.
	Spool Spool `yaml:"spool"`
	// Telemetry chooses which routine (non-finding) events are shipped.
	Telemetry Telemetry `yaml:"telemetry"`
	// HealthInterval is how often the agent reports probe status and drop counters.
	HealthInterval time.Duration `yaml:"health_interval"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"log_level"`
	// Policy says which signed policy bundles the agent accepts and how it fetches them.
	Policy Policy `yaml:"policy"`
	// Network configures the network-flow sensor.
	Network Network `yaml:"network"`
	// Classifiers tunes detection: definition overrides and the organisation's indexes.
	Classifiers Classifiers `yaml:"classifiers"`
	// Lineage logs who reads files known to hold regulated data and carries that data's
	// taint into what the reader writes or sends next.
	Lineage Lineage `yaml:"lineage"`
}

// Lineage configures access logging and taint tracking of tagged files (agent/lineage).
type Lineage struct {
	// Enabled loads the file-read probe and keeps the tag and taint tables.
	Enabled bool `yaml:"enabled"`
	// TagClasses are the data classes whose findings tag the file (part2, phi).
	TagClasses []string `yaml:"tag_classes"`
	// TTL is how long reading a tagged file taints the reader and the children it starts.
	TTL time.Duration `yaml:"ttl"`
	// MaxTagged bounds the tagged files (least recently used are forgotten).
	MaxTagged int `yaml:"max_tagged"`
	// MaxProcesses bounds the tainted processes tracked.
	MaxProcesses int `yaml:"max_processes"`
	// EmitInterval is the least time between two access events of one process and file.
	EmitInterval time.Duration `yaml:"emit_interval"`
	// AccessEvents ships a FileAccess event per read of a tagged file.
	AccessEvents bool `yaml:"access_events"`
}

// Classifiers points the agent at an organisation's detector definitions and indexes.
// Each index is only usable with the key it was built with, so a path needs its key file.
type Classifiers struct {
	// Definitions is an override file for the built-in detector definitions.
	Definitions string `yaml:"definitions"`
	// Enable and Disable switch detectors on or off by id after the definitions apply.
	Enable  []string `yaml:"enable"`
	Disable []string `yaml:"disable"`
	// EDMIndex is a Part 2 patient index from `wardctl edm build`, with its key file.
	EDMIndex   string `yaml:"edm_index"`
	EDMKeyFile string `yaml:"edm_key_file"`
	// FingerprintIndex holds documents found labelled Part 2 at rest (`ward fingerprint
	// add`), with its key file.
	FingerprintIndex   string `yaml:"fingerprint_index"`
	FingerprintKeyFile string `yaml:"fingerprint_key_file"`
}

// Network configures the network-flow sensor (connects, TCP lifecycle, UDP sends).
type Network struct {
	// Enabled loads the flow probes and ships one NetworkFlow event per connection.
	Enabled bool `yaml:"enabled"`
	// FlowIdleTimeout ends a UDP flow without sends for this long and reports a TCP flow still
	// open after it (again every interval).
	FlowIdleTimeout time.Duration `yaml:"flow_idle_timeout"`
	// MaxFlows bounds the flows tracked at once; past it the least active is reported early.
	MaxFlows int `yaml:"max_flows"`
	// TLSPlaintext inspects what processes send through TLS libraries, before encryption.
	TLSPlaintext TLSPlaintext `yaml:"tls_plaintext"`
	// Capture copies the first packets of each flow to name its application (SNI, DNS,
	// JA4) and carries out the policy's network block list.
	Capture NetCapture `yaml:"capture"`
}

// NetCapture configures packet capture at the start of flows (cgroup_skb, tcx fallback).
type NetCapture struct {
	// Enabled loads the capture probe (with network.enabled). Off: flows carry no app or
	// server name, and only connect-time denial of listed addresses is enforced.
	Enabled bool `yaml:"enabled"`
	// Packets and Bytes bound the capture per flow direction (1..64 packets, 512..65536 bytes).
	Packets uint32 `yaml:"packets"`
	Bytes   uint32 `yaml:"bytes"`
	// Snap is the most bytes of one packet captured, from the IP header (128..4096).
	Snap uint32 `yaml:"snap"`
	// DNSPerSecond bounds DNS packets captured past their flow's budget, per CPU.
	DNSPerSecond uint32 `yaml:"dns_per_second"`
	// Hook is auto (cgroup_skb, else tcx), cgroup or tcx.
	Hook string `yaml:"hook"`
	// SamplePlaintext classifies the captured payload of outbound TCP flows that are not
	// TLS (HTTP, raw uploads) with the content classifiers, as TLS plaintext is. Only what
	// the packet and byte bounds above captured is seen, so findings are samples.
	SamplePlaintext bool `yaml:"sample_plaintext"`
}

// TLSPlaintext configures TLS plaintext inspection: uprobes on OpenSSL, GnuTLS, NSS and Go
// crypto/tls; the plaintext of each connection is classified with its destination.
type TLSPlaintext struct {
	// Enabled hooks the TLS libraries processes map (independent of network.enabled).
	Enabled bool `yaml:"enabled"`
	// InspectReceived also classifies what processes receive (off: egress only, and the
	// read functions are not hooked at all).
	InspectReceived bool `yaml:"inspect_received"`
	// MaxCaptureBytes is how much of one library call the probe copies (1 KiB..256 KiB).
	MaxCaptureBytes uint32 `yaml:"max_capture_bytes"`
	// MaxSessionBytes is how much of one connection's plaintext (per direction) is
	// classified before the session is reported and a new one starts.
	MaxSessionBytes int64 `yaml:"max_session_bytes"`
	// MaxSessions bounds the connections classified at once (each holds a 72 KiB window).
	MaxSessions int `yaml:"max_sessions"`
	// IdleFlush reports a connection's session after this long without plaintext.
	IdleFlush time.Duration `yaml:"idle_flush"`
}

// Policy configures signed policy distribution. Without pinned keys the agent runs the
// built-in default pack and refuses every pushed bundle (and says so in its health events).
type Policy struct {
	// Keys are the pinned verifier keys (from `wardctl policy keygen`); a bundle must carry a
	// valid signature by one of them. Two keys allow rotation.
	Keys []string `yaml:"keys"`
	// Group is the target group bundles must be signed for.
	Group string `yaml:"group"`
	// PollInterval is how often the agent asks the collector for a newer bundle.
	PollInterval time.Duration `yaml:"poll_interval"`
	// HostTags are this host's tags, visible to rules as host.tags (e.g. clinical).
	HostTags []string `yaml:"host_tags"`
}

// Targets configures egress target discovery.
type Targets struct {
	// Discover finds removable media, network shares, cloud-sync folders and the print
	// spool, and keeps them watched as they come and go.
	Discover bool `yaml:"discover"`
	// Disable lists kinds not to discover: removable, share, sync, print.
	Disable []string `yaml:"disable"`
	// RemovableDevices are glob patterns of mount source devices to treat as removable
	// media although sysfs does not say so (e.g. a card reader behind a SATA bridge).
	RemovableDevices []string `yaml:"removable_devices"`
	// Rescan is how often sync folders and print directories are looked for again; mounts
	// are seen as they happen.
	Rescan time.Duration `yaml:"rescan"`
}

// Capture bounds the bytes the agent copies out of the kernel and holds per file.
type Capture struct {
	// MaxWriteBytes is how much of one write() the probe copies. Larger writes are re-read from disk.
	MaxWriteBytes uint32 `yaml:"max_write_bytes"`
	// MaxFileBytes is how much of one open file's written content is held for classification.
	MaxFileBytes int `yaml:"max_file_bytes"`
	// MaxRereadBytes bounds re-reading a file from disk when the capture was incomplete.
	MaxRereadBytes int64 `yaml:"max_reread_bytes"`
	// MaxBufferedBytes bounds all held content together, across files.
	MaxBufferedBytes int `yaml:"max_buffered_bytes"`
	// MaxOpenFiles bounds the number of watched descriptors tracked at once.
	MaxOpenFiles int `yaml:"max_open_files"`
	// IdleFlush classifies a still-open file whose writes have gone quiet for this long.
	IdleFlush time.Duration `yaml:"idle_flush"`
	// RingBytes is the size of each kernel ring buffer.
	RingBytes uint32 `yaml:"ring_bytes"`
	// ForceFsnotify skips every eBPF probe and watches the targets with fsnotify, as the
	// agent does on its own when the file probes cannot load: writes are classified from
	// disk, unattributed, and every Health event reports the agent degraded. For tests
	// and for hosts where loading BPF programs is not allowed.
	ForceFsnotify bool `yaml:"force_fsnotify"`
}

// Spool bounds the on-disk queue.
type Spool struct {
	MaxBytes int64 `yaml:"max_bytes"`
}

// Telemetry selects routine events to ship besides findings and health.
type Telemetry struct {
	ProcessEvents bool `yaml:"process_events"`
	// ProcessForks also ships a ProcessEvent for every fork that creates a process. Off by
	// default even when process_events is on: forks outnumber execs (shells, build tools,
	// forking servers) and the child's program is already known from its parent and its
	// exec; the table uses forks for attribution and Health counts them either way.
	ProcessForks bool `yaml:"process_forks"`
	FileActivity bool `yaml:"file_activity"`
	// MetricsAddr serves Prometheus metrics at http://MetricsAddr/metrics when set; it must
	// be a loopback address (e.g. 127.0.0.1:9464). Empty (the default): no listener.
	MetricsAddr string `yaml:"metrics_addr"`
}

// Default returns the configuration a fresh install runs with.
func Default() Config {
	return Config{
		StateDir: "/var/lib/ward/agent",
		Capture: Capture{
			MaxWriteBytes:    16 << 10,
			MaxFileBytes:     1 << 20,
			MaxRereadBytes:   16 << 20,
			MaxBufferedBytes: 64 << 20,
			MaxOpenFiles:     4096,
			IdleFlush:        2 * time.Second,
			RingBytes:        8 << 20,
		},
		Spool:     Spool{MaxBytes: 256 << 20},
		Telemetry: Telemetry{ProcessEvents: false, FileActivity: true},
		Lineage: Lineage{Enabled: true, TagClasses: []string{"part2"}, TTL: time.Hour, MaxTagged: 65536,
			MaxProcesses: 16384, EmitInterval: time.Minute, AccessEvents: true},
		HealthInterval: time.Minute,
		LogLevel:       "info",
		Policy:         Policy{Group: "default", PollInterval: time.Minute},
		Network: Network{Enabled: true, FlowIdleTimeout: 2 * time.Minute, MaxFlows: 65536,
			TLSPlaintext: TLSPlaintext{Enabled: true, MaxCaptureBytes: 64 << 10, MaxSessionBytes: 8 << 20,
				MaxSessions: 256, IdleFlush: 2 * time.Second},
			Capture: NetCapture{Enabled: true, Packets: 10, Bytes: 8192, Snap: 2048, DNSPerSecond: 2000, Hook: "auto",
				SamplePlaintext: true}},
		Targets: Targets{Discover: true, Rescan: 30 * time.Second},
	}
}

// Load reads a YAML file over the defaults. Unknown keys are errors, because a misspelt
// key in a security agent's config silently meaning "default" is worse than refusing to start.
func Load(path string) (Config, error) {
	cfg := Default()
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("read agent config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	// An empty file decodes as io.EOF and means "all defaults".
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return cfg, fmt.Errorf("agent config %s: %w", path, err)
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("agent config %s: %w", path, err)
	}
	return cfg, nil
}

// Validate checks bounds and makes paths absolute.
func (c *Config) Validate() error {
	if c.StateDir == "" {
		return errors.New("state_dir is empty")
	}
	abs, err := filepath.Abs(c.StateDir)
	if err != nil {
		return fmt.Errorf("state_dir: %w", err)
	}
	c.StateDir = abs
	for i, a := range c.FallbackCollectors {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("fallback_collectors[%d]: %q: want host:port", i, a)
		}
	}
	for i, w := range c.Watch {
		if w == "" {
			return fmt.Errorf("watch[%d] is empty", i)
		}
		a, err := filepath.Abs(w)
		if err != nil {
			return fmt.Errorf("watch[%d]: %w", i, err)
		}
		c.Watch[i] = filepath.Clean(a)
	}
	cp := c.Capture
	switch {
	case cp.MaxWriteBytes == 0 || cp.MaxWriteBytes > 32<<10:
		return fmt.Errorf("capture.max_write_bytes must be 1..32768, got %d", cp.MaxWriteBytes)
	case cp.MaxFileBytes <= 0:
		return fmt.Errorf("capture.max_file_bytes must be positive, got %d", cp.MaxFileBytes)
	case cp.MaxBufferedBytes < cp.MaxFileBytes:
		return fmt.Errorf("capture.max_buffered_bytes (%d) must be at least max_file_bytes (%d)", cp.MaxBufferedBytes, cp.MaxFileBytes)
	case cp.MaxRereadBytes < 0:
		return fmt.Errorf("capture.max_reread_bytes must not be negative")
	case cp.MaxOpenFiles <= 0:
		return fmt.Errorf("capture.max_open_files must be positive")
	case cp.IdleFlush <= 0:
		return fmt.Errorf("capture.idle_flush must be positive")
	case cp.RingBytes < 1<<16 || cp.RingBytes&(cp.RingBytes-1) != 0:
		return fmt.Errorf("capture.ring_bytes must be a power of two of at least 65536, got %d", cp.RingBytes)
	}
	if (c.Classifiers.EDMIndex == "") != (c.Classifiers.EDMKeyFile == "") {
		return errors.New("classifiers.edm_index and classifiers.edm_key_file go together")
	}
	if (c.Classifiers.FingerprintIndex == "") != (c.Classifiers.FingerprintKeyFile == "") {
		return errors.New("classifiers.fingerprint_index and classifiers.fingerprint_key_file go together")
	}
	if c.Spool.MaxBytes < 1<<20 {
		return fmt.Errorf("spool.max_bytes must be at least 1 MiB, got %d", c.Spool.MaxBytes)
	}
	if c.HealthInterval < time.Second {
		return fmt.Errorf("health_interval must be at least 1s, got %s", c.HealthInterval)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log_level must be debug, info, warn or error, got %q", c.LogLevel)
	}
	if n := c.Network; n.FlowIdleTimeout < time.Second || n.FlowIdleTimeout > 24*time.Hour {
		return fmt.Errorf("network.flow_idle_timeout must be 1s..24h, got %s", n.FlowIdleTimeout)
	} else if n.MaxFlows < 16 || n.MaxFlows > 1<<22 {
		return fmt.Errorf("network.max_flows must be 16..4194304, got %d", n.MaxFlows)
	}
	switch t := c.Network.TLSPlaintext; {
	case t.MaxCaptureBytes < 1<<10 || t.MaxCaptureBytes > 256<<10:
		return fmt.Errorf("network.tls_plaintext.max_capture_bytes must be 1024..262144, got %d", t.MaxCaptureBytes)
	case t.MaxSessionBytes < 64<<10 || t.MaxSessionBytes > 1<<30:
		return fmt.Errorf("network.tls_plaintext.max_session_bytes must be 64 KiB..1 GiB, got %d", t.MaxSessionBytes)
	case t.MaxSessions < 1 || t.MaxSessions > 65536:
		return fmt.Errorf("network.tls_plaintext.max_sessions must be 1..65536, got %d", t.MaxSessions)
	case t.IdleFlush < 100*time.Millisecond || t.IdleFlush > time.Hour:
		return fmt.Errorf("network.tls_plaintext.idle_flush must be 100ms..1h, got %s", t.IdleFlush)
	}
	switch nc := c.Network.Capture; {
	case nc.Packets < 1 || nc.Packets > 64:
		return fmt.Errorf("network.capture.packets must be 1..64, got %d", nc.Packets)
	case nc.Bytes < 512 || nc.Bytes > 65536:
		return fmt.Errorf("network.capture.bytes must be 512..65536, got %d", nc.Bytes)
	case nc.Snap < 128 || nc.Snap > 4096:
		return fmt.Errorf("network.capture.snap must be 128..4096, got %d", nc.Snap)
	case nc.DNSPerSecond < 1 || nc.DNSPerSecond > 100000:
		return fmt.Errorf("network.capture.dns_per_second must be 1..100000, got %d", nc.DNSPerSecond)
	case nc.Hook != "auto" && nc.Hook != "cgroup" && nc.Hook != "tcx":
		return fmt.Errorf("network.capture.hook must be auto, cgroup or tcx, got %q", nc.Hook)
	}
	if err := c.Targets.validate(); err != nil {
		return err
	}
	if err := c.Lineage.validate(); err != nil {
		return err
	}
	if err := validateMetricsAddr(c.Telemetry.MetricsAddr); err != nil {
		return err
	}
	return c.Policy.validate()
}

func (l *Lineage) validate() error {
	for _, c := range l.TagClasses {
		if c != "part2" && c != "phi" {
			return fmt.Errorf("lineage.tag_classes: unknown class %q (part2 or phi)", c)
		}
	}
	switch {
	case l.TTL < time.Second || l.TTL > 7*24*time.Hour:
		return fmt.Errorf("lineage.ttl must be 1s..168h, got %s", l.TTL)
	case l.MaxTagged < 16 || l.MaxTagged > 1<<20:
		return fmt.Errorf("lineage.max_tagged must be 16..1048576, got %d", l.MaxTagged)
	case l.MaxProcesses < 16 || l.MaxProcesses > 1<<20:
		return fmt.Errorf("lineage.max_processes must be 16..1048576, got %d", l.MaxProcesses)
	case l.EmitInterval < 10*time.Millisecond || l.EmitInterval > 24*time.Hour:
		return fmt.Errorf("lineage.emit_interval must be 10ms..24h, got %s", l.EmitInterval)
	}
	return nil
}

// validateMetricsAddr accepts "" or a loopback host:port: the metrics say what the agent
// sees and misses, which is nobody else's business.
func validateMetricsAddr(addr string) error {
	if addr == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return fmt.Errorf("telemetry.metrics_addr: want host:port on loopback, e.g. 127.0.0.1:9464, got %q", addr)
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("telemetry.metrics_addr: %q is not a loopback address (127.0.0.0/8, ::1 or localhost)", host)
	}
	return nil
}

func (t *Targets) validate() error {
	for _, k := range t.Disable {
		switch k {
		case "removable", "share", "sync", "print":
		default:
			return fmt.Errorf("targets.disable: unknown kind %q (removable, share, sync or print)", k)
		}
	}
	for i, p := range t.RemovableDevices {
		if _, err := filepath.Match(p, ""); err != nil || !strings.HasPrefix(p, "/") {
			return fmt.Errorf("targets.removable_devices[%d]: want an absolute glob pattern like /dev/sd*, got %q", i, p)
		}
	}
	if t.Rescan < time.Second || t.Rescan > 24*time.Hour {
		return fmt.Errorf("targets.rescan must be 1s..24h, got %s", t.Rescan)
	}
	return nil
}

func (p *Policy) validate() error {
	if p.Group == "" || len(p.Group) > 64 || strings.Trim(p.Group, "abcdefghijklmnopqrstuvwxyz0123456789-_.") != "" {
		return fmt.Errorf("policy.group must be 1-64 of a-z, 0-9, '-', '_' and '.', got %q", p.Group)
	}
	if p.PollInterval < time.Second || p.PollInterval > 24*time.Hour {
		return fmt.Errorf("policy.poll_interval must be 1s..24h, got %s", p.PollInterval)
	}
	if len(p.Keys) > 8 {
		return fmt.Errorf("policy.keys: at most 8 pinned keys, got %d", len(p.Keys))
	}
	for i, k := range p.Keys {
		if _, err := note.NewVerifier(strings.TrimSpace(k)); err != nil {
			return fmt.Errorf("policy.keys[%d]: want a verifier key like name+1a2b3c4d+BASE64 (wardctl policy keygen prints it): %w", i, err)
		}
	}
	if len(p.HostTags) > 32 {
		return fmt.Errorf("policy.host_tags: at most 32 tags, got %d", len(p.HostTags))
	}
	return nil
}
