// Package policysync keeps the agent's policy current: it polls the collector for a newer
// signed bundle over the agent's existing mTLS connection, verifies it against the keys
// pinned in the agent's configuration (signature, payload hash, target group, validity
// window, version strictly above the applied one), persists it as the last good bundle and
// swaps it in atomically. A bundle that fails any check is refused: the last good policy
// stays in force, the refusal is reported in the next poll and in a Health event, and the
// agent carries on. Nothing here can stop the pipeline.
package policysync

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/classifiers/catalog"
	"github.com/ward-dlp/ward/policy"
)

// Config configures a Syncer.
type Config struct {
	// Dir holds the last good bundle (current.bundle) and the version floor (version).
	Dir string
	// Keys are the pinned verifier keys; none means every pushed bundle is refused.
	Keys []string
	// Group is the agent's target group.
	Group string
	// PollInterval is the time between polls (jittered by ±10 %).
	PollInterval time.Duration
	Logger       *slog.Logger
	// OnChange is called after a bundle is applied or refused, so the agent can report its
	// health at once instead of at the next interval.
	OnChange func()
	// Now is the clock (tests).
	Now func() time.Time
	// Catalog names the apps of sanctioning overlays; nil means the built-in catalog.
	Catalog *catalog.Catalog
}

// applied is one policy in force, swapped as a whole.
type applied struct {
	// pol is what decides: base with the sanctioning overlay's statuses, if one applies.
	pol       *policy.Policy
	base      *policy.Policy   // as signed
	env       *policy.Envelope // nil for the built-in pack
	sha       string
	appliedAt time.Time
	// The sanctioning overlay in force (nil when none): its file as received, verified
	// header and decisions.
	ovFile    []byte
	ov        *policy.Overlay
	sanctions *catalog.Policy
}

// Syncer holds the policy in force. Policy is safe to call from any goroutine.
type Syncer struct {
	cfg  Config
	log  *slog.Logger
	keys *policy.Keys
	cur  atomic.Pointer[applied]

	mu        sync.Mutex // serialises Offer and guards the fields below
	floor     uint64     // highest version ever applied (survives a lost bundle file)
	lastErr   string
	lastErrAt time.Time
	rejected  uint64 // version refused for good; reported so the collector stops resending it

	cat       *catalog.Catalog
	ovFloor   uint64   // highest overlay sequence ever applied (survives restarts)
	ovErr     string   // why the last offered overlay was refused; "" once one applies
	ovRefused [32]byte // hash of the last refused overlay, so a resent one is not re-judged
}

const (
	bundleFile  = "current.bundle"
	versionFile = "version"
	// overlayFile is the last applied sanctioning overlay; overlayFloorFile its sequence.
	overlayFile      = "sanctioning.overlay"
	overlayFloorFile = "sanctioning.seq"
)

// New loads the last good bundle from cfg.Dir if one verifies with the pinned keys, else
// starts on the built-in pack. Only a broken built-in pack is an error.
func New(cfg Config) (*Syncer, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Group == "" {
		cfg.Group = "default"
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Minute
	}
	s := &Syncer{cfg: cfg, log: cfg.Logger.With("component", "policy"), cat: cfg.Catalog}
	if s.cat == nil {
		c, err := catalog.Builtin()
		if err != nil {
			return nil, fmt.Errorf("policysync: %w", err)
		}
		s.cat = c
	}
	if len(cfg.Keys) > 0 {
		k, err := policy.ParseKeys(cfg.Keys)
		if err != nil {
			return nil, fmt.Errorf("policysync: %w", err)
		}
		s.keys = k
	}
	builtin, err := policy.Builtin()
	if err != nil {
		return nil, fmt.Errorf("policysync: %w", err)
	}
	s.cur.Store(&applied{pol: builtin, base: builtin, appliedAt: cfg.Now()})
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("policysync: create %s: %w", cfg.Dir, err)
	}
	if b, err := os.ReadFile(filepath.Join(cfg.Dir, versionFile)); err == nil {
		if v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 63); err == nil {
			s.floor = v
		}
	}
	if b, err := os.ReadFile(filepath.Join(cfg.Dir, overlayFloorFile)); err == nil {
		if v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil {
			s.ovFloor = v
		}
	}
	s.loadLastGood()
	if b, err := os.ReadFile(filepath.Join(cfg.Dir, overlayFile)); err == nil {
		s.mu.Lock()
		if err := s.offerOverlay(b, false); err != nil && !errors.Is(err, policy.ErrNotDelegated) {
			s.log.Warn("stored sanctioning overlay refused; apps keep the bundle's sanctioning", "err", err)
		}
		s.mu.Unlock()
	}
	return s, nil
}

