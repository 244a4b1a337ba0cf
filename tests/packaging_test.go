package tests

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// pkgSet is one built version of both packages.
type pkgSet struct {
	dir, version string
}

func (p pkgSet) deb(name string) string {
	return filepath.Join(p.dir, fmt.Sprintf("%s_%s_%s.deb", name, p.version, runtime.GOARCH))
}

func (p pkgSet) rpm(name string) string {
	arch := map[string]string{"amd64": "x86_64", "arm64": "aarch64"}[runtime.GOARCH]
	return filepath.Join(p.dir, fmt.Sprintf("%s-%s-1.%s.rpm", name, p.version, arch))
}

// buildPackages runs the real packaging script (what `make package` runs) into a new dir.
func buildPackages(t *testing.T, version string, epoch int64) pkgSet {
	t.Helper()
	out := t.TempDir()
	script, err := filepath.Abs("../packaging/build.sh")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res, err := runCmd(t, 5*time.Minute, []string{"VERSION=" + version, "OUT=" + out,
		fmt.Sprintf("SOURCE_DATE_EPOCH=%d", epoch)}, script)
	if err != nil {
		t.Fatalf("packaging/build.sh %s: %v\n%s", version, err, res)
	}
	t.Logf("built packages %s in %s", version, time.Since(start).Round(time.Second))
	return pkgSet{dir: out, version: version}
}

// TestPackages builds the .deb and .rpm packages twice over (a previous and a new version),
// checks their contents, scripts and units, and installs, upgrades, removes and purges them
// in a disposable Debian root with apt, running the installed binaries there.
func TestPackages(t *testing.T) {
	needRoot(t)
	const epoch = 1767225600 // 2026-01-01: any fixed time; the packages must only depend on it
	prev := buildPackages(t, "1.0.0", epoch)
	next := buildPackages(t, "1.1.0~rc1", epoch)

	t.Run("reproducible", func(t *testing.T) {
		again := buildPackages(t, "1.0.0", epoch)
		a, err := os.ReadFile(filepath.Join(prev.dir, "SHA256SUMS-1.0.0-"+runtime.GOARCH))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(again.dir, "SHA256SUMS-1.0.0-"+runtime.GOARCH))
		if err != nil {
			t.Fatal(err)
		}
		if string(a) != string(b) {
			t.Fatalf("two builds of the same version differ:\n%s\n%s", a, b)
		}
		if n := strings.Count(string(a), "\n"); n != 4 {
			t.Fatalf("SHA256SUMS lists %d packages, want 4:\n%s", n, a)
		}
	})
	t.Run("deb", func(t *testing.T) { checkDebs(t, next) })
	t.Run("rpm", func(t *testing.T) { checkRPMs(t, next) })
	t.Run("install-upgrade-remove", func(t *testing.T) { installLifecycle(t, prev, next) })
}

// debEntry is one line of `dpkg-deb -c`.
type debEntry struct{ mode, owner, path string }

func debContents(t *testing.T, deb string) map[string]debEntry {
	t.Helper()
	out := mustRun(t, time.Minute, "dpkg-deb", "-c", deb)
	res := map[string]debEntry{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 6 {
			continue
		}
		p := strings.TrimPrefix(f[len(f)-1], ".")
		res[p] = debEntry{mode: f[0], owner: f[1], path: p}
	}
	return res
}

