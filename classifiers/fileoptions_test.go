package classifiers

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ward-dlp/ward/classifiers/edm"
	"github.com/ward-dlp/ward/classifiers/engine"
)

// TestFileOptionsLoadEDM: an agent configured with an EDM index and its key file finds a
// known patient's SSN in content that carries no label at all.
func TestFileOptionsLoadEDM(t *testing.T) {
	dir := t.TempDir()
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i * 7)
	}
	keyFile := filepath.Join(dir, "edm.key")
	if err := os.WriteFile(keyFile, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := edm.NewBuilder(key)
	if err != nil {
		t.Fatal(err)
	}
	ssn, ok := edm.NormSSN("431-58-2267")
	if !ok {
		t.Fatal("fixture SSN rejected")
	}
	if err := b.Add(edm.KindSSN, ssn); err != nil {
		t.Fatal(err)
	}
	idx := filepath.Join(dir, "patients.edm")
	f, err := os.Create(idx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	f.Close()

	opts, err := FileOptions{EDMIndex: idx, EDMKeyFile: keyFile}.Load()
	if err != nil {
		t.Fatal(err)
	}
	eng, err := New(engine.Config{FingerprintKey: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	var part2 bool
	for _, m := range eng.Classify([]byte("Referral note. SSN 431-58-2267. Follow up in two weeks.")) {
		if strings.HasPrefix(m.Detector, "edm.") && m.Class == engine.Part2 {
			part2 = true
		}
	}
	if !part2 {
		t.Fatal("a known Part 2 patient's SSN was not matched through the configured index")
	}

	// A wrong key is refused, not silently matched against nothing.
	if err := os.WriteFile(keyFile, []byte(strings.Repeat("ab", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := (FileOptions{EDMIndex: idx, EDMKeyFile: keyFile}).Load(); err == nil {
		t.Fatal("index loaded with the wrong key")
	}
	if _, err := (FileOptions{Definitions: filepath.Join(dir, "missing.yaml")}).Load(); err == nil {
		t.Fatal("missing definitions file accepted")
	}
}
