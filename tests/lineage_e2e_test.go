package tests

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
)

// encrypt runs openssl enc from a shell script, so the reads and writes happen in processes
// the test knows: script is run by bash -c with the tagged file as $1 and the output as $2.
// It returns bash's pid.
func bashScript(t *testing.T, script string, args ...string) int {
	t.Helper()
	cmd := exec.Command("bash", append([]string{"-c", script, "bash"}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("bash -c %q: %v\n%s", script, err, out.String())
	}
	return cmd.ProcessState.Pid()
}

const opensslEnc = "openssl enc -aes-256-cbc -pbkdf2 -pass pass:lineage-test"

func accessFor(evs []stored, path, exe string) *wardv1.FileAccess {
	for _, s := range evs {
		if a := s.Event.GetAccess(); a != nil && a.GetPath() == path && a.GetProcess().GetExe() == exe {
			return a
		}
	}
	return nil
}

func lineageMatch(f *wardv1.Finding) *wardv1.Match {
	for _, m := range f.GetMatches() {
		if m.GetDetector() == "lineage.taint" {
			return m
		}
	}
	return nil
}

// scrape reads the agent's metrics endpoint.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s\n%s", resp.Status, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("parse metrics: %v", err)
	}
	return fams
}

// metricValue sums a family's samples whose labels include want.
func metricValue(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
	var sum float64
	found := false
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			if labels[k] != v {
				match = false
			}
		}
		if !match {
			continue
		}
		found = true
		switch {
		case m.GetCounter() != nil:
			sum += m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			sum += m.GetGauge().GetValue()
		case m.GetHistogram() != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum, found
}

