package policy

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
)

// Signed bundles use the golang.org/x/mod/sumdb/note signed-note format: a short text
// header, a blank line, and one "— <key name> <base64(key hash ‖ ed25519 signature)>" line
// per signer. The header is the canonical form the signature covers:
//
//	ward-policy-bundle/v1
//	name behavioural-health-default
//	version 7
//	not-before 2026-11-23T17:00:00Z
//	expires-at 2027-02-21T17:00:00Z
//	target-group default
//	payload-sha256 <64 hex>
//	payload-bytes 12345
//
// A bundle file is the signed note followed directly by the payload (the policy YAML), so
// a reviewer can read both with less(1) and nothing outside the signature can change what is
// enforced.
const envelopeMagic = "ward-policy-bundle/v1"

// Envelope is the signed header of a bundle.
type Envelope struct {
	Name          string
	Version       uint64
	NotBefore     time.Time
	ExpiresAt     time.Time
	TargetGroup   string
	PayloadSHA256 string
	PayloadBytes  int
	// Signers are the key names whose signatures verified (empty from ParseEnvelope).
	Signers []string
}

// Errors a bundle can be refused with. They are distinct so the agent's health event and
// the collector's push refusal say what to fix.
var (
	ErrBadEnvelope  = errors.New("policy bundle: malformed envelope")
	ErrSignature    = errors.New("policy bundle: signature does not verify with a pinned key")
	ErrPayloadHash  = errors.New("policy bundle: payload does not match the signed hash")
	ErrExpired      = errors.New("policy bundle: expired")
	ErrNotYetValid  = errors.New("policy bundle: not valid yet")
	ErrDowngrade    = errors.New("policy bundle: version is not newer than the applied one")
	ErrWrongGroup   = errors.New("policy bundle: signed for another target group")
	ErrPayloadLabel = errors.New("policy bundle: payload name or version differs from the signed ones")
)

// DefaultKeyName names keys made by GenerateKey when no name is given.
const DefaultKeyName = "ward-policy"

// GenerateKey makes an ed25519 signing key in note format. The signer key (secret) goes in
// a 0600 file for `wardctl policy sign`; the verifier key is what agents pin.
func GenerateKey(name string) (signer, verifier string, err error) {
	if name == "" {
		name = DefaultKeyName
	}
	signer, verifier, err = note.GenerateKey(rand.Reader, name)
	if err != nil {
		return "", "", fmt.Errorf("policy: generate key %q: %w", name, err)
	}
	return signer, verifier, nil
}

// SignOptions are the signed validity window and audience of a bundle.
type SignOptions struct {
	NotBefore   time.Time
	ExpiresAt   time.Time
	TargetGroup string
}

// Sign checks payload (it must lint clean) and returns the bundle file: a signed note whose
// header carries the payload's name and version, the window and group, and its SHA-256,
// followed by the payload.
func Sign(file string, payload []byte, signerKey string, opts SignOptions) ([]byte, error) {
	p, err := Load(file, payload)
	if err != nil {
		return nil, err
	}
	if opts.TargetGroup == "" {
		opts.TargetGroup = "default"
	}
	if !validGroup(opts.TargetGroup) {
		return nil, fmt.Errorf("policy: target group %q: use a-z, 0-9, '-', '_' and '.'", opts.TargetGroup)
	}
	if opts.NotBefore.IsZero() || opts.ExpiresAt.IsZero() || !opts.ExpiresAt.After(opts.NotBefore) {
		return nil, fmt.Errorf("policy: sign: need not-before < expires-at, got %s and %s", opts.NotBefore, opts.ExpiresAt)
	}
	s, err := note.NewSigner(strings.TrimSpace(signerKey))
	if err != nil {
		return nil, fmt.Errorf("policy: signing key: %w", err)
	}
	sum := sha256.Sum256(payload)
	env := Envelope{
		Name: p.Name(), Version: p.Version(), NotBefore: opts.NotBefore.UTC().Truncate(time.Second),
		ExpiresAt: opts.ExpiresAt.UTC().Truncate(time.Second), TargetGroup: opts.TargetGroup,
		PayloadSHA256: hex.EncodeToString(sum[:]), PayloadBytes: len(payload),
	}
	msg, err := note.Sign(&note.Note{Text: env.text()}, s)
	if err != nil {
		return nil, fmt.Errorf("policy: sign: %w", err)
	}
	return append(msg, payload...), nil
}

