// Package tests holds Ward's end-to-end tests: real ward-collector and ward-agent processes,
// real eBPF probes, real mTLS on loopback, real SQLite. They need root, as the agent does.
package tests

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
)

// binDir holds the binaries built once for the whole package.
var binDir string

func TestMain(m *testing.M) {
	code := func() int {
		dir, err := os.MkdirTemp("", "ward-e2e-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		build := exec.Command("go", "build", "-o", dir+"/", "./cmd/...")
		build.Dir = ".."
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building binaries: %v\n%s", err, out)
			return 1
		}
		binDir = dir
		return m.Run()
	}()
	os.Exit(code)
}

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("end-to-end tests load eBPF programs and need root")
	}
}

// ward is one collector and one agent, each a real process, sharing a WARD_HOME.
type ward struct {
	t         testing.TB
	home      string
	listen    string
	watch     string
	agentDir  string
	logs      string
	collector *exec.Cmd
	agent     *exec.Cmd
	agentID   string
	agentArgs []string
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startWard starts a collector, enrols an agent with a fresh token and starts it watching
// a new directory.
func startWard(t testing.TB, extraArgs ...string) *ward {
	t.Helper()
	needRoot(t)
	home := t.TempDir()
	w := &ward{t: t, home: home, listen: freeAddr(t), watch: filepath.Join(home, "watched"),
		agentDir: filepath.Join(home, "agent"), logs: filepath.Join(home, "logs")}
	for _, d := range []string{w.watch, w.logs} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	w.startCollector()
	t.Cleanup(w.stop)
	out, err := w.run("ward-agent", "enroll", "--collector", w.listen, "--token", w.token(),
		"--ca-file", filepath.Join(home, "collector", "pki", "ca.crt"), "--state-dir", w.agentDir)
	if err != nil {
		t.Fatalf("enroll: %v\n%s", err, out)
	}
	var rec struct {
		AgentID string `json:"agent_id"`
	}
	b, err := os.ReadFile(filepath.Join(w.agentDir, "identity", "identity.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rec); err != nil || rec.AgentID == "" {
		t.Fatalf("identity.json: %v %s", err, b)
	}
	w.agentID = rec.AgentID
	w.agentArgs = extraArgs
	w.startAgent()
	return w
}

func (w *ward) logFile(name string) *os.File {
	f, err := os.OpenFile(filepath.Join(w.logs, name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		w.t.Fatal(err)
	}
	return f
}

func (w *ward) startCollector() {
	w.t.Helper()
	log := w.logFile("collector.log")
	defer log.Close()
	cmd := exec.Command(filepath.Join(binDir, "ward-collector"), "--home", w.home, "--listen", w.listen, "--log-level", "debug")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	w.collector = cmd
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := w.ctl("agents"); err == nil {
			return
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("collector not ready; log:\n%s", w.readLog("collector.log"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// killCollector stops the collector hard, as a crash or power loss would.
func (w *ward) killCollector() {
	w.t.Helper()
	if w.collector == nil {
		return
	}
	_ = w.collector.Process.Signal(syscall.SIGKILL)
	_ = w.collector.Wait()
	w.collector = nil
}

func (w *ward) startAgent() {
	w.t.Helper()
	log := w.logFile("agent.log")
	defer log.Close()
	args := append([]string{"run", "--state-dir", w.agentDir, "--watch", w.watch, "--log-level", "debug"}, w.agentArgs...)
	cmd := exec.Command(filepath.Join(binDir, "ward-agent"), args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	w.agent = cmd
	// Ready when the agent has registered the watched directory with the kernel.
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(w.readLog("agent.log"), `msg="watching directory"`) {
		if time.Now().After(deadline) {
			w.t.Fatalf("agent not ready; log:\n%s", w.readLog("agent.log"))
		}
		if cmd.ProcessState != nil || syscall.Kill(cmd.Process.Pid, 0) != nil {
			w.t.Fatalf("agent exited; log:\n%s", w.readLog("agent.log"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (w *ward) stop() {
	for _, c := range []*exec.Cmd{w.agent, w.collector} {
		if c == nil || c.Process == nil {
			continue
		}
		_ = c.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = c.Process.Kill()
			w.t.Errorf("%s did not stop within 15s of SIGTERM", c.Path)
		}
	}
	w.agent, w.collector = nil, nil
	if w.t.Failed() {
		w.t.Logf("agent log:\n%s", tail(w.readLog("agent.log"), 60))
		w.t.Logf("collector log:\n%s", tail(w.readLog("collector.log"), 30))
	}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (w *ward) readLog(name string) string {
	b, _ := os.ReadFile(filepath.Join(w.logs, name))
	return string(b)
}

func (w *ward) run(bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, bin), args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func (w *ward) ctl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "wardctl"), append([]string{"--home", w.home}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}

func (w *ward) token() string {
	w.t.Helper()
	out, err := w.ctl("token", "create", "--ttl", "10m")
	if err != nil {
		w.t.Fatalf("token create: %v\n%s", err, out)
	}
	return strings.TrimSpace(out)
}

// stored is one line of `wardctl events -o json`.
type stored struct {
	RowID      int64
	ReceivedAt time.Time
	Event      *wardv1.Event
}

// events lists stored events through wardctl, as an operator would.
func (w *ward) events(args ...string) []stored {
	w.t.Helper()
	out, err := w.ctl(append([]string{"events", "-o", "json", "--all"}, args...)...)
	if err != nil {
		w.t.Fatalf("wardctl events: %v\n%s", err, out)
	}
	var res []stored
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var line struct {
			RowID      int64           `json:"rowid"`
			ReceivedAt time.Time       `json:"received_at"`
			Event      json.RawMessage `json:"event"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			w.t.Fatalf("wardctl events -o json line %q: %v", sc.Text(), err)
		}
		ev := &wardv1.Event{}
		if err := protojson.Unmarshal(line.Event, ev); err != nil {
			w.t.Fatalf("event JSON %s: %v", line.Event, err)
		}
		res = append(res, stored{RowID: line.RowID, ReceivedAt: line.ReceivedAt, Event: ev})
	}
	return res
}

// waitFor polls stored events until pred holds or the timeout passes.
func (w *ward) waitFor(timeout time.Duration, what string, pred func([]stored) bool, args ...string) []stored {
	w.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		evs := w.events(args...)
		if pred(evs) {
			return evs
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("timed out after %s waiting for %s (have %d events)", timeout, what, len(evs))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// assertNoRaw fails if any raw identifier appears in any file under root: the SQLite
// database and its WAL, the agent's spool and identity, and every log.
func assertNoRaw(t testing.TB, root string, raws ...string) {
	t.Helper()
	files := 0
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		for _, raw := range raws {
			if bytes.Contains(b, []byte(raw)) && !strings.HasPrefix(path, filepath.Join(root, "watched")) {
				t.Errorf("raw identifier %q found in %s", raw, path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 3 {
		t.Fatalf("only %d files scanned under %s: the scan is not looking at the store", files, root)
	}
}
