package phi

import (
	"strings"
	"testing"

	"github.com/ward-dlp/ward/classifiers/engine"
)

// detectorCase is one input for one detector: conf 0 means "must not be reported".
type detectorCase struct {
	name, in string
	conf     int
	masked   string
}

func runCases(t *testing.T, d engine.Detector, cases []detectorCase) {
	t.Helper()
	e, err := engine.New(engine.Config{FingerprintKey: []byte("phi-test-key-0123456789")}, d)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var m *engine.Match
			for _, x := range e.Classify([]byte(c.in)) {
				if x.Detector == d.Name() {
					m = &x
				}
			}
			if c.conf == 0 {
				if m != nil {
					t.Fatalf("%q: unexpected %+v", c.in, m)
				}
				return
			}
			if m == nil {
				t.Fatalf("%q: no match", c.in)
			}
			if m.Confidence != c.conf || m.Class != engine.PHI || (c.masked != "" && m.Masked[0] != c.masked) {
				t.Fatalf("%q: got %+v, want confidence %d mask %q", c.in, m, c.conf, c.masked)
			}
			assertNoLongDigits(t, c.in, m)
		})
	}
}

// assertNoLongDigits checks that no run of five or more identifier characters of the input shows
// up in what a match carries, so masks never hold more than four significant characters.
func assertNoLongDigits(t *testing.T, in string, m *engine.Match) {
	t.Helper()
	for _, s := range append(append([]string{}, m.Masked...), m.Evidence) {
		run := 0
		for i := 0; i < len(s); i++ {
			if isDigit(s[i]) {
				run++
				if d := s[i-run+1 : i+1]; run > 4 && strings.Contains(in, d) && !strings.Contains("2.16.840.1.113883", d) {
					t.Fatalf("match carries raw digits %q: %+v", s[i-run+1:i+1], m)
				}
			} else {
				run = 0
			}
		}
	}
}

func TestNPI(t *testing.T) {
	runCases(t, NewNPI(), []detectorCase{
		{"keyword", "Rendering provider NPI: 1245319599", 80, "******9599"},
		{"fhir system", `{"system":"http://hl7.org/fhir/sid/us-npi","value":"1673920462"}`, 80, "******0462"},
		{"cda oid", `<id root="2.16.840.1.113883.4.6" extension="2987654326"/>`, 80, "******4326"},
		{"no keyword", "reference 1245319599", 0, ""},
		{"bad luhn", "NPI 1245319598", 0, ""},
		{"leading 3", "NPI 3245319599", 0, ""},
		{"cms sample", "NPI 1234567893", 0, ""},
		{"placeholder", "NPI 1111111112", 0, ""},
		{"eleven digits", "NPI 12453195990", 0, ""},
		{"phone shaped", "NPI line 1245319599-2", 0, ""},
	})
}

func TestDEA(t *testing.T) {
	runCases(t, NewDEA(), []detectorCase{
		{"keyword", "DEA# FS4829137", 85, "*****9137"},
		{"x waiver", "DEA registration XS7152642", 85, "*****2642"},
		{"doc sample", "DEA BB1388568", 0, ""},
		{"bad check digit", "DEA FS4829138", 0, ""},
		{"no keyword", "lot FS4829137", 0, ""},
		{"bad type letter", "DEA ZS4829137", 0, ""},
		{"in a word", "DEA XFS4829137", 0, ""},
	})
}

func TestMBI(t *testing.T) {
	runCases(t, NewMBI(), []detectorCase{
		{"dashed", "Medicare ID (MBI): 2EG4-TE5-MK72", 85, "****-***-MK72"},
		{"plain", "MEDICARE 7AC2WT9KJ41", 85, "*******KJ41"},
		{"cms sample", "MBI 1EG4-TE5-MK73", 0, ""},
		{"excluded letter S", "MBI 1SG4-TE5-MK72", 0, ""},
		{"bad digit position", "MBI 1EGA-TE5-MK72", 0, ""},
		{"no keyword", "ref 2EG4-TE5-MK72", 0, ""},
		{"half dashed", "MBI 2EG4-TE5MK72", 0, ""},
	})
}

