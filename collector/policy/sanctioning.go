package policy

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"
	"golang.org/x/mod/sumdb/note"

	"github.com/ward-dlp/ward/classifiers/catalog"
	"github.com/ward-dlp/ward/collector/store"
	"github.com/ward-dlp/ward/policy"
)

// SanctioningKeyName names the collector's sanctioning key in signatures.
const SanctioningKeyName = "ward-collector-sanctioning"

// Sanctioner turns the console's app decisions into the signed sanctioning overlay agents
// fetch with their policy (policy/sanctioning.go). It holds the collector's own ed25519
// sanctioning key — not a policy signing key: the overlay takes effect only on agents whose
// signed bundle delegates to this key, and only for apps' sanctioned status.
type Sanctioner struct {
	st       *store.Store
	cat      *catalog.Catalog
	signer   string
	verifier string
	now      func() time.Time

	mu       sync.Mutex
	stateKey string // decisions the cached overlay was made from
	overlay  []byte
	// delegated caches, per bundle payload hash, whether the bundle delegates to us.
	delegated map[string]bool
}

// OpenSanctioner loads (creating on first start) the sanctioning key in
// stateDir/sanctioning/: sanctioning.key (secret, 0600) and sanctioning.pub (the verifier key
// policy authors put in a bundle's sanctioning.keys).
func OpenSanctioner(stateDir string, st *store.Store, cat *catalog.Catalog) (*Sanctioner, error) {
	if cat == nil {
		var err error
		if cat, err = catalog.Builtin(); err != nil {
			return nil, err
		}
	}
	dir := filepath.Join(stateDir, "sanctioning")
	keyPath, pubPath := filepath.Join(dir, "sanctioning.key"), filepath.Join(dir, "sanctioning.pub")
	skey, err := os.ReadFile(keyPath)
	if errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("sanctioning key: %w", err)
		}
		s, v, err := policy.GenerateKey(SanctioningKeyName)
		if err != nil {
			return nil, err
		}
		f, err := os.OpenFile(keyPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("sanctioning key: %w", err)
		}
		if _, err := f.WriteString(s + "\n"); err != nil {
			f.Close()
			return nil, fmt.Errorf("sanctioning key: %w", err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, fmt.Errorf("sanctioning key: %w", err)
		}
		if err := f.Close(); err != nil {
			return nil, fmt.Errorf("sanctioning key: %w", err)
		}
		if err := os.WriteFile(pubPath, []byte(v+"\n"), 0o644); err != nil {
			return nil, fmt.Errorf("sanctioning key: %w", err)
		}
		skey = []byte(s)
	} else if err != nil {
		return nil, fmt.Errorf("sanctioning key: %w", err)
	}
	signer, err := note.NewSigner(strings.TrimSpace(string(skey)))
	if err != nil {
		return nil, fmt.Errorf("sanctioning key %s: %w", keyPath, err)
	}
	vkey, err := verifierOf(strings.TrimSpace(string(skey)), signer)
	if err != nil {
		return nil, err
	}
	if b, err := os.ReadFile(pubPath); err != nil || strings.TrimSpace(string(b)) != vkey {
		// Keep the published verifier in step with the secret (e.g. after a restore).
		if err := os.WriteFile(pubPath, []byte(vkey+"\n"), 0o644); err != nil {
			return nil, fmt.Errorf("sanctioning key: %w", err)
		}
	}
	return &Sanctioner{st: st, cat: cat, signer: strings.TrimSpace(string(skey)), verifier: vkey, now: time.Now,
		delegated: map[string]bool{}}, nil
}

// verifierOf derives the verifier key of a note signer key
// ("PRIVATE+KEY+name+hash+key" → "name+hash+pubkey").
func verifierOf(skey string, s note.Signer) (string, error) {
	parts := strings.SplitN(skey, "+", 5) // the base64 key may itself contain "+"
	if len(parts) != 5 {
		return "", errors.New("sanctioning key: not a note signer key")
	}
	priv, err := base64.StdEncoding.DecodeString(parts[4])
	if err != nil || len(priv) != 1+ed25519.SeedSize || priv[0] != 1 {
		return "", errors.New("sanctioning key: not an ed25519 note key")
	}
	pub := ed25519.NewKeyFromSeed(priv[1:]).Public().(ed25519.PublicKey)
	v := s.Name() + "+" + parts[3] + "+" + base64.StdEncoding.EncodeToString(append([]byte{1}, pub...))
	nv, err := note.NewVerifier(v)
	if err != nil || nv.KeyHash() != s.KeyHash() {
		return "", errors.New("sanctioning key: derived verifier does not match")
	}
	return v, nil
}

