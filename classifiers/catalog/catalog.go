// Package catalog is Ward's application catalog: a versioned data file (apps.yaml, embedded)
// that names SaaS and consumer applications by their domains and IP prefixes, with vendor,
// category, HIPAA BAA availability (and the page that says so) and a transparent risk score.
// It also holds the organisation's sanctioning policy, which is a separate file the clinic
// writes. The matcher is the only code here; the knowledge is data so it can be reviewed,
// versioned and overridden without a release.
package catalog

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

//go:embed apps.yaml
var builtin []byte

// Category is the kind of application; detections depend on it (uploads to file sharing and
// generative AI, consumer video calls), so it is a closed set validated at load.
type Category string

// Categories known to the catalog and the detections.
const (
	VideoConferencing Category = "video_conferencing"
	Telehealth        Category = "telehealth"
	Messaging         Category = "messaging"
	FileSharing       Category = "file_sharing"
	GenerativeAI      Category = "generative_ai"
	PersonalEmail     Category = "personal_email"
	Social            Category = "social"
	RemoteAccess      Category = "remote_access"
	PasteTransfer     Category = "paste_transfer"
	DoH               Category = "doh"
	Collaboration     Category = "collaboration"
	VPNProxy          Category = "vpn_proxy"
	Streaming         Category = "streaming"
)

var knownCategories = map[Category]bool{
	VideoConferencing: true, Telehealth: true, Messaging: true, FileSharing: true,
	GenerativeAI: true, PersonalEmail: true, Social: true, RemoteAccess: true,
	PasteTransfer: true, DoH: true, Collaboration: true, VPNProxy: true, Streaming: true,
}

// BAA records whether the vendor offers a HIPAA business associate agreement. Offered is
// "yes" only with the vendor page that says so in URL; otherwise "unknown" (Ward does not
// guess) or "no" with a source.
type BAA struct {
	Offered string `yaml:"offered" json:"offered"`
	URL     string `yaml:"url,omitempty" json:"url,omitempty"`
	Scope   string `yaml:"scope,omitempty" json:"scope,omitempty"`
}

// Risk is a 0–100 score (higher is riskier) with the rubric factors that produce it, so a
// reviewer can see and override why an app scores as it does.
type Risk struct {
	Score   int      `yaml:"score" json:"score"`
	Factors []string `yaml:"factors" json:"factors"`
}

// App is one catalog entry.
type App struct {
	ID       string   `yaml:"id" json:"id"`
	Name     string   `yaml:"name" json:"name"`
	Vendor   string   `yaml:"vendor" json:"vendor"`
	Category Category `yaml:"category" json:"category"`
	// Domains match the name itself and any dot-bounded subdomain.
	Domains []string `yaml:"domains" json:"domains,omitempty"`
	// Exact match only the full name (shared hosts whose subdomains belong to others).
	Exact []string `yaml:"exact,omitempty" json:"exact,omitempty"`
	// IPPrefixes name flows with no name at all; weak evidence (shared clouds).
	IPPrefixes []string `yaml:"ip_prefixes,omitempty" json:"ip_prefixes,omitempty"`
	// ASNs are documentation for the prefixes (Ward has no offline ASN database).
	ASNs []int `yaml:"asns,omitempty" json:"asns,omitempty"`
	// STUNRealms are REALM attribute values (suffix-matched) that identify the app.
	STUNRealms []string `yaml:"stun_realms,omitempty" json:"stun_realms,omitempty"`
	// STUNAttrs are vendor STUN attribute types (comprehension-optional ranges) the app sends.
	STUNAttrs []uint16 `yaml:"stun_attrs,omitempty" json:"stun_attrs,omitempty"`
	BAA       BAA      `yaml:"baa" json:"baa"`
	Risk      Risk     `yaml:"risk" json:"risk"`
	Notes     string   `yaml:"notes,omitempty" json:"notes,omitempty"`
}

