package tests

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
)

// Raw identifiers in the fixtures. None may ever leave the watched directory.
var fixtureSSNs = []string{"512-64-7839", "512647839", "431-58-2267", "431582267"}

func findings(evs []stored) []*wardv1.Event {
	var out []*wardv1.Event
	for _, s := range evs {
		if s.Event.GetFinding() != nil {
			out = append(out, s.Event)
		}
	}
	return out
}

func findingFor(evs []stored, path string) *wardv1.Event {
	for _, ev := range findings(evs) {
		if ev.GetFinding().GetFile().GetPath() == path {
			return ev
		}
	}
	return nil
}

// TestPart2FilesCopiedIntoWatchedDirBecomeStoredFindings is the spine: cp a Part 2-labelled
// FHIR bundle and a C-CDA with the redisclosure notice into a watched directory; each
// arrives at the collector as a finding with the right class, process, user and path, and
// no raw SSN from the fixtures is anywhere in the store, the spool or the logs.
func TestPart2FilesCopiedIntoWatchedDirBecomeStoredFindings(t *testing.T) {
	w := startWard(t)
	type copied struct {
		src, dst string
		pid      int
		detector string
	}
	cases := []*copied{
		{src: "testdata/fhir-part2-bundle.json", detector: "fhir"},
		{src: "testdata/ccda-part2-notice.xml", detector: ""},
	}
	sub := filepath.Join(w.watch, "exports", "2026-10")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, c := range cases {
		c.dst = filepath.Join(sub, fmt.Sprintf("%d-%s", i, filepath.Base(c.src)))
		cmd := exec.Command("cp", c.src, c.dst)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("cp: %v %s", err, out)
		}
		c.pid = cmd.ProcessState.Pid()
	}
	cpPath, err := exec.LookPath("cp")
	if err != nil {
		t.Fatal(err)
	}
	cpExe, _ := filepath.EvalSymlinks(cpPath)
	me, _ := user.Current()

	start := time.Now()
	evs := w.waitFor(10*time.Second, "both findings", func(evs []stored) bool {
		return findingFor(evs, cases[0].dst) != nil && findingFor(evs, cases[1].dst) != nil
	})
	t.Logf("both findings stored %s after the copies", time.Since(start).Round(time.Millisecond))

	for _, c := range cases {
		ev := findingFor(evs, c.dst)
		f := ev.GetFinding()
		if f.GetDataClass() != wardv1.DataClass_DATA_CLASS_PART2 {
			t.Errorf("%s: data class %v, want PART2", c.dst, f.GetDataClass())
		}
		p := f.GetProcess()
		if int(p.GetPid()) != c.pid {
			t.Errorf("%s: pid %d, want cp's pid %d", c.dst, p.GetPid(), c.pid)
		}
		if p.GetExe() != cpExe {
			t.Errorf("%s: exe %q, want %q", c.dst, p.GetExe(), cpExe)
		}
		if len(p.GetArgs()) < 3 || p.GetArgs()[0] != "cp" || p.GetArgs()[len(p.GetArgs())-1] != c.dst {
			t.Errorf("%s: args %q", c.dst, p.GetArgs())
		}
		if p.GetUser() != me.Username || p.GetUid() != uint32(os.Getuid()) {
			t.Errorf("%s: user %q uid %d, want %q", c.dst, p.GetUser(), p.GetUid(), me.Username)
		}
		if ev.GetAgentId() != w.agentID {
			t.Errorf("agent id %q, want %q", ev.GetAgentId(), w.agentID)
		}
		host, _ := os.Hostname()
		if ev.GetHost().GetHostname() != host || ev.GetSeq() == 0 || ev.GetId() == "" {
			t.Errorf("envelope: host %q seq %d id %q", ev.GetHost().GetHostname(), ev.GetSeq(), ev.GetId())
		}
		if f.GetDecision().GetAction() != wardv1.Action_ACTION_ALERT || f.GetDecision().GetRuleId() == "" {
			t.Errorf("decision %v", f.GetDecision())
		}
		var part2, masked bool
		for _, m := range f.GetMatches() {
			if m.GetDataClass() == wardv1.DataClass_DATA_CLASS_PART2 && strings.Contains(m.GetDetector(), c.detector) {
				part2 = true
			}
			for _, s := range m.GetMaskedSamples() {
				if strings.HasPrefix(s, "***-**-") {
					masked = true
				}
			}
		}
		if !part2 {
			t.Errorf("%s: no Part 2 match from a %q detector in %v", c.dst, c.detector, f.GetMatches())
		}
		if !masked {
			t.Errorf("%s: no masked SSN sample among the matches %v", c.dst, f.GetMatches())
		}
	}

	// The table view an operator reads must not carry raw values either.
	table, err := w.ctl("events")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table, "finding") {
		t.Errorf("wardctl events table shows no finding:\n%s", table)
	}
	w.stop() // flush logs and the WAL before scanning
	for _, raw := range fixtureSSNs {
		if strings.Contains(table, raw) {
			t.Errorf("raw SSN %q in wardctl output", raw)
		}
	}
	assertNoRaw(t, w.home, fixtureSSNs...)
}

