package policysync

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/ward-dlp/ward/classifiers/catalog"
	"github.com/ward-dlp/ward/policy"
)

// Sanctioning overlays (policy/sanctioning.go): the collector signs the console's app
// decisions with its own key; the agent applies them only when the bundle in force
// delegates to that key, never goes back to an older sequence, and lets them change
// nothing but apps' sanctioned status (apps the bundle locks keep theirs).

// OfferSanctioning verifies a sanctioning overlay and applies it when it checks out. It
// returns the reason for a refusal (nil when applied or already in force).
// policy.ErrNotDelegated means the policy in force does not delegate sanctioning; that is
// not an error on the agent's side and is not reported.
func (s *Syncer) OfferSanctioning(file []byte) error {
	s.mu.Lock()
	before := s.cur.Load()
	err := s.offerOverlay(file, true)
	changed := s.cur.Load() != before
	s.mu.Unlock()
	if (changed || err != nil && !errors.Is(err, policy.ErrNotDelegated)) && s.cfg.OnChange != nil {
		s.cfg.OnChange()
	}
	return err
}

// Sanctioning is the agent's view of the organisation's app decisions from the overlay in
// force, with its sequence; nil and 0 when none applies.
func (s *Syncer) Sanctioning() (*catalog.Policy, uint64) {
	a := s.cur.Load()
	if a.ov == nil {
		return nil, 0
	}
	return a.sanctions, a.ov.Sequence
}

// offerOverlay judges and applies an overlay; s.mu is held. persist is false when the
// overlay comes from the state directory.
func (s *Syncer) offerOverlay(file []byte, persist bool) error {
	cur := s.cur.Load()
	sum := sha256.Sum256(file)
	if cur.ovFile != nil && sha256.Sum256(cur.ovFile) == sum {
		return nil // in force already: the collector sends it on every poll
	}
	del := cur.base.Bundle().Sanctioning
	if del == nil {
		s.log.Debug("sanctioning overlay ignored: the policy in force does not delegate sanctioning", "policy", cur.base.String())
		return policy.ErrNotDelegated
	}
	if persist && sum == s.ovRefused && s.ovErr != "" {
		return errors.New(s.ovErr) // the same bytes fail the same way; already logged
	}
	fail := func(err error) error {
		s.ovErr, s.ovRefused = bound("sanctioning overlay refused: "+err.Error(), 480), sum
		s.log.Error("sanctioning overlay refused; apps keep their current sanctioning", "err", err)
		return err
	}
	o, err := del.OpenOverlay(file)
	if err != nil {
		return fail(err)
	}
	if o.Sequence < s.ovFloor {
		return fail(fmt.Errorf("%w: offered %d, applied %d", policy.ErrOverlayRewound, o.Sequence, s.ovFloor))
	}
	sanctions, err := catalog.ParsePolicy(o.Payload, nil)
	if err != nil {
		return fail(fmt.Errorf("%w: %v", policy.ErrBadOverlay, err))
	}
	apps, notes := applySanctions(cur.base.Bundle().Apps, sanctions, del, s.cat)
	next := *cur
	next.pol, next.ovFile, next.ov, next.sanctions = cur.base.WithApps(apps), file, o, sanctions
	if persist {
		if err := writeAtomic(s.cfg.Dir, overlayFile, file); err != nil {
			s.log.Error("sanctioning overlay applied but not persisted", "err", err)
		} else if err := writeAtomic(s.cfg.Dir, overlayFloorFile, []byte(strconv.FormatUint(o.Sequence, 10)+"\n")); err != nil {
			s.log.Error("sanctioning overlay applied but its sequence not persisted", "err", err)
		}
	}
	s.ovFloor = max(s.ovFloor, o.Sequence)
	s.ovErr, s.ovRefused = "", [32]byte{}
	s.cur.Store(&next)
	s.log.Info("sanctioning overlay applied", "sequence", o.Sequence, "issued_at", o.IssuedAt, "signers", o.Signers,
		"catalog", o.Catalog, "apps", len(sanctions.Apps), "notes", notes)
	return nil
}

// carryOverlay re-applies the overlay in force to a newly applied bundle, if the new
// bundle still delegates to its signer; otherwise the overlay is dropped.
func (s *Syncer) carryOverlay(prev, next *applied) {
	if prev.ovFile == nil {
		return
	}
	del := next.base.Bundle().Sanctioning
	o, err := del.OpenOverlay(prev.ovFile)
	if err != nil {
		s.log.Warn("the new policy no longer delegates sanctioning to the overlay's signer; the overlay is dropped", "err", err)
		return
	}
	apps, notes := applySanctions(next.base.Bundle().Apps, prev.sanctions, del, s.cat)
	next.pol, next.ovFile, next.ov, next.sanctions = next.base.WithApps(apps), prev.ovFile, o, prev.sanctions
	if len(notes) > 0 {
		s.log.Info("sanctioning overlay re-applied to the new policy", "sequence", o.Sequence, "notes", notes)
	}
}

// applySanctions returns the bundle's apps with the overlay's statuses: an app matches a
// catalog id by name, or by a domain the catalog files under that id. A decided catalog app
// the bundle does not list is added with the catalog's domains, so a sanctioned (or
// unsanctioned) app is recognised by the rules' app.* attributes. notes say what was skipped.
func applySanctions(base []policy.App, sanc *catalog.Policy, del *policy.Sanctioning, cat *catalog.Catalog) ([]policy.App, []string) {
	apps := slices.Clone(base)
	var notes []string
	ids := make([]string, 0, len(sanc.Apps))
	for id := range sanc.Apps {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		ap := sanc.Apps[id]
		sanctioned := ap.Status == catalog.Sanctioned
		if len(ap.Tenants) > 0 {
			notes = append(notes, id+": tenant patterns are not enforced by agents, the status applies to every tenant")
		}
		if del.IsLocked(id) {
			notes = append(notes, id+": locked by the policy")
			continue
		}
		capp := cat.ByID(id)
		matched := false
		for i := range apps {
			if apps[i].Name != id && !sameCatalogApp(apps[i], capp, cat) {
				continue
			}
			matched = true
			if del.IsLocked(apps[i].Name) {
				notes = append(notes, id+": locked by the policy as "+apps[i].Name)
				continue
			}
			apps[i].Sanctioned = sanctioned
		}
		switch {
		case matched:
		case capp == nil:
			notes = append(notes, id+": not in this agent's catalog "+cat.Version)
		default:
			apps = append(apps, policy.App{Name: id, Category: strings.ReplaceAll(string(capp.Category), "_", "-"),
				Sanctioned: sanctioned, Domains: append(slices.Clone(capp.Domains), capp.Exact...)})
		}
	}
	return apps, notes
}

// sameCatalogApp reports whether a bundle app is the catalog app capp: one of its domains
// is filed under capp.
func sameCatalogApp(a policy.App, capp *catalog.App, cat *catalog.Catalog) bool {
	if capp == nil {
		return false
	}
	for _, d := range a.Domains {
		if m := cat.MatchName(strings.TrimPrefix(d, "*.")); m != nil && m.ID == capp.ID {
			return true
		}
	}
	return false
}