// RiskFactor is one rubric entry: its weight is added to an app's score.
type RiskFactor struct {
	Weight int    `yaml:"weight" json:"weight"`
	Why    string `yaml:"why" json:"why"`
}

type file struct {
	Schema      int                   `yaml:"schema"`
	Version     string                `yaml:"version"`
	RiskFactors map[string]RiskFactor `yaml:"risk_factors"`
	Apps        []App                 `yaml:"apps"`
}

type prefixApp struct {
	p   netip.Prefix
	app *App
}

// Catalog is the loaded, validated catalog with its matchers. It is immutable after Load
// and safe for concurrent use.
type Catalog struct {
	Version     string
	RiskFactors map[string]RiskFactor
	apps        []*App
	byID        map[string]*App
	suffix      map[string]*App
	exact       map[string]*App
	prefixes    []prefixApp // sorted longest first
	realms      map[string]*App
	attrs       map[uint16]*App
}

// SchemaVersion is the catalog file schema this code reads.
const SchemaVersion = 1

// Builtin loads the catalog shipped inside the binary.
func Builtin() (*Catalog, error) {
	c, err := Parse(builtin)
	if err != nil {
		return nil, fmt.Errorf("builtin catalog: %w", err)
	}
	return c, nil
}

// Parse reads and validates a catalog file. Unknown keys, duplicate ids or domains,
// unknown categories, a "yes" BAA without an https URL, and a risk score that disagrees with
// its factors are all errors: the file is reviewed data and must be internally consistent.
func Parse(data []byte) (*Catalog, error) {
	var f file
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("decode catalog: %w", err)
	}
	if f.Schema != SchemaVersion {
		return nil, fmt.Errorf("catalog schema %d, want %d", f.Schema, SchemaVersion)
	}
	if f.Version == "" {
		return nil, errors.New("catalog: version is required")
	}
	c := &Catalog{
		Version: f.Version, RiskFactors: f.RiskFactors,
		byID: map[string]*App{}, suffix: map[string]*App{}, exact: map[string]*App{},
		realms: map[string]*App{}, attrs: map[uint16]*App{},
	}
	var errs []error
	for i := range f.Apps {
		a := &f.Apps[i]
		if err := c.add(a); err != nil {
			errs = append(errs, fmt.Errorf("app %d (%s): %w", i, a.ID, err))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	sort.SliceStable(c.prefixes, func(i, j int) bool { return c.prefixes[i].p.Bits() > c.prefixes[j].p.Bits() })
	return c, nil
}

func (c *Catalog) add(a *App) error {
	switch {
	case a.ID == "" || strings.ToLower(a.ID) != a.ID || strings.ContainsAny(a.ID, " ."):
		return errors.New("id must be lower-case without spaces or dots")
	case a.Name == "" || a.Vendor == "":
		return errors.New("name and vendor are required")
	case !knownCategories[a.Category]:
		return fmt.Errorf("unknown category %q", a.Category)
	case c.byID[a.ID] != nil:
		return errors.New("duplicate id")
	case len(a.Domains)+len(a.Exact)+len(a.IPPrefixes)+len(a.STUNRealms) == 0:
		return errors.New("no domains, exact names, prefixes or realms: nothing can match it")
	}
	switch a.BAA.Offered {
	case "yes", "no":
		if !strings.HasPrefix(a.BAA.URL, "https://") {
			return fmt.Errorf("baa %q needs the https source URL relied on", a.BAA.Offered)
		}
	case "unknown":
		if a.BAA.URL != "" {
			return errors.New("baa unknown must not cite a URL")
		}
	default:
		return fmt.Errorf("baa offered %q: want yes, no or unknown", a.BAA.Offered)
	}
	sum := 0
	for _, f := range a.Risk.Factors {
		rf, ok := c.RiskFactors[f]
		if !ok {
			return fmt.Errorf("unknown risk factor %q", f)
		}
		sum += rf.Weight
	}
	if sum > 100 {
		sum = 100
	}
	if a.Risk.Score != sum {
		return fmt.Errorf("risk score %d but its factors add up to %d", a.Risk.Score, sum)
	}
	if (a.BAA.Offered == "yes") == slices.Contains(a.Risk.Factors, "no_baa") {
		return errors.New("risk factor no_baa must be present exactly when no BAA is known")
	}
	for _, d := range a.Domains {
		d = normalise(d)
		if !validName(d) {
			return fmt.Errorf("bad domain %q", d)
		}
		if o := c.suffix[d]; o != nil {
			return fmt.Errorf("domain %q already belongs to %s", d, o.ID)
		}
		c.suffix[d] = a
	}
	for _, d := range a.Exact {
		d = normalise(d)
		if !validName(d) {
			return fmt.Errorf("bad exact name %q", d)
		}
		if o := c.exact[d]; o != nil {
			return fmt.Errorf("exact name %q already belongs to %s", d, o.ID)
		}
		c.exact[d] = a
	}
	for _, s := range a.IPPrefixes {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return fmt.Errorf("ip prefix: %w", err)
		}
		if p != p.Masked() {
			return fmt.Errorf("ip prefix %s has host bits set", s)
		}
		c.prefixes = append(c.prefixes, prefixApp{p, a})
	}
	for _, r := range a.STUNRealms {
		c.realms[normalise(r)] = a
	}
	for _, t := range a.STUNAttrs {
		if o := c.attrs[t]; o != nil {
			return fmt.Errorf("stun attribute %#04x already belongs to %s", t, o.ID)
		}
		c.attrs[t] = a
	}
	c.byID[a.ID] = a
	c.apps = append(c.apps, a)
	return nil
}

