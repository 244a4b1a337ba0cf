package policy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"golang.org/x/mod/sumdb/note"
)

// Sanctioning delegation. The clinic's signed bundle is the only thing agents enforce, and
// the collector does not hold its signing key. Admins, though, decide in the console which
// applications are sanctioned, and those decisions should reach agents without a policy
// author re-signing a bundle for every click. A bundle may therefore name, in its
// sanctioning section, the verifier keys of collectors allowed to set apps' sanctioned
// status:
//
//	sanctioning:
//	  keys: ["ward-collector-sanctioning+1a2b3c4d+AbC…"]   # from the console (Shadow IT)
//	  locked: [zoom]    # apps whose status only this bundle sets
//
// The collector signs a sanctioning overlay with that key: a signed note (same format as
// bundles) followed by the organisation's sanctioning file (catalog policy YAML). Agents
// accept an overlay only when the bundle in force delegates to a key that signed it, only
// with a sequence not below the last one applied (no rollback to older decisions), and let
// it change nothing but the sanctioned status of apps the bundle does not lock. Rules,
// consents, exceptions and everything else stay exactly as the policy author signed them;
// withdrawing the delegation is a new bundle without the key.

// overlayMagic is the first line of an overlay's signed note.
const overlayMagic = "ward-sanctioning/v1"

// MaxOverlayPayloadBytes bounds an overlay's sanctioning file.
const MaxOverlayPayloadBytes = 256 << 10

// Errors an overlay can be refused with.
var (
	ErrNotDelegated   = errors.New("sanctioning overlay: the policy in force does not delegate sanctioning")
	ErrBadOverlay     = errors.New("sanctioning overlay: malformed")
	ErrOverlaySigner  = errors.New("sanctioning overlay: not signed by a key the policy delegates to")
	ErrOverlayHash    = errors.New("sanctioning overlay: payload does not match the signed hash")
	ErrOverlayRewound = errors.New("sanctioning overlay: sequence is older than the applied one")
)

// Sanctioning is a bundle's delegation of app sanctioning.
type Sanctioning struct {
	// Keys are note verifier keys whose overlays may set apps' sanctioned status.
	Keys []string
	// Locked apps (by name in the bundle's apps list, or by catalog id) keep the status the
	// bundle gives them.
	Locked []string
}

// IsLocked reports whether an overlay may not change app name.
func (s *Sanctioning) IsLocked(name string) bool { return s != nil && slices.Contains(s.Locked, name) }

// Delegates reports whether verifierKey is one of the delegated keys.
func (s *Sanctioning) Delegates(verifierKey string) bool {
	if s == nil {
		return false
	}
	for _, k := range s.Keys {
		if strings.TrimSpace(k) == strings.TrimSpace(verifierKey) {
			return true
		}
	}
	return false
}

func (d *decoder) sanctioning(n *yaml.Node) *Sanctioning {
	f := d.fields(n, "sanctioning", []string{"keys", "locked"}, "keys")
	if f == nil {
		return nil
	}
	s := &Sanctioning{Keys: d.strList(f["keys"], "sanctioning.keys", 8, 512)}
	if len(s.Keys) == 0 {
		d.errf(f["keys"], "sanctioning.keys: name at least one verifier key")
	}
	for i, k := range s.Keys {
		if _, err := note.NewVerifier(strings.TrimSpace(k)); err != nil {
			d.errf(f["keys"], "sanctioning.keys[%d]: not a verifier key: %v", i, err)
		}
	}
	for i, it := range d.list(f["locked"], "sanctioning.locked", maxApps) {
		if id := d.ident(it, fmt.Sprintf("sanctioning.locked[%d]", i)); id != "" {
			s.Locked = append(s.Locked, id)
		}
	}
	return s
}

// Overlay is a verified sanctioning overlay.
type Overlay struct {
	// Sequence orders overlays from one collector; agents never go back to a lower one.
	Sequence uint64
	IssuedAt time.Time
	// Catalog is the collector's catalog version (app ids are the catalog's).
	Catalog       string
	PayloadSHA256 string
	// Payload is the sanctioning file (catalog policy YAML).
	Payload []byte
	Signers []string
}

// SignOverlay makes an overlay file: a signed note over the header, then payload.
func SignOverlay(payload []byte, signerKey string, seq uint64, catalogVersion string, issuedAt time.Time) ([]byte, error) {
	if len(payload) > MaxOverlayPayloadBytes {
		return nil, fmt.Errorf("policy: overlay payload of %d bytes is over the %d limit", len(payload), MaxOverlayPayloadBytes)
	}
	if seq == 0 || catalogVersion == "" || strings.ContainsAny(catalogVersion, " \t\n") {
		return nil, fmt.Errorf("policy: overlay needs a sequence and a one-word catalog version")
	}
	s, err := note.NewSigner(strings.TrimSpace(signerKey))
	if err != nil {
		return nil, fmt.Errorf("policy: overlay signing key: %w", err)
	}
	sum := sha256.Sum256(payload)
	text := fmt.Sprintf("%s\nsequence %d\nissued-at %s\ncatalog %s\npayload-sha256 %s\npayload-bytes %d\n",
		overlayMagic, seq, issuedAt.UTC().Truncate(time.Second).Format(time.RFC3339), catalogVersion, hex.EncodeToString(sum[:]), len(payload))
	msg, err := note.Sign(&note.Note{Text: text}, s)
	if err != nil {
		return nil, fmt.Errorf("policy: sign overlay: %w", err)
	}
	return append(msg, payload...), nil
}