// VerifierKey is the key a bundle's sanctioning.keys lists to delegate to this collector.
func (s *Sanctioner) VerifierKey() string { return s.verifier }

// Delegated reports whether group's newest bundle delegates sanctioning to this collector
// (false when the group has no bundle).
func (s *Sanctioner) Delegated(ctx context.Context, group string) (bool, error) {
	b, err := s.st.LatestPolicyBundle(ctx, group)
	if errors.Is(err, store.ErrNoPolicy) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	s.mu.Lock()
	d, ok := s.delegated[b.SHA256]
	s.mu.Unlock()
	if ok {
		return d, nil
	}
	pb, err := policy.Parse("bundle", b.Payload)
	if err != nil {
		return false, fmt.Errorf("stored bundle %s v%d: %w", b.TargetGroup, b.Version, err)
	}
	d = pb.Sanctioning.Delegates(s.verifier)
	s.mu.Lock()
	s.delegated[b.SHA256] = d
	s.mu.Unlock()
	return d, nil
}

// OverlayFor is the overlay to send an agent of group: nil when the group's bundle does not
// delegate to this collector or no app has been decided yet.
func (s *Sanctioner) OverlayFor(ctx context.Context, group string) ([]byte, error) {
	ok, err := s.Delegated(ctx, group)
	if err != nil || !ok {
		return nil, err
	}
	return s.Overlay(ctx)
}

// Overlay signs the current decisions (cached until they change). Its sequence is the
// newest decision's time in nanoseconds, which the console keeps strictly increasing, so a
// restored or replayed older overlay is refused by agents that applied a newer one.
func (s *Sanctioner) Overlay(ctx context.Context) ([]byte, error) {
	dec, err := s.st.AppSanctions(ctx)
	if err != nil {
		return nil, err
	}
	if len(dec) == 0 {
		return nil, nil
	}
	payload, seq := OverlayPayload(dec, s.cat.Version)
	key := fmt.Sprintf("%d/%x", seq, sha256.Sum256(payload))
	s.mu.Lock()
	defer s.mu.Unlock()
	if key == s.stateKey {
		return s.overlay, nil
	}
	o, err := policy.SignOverlay(payload, s.signer, seq, s.cat.Version, s.now())
	if err != nil {
		return nil, err
	}
	s.stateKey, s.overlay = key, o
	return o, nil
}

// OverlayPayload renders decisions as the sanctioning file agents read (catalog policy
// format, apps sorted, no names or times of the people who decided: those are in the audit
// log) and returns it with its sequence.
func OverlayPayload(dec map[string]store.AppSanction, catalogVersion string) ([]byte, uint64) {
	ids := make([]string, 0, len(dec))
	var seq int64
	for id, d := range dec {
		ids = append(ids, id)
		seq = max(seq, d.ChangedAt.UnixNano())
	}
	sort.Strings(ids)
	apps := &yaml.Node{Kind: yaml.MappingNode}
	for _, id := range ids {
		apps.Content = append(apps.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: id},
			&yaml.Node{Kind: yaml.MappingNode, Style: yaml.FlowStyle, Content: []*yaml.Node{
				{Kind: yaml.ScalarNode, Value: "status"}, {Kind: yaml.ScalarNode, Value: dec[id].Status}}})
	}
	doc := &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{
		{Kind: yaml.ScalarNode, Value: "version"}, {Kind: yaml.ScalarNode, Value: "1", Tag: "!!int"},
		{Kind: yaml.ScalarNode, Value: "default"}, {Kind: yaml.ScalarNode, Value: string(catalog.Monitored)},
		{Kind: yaml.ScalarNode, Value: "apps"}, apps,
	}}
	b, err := yaml.Marshal(doc)
	if err != nil {
		panic(fmt.Sprintf("sanctioning: marshal a fixed document: %v", err)) // cannot fail for these node kinds
	}
	head := fmt.Sprintf("# Ward sanctioning overlay (catalog %s): decisions made in the console.\n", catalogVersion)
	if seq <= 0 {
		seq = 1
	}
	return append([]byte(head), b...), uint64(seq)
}
