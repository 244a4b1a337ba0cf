// Package audit is the collector's tamper-evident audit log: every administrative action
// (enrolment tokens, agent revocation, policy publication, sink replays, and later user and
// role changes) and every view of an event's evidence is appended as a record to a Merkle
// tree (RFC 6962 hashing via golang.org/x/mod/sumdb/tlog) kept in the collector's store.
//
// Tamper evidence comes from signed checkpoints: the tree head (size and root hash) in the
// C2SP tlog-checkpoint format, signed as a golang.org/x/mod/sumdb/note with an ed25519 key
// the collector generates on first start. Checkpoints are made after every CheckpointEvery
// records and every CheckpointInterval, stored, and queued for every SIEM sink, so the SIEM
// holds copies the collector's host cannot rewrite. Verify recomputes the tree from the
// records and checks it against every checkpoint (and against checkpoints kept elsewhere):
// a record changed, deleted or inserted in the database is found and named.
//
// Records never hold evidence, matched values or tokens: actions name what was touched
// (an agent id, a policy version, a filter), not what it contained.
package audit

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/note"

	"github.com/ward-dlp/ward/collector/store"
)

// Actions recorded by the collector. Callers may record others (the console's user and role
// changes): an action is a short dotted name.
const (
	ActionCollectorStart    = "collector.start"
	ActionTokenCreate       = "enrollment_token.create"
	ActionAgentRevoke       = "agent.revoke"
	ActionPolicyPublish     = "policy.publish"
	ActionEDMUpload         = "edm.upload"
	ActionSinkReplay        = "sink.replay"
	ActionEvidenceRewrap    = "evidence.rewrap"
	ActionEventsRead        = "events.read"
	ActionEvidenceView      = "evidence.view"
	ActionUserChange        = "user.change"
	ActionRoleChange        = "role.change"
	ActionAdminAccessDenied = "admin_api.denied"
)

// Outcomes.
const (
	OutcomeSuccess = "success"
	OutcomeFailure = "failure"
	OutcomeDenied  = "denied"
)

// Actor types.
const (
	// ActorUnix is a local peer of the admin socket, identified by SO_PEERCRED.
	ActorUnix = "unix"
	// ActorConsole is a signed-in console user.
	ActorConsole = "console"
	// ActorSystem is the collector itself.
	ActorSystem = "system"
)

// Actor is who did something.
type Actor struct {
	// Type is ActorUnix, ActorConsole or ActorSystem.
	Type string `json:"type"`
	// ID is the unix uid, the console user id, or the component name for ActorSystem.
	ID string `json:"id"`
	// Name is the user name when known (the uid's passwd entry, the console login).
	Name string `json:"name,omitempty"`
	// PID is the peer process for ActorUnix.
	PID int32 `json:"pid,omitempty"`
}

// String is a compact form for tables: "unix:0(root)".
func (a Actor) String() string {
	s := a.Type + ":" + a.ID
	if a.Name != "" {
		s += "(" + a.Name + ")"
	}
	return s
}

// Entry is one audited action. Details name parameters and results (ids, counts, versions,
// filters), never evidence, matched values, secrets or tokens.
type Entry struct {
	// Time is when the action happened; zero means now.
	Time    time.Time         `json:"time"`
	Actor   Actor             `json:"actor"`
	Action  string            `json:"action"`
	Object  string            `json:"object,omitempty"`
	Outcome string            `json:"outcome"`
	Details map[string]string `json:"details,omitempty"`
}

// Recorder appends entries to the audit log. The console and the admin API hold a Recorder;
// *Log implements it.
type Recorder interface {
	Record(ctx context.Context, e Entry) error
}

// Limits on an entry, so a record stays a line in a table rather than a payload.
const (
	maxDetails     = 32
	maxFieldBytes  = 512
	maxActionBytes = 64
	recordVersion  = 1
)

// record is the canonical form hashed into the tree: fixed field order, UTC RFC 3339 time,
// map keys sorted by encoding/json.
type record struct {
	V int `json:"v"`
	Entry
}

// Validate checks e for recording.
func (e Entry) Validate() error {
	switch {
	case e.Action == "" || len(e.Action) > maxActionBytes || strings.ContainsAny(e.Action, " \t\r\n"):
		return fmt.Errorf("audit: action %q: want a short dotted name", e.Action)
	case e.Actor.Type != ActorUnix && e.Actor.Type != ActorConsole && e.Actor.Type != ActorSystem:
		return fmt.Errorf("audit: actor type %q: want unix, console or system", e.Actor.Type)
	case e.Actor.ID == "":
		return errors.New("audit: actor id is required")
	case e.Outcome != OutcomeSuccess && e.Outcome != OutcomeFailure && e.Outcome != OutcomeDenied:
		return fmt.Errorf("audit: outcome %q: want success, failure or denied", e.Outcome)
	case len(e.Details) > maxDetails:
		return fmt.Errorf("audit: %d details (max %d)", len(e.Details), maxDetails)
	}
	return nil
}