// loadLastGood re-verifies the persisted bundle. Its expiry is not held against it: an
// expired policy the clinic signed is safer than the generic pack, and Status flags it.
func (s *Syncer) loadLastGood() {
	path := filepath.Join(s.cfg.Dir, bundleFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		if s.floor > 0 {
			s.fail(0, fmt.Errorf("last good bundle v%d is missing from %s; running the built-in pack until a newer one arrives", s.floor, path))
		}
		return
	}
	if err != nil {
		s.fail(0, fmt.Errorf("read last good bundle: %w", err))
		return
	}
	err = func() error {
		n, payload, err := policy.SplitBundle(b)
		if err != nil {
			return err
		}
		env, err := s.keys.Verify(n, payload)
		if err != nil {
			return err
		}
		if env.TargetGroup != s.cfg.Group {
			return fmt.Errorf("%w: stored bundle is for %q, this agent is now in %q", policy.ErrWrongGroup, env.TargetGroup, s.cfg.Group)
		}
		p, err := policy.Load(path, payload)
		if err != nil {
			return err
		}
		if p.Name() != env.Name || p.Version() != env.Version {
			return policy.ErrPayloadLabel
		}
		s.floor = max(s.floor, env.Version)
		s.cur.Store(&applied{pol: p, base: p, env: env, sha: env.PayloadSHA256, appliedAt: s.cfg.Now()})
		s.log.Info("policy loaded from last good bundle", "name", env.Name, "version", env.Version, "expires_at", env.ExpiresAt)
		return nil
	}()
	if err != nil {
		s.fail(0, fmt.Errorf("last good bundle %s refused, running the built-in pack: %w", path, err))
	}
}

// Policy returns the policy in force.
func (s *Syncer) Policy() *policy.Policy { return s.cur.Load().pol }

// Version returns the applied bundle version (0 for the built-in pack).
func (s *Syncer) Version() uint64 {
	if e := s.cur.Load().env; e != nil {
		return e.Version
	}
	return 0
}

// Status reports the policy in force and the last refusal, for Health events.
func (s *Syncer) Status() *wardv1.PolicyStatus {
	a := s.cur.Load()
	st := &wardv1.PolicyStatus{Name: a.pol.Name(), AppliedAt: timestamppb.New(a.appliedAt), Builtin: a.env == nil}
	if a.env != nil {
		st.Version, st.Sha256 = a.env.Version, a.sha
		st.ExpiresAt = timestamppb.New(a.env.ExpiresAt)
		st.Expired = !s.cfg.Now().Before(a.env.ExpiresAt)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lastErr != "" {
		st.LastError, st.LastErrorAt, st.RejectedVersion = s.lastErr, timestamppb.New(s.lastErrAt), s.rejected
	}
	return st
}

func (s *Syncer) fail(version uint64, err error) {
	s.lastErr, s.lastErrAt = bound(err.Error(), 480), s.cfg.Now()
	if version > 0 && !errors.Is(err, policy.ErrNotYetValid) {
		s.rejected = version // permanent: the same bytes will fail the same way
	}
	s.log.Error("policy bundle refused; keeping the policy in force", "offered_version", version,
		"applied_version", s.Version(), "err", err)
}

// Offer verifies a bundle and applies it when every check passes. It returns the reason
// for a refusal (nil when applied). OnChange runs after the lock is released (it typically reads Status).
func (s *Syncer) Offer(b *wardv1.PolicyBundle) error {
	err := s.offer(b)
	if s.cfg.OnChange != nil {
		s.cfg.OnChange()
	}
	return err
}

func (s *Syncer) offer(b *wardv1.PolicyBundle) (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("policysync: verifying bundle panicked: %v", r)
			s.fail(b.GetVersion(), err)
		}
	}()
	current := max(s.Version(), s.floor)
	p, env, err := s.keys.Open(b.GetSignedNote(), b.GetPayload(), current, s.cfg.Group, s.cfg.Now())
	if err != nil {
		v := b.GetVersion()
		if env != nil {
			v = env.Version // the signed version, not the unverified copy
		}
		s.fail(v, err)
		return err
	}
	sum := sha256.Sum256(b.GetPayload())
	if perr := s.persist(b); perr != nil {
		// Apply anyway: a full disk must not keep an older policy in force. The error is
		// reported so the operator knows the agent would restart on the older bundle.
		s.lastErr, s.lastErrAt = bound("applied but not persisted: "+perr.Error(), 480), s.cfg.Now()
		s.log.Error("policy applied but could not be persisted", "err", perr)
	} else {
		s.lastErr, s.rejected = "", 0
	}
	s.floor = env.Version
	if prev := s.cur.Load().pol.Bundle().Watch; !slices.Equal(prev, p.Bundle().Watch) {
		s.log.Warn("the new policy changes targets.watch; the agent watches them from its next start",
			"previous", prev, "new", p.Bundle().Watch)
	}
	next := &applied{pol: p, base: p, env: env, sha: hex.EncodeToString(sum[:]), appliedAt: s.cfg.Now()}
	s.carryOverlay(s.cur.Load(), next)
	s.cur.Store(next)
	s.log.Info("policy applied", "name", env.Name, "version", env.Version, "previous_version", current,
		"signers", env.Signers, "expires_at", env.ExpiresAt, "rules", len(p.Bundle().Rules))
	return nil
}

