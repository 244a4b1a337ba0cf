package catalog

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Status is the organisation's verdict on an application.
type Status string

// Statuses. Unknown is for flows whose application Ward could not name.
const (
	Sanctioned   Status = "sanctioned"
	Unsanctioned Status = "unsanctioned"
	Monitored    Status = "monitored"
	Unknown      Status = "unknown"
)

// AppPolicy is the organisation's rule for one app. When Tenants is set, only names matching
// one of its patterns are the sanctioned tenant; other use of the same vendor (a personal or
// another organisation's account) gets OtherTenants.
type AppPolicy struct {
	Status       Status   `yaml:"status"`
	Tenants      []string `yaml:"tenants,omitempty"`
	OtherTenants Status   `yaml:"other_tenants,omitempty"`
}

// Policy is the sanctioning configuration the organisation writes (--sanctioned FILE):
//
//	version: 1
//	default: unsanctioned        # apps in the catalog but not listed here
//	apps:
//	  zoom: {status: sanctioned, tenants: ["*.zoomgov.com", "clinic.zoom.us"]}
//	  microsoft-teams: {status: sanctioned}
//	  dropbox: {status: unsanctioned}
type Policy struct {
	Version int                  `yaml:"version"`
	Default Status               `yaml:"default"`
	Apps    map[string]AppPolicy `yaml:"apps"`
}

// DefaultPolicy is used when the organisation gave none: every catalogued app is monitored,
// so nothing is called unsanctioned without a decision by the clinic.
func DefaultPolicy() *Policy { return &Policy{Version: 1, Default: Monitored} }

// LoadPolicy reads and validates a policy file against the catalog.
func LoadPolicy(file string, c *Catalog) (*Policy, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read sanctioned-apps policy: %w", err)
	}
	p, err := ParsePolicy(b, c)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", file, err)
	}
	return p, nil
}

// ParsePolicy decodes a policy strictly: unknown keys, unknown app ids and bad patterns are
// errors, because a typo must not silently leave an app unsanctioned or sanctioned.
func ParsePolicy(b []byte, c *Catalog) (*Policy, error) {
	var p Policy
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("decode policy: %w", err)
	}
	if p.Version != 1 {
		return nil, fmt.Errorf("policy version %d, want 1", p.Version)
	}
	if p.Default == "" {
		p.Default = Monitored
	}
	if !validStatus(p.Default) {
		return nil, fmt.Errorf("default status %q", p.Default)
	}
	var errs []error
	for id, ap := range p.Apps {
		if c != nil && c.ByID(id) == nil {
			errs = append(errs, fmt.Errorf("app %q is not in catalog %s", id, c.Version))
		}
		if !validStatus(ap.Status) {
			errs = append(errs, fmt.Errorf("app %q: status %q", id, ap.Status))
		}
		if ap.OtherTenants == "" {
			ap.OtherTenants = Unsanctioned
		} else if !validStatus(ap.OtherTenants) {
			errs = append(errs, fmt.Errorf("app %q: other_tenants %q", id, ap.OtherTenants))
		}
		for i, t := range ap.Tenants {
			t = normalise(t)
			if _, err := path.Match(t, "x"); err != nil || t == "" {
				errs = append(errs, fmt.Errorf("app %q: tenant pattern %q is malformed", id, t))
			}
			ap.Tenants[i] = t
		}
		p.Apps[id] = ap
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &p, nil
}

func validStatus(s Status) bool {
	return s == Sanctioned || s == Unsanctioned || s == Monitored
}

// HasTenants reports whether the app is sanctioned only for some tenants, so the caller
// knows that a flow without a tenant-bearing name is undecided rather than sanctioned.
func (p *Policy) HasTenants(app *App) bool {
	if p == nil || app == nil {
		return false
	}
	return len(p.Apps[app.ID].Tenants) > 0
}

// Decide gives the status of a flow to app whose best name is name. tenant is the pattern
// that matched, empty when the policy has no tenant rule for the app or none matched.
func (p *Policy) Decide(app *App, name string) (st Status, tenant string) {
	if app == nil {
		return Unknown, ""
	}
	if p == nil {
		return Monitored, ""
	}
	ap, ok := p.Apps[app.ID]
	if !ok {
		return p.Default, ""
	}
	if len(ap.Tenants) == 0 {
		return ap.Status, ""
	}
	n := normalise(name)
	for _, t := range ap.Tenants {
		if TenantMatch(t, n) {
			return ap.Status, t
		}
	}
	return ap.OtherTenants, ""
}

// TenantMatch matches a tenant pattern: "*.zoomgov.com" matches any dot-bounded subdomain
// (and the apex), other patterns are path.Match globs over the whole name.
func TenantMatch(pattern, name string) bool {
	if rest, ok := strings.CutPrefix(pattern, "*."); ok && !strings.ContainsAny(rest, "*?[") {
		return name == rest || strings.HasSuffix(name, "."+rest)
	}
	m, err := path.Match(pattern, name)
	return err == nil && m
}

// TenantStatus is the status the policy gives an app's sanctioned tenants.
func (p *Policy) TenantStatus(app *App) Status {
	if p == nil || app == nil {
		return Unknown
	}
	if ap, ok := p.Apps[app.ID]; ok {
		return ap.Status
	}
	return p.Default
}
