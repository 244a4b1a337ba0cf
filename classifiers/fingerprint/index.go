package fingerprint

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

// Index file format, version 1 (all integers little-endian):
//
//	magic "WARDFPIX" | u32 version | u32 k | u32 w | [32]byte key check
//	u32 document count, then per document: [16]byte id | u32 n | n × u64 sorted values
//	[32]byte SHA-256 of everything before it
//
// Nothing in it is text: ids and values are keyed, so the file can be copied to every
// agent without exposing the documents it describes.
const (
	indexMagic   = "WARDFPIX"
	indexVersion = 1
	// maxDocFingerprints bounds one document's set (a 64 MiB text has about 5M).
	maxDocFingerprints = 1 << 23
	maxDocs            = 1 << 20
)

// Doc is one indexed document.
type Doc struct {
	// ID is the keyed content id (Hasher.DocID).
	ID [16]byte
	// Values are the distinct fingerprint values, sorted.
	Values []uint64
}

// Index is a set of fingerprinted Part 2 documents. Add is not safe for concurrent use;
// Match is, once building is done.
type Index struct {
	h        *Hasher
	docs     []Doc
	postings map[uint64][]uint32
}

// NewIndex returns an empty index keyed by key.
func NewIndex(key []byte, p Params) (*Index, error) {
	h, err := NewHasher(key, p)
	if err != nil {
		return nil, err
	}
	return &Index{h: h, postings: map[uint64][]uint32{}}, nil
}

// Hasher returns the index's hasher (content must be hashed with the same key and params).
func (x *Index) Hasher() *Hasher { return x.h }

// Len is the number of documents.
func (x *Index) Len() int { return len(x.docs) }

// Docs returns the documents (shared; do not modify).
func (x *Index) Docs() []Doc { return x.docs }

// Add fingerprints content and adds it; added is false when the same content is already
// indexed. Documents with fewer than MinFingerprints fingerprints are refused.
func (x *Index) Add(content []byte) (id [16]byte, n int, added bool, err error) {
	id = x.h.DocID(content)
	for _, d := range x.docs {
		if d.ID == id {
			return id, len(d.Values), false, nil
		}
	}
	vals := x.h.Set(content)
	if len(vals) < MinFingerprints {
		return id, len(vals), false, ErrTooShort
	}
	if err := x.insert(Doc{ID: id, Values: vals}); err != nil {
		return id, 0, false, err
	}
	return id, len(vals), true, nil
}

func (x *Index) insert(d Doc) error {
	if len(x.docs) >= maxDocs {
		return fmt.Errorf("fingerprint: index holds %d documents, the maximum", maxDocs)
	}
	if len(d.Values) > maxDocFingerprints {
		return fmt.Errorf("fingerprint: document has %d fingerprints, more than %d", len(d.Values), maxDocFingerprints)
	}
	di := uint32(len(x.docs))
	x.docs = append(x.docs, d)
	for _, v := range d.Values {
		x.postings[v] = append(x.postings[v], di)
	}
	return nil
}

// Overlap is how much of one indexed document some content shares.
type Overlap struct {
	Doc    int     // index into Docs
	Shared int     // fingerprints of the document found in the content
	Frac   float64 // Shared / len(document fingerprints)
	First  int     // normalised position of the first shared fingerprint in the content
}

// Match returns the documents of which content's fingerprints cover at least minFrac,
// best first. prints are content's winnowed fingerprints (Hasher.Winnow).
func (x *Index) Match(prints []Print, minFrac float64) []Overlap {
	if len(x.docs) == 0 || len(prints) == 0 {
		return nil
	}
	shared := map[uint32]int{}
	first := map[uint32]int{}
	seen := make(map[uint64]struct{}, len(prints))
	for _, p := range prints {
		if _, dup := seen[p.Value]; dup {
			continue
		}
		seen[p.Value] = struct{}{}
		for _, d := range x.postings[p.Value] {
			if shared[d] == 0 {
				first[d] = p.Pos
			}
			shared[d]++
		}
	}
	var out []Overlap
	for d, n := range shared {
		f := float64(n) / float64(len(x.docs[d].Values))
		if f >= minFrac && n >= MinFingerprints/2 {
			out = append(out, Overlap{Doc: int(d), Shared: n, Frac: f, First: first[d]})
		}
	}
	slices.SortFunc(out, func(a, b Overlap) int {
		if a.Frac != b.Frac {
			if a.Frac > b.Frac {
				return -1
			}
			return 1
		}
		return a.Doc - b.Doc
	})
	return out
}

