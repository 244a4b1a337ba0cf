package syslog

import (
	"strings"
	"testing"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/collector/sinks/core"
	"github.com/ward-dlp/ward/collector/sinks/internal/sinktest"
)

func TestCEFFlow(t *testing.T) {
	line := CEF(core.NewView(sinktest.Items(sinktest.Flow("a1", 1, ""))[0]), "1.0")
	if strings.Contains(line, sinktest.Secret) || strings.Contains(line, "991234") {
		t.Fatalf("unreviewed flow fields in CEF: %s", line)
	}
	rec := parseCEF(t, line)
	want := map[string]string{
		"act": "allowed", "proto": "TCP", "src": "10.1.2.3", "spt": "51000", "dst": "203.0.113.7", "dpt": "443",
		"dhost": "share.example.com", "app": "tls", "in": "48213", "out": "5120", "deviceDirection": "1",
		"cs1Label": "appName", "cs1": "Dropbox", "cs2": "share.example.com", "cs3": "t13d1516h2_8daaf6152771_b186095e22b6",
		"suser": "nurse1", "sproc": "/usr/bin/curl", "start": "1767225598123", "end": "1767225600123",
	}
	for k, v := range want {
		if rec.ext[k] != v {
			t.Errorf("%s = %q, want %q", k, rec.ext[k], v)
		}
	}
	if rec.header[4] != "ward.flow.closed" || rec.header[6] != "1" {
		t.Errorf("header %q", rec.header)
	}

	// Inbound: the peer is the source; in/out follow source -> destination.
	in := sinktest.Flow("a1", 2, "")
	in.GetFlow().Direction = wardv1.NetworkFlow_DIRECTION_INBOUND
	rec = parseCEF(t, CEF(core.NewView(sinktest.Items(in)[0]), "1.0"))
	if rec.ext["src"] != "203.0.113.7" || rec.ext["in"] != "5120" || rec.ext["deviceDirection"] != "0" {
		t.Errorf("inbound %v", rec.ext)
	}

	rec = parseCEF(t, CEF(core.NewView(sinktest.Items(sinktest.DeniedFlow("a1", 3))[0]), "1.0"))
	if rec.ext["act"] != "blocked" || rec.ext["cs4"] != "deny-list#3" || rec.header[6] != "5" || rec.header[5] != "Network connection denied" {
		t.Errorf("denied %q %v", rec.header, rec.ext)
	}
	rec = parseCEF(t, CEF(core.NewView(sinktest.Items(sinktest.Flow("a1", 4, "x.example"))[0]), "1.0"))
	if rec.header[4] != "ward.dns.query" || rec.ext["cs5"] != "x.example" || rec.ext["proto"] != "UDP" {
		t.Errorf("dns %q %v", rec.header, rec.ext)
	}
}

func TestCEFCheckpoint(t *testing.T) {
	line := CEF(core.NewView(sinktest.Checkpoint(42)), "1.0")
	if strings.ContainsAny(line, "\n\r") {
		t.Fatalf("raw line break: %q", line)
	}
	rec := parseCEF(t, line)
	if rec.header[4] != "ward.audit.checkpoint" || rec.ext["cn1"] != "42" || !strings.Contains(rec.ext["cs3"], "\n42\n") ||
		rec.ext["externalId"] != "ward-audit/collector-1@42" || rec.ext["deviceExternalId"] != "" {
		t.Fatalf("%q %v", rec.header, rec.ext)
	}
}
