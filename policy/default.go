package policy

import (
	_ "embed"
	"fmt"
)

//go:embed packs/default.yaml
var defaultPack []byte

// DefaultPack returns the YAML of the default behavioural-health pack, the starting point
// for a clinic's own bundle (wardctl policy init writes it out).
func DefaultPack() []byte { return append([]byte(nil), defaultPack...) }

// BuiltinVersion is the version the built-in pack runs as on an agent: 0, so any signed
// bundle (version ≥ 1) replaces it.
const BuiltinVersion = 0

// Builtin compiles the default pack as the policy an agent runs before a signed bundle
// replaces it. Its version is forced to BuiltinVersion so that version 1 of a signed bundle
// made from the same file is still an upgrade.
func Builtin() (*Policy, error) {
	p, err := Load("builtin:packs/default.yaml", defaultPack)
	if err != nil {
		return nil, fmt.Errorf("policy: built-in pack: %w", err)
	}
	p.bundle.Version = BuiltinVersion
	p.version = "0"
	return p, nil
}