func checkDebs(t *testing.T, p pkgSet) {
	want := map[string]map[string]string{
		"ward-agent": {
			"/usr/bin/ward-agent":                        "-rwxr-xr-x",
			"/usr/lib/systemd/system/ward-agent.service": "-rw-r--r--",
			"/etc/ward/agent.yaml":                       "-rw-r-----",
			"/usr/share/doc/ward-agent/operations.md":    "-rw-r--r--",
		},
		"ward-collector": {
			"/usr/bin/ward-collector":                        "-rwxr-xr-x",
			"/usr/bin/wardctl":                               "-rwxr-xr-x",
			"/usr/lib/systemd/system/ward-collector.service": "-rw-r--r--",
			"/etc/ward/collector.yaml":                       "-rw-r--r--",
		},
	}
	for name, files := range want {
		deb := p.deb(name)
		got := debContents(t, deb)
		for path, mode := range files {
			e, ok := got[path]
			if !ok {
				t.Errorf("%s lacks %s", filepath.Base(deb), path)
				continue
			}
			if e.mode != mode || e.owner != "root/root" {
				t.Errorf("%s: %s is %s %s, want %s root/root", filepath.Base(deb), path, e.mode, e.owner, mode)
			}
		}
		for path := range got {
			if strings.HasPrefix(path, "/var/") {
				t.Errorf("%s ships %s: state directories are made by postinst so removal never touches them", filepath.Base(deb), path)
			}
		}
		fields := mustRun(t, time.Minute, "dpkg-deb", "-f", deb, "Package", "Version", "Architecture")
		for _, w := range []string{"Package: " + name, "Version: " + p.version, "Architecture: " + runtime.GOARCH} {
			if !strings.Contains(fields, w) {
				t.Errorf("%s control lacks %q:\n%s", filepath.Base(deb), w, fields)
			}
		}
		ctl := t.TempDir()
		mustRun(t, time.Minute, "dpkg-deb", "-e", deb, ctl)
		conf, err := os.ReadFile(filepath.Join(ctl, "conffiles"))
		if err != nil {
			t.Fatalf("%s has no conffiles: %v", filepath.Base(deb), err)
		}
		wantConf := "/etc/ward/" + strings.TrimPrefix(name, "ward-") + ".yaml"
		if strings.TrimSpace(string(conf)) != wantConf {
			t.Errorf("%s conffiles = %q, want %q", filepath.Base(deb), conf, wantConf)
		}
		for _, s := range []string{"postinst", "prerm", "postrm"} {
			st, err := os.Stat(filepath.Join(ctl, s))
			if err != nil || st.Mode().Perm()&0o100 == 0 {
				t.Errorf("%s: maintainer script %s missing or not executable: %v", filepath.Base(deb), s, err)
			}
		}
	}
}

func checkRPMs(t *testing.T, p pkgSet) {
	if _, err := exec.LookPath("rpm"); err != nil {
		t.Fatalf("rpm is not installed (scripts/deps.sh test installs it): %v", err)
	}
	for name, files := range map[string][]string{
		"ward-agent":     {"/etc/ward/agent.yaml", "/usr/bin/ward-agent", "/usr/lib/systemd/system/ward-agent.service"},
		"ward-collector": {"/etc/ward/collector.yaml", "/usr/bin/ward-collector", "/usr/bin/wardctl", "/usr/lib/systemd/system/ward-collector.service"},
	} {
		r := p.rpm(name)
		list := strings.Fields(mustRun(t, time.Minute, "rpm", "-qlp", r))
		for _, f := range files {
			if !slices.Contains(list, f) {
				t.Errorf("%s lacks %s (has %v)", filepath.Base(r), f, list)
			}
		}
		conf := strings.TrimSpace(mustRun(t, time.Minute, "rpm", "-qpc", r))
		if conf != files[0] {
			t.Errorf("%s config files = %q, want %q", filepath.Base(r), conf, files[0])
		}
		// %config(noreplace) is flag 0x11 (config|noreplace) in FILEFLAGS.
		flags := mustRun(t, time.Minute, "rpm", "-qp", "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]", r)
		if !strings.Contains(flags, files[0]+" cn") {
			t.Errorf("%s: %s is not %%config(noreplace):\n%s", filepath.Base(r), files[0], flags)
		}
		scripts := mustRun(t, time.Minute, "rpm", "-qp", "--scripts", r)
		for _, s := range []string{"postinstall scriptlet", "preuninstall scriptlet", "postuninstall scriptlet"} {
			if !strings.Contains(scripts, s) {
				t.Errorf("%s has no %s", filepath.Base(r), s)
			}
		}
		ver := mustRun(t, time.Minute, "rpm", "-qp", "--qf", "%{VERSION}", r)
		if ver != p.version {
			t.Errorf("%s version %q, want %q", filepath.Base(r), ver, p.version)
		}
	}
}

// unitValues reads the values of key in a unit file (every occurrence, in order).
func unitValues(t *testing.T, path, key string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var vals []string
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), key+"="); ok {
			vals = append(vals, v)
		}
	}
	return vals
}