// TestLineageTaintFollowsTheData: a Part 2 record written into a watched directory is
// tagged; openssl reading it is logged as an access and an encrypted copy it writes (which
// no classifier recognises) is still a finding, attributed by taint; a child started by a
// shell that read the record inherits the taint; an unrelated process does not carry it,
// and the taint is gone after the TTL. The agent's Prometheus endpoint counts the work.
func TestLineageTaintFollowsTheData(t *testing.T) {
	metricsAddr := freeAddr(t)
	w := startWard(t, "--config", writeConfig(t, fmt.Sprintf(
		"lineage:\n  ttl: 4s\n  emit_interval: 100ms\ntargets:\n  disable: [removable, share, sync, print]\ntelemetry:\n  metrics_addr: %s\n",
		metricsAddr)))
	before := scrape(t, metricsAddr)
	for _, name := range []string{"ward_agent_bpf_drops_total", "ward_agent_probe_attached", "ward_agent_ringbuf_size_bytes",
		"ward_agent_ringbuf_used_bytes", "ward_agent_spool_bytes", "ward_agent_spool_events", "ward_agent_spool_evicted_total",
		"ward_agent_ship_events_total", "ward_agent_ship_failures_total", "ward_agent_ship_throttled_total",
		"ward_agent_classify_duration_seconds", "ward_agent_degraded", "go_goroutines"} {
		if _, ok := before[name]; !ok {
			t.Errorf("metric %s missing", name)
		}
	}
	if v, ok := metricValue(before, "ward_agent_probe_attached", map[string]string{"probe": "fileread.openat"}); !ok || v != 1 {
		t.Errorf("fileread.openat attached = %v (present %v)", v, ok)
	}
	if v, ok := metricValue(before, "ward_agent_bpf_drops_total", map[string]string{"probe": "filewrite", "reason": "ringbuf_full"}); !ok || v != 0 {
		t.Errorf("filewrite ringbuf_full drops = %v (present %v)", v, ok)
	}
	writesBefore, _ := metricValue(before, "ward_agent_probe_events_total", map[string]string{"probe": "filewrite"})
	classifiedBefore, _ := metricValue(before, "ward_agent_classify_duration_seconds", nil)

	// 1. The record lands in the watched directory: a content finding, and the file is tagged.
	chart := filepath.Join(w.watch, "chart.json")
	if out, err := exec.Command("cp", "testdata/fhir-part2-bundle.json", chart).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	w.waitFor(10*time.Second, "the Part 2 finding on the record", func(evs []stored) bool { return findingFor(evs, chart) != nil })
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(w.readLog("agent.log"), `msg="file tagged"`) {
		if time.Now().After(deadline) {
			t.Fatal("the record was not tagged")
		}
		time.Sleep(50 * time.Millisecond)
	}

	// 2. openssl reads it and writes an encrypted copy into the watched directory.
	direct := filepath.Join(w.watch, "direct.enc")
	bashScript(t, opensslEnc+` -in "$1" -out "$2"; true`, chart, direct)
	// 3. A shell opens the record, then starts openssl, which encrypts from the inherited
	// descriptor: openssl never opens the record itself.
	inherited := filepath.Join(w.watch, "inherited.enc")
	shell := bashScript(t, `exec 3< "$1"; `+opensslEnc+` -out "$2" <&3; true`, chart, inherited)
	// 4. An unrelated openssl encrypts a clean letter.
	clean := filepath.Join(w.watch, "unrelated.enc")
	bashScript(t, opensslEnc+` -in "$1" -out "$2"; true`, "testdata/clinic-letter-clean.txt", clean)

	openssl, err := filepath.EvalSymlinks("/usr/bin/openssl")
	if err != nil {
		t.Fatal(err)
	}
	evs := w.waitFor(15*time.Second, "the lineage findings and the clean copy's activity", func(evs []stored) bool {
		return findingFor(evs, direct) != nil && findingFor(evs, inherited) != nil && len(fileActivities(evs, clean)) > 0 &&
			accessFor(evs, chart, openssl) != nil
	})

	f := findingFor(evs, direct).GetFinding()
	m := lineageMatch(f)
	if m == nil || m.GetDataClass() != wardv1.DataClass_DATA_CLASS_PART2 || m.GetConfidence() > 60 || m.GetConfidence() < 30 {
		t.Errorf("direct copy: lineage match %v in %v", m, f.GetMatches())
	}
	if len(f.GetTaint()) != 1 || f.GetTaint()[0].GetSourcePath() != chart || f.GetTaint()[0].GetInherited() ||
		f.GetTaint()[0].GetReadByPid() != f.GetProcess().GetPid() || f.GetTaint()[0].GetDataClass() != wardv1.DataClass_DATA_CLASS_PART2 {
		t.Errorf("direct copy: taint %v, process pid %d", f.GetTaint(), f.GetProcess().GetPid())
	}
	if f.GetProcess().GetExe() != openssl || f.GetDecision().GetRuleId() == "" {
		t.Errorf("direct copy: exe %q rule %q", f.GetProcess().GetExe(), f.GetDecision().GetRuleId())
	}
	if f.GetConfidence() >= 70 {
		t.Errorf("lineage finding confidence %d is not below the Part 2 threshold", f.GetConfidence())
	}

	f = findingFor(evs, inherited).GetFinding()
	if tt := f.GetTaint(); len(tt) != 1 || !tt[0].GetInherited() || int(tt[0].GetReadByPid()) != shell || lineageMatch(f) == nil {
		t.Errorf("inherited copy: taint %v (shell pid %d), matches %v", tt, shell, f.GetMatches())
	}
	if f.GetProcess().GetExe() != openssl || int(f.GetProcess().GetPpid()) != shell {
		t.Errorf("inherited copy written by %q ppid %d, want openssl child of %d", f.GetProcess().GetExe(), f.GetProcess().GetPpid(), shell)
	}

	if findingFor(evs, clean) != nil {
		t.Errorf("an unrelated process's clean copy became a finding: %v", findingFor(evs, clean))
	}
	a := accessFor(evs, chart, openssl)
	if a.GetDataClass() != wardv1.DataClass_DATA_CLASS_PART2 || a.GetProcess().GetUid() != uint32(os.Getuid()) ||
		a.GetInode() == 0 || a.GetReadWrite() || a.GetTagOrigin() != "content" {
		t.Errorf("access event %v", a)
	}

	// 5. After the TTL the shell's taint has decayed: its next child writes clean.
	decayed := filepath.Join(w.watch, "decayed.enc")
	bashScript(t, `exec 3< "$1"; sleep 5; `+opensslEnc+` -out "$2" <&3; true`, chart, decayed)
	w.waitFor(10*time.Second, "the decayed copy's activity", func(evs []stored) bool { return len(fileActivities(evs, decayed)) > 0 })
	if ev := findingFor(w.events(), decayed); ev != nil {
		t.Errorf("copy written after the TTL is still attributed: %v", ev.GetFinding())
	}

	after := scrape(t, metricsAddr)
	if v, _ := metricValue(after, "ward_agent_probe_events_total", map[string]string{"probe": "filewrite"}); v <= writesBefore {
		t.Errorf("filewrite events did not move: %v → %v", writesBefore, v)
	}
	if v, _ := metricValue(after, "ward_agent_probe_events_total", map[string]string{"probe": "fileread"}); v < 2 {
		t.Errorf("fileread events = %v, want ≥ 2", v)
	}
	if v, _ := metricValue(after, "ward_agent_classify_duration_seconds", nil); v < classifiedBefore+4 {
		t.Errorf("classifications counted %v → %v", classifiedBefore, v)
	}
	if v, ok := metricValue(after, "ward_agent_policy_decisions_total", map[string]string{"action": "record"}); !ok || v < 2 {
		t.Errorf("record decisions = %v", v)
	}
	if v, ok := metricValue(after, "ward_agent_stage_events_total", map[string]string{"name": "lineage.tagged"}); !ok || v < 1 {
		t.Errorf("lineage.tagged = %v", v)
	}
	assertNoRaw(t, w.home, fixtureSSNs...)
}

