// Package classifiers assembles Ward's content detectors. It is the composition root:
// engine holds the scanner core and cannot import the detector packages (they implement its
// interfaces), so the default set is wired here, from the versioned detector definitions
// (classifiers/defs) and the organisation's optional override file and indexes.
package classifiers

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/ward-dlp/ward/classifiers/defs"
	"github.com/ward-dlp/ward/classifiers/edm"
	"github.com/ward-dlp/ward/classifiers/engine"
	"github.com/ward-dlp/ward/classifiers/fingerprint"
	"github.com/ward-dlp/ward/classifiers/part2"
	"github.com/ward-dlp/ward/classifiers/phi"
	"github.com/ward-dlp/ward/classifiers/sud"
)

// Detectors returns a fresh instance of every production detector with the built-in
// definitions, for callers that add their own (tests) before calling engine.New.
func Detectors() []engine.Detector {
	set, err := defs.Builtin()
	if err != nil {
		panic(err) // the embedded file is validated by TestBuiltinDefinitions
	}
	ds, err := build(set, Options{})
	if err != nil {
		panic(err)
	}
	return ds
}

// Default builds the engine the agent runs: Part 2 labels, C-CDA markings, the §2.32
// notice, validated PHI identifiers and untagged SUD evidence.
func Default(cfg engine.Config) (*engine.Engine, error) {
	return New(cfg, Options{})
}

// Options adds organisation data and policy to the default detectors.
type Options struct {
	// EDMIndex is a loaded Part 2 patient index (wardctl edm build); nil for none.
	EDMIndex *edm.Index
	// FingerprintIndex holds documents found labelled Part 2 at rest (ward fingerprint
	// add); nil for none.
	FingerprintIndex *fingerprint.Index
	// Definitions replaces the built-in definitions, e.g. with LoadDefinitions(path) for
	// an organisation's override file; nil means defs.Builtin().
	Definitions *defs.Set
	// Enable and Disable switch detectors on or off by id after the definitions are
	// applied (command-line policy); an unknown id is an error.
	Enable, Disable []string
}

