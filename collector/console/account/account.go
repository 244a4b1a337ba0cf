// Package account holds the credential primitives of console accounts: argon2id password
// hashes, TOTP secrets sealed at rest, recovery codes and roles. It is shared by the
// console (logins) and the admin API (wardctl user add|reset|list).
package account

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
)

// Role is a console role. Each account has exactly one.
type Role string

// Roles, least privilege: see docs/console.md for the permission table.
const (
	RoleAdmin   Role = "admin"
	RoleAnalyst Role = "soc-analyst"
	RoleAuditor Role = "compliance-auditor"
)

// Roles lists every role.
var Roles = []Role{RoleAdmin, RoleAnalyst, RoleAuditor}

// ParseRole validates a role name.
func ParseRole(s string) (Role, error) {
	for _, r := range Roles {
		if string(r) == s {
			return r, nil
		}
	}
	return "", fmt.Errorf("role %q: want admin, soc-analyst or compliance-auditor", s)
}

// ValidUsername checks an account name: 1-64 characters of letters, digits and . _ - @.
func ValidUsername(s string) error {
	if s == "" || len(s) > 64 {
		return errors.New("username: want 1 to 64 characters")
	}
	for _, c := range s {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("._-@", c)
		if !ok {
			return fmt.Errorf("username: %q is not allowed (letters, digits, . _ - @)", c)
		}
	}
	return nil
}

// Params are argon2id cost parameters.
type Params struct {
	Time    uint32
	Memory  uint32 // KiB
	Threads uint8
	KeyLen  uint32
	SaltLen int
}

// DefaultParams is the second recommended option of RFC 9106 §4 (t=3, m=64 MiB, p=4),
// which is above OWASP's argon2id minimum (m=19 MiB, t=2, p=1). About 0.1-0.3 s of two
// cores; logins are rate limited and hashing is bounded to a few at a time by the console.
var DefaultParams = Params{Time: 3, Memory: 64 * 1024, Threads: 4, KeyLen: 32, SaltLen: 16}

// MinPasswordLen follows NIST SP 800-63B (at least 8; 12 for administrators is common
// practice; Ward asks 12 of everyone since accounts reach PHI metadata).
const MinPasswordLen = 12

// CheckPassword enforces length (in characters) and a ceiling that keeps hashing bounded.
func CheckPassword(pw string) error {
	n := utf8.RuneCountInString(pw)
	switch {
	case n < MinPasswordLen:
		return fmt.Errorf("password: at least %d characters", MinPasswordLen)
	case len(pw) > 1024:
		return errors.New("password: at most 1024 bytes")
	}
	return nil
}

// HashPassword returns the PHC string of pw under p:
// $argon2id$v=19$m=65536,t=3,p=4$<salt>$<hash> (unpadded standard base64).
func HashPassword(pw string, p Params) (string, error) {
	salt := make([]byte, p.SaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("account: salt: %w", err)
	}
	key := argon2.IDKey([]byte(pw), salt, p.Time, p.Memory, p.Threads, p.KeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.Memory, p.Time, p.Threads,
		b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// ErrBadHash is returned for a stored hash this code cannot read.
var ErrBadHash = errors.New("account: malformed password hash")

// VerifyPassword checks pw against a PHC string. needsRehash is true when the hash was made
// with parameters other than want, so the caller can upgrade it after a good login.
func VerifyPassword(pw, encoded string, want Params) (ok, needsRehash bool, err error) {
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false, false, ErrBadHash
	}
	var v int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &v); err != nil || v != argon2.Version {
		return false, false, ErrBadHash
	}
	var p Params
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.Memory, &p.Time, &p.Threads); err != nil {
		return false, false, ErrBadHash
	}
	if p.Memory == 0 || p.Memory > 4<<20 || p.Time == 0 || p.Time > 64 || p.Threads == 0 {
		return false, false, ErrBadHash
	}
	b64 := base64.RawStdEncoding
	salt, err := b64.DecodeString(parts[4])
	if err != nil || len(salt) < 8 {
		return false, false, ErrBadHash
	}
	key, err := b64.DecodeString(parts[5])
	if err != nil || len(key) < 16 || len(key) > 64 {
		return false, false, ErrBadHash
	}
	got := argon2.IDKey([]byte(pw), salt, p.Time, p.Memory, p.Threads, uint32(len(key)))
	ok = subtle.ConstantTimeCompare(got, key) == 1
	needsRehash = p.Memory != want.Memory || p.Time != want.Time || p.Threads != want.Threads ||
		uint32(len(key)) != want.KeyLen || len(salt) != want.SaltLen
	return ok, needsRehash, nil
}

// NewPassword returns a random initial password (20 characters of base32, 100 bits).
func NewPassword() (string, error) {
	b := make([]byte, 15)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("account: random password: %w", err)
	}
	s := strings.ToLower(base32.StdEncoding.EncodeToString(b))
	return s[:5] + "-" + s[5:10] + "-" + s[10:15] + "-" + s[15:20], nil
}

// RecoveryCodes makes n single-use recovery codes (80 bits each, shown once as
// xxxx-xxxx-xxxx-xxxx) and their SHA-256 hashes for storage. 80 random bits make a plain
// hash safe against offline guessing, unlike a password.
func RecoveryCodes(n int) (codes []string, hashes [][]byte, err error) {
	for range n {
		b := make([]byte, 10)
		if _, err := rand.Read(b); err != nil {
			return nil, nil, fmt.Errorf("account: recovery code: %w", err)
		}
		s := strings.ToLower(base32.StdEncoding.EncodeToString(b))
		code := s[0:4] + "-" + s[4:8] + "-" + s[8:12] + "-" + s[12:16]
		codes = append(codes, code)
		hashes = append(hashes, HashRecoveryCode(code))
	}
	return codes, hashes, nil
}

// HashRecoveryCode normalises a typed code (case, spaces, dashes) and hashes it.
func HashRecoveryCode(code string) []byte {
	c := strings.Map(func(r rune) rune {
		switch {
		case r == '-' || r == ' ':
			return -1
		case r >= 'A' && r <= 'Z':
			return r + ('a' - 'A')
		}
		return r
	}, code)
	h := sha256.Sum256([]byte("ward-recovery-v1:" + c))
	return h[:]
}
