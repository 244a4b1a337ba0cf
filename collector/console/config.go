package console

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"
)

// Config is the console section of the collector's configuration.
type Config struct {
	// Listen is the console's HTTPS address (host:port). Empty disables the console.
	Listen string `yaml:"listen"`
	// CertFile and KeyFile are a PEM certificate chain and key for the console, e.g. from the
	// hospital's PKI so browsers trust it. Empty: a certificate from the collector's CA
	// (the one agents use), which browsers trust once the Ward CA is installed.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// IdleTimeout ends a session after this long without a request; AbsoluteTimeout ends it
	// this long after login whatever happens.
	IdleTimeout     time.Duration `yaml:"idle_timeout"`
	AbsoluteTimeout time.Duration `yaml:"absolute_timeout"`
	// MaxFailures consecutive failed logins (password or second factor) lock an account for
	// LockoutDuration.
	MaxFailures     int           `yaml:"max_failures"`
	LockoutDuration time.Duration `yaml:"lockout_duration"`
	// LoginRatePerMinute bounds login attempts per client address (burst of the same size).
	LoginRatePerMinute int `yaml:"login_rate_per_minute"`
	// SilentAfter marks an agent silent in the fleet view when it has not called in for this
	// long (the fleet monitor's own alert, when open, is shown too).
	SilentAfter time.Duration `yaml:"silent_after"`
	// SanctionedFile is where the organisation's sanctioning file (catalog policy YAML) is
	// written whenever an admin changes an app's status. Default
	// HOME/collector/sanctioned-apps.yaml.
	SanctionedFile string `yaml:"sanctioned_file"`
	// OIDC is single sign-on through the hospital's identity provider; off without an issuer.
	OIDC OIDCConfig `yaml:"oidc"`
}

// OIDCConfig configures OpenID Connect sign-in (authorization code flow with PKCE).
type OIDCConfig struct {
	// Issuer is the provider's issuer URL (discovery at Issuer/.well-known/openid-configuration).
	Issuer string `yaml:"issuer"`
	// DisplayName labels the sign-in button (default "single sign-on").
	DisplayName string `yaml:"display_name"`
	ClientID    string `yaml:"client_id"`
	// ClientSecretFile holds the client secret; empty for a public client (PKCE only).
	ClientSecretFile string `yaml:"client_secret_file"`
	// RedirectURL is this console's callback as registered at the provider:
	// https://HOST:PORT/login/oidc/callback.
	RedirectURL string `yaml:"redirect_url"`
	// Scopes requested besides openid (default profile, email).
	Scopes []string `yaml:"scopes"`
	// CAFile is a PEM bundle for the provider's TLS certificate (a hospital PKI); empty: the
	// system roots.
	CAFile string `yaml:"ca_file"`
	// UsernameClaim names the account (default preferred_username, then email).
	UsernameClaim string `yaml:"username_claim"`
	// RoleClaim is the claim whose values map to roles (default groups); a string or a list.
	RoleClaim string `yaml:"role_claim"`
	// Roles maps claim values to console roles (admin, soc-analyst, compliance-auditor).
	// A user none of whose values maps is refused; one whose values map to two different
	// roles is refused too (the roles separate duties, so Ward does not pick one).
	Roles map[string]string `yaml:"roles"`
}

// Enabled reports whether OIDC sign-in is configured.
func (o OIDCConfig) Enabled() bool { return o.Issuer != "" }

func (o OIDCConfig) validate() error {
	if !o.Enabled() {
		return nil
	}
	iss, err := url.Parse(o.Issuer)
	if err != nil || iss.Scheme != "https" || iss.Host == "" {
		return fmt.Errorf("console.oidc.issuer: want an https URL, got %q", o.Issuer)
	}
	ru, err := url.Parse(o.RedirectURL)
	if err != nil || ru.Scheme != "https" || ru.Path != oidcCallbackPath {
		return fmt.Errorf("console.oidc.redirect_url: want https://HOST:PORT%s, got %q", oidcCallbackPath, o.RedirectURL)
	}
	if o.ClientID == "" {
		return errors.New("console.oidc.client_id is required")
	}
	if len(o.Roles) == 0 {
		return errors.New("console.oidc.roles: map at least one claim value to a role, or nobody can sign in")
	}
	for v, r := range o.Roles {
		if !validRole(r) {
			return fmt.Errorf("console.oidc.roles[%q]: %q is not admin, soc-analyst or compliance-auditor", v, r)
		}
	}
	return nil
}

// Defaults fills zero fields.
func (c Config) Defaults() Config {
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 15 * time.Minute
	}
	if c.AbsoluteTimeout == 0 {
		c.AbsoluteTimeout = 8 * time.Hour
	}
	if c.MaxFailures == 0 {
		c.MaxFailures = 5
	}
	if c.LockoutDuration == 0 {
		c.LockoutDuration = 15 * time.Minute
	}
	if c.LoginRatePerMinute == 0 {
		c.LoginRatePerMinute = 10
	}
	if c.SilentAfter == 0 {
		c.SilentAfter = 15 * time.Minute
	}
	return c
}

// Validate checks the section.
func (c Config) Validate() error {
	if c.Listen == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("console.listen: %w", err)
	}
	switch {
	case (c.CertFile == "") != (c.KeyFile == ""):
		return errors.New("console: cert_file and key_file go together")
	case c.IdleTimeout < 0 || c.AbsoluteTimeout < 0 || c.LockoutDuration < 0 || c.SilentAfter < 0:
		return errors.New("console: durations must not be negative")
	case c.AbsoluteTimeout > 0 && c.IdleTimeout > c.AbsoluteTimeout:
		return errors.New("console: idle_timeout longer than absolute_timeout")
	case c.MaxFailures < 0 || c.LoginRatePerMinute < 0:
		return errors.New("console: limits must not be negative")
	}
	return c.OIDC.validate()
}