// LoadDefinitions applies an organisation's override file (defs schema) to the built-in
// definitions.
func LoadDefinitions(path string) (*defs.Set, error) {
	base, err := defs.Builtin()
	if err != nil {
		return nil, fmt.Errorf("classifiers: built-in definitions: %w", err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("classifiers: reading definitions: %w", err)
	}
	set, err := base.Override(path, bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("classifiers: %w", err)
	}
	return set, nil
}

// New builds the engine from the definitions and the organisation's optional indexes.
func New(cfg engine.Config, opts Options) (*engine.Engine, error) {
	set := opts.Definitions
	if set == nil {
		var err error
		if set, err = defs.Builtin(); err != nil {
			return nil, fmt.Errorf("classifiers: built-in definitions: %w", err)
		}
	}
	ds, err := build(set, opts)
	if err != nil {
		return nil, err
	}
	e, err := engine.New(cfg, ds...)
	if err != nil {
		return nil, fmt.Errorf("classifiers: default engine: %w", err)
	}
	return e, nil
}

// build instantiates the enabled definitions. Detectors that need an index run only when
// it is given.
func build(set *defs.Set, opts Options) ([]engine.Detector, error) {
	all := set.Definitions()
	for _, id := range slices.Concat(opts.Enable, opts.Disable) {
		if !slices.ContainsFunc(all, func(d defs.Definition) bool { return d.ID == id }) {
			return nil, fmt.Errorf("classifiers: enable/disable: no detector %q", id)
		}
	}
	var out []engine.Detector
	for _, d := range all {
		on := d.IsEnabled()
		if slices.Contains(opts.Enable, d.ID) {
			on = true
		}
		if slices.Contains(opts.Disable, d.ID) {
			on = false
		}
		if !on {
			continue
		}
		det, err := instantiate(d, opts)
		if err != nil {
			return nil, fmt.Errorf("classifiers: detector %s: %w", d.ID, err)
		}
		if det == nil {
			continue // needs an index that was not given
		}
		out = append(out, wrap(det, d))
	}
	return out, nil
}

// instantiate maps a definition to its implementation.
func instantiate(d defs.Definition, opts Options) (engine.Detector, error) {
	if d.Kind == defs.KindPattern {
		return defs.NewPattern(d)
	}
	switch d.ID {
	case "part2.fhir-label":
		return part2.NewFHIRLabels(), nil
	case "part2.cda":
		return part2.NewCDA(), nil
	case "part2.notice":
		return part2.NewNotice(), nil
	case "part2.hl7v2":
		return part2.NewHL7v2(), nil
	case "phi.ssn":
		return phi.NewSSNFrom(d), nil
	case "phi.npi":
		return phi.NewNPIFrom(d), nil
	case "phi.dea":
		return phi.NewDEAFrom(d), nil
	case "phi.mbi":
		return phi.NewMBIFrom(d), nil
	case "phi.phone":
		return phi.NewPhoneFrom(d), nil
	case "phi.email":
		return phi.NewEmailFrom(d), nil
	case "phi.dob":
		return phi.NewDOBFrom(d), nil
	case "phi.mrn":
		return phi.NewMRNFrom(d), nil
	case "phi.address":
		return phi.NewAddressFrom(d), nil
	case "sud.codes":
		return sud.NewCodesFrom(d), nil
	case "part2.probable-record":
		return sud.NewProbable(), nil
	case "edm.part2-patient":
		if opts.EDMIndex == nil {
			return nil, nil
		}
		return edm.NewDetector(opts.EDMIndex), nil
	case fingerprint.DetectorName:
		if opts.FingerprintIndex == nil {
			return nil, nil
		}
		return fingerprint.NewDetector(opts.FingerprintIndex, float64(d.MinOverlapPercent)/100)
	}
	return nil, fmt.Errorf("kind builtin but this build has no detector %q", d.ID)
}

// defined carries a definition's version and minimum confidence to the engine.
type defined struct {
	engine.Detector
	min, version int
}

func (d defined) MinConfidence() int { return d.min }
func (d defined) Version() int       { return d.version }

// Local forwards engine.Local, so wrapping keeps a detector segmentable.
func (d defined) Local() bool {
	l, ok := d.Detector.(engine.Local)
	return ok && l.Local()
}

// definedCombiner keeps a combiner a combiner once wrapped.
type definedCombiner struct {
	defined
	c engine.Combiner
}

func (d definedCombiner) Combine(found []engine.Match, r *engine.Reporter) { d.c.Combine(found, r) }

func wrap(det engine.Detector, d defs.Definition) engine.Detector {
	w := defined{Detector: det, min: d.MinConfidence, version: d.Version}
	if c, ok := det.(engine.Combiner); ok {
		return definedCombiner{defined: w, c: c}
	}
	return w
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

// LoadFingerprints reads a document fingerprint index built with key.
func LoadFingerprints(path string, key []byte) (*fingerprint.Index, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("classifiers: opening fingerprint index: %w", err)
	}
	defer f.Close()
	x, err := fingerprint.Load(f, key)
	if err != nil {
		return nil, fmt.Errorf("classifiers: fingerprint index %s: %w", path, err)
	}
	return x, nil
}

// ReadKeyFile reads an index key: hex text (what `wardctl edm keygen` and the fingerprint
// tools write) or raw bytes.
func ReadKeyFile(path string) ([]byte, error) {
	if path == "" {
		return nil, errors.New("classifiers: key file required")
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("classifiers: reading key: %w", err)
	}
	if k, err := hex.DecodeString(strings.TrimSpace(string(raw))); err == nil && len(k) > 0 {
		return k, nil
	}
	return raw, nil
}

// FileOptions is where an agent's configuration names its classifier inputs.
type FileOptions struct {
	Definitions                          string
	Enable, Disable                      []string
	EDMIndex, EDMKeyFile                 string
	FingerprintIndex, FingerprintKeyFile string
}

// Load reads the files FileOptions names into Options, so a daemon and a command-line tool
// load them the same way.
func (f FileOptions) Load() (Options, error) {
	opts := Options{Enable: f.Enable, Disable: f.Disable}
	var err error
	if f.Definitions != "" {
		if opts.Definitions, err = LoadDefinitions(f.Definitions); err != nil {
			return opts, err
		}
	}
	if f.EDMIndex != "" {
		k, err := ReadKeyFile(f.EDMKeyFile)
		if err != nil {
			return opts, fmt.Errorf("edm key: %w", err)
		}
		if opts.EDMIndex, err = LoadEDM(f.EDMIndex, k); err != nil {
			return opts, err
		}
	}
	if f.FingerprintIndex != "" {
		k, err := ReadKeyFile(f.FingerprintKeyFile)
		if err != nil {
			return opts, fmt.Errorf("fingerprint key: %w", err)
		}
		if opts.FingerprintIndex, err = LoadFingerprints(f.FingerprintIndex, k); err != nil {
			return opts, err
		}
	}
	return opts, nil
}