// TestUnwatchedDirectoryWriteProducesNoFileEvent: the kernel filter drops writes outside
// watched directories; a marker written into the watched one afterwards proves the agent
// was listening when the unwatched write happened.
func TestUnwatchedDirectoryWriteProducesNoFileEvent(t *testing.T) {
	w := startWard(t)
	elsewhere := filepath.Join(t.TempDir(), "not-watched.json")
	if out, err := exec.Command("cp", "testdata/fhir-part2-bundle.json", elsewhere).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	marker := filepath.Join(w.watch, "marker.json")
	if out, err := exec.Command("cp", "testdata/fhir-part2-bundle.json", marker).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	evs := w.waitFor(10*time.Second, "the marker's finding", func(evs []stored) bool { return findingFor(evs, marker) != nil })
	for _, s := range evs {
		if strings.Contains(s.Event.GetFile().GetPath(), "not-watched") || strings.Contains(s.Event.GetFinding().GetFile().GetPath(), "not-watched") {
			t.Fatalf("event for an unwatched file: %v", s.Event)
		}
	}
}

// TestCollectorOutageLosesNothing kills the collector while the agent is producing 10,000
// findings and restarts it: every finding is stored exactly once, and the agent's sequence
// numbers are dense, so nothing in between was lost either.
func TestCollectorOutageLosesNothing(t *testing.T) {
	w := startWard(t)
	const n = 10000
	dir := filepath.Join(w.watch, "bulk")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Synthetic, valid-format SSNs with context: each file is one PHI finding.
	content := func(i int) []byte {
		return fmt.Appendf(nil, "Patient intake %05d\nSSN: %03d-%02d-%04d\n", i, 100+i%500, 10+i%89, 1000+i%9000)
	}
	errs := make(chan error, 1)
	go func() {
		for i := range n {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("intake-%05d.txt", i)), content(i), 0o600); err != nil {
				errs <- err
				return
			}
			if i%500 == 499 {
				time.Sleep(20 * time.Millisecond) // a busy clinic, not a fork bomb
			}
		}
		errs <- nil
	}()
	time.Sleep(500 * time.Millisecond)
	w.killCollector()
	time.Sleep(3 * time.Second)
	w.startCollector()
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	evs := w.waitFor(3*time.Minute, fmt.Sprintf("%d findings", n), func(evs []stored) bool {
		return len(findings(evs)) >= n
	}, "--kind", "finding")
	seen := map[string]int{}
	for _, ev := range findings(evs) {
		seen[ev.GetFinding().GetFile().GetPath()]++
	}
	if len(seen) != n {
		t.Errorf("findings for %d distinct files, want %d", len(seen), n)
	}
	for p, c := range seen {
		if c != 1 {
			t.Errorf("%s stored %d times", p, c)
		}
	}
	// Dense sequence numbers: everything the agent spooled up to the highest stored seq is
	// stored, telemetry and health included.
	all := w.events("--agent", w.agentID)
	var maxSeq uint64
	seqs := map[uint64]bool{}
	for _, s := range all {
		seqs[s.Event.GetSeq()] = true
		maxSeq = max(maxSeq, s.Event.GetSeq())
	}
	if uint64(len(seqs)) != maxSeq || len(seqs) != len(all) {
		t.Errorf("stored %d events (%d distinct seqs) but the highest seq is %d: gaps or duplicates", len(all), len(seqs), maxSeq)
	}
}

