package console

import (
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"path/filepath"

	"github.com/ward-dlp/ward/collector/console/account"
)

// OpenKeys loads (creating on first start) the console key in stateDir/console/console.key:
// it seals TOTP secrets and, through a derived key, keys the user pseudonyms of the facts
// index. The facts key is returned separately so that the collector's indexer and the admin
// API's reports use the same one whether or not the console listens.
func OpenKeys(stateDir string) (*account.Sealer, []byte, error) {
	path := filepath.Join(stateDir, "console", "console.key")
	sealer, err := account.OpenSealer(path)
	if err != nil {
		return nil, nil, fmt.Errorf("console: %w", err)
	}
	raw, err := account.ReadKey(path)
	if err != nil {
		return nil, nil, fmt.Errorf("console: %w", err)
	}
	m := hmac.New(sha256.New, raw)
	m.Write([]byte("ward-console-facts-key-v1"))
	return sealer, m.Sum(nil), nil
}