// TestFsnotifyFallback: with eBPF off (capture.force_fsnotify) the agent still finds a Part 2
// document copied into a watched directory, re-read from disk and unattributed, and every
// Health event says the agent is degraded.
func TestFsnotifyFallback(t *testing.T) {
	w := startWard(t, "--config", writeConfig(t,
		"capture:\n  force_fsnotify: true\nhealth_interval: 2s\ntargets:\n  disable: [removable, share, sync, print]\n"))
	sub := filepath.Join(w.watch, "later", "deeper")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the new directory is watched from its Create event
	dst := filepath.Join(sub, "bundle.json")
	if out, err := exec.Command("cp", "testdata/fhir-part2-bundle.json", dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	evs := w.waitFor(15*time.Second, "the finding and two degraded health events", func(evs []stored) bool {
		n := 0
		for _, s := range evs {
			if degradedHealth(s.Event) {
				n++
			}
		}
		return findingFor(evs, dst) != nil && n >= 2
	})
	f := findingFor(evs, dst).GetFinding()
	if f.GetDataClass() != wardv1.DataClass_DATA_CLASS_PART2 || f.GetFile().GetContentSource() != wardv1.ContentSource_CONTENT_SOURCE_FILE_REREAD {
		t.Errorf("finding class %v source %v", f.GetDataClass(), f.GetFile().GetContentSource())
	}
	if f.GetProcess().GetPid() != 0 {
		t.Errorf("degraded finding claims a process: %v", f.GetProcess())
	}
	fas := fileActivities(evs, dst)
	if len(fas) == 0 || !strings.Contains(strings.Join(fas[0].GetNotes(), ","), "unattributed") {
		t.Errorf("file activity does not say it is unattributed: %v", fas)
	}
	if !strings.Contains(w.readLog("agent.log"), "DEGRADED") {
		t.Error("the agent log does not say it is degraded")
	}
	assertNoRaw(t, w.home, fixtureSSNs...)
}

func degradedHealth(ev *wardv1.Event) bool {
	for _, p := range ev.GetHealth().GetProbes() {
		if p.GetName() == "file.fsnotify" && strings.Contains(p.GetError(), "DEGRADED") {
			return true
		}
	}
	return false
}