func TestPhone(t *testing.T) {
	runCases(t, NewPhone(), []detectorCase{
		{"paren", "Home phone: (503) 284-2142", 70, "(***) ***-2142"},
		{"dashes", "Cell 971-284-2199", 70, "***-***-2199"},
		{"dots", "tel. 503.284.2177", 70, "***.***.2177"},
		{"fictional 555-01xx", "Phone (503) 555-0142", 0, ""},
		{"no keyword", "Lot 503-284-2142", 0, ""},
		{"area starts 1", "Phone 103-284-2142", 0, ""},
		{"exchange N11", "Phone 503-911-2142", 0, ""},
		{"repeated", "Phone 555-555-5555", 0, ""},
		{"ssn shaped", "Phone 219-45-8765", 0, ""},
		{"longer number", "Phone 503-284-21421", 0, ""},
	})
}

func TestEmail(t *testing.T) {
	runCases(t, NewEmail(), []detectorCase{
		{"keyword", "Patient email: jordan.sample84@gmail.com.", 70, ""},
		{"no keyword", "Questions to billing@harborrecovery.org", 50, ""},
		{"example domain", "email: someone@example.com", 0, ""},
		{"no tld", "email: user@localhost", 0, ""},
		{"numeric tld", "email: a@10.0.0.1", 0, ""},
		{"twitter handle", "follow @harbor_recovery", 0, ""},
	})
}

func TestDOB(t *testing.T) {
	runCases(t, NewDOB(), []detectorCase{
		{"us", "DOB: 04/12/1985", 80, "**/**/1985"},
		{"iso", `"birthDate": "1985-04-12"`, 80, "**/**/1985"},
		{"two digit year after label", "D.O.B 4/12/85", 80, "**/**/1985"},
		{"long form", "Date of birth: April 12, 1985", 80, "**/**/1985"},
		{"visit date", "Seen on 04/12/2026 for follow-up", 0, ""},
		{"invalid day", "DOB: 02/30/1985", 0, ""},
		{"invalid month", "DOB: 13/12/1985", 0, ""},
		{"keyword too far", "DOB" + strings.Repeat(" x", 40) + " 04/12/1985", 0, ""},
	})
}

func TestMRN(t *testing.T) {
	runCases(t, NewMRN(), []detectorCase{
		{"prefixed", "MRN: HSR-0048812", 75, "***-***8812"},
		{"digits", "Medical record #: 00482213", 75, "****2213"},
		{"no keyword", "Order 00482213", 0, ""},
		{"inside word", "MRNX 00482213", 0, ""},
	})
}

func TestAddress(t *testing.T) {
	runCases(t, NewAddress(), []detectorCase{
		{"keyword", "Address: 1200 Harbor St, Apt 4, Portland, OR 97201", 80, ""},
		{"no keyword", "Lives on 77 Elm Avenue, Salem, OR 97301-1234 with partner", 70, ""},
		{"letterhead city only", "Portland, OR 97201", 0, ""},
		{"not a state", "1200 Harbor St, Portland, XX 97201", 0, ""},
		{"zip run-on", "1200 Harbor St, Portland, OR 972011", 0, ""},
	})
}

func TestDOBCompact(t *testing.T) {
	runCases(t, NewDOB(), []detectorCase{
		{"cda birthTime", `<birthTime value="19850412"/>`, 80, "**/**/1985"},
		{"x12 dmg", "DMG*D8*19900722*F~", 80, "**/**/1990"},
		{"effective time", `<effectiveTime value="20261002"/>`, 0, ""},
		{"invalid", `<birthTime value="19851332"/>`, 0, ""},
	})
}
