package store

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"
)

// Evidence encryption at rest.
//
// What is encrypted: the whole stored Event (the payload column), because every payload kind
// can carry evidence: a finding's masked samples, keyed fingerprints, offsets and file path, a
// file event's path, a process's command line. The columns the admin API and the outbox
// filter on (kind, agent, time, severity, data class, host) stay in clear; the path, exe and
// user columns are left empty for encrypted rows, so the file name of a patient's record is
// not readable from the database file either.
//
// How: AES-256-GCM. Each InsertEvents batch derives a fresh subkey from the ring's current
// key and 16 random bytes (HMAC-SHA256 as the KDF), and numbers the rows of the batch as GCM
// nonces. Random 96-bit nonces under one long-lived key would limit a key to about 2^32 rows
// (a day at 50k events/s); per-batch subkeys lift that bound to the salt's 128 bits. The
// additional data binds the ciphertext to its row (agent_id, seq) and key id, so rows cannot
// be swapped or replayed under another identity without failing authentication.
//
// Keys rotate by adding: the ring holds every key that may have written rows; the last one
// writes. Each row stores the id of the key that wrote it (events.key_id, "" for rows
// written in clear before encryption was enabled), and the key ids in use are recorded in
// evidence_keys so a collector started without one of them refuses to run instead of
// failing row by row.

// EvidenceKeyEnv names the environment variable that can hold the key ring instead of a
// key file: one or more base64 keys separated by commas, the last one current.
const EvidenceKeyEnv = "WARD_COLLECTOR_EVIDENCE_KEY"

// ErrEvidenceKey reports a row that cannot be decrypted with the configured keys.
var ErrEvidenceKey = errors.New("evidence cannot be decrypted")

const (
	evidenceVersion = 1
	evidenceSalt    = 16
	evidenceNonce   = 12
	evidenceHeader  = 1 + evidenceSalt + evidenceNonce
)

// EvidenceKeys is a ring of AES-256 keys. The zero value and nil hold no keys.
type EvidenceKeys struct {
	keys    map[string][]byte
	current string
}

// ParseEvidenceKeys reads a key ring: base64-encoded 32-byte keys separated by newlines or
// commas; blank lines and lines starting with # are ignored. The last key is the one new rows
// are written with.
func ParseEvidenceKeys(text string) (*EvidenceKeys, error) {
	k := &EvidenceKeys{keys: map[string][]byte{}}
	n := 0
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		for _, field := range strings.Split(line, ",") {
			field = strings.TrimSpace(field)
			if field == "" {
				continue
			}
			n++
			key, err := base64.StdEncoding.DecodeString(field)
			if err != nil {
				return nil, fmt.Errorf("evidence key %d: not base64 (generate one with: head -c 32 /dev/urandom | base64)", n)
			}
			if len(key) != 32 {
				return nil, fmt.Errorf("evidence key %d: %d bytes, want 32 for AES-256", n, len(key))
			}
			id := evidenceKeyID(key)
			k.keys[id] = key
			k.current = id
		}
	}
	if n == 0 {
		return nil, errors.New("no evidence key found")
	}
	return k, nil
}

