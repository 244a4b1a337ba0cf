package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"

	"github.com/ward-dlp/ward/agent"
	"github.com/ward-dlp/ward/agent/config"
	"github.com/ward-dlp/ward/agent/identity"
	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/bpf/filewrite"
	"github.com/ward-dlp/ward/bpf/process"
)

// Doctor verdicts. DEGRADED means the agent runs but something it could do is missing;
// FAIL means the agent cannot run (or cannot do its job at all) until it is fixed.
const (
	statusOK       = "OK"
	statusDegraded = "DEGRADED"
	statusFail     = "FAIL"
)

// defaultAgentConfig is where the packages install the agent's configuration.
const defaultAgentConfig = "/etc/ward/agent.yaml"

// minKernel is the oldest kernel the probes load on: BPF ring buffer and
// bpf_ktime_get_boot_ns arrived in 5.8 (bpf/README.md).
var minKernel = [2]int{5, 8}

// check is one line of the doctor's report.
type check struct {
	Name   string `json:"check"`
	Status string `json:"status"`
	Detail string `json:"detail"`
}

// doctorReport is the whole answer; CanRun decides the exit code.
type doctorReport struct {
	Host    string  `json:"host"`
	Kernel  string  `json:"kernel"`
	Version string  `json:"version"`
	CanRun  bool    `json:"can_run"`
	Checks  []check `json:"checks"`
}

func (r *doctorReport) add(name, status, format string, args ...any) {
	r.Checks = append(r.Checks, check{Name: name, Status: status, Detail: fmt.Sprintf(format, args...)})
}

// doctorCmd checks whether this machine can run the agent and what will degrade, by
// trying what the agent does: load and attach the real probes, handshake with the
// collector as the enrolled agent, measure the disk under the spool. It is the first thing
// to run on a new machine. It returns the process exit code: 0 when the agent can run,
// 1 when it cannot, 2 on bad usage.
func doctorCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "agent config file (default "+defaultAgentConfig+" when it exists)")
	stateDir := fs.String("state-dir", "", "state directory; overrides the config")
	output := fs.String("o", "text", "output: text or json")
	skipProbes := fs.Bool("skip-probes", false, "do not load eBPF programs (report them as not checked)")
	timeout := fs.Duration("timeout", 5*time.Second, "timeout for the collector connection")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *output != "text" && *output != "json" {
		fmt.Fprintf(stderr, "ward-agent doctor: -o must be text or json, got %q\n", *output)
		return 2
	}
	// The probes log through slog; the report is the doctor's output, so keep logs to errors.
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelError + 4}))
	d := &doctor{log: log, timeout: *timeout}
	rep := d.run(*cfgPath, *stateDir, *skipProbes)
	var err error
	if *output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(rep)
	} else {
		err = writeDoctorTable(stdout, rep)
	}
	if err != nil {
		fmt.Fprintln(stderr, "ward-agent doctor:", err)
		return 1
	}
	if !rep.CanRun {
		return 1
	}
	return 0
}

type doctor struct {
	log     *slog.Logger
	timeout time.Duration
}

func (d *doctor) run(cfgPath, stateDir string, skipProbes bool) *doctorReport {
	host, _ := os.Hostname()
	rep := &doctorReport{Host: host, Kernel: kernelRelease(), Version: version}

	cfg := d.checkConfig(rep, cfgPath)
	if stateDir != "" {
		cfg.StateDir = stateDir
		if err := cfg.Validate(); err != nil {
			rep.add("config", statusFail, "--state-dir: %v", err)
		}
	}
	d.checkStateDir(rep, cfg)
	id := d.checkEnrolment(rep, cfg)
	d.checkCollector(rep, id)
	d.checkPrivileges(rep)
	d.checkKernel(rep)
	d.checkBTF(rep)
	d.checkLockdown(rep)
	d.checkTracefs(rep)
	if skipProbes {
		rep.add("probes", statusDegraded, "not checked (--skip-probes): run without it, as root, to attach them")
	} else {
		d.checkProcessProbe(rep, cfg)
		d.checkFileProbe(rep, cfg)
		d.checkUnusedHooks(rep)
	}
	d.checkTLSLibraries(rep, skipProbes)
	d.checkClock(rep)
	d.checkSpoolDisk(rep, cfg)

	rep.CanRun = true
	for _, c := range rep.Checks {
		if c.Status == statusFail {
			rep.CanRun = false
		}
	}
	return rep
}

