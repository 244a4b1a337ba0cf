// Package classifiers assembles Ward's content detectors. It is the composition root:
// engine holds the scanner core and cannot import the detector packages (they implement its
// interfaces), so the default set is wired here.
package classifiers

import (
	"fmt"

	"github.com/ward-dlp/ward/classifiers/engine"
	"github.com/ward-dlp/ward/classifiers/part2"
	"github.com/ward-dlp/ward/classifiers/phi"
)

// Detectors returns a fresh instance of every production detector, for callers that add
// their own (tests, the full engine's EDM) before calling engine.New.
func Detectors() []engine.Detector {
	return []engine.Detector{
		part2.NewFHIRLabels(),
		part2.NewCDA(),
		part2.NewNotice(),
		phi.NewSSN(),
	}
}

// Default builds the engine the agent runs: Part 2 labels, C-CDA markings, the §2.32
// notice and validated SSNs.
func Default(cfg engine.Config) (*engine.Engine, error) {
	e, err := engine.New(cfg, Detectors()...)
	if err != nil {
		return nil, fmt.Errorf("classifiers: default engine: %w", err)
	}
	return e, nil
}
