package syslog

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/collector/sinks/core"
	"github.com/ward-dlp/ward/collector/sinks/internal/sinktest"
	"github.com/ward-dlp/ward/collector/sinks/ocsf"
)

// rsyslogd finds rsyslogd and its GnuTLS stream driver, installing both with apt when
// running as root, and skips the test otherwise.
func rsyslogd(t *testing.T) string {
	t.Helper()
	find := func() string {
		bin, err := exec.LookPath("rsyslogd")
		if err != nil {
			if _, err := os.Stat("/usr/sbin/rsyslogd"); err != nil {
				return ""
			}
			bin = "/usr/sbin/rsyslogd"
		}
		if m, _ := filepath.Glob("/usr/lib/*/rsyslog/lmnsd_gtls.so"); len(m) == 0 {
			if m, _ := filepath.Glob("/usr/lib/rsyslog/lmnsd_gtls.so"); len(m) == 0 {
				return ""
			}
		}
		return bin
	}
	if bin := find(); bin != "" {
		return bin
	}
	if os.Geteuid() != 0 {
		t.Skip("rsyslogd with the GnuTLS driver (lmnsd_gtls.so) is not installed and this test is not root: apt-get install rsyslog rsyslog-gnutls")
	}
	install := func() ([]byte, error) {
		return exec.Command("apt-get", "install", "-y", "-qq", "--no-install-recommends", "rsyslog", "rsyslog-gnutls").CombinedOutput()
	}
	out, err := install()
	if err != nil { // a fresh machine may have no package lists yet
		if uout, uerr := exec.Command("apt-get", "update", "-qq").CombinedOutput(); uerr != nil {
			t.Skipf("apt-get update failed (%v): %s", uerr, lastLines(uout, 5))
		}
		out, err = install()
	}
	if err != nil {
		t.Skipf("apt-get install rsyslog rsyslog-gnutls failed (%v): %s", err, lastLines(out, 5))
	}
	bin := find()
	if bin == "" {
		t.Skip("rsyslog installed but rsyslogd or lmnsd_gtls.so still not found")
	}
	return bin
}

func lastLines(b []byte, n int) string {
	l := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(l[max(0, len(l)-n):], "\n")
}

// startRsyslog runs rsyslogd in the foreground with its own config, pid file and work
// directory: imtcp over GnuTLS requiring a client certificate from the test CA, octet-counted
// framing, every message written as one JSON line of its parsed properties.
func startRsyslog(t *testing.T, pki *sinktest.PKI) (addr, out string) {
	bin := rsyslogd(t)
	dir := t.TempDir()
	port := sinktest.FreePort(t)
	out = filepath.Join(dir, "out.jsonl")
	work := filepath.Join(dir, "work")
	if err := os.Mkdir(work, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`
global(workDirectory="%s" maxMessageSize="64k"
       DefaultNetstreamDriver="gtls"
       DefaultNetstreamDriverCAFile="%s"
       DefaultNetstreamDriverCertFile="%s"
       DefaultNetstreamDriverKeyFile="%s")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="x509/certvalid"
       MaxSessions="20")
template(name="wardjson" type="list") {
  constant(value="{")
  property(outname="hostname" name="hostname" format="jsonf") constant(value=",")
  property(outname="app" name="app-name" format="jsonf") constant(value=",")
  property(outname="procid" name="procid" format="jsonf") constant(value=",")
  property(outname="msgid" name="msgid" format="jsonf") constant(value=",")
  property(outname="facility" name="syslogfacility" format="jsonf") constant(value=",")
  property(outname="severity" name="syslogseverity" format="jsonf") constant(value=",")
  property(outname="timestamp" name="timereported" dateFormat="rfc3339" format="jsonf") constant(value=",")
  property(outname="msg" name="msg" format="jsonf")
  constant(value="}\n")
}
ruleset(name="ward") {
  action(type="omfile" file="%s" template="wardjson" flushOnTXEnd="on" asyncWriting="off")
}
input(type="imtcp" address="127.0.0.1" port="%d" ruleset="ward" SupportOctetCountedFraming="on")
`, work, pki.CAFile, pki.ServerCert, pki.ServerKey, out, port)
	confPath := filepath.Join(dir, "rsyslog.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "-n", "-f", confPath, "-i", filepath.Join(dir, "rsyslogd.pid"))
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start rsyslogd: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("rsyslogd output:\n%s", stderr.String())
		}
	})
	addr = "127.0.0.1:" + strconv.Itoa(port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rsyslogd did not listen on %s: %v\n%s", addr, err, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return addr, out
}