func writeDoctorTable(w io.Writer, rep *doctorReport) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "ward-agent %s doctor on %s (kernel %s)\n\n", rep.Version, rep.Host, rep.Kernel)
	fmt.Fprintln(tw, "CHECK\tSTATUS\tWHY")
	for _, c := range rep.Checks {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Name, c.Status, oneLine(c.Detail))
	}
	verdict := "the agent can run on this machine"
	if !rep.CanRun {
		verdict = "the agent CANNOT run on this machine until every FAIL above is fixed"
	}
	fmt.Fprintf(tw, "\nverdict: %s\n", verdict)
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// oneLine keeps a table row on one line: verifier logs and wrapped errors carry newlines.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 240 {
		s = s[:237] + "..."
	}
	return s
}

func (d *doctor) checkConfig(rep *doctorReport, path string) config.Config {
	explicit := path != ""
	if !explicit {
		if _, err := os.Stat(defaultAgentConfig); err == nil {
			path = defaultAgentConfig
		}
	}
	if path == "" {
		cfg := config.Default()
		if err := cfg.Validate(); err != nil {
			rep.add("config", statusFail, "built-in defaults do not validate: %v", err)
			return cfg
		}
		rep.add("config", statusOK, "no %s: using built-in defaults", defaultAgentConfig)
		return cfg
	}
	cfg, err := config.Load(path)
	if err != nil {
		rep.add("config", statusFail, "%v", err)
		return cfg
	}
	if len(cfg.Watch) == 0 {
		rep.add("config", statusDegraded, "%s is valid but watches no directory: no file findings until `watch:` lists some", path)
		return cfg
	}
	missing := []string{}
	for _, w := range cfg.Watch {
		if st, err := os.Stat(w); err != nil || !st.IsDir() {
			missing = append(missing, w)
		}
	}
	if len(missing) > 0 {
		rep.add("config", statusDegraded, "%s: watched directories missing (watched once they appear): %s", path, strings.Join(missing, ", "))
		return cfg
	}
	rep.add("config", statusOK, "%s: valid, watching %s", path, strings.Join(cfg.Watch, ", "))
	return cfg
}

func (d *doctor) checkStateDir(rep *doctorReport, cfg config.Config) {
	dir := cfg.StateDir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		rep.add("state dir", statusFail, "cannot create %s: %v", dir, err)
		return
	}
	f, err := os.CreateTemp(dir, ".doctor-*")
	if err != nil {
		rep.add("state dir", statusFail, "%s is not writable: %v", dir, err)
		return
	}
	name := f.Name()
	err = f.Sync()
	_ = f.Close()
	_ = os.Remove(name)
	if err != nil {
		rep.add("state dir", statusFail, "fsync in %s failed: %v", dir, err)
		return
	}
	rep.add("state dir", statusOK, "%s is writable", dir)
}