func checkUnits(t *testing.T, root string) {
	out, err := inRoot(t, root, nil, "systemd-analyze", "verify",
		"/usr/lib/systemd/system/ward-agent.service", "/usr/lib/systemd/system/ward-collector.service")
	if err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	agentUnit := filepath.Join(root, "usr/lib/systemd/system/ward-agent.service")
	collUnit := filepath.Join(root, "usr/lib/systemd/system/ward-collector.service")
	for _, c := range []struct {
		unit, key, want string
	}{
		{agentUnit, "Type", "notify"},
		{agentUnit, "Restart", "on-failure"},
		{agentUnit, "WatchdogSec", "60s"},
		{agentUnit, "NoNewPrivileges", "yes"},
		{agentUnit, "ProtectSystem", "strict"},
		{agentUnit, "ConditionPathExists", "/var/lib/ward/agent/identity/identity.json"},
		{agentUnit, "CapabilityBoundingSet", "CAP_BPF CAP_PERFMON CAP_SYS_RESOURCE CAP_DAC_READ_SEARCH CAP_SYS_PTRACE CAP_NET_ADMIN"},
		{collUnit, "Type", "notify"},
		{collUnit, "User", "ward"},
		{collUnit, "WatchdogSec", "60s"},
		{collUnit, "CapabilityBoundingSet", ""},
		{collUnit, "ProtectSystem", "strict"},
		{collUnit, "PrivateTmp", "yes"},
		{collUnit, "NoNewPrivileges", "yes"},
		{collUnit, "SystemCallFilter", "@system-service"},
	} {
		if vals := unitValues(t, c.unit, c.key); !slices.Contains(vals, c.want) {
			t.Errorf("%s: %s=%q, want %q", filepath.Base(c.unit), c.key, vals, c.want)
		}
	}
	// The agent's capabilities are granted only through the bounding set: nothing ambient.
	if v := unitValues(t, agentUnit, "AmbientCapabilities"); len(v) > 0 {
		t.Errorf("ward-agent.service grants ambient capabilities %v", v)
	}
}

