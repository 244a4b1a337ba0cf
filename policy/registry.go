package policy

import (
	"slices"
	"strings"
)

// appIndex recognises the bundle's apps by process name and by destination domain.
type appIndex struct {
	byProcess map[string]*App
	byDomain  map[string]*App
}

func newAppIndex(apps []App) appIndex {
	x := appIndex{byProcess: map[string]*App{}, byDomain: map[string]*App{}}
	for i := range apps {
		a := &apps[i]
		for _, p := range a.Processes {
			x.byProcess[p] = a
		}
		for _, d := range a.Domains {
			x.byDomain[strings.TrimPrefix(d, "*.")] = a
		}
	}
	return x
}

// lookup finds the app by process name first, then by the domain or any parent domain.
func (x appIndex) lookup(process, domain string) *App {
	if a := x.byProcess[process]; a != nil {
		return a
	}
	if domain == "" || len(x.byDomain) == 0 {
		return nil
	}
	d := toLowerASCII(strings.TrimSuffix(domain, "."))
	for range 16 {
		if a := x.byDomain[d]; a != nil {
			return a
		}
		_, rest, ok := strings.Cut(d, ".")
		if !ok || !strings.Contains(rest, ".") {
			return nil
		}
		d = rest
	}
	return nil
}

// consentIndex finds consents by patient fingerprint and document hash.
type consentIndex struct {
	all       []Consent
	byPatient map[string][]int
	byDoc     map[string][]int
}

func newConsentIndex(cs []Consent) consentIndex {
	x := consentIndex{all: cs, byPatient: map[string][]int{}, byDoc: map[string][]int{}}
	for i, c := range cs {
		for _, p := range c.Patients {
			x.byPatient[p] = append(x.byPatient[p], i)
		}
		for _, d := range c.Documents {
			x.byDoc[d] = append(x.byDoc[d], i)
		}
	}
	return x
}

// match returns the id of an active consent covering the input's patients or document and
// its recipient and purpose, or "". Every EDM-matched patient in the content must be covered
// (by the same or different consents): one patient's consent does not disclose another's.
func (x consentIndex) match(a *activation) string {
	if len(x.all) == 0 {
		return ""
	}
	in := a.in
	if in.Document != "" {
		for _, i := range x.byDoc[toLowerASCII(in.Document)] {
			if x.covers(&x.all[i], a) {
				return x.all[i].ID
			}
		}
	}
	if len(in.Patients) == 0 {
		return ""
	}
	first := ""
	for _, p := range in.Patients {
		found := ""
		for _, i := range x.byPatient[toLowerASCII(p)] {
			if x.covers(&x.all[i], a) {
				found = x.all[i].ID
				break
			}
		}
		if found == "" {
			return ""
		}
		if first == "" {
			first = found
		}
	}
	return first
}

func (x consentIndex) covers(c *Consent, a *activation) bool {
	t := a.now
	if c.Revoked || !t.Before(c.Expires) || (!c.NotBefore.IsZero() && t.Before(c.NotBefore)) {
		return false
	}
	app := a.appInfo()
	recipient := (app.Name != "" && slices.Contains(c.Apps, app.Name)) ||
		(a.in.Destination.Org != "" && slices.Contains(c.Orgs, a.in.Destination.Org)) ||
		domainIn(a.in.Destination.Domain, c.Domains)
	if !recipient {
		return false
	}
	return len(c.Purposes) == 0 || (app.Purpose != "" && slices.Contains(c.Purposes, app.Purpose))
}

// domainIn reports whether d is one of the domains or a subdomain of one.
func domainIn(d string, domains []string) bool {
	if d == "" {
		return false
	}
	d = toLowerASCII(strings.TrimSuffix(d, "."))
	for _, x := range domains {
		x = strings.TrimPrefix(x, "*.")
		if d == x || strings.HasSuffix(d, "."+x) {
			return true
		}
	}
	return false
}
