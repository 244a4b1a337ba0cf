package sud

import (
	"slices"
	"testing"

	"github.com/ward-dlp/ward/classifiers/engine"
	"github.com/ward-dlp/ward/classifiers/phi"
)

func classify(t *testing.T, in string) map[string]engine.Match {
	t.Helper()
	e, err := engine.New(engine.Config{FingerprintKey: []byte("sud-test-key-0123456789")},
		NewCodes(), NewProbable(), phi.NewSSN(), phi.NewDOB(), phi.NewMRN())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]engine.Match{}
	for _, m := range e.Classify([]byte(in)) {
		out[m.Detector] = m
	}
	return out
}

func TestCodes(t *testing.T) {
	cases := []struct {
		name, in string
		conf     int
		label    string
	}{
		{"icd10 dotted", "Dx: F11.20 Opioid dependence, uncomplicated", 55, "icd10:F11.20"},
		{"icd10 claim", "HI*ABK:F1020~", 55, "icd10:F10.20"[:6] + "20"},
		{"icd10 alcohol blood", "R78.0 finding", 55, "icd10:R78.0"},
		{"z71.41", "counselling Z71.41", 55, "icd10:Z71.41"},
		{"f55", "F55.0 abuse of antacids", 55, "icd10:F55.0"},
		{"nicotine excluded", "Dx: F17.210 nicotine dependence", 0, ""},
		{"other R78", "R78.1 finding", 0, ""},
		{"other Z71", "Z71.3 dietary counselling", 0, ""},
		{"f1 inside word", "Model XF10.2 key", 0, ""},
		{"keyboard key", "press F10 to save", 45, "icd10:F10"},
		{"hcpcs", "Service line SV1*HC:H0020 methadone administration", 55, "hcpcs:H0020"},
		{"hcpcs otp bundle", "G2067", 50, "hcpcs:G2067"},
		{"hcpcs not listed", "H0031 assessment", 0, ""},
		{"cpt needs context", "99408 units", 0, ""},
		{"cpt with context", "CPT 99408 SBIRT 15-30 min", 55, "cpt:99408"},
		{"drg", "MS-DRG 897 alcohol/drug abuse", 55, "drg:897"},
		{"drg other", "MS-DRG 291 heart failure", 0, ""},
		{"icd9", "ICD-9: 304.00 opioid type dependence", 55, "icd9:304"},
		{"icd9 tobacco", "ICD-9: 305.1 tobacco use", 0, ""},
		{"icd9 without context", "room 304 and 305", 0, ""},
		{"snomed", `{"system":"http://snomed.info/sct","code":"5602001"}`, 55, "snomed:5602001"},
		{"snomed no context", "ref 5602001", 0, ""},
		{"rxnorm", "RxNorm 1819 buprenorphine", 50, "rxnorm:1819"},
		{"taxonomy", "PRV*BI*PXC*261QM2800X~", 55, "taxonomy:261QM2800X"},
		{"brand", "Started Suboxone 8/2 mg SL daily", 40, "moud:suboxone"},
		{"generic capitalised", "Methadone 80 mg PO daily", 40, "moud:methadone"},
		{"generic lower case in prose", "pt continues methadone 80 mg at the OTP", 40, "moud:methadone"},
		{"buprenorphine lower case", "induction on buprenorphine yesterday", 40, "moud:buprenorphine"},
		{"naltrexone upper case", "NALTREXONE 380 MG IM", 40, "moud:naltrexone"},
		{"brand lower case", "transitioned from subutex to sublocade monthly", 40, "moud:subutex"},
		{"brand mixed case", "Zubsolv 5.7/1.4 SL; previously on VIVITROL", 40, "moud:zubsolv"},
		{"weekly depot", "first brixadi injection given", 40, "moud:brixadi"},
		{"withdrawal aid", "Lucemyra 0.18 mg for withdrawal symptoms", 40, "moud:lucemyra"},
		{"name inside a word", "the xmethadonex field", 0, ""},
		{"pcs", "ICD-10-PCS HZ81ZZZ", 55, "icd10pcs:HZ81ZZZ"},
		{"alcohol use social history", "Social history: alcohol use 2-3 drinks per week, denies drug use.", 0, ""},
		{"eth ticker", "ETH/USD 3124.22 BTC 61022", 0, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, ok := classify(t, c.in)["sud.codes"]
			if c.conf == 0 {
				if ok {
					t.Fatalf("%q: unexpected %+v", c.in, m)
				}
				return
			}
			if !ok || m.Confidence != c.conf || m.Class != engine.PHI {
				t.Fatalf("%q: got %+v (present %v), want %d", c.in, m, ok, c.conf)
			}
			// Samples are in offset order; a line may also name a medication.
			if c.label != "" && !slices.Contains(m.Masked, c.label) && c.name != "icd10 claim" {
				t.Fatalf("%q: labels %q, want %q", c.in, m.Masked, c.label)
			}
		})
	}
}

func TestProbableRecord(t *testing.T) {
	withIDs := "Patient DOB: 04/12/1985  SSN 219-45-8765\nDx F11.20 opioid use disorder, moderate; MAT intake.\n"
	ms := classify(t, withIDs)
	p, ok := ms["part2.probable-record"]
	if !ok || p.Class != engine.Part2 || p.Confidence != 80 {
		t.Fatalf("got %+v", ms)
	}
	// The same codes without identifiers are SUD-related only.
	ms = classify(t, "Dx F11.20 opioid use disorder, moderate; MAT intake.\n")
	if _, ok := ms["part2.probable-record"]; ok {
		t.Fatalf("no identifiers, still probable: %+v", ms)
	}
	// An alcohol-use row with identifiers is PHI, not Part 2.
	ms = classify(t, "Patient DOB: 04/12/1985 SSN 219-45-8765\nSocial history: alcohol use, 2 drinks/week.\n")
	if _, ok := ms["part2.probable-record"]; ok {
		t.Fatalf("alcohol use row became Part 2: %+v", ms)
	}
	// A medication name alone with identifiers is not enough (pain use).
	ms = classify(t, "Patient DOB: 04/12/1985 SSN 219-45-8765\nMethadone 10 mg q8h for cancer pain.\n")
	if _, ok := ms["part2.probable-record"]; ok {
		t.Fatalf("methadone for pain became Part 2: %+v", ms)
	}
}