func (d *doctor) checkEnrolment(rep *doctorReport, cfg config.Config) *identity.Identity {
	id, err := identity.Load(agent.IdentityDir(cfg.StateDir), identity.WithLogger(d.log), identity.WithServerName(cfg.ServerName))
	if err != nil {
		rep.add("enrolment", statusFail, "%v", err)
		return nil
	}
	cert := id.Certificate()
	left := time.Until(cert.NotAfter)
	switch {
	case left <= 0:
		rep.add("enrolment", statusFail, "agent %s: client certificate expired %s: the collector refuses it; re-enrol with a new token",
			id.AgentID(), cert.NotAfter.UTC().Format(time.RFC3339))
	case time.Now().After(id.RenewAt()):
		rep.add("enrolment", statusDegraded, "agent %s: certificate expires %s and renewal is overdue: check the collector connection",
			id.AgentID(), cert.NotAfter.UTC().Format(time.RFC3339))
	default:
		rep.add("enrolment", statusOK, "agent %s, collector %s, certificate valid until %s",
			id.AgentID(), id.Collector(), cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return id
}

// checkCollector dials the enrolled collector, completes mutual TLS as this agent and makes
// an empty Export call: a TLS 1.3 handshake alone does not prove the collector accepted the
// client certificate (it judges it after the client's Finished), the call does, and it also
// catches a revoked agent. An unreachable collector is DEGRADED: the agent spools until it
// is back.
func (d *doctor) checkCollector(rep *doctorReport, id *identity.Identity) {
	if id == nil {
		rep.add("collector", statusDegraded, "not checked: the agent is not enrolled")
		return
	}
	addr := id.Collector()
	ctx, cancel := context.WithTimeout(context.Background(), d.timeout)
	defer cancel()
	raw, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		rep.add("collector", statusDegraded, "cannot reach %s: %v (events are spooled until it is reachable)", addr, err)
		return
	}
	conn := tls.Client(raw, id.TLSConfig())
	err = conn.HandshakeContext(ctx)
	if err != nil {
		_ = raw.Close()
		rep.add("collector", statusDegraded, "TLS handshake with %s failed: %v", addr, err)
		return
	}
	server := conn.ConnectionState().PeerCertificates[0]
	_ = conn.Close()

	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(id.TransportCredentials()))
	if err != nil {
		rep.add("collector", statusDegraded, "gRPC client for %s: %v", addr, err)
		return
	}
	defer cc.Close()
	if _, err := wardv1.NewAgentServiceClient(cc).Export(ctx, &wardv1.ExportRequest{}); err != nil {
		rep.add("collector", statusDegraded, "%s completed TLS but refused this agent: %v (revoked? re-enrol with a new token)", addr, err)
		return
	}
	left := time.Until(server.NotAfter)
	if left < 7*24*time.Hour {
		rep.add("collector", statusDegraded, "%s accepts this agent, but its server certificate expires %s: restart the collector to renew it",
			addr, server.NotAfter.UTC().Format(time.RFC3339))
		return
	}
	rep.add("collector", statusOK, "%s: mutual TLS 1.3 as this agent accepted; server certificate valid until %s",
		addr, server.NotAfter.UTC().Format(time.RFC3339))
}

// Capability numbers (linux/capability.h) the eBPF loader needs.
const (
	capSysAdmin = 21
	capPerfmon  = 38
	capBPF      = 39
)

func (d *doctor) checkPrivileges(rep *doctorReport) {
	eff, err := effectiveCaps()
	if err != nil {
		rep.add("privileges", statusFail, "read capabilities: %v", err)
		return
	}
	has := func(c uint) bool { return eff&(1<<c) != 0 }
	switch {
	case has(capBPF) && has(capPerfmon):
		rep.add("privileges", statusOK, "CAP_BPF and CAP_PERFMON are effective")
	case has(capSysAdmin):
		rep.add("privileges", statusOK, "CAP_SYS_ADMIN is effective (kernel without CAP_BPF/CAP_PERFMON, or all capabilities)")
	default:
		rep.add("privileges", statusFail, "CAP_BPF and CAP_PERFMON are missing: run as root (the ward-agent unit grants them)")
	}
}

// effectiveCaps reads CapEff from /proc/self/status.
func effectiveCaps() (uint64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, fmt.Errorf("read /proc/self/status: %w", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return 0, fmt.Errorf("parse CapEff %q: %w", v, err)
			}
			return n, nil
		}
	}
	return 0, errors.New("no CapEff line in /proc/self/status")
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

var kernelVersionRE = regexp.MustCompile(`^(\d+)\.(\d+)`)