// TestBadInputIsAClearErrorAndNothingCrashes: garbage and truncated files in a watched
// directory, a client certificate from another CA, and a reused enrolment token.
func TestBadInputIsAClearErrorAndNothingCrashes(t *testing.T) {
	w := startWard(t)
	garbage := make([]byte, 64<<10)
	if _, err := rand.Read(garbage); err != nil {
		t.Fatal(err)
	}
	bundle, err := os.ReadFile("testdata/fhir-part2-bundle.json")
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{
		"garbage.bin":           garbage,
		"truncated-bundle.json": bundle[:len(bundle)/3],
		"empty.json":            nil,
		"nul-and-braces.json":   []byte("{\x00{{{[[[\"meta\":{\"security\":[{\"system\":"),
	} {
		if err := os.WriteFile(filepath.Join(w.watch, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	good := filepath.Join(w.watch, "after-garbage.json")
	if err := os.WriteFile(good, bundle, 0o600); err != nil {
		t.Fatal(err)
	}
	w.waitFor(10*time.Second, "a finding after the garbage", func(evs []stored) bool { return findingFor(evs, good) != nil })

	// A certificate from a CA the collector never saw is refused.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rogue := selfSignedClient(t, w.agentID)
	pool := x509.NewCertPool()
	caPEM, err := os.ReadFile(filepath.Join(w.home, "collector", "pki", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(caPEM)
	conn, err := grpc.NewClient(w.listen, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13,
		// Present the rogue certificate whatever CAs the server asks for, as an attacker would.
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &rogue, nil },
	})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = wardv1.NewAgentServiceClient(conn).Export(ctx, &wardv1.ExportRequest{Events: []*wardv1.Event{{
		Id: "0193a0a0-0000-7000-8000-000000000000", AgentId: w.agentID, Seq: 1,
		Payload: &wardv1.Event_Health{Health: &wardv1.Health{}},
	}}})
	if err == nil {
		t.Fatal("export with a certificate from another CA was accepted")
	}
	// In TLS 1.3 the client learns of the refusal after its half of the handshake, so the
	// error is a TLS alert or a broken pipe; what matters is that nothing was stored.
	t.Logf("rogue certificate refused: %v", err)
	for _, s := range w.events() {
		if s.Event.GetId() == "0193a0a0-0000-7000-8000-000000000000" {
			t.Fatal("the rogue client's event was stored")
		}
	}

	// A token works once. The first use authenticates the collector by a CA pin, as a
	// fleet install would; a wrong pin is refused before the token is sent.
	tok := w.token()
	dir1, dir2 := t.TempDir(), t.TempDir()
	ca := filepath.Join(w.home, "collector", "pki", "ca.crt")
	block, _ := pem.Decode(caPEM)
	caCert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(caCert.RawSubjectPublicKeyInfo)
	pin := "sha256:" + hex.EncodeToString(sum[:])
	wrong := sha256.Sum256([]byte("not the CA"))
	if out, err := w.run("ward-agent", "enroll", "--collector", w.listen, "--token", tok, "--ca-pin", "sha256:"+hex.EncodeToString(wrong[:]), "--state-dir", dir1); err == nil {
		t.Fatalf("enrolment with a wrong CA pin succeeded:\n%s", out)
	}
	if out, err := w.run("ward-agent", "enroll", "--collector", w.listen, "--token", tok, "--ca-pin", pin, "--state-dir", dir1); err != nil {
		t.Fatalf("first enrolment failed: %v\n%s", err, out)
	}
	out, err := w.run("ward-agent", "enroll", "--collector", w.listen, "--token", tok, "--ca-file", ca, "--state-dir", dir2)
	if err == nil {
		t.Fatalf("a reused token enrolled a second agent:\n%s", out)
	}
	if !strings.Contains(strings.ToLower(out), "token") {
		t.Errorf("reused-token error does not say what is wrong: %s", out)
	}
	t.Logf("reused token refused: %s", strings.TrimSpace(out))

	// Both processes are still up and serving.
	if _, err := w.ctl("agents"); err != nil {
		t.Fatalf("collector unusable after bad input: %v", err)
	}
	if w.agent.ProcessState != nil {
		t.Fatal("agent exited")
	}
	if strings.Contains(w.readLog("agent.log"), "panic") || strings.Contains(w.readLog("collector.log"), "panic") {
		t.Fatal("a panic was logged")
	}
}

func selfSignedClient(t *testing.T, cn string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