func normalise(name string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(name)), ".")
}

func validName(d string) bool {
	if d == "" || len(d) > 253 || strings.HasPrefix(d, ".") || strings.Contains(d, "..") {
		return false
	}
	for i := 0; i < len(d); i++ {
		c := d[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

// Apps lists every entry in file order.
func (c *Catalog) Apps() []*App { return c.apps }

// ByID finds an app by id.
func (c *Catalog) ByID(id string) *App { return c.byID[id] }

// MatchName finds the app for a host name by exact entry or the longest dot-bounded suffix
// ("ws.example.com" matches "a.ws.example.com", never "aws.example.com"). It does not
// allocate.
func (c *Catalog) MatchName(name string) *App {
	name = strings.TrimSuffix(name, ".")
	if name == "" {
		return nil
	}
	if hasUpper(name) {
		name = strings.ToLower(name)
	}
	if a := c.exact[name]; a != nil {
		return a
	}
	for s := name; ; {
		if a := c.suffix[s]; a != nil {
			return a
		}
		i := strings.IndexByte(s, '.')
		if i < 0 {
			return nil
		}
		s = s[i+1:]
	}
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 'A' && s[i] <= 'Z' {
			return true
		}
	}
	return false
}

// MatchIP finds the app whose most specific prefix holds addr. This is the weakest
// evidence and is used only when a flow has no name.
func (c *Catalog) MatchIP(addr netip.Addr) *App {
	addr = addr.Unmap()
	for _, p := range c.prefixes {
		if p.p.Contains(addr) {
			return p.app
		}
	}
	return nil
}

// MatchRealm finds the app for a STUN REALM value (suffix match like names).
func (c *Catalog) MatchRealm(realm string) *App {
	r := normalise(realm)
	for s := r; s != ""; {
		if a := c.realms[s]; a != nil {
			return a
		}
		i := strings.IndexByte(s, '.')
		if i < 0 {
			break
		}
		s = s[i+1:]
	}
	return nil
}

// MatchSTUNAttr finds the app that uses a vendor STUN attribute type.
func (c *Catalog) MatchSTUNAttr(t uint16) *App { return c.attrs[t] }