func (d *doctor) checkKernel(rep *doctorReport) {
	rel := kernelRelease()
	m := kernelVersionRE.FindStringSubmatch(rel)
	if m == nil {
		rep.add("kernel", statusDegraded, "cannot parse kernel release %q; relying on the probe checks below", rel)
		return
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	if major < minKernel[0] || (major == minKernel[0] && minor < minKernel[1]) {
		rep.add("kernel", statusFail, "%s is older than %d.%d (BPF ring buffer): the probes cannot load", rel, minKernel[0], minKernel[1])
		return
	}
	rep.add("kernel", statusOK, "%s (minimum %d.%d)", rel, minKernel[0], minKernel[1])
}

func (d *doctor) checkBTF(rep *doctorReport) {
	const path = "/sys/kernel/btf/vmlinux"
	st, err := os.Stat(path)
	if err != nil {
		rep.add("BTF", statusFail, "%s: %v: the probes are CO-RE and need kernel BTF (CONFIG_DEBUG_INFO_BTF=y)", path, err)
		return
	}
	rep.add("BTF", statusOK, "%s (%d KiB)", path, st.Size()/1024)
}

func (d *doctor) checkLockdown(rep *doctorReport) {
	const path = "/sys/kernel/security/lockdown"
	b, err := os.ReadFile(path)
	if err != nil {
		rep.add("lockdown", statusOK, "%s not readable (%v): no lockdown LSM or securityfs not mounted", path, errors.Unwrap(err))
		return
	}
	mode := "none"
	if i, j := bytes.IndexByte(b, '['), bytes.IndexByte(b, ']'); i >= 0 && j > i {
		mode = string(b[i+1 : j])
	}
	switch mode {
	case "none", "integrity":
		rep.add("lockdown", statusOK, "lockdown=%s: tracing programs may read kernel memory", mode)
	default:
		rep.add("lockdown", statusDegraded, "lockdown=%s blocks BPF reads of kernel memory: expect the probe checks below to fail", mode)
	}
}

// tracefsDirs are where tracefs is found, in the order the loader looks.
var tracefsDirs = [...]string{"/sys/kernel/tracing", "/sys/kernel/debug/tracing"}

func (d *doctor) checkTracefs(rep *doctorReport) {
	for _, dir := range tracefsDirs {
		if _, err := os.Stat(filepath.Join(dir, "events")); err != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, "events", "syscalls")); err != nil {
			rep.add("tracefs", statusFail, "%s has no syscalls events (kernel without CONFIG_FTRACE_SYSCALLS): file write capture is impossible", dir)
			return
		}
		rep.add("tracefs", statusOK, "%s with syscall tracepoints", dir)
		return
	}
	rep.add("tracefs", statusDegraded, "not mounted: the agent mounts it at /sys/kernel/tracing when it may (CAP_SYS_ADMIN); file write capture needs it")
}

func (d *doctor) checkProcessProbe(rep *doctorReport, cfg config.Config) {
	p, err := process.Load(process.Config{RingBytes: cfg.Capture.RingBytes}, d.log)
	if err != nil {
		rep.add("probe process", statusDegraded, "cannot attach exec/exit (%v): process attribution falls back to reading /proc", err)
		return
	}
	defer p.Close()
	addStatuses(rep, "probe process", p.Status(), "process attribution falls back to /proc for this event")
}

func addStatuses(rep *doctorReport, prefix string, sts []process.Status, degraded string) {
	for _, st := range sts {
		name := prefix + " " + st.Name
		if st.Attached {
			rep.add(name, statusOK, "attached via %s", st.Hook)
			continue
		}
		rep.add(name, statusDegraded, "not attached (%s: %v): %s", st.Hook, st.Err, degraded)
	}
}

// checkFileProbe loads the real file write probes, then proves them end to end: it watches
// a fresh directory, writes a file there and waits for the kernel's open, write and close
// records.
func (d *doctor) checkFileProbe(rep *doctorReport, cfg config.Config) {
	p, err := filewrite.Load(filewrite.Config{MaxCapture: cfg.Capture.MaxWriteBytes, RingBytes: cfg.Capture.RingBytes}, d.log)
	if err != nil {
		rep.add("probe filewrite", statusFail, "cannot attach the file write probes (%v): no file findings on this machine", err)
		return
	}
	defer p.Close()
	addStatuses(rep, "probe filewrite", p.Status(), "writes through this syscall are not captured")
	if err := fileProbeRoundTrip(p, cfg.StateDir); err != nil {
		rep.add("file capture", statusFail, "probes attached but a test write was not seen: %v", err)
		return
	}
	rep.add("file capture", statusOK, "a test file written in a watched directory was seen (open, write, close)")
}