// LoadEvidenceKeys reads a key ring file. The file must be a regular file readable by its
// owner only (mode 0600 or 0400): a key readable by others protects nothing.
func LoadEvidenceKeys(path string) (*EvidenceKeys, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("evidence key file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("evidence key file %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("evidence key file %s: not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("evidence key file %s: mode %04o lets others read the key; chmod 600 it", path, perm)
	}
	b := make([]byte, 64<<10)
	n, err := f.Read(b)
	if err != nil {
		return nil, fmt.Errorf("evidence key file %s: %w", path, err)
	}
	k, err := ParseEvidenceKeys(string(b[:n]))
	if err != nil {
		return nil, fmt.Errorf("evidence key file %s: %w", path, err)
	}
	return k, nil
}

// evidenceKeyID names a key by a truncated hash of it, so rows need no operator-chosen
// names and a wrong key is recognised as "not the key that wrote this" before any decryption.
func evidenceKeyID(key []byte) string {
	h := sha256.New()
	h.Write([]byte("ward evidence key id\x00"))
	h.Write(key)
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// CurrentID is the id of the key new rows are written with ("" for a nil ring).
func (k *EvidenceKeys) CurrentID() string {
	if k == nil {
		return ""
	}
	return k.current
}

// IDs lists the ring's key ids, sorted.
func (k *EvidenceKeys) IDs() []string {
	if k == nil {
		return nil
	}
	ids := make([]string, 0, len(k.keys))
	for id := range k.keys {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// sealer encrypts the rows of one batch under one derived subkey.
type sealer struct {
	keyID string
	salt  [evidenceSalt]byte
	aead  cipher.AEAD
	n     uint64
}

func (k *EvidenceKeys) newSealer() (*sealer, error) {
	s := &sealer{keyID: k.current}
	if _, err := rand.Read(s.salt[:]); err != nil {
		return nil, fmt.Errorf("evidence salt: %w", err)
	}
	aead, err := subkeyAEAD(k.keys[k.current], s.salt[:])
	if err != nil {
		return nil, err
	}
	s.aead = aead
	return s, nil
}

func subkeyAEAD(master, salt []byte) (cipher.AEAD, error) {
	m := hmac.New(sha256.New, master)
	m.Write([]byte("ward evidence subkey v1\x00"))
	m.Write(salt)
	block, err := aes.NewCipher(m.Sum(nil))
	if err != nil {
		return nil, fmt.Errorf("evidence cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("evidence cipher: %w", err)
	}
	return aead, nil
}

func evidenceAAD(keyID, agentID string, seq int64) []byte {
	aad := make([]byte, 0, 48+len(agentID))
	aad = append(aad, "ward.v1.Event\x00"...)
	aad = append(aad, keyID...)
	aad = append(aad, 0)
	aad = append(aad, agentID...)
	aad = append(aad, 0)
	return binary.BigEndian.AppendUint64(aad, uint64(seq))
}

// seal encrypts one row's payload: version ‖ salt ‖ nonce ‖ ciphertext ‖ tag.
func (s *sealer) seal(agentID string, seq int64, plaintext []byte) []byte {
	s.n++
	out := make([]byte, evidenceHeader, evidenceHeader+len(plaintext)+s.aead.Overhead())
	out[0] = evidenceVersion
	copy(out[1:], s.salt[:])
	binary.BigEndian.PutUint64(out[1+evidenceSalt+4:], s.n) // nonce: 4 zero bytes ‖ row counter
	nonce := out[1+evidenceSalt : evidenceHeader]
	return s.aead.Seal(out, nonce, plaintext, evidenceAAD(s.keyID, agentID, seq))
}

// opener decrypts rows, reusing the subkey while consecutive rows share a batch salt.
type opener struct {
	keys *EvidenceKeys
	id   string
	salt []byte
	aead cipher.AEAD
}

func (o *opener) open(keyID, agentID string, seq int64, blob []byte) ([]byte, error) {
	master, ok := o.keys.lookup(keyID)
	if !ok {
		if o.keys == nil || len(o.keys.keys) == 0 {
			return nil, fmt.Errorf("%w: the row was written with evidence key %s and no evidence key is configured (evidence_encryption)", ErrEvidenceKey, keyID)
		}
		return nil, fmt.Errorf("%w: the row was written with evidence key %s, which is not in the configured ring %v (rotate by adding keys, never by replacing them)",
			ErrEvidenceKey, keyID, o.keys.IDs())
	}
	if len(blob) < evidenceHeader || blob[0] != evidenceVersion {
		return nil, fmt.Errorf("%w: not an evidence envelope this build reads", ErrEvidenceKey)
	}
	salt := blob[1 : 1+evidenceSalt]
	if o.aead == nil || o.id != keyID || !bytes.Equal(o.salt, salt) {
		aead, err := subkeyAEAD(master, salt)
		if err != nil {
			return nil, err
		}
		o.id, o.salt, o.aead = keyID, slices.Clone(salt), aead
	}
	pt, err := o.aead.Open(nil, blob[1+evidenceSalt:evidenceHeader], blob[evidenceHeader:], evidenceAAD(keyID, agentID, seq))
	if err != nil {
		return nil, fmt.Errorf("%w: key %s does not authenticate the row (wrong key material or a tampered row)", ErrEvidenceKey, keyID)
	}
	return pt, nil
}

func (k *EvidenceKeys) lookup(id string) ([]byte, bool) {
	if k == nil {
		return nil, false
	}
	key, ok := k.keys[id]
	return key, ok
}

// SetEvidenceKeys makes the store encrypt new events with ring's current key and decrypt
// rows written with any key of the ring; nil stores new events in clear. It refuses a ring
// that lacks a key some stored rows were written with, naming the missing ids. Call it
// before the store is used for events.
func (s *Store) SetEvidenceKeys(ctx context.Context, ring *EvidenceKeys) error {
	used, err := s.EvidenceKeyIDs(ctx)
	if err != nil {
		return err
	}
	var missing []string
	for _, id := range used {
		if _, ok := ring.lookup(id); !ok {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		if ring == nil {
			return fmt.Errorf("store: events are stored encrypted with evidence key(s) %s but no evidence key is configured; set evidence_encryption.key_file or %s",
				strings.Join(missing, ", "), EvidenceKeyEnv)
		}
		return fmt.Errorf("store: events are stored encrypted with evidence key(s) %s, which the configured ring %v lacks; keep old keys in the ring after rotating",
			strings.Join(missing, ", "), ring.IDs())
	}
	if ring != nil && ring.current != "" && !slices.Contains(used, ring.current) {
		err := s.write(ctx, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO evidence_keys(id, first_used_at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING`,
				ring.current, time.Now().UnixNano())
			return err
		})
		if err != nil {
			return fmt.Errorf("store: record evidence key: %w", err)
		}
	}
	s.evidence.Store(ring)
	return nil
}

// EvidenceKeyIDs lists the ids of the keys rows have been written with.
func (s *Store) EvidenceKeyIDs(ctx context.Context) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id FROM evidence_keys ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("store: evidence keys: %w", err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("store: evidence keys: %w", err)
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// openStored turns a row as read into a StoredEvent with its plaintext payload; a row that
// cannot be decrypted keeps the error for Event() to return, so one bad row does not hide
// the others from a listing.
func (o *opener) openStored(e *StoredEvent, keyID string, seq int64) {
	if keyID == "" {
		return
	}
	pt, err := o.open(keyID, e.AgentID, seq, e.Payload)
	if err != nil {
		e.Payload = nil
		e.decodeErr = fmt.Errorf("store: event rowid %d: %w", e.RowID, err)
		return
	}
	e.Payload = pt
	e.Encrypted = true
	// The columns left empty on disk are filled from the decrypted event, so callers see
	// the same StoredEvent whether or not encryption is on.
	ev, err := e.decode()
	if err != nil {
		e.decodeErr = err
		return
	}
	d := deriveColumns(ev)
	e.Path, e.Exe, e.User = d.Path, d.Exe, d.User
	e.decoded = ev
}

// sealedRow is what InsertEvents writes for one record: the payload (encrypted or not) and
// the columns that are kept only for clear rows.
type sealedRow struct {
	path, exe, user, keyID string
	payload                []byte
}

// sealRecords prepares recs for writing under the current evidence key, and reports the
// receipt time of the batch's Health events (nil without any) for agents.last_health_at.
func (s *Store) sealRecords(recs []Record, now time.Time) ([]sealedRow, any, error) {
	out := make([]sealedRow, len(recs))
	var lastHealth any
	var sl *sealer
	if ring := s.evidence.Load(); ring != nil && ring.current != "" {
		var err error
		if sl, err = ring.newSealer(); err != nil {
			return nil, nil, err
		}
	}
	for i, r := range recs {
		if r.Kind == KindHealth {
			lastHealth = now.UnixNano()
		}
		if sl == nil {
			out[i] = sealedRow{path: r.Path, exe: r.Exe, user: r.User, payload: r.Payload}
			continue
		}
		out[i] = sealedRow{keyID: sl.keyID, payload: sl.seal(r.AgentID, int64(r.Seq), r.Payload)}
	}
	return out, lastHealth, nil
}

// opener returns a decryptor for one read with the current key ring.
func (s *Store) opener() *opener { return &opener{keys: s.evidence.Load()} }