type received struct {
	Hostname, App, Procid, Msgid, Facility, Severity, Timestamp, Msg string
}

func readReceived(t *testing.T, path string, n int) []received {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		var out []received
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var r received
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Fatalf("rsyslog output line %q: %v", sc.Text(), err)
			}
			out = append(out, r)
		}
		if len(out) >= n {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("rsyslog wrote %d messages, want %d:\n%s", len(out), n, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRsyslogCEF sends findings, file activity and health through the sink to a real
// rsyslogd over mutual TLS with octet-counting framing, and parses what rsyslog stored: the
// 5424 header fields as rsyslog understood them, and the CEF payload with escaping undone.
func TestRsyslogCEF(t *testing.T) {
	pki := sinktest.NewPKI(t)
	addr, out := startRsyslog(t, pki)
	fac := 13
	s, err := New(Config{Address: addr, Facility: &fac, TLS: core.TLSConfig{CAFile: pki.CAFile,
		CertFile: pki.ClientCert, KeyFile: pki.ClientKey}}, ocsf.Options{ProductVersion: "0.9|x"},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	evs := []*wardv1.Event{
		sinktest.Finding("a1", 1, wardv1.Severity_SEVERITY_HIGH),
		sinktest.Finding("a1", 2, wardv1.Severity_SEVERITY_CRITICAL),
		sinktest.File("a1", 3),
		sinktest.Health("a1", 4),
	}
	if err := s.Deliver(context.Background(), sinktest.Items(evs...)); err != nil {
		t.Fatal(err)
	}
	// A second batch on the same connection, and one after the receiver-side close check.
	if err := s.Deliver(context.Background(), sinktest.Items(sinktest.Finding("a1", 5, wardv1.Severity_SEVERITY_LOW))); err != nil {
		t.Fatal(err)
	}
	got := readReceived(t, out, 5)
	if len(got) != 5 {
		t.Fatalf("%d messages, want 5", len(got))
	}
	wantSev := []string{"3", "2", "6", "6", "5"}
	wantMsgID := []string{"DLP_FINDING", "DLP_FINDING", "FILE_ACTIVITY", "HEALTH", "DLP_FINDING"}
	for i, r := range got {
		if r.Hostname != "ws-12" || r.App != "ward-collector" || r.Msgid != wantMsgID[i] || r.Facility != "13" || r.Severity != wantSev[i] {
			t.Errorf("message %d header as rsyslog parsed it: %+v", i, r)
		}
		if r.Procid != strconv.Itoa(os.Getpid()) {
			t.Errorf("message %d procid %q", i, r.Procid)
		}
		if !strings.HasPrefix(r.Timestamp, "2026-01-01T00:00:00.") {
			t.Errorf("message %d timestamp %q", i, r.Timestamp)
		}
		if strings.Contains(r.Msg, sinktest.Secret) {
			t.Errorf("message %d leaks the raw identifier: %s", i, r.Msg)
		}
	}
	t.Logf("first message: %s", got[0].Msg)
	f := parseCEF(t, got[0].Msg)
	if f.header[1] != "Ward" || f.header[2] != "ward-collector" || f.header[3] != "0.9|x" ||
		f.header[4] != "phi|egress=1" || f.header[6] != "8" {
		t.Errorf("CEF header %q", f.header)
	}
	want := map[string]string{
		"rt": strconv.FormatInt(evs[0].GetTime().AsTime().UnixMilli(), 10), "act": "alert", "suser": "nurse1",
		"fname": `a=b|c\d é.csv`, "filePath": `/srv/exports/a=b|c\d é.csv`, "dvchost": "ws-12",
		"externalId": evs[0].GetId(), "deviceExternalId": "a1", "cs1Label": "detectors", "cs1": "phi.ssn",
		"cs2Label": "maskedSamples", "cs2": "***-**-1120,***-**-6789", "cs4": "phi|egress=1", "cn1": "2",
		"cs6": "HIPAA 164.312(b)", "sproc": "/usr/bin/cp",
	}
	for k, v := range want {
		if f.ext[k] != v {
			t.Errorf("CEF %s = %q, want %q", k, f.ext[k], v)
		}
	}
	if !strings.Contains(f.ext["msg"], "rule phi|egress=1") {
		t.Errorf("CEF msg %q", f.ext["msg"])
	}
	for k := range f.ext {
		if !cefAllowed[k] {
			t.Errorf("CEF key %q is not in the allow-list", k)
		}
	}
	if fa := parseCEF(t, got[2].Msg); fa.header[4] != "ward.file.write_closed" || fa.ext["filePath"] != "/srv/exports/notes.txt" {
		t.Errorf("file activity CEF %q %v", fa.header, fa.ext)
	}
	if h := parseCEF(t, got[3].Msg); h.header[4] != "ward.health" || h.ext["cn1"] != "3" {
		t.Errorf("health CEF %q %v", h.header, h.ext)
	}
}

// TestRsyslogJSON sends OCSF JSON bodies; kinds without an OCSF class are skipped.
func TestRsyslogJSON(t *testing.T) {
	pki := sinktest.NewPKI(t)
	addr, out := startRsyslog(t, pki)
	s, err := New(Config{Address: addr, Format: FormatJSON, TLS: core.TLSConfig{CAFile: pki.CAFile,
		CertFile: pki.ClientCert, KeyFile: pki.ClientKey}}, ocsf.Options{ProductVersion: "0.9"},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fin := sinktest.Finding("a1", 1, wardv1.Severity_SEVERITY_MEDIUM)
	err = s.Deliver(context.Background(), sinktest.Items(fin, sinktest.Health("a1", 2)))
	be, ok := err.(*core.BatchError)
	if !ok || len(be.Failed) != 1 {
		t.Fatalf("want the health event skipped, got %v", err)
	}
	if o, _ := core.Outcome(be.Failed[1]); o != "skipped" {
		t.Fatalf("health outcome %s", o)
	}
	got := readReceived(t, out, 1)
	var e map[string]any
	if err := json.Unmarshal([]byte(got[0].Msg), &e); err != nil {
		t.Fatalf("OCSF body %q: %v", got[0].Msg, err)
	}
	if e["class_uid"] != float64(2006) || e["severity_id"] != float64(3) || e["metadata"].(map[string]any)["uid"] != fin.GetId() {
		t.Errorf("OCSF via rsyslog: %v", e)
	}
	if got[0].Facility != "10" || got[0].Severity != "4" {
		t.Errorf("default facility/severity %s/%s", got[0].Facility, got[0].Severity)
	}
}

// TestRedialAfterReceiverRestart: the receiver goes away and comes back; the sink notices
// the dead connection before writing and redials instead of writing into the void.
func TestRedialAfterReceiverRestart(t *testing.T) {
	pki := sinktest.NewPKI(t)
	tc, err := core.TLSConfig{CAFile: pki.CAFile}.Build()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tlsKeyPair(pki.ServerCert, pki.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	tc.Certificates = cert
	tc.RootCAs, tc.ClientCAs = nil, tc.RootCAs
	lis, err := tlsListen("127.0.0.1:0", tc)
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	msgs := make(chan string, 10)
	serve := func(l net.Listener, closeAfterOne bool) {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					m, err := readFrame(r)
					if err != nil {
						return
					}
					msgs <- m
					if closeAfterOne {
						return
					}
				}
			}()
		}
	}
	go serve(lis, true)
	s, err := New(Config{Address: addr, TLS: core.TLSConfig{CAFile: pki.CAFile}}, ocsf.Options{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 3 {
		if err := s.Deliver(context.Background(), sinktest.Items(sinktest.Finding("a1", uint64(i+1), wardv1.Severity_SEVERITY_HIGH))); err != nil {
			t.Fatalf("deliver %d: %v", i, err)
		}
		select {
		case m := <-msgs:
			if !strings.Contains(m, "CEF:0|Ward|") {
				t.Fatalf("frame %q", m)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("message %d lost after the receiver closed the previous connection", i)
		}
		time.Sleep(50 * time.Millisecond) // let the close reach the sink
	}
	lis.Close()
}

// readFrame reads one RFC 5425 octet-counted frame.
func readFrame(r *bufio.Reader) (string, error) {
	n, err := r.ReadString(' ')
	if err != nil {
		return "", err
	}
	l, err := strconv.Atoi(strings.TrimSuffix(n, " "))
	if err != nil || l <= 0 || strings.HasPrefix(n, "0") {
		return "", fmt.Errorf("bad frame length %q", n)
	}
	b := make([]byte, l)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", err
	}
	return string(b), nil
}

var cefAllowed = map[string]bool{
	"rt": true, "dvchost": true, "deviceExternalId": true, "externalId": true, "suser": true, "suid": true,
	"spid": true, "sproc": true, "act": true, "fname": true, "filePath": true, "fsize": true, "msg": true,
	"cs1": true, "cs1Label": true, "cs2": true, "cs2Label": true, "cs3": true, "cs3Label": true,
	"cs4": true, "cs4Label": true, "cs5": true, "cs5Label": true, "cs6": true, "cs6Label": true,
	"cn1": true, "cn1Label": true, "cn2": true, "cn2Label": true,
}

type cefRecord struct {
	header []string // CEF:0, vendor, product, version, signature, name, severity
	ext    map[string]string
}

// parseCEF is an independent CEF reader: header fields split on unescaped |, extension keys
// found before unescaped =, values unescaped.
func parseCEF(t *testing.T, s string) cefRecord {
	t.Helper()
	var rec cefRecord
	var cur strings.Builder
	i := 0
	for ; i < len(s) && len(rec.header) < 7; i++ {
		switch c := s[i]; {
		case c == '\\' && i+1 < len(s) && (s[i+1] == '\\' || s[i+1] == '|'):
			cur.WriteByte(s[i+1])
			i++
		case c == '|':
			rec.header = append(rec.header, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	if len(rec.header) != 7 || rec.header[0] != "CEF:0" {
		t.Fatalf("not CEF: %q", s)
	}
	ext := s[i:]
	// Positions of unescaped '='.
	var eqs []int
	for j := 0; j < len(ext); j++ {
		if ext[j] == '\\' {
			j++
			continue
		}
		if ext[j] == '=' {
			eqs = append(eqs, j)
		}
	}
	rec.ext = map[string]string{}
	keyStart := func(eq int) int {
		k := eq
		for k > 0 && ext[k-1] != ' ' {
			k--
		}
		return k
	}
	unesc := strings.NewReplacer(`\\`, `\`, `\=`, `=`, `\n`, "\n", `\r`, "\r")
	for n, eq := range eqs {
		ks := keyStart(eq)
		end := len(ext)
		if n+1 < len(eqs) {
			end = keyStart(eqs[n+1]) - 1
		}
		rec.ext[ext[ks:eq]] = unesc.Replace(ext[eq+1 : max(eq+1, end)])
	}
	return rec
}

func TestCEFEscaping(t *testing.T) {
	v := core.NewView(sinktest.Items(sinktest.Finding("a1", 1, wardv1.Severity_SEVERITY_HIGH))[0])
	v.Finding.Decision.PolicyName = "multi\nline\\ = name"
	line := CEF(v, `1.0\2`)
	if strings.ContainsAny(line, "\n\r") {
		t.Fatalf("raw line break in CEF: %q", line)
	}
	rec := parseCEF(t, line)
	if rec.header[3] != `1.0\2` || rec.header[4] != "phi|egress=1" {
		t.Fatalf("header %q", rec.header)
	}
	if !strings.Contains(rec.ext["msg"], "multi\nline\\ = name") {
		t.Fatalf("msg did not round-trip: %q", rec.ext["msg"])
	}
	if rec.ext["filePath"] != `/srv/exports/a=b|c\d é.csv` {
		t.Fatalf("filePath %q", rec.ext["filePath"])
	}
}

func tlsKeyPair(certFile, keyFile string) ([]tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	return []tls.Certificate{c}, err
}

func tlsListen(addr string, c *tls.Config) (net.Listener, error) { return tls.Listen("tcp", addr, c) }