func fileProbeRoundTrip(p *filewrite.Probe, stateDir string) error {
	// Under the state dir: it is on a local filesystem the agent owns, and not a tmpfs that a
	// unit's PrivateTmp= would hide.
	dir, err := os.MkdirTemp(stateDir, ".doctor-watch-")
	if err != nil {
		return fmt.Errorf("make a test directory: %w", err)
	}
	defer os.RemoveAll(dir)
	if _, err := p.Watch(dir); err != nil {
		return fmt.Errorf("watch %s: %w", dir, err)
	}
	marker := []byte("ward-agent doctor test write\n")
	target := filepath.Join(dir, "probe.txt")
	seen := make(chan error, 1)
	go func() {
		var open, write bool
		for {
			r, err := p.Next()
			if err != nil {
				seen <- fmt.Errorf("read ring buffer: %w", err)
				return
			}
			switch r := r.(type) {
			case filewrite.Open:
				open = open || filepath.Base(r.Path) == "probe.txt"
			case filewrite.Write:
				write = write || bytes.Contains(r.Data, marker)
			case filewrite.Close:
				if open && write {
					seen <- nil
					return
				}
			}
		}
	}()
	if err := os.WriteFile(target, marker, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", target, err)
	}
	select {
	case err := <-seen:
		return err
	case <-time.After(3 * time.Second):
		return errors.New("no open/write/close records within 3s")
	}
}

// checkUnusedHooks attaches a kprobe and an fentry program, which Ward does not need, to
// say plainly whether this kernel allows them: other agents (and future Ward sensors)
// depend on them, and IT asks.
func (d *doctor) checkUnusedHooks(rep *doctorReport) {
	const symbol = "vfs_write"
	ret0 := asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}
	if err := attachKprobe(symbol, ret0); err != nil {
		rep.add("kprobe", statusOK, "not used by Ward; unavailable on this kernel: %v", err)
	} else {
		rep.add("kprobe", statusOK, "not used by Ward; available (kprobe on %s attached)", symbol)
	}
	if err := attachFentry(symbol, ret0); err != nil {
		rep.add("fentry", statusOK, "not used by Ward; unavailable on this kernel: %v", err)
	} else {
		rep.add("fentry", statusOK, "not used by Ward; available (fentry on %s attached)", symbol)
	}
}

func attachKprobe(symbol string, insns asm.Instructions) error {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.Kprobe, Instructions: insns, License: "GPL"})
	if err != nil {
		return fmt.Errorf("load kprobe program: %w", err)
	}
	defer prog.Close()
	l, err := link.Kprobe(symbol, prog, nil)
	if err != nil {
		return fmt.Errorf("attach kprobe %s: %w", symbol, err)
	}
	return l.Close()
}

func attachFentry(symbol string, insns asm.Instructions) error {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.Tracing, AttachType: ebpf.AttachTraceFEntry, AttachTo: symbol,
		Instructions: insns, License: "GPL",
	})
	if err != nil {
		return fmt.Errorf("load fentry program for %s: %w", symbol, err)
	}
	defer prog.Close()
	l, err := link.AttachTracing(link.TracingOptions{Program: prog})
	if err != nil {
		return fmt.Errorf("attach fentry %s: %w", symbol, err)
	}
	return l.Close()
}

// tlsLibrary is a TLS library whose plaintext functions can be hooked with uprobes.
type tlsLibrary struct {
	name   string // shown in the report
	soname string // prefix looked up in the linker cache
	symbol string // a function a TLS plaintext uprobe attaches to
}

var tlsLibraries = [...]tlsLibrary{
	{"OpenSSL", "libssl.so", "SSL_write"},
	{"GnuTLS", "libgnutls.so", "gnutls_record_send"},
	{"NSS", "libnspr4.so", "PR_Write"},
}

// libDirs are searched when ldconfig is not there (minimal images).
var libDirs = [...]string{
	"/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib",
	"/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu",
}

