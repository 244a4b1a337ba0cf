package sud

import (
	"slices"
	"strings"

	"github.com/ward-dlp/ward/classifiers/engine"
)

// Probable raises untagged SUD evidence to a Part 2 finding when the same content also
// identifies a patient: SUD diagnosis, procedure or program codes plus an SSN, MRN, date of
// birth, MBI or address is what a Part 2 program's record looks like without its label.
// A social-history "alcohol use" row has no codes and never counts; an MOUD name alone
// (pain use is common) does not either.
type Probable struct{}

// NewProbable returns the combiner.
func NewProbable() *Probable { return &Probable{} }

// Name implements engine.Detector.
func (*Probable) Name() string { return "part2.probable-record" }

// Interest implements engine.Detector: it needs no anchors of its own.
func (*Probable) Interest() engine.Interest { return engine.Interest{} }

// Detect implements engine.Detector; all work happens in Combine.
func (*Probable) Detect(*engine.Scan, *engine.Reporter) {}

// patientIdentifiers are the detectors whose matches identify a patient.
var patientIdentifiers = []string{"phi.ssn", "phi.mrn", "phi.dob", "phi.mbi", "phi.address", "edm.part2-patient"}

// Combine implements engine.Combiner.
func (*Probable) Combine(found []engine.Match, r *engine.Reporter) {
	var sud *engine.Match
	var ids []string
	for i := range found {
		m := &found[i]
		switch {
		case m.Detector == "sud.codes" && m.Confidence >= confWeak+5:
			if sud == nil || m.Confidence > sud.Confidence {
				sud = m
			}
		case slices.Contains(patientIdentifiers, m.Detector) && m.Confidence >= 65:
			ids = append(ids, m.Detector)
		}
	}
	if sud == nil || len(ids) == 0 {
		return
	}
	conf := 75
	if len(ids) >= 2 && sud.Confidence >= confCode {
		conf = 80
	}
	off := -1
	if len(sud.Offsets) > 0 {
		off = int(sud.Offsets[0])
	}
	slices.Sort(ids)
	r.Label(engine.Part2, conf, off, "probable-part2", "probable-part2|"+strings.Join(ids, ","),
		"untagged SUD evidence ("+sud.Evidence+") with patient identifiers "+strings.Join(ids, ","))
}
