package audit

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/ward-dlp/ward/collector/store"
)

// Checkpoint is a verified tree head.
type Checkpoint struct {
	// Origin names the log (the signing key's name).
	Origin string
	Size   int64
	Root   tlog.Hash
	// Note is the signed note it was read from.
	Note []byte
}

// FormatCheckpoint is the C2SP tlog-checkpoint body: origin, decimal size and base64 root
// hash, one per line.
func FormatCheckpoint(origin string, size int64, root tlog.Hash) string {
	return fmt.Sprintf("%s\n%d\n%s\n", origin, size, base64.StdEncoding.EncodeToString(root[:]))
}

// ParseCheckpoint opens a signed checkpoint note with v and parses its body. Extension lines
// after the root hash are allowed and ignored, as the format says.
func ParseCheckpoint(msg []byte, v note.Verifier) (Checkpoint, error) {
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint signature: %w", err)
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 {
		return Checkpoint{}, errors.New("checkpoint: want origin, size and root hash lines")
	}
	c := Checkpoint{Origin: lines[0], Note: msg}
	if c.Origin != v.Name() {
		return Checkpoint{}, fmt.Errorf("checkpoint: origin %q is not the key's name %q", c.Origin, v.Name())
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 || (len(lines[1]) > 1 && lines[1][0] == '0') {
		return Checkpoint{}, fmt.Errorf("checkpoint: size %q", lines[1])
	}
	c.Size = size
	root, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(root) != tlog.HashSize {
		return Checkpoint{}, fmt.Errorf("checkpoint: root hash %q", lines[2])
	}
	copy(c.Root[:], root)
	return c, nil
}

// StoredRecord is a record as read from the collector: its index, bytes and the leaf hash
// the collector stored when appending it (nil if there is none).
type StoredRecord struct {
	Index    int64
	Data     []byte
	LeafHash []byte
}

// Problem is the first inconsistency Verify found.
type Problem struct {
	// Index is the first bad entry when it can be named exactly; -1 otherwise.
	Index int64
	// From and To bound the bad entries when only a range is known (To exclusive).
	From, To int64
	Reason   string
}

func (p *Problem) Error() string {
	switch {
	case p.Index >= 0:
		return fmt.Sprintf("audit log entry %d: %s", p.Index, p.Reason)
	case p.To > p.From:
		return fmt.Sprintf("audit log entries %d..%d: %s", p.From, p.To-1, p.Reason)
	}
	return "audit log: " + p.Reason
}

// Report summarises a verification that passed.
type Report struct {
	Entries     int64
	Checkpoints int
	// Latest is the largest checkpoint checked (stored or external).
	Latest Checkpoint
	// Uncovered counts entries after the latest checkpoint: verified against the stored
	// hashes only, not yet against a signature.
	Uncovered int64
}

// Verifier rebuilds the tree from records fed in index order and checks checkpoints
// against it. It holds every stored hash in memory: 64 bytes per record.
type Verifier struct {
	v      note.Verifier
	hashes []tlog.Hash
	n      int64
	err    *Problem
}

// NewVerifier starts a verification with the log's verifier key.
func NewVerifier(v note.Verifier) *Verifier { return &Verifier{v: v} }

func (vf *Verifier) reader() tlog.HashReader {
	return tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			if x < 0 || x >= int64(len(vf.hashes)) {
				return nil, fmt.Errorf("hash %d not computed", x)
			}
			out[i] = vf.hashes[x]
		}
		return out, nil
	})
}

// Add feeds the next record. It returns the first problem: a gap (deleted entries), a record
// that does not decode, or one whose bytes no longer match the leaf hash stored with it.
func (vf *Verifier) Add(r StoredRecord) error {
	if vf.err != nil {
		return vf.err
	}
	fail := func(p *Problem) error { vf.err = p; return p }
	switch {
	case r.Index > vf.n:
		return fail(&Problem{Index: vf.n, Reason: fmt.Sprintf("missing: the log jumps from entry %d to %d (deleted)", vf.n-1, r.Index)})
	case r.Index < vf.n:
		return fail(&Problem{Index: r.Index, Reason: "appears twice or out of order"})
	}
	if _, err := Decode(r.Data); err != nil {
		return fail(&Problem{Index: r.Index, Reason: fmt.Sprintf("does not decode (%v): altered", err)})
	}
	leaf := tlog.RecordHash(r.Data)
	switch {
	case r.LeafHash == nil:
		return fail(&Problem{Index: r.Index, Reason: "has no stored hash: inserted outside the audit log"})
	case !bytes.Equal(r.LeafHash, leaf[:]):
		return fail(&Problem{Index: r.Index, Reason: "altered: its content no longer matches the hash stored when it was appended"})
	}
	hs, err := tlog.StoredHashesForRecordHash(vf.n, leaf, vf.reader())
	if err != nil {
		return fail(&Problem{Index: r.Index, Reason: "tree: " + err.Error()})
	}
	vf.hashes = append(vf.hashes, hs...)
	vf.n++
	return nil
}

