// Package classifiers assembles Ward's content detectors. It is the composition root:
// engine holds the scanner core and cannot import the detector packages (they implement its
// interfaces), so the default set is wired here.
package classifiers

import (
	"fmt"
	"os"

	"github.com/ward-dlp/ward/classifiers/edm"
	"github.com/ward-dlp/ward/classifiers/engine"
	"github.com/ward-dlp/ward/classifiers/part2"
	"github.com/ward-dlp/ward/classifiers/phi"
	"github.com/ward-dlp/ward/classifiers/sud"
)

// Detectors returns a fresh instance of every production detector, for callers that add
// their own (tests, EDM) before calling engine.New.
func Detectors() []engine.Detector {
	return []engine.Detector{
		part2.NewFHIRLabels(),
		part2.NewCDA(),
		part2.NewNotice(),
		part2.NewHL7v2(),
		phi.NewSSN(),
		phi.NewNPI(),
		phi.NewDEA(),
		phi.NewMBI(),
		phi.NewPhone(),
		phi.NewEmail(),
		phi.NewDOB(),
		phi.NewMRN(),
		phi.NewAddress(),
		sud.NewCodes(),
		sud.NewProbable(),
	}
}

// Default builds the engine the agent runs: Part 2 labels, C-CDA markings, the §2.32
// notice, validated PHI identifiers and untagged SUD evidence.
func Default(cfg engine.Config) (*engine.Engine, error) {
	return New(cfg, Options{})
}

// Options adds organisation data to the default detectors.
type Options struct {
	// EDMIndex is a loaded Part 2 patient index (wardctl edm build); nil for none.
	EDMIndex *edm.Index
}

// New builds the default engine plus the organisation's optional detectors.
func New(cfg engine.Config, opts Options) (*engine.Engine, error) {
	ds := Detectors()
	if opts.EDMIndex != nil {
		ds = append(ds, edm.NewDetector(opts.EDMIndex))
	}
	e, err := engine.New(cfg, ds...)
	if err != nil {
		return nil, fmt.Errorf("classifiers: default engine: %w", err)
	}
	return e, nil
}

// LoadEDM reads an EDM index file built with key.
func LoadEDM(path string, key []byte) (*edm.Index, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("classifiers: opening EDM index: %w", err)
	}
	defer f.Close()
	x, err := edm.Load(f, key)
	if err != nil {
		return nil, fmt.Errorf("classifiers: EDM index %s: %w", path, err)
	}
	return x, nil
}
