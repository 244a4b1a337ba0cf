package classifiers

import (
	"fmt"
	"strings"
	"testing"

	"github.com/ward-dlp/ward/classifiers/defs"
	"github.com/ward-dlp/ward/classifiers/edm"
	"github.com/ward-dlp/ward/classifiers/engine"
	"github.com/ward-dlp/ward/classifiers/fingerprint"
)

var testKey = []byte("classifiers-test-key-01")

// TestEveryDefinitionHasAnImplementation builds every built-in definition, with the
// indexes the index-backed detectors need.
func TestEveryDefinitionHasAnImplementation(t *testing.T) {
	set, err := defs.Builtin()
	if err != nil {
		t.Fatal(err)
	}
	fx, err := fingerprint.NewIndex(testKey, fingerprint.Params{K: fingerprint.DefaultK, W: fingerprint.DefaultW})
	if err != nil {
		t.Fatal(err)
	}
	ds, err := build(set, Options{EDMIndex: &edm.Index{}, FingerprintIndex: fx})
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != len(set.Definitions()) {
		t.Fatalf("%d detectors for %d definitions", len(ds), len(set.Definitions()))
	}
	for i, d := range set.Definitions() {
		if ds[i].Name() != d.ID {
			t.Errorf("definition %s built detector %s", d.ID, ds[i].Name())
		}
	}
	if _, err := New(engine.Config{FingerprintKey: testKey}, Options{Disable: []string{"phi.nope"}}); err == nil {
		t.Error("unknown id in Disable accepted")
	}
	bad, err := set.Override("x.yaml", strings.NewReader("version: 1\ndetectors:\n  - {id: acme.magic, version: 1, kind: builtin, class: PHI}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(engine.Config{FingerprintKey: testKey}, Options{Definitions: bad}); err == nil || !strings.Contains(err.Error(), "acme.magic") {
		t.Errorf("builtin without implementation: %v", err)
	}
}

const orgDoc = `Riverbend Recovery intake
Client: CLT-482913 (intake form 2026-03-02)
Referred from CLT-771204.
Phone: (503) 555-2142
Contact e-mail: j.sample@riverbend-recovery.org
SSN 219-45-8765
The group meets on Tuesdays and Thursdays in the east wing; bring the workbook and a pen, and sign in at the front desk.
Member card RB 79927398 713, member since 2019.
Member card RB 79927398 710 (typo, fails the check digit).
Taxpayer ID 401224567
Replies go to the front desk at ops@riverbend-recovery.org
`

// TestOrganisationDefinitions: an override file disables, tunes and adds detectors, and
// the data-defined ones report masked values only.
func TestOrganisationDefinitions(t *testing.T) {
	set, err := LoadDefinitions("defs/testdata/org-overrides.yaml")
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(engine.Config{FingerprintKey: testKey}, Options{Definitions: set})
	if err != nil {
		t.Fatal(err)
	}
	got := byDetector(e.Classify([]byte(orgDoc)))
	if _, ok := got["phi.phone"]; ok {
		t.Error("phi.phone is disabled by the override but reported")
	}
	em := got["phi.email"]
	if em.Count != 1 || em.Confidence != 70 || em.Version != 2 {
		t.Errorf("email: min_confidence 60 must drop the keyword-less address: %+v", em)
	}
	ssn := got["phi.ssn"]
	if ssn.Count != 2 || ssn.Version != 3 {
		t.Errorf("ssn: added keyword must make the bare nine digits count: %+v", ssn)
	}
	c := got["org.client-id"]
	if c.Class != engine.PHI || c.Count != 2 || c.Confidence != 85 || c.Version != 1 || !strings.Contains(c.Evidence, "keyword=") {
		t.Errorf("org.client-id: %+v", c)
	}
	if strings.Join(c.Masked, ",") != "***-**2913,***-**1204" {
		t.Errorf("masks %v", c.Masked)
	}
	m := got["org.member-card"]
	if m.Count != 1 || m.Confidence != 80 || m.Masked[0] != "** *******8 713" {
		t.Errorf("org.member-card (luhn): %+v", m)
	}
	dump := fmt.Sprintf("%+v", got)
	for _, raw := range []string{"482913", "771204", "79927398", "219-45-8765", "401224567", "j.sample"} {
		if strings.Contains(dump, raw) {
			t.Errorf("raw value %q in matches", raw)
		}
	}
	// Command-line policy on top: re-enable phone, disable the org client ids.
	e2, err := New(engine.Config{FingerprintKey: testKey}, Options{Definitions: set, Enable: []string{"phi.phone"}, Disable: []string{"org.client-id"}})
	if err != nil {
		t.Fatal(err)
	}
	got = byDetector(e2.Classify([]byte(orgDoc)))
	if _, ok := got["phi.phone"]; !ok {
		t.Error("Enable did not re-enable phi.phone")
	}
	if _, ok := got["org.client-id"]; ok {
		t.Error("Disable did not disable org.client-id")
	}
}

// TestDefaultUnchangedByDefinitions: the built-in definitions reproduce the default
// behaviour (versions stamped, nothing filtered).
func TestDefaultUnchangedByDefinitions(t *testing.T) {
	e := newDefault(t)
	got := byDetector(e.Classify([]byte(orgDoc)))
	if got["phi.phone"].Count != 1 || got["phi.email"].Count != 2 || got["phi.ssn"].Count != 1 || got["phi.ssn"].Version != 2 {
		t.Errorf("defaults: %+v", got)
	}
}