// Finish checks the signed checkpoints the collector stored and any held outside (for
// example the copy the SIEM received), in size order: each signature, each root against the
// recomputed tree, and each against the next with a tlog consistency proof.
func (vf *Verifier) Finish(stored, external [][]byte) (*Report, error) {
	if vf.err != nil {
		return nil, vf.err
	}
	type cp struct {
		Checkpoint
		external bool
	}
	var cps []cp
	for i, msg := range stored {
		c, err := ParseCheckpoint(msg, vf.v)
		if err != nil {
			return nil, &Problem{Index: -1, Reason: fmt.Sprintf("stored checkpoint #%d: %v", i+1, err)}
		}
		cps = append(cps, cp{c, false})
	}
	for i, msg := range external {
		c, err := ParseCheckpoint(msg, vf.v)
		if err != nil {
			return nil, &Problem{Index: -1, Reason: fmt.Sprintf("checkpoint given from outside #%d: %v", i+1, err)}
		}
		cps = append(cps, cp{c, true})
	}
	sort.SliceStable(cps, func(i, j int) bool { return cps[i].Size < cps[j].Size })
	rep := &Report{Entries: vf.n}
	var prev *cp
	for i := range cps {
		c := &cps[i]
		what := "stored checkpoint"
		if c.external {
			what = "checkpoint given from outside"
		}
		if c.Size > vf.n {
			return nil, &Problem{Index: vf.n, Reason: fmt.Sprintf("missing: the %s commits to %d entries but the log holds %d (truncated)", what, c.Size, vf.n)}
		}
		root, err := tlog.TreeHash(c.Size, vf.reader())
		if err != nil {
			return nil, &Problem{Index: -1, Reason: fmt.Sprintf("tree hash at %d: %v", c.Size, err)}
		}
		if root != c.Root {
			from := int64(0)
			if prev != nil {
				from = prev.Size
			}
			return nil, &Problem{Index: -1, From: from, To: c.Size,
				Reason: fmt.Sprintf("rewritten: the entries do not hash to the %s at size %d (root %s, recomputed %s); the stored hashes were changed with them",
					what, c.Size, c.Root, root)}
		}
		if prev != nil && prev.Size > 0 {
			proof, err := tlog.ProveTree(c.Size, prev.Size, vf.reader())
			if err == nil {
				err = tlog.CheckTree(proof, c.Size, c.Root, prev.Size, prev.Root)
			}
			if err != nil {
				return nil, &Problem{Index: -1, From: prev.Size, To: c.Size,
					Reason: fmt.Sprintf("checkpoints at sizes %d and %d are not consistent: %v", prev.Size, c.Size, err)}
			}
		}
		prev = c
		rep.Checkpoints++
		rep.Latest = c.Checkpoint
	}
	rep.Uncovered = vf.n - rep.Latest.Size
	return rep, nil
}

// VerifyStore verifies the log kept in st against its stored checkpoints and external ones,
// reading the records in pages. wardctl does the same over the admin API, so that the check
// does not have to trust the collector's own code.
func VerifyStore(ctx context.Context, st *store.Store, v note.Verifier, external [][]byte) (*Report, error) {
	vf := NewVerifier(v)
	after := int64(-1)
	for {
		recs, err := st.AuditRecords(ctx, after, store.MaxLimit)
		if err != nil {
			return nil, err
		}
		for _, r := range recs {
			if err := vf.Add(StoredRecord{Index: r.Index, Data: r.Data, LeafHash: r.LeafHash}); err != nil {
				return nil, err
			}
			after = r.Index
		}
		if len(recs) < store.MaxLimit {
			break
		}
	}
	cps, err := st.AuditCheckpoints(ctx)
	if err != nil {
		return nil, err
	}
	stored := make([][]byte, len(cps))
	for i, c := range cps {
		stored[i] = c.Note
	}
	return vf.Finish(stored, external)
}