// persist writes the bundle file and the version floor atomically (temp file, fsync, rename,
// directory fsync).
func (s *Syncer) persist(b *wardv1.PolicyBundle) error {
	data := append(append([]byte(nil), b.GetSignedNote()...), b.GetPayload()...)
	if err := writeAtomic(s.cfg.Dir, bundleFile, data); err != nil {
		return err
	}
	return writeAtomic(s.cfg.Dir, versionFile, []byte(strconv.FormatUint(s.floorAfter(b), 10)+"\n"))
}

func (s *Syncer) floorAfter(b *wardv1.PolicyBundle) uint64 {
	e, err := policy.ParseEnvelope(b.GetSignedNote())
	if err != nil {
		return s.floor
	}
	return max(s.floor, e.Version)
}

func writeAtomic(dir, name string, data []byte) error {
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return fmt.Errorf("persist %s: %w", name, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("persist %s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("persist %s: fsync: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("persist %s: %w", name, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("persist %s: %w", name, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("persist %s: open dir: %w", name, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("persist %s: fsync dir: %w", name, err)
	}
	return nil
}

// Run polls until ctx ends: at once, then every PollInterval (±10 %). Poll failures are
// logged at debug level (the shipper already reports an unreachable collector) and retried
// at the next interval.
func (s *Syncer) Run(ctx context.Context, client wardv1.AgentServiceClient) error {
	for {
		if s.poll(ctx, client) {
			// Report the outcome (applied version or refusal) at once rather than a poll
			// interval later, so the collector's view of the fleet is current.
			s.poll(ctx, client)
		}
		jitter := time.Duration(rand.Int64N(int64(s.cfg.PollInterval)/5+1)) - s.cfg.PollInterval/10
		t := time.NewTimer(s.cfg.PollInterval + jitter)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// poll asks for a newer bundle and offers it; it reports whether one was offered.
func (s *Syncer) poll(ctx context.Context, client wardv1.AgentServiceClient) bool {
	a := s.cur.Load()
	req := &wardv1.FetchPolicyRequest{CurrentVersion: s.Version(), CurrentSha256: a.sha, TargetGroup: s.cfg.Group}
	s.mu.Lock()
	req.LastError, req.RejectedVersion = s.lastErr, s.rejected
	if req.LastError == "" {
		// A refused overlay is reported the same way (the fleet view shows it), without a
		// rejected version: the bundle itself is fine.
		req.LastError = s.ovErr
	}
	s.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := client.FetchPolicy(cctx, req)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Debug("policy poll failed; will retry", "err", err)
		}
		return false
	}
	offered := false
	if b := resp.GetBundle(); b != nil {
		_ = s.Offer(b) // a refusal is logged, kept in the status and reported on the next poll
		offered = true
	}
	if o := resp.GetSanctioningOverlay(); len(o) > 0 {
		// After the bundle: the overlay is judged against the delegation of the bundle in force.
		_ = s.OfferSanctioning(o)
	}
	return offered
}

func bound(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
