package traffic

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"testing"
	"time"
)

// TestAppendJSONMatchesEncodingJSON: the fast encoder must produce the document
// encoding/json would, including escaping of hostile strings.
func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	recs := []FlowRecord{
		{Proto: "udp", Status: "unknown"},
		{Proto: "tcp", Client: netip.MustParseAddrPort("10.0.0.1:4000"), Server: netip.MustParseAddrPort("[2001:db8::1]:443"),
			Process: &Process{PID: 7, Comm: "curl\"x", Exe: "/usr/bin/\u00e9"}, App: "zoom", AppName: "Zoom", Vendor: "Zoom \"V\"",
			Category: "video_conferencing", Risk: 20, BAA: "yes", Status: "sanctioned", Tenant: "*.zoomgov.com", Name: "a.zoom.us",
			NameSource: SourceSNI, Protocol: "tls", SNI: "a.zoom.us", ALPN: []string{"h2", "\x00\x7f\xff<>&\u2028"}, JA4: "t13d",
			TLSVersion: "TLS 1.3", TLSClientMax: "TLS 1.3", TLSCipher: "0x1301", ECH: true, QUICVersion: "v1", DNSQuery: "q",
			STUNRealm: "r\\\n\t", Flags: []string{"ech"}, BytesUp: 1 << 40, BytesDown: 2, PacketsUp: 3, PacketsDown: 4,
			Start: time.Unix(1_700_000_000, 123456789).UTC(), End: time.Unix(1_700_000_001, 0).UTC()},
	}
	for _, r := range recs {
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(r); err != nil {
			t.Fatal(err)
		}
		got := append(r.AppendJSON(nil, ""), '\n')
		if !bytes.Equal(got, want.Bytes()) {
			t.Errorf("AppendJSON:\n got %s\nwant %s", got, want.Bytes())
		}
		if !json.Valid(r.AppendJSON(nil, `"type":"flow",`)) {
			t.Error("prefixed document is not valid JSON")
		}
	}
}
