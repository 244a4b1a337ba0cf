package catalog

import (
	"net/netip"
	"strings"
	"testing"
)

func TestBuiltinCatalogSchema(t *testing.T) {
	c, err := Builtin()
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Apps()) < 150 {
		t.Fatalf("catalog has %d apps, want at least 150", len(c.Apps()))
	}
	seen := map[Category]int{}
	for _, a := range c.Apps() {
		seen[a.Category]++
		if a.BAA.Offered == "yes" && !strings.HasPrefix(a.BAA.URL, "https://") {
			t.Errorf("%s: BAA yes without a source", a.ID)
		}
		if a.Risk.Score < 0 || a.Risk.Score > 100 || len(a.Risk.Factors) == 0 {
			t.Errorf("%s: risk %+v", a.ID, a.Risk)
		}
	}
	for cat := range knownCategories {
		if seen[cat] == 0 {
			t.Errorf("no app in category %s", cat)
		}
	}
	for _, cat := range []Category{VideoConferencing, Messaging, FileSharing, GenerativeAI, PersonalEmail, Social, RemoteAccess, PasteTransfer, DoH} {
		if seen[cat] < 5 {
			t.Errorf("category %s has only %d apps", cat, seen[cat])
		}
	}
}

func TestCatalogRejectsInconsistentData(t *testing.T) {
	base := "schema: 1\nversion: t\nrisk_factors:\n  no_baa: {weight: 30, why: x}\n  baa_business_tier: {weight: 10, why: x}\napps:\n"
	for name, app := range map[string]string{
		"score mismatch":   "  - {id: a, name: A, vendor: V, category: doh, domains: [a.com], baa: {offered: unknown}, risk: {score: 31, factors: [no_baa]}}\n",
		"unknown category": "  - {id: a, name: A, vendor: V, category: games, domains: [a.com], baa: {offered: unknown}, risk: {score: 30, factors: [no_baa]}}\n",
		"yes without url":  "  - {id: a, name: A, vendor: V, category: doh, domains: [a.com], baa: {offered: yes}, risk: {score: 10, factors: [baa_business_tier]}}\n",
		"unknown with url": "  - {id: a, name: A, vendor: V, category: doh, domains: [a.com], baa: {offered: unknown, url: 'https://x'}, risk: {score: 30, factors: [no_baa]}}\n",
		"no_baa but yes":   "  - {id: a, name: A, vendor: V, category: doh, domains: [a.com], baa: {offered: yes, url: 'https://x'}, risk: {score: 30, factors: [no_baa]}}\n",
		"unknown key":      "  - {id: a, name: A, vendor: V, category: doh, domain: [a.com], baa: {offered: unknown}, risk: {score: 30, factors: [no_baa]}}\n",
		"bad prefix":       "  - {id: a, name: A, vendor: V, category: doh, ip_prefixes: [1.2.3.4/8], baa: {offered: unknown}, risk: {score: 30, factors: [no_baa]}}\n",
		"duplicate domain": "  - {id: a, name: A, vendor: V, category: doh, domains: [a.com], baa: {offered: unknown}, risk: {score: 30, factors: [no_baa]}}\n  - {id: b, name: B, vendor: V, category: doh, domains: [A.com.], baa: {offered: unknown}, risk: {score: 30, factors: [no_baa]}}\n",
		"nothing to match": "  - {id: a, name: A, vendor: V, category: doh, baa: {offered: unknown}, risk: {score: 30, factors: [no_baa]}}\n",
	} {
		if _, err := Parse([]byte(base + app)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := Parse([]byte(base + "  - {id: a, name: A, vendor: V, category: doh, domains: [a.com], baa: {offered: unknown}, risk: {score: 30, factors: [no_baa]}}\n")); err != nil {
		t.Fatalf("valid catalog rejected: %v", err)
	}
}

func TestMatchName(t *testing.T) {
	c, err := Builtin()
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"zoom.us": "zoom", "us05web.zoom.us": "zoom", "ZOOM.US.": "zoom", "clinic.zoomgov.com": "zoom",
		"api.openai.com": "openai-api", "chatgpt.com": "chatgpt", "cdn.oaistatic.com": "chatgpt",
		"gist.github.com": "github-gist", "github.com": "github", "drive.proton.me": "proton-drive", "proton.me": "proton-mail",
		"contoso-my.sharepoint.com": "sharepoint", "dns.google": "google-public-dns", "teams.live.com": "microsoft-teams-free",
		"doh.opendns.com": "opendns", "www.opendns.com": "", "notzoom.us": "", "zoom.us.evil.com": "", "": "", "us": "",
	} {
		got := ""
		if a := c.MatchName(name); a != nil {
			got = a.ID
		}
		if got != want {
			t.Errorf("MatchName(%q) = %q, want %q", name, got, want)
		}
	}
	if a := c.MatchIP(netip.MustParseAddr("52.113.1.1")); a == nil || a.ID != "microsoft-teams" {
		t.Errorf("Teams relay prefix: %v", a)
	}
	if a := c.MatchIP(netip.MustParseAddr("::ffff:8.8.8.8")); a == nil || a.ID != "google-public-dns" {
		t.Errorf("mapped 8.8.8.8: %v", a)
	}
	if a := c.MatchIP(netip.MustParseAddr("192.0.2.1")); a != nil {
		t.Errorf("documentation address matched %s", a.ID)
	}
	if a := c.MatchRealm("signal.org"); a == nil || a.ID != "signal" {
		t.Errorf("realm: %v", a)
	}
	if a := c.MatchSTUNAttr(0x4003); a == nil || a.ID != "whatsapp" {
		t.Errorf("stun attr: %v", a)
	}
}

func TestPolicyTenants(t *testing.T) {
	c, err := Builtin()
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParsePolicy([]byte(`
version: 1
default: unsanctioned
apps:
  zoom: {status: sanctioned, tenants: ["*.zoomgov.com", "clinic.zoom.us"]}
  microsoft-teams: {status: sanctioned}
  dropbox: {status: monitored}
`), c)
	if err != nil {
		t.Fatal(err)
	}
	zoom := c.ByID("zoom")
	for name, want := range map[string]Status{
		"clinic.zoomgov.com": Sanctioned, "zoomgov.com": Sanctioned, "clinic.zoom.us": Sanctioned,
		"other.zoom.us": Unsanctioned, "zoom.us": Unsanctioned,
	} {
		if got, _ := p.Decide(zoom, name); got != want {
			t.Errorf("zoom %s: %s want %s", name, got, want)
		}
	}
	if got, _ := p.Decide(c.ByID("microsoft-teams"), "teams.microsoft.com"); got != Sanctioned {
		t.Errorf("teams: %s", got)
	}
	if got, _ := p.Decide(c.ByID("chatgpt"), "chatgpt.com"); got != Unsanctioned {
		t.Errorf("default: %s", got)
	}
	if got, _ := p.Decide(nil, "x"); got != Unknown {
		t.Errorf("nil app: %s", got)
	}
	for _, bad := range []string{
		"version: 1\napps: {zoomz: {status: sanctioned}}\n",
		"version: 1\napps: {zoom: {status: approved}}\n",
		"version: 1\napps: {zoom: {status: sanctioned, tenant: [x]}}\n",
		"version: 2\n",
		"version: 1\napps: {zoom: {status: sanctioned, tenants: ['[']}}\n",
	} {
		if _, err := ParsePolicy([]byte(bad), c); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}