// Encode returns the canonical record bytes for e (time normalised to UTC, strings bounded
// and made valid UTF-8).
func Encode(e Entry) ([]byte, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	e.Time = e.Time.UTC()
	e.Object = bound(e.Object)
	e.Actor.Name = bound(e.Actor.Name)
	e.Actor.ID = bound(e.Actor.ID)
	if len(e.Details) > 0 {
		d := make(map[string]string, len(e.Details))
		for k, v := range e.Details {
			d[bound(k)] = bound(v)
		}
		e.Details = d
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(record{V: recordVersion, Entry: e}); err != nil {
		return nil, fmt.Errorf("audit: encode: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// Decode parses a stored record strictly: unknown fields or a different version are errors,
// since a record that does not decode cannot be shown truthfully.
func Decode(data []byte) (Entry, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var r record
	if err := dec.Decode(&r); err != nil {
		return Entry{}, fmt.Errorf("audit: decode record: %w", err)
	}
	if r.V != recordVersion {
		return Entry{}, fmt.Errorf("audit: record version %d (want %d)", r.V, recordVersion)
	}
	return r.Entry, nil
}

func bound(s string) string {
	s = strings.ToValidUTF8(s, "?")
	if len(s) <= maxFieldBytes {
		return s
	}
	cut := maxFieldBytes
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// Options configure a Log.
type Options struct {
	// KeyFile is the note signing key; created 0600 on first start. The verifier key is
	// written beside it with the suffix ".pub".
	KeyFile string
	// KeyName names a new key (and is the checkpoints' origin line); default
	// "ward-audit/<hostname>".
	KeyName string
	// CheckpointEvery makes a checkpoint once this many records were appended since the
	// last one; default 100.
	CheckpointEvery int64
	// CheckpointInterval makes a checkpoint this often when records were appended since the
	// last one; default 5 minutes.
	CheckpointInterval time.Duration
	Log                *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Log is the collector's audit log. It is safe for concurrent use.
type Log struct {
	st       *store.Store
	signer   note.Signer
	vkey     string
	verifier note.Verifier
	every    int64
	interval time.Duration
	log      *slog.Logger
	now      func() time.Time

	// mu orders checkpoints; records append in the store's write order.
	mu      sync.Mutex
	pending chan struct{} // a checkpoint is due (buffered, 1)
}

// Open loads (or creates) the signing key and returns the log over st.
func Open(st *store.Store, o Options) (*Log, error) {
	if o.KeyFile == "" {
		return nil, errors.New("audit: a key file must be named")
	}
	if o.CheckpointEvery <= 0 {
		o.CheckpointEvery = 100
	}
	if o.CheckpointInterval <= 0 {
		o.CheckpointInterval = 5 * time.Minute
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	skey, vkey, err := loadOrCreateKey(o.KeyFile, o.KeyName, o.Log)
	if err != nil {
		return nil, err
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		return nil, fmt.Errorf("audit: key %s: %w", o.KeyFile, err)
	}
	verifier, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, fmt.Errorf("audit: verifier key %s.pub: %w", o.KeyFile, err)
	}
	if verifier.Name() != signer.Name() || verifier.KeyHash() != signer.KeyHash() {
		return nil, fmt.Errorf("audit: %s.pub does not belong to %s", o.KeyFile, o.KeyFile)
	}
	return &Log{st: st, signer: signer, vkey: vkey, verifier: verifier, every: o.CheckpointEvery,
		interval: o.CheckpointInterval, log: o.Log, now: o.Now, pending: make(chan struct{}, 1)}, nil
}

// DefaultKeyName is the name of a new key: the checkpoint origin.
func DefaultKeyName() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "collector"
	}
	h = strings.Map(func(r rune) rune {
		if r == '+' || r <= ' ' || r == 0x7f {
			return '-'
		}
		return r
	}, h)
	return "ward-audit/" + h
}

func loadOrCreateKey(path, name string, log *slog.Logger) (skey, vkey string, err error) {
	pub := path + ".pub"
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		fi, serr := os.Stat(path)
		if serr == nil && fi.Mode().Perm()&0o077 != 0 {
			return "", "", fmt.Errorf("audit: key %s is readable by others (mode %v); want 0600", path, fi.Mode().Perm())
		}
		pb, perr := os.ReadFile(pub)
		if perr != nil {
			return "", "", fmt.Errorf("audit: verifier key: %w", perr)
		}
		return strings.TrimSpace(string(b)), strings.TrimSpace(string(pb)), nil
	case !errors.Is(err, os.ErrNotExist):
		return "", "", fmt.Errorf("audit: read key: %w", err)
	}
	if name == "" {
		name = DefaultKeyName()
	}
	skey, vkey, err = note.GenerateKey(rand.Reader, name)
	if err != nil {
		return "", "", fmt.Errorf("audit: generate key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", "", fmt.Errorf("audit: key directory: %w", err)
	}
	// The public half first: a crash between the two leaves no private key without its
	// verifier (a stray .pub is overwritten on the next start).
	if err := os.WriteFile(pub, []byte(vkey+"\n"), 0o644); err != nil {
		return "", "", fmt.Errorf("audit: write verifier key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", "", fmt.Errorf("audit: create key: %w", err)
	}
	if _, err := f.WriteString(skey + "\n"); err != nil {
		f.Close()
		return "", "", fmt.Errorf("audit: write key: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return "", "", fmt.Errorf("audit: sync key: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", "", fmt.Errorf("audit: close key: %w", err)
	}
	log.Info("audit log signing key created", "file", path, "verifier_key", vkey)
	return skey, vkey, nil
}

// VerifierKey is the note verifier key ("name+hash+key") that checks this log's checkpoints.
func (l *Log) VerifierKey() string { return l.vkey }

// Verifier checks this log's checkpoints.
func (l *Log) Verifier() note.Verifier { return l.verifier }

// Record appends e. It returns once the record is committed; the next checkpoint covers it.
func (l *Log) Record(ctx context.Context, e Entry) error {
	if e.Time.IsZero() {
		e.Time = l.now()
	}
	data, err := Encode(e)
	if err != nil {
		return err
	}
	idx, err := l.st.AppendAudit(ctx, data)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if (idx+1)%l.every == 0 {
		select {
		case l.pending <- struct{}{}:
		default:
		}
	}
	return nil
}

// Checkpoint signs and stores the current tree head when records were appended since the
// last checkpoint, queueing it for the SIEM sinks. It returns the checkpoint's size (0 when
// the log is empty) and whether a new one was made.
func (l *Log) Checkpoint(ctx context.Context) (int64, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	size, err := l.st.AuditSize(ctx)
	if err != nil {
		return 0, false, err
	}
	last, err := l.st.LatestAuditCheckpointSize(ctx)
	if err != nil {
		return 0, false, err
	}
	if size == 0 || size <= last {
		return last, false, nil
	}
	root, err := l.st.AuditTreeHash(ctx, size)
	if err != nil {
		return 0, false, err
	}
	msg, err := note.Sign(&note.Note{Text: FormatCheckpoint(l.signer.Name(), size, root)}, l.signer)
	if err != nil {
		return 0, false, fmt.Errorf("audit: sign checkpoint: %w", err)
	}
	err = l.st.AddAuditCheckpoint(ctx, store.AuditCheckpoint{Size: size, Root: root[:], Note: msg, CreatedAt: l.now().UTC()})
	if errors.Is(err, store.ErrCheckpointExists) {
		return size, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("audit: %w", err)
	}
	l.log.Debug("audit checkpoint", "size", size, "root", root.String())
	return size, true, nil
}

// Run makes checkpoints when CheckpointEvery records have been appended and every
// CheckpointInterval, until ctx ends; then it makes a last one so a clean shutdown leaves no
// record uncovered.
func (l *Log) Run(ctx context.Context) {
	t := time.NewTicker(l.interval)
	defer t.Stop()
	check := func(ctx context.Context) {
		if _, _, err := l.Checkpoint(ctx); err != nil && ctx.Err() == nil {
			l.log.Error("audit checkpoint", "err", err)
		}
	}
	check(ctx) // cover records appended before a crash
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			check(fctx)
			cancel()
			return
		case <-t.C:
			check(ctx)
		case <-l.pending:
			check(ctx)
		}
	}
}

// sortedKeys is for stable rendering of details.
func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// FormatDetails renders details as "k=v k=v", sorted, for tables.
func FormatDetails(m map[string]string) string {
	var b strings.Builder
	for i, k := range sortedKeys(m) {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%s", k, m[k])
	}
	return b.String()
}
