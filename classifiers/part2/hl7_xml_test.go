package part2

import (
	"os"
	"testing"

	"github.com/ward-dlp/ward/classifiers/engine"
)

func TestHL7v2AndFHIRXML(t *testing.T) {
	e, err := engine.New(engine.Config{FingerprintKey: []byte("part2-test-key-0123456789")}, NewHL7v2(), NewFHIRLabels())
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		file, detector string
		conf           int
		code           string
	}{
		{"hl7v2-orm-orc28-eth.hl7", "part2.hl7v2", 80, "ETH"},
		{"hl7v2-eth-ticker-trap.hl7", "", 0, ""},
		{"fhir-xml-consent-label.xml", "part2.fhir-label", 98, "42CFRPart2"},
	}
	for _, c := range cases {
		b, err := os.ReadFile("testdata/" + c.file)
		if err != nil {
			t.Fatal(err)
		}
		ms := e.Classify(b)
		if c.conf == 0 {
			if len(ms) != 0 {
				t.Errorf("%s: unexpected %+v", c.file, ms)
			}
			continue
		}
		if len(ms) != 1 || ms[0].Detector != c.detector || ms[0].Confidence != c.conf || ms[0].Masked[0] != c.code || ms[0].Class != engine.Part2 {
			t.Errorf("%s: got %+v", c.file, ms)
		}
	}
	// Inline: MSH-27 handling code with its system, v2.9 style; and a bare ETH with no system.
	msg := "MSH|^~\\&|A|B|C|D|20261002||ADT^A08|1|P|2.9|||||||||||||||R^restricted^HL70952|42CFRPart2^^ActCode\r"
	ms := e.Classify([]byte(msg))
	if len(ms) != 1 || ms[0].Confidence != 98 {
		t.Errorf("MSH-26/27: %+v", ms)
	}
	ms = e.Classify([]byte("MSH|^~\\&|A|B|C|D|20261002||ADT^A08|1|P|2.9\rARV|1|A|ETH\r"))
	if len(ms) != 0 {
		t.Errorf("bare ARV ETH without system counted: %+v", ms)
	}
}