// boundingSet turns the agent unit's CapabilityBoundingSet into setpriv(1)'s syntax.
func boundingSet(t *testing.T, root string) string {
	vals := unitValues(t, filepath.Join(root, "usr/lib/systemd/system/ward-agent.service"), "CapabilityBoundingSet")
	if len(vals) != 1 {
		t.Fatalf("CapabilityBoundingSet: %v", vals)
	}
	set := []string{"-all"}
	for c := range strings.FieldsSeq(vals[0]) {
		set = append(set, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
	}
	return strings.Join(set, ",")
}

// doctorJSON runs the installed doctor with args and decodes its JSON report.
func doctorJSON(t *testing.T, root string, prefix ...string) (map[string]string, bool, string, error) {
	t.Helper()
	args := append(prefix, "/usr/bin/ward-agent", "doctor", "-o", "json")
	out, runErr := inRoot(t, root, nil, args...)
	var rep struct {
		CanRun bool `json:"can_run"`
		Checks []struct {
			Check, Status, Detail string
		} `json:"checks"`
	}
	start := strings.Index(out, "{")
	if start < 0 {
		t.Fatalf("doctor printed no JSON (%v):\n%s", runErr, out)
	}
	if err := json.Unmarshal([]byte(out[start:]), &rep); err != nil {
		t.Fatalf("doctor JSON: %v\n%s", err, out)
	}
	st := map[string]string{}
	for _, c := range rep.Checks {
		st[c.Check] = c.Status
	}
	return st, rep.CanRun, out, runErr
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startInstalledCollector starts the installed collector in root as the ward user, as the
// unit would, and waits until wardctl reaches it.
func startInstalledCollector(t *testing.T, root, listen string) func() {
	t.Helper()
	cmd := exec.Command("chroot", "--userspec=ward:ward", root, "/usr/bin/ward-collector",
		"--config", "/etc/ward/collector.yaml", "--listen", listen)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	logPath := filepath.Join(t.TempDir(), "collector.log")
	log, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stop := func() {
		if cmd.Process == nil || cmd.ProcessState != nil {
			return
		}
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		_ = log.Close()
	}
	t.Cleanup(stop)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := inRoot(t, root, nil, "wardctl", "--home", "/var/lib/ward", "agents"); err == nil {
			return stop
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logPath)
			t.Fatalf("installed collector not ready:\n%s", b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func installLifecycle(t *testing.T, prev, next pkgSet) {
	root := disposableRoot(t)
	pkgs := filepath.Join(root, "tmp", "pkgs")
	if err := os.MkdirAll(pkgs, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{prev.deb("ward-agent"), prev.deb("ward-collector"), next.deb("ward-agent"), next.deb("ward-collector")} {
		mustRun(t, time.Minute, "cp", p, pkgs)
	}
	inPkgs := func(p string) string { return "/tmp/pkgs/" + filepath.Base(p) }

	// Install the previous version with apt, from local files (no network).
	mustInRoot(t, root, "apt-get", "install", "-y", "--no-install-recommends",
		inPkgs(prev.deb("ward-collector")), inPkgs(prev.deb("ward-agent")))
	checkUnits(t, root)
	if out := mustInRoot(t, root, "/usr/bin/ward-collector", "--version"); strings.TrimSpace(out) != "ward-collector "+prev.version {
		t.Errorf("installed ward-collector --version = %q", out)
	}
	pw := mustInRoot(t, root, "getent", "passwd", "ward")
	if !strings.Contains(pw, "/var/lib/ward/collector") || !strings.Contains(pw, "nologin") {
		t.Errorf("ward user: %q", pw)
	}
	if out := mustInRoot(t, root, "stat", "-c", "%U %a", "/var/lib/ward/collector", "/var/lib/ward/agent"); out != "ward 700\nroot 700\n" {
		t.Errorf("state directories (owner mode):\n%s", out)
	}
	for _, u := range []string{"ward-agent", "ward-collector"} {
		if out, _ := inRoot(t, root, nil, "systemctl", "is-enabled", u+".service"); strings.TrimSpace(out) != "enabled" {
			t.Errorf("%s.service is-enabled = %q, want enabled", u, out)
		}
	}

	// Before enrolment the doctor runs, prints its table and says the agent cannot run.
	out, err := inRoot(t, root, nil, "/usr/bin/ward-agent", "doctor")
	if err == nil || !regexp.MustCompile(`(?m)^enrolment\s+FAIL\s`).MatchString(out) || !strings.Contains(out, "CHECK") {
		t.Fatalf("doctor before enrolment: want exit 1 and an enrolment FAIL row; got %v\n%s", err, out)
	}

	// Collector from the installed path, as its unit runs it; unattended enrolment from a
	// token file, as configuration management does it.
	listen := freePort(t)
	stopCollector := startInstalledCollector(t, root, listen)
	// The token is alone on wardctl's stdout, the first line; a note follows on stderr.
	firstLine := func(s string) string { l, _, _ := strings.Cut(s, "\n"); return strings.TrimSpace(l) }
	token := firstLine(mustInRoot(t, root, "wardctl", "--home", "/var/lib/ward", "token", "create", "--ttl", "10m"))
	if err := os.WriteFile(filepath.Join(root, "root", "ward.token"), []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustInRoot(t, root, "/usr/bin/ward-agent", "enroll", "--collector", listen, "--token-file", "/root/ward.token",
		"--ca-file", "/var/lib/ward/collector/pki/ca.crt")
	// The environment variable path, into a second state dir.
	token2 := firstLine(mustInRoot(t, root, "wardctl", "--home", "/var/lib/ward", "token", "create", "--ttl", "10m"))
	if out, err := inRoot(t, root, []string{"WARD_ENROLL_TOKEN=" + token2}, "/usr/bin/ward-agent", "enroll",
		"--collector", listen, "--ca-file", "/var/lib/ward/collector/pki/ca.crt", "--state-dir", "/root/agent2"); err != nil {
		t.Fatalf("enrol with WARD_ENROLL_TOKEN: %v\n%s", err, out)
	}

	status, canRun, out, err := doctorJSON(t, root)
	if err != nil || !canRun {
		t.Fatalf("doctor after enrolment: can_run=%v err=%v\n%s", canRun, err, out)
	}
	for check, want := range map[string]string{"enrolment": "OK", "collector": "OK", "BTF": "OK", "state dir": "OK"} {
		if status[check] != want {
			t.Errorf("doctor %s = %q, want %q\n%s", check, status[check], want, out)
		}
	}
	// The unit's capability bounding set is enough to attach every probe.
	status, _, out, _ = doctorJSON(t, root, "setpriv", "--bounding-set="+boundingSet(t, root))
	for _, check := range []string{"privileges", "probe process exec", "probe filewrite open/openat", "probe filewrite write/write", "file capture"} {
		if status[check] != "OK" {
			t.Errorf("doctor under the unit's capabilities: %s = %q, want OK\n%s", check, status[check], out)
		}
	}

	// Local changes an upgrade must keep: an edited conffile and the agent's spool.
	cfgPath := filepath.Join(root, "etc/ward/agent.yaml")
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(cfg), "watch: []", "watch:\n  - /srv/exports", 1)
	if edited == string(cfg) {
		t.Fatal("packaged agent.yaml has no `watch: []` line to edit")
	}
	if err := os.WriteFile(cfgPath, []byte(edited), 0o640); err != nil {
		t.Fatal(err)
	}
	spoolMarker := filepath.Join(root, "var/lib/ward/agent/spool/findings/0000000000000001.seg.keep")
	if err := os.MkdirAll(filepath.Dir(spoolMarker), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(spoolMarker, []byte("unsent findings"), 0o600); err != nil {
		t.Fatal(err)
	}
	identityBefore, err := os.ReadFile(filepath.Join(root, "var/lib/ward/agent/identity/identity.json"))
	if err != nil {
		t.Fatal(err)
	}
	stopCollector()

	// Upgrade both packages.
	mustInRoot(t, root, "apt-get", "install", "-y", "--no-install-recommends",
		inPkgs(next.deb("ward-collector")), inPkgs(next.deb("ward-agent")))
	if out := mustInRoot(t, root, "/usr/bin/ward-agent", "version"); strings.TrimSpace(out) != "ward-agent "+next.version {
		t.Errorf("after upgrade ward-agent version = %q, want %s", out, next.version)
	}
	if out := mustInRoot(t, root, "dpkg-query", "-W", "-f", "${Version} ${Status}\n", "ward-agent", "ward-collector"); strings.Count(out, next.version+" install ok installed") != 2 {
		t.Errorf("after upgrade dpkg says:\n%s", out)
	}
	if b, _ := os.ReadFile(cfgPath); string(b) != edited {
		t.Errorf("upgrade changed the edited /etc/ward/agent.yaml:\n%s", b)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(root, "etc/ward/*.dpkg-*")); len(leftovers) > 0 {
		t.Errorf("upgrade left conffile copies: %v", leftovers)
	}
	if b, err := os.ReadFile(spoolMarker); err != nil || string(b) != "unsent findings" {
		t.Errorf("upgrade lost the spool: %q %v", b, err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "var/lib/ward/agent/identity/identity.json")); string(b) != string(identityBefore) {
		t.Error("upgrade changed the agent identity")
	}
	// The upgraded collector serves the same CA and store: the agent enrolled before the
	// upgrade is still accepted.
	stopCollector = startInstalledCollector(t, root, listen)
	status, canRun, out, _ = doctorJSON(t, root)
	if !canRun || status["collector"] != "OK" || status["config"] != "DEGRADED" {
		// DEGRADED config: /srv/exports, now watched, does not exist in the root.
		t.Errorf("doctor after upgrade: can_run=%v collector=%q config=%q\n%s", canRun, status["collector"], status["config"], out)
	}

	stopCollector()

	// Remove keeps configuration, the evidence store and the spool.
	mustInRoot(t, root, "apt-get", "remove", "-y", "ward-agent", "ward-collector")
	for _, p := range []string{"usr/bin/ward-agent", "usr/bin/ward-collector", "usr/lib/systemd/system/ward-agent.service"} {
		if _, err := os.Stat(filepath.Join(root, p)); err == nil {
			t.Errorf("remove left /%s", p)
		}
	}
	for _, p := range []string{"etc/ward/agent.yaml", "etc/ward/collector.yaml", "var/lib/ward/collector/ward.db",
		"var/lib/ward/collector/pki/ca.key", "var/lib/ward/agent/identity/identity.json"} {
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Errorf("remove (not purge) deleted /%s: %v", p, err)
		}
	}
	if _, err := os.Stat(spoolMarker); err != nil {
		t.Errorf("remove (not purge) deleted the spool: %v", err)
	}
	// Purge deletes them.
	mustInRoot(t, root, "apt-get", "purge", "-y", "ward-agent", "ward-collector")
	for _, p := range []string{"var/lib/ward", "etc/ward"} {
		if _, err := os.Stat(filepath.Join(root, p)); err == nil {
			t.Errorf("purge left /%s", p)
		}
	}
}