// checkTLSLibraries finds the shared TLS libraries TLS-plaintext uprobes would attach to and,
// unless probes are skipped, attaches a uprobe to each library's write function. It is
// DEGRADED when none is found: inspection of TLS plaintext would be limited to SNI and DNS.
func (d *doctor) checkTLSLibraries(rep *doctorReport, skipProbes bool) {
	cache := linkerCache()
	found := 0
	for _, lib := range tlsLibraries {
		path := findLibrary(lib.soname, cache)
		if path == "" {
			rep.add("TLS "+lib.name, statusOK, "%s* not found (programs linking it statically are not covered)", lib.soname)
			continue
		}
		found++
		if skipProbes {
			rep.add("TLS "+lib.name, statusOK, "%s (uprobe not tried: --skip-probes)", path)
			continue
		}
		if err := attachUprobe(path, lib.symbol); err != nil {
			rep.add("TLS "+lib.name, statusDegraded, "%s found but a uprobe on %s did not attach: %v", path, lib.symbol, err)
			continue
		}
		rep.add("TLS "+lib.name, statusOK, "%s: uprobe on %s attaches", path, lib.symbol)
	}
	if found == 0 {
		rep.add("TLS libraries", statusDegraded, "no shared OpenSSL, GnuTLS or NSS: TLS traffic can be judged only by SNI, DNS and process")
	}
}

func attachUprobe(path, symbol string) error {
	ex, err := link.OpenExecutable(path)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.Kprobe, Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}, License: "GPL",
	})
	if err != nil {
		return fmt.Errorf("load uprobe program: %w", err)
	}
	defer prog.Close()
	l, err := ex.Uprobe(symbol, prog, nil)
	if err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	return l.Close()
}

// linkerCache returns `ldconfig -p` output, or nil when ldconfig is missing.
func linkerCache() []byte {
	for _, bin := range []string{"ldconfig", "/sbin/ldconfig", "/usr/sbin/ldconfig"} {
		out, err := exec.Command(bin, "-p").Output()
		if err == nil {
			return out
		}
	}
	return nil
}

// findLibrary looks soname up in the linker cache (native architecture entries), then in
// the usual library directories.
func findLibrary(soname string, cache []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(cache))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, soname) {
			continue
		}
		if _, path, ok := strings.Cut(line, "=> "); ok {
			if _, err := os.Stat(path); err == nil {
				return path
			}
		}
	}
	for _, dir := range libDirs {
		matches, _ := filepath.Glob(filepath.Join(dir, soname+"*"))
		for _, m := range matches {
			if st, err := os.Stat(m); err == nil && st.Mode().IsRegular() {
				return m
			}
		}
	}
	return ""
}

func (d *doctor) checkClock(rep *doctorReport) {
	var tx unix.Timex
	state, err := unix.Adjtimex(&tx)
	if err != nil {
		rep.add("clock", statusDegraded, "cannot read the clock's sync state: %v", err)
		return
	}
	if state == unix.TIME_ERROR || tx.Status&unix.STA_UNSYNC != 0 {
		rep.add("clock", statusDegraded, "not synchronised (NTP): event times may be off and certificates may look not-yet-valid or expired")
		return
	}
	rep.add("clock", statusOK, "synchronised (estimated error %d µs)", tx.Esterror)
}

func (d *doctor) checkSpoolDisk(rep *doctorReport, cfg config.Config) {
	dir := agent.SpoolDir(cfg.StateDir)
	for {
		if _, err := os.Stat(dir); err == nil || dir == filepath.Dir(dir) {
			break
		}
		dir = filepath.Dir(dir)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		rep.add("spool disk", statusDegraded, "statfs %s: %v", dir, err)
		return
	}
	free := int64(st.Bavail) * st.Bsize
	want := cfg.Spool.MaxBytes
	if free < want {
		rep.add("spool disk", statusDegraded, "%s has %s free, less than spool.max_bytes (%s): a long collector outage loses telemetry sooner",
			dir, mib(free), mib(want))
		return
	}
	rep.add("spool disk", statusOK, "%s has %s free for a spool of up to %s", dir, mib(free), mib(want))
}

func mib(n int64) string { return fmt.Sprintf("%d MiB", n>>20) }
