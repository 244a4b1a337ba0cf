package account

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Sealer encrypts TOTP secrets at rest with AES-256-GCM under a key kept in a file beside
// the database (0600), so a copy of the database alone (a backup, a stolen disk image of
// the data volume) does not yield second factors.
type Sealer struct {
	aead cipher.AEAD
}

// OpenSealer loads the key at path, creating a random one when the file does not exist.
func OpenSealer(path string) (*Sealer, error) {
	key, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("account: generate console key: %w", err)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("account: console key directory: %w", err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("account: create console key: %w", err)
		}
		if _, err := f.Write(key); err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("account: write console key: %w", err)
		}
		if err := f.Sync(); err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("account: sync console key: %w", err)
		}
		if err := f.Close(); err != nil {
			return nil, fmt.Errorf("account: close console key: %w", err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("account: read console key: %w", err)
	}
	if len(key) != 32 {
		return nil, fmt.Errorf("account: console key %s: want 32 bytes, have %d", path, len(key))
	}
	return NewSealer(key)
}

// NewSealer uses a 32-byte key.
func NewSealer(key []byte) (*Sealer, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("account: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("account: %w", err)
	}
	return &Sealer{aead: aead}, nil
}

// Seal encrypts plaintext bound to label (the account id) so a sealed secret cannot be moved
// to another account.
func (s *Sealer) Seal(plaintext []byte, label string) ([]byte, error) {
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("account: nonce: %w", err)
	}
	return s.aead.Seal(nonce, nonce, plaintext, []byte(label)), nil
}

// Open decrypts what Seal produced for label.
func (s *Sealer) Open(sealed []byte, label string) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n {
		return nil, errors.New("account: sealed secret too short")
	}
	pt, err := s.aead.Open(nil, sealed[:n], sealed[n:], []byte(label))
	if err != nil {
		return nil, fmt.Errorf("account: open sealed secret: %w", err)
	}
	return pt, nil
}

// ReadKey reads the 32-byte key file OpenSealer created.
func ReadKey(path string) ([]byte, error) {
	key, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("account: read console key: %w", err)
	}
	if len(key) != 32 {
		return nil, fmt.Errorf("account: console key %s: want 32 bytes, have %d", path, len(key))
	}
	return key, nil
}