// OpenOverlay verifies an overlay file against the delegation: a signature by a delegated
// key, a well-formed header and the payload it names. Ordering (Sequence) is the caller's
// to judge against what it applied.
func (s *Sanctioning) OpenOverlay(file []byte) (*Overlay, error) {
	if s == nil || len(s.Keys) == 0 {
		return nil, ErrNotDelegated
	}
	if len(file) > maxNoteBytes+MaxOverlayPayloadBytes {
		return nil, fmt.Errorf("%w: %d bytes is too large", ErrBadOverlay, len(file))
	}
	signed, payload, err := SplitBundle(file)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadOverlay, err)
	}
	vs := make([]note.Verifier, 0, len(s.Keys))
	for _, k := range s.Keys {
		v, err := note.NewVerifier(strings.TrimSpace(k))
		if err != nil {
			return nil, fmt.Errorf("%w: delegated key: %v", ErrOverlaySigner, err)
		}
		vs = append(vs, v)
	}
	n, err := note.Open(signed, note.VerifierList(vs...))
	if err != nil {
		var unknown *note.UnverifiedNoteError
		var bad *note.InvalidSignatureError
		switch {
		case errors.As(err, &unknown):
			return nil, fmt.Errorf("%w: signed only by keys the policy does not delegate to", ErrOverlaySigner)
		case errors.As(err, &bad):
			return nil, fmt.Errorf("%w: %v", ErrOverlaySigner, err)
		}
		return nil, fmt.Errorf("%w: %v", ErrBadOverlay, err)
	}
	o, err := parseOverlayHeader(n.Text)
	if err != nil {
		return nil, err
	}
	for _, sg := range n.Sigs {
		o.Signers = append(o.Signers, sg.Name)
	}
	sum := sha256.Sum256(payload)
	if hex.EncodeToString(sum[:]) != o.PayloadSHA256 {
		return nil, fmt.Errorf("%w (signed sha256 %.12s…, got %.12x…)", ErrOverlayHash, o.PayloadSHA256, sum[:6])
	}
	o.Payload = bytes.Clone(payload)
	return o, nil
}

func parseOverlayHeader(text string) (*Overlay, error) {
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	keys := []string{"", "sequence", "issued-at", "catalog", "payload-sha256", "payload-bytes"}
	if len(lines) != len(keys) || lines[0] != overlayMagic {
		return nil, fmt.Errorf("%w: header is not %s with %d fields", ErrBadOverlay, overlayMagic, len(keys)-1)
	}
	vals := make([]string, len(keys))
	for i := 1; i < len(keys); i++ {
		v, ok := strings.CutPrefix(lines[i], keys[i]+" ")
		if !ok || v == "" || strings.ContainsAny(v, " \t") {
			return nil, fmt.Errorf("%w: line %d: want %q", ErrBadOverlay, i+1, keys[i]+" VALUE")
		}
		vals[i] = v
	}
	o := &Overlay{Catalog: vals[3], PayloadSHA256: vals[4]}
	var err error
	if o.Sequence, err = strconv.ParseUint(vals[1], 10, 64); err != nil || o.Sequence == 0 {
		return nil, fmt.Errorf("%w: sequence %q", ErrBadOverlay, vals[1])
	}
	if o.IssuedAt, err = time.Parse(time.RFC3339, vals[2]); err != nil {
		return nil, fmt.Errorf("%w: issued-at: %v", ErrBadOverlay, err)
	}
	if !isHex(o.PayloadSHA256, 64) {
		return nil, fmt.Errorf("%w: payload-sha256 is not 64 hex digits", ErrBadOverlay)
	}
	if n, err := strconv.Atoi(vals[5]); err != nil || n < 0 || n > MaxOverlayPayloadBytes {
		return nil, fmt.Errorf("%w: payload-bytes %q", ErrBadOverlay, vals[5])
	}
	return o, nil
}

// WithApps returns the policy with its apps list replaced (the sanctioned status an overlay
// sets). Everything else — compiled rules, exceptions, consents and the mass-export
// counters — is shared with p, so a sanctioning change neither recompiles nor resets counts.
func (p *Policy) WithApps(apps []App) *Policy {
	b := *p.bundle
	b.Apps = slices.Clone(apps)
	q := &Policy{bundle: &b, order: p.order, rules: p.rules, exceptions: p.exceptions, monitorIdx: p.monitorIdx,
		massIdx: p.massIdx, apps: newAppIndex(b.Apps), consents: p.consents, version: p.version,
		detectedVals: p.detectedVals, attrIndex: p.attrIndex}
	q.pool.New = func() any { return &activation{} }
	q.evalErrors.Store(p.evalErrors.Load())
	return q
}
