// Package sinktest builds the events, certificates and checks the sink tests share.
package sinktest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/collector/sinks/core"
)

// Secret is a value that stands for what must never leave the collector: it is put where
// only unreviewed fields (process arguments) carry it, so a sink that leaks those fields
// leaks it.
const Secret = "078-05-1120"

// Time is the fixed activity time of test events.
var Time = time.Date(2026, 1, 1, 0, 0, 0, 123_000_000, time.UTC)

// Finding returns a finding event with masked samples and fingerprints, hostile characters
// in the path and rule (CEF/syslog escaping), and Secret in the process arguments.
func Finding(agent string, seq uint64, sev wardv1.Severity) *wardv1.Event {
	return &wardv1.Event{
		Id: uuid.Must(uuid.NewV7()).String(), AgentId: agent, Seq: seq, Time: timestamppb.New(Time.Add(time.Duration(seq) * time.Millisecond)),
		Host: &wardv1.Host{Hostname: "ws-12", MachineId: "0123456789abcdef", Os: "Debian", Kernel: "6.12.0", AgentVersion: "0.1.0"},
		Payload: &wardv1.Event_Finding{Finding: &wardv1.Finding{
			DataClass: wardv1.DataClass_DATA_CLASS_PHI, Confidence: 90,
			Process: &wardv1.Process{Pid: 4242, Ppid: 1, Uid: 1000, User: "nurse1", Exe: "/usr/bin/cp", Comm: "cp",
				Args: []string{"cp", "--ssn=" + Secret, "/tmp/x"}, ParentExe: "/bin/bash"},
			Target: &wardv1.Finding_File{File: &wardv1.FileTarget{Path: `/srv/exports/a=b|c\d é.csv`, Size: 2048,
				ContentSource: wardv1.ContentSource_CONTENT_SOURCE_WRITE_CAPTURE}},
			Matches: []*wardv1.Match{{
				Detector: "phi.ssn", DataClass: wardv1.DataClass_DATA_CLASS_PHI, Confidence: 90, Count: 2,
				Offsets: []uint64{10, 40}, MaskedSamples: []string{"***-**-1120", "***-**-6789"},
				Fingerprints: []string{strings.Repeat("ab", 32), strings.Repeat("cd", 32)},
				Evidence:     "ssn near 'SSN:' label; samples ***-**-1120",
			}},
			Decision: &wardv1.Decision{Action: wardv1.Action_ACTION_ALERT, ActionTaken: wardv1.Action_ACTION_ALERT, Severity: sev,
				RuleId: "phi|egress=1", ComplianceTags: []string{"HIPAA 164.312(b)"}, PolicyVersion: "7", PolicyName: "default"},
		}},
	}
}

// File returns a file-activity event.
func File(agent string, seq uint64) *wardv1.Event {
	return &wardv1.Event{
		Id: uuid.Must(uuid.NewV7()).String(), AgentId: agent, Seq: seq, Time: timestamppb.New(Time),
		Host: &wardv1.Host{Hostname: "ws-12"},
		Payload: &wardv1.Event_File{File: &wardv1.FileActivity{Kind: wardv1.FileActivity_KIND_WRITE_CLOSED, Path: "/srv/exports/notes.txt",
			Process:      &wardv1.Process{Pid: 7, Uid: 1000, User: "nurse1", Exe: "/usr/bin/vim", Args: []string{"vim", Secret}},
			BytesWritten: 100, BytesCaptured: 100, WriteCalls: 3}},
	}
}

// Health returns a health event (no OCSF class).
func Health(agent string, seq uint64) *wardv1.Event {
	return &wardv1.Event{
		Id: uuid.Must(uuid.NewV7()).String(), AgentId: agent, Seq: seq, Time: timestamppb.New(Time),
		Host:    &wardv1.Host{Hostname: "ws-12"},
		Payload: &wardv1.Event_Health{Health: &wardv1.Health{Drops: map[string]uint64{"bpf.ringbuf_full": 3}}},
	}
}

// Items wraps events as sink items.
func Items(evs ...*wardv1.Event) []core.Item {
	out := make([]core.Item, len(evs))
	for i, ev := range evs {
		out[i] = core.Item{RowID: int64(i + 1), Event: ev, ReceivedAt: Time.Add(time.Second)}
	}
	return out
}

// PKI is a throw-away CA with a server certificate for 127.0.0.1 and a client certificate,
// written as PEM files in Dir.
type PKI struct {
	Dir                           string
	CAFile, ServerCert, ServerKey string
	ClientCert, ClientKey         string
	caCert                        *x509.Certificate
	caKey                         *ecdsa.PrivateKey
}

// NewPKI makes the CA and both certificates.
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	dir := t.TempDir()
	p := &PKI{Dir: dir}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ward test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p.caCert, _ = x509.ParseCertificate(der)
	p.caKey = key
	p.CAFile = p.write(t, "ca.pem", "CERTIFICATE", der)
	p.ServerCert, p.ServerKey = p.leaf(t, "server", 2, x509.ExtKeyUsageServerAuth)
	p.ClientCert, p.ClientKey = p.leaf(t, "client", 3, x509.ExtKeyUsageClientAuth)
	return p
}

func (p *PKI) leaf(t testing.TB, name string, serial int64, usage x509.ExtKeyUsage) (string, string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return p.write(t, name+".pem", "CERTIFICATE", der), p.write(t, name+"-key.pem", "PRIVATE KEY", kder)
}