func (e *Envelope) text() string {
	return fmt.Sprintf("%s\nname %s\nversion %d\nnot-before %s\nexpires-at %s\ntarget-group %s\npayload-sha256 %s\npayload-bytes %d\n",
		envelopeMagic, e.Name, e.Version, e.NotBefore.Format(time.RFC3339), e.ExpiresAt.Format(time.RFC3339),
		e.TargetGroup, e.PayloadSHA256, e.PayloadBytes)
}

func validGroup(g string) bool {
	if g == "" || len(g) > 64 {
		return false
	}
	for _, r := range g {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// maxNoteBytes bounds the signed-note part of a bundle (header plus a few signatures).
const maxNoteBytes = 16 << 10

// SplitBundle separates a bundle file into its signed note and its payload.
func SplitBundle(b []byte) (signedNote, payload []byte, err error) {
	if len(b) > maxNoteBytes+MaxPayloadBytes {
		return nil, nil, fmt.Errorf("%w: %d bytes is too large", ErrBadEnvelope, len(b))
	}
	i := bytes.Index(b, []byte("\n\n"))
	if i < 0 || i > maxNoteBytes {
		return nil, nil, fmt.Errorf("%w: no signature block", ErrBadEnvelope)
	}
	end := i + 2
	sigs := 0
	for end < len(b) && bytes.HasPrefix(b[end:], []byte("— ")) {
		nl := bytes.IndexByte(b[end:], '\n')
		if nl < 0 {
			return nil, nil, fmt.Errorf("%w: unterminated signature line", ErrBadEnvelope)
		}
		end += nl + 1
		sigs++
	}
	if sigs == 0 {
		return nil, nil, fmt.Errorf("%w: no signature lines", ErrBadEnvelope)
	}
	return b[:end], b[end:], nil
}

// ParseEnvelope reads a signed note's header without verifying signatures: the collector
// uses it to file a pushed bundle; agents use Verify.
func ParseEnvelope(signedNote []byte) (*Envelope, error) {
	i := bytes.Index(signedNote, []byte("\n\n"))
	if i < 0 {
		return nil, fmt.Errorf("%w: no signature block", ErrBadEnvelope)
	}
	return parseHeader(string(signedNote[:i+1]))
}

func parseHeader(text string) (*Envelope, error) {
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	keys := []string{"", "name", "version", "not-before", "expires-at", "target-group", "payload-sha256", "payload-bytes"}
	if len(lines) != len(keys) || lines[0] != envelopeMagic {
		return nil, fmt.Errorf("%w: header is not %s with %d fields", ErrBadEnvelope, envelopeMagic, len(keys)-1)
	}
	vals := make([]string, len(keys))
	for i := 1; i < len(keys); i++ {
		v, ok := strings.CutPrefix(lines[i], keys[i]+" ")
		if !ok || v == "" || strings.ContainsAny(v, " \t") {
			return nil, fmt.Errorf("%w: line %d: want %q", ErrBadEnvelope, i+1, keys[i]+" VALUE")
		}
		vals[i] = v
	}
	e := &Envelope{Name: vals[1], TargetGroup: vals[5], PayloadSHA256: vals[6]}
	var err error
	if e.Version, err = strconv.ParseUint(vals[2], 10, 63); err != nil || e.Version == 0 {
		return nil, fmt.Errorf("%w: version %q", ErrBadEnvelope, vals[2])
	}
	if e.NotBefore, err = time.Parse(time.RFC3339, vals[3]); err != nil {
		return nil, fmt.Errorf("%w: not-before: %v", ErrBadEnvelope, err)
	}
	if e.ExpiresAt, err = time.Parse(time.RFC3339, vals[4]); err != nil {
		return nil, fmt.Errorf("%w: expires-at: %v", ErrBadEnvelope, err)
	}
	if !validGroup(e.TargetGroup) {
		return nil, fmt.Errorf("%w: target group %q", ErrBadEnvelope, e.TargetGroup)
	}
	if !isHex(e.PayloadSHA256, 64) {
		return nil, fmt.Errorf("%w: payload-sha256 is not 64 hex digits", ErrBadEnvelope)
	}
	n, err := strconv.Atoi(vals[7])
	if err != nil || n < 0 || n > MaxPayloadBytes {
		return nil, fmt.Errorf("%w: payload-bytes %q", ErrBadEnvelope, vals[7])
	}
	e.PayloadBytes = n
	return e, nil
}

// CheckPayload verifies that payload is the one the header names.
func (e *Envelope) CheckPayload(payload []byte) error {
	sum := sha256.Sum256(payload)
	if len(payload) != e.PayloadBytes || hex.EncodeToString(sum[:]) != e.PayloadSHA256 {
		return fmt.Errorf("%w (signed %d bytes sha256 %.12s…, got %d bytes sha256 %.12x…)",
			ErrPayloadHash, e.PayloadBytes, e.PayloadSHA256, len(payload), sum[:6])
	}
	return nil
}

// Keys are the verifier keys an agent pins.
type Keys struct{ v note.Verifiers }

// ParseKeys reads pinned verifier keys ("name+hash+base64", as GenerateKey prints them).
func ParseKeys(keys []string) (*Keys, error) {
	if len(keys) == 0 {
		return nil, errors.New("policy: no verifier keys pinned")
	}
	vs := make([]note.Verifier, 0, len(keys))
	for i, k := range keys {
		v, err := note.NewVerifier(strings.TrimSpace(k))
		if err != nil {
			return nil, fmt.Errorf("policy: pinned key %d: %w", i+1, err)
		}
		vs = append(vs, v)
	}
	return &Keys{v: note.VerifierList(vs...)}, nil
}

// Verify checks that signedNote is signed by a pinned key and that payload is the one it
// names, and returns the signed header. It does not judge version, window or group: Accept
// does, against the agent's state.
func (k *Keys) Verify(signedNote, payload []byte) (*Envelope, error) {
	if k == nil {
		return nil, fmt.Errorf("%w: no keys are pinned on this agent", ErrSignature)
	}
	if len(signedNote) > maxNoteBytes {
		return nil, fmt.Errorf("%w: note of %d bytes", ErrBadEnvelope, len(signedNote))
	}
	n, err := note.Open(signedNote, k.v)
	if err != nil {
		var unknown *note.UnverifiedNoteError
		if errors.As(err, &unknown) {
			return nil, fmt.Errorf("%w: signed only by keys this agent does not pin", ErrSignature)
		}
		var bad *note.InvalidSignatureError
		if errors.As(err, &bad) {
			return nil, fmt.Errorf("%w: %v", ErrSignature, err)
		}
		return nil, fmt.Errorf("%w: %v", ErrBadEnvelope, err)
	}
	e, err := parseHeader(n.Text)
	if err != nil {
		return nil, err
	}
	for _, s := range n.Sigs {
		e.Signers = append(e.Signers, s.Name)
	}
	if err := e.CheckPayload(payload); err != nil {
		return nil, err
	}
	return e, nil
}

// ClockSkew is how far an agent's clock may lag the signer's: a bundle signed "now" is
// accepted by an agent whose clock is up to this much behind.
const ClockSkew = 5 * time.Minute

// Accept judges a verified envelope against the agent: it must be for the agent's group,
// inside its validity window, and newer than the version applied now.
func (e *Envelope) Accept(current uint64, group string, now time.Time) error {
	switch {
	case e.TargetGroup != group:
		return fmt.Errorf("%w: bundle is for %q, this agent is in %q", ErrWrongGroup, e.TargetGroup, group)
	case !now.Before(e.ExpiresAt):
		return fmt.Errorf("%w: version %d expired at %s", ErrExpired, e.Version, e.ExpiresAt.Format(time.RFC3339))
	case now.Add(ClockSkew).Before(e.NotBefore):
		return fmt.Errorf("%w: version %d is valid from %s", ErrNotYetValid, e.Version, e.NotBefore.Format(time.RFC3339))
	case e.Version <= current:
		return fmt.Errorf("%w: offered version %d, applied version %d", ErrDowngrade, e.Version, current)
	}
	return nil
}

// Open verifies a bundle file completely for an agent: signature, payload hash, group,
// window and version, then compiles the payload and checks that its name and version are
// the signed ones. It returns the compiled policy and the envelope.
func (k *Keys) Open(signedNote, payload []byte, current uint64, group string, now time.Time) (*Policy, *Envelope, error) {
	e, err := k.Verify(signedNote, payload)
	if err != nil {
		return nil, nil, err
	}
	if err := e.Accept(current, group, now); err != nil {
		return nil, e, err
	}
	p, err := Load(fmt.Sprintf("bundle %s v%d", e.Name, e.Version), payload)
	if err != nil {
		return nil, e, fmt.Errorf("policy bundle %s v%d does not compile: %w", e.Name, e.Version, err)
	}
	if p.Name() != e.Name || p.Version() != e.Version {
		return nil, e, fmt.Errorf("%w: payload says %s v%d, signature says %s v%d", ErrPayloadLabel, p.Name(), p.Version(), e.Name, e.Version)
	}
	return p, e, nil
}
