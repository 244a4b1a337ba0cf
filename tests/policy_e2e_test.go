package tests

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/policy"
)

// TestPolicyPushChangesDecisionSeenAtCollector: the agent starts on the built-in pack, where
// PHI in a watched directory is a medium alert; wardctl signs and pushes v2 that blocks it at
// critical severity; the next PHI file arrives at the collector decided by v2, with the block
// recorded as decided but not enforceable on a file write. A v3 signed by an unpinned key is
// refused: the agent keeps v2 and says so in a Health event.
func TestPolicyPushChangesDecisionSeenAtCollector(t *testing.T) {
	needRoot(t)
	work := t.TempDir()
	key := filepath.Join(work, "policy.key")
	skey, vkey, err := policy.GenerateKey("e2e-policy")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, []byte(skey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(work, "agent.yaml")
	if err := os.WriteFile(cfg, []byte("policy:\n  keys: [\""+vkey+"\"]\n  poll_interval: 1s\n  host_tags: [clinical]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	w := startWard(t, "--config", cfg)

	phi := func(name string) string {
		p := filepath.Join(w.watch, name)
		if err := os.WriteFile(p, []byte("Patient intake 00042\nSSN: 142-37-1234\nDOB 1980-02-03\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	decisionFor := func(path string) *wardv1.Decision {
		t.Helper()
		var d *wardv1.Decision
		w.waitFor(15*time.Second, "finding for "+path, func(evs []stored) bool {
			if ev := findingFor(evs, path); ev != nil {
				d = ev.GetFinding().GetDecision()
				return true
			}
			return false
		}, "--kind", "finding")
		return d
	}
	d := decisionFor(phi("before.txt"))
	if d.GetRuleId() != "phi-in-watched-path" || d.GetPolicyVersion() != "0" || d.GetAction() != wardv1.Action_ACTION_ALERT ||
		d.GetSeverity() != wardv1.Severity_SEVERITY_MEDIUM || d.GetActionTaken() != wardv1.Action_ACTION_ALERT {
		t.Fatalf("built-in decision: %v", d)
	}

	// v2: PHI in a watched path is blocked at critical severity.
	src := string(policy.DefaultPack())
	src = strings.Replace(src, "version: 1\n", "version: 2\n", 1)
	old := "when: '\"phi\" in data.detected && destination.kind == \"watched-path\"'\n    then: {action: alert, severity: medium}"
	if !strings.Contains(src, old) {
		t.Fatal("default pack changed; update the test")
	}
	src = strings.Replace(src, old, "when: '\"phi\" in data.detected && destination.kind == \"watched-path\"'\n    then: {action: block, severity: critical}", 1)
	pol := filepath.Join(work, "v2.yaml")
	os.WriteFile(pol, []byte(src), 0o644)
	bundle := filepath.Join(work, "v2.bundle")
	if out, err := w.ctl("policy", "sign", "--key", key, "-o", bundle, pol); err != nil {
		t.Fatalf("sign: %v\n%s", err, out)
	}
	if out, err := w.ctl("policy", "push", bundle); err != nil {
		t.Fatalf("push: %v\n%s", err, out)
	}
	waitHealth := func(what string, pred func(*wardv1.PolicyStatus) bool) {
		t.Helper()
		w.waitFor(20*time.Second, what, func(evs []stored) bool {
			for _, s := range evs {
				if h := s.Event.GetHealth(); h != nil && pred(h.GetPolicy()) {
					return true
				}
			}
			return false
		}, "--kind", "health")
	}
	waitHealth("a health event reporting v2", func(p *wardv1.PolicyStatus) bool { return p.GetVersion() == 2 && p.GetLastError() == "" })
	for deadline := time.Now().Add(10 * time.Second); ; {
		out, err := w.ctl("agents")
		if err == nil && strings.Contains(out, "default/v2") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("wardctl agents does not show v2: %v\n%s", err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}

	d = decisionFor(phi("after.txt"))
	if d.GetRuleId() != "phi-in-watched-path" || d.GetPolicyVersion() != "2" || d.GetPolicyName() != "behavioural-health-default" ||
		d.GetAction() != wardv1.Action_ACTION_BLOCK || d.GetSeverity() != wardv1.Severity_SEVERITY_CRITICAL ||
		d.GetActionTaken() != wardv1.Action_ACTION_ALERT || !strings.Contains(d.GetEnforcement(), "not enforceable") {
		t.Fatalf("decision under v2: %v", d)
	}

	// v3 signed by a key the agent does not pin: refused, v2 stays, a health event says why.
	rogueS, _, _ := policy.GenerateKey("e2e-policy")
	rogueKey := filepath.Join(work, "rogue.key")
	os.WriteFile(rogueKey, []byte(rogueS), 0o600)
	os.WriteFile(pol, []byte(strings.Replace(src, "version: 2\n", "version: 3\n", 1)), 0o644)
	rogue := filepath.Join(work, "v3.bundle")
	if out, err := w.ctl("policy", "sign", "--key", rogueKey, "-o", rogue, pol); err != nil {
		t.Fatalf("sign: %v\n%s", err, out)
	}
	if out, err := w.ctl("policy", "push", rogue); err != nil {
		t.Fatalf("push: %v\n%s", err, out)
	}
	waitHealth("a health event reporting the refusal", func(p *wardv1.PolicyStatus) bool {
		return p.GetVersion() == 2 && strings.Contains(p.GetLastError(), "signature") && p.GetRejectedVersion() == 3
	})
	d = decisionFor(phi("after-rogue.txt"))
	if d.GetPolicyVersion() != "2" {
		t.Fatalf("decision after the rogue bundle: %v", d)
	}
	if w.agent.ProcessState != nil || bytes.Contains([]byte(w.readLog("agent.log")), []byte("panic")) {
		t.Fatal("agent crashed or panicked")
	}
}