// WriteTo writes the index in the versioned file format.
func (x *Index) WriteTo(w io.Writer) (int64, error) {
	var buf bytes.Buffer
	buf.WriteString(indexMagic)
	put := func(v uint32) { binary.Write(&buf, binary.LittleEndian, v) }
	put(indexVersion)
	put(uint32(x.h.p.K))
	put(uint32(x.h.p.W))
	buf.Write(x.h.check[:])
	put(uint32(len(x.docs)))
	for _, d := range x.docs {
		buf.Write(d.ID[:])
		put(uint32(len(d.Values)))
		for _, v := range d.Values {
			binary.Write(&buf, binary.LittleEndian, v)
		}
	}
	sum := sha256.Sum256(buf.Bytes())
	buf.Write(sum[:])
	n, err := w.Write(buf.Bytes())
	if err != nil {
		return int64(n), fmt.Errorf("fingerprint: writing index: %w", err)
	}
	return int64(n), nil
}

// ErrWrongKey is returned by Load when the index was built with another key.
var ErrWrongKey = errors.New("fingerprint: index was built with a different key")

// Load reads an index file written by WriteTo, verifying its checksum and that key is the
// one it was built with.
func Load(r io.Reader, key []byte) (*Index, error) {
	raw, err := io.ReadAll(io.LimitReader(r, 1<<31))
	if err != nil {
		return nil, fmt.Errorf("fingerprint: reading index: %w", err)
	}
	if len(raw) < len(indexMagic)+12+32+4+32 || string(raw[:8]) != indexMagic {
		return nil, errors.New("fingerprint: not a Ward fingerprint index")
	}
	body, sum := raw[:len(raw)-32], raw[len(raw)-32:]
	if want := sha256.Sum256(body); !hmac.Equal(want[:], sum) {
		return nil, errors.New("fingerprint: index checksum mismatch (truncated or corrupted)")
	}
	br := bufio.NewReader(bytes.NewReader(body[8:]))
	var hdr struct{ Version, K, W uint32 }
	if err := binary.Read(br, binary.LittleEndian, &hdr); err != nil {
		return nil, fmt.Errorf("fingerprint: index header: %w", err)
	}
	if hdr.Version != indexVersion {
		return nil, fmt.Errorf("fingerprint: index version %d, this build reads %d", hdr.Version, indexVersion)
	}
	x, err := NewIndex(key, Params{K: int(hdr.K), W: int(hdr.W)})
	if err != nil {
		return nil, err
	}
	var check [32]byte
	if _, err := io.ReadFull(br, check[:]); err != nil {
		return nil, fmt.Errorf("fingerprint: index header: %w", err)
	}
	if !hmac.Equal(check[:], x.h.check[:]) {
		return nil, ErrWrongKey
	}
	var nd uint32
	if err := binary.Read(br, binary.LittleEndian, &nd); err != nil || nd > maxDocs {
		return nil, fmt.Errorf("fingerprint: index document count: %d %v", nd, err)
	}
	for i := range int(nd) {
		var d Doc
		var n uint32
		if _, err := io.ReadFull(br, d.ID[:]); err != nil {
			return nil, fmt.Errorf("fingerprint: document %d: %w", i, err)
		}
		if err := binary.Read(br, binary.LittleEndian, &n); err != nil || n > maxDocFingerprints || int(n)*8 > len(body) {
			return nil, fmt.Errorf("fingerprint: document %d: bad fingerprint count %d", i, n)
		}
		d.Values = make([]uint64, n)
		if err := binary.Read(br, binary.LittleEndian, d.Values); err != nil {
			return nil, fmt.Errorf("fingerprint: document %d: %w", i, err)
		}
		if !slices.IsSorted(d.Values) {
			return nil, fmt.Errorf("fingerprint: document %d: values not sorted", i)
		}
		if err := x.insert(d); err != nil {
			return nil, err
		}
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return nil, errors.New("fingerprint: trailing bytes after the last document")
	}
	return x, nil
}

func sortDedup(v []uint64) []uint64 {
	slices.Sort(v)
	return slices.Compact(v)
}