func (p *PKI) write(t testing.TB, name, typ string, der []byte) string {
	path := filepath.Join(p.Dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Paths lists every key path of a decoded JSON value ("a.b[].c"), sorted.
func Paths(v any) []string {
	set := map[string]bool{}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, c := range x {
				p := k
				if prefix != "" {
					p = prefix + "." + k
				}
				set[p] = true
				walk(p, c)
			}
		case []any:
			for _, c := range x {
				walk(prefix+"[]", c)
			}
		}
	}
	walk("", v)
	out := make([]string, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// CheckAllowed fails t for every path of v outside allowed (exact paths; a key ending in
// ".*" allows everything below it) and for Secret anywhere in raw.
func CheckAllowed(t testing.TB, what string, raw []byte, v any, allowed []string) {
	t.Helper()
	if strings.Contains(string(raw), Secret) || strings.Contains(string(raw), "--ssn") {
		t.Errorf("%s: the raw test identifier left the collector:\n%s", what, raw)
	}
	ok := map[string]bool{}
	var prefixes []string
	for _, a := range allowed {
		if p, found := strings.CutSuffix(a, ".*"); found {
			prefixes = append(prefixes, p+".")
		}
		ok[a] = true
	}
	for _, p := range Paths(v) {
		if ok[p] {
			continue
		}
		allowedBelow := false
		for _, pre := range prefixes {
			if strings.HasPrefix(p, pre) {
				allowedBelow = true
			}
		}
		if !allowedBelow {
			t.Errorf("%s: field %q is not in the allow-list", what, p)
		}
	}
}

// FreePort returns a loopback port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Must is for test setup.
func Must[T any](v T, err error) T {
	if err != nil {
		panic(fmt.Sprintf("sinktest: %v", err))
	}
	return v
}

// Flow returns a closed outbound TLS flow with the analyzer's names, and Secret in the
// process arguments. With dns set it is a UDP flow to a resolver that carried that query.
func Flow(agent string, seq uint64, dns string) *wardv1.Event {
	start := Time.Add(-2 * time.Second)
	nf := &wardv1.NetworkFlow{
		Process: &wardv1.Process{Pid: 4242, Ppid: 1, Uid: 1000, User: "nurse1", Exe: "/usr/bin/curl", Comm: "curl",
			Args: []string{"curl", "--data", "ssn=" + Secret, "https://share.example.com/up"}},
		Transport: "tcp", LocalAddress: "10.1.2.3", LocalPort: 51000, RemoteAddress: "203.0.113.7", RemotePort: 443,
		Direction: wardv1.NetworkFlow_DIRECTION_OUTBOUND, BytesSent: 48213, BytesReceived: 5120,
		StartTime: timestamppb.New(start), EndTime: timestamppb.New(Time), State: wardv1.NetworkFlow_STATE_CLOSED,
		Action: wardv1.Action_ACTION_RECORD, SocketCookie: 991234,
		App: "dropbox", AppName: "Dropbox", AppCategory: "file_sharing", Name: "share.example.com", NameSource: "sni",
		AppProtocol: "tls", Sni: "share.example.com", Alpn: []string{"h2", "http/1.1"},
		Ja4: "t13d1516h2_8daaf6152771_b186095e22b6", TlsVersion: "1.3",
	}
	if dns != "" {
		nf.Transport, nf.RemoteAddress, nf.RemotePort, nf.LocalPort = "udp", "192.0.2.53", 53, 40000
		nf.State, nf.App, nf.AppName, nf.AppCategory, nf.Sni, nf.Alpn, nf.Ja4, nf.TlsVersion = wardv1.NetworkFlow_STATE_IDLE, "", "", "", "", nil, "", ""
		nf.Name, nf.NameSource, nf.AppProtocol, nf.DnsQuery, nf.UdpSends = dns, "dns", "dns", dns, 1
	}
	return &wardv1.Event{
		Id: uuid.Must(uuid.NewV7()).String(), AgentId: agent, Seq: seq, Time: timestamppb.New(Time),
		Host:    &wardv1.Host{Hostname: "ws-12", MachineId: "0123456789abcdef"},
		Payload: &wardv1.Event_Flow{Flow: nf},
	}
}

// DeniedFlow returns an outbound connection the agent's deny list refused.
func DeniedFlow(agent string, seq uint64) *wardv1.Event {
	ev := Flow(agent, seq, "")
	f := ev.GetFlow()
	f.State, f.Denied, f.Action, f.RuleId, f.BytesSent, f.BytesReceived = wardv1.NetworkFlow_STATE_DENIED, true,
		wardv1.Action_ACTION_BLOCK, "deny-list#3", 0, 0
	f.Sni, f.Ja4, f.TlsVersion, f.Alpn = "", "", "", nil
	return ev
}

// Checkpoint returns an audit-log checkpoint item (no event).
func Checkpoint(size int64) core.Item {
	return core.Item{RowID: size, ReceivedAt: Time, Checkpoint: &core.Checkpoint{
		Origin: "ward-audit/collector-1", Size: size, RootHash: "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
		Note:      "ward-audit/collector-1\n" + fmt.Sprint(size) + "\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n\n— ward-audit/collector-1 AAAA\n",
		CreatedAt: Time, Hostname: "collector-1",
	}}
}
