// Package edm is Exact Data Match: an organisation's Part 2 patient index (MRN, SSN,
// surname+date of birth) turned into a salted, keyed hash set on the admin's machine, and
// the detector that matches normalised tokens in content against it. The index file holds
// no plaintext: only truncated HMAC-SHA256(key, salt|kind|value) values, so it can be
// pushed to every agent, and without the key it cannot even be brute-forced over the small
// SSN space.
//
// File format (version 1, all integers big-endian):
//
//	magic    8 bytes  "WARDEDM\n"
//	version  uint32   1
//	hashLen  uint32   16
//	salt     32 bytes random per build
//	keyCheck 16 bytes HMAC-SHA256(key, "ward-edm-keycheck"|salt)[:16]
//	count    uint64   number of entries
//	entries  count × hashLen bytes, sorted ascending, distinct
//	sum      32 bytes SHA-256 of everything before it
//
// An entry is HMAC-SHA256(key, salt | kind | 0x00 | value)[:16] with kind "ssn" (9 digits),
// "mrn" (upper-case letters and digits) or "name-dob" (lower-case surname letters, '|',
// yyyymmdd).
package edm

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

const (
	magic     = "WARDEDM\n"
	version   = 1
	hashLen   = 16
	saltLen   = 32
	headerLen = 8 + 4 + 4 + saltLen + 16 + 8
	// MaxEntries bounds an index (a clinic roster is thousands to millions of rows).
	MaxEntries = 1 << 28
	// MinKeyLen is the shortest accepted EDM key (128 bits).
	MinKeyLen = 16
)

// Kind is what an entry was made from.
type Kind string

// Kinds of entries.
const (
	KindSSN     Kind = "ssn"
	KindMRN     Kind = "mrn"
	KindNameDOB Kind = "name-dob"
)

// Index is a loaded EDM hash set. It is immutable and safe for concurrent use.
type Index struct {
	key     []byte
	salt    [saltLen]byte
	entries []byte // count × hashLen, sorted
}

// Len returns the number of entries.
func (x *Index) Len() int { return len(x.entries) / hashLen }

// hash computes an entry for kind and a normalised value.
func hash(key, salt []byte, kind Kind, value []byte) [hashLen]byte {
	m := hmac.New(sha256.New, key)
	m.Write(salt)
	m.Write([]byte(kind))
	m.Write([]byte{0})
	m.Write(value)
	var out [hashLen]byte
	copy(out[:], m.Sum(nil))
	return out
}

func keyCheck(key, salt []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("ward-edm-keycheck"))
	m.Write(salt)
	return m.Sum(nil)[:16]
}

// Contains reports whether the normalised value of kind is in the index.
func (x *Index) Contains(kind Kind, value []byte) bool {
	h := hash(x.key, x.salt[:], kind, value)
	n := x.Len()
	lo, hi := 0, n
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if bytes.Compare(x.entries[mid*hashLen:mid*hashLen+hashLen], h[:]) < 0 {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo < n && bytes.Equal(x.entries[lo*hashLen:lo*hashLen+hashLen], h[:])
}

// Builder accumulates normalised values and writes an index file.
type Builder struct {
	key     []byte
	salt    [saltLen]byte
	entries [][hashLen]byte
}

// NewBuilder starts an index keyed with key and a fresh random salt.
func NewBuilder(key []byte) (*Builder, error) {
	if len(key) < MinKeyLen {
		return nil, fmt.Errorf("edm: key is %d bytes, need at least %d", len(key), MinKeyLen)
	}
	b := &Builder{key: slices.Clone(key)}
	if _, err := rand.Read(b.salt[:]); err != nil {
		return nil, fmt.Errorf("edm: salt: %w", err)
	}
	return b, nil
}

// Add hashes one normalised value; callers normalise with NormSSN, NormMRN, NormNameDOB.
func (b *Builder) Add(kind Kind, value []byte) error {
	if len(b.entries) >= MaxEntries {
		return fmt.Errorf("edm: more than %d entries", MaxEntries)
	}
	b.entries = append(b.entries, hash(b.key, b.salt[:], kind, value))
	return nil
}

// Len is the number of values added (before deduplication).
func (b *Builder) Len() int { return len(b.entries) }

// WriteTo writes the index file.
func (b *Builder) WriteTo(w io.Writer) (int64, error) {
	slices.SortFunc(b.entries, func(x, y [hashLen]byte) int { return bytes.Compare(x[:], y[:]) })
	b.entries = slices.Compact(b.entries)
	var buf bytes.Buffer
	buf.WriteString(magic)
	binary.Write(&buf, binary.BigEndian, uint32(version))
	binary.Write(&buf, binary.BigEndian, uint32(hashLen))
	buf.Write(b.salt[:])
	buf.Write(keyCheck(b.key, b.salt[:]))
	binary.Write(&buf, binary.BigEndian, uint64(len(b.entries)))
	for _, e := range b.entries {
		buf.Write(e[:])
	}
	sum := sha256.Sum256(buf.Bytes())
	buf.Write(sum[:])
	n, err := w.Write(buf.Bytes())
	if err != nil {
		return int64(n), fmt.Errorf("edm: writing index: %w", err)
	}
	return int64(n), nil
}

// ErrWrongKey means the index was built with another key: every lookup would miss.
var ErrWrongKey = errors.New("edm: index was built with a different key")

// Load reads and verifies an index file built with key.
func Load(r io.Reader, key []byte) (*Index, error) {
	if len(key) < MinKeyLen {
		return nil, fmt.Errorf("edm: key is %d bytes, need at least %d", len(key), MinKeyLen)
	}
	data, err := io.ReadAll(io.LimitReader(r, headerLen+MaxEntries*hashLen+32+1))
	if err != nil {
		return nil, fmt.Errorf("edm: reading index: %w", err)
	}
	if len(data) < headerLen+32 || string(data[:8]) != magic {
		return nil, errors.New("edm: not a Ward EDM index (bad magic or too short)")
	}
	if v := binary.BigEndian.Uint32(data[8:]); v != version {
		return nil, fmt.Errorf("edm: index version %d, this build reads %d", v, version)
	}
	if hl := binary.BigEndian.Uint32(data[12:]); hl != hashLen {
		return nil, fmt.Errorf("edm: hash length %d, want %d", hl, hashLen)
	}
	body, sum := data[:len(data)-32], data[len(data)-32:]
	if s := sha256.Sum256(body); !bytes.Equal(s[:], sum) {
		return nil, errors.New("edm: index checksum mismatch (truncated or corrupted)")
	}
	x := &Index{key: slices.Clone(key)}
	copy(x.salt[:], data[16:16+saltLen])
	if !hmac.Equal(keyCheck(key, x.salt[:]), data[16+saltLen:16+saltLen+16]) {
		return nil, ErrWrongKey
	}
	count := binary.BigEndian.Uint64(data[16+saltLen+16:])
	if count > MaxEntries || uint64(len(body)-headerLen) != count*hashLen {
		return nil, fmt.Errorf("edm: index claims %d entries but holds %d bytes", count, len(body)-headerLen)
	}
	x.entries = body[headerLen:]
	for i := 1; i < int(count); i++ {
		if bytes.Compare(x.entries[(i-1)*hashLen:i*hashLen], x.entries[i*hashLen:(i+1)*hashLen]) >= 0 {
			return nil, errors.New("edm: index entries are not sorted")
		}
	}
	return x, nil
}
