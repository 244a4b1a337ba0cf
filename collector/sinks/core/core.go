// Package core holds what every SIEM sink shares: the item a sink is handed, the error
// classes that tell the dispatcher whether to retry, dead-letter or skip, the HTTP status
// classification, TLS client configuration, and the minimised view of an event that is the
// only thing any sink may serialise.
package core

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/collector/store"
)

// Item is one event handed to a sink: an agent's event, or (Checkpoint set, Event nil) a
// signed tree head of the collector's audit log.
type Item struct {
	// RowID identifies the event in the store (and its outbox row); for a checkpoint, its
	// size.
	RowID int64
	Event *wardv1.Event
	// ReceivedAt is when the collector stored it.
	ReceivedAt time.Time
	// Checkpoint is an audit-log tree head to deliver instead of an event.
	Checkpoint *Checkpoint
	// InDoubtSince is set when an earlier delivery attempt may have reached the destination
	// (store.OutboxItem.InDoubtSince); a sink that can check skips what is already there.
	InDoubtSince time.Time
}

// KindAuditCheckpoint is the view kind of audit-log checkpoints.
const KindAuditCheckpoint = "audit_checkpoint"

// Checkpoint is an audit-log tree head as sinks deliver it.
type Checkpoint struct {
	Origin string
	Size   int64
	// RootHash is base64, as in the signed body.
	RootHash string
	// Note is the signed note text.
	Note      string
	CreatedAt time.Time
	// Hostname is the collector's host name.
	Hostname string
}

// ID is a stable identifier for the checkpoint event, so a SIEM can de-duplicate a
// redelivered one: origin and size name one tree head.
func (c *Checkpoint) ID() string { return c.Origin + "@" + strconv.FormatInt(c.Size, 10) }

// Sink delivers batches to one destination. Deliver returns nil when every item was
// delivered; a *BatchError when items failed individually; or any other error, classified
// with Retry/Permanent/Skip (unclassified errors are retried), for the whole batch.
type Sink interface {
	Deliver(ctx context.Context, items []Item) error
	Close() error
}

// ErrSkip marks an event the sink's format cannot represent (e.g. a kind OCSF has no class
// for here). Skipped items are removed from the queue and counted, not sent.
var ErrSkip = errors.New("event kind not representable in this format")

// RetryError is a transient failure: network, 429, 5xx. After, when set, is the delay the
// destination asked for (Retry-After).
type RetryError struct {
	Err   error
	After time.Duration
}

func (e *RetryError) Error() string { return e.Err.Error() }
func (e *RetryError) Unwrap() error { return e.Err }

// Retry wraps err as transient.
func Retry(err error, after time.Duration) error { return &RetryError{Err: err, After: after} }

// PermanentError is a refusal that repeating cannot fix (400, 401, 403, 413…): the items go
// to the dead-letter table.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent wraps err as permanent.
func Permanent(err error) error { return &PermanentError{Err: err} }

// Skip wraps err so that errors.Is(err, ErrSkip).
func Skip(reason string) error { return fmt.Errorf("%w: %s", ErrSkip, reason) }

// BatchError reports per-item failures of a batch that was otherwise delivered: Failed maps
// an index into the batch to that item's (classified) error.
type BatchError struct {
	Failed map[int]error
}

func (e *BatchError) Error() string {
	for i, err := range e.Failed {
		return fmt.Sprintf("%d of the batch failed, e.g. item %d: %v", len(e.Failed), i, err)
	}
	return "batch error without failures"
}

// Outcome classifies err for the dispatcher: "skipped", "dead_letter" or "retry", and the
// delay asked for by the destination (0 when none).
func Outcome(err error) (string, time.Duration) {
	var re *RetryError
	var pe *PermanentError
	switch {
	case errors.Is(err, ErrSkip):
		return "skipped", 0
	case errors.As(err, &pe):
		return "dead_letter", 0
	case errors.As(err, &re):
		return "retry", re.After
	default:
		return "retry", 0
	}
}

// HTTPStatus classifies a non-2xx HTTP response per the delivery rules: 429, 408 and 5xx are
// retried (honouring Retry-After), every other 4xx (400, 401, 403, 404, 413…) is permanent.
// body is a bounded excerpt of the response, for the error message.
func HTTPStatus(resp *http.Response, body []byte, now time.Time) error {
	err := fmt.Errorf("HTTP %d: %s", resp.StatusCode, Excerpt(body))
	switch {
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout ||
		resp.StatusCode >= 500:
		return Retry(err, RetryAfter(resp.Header.Get("Retry-After"), now))
	case resp.StatusCode >= 400:
		return Permanent(err)
	default:
		return Retry(err, 0) // 1xx/3xx: unexpected, not the destination's final word
	}
}

// RetryAfter parses a Retry-After header (delta-seconds or an HTTP date); 0 when absent or
// unparseable. It is capped at one hour so a hostile or broken header cannot stall a sink.
func RetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		d = time.Duration(min(n, 3600)) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return max(0, min(d, time.Hour))
}

// Excerpt bounds a response body for error messages.
func Excerpt(b []byte) string {
	const n = 256
	s := strings.ToValidUTF8(string(b), "?")
	if len(s) > n {
		s = s[:n] + "…"
	}
	return strings.TrimSpace(s)
}

// ItemsFromOutbox decodes claimed outbox items; an item whose payload does not decode is
// returned in bad (it can never be delivered).
func ItemsFromOutbox(claimed []store.OutboxItem) (items []Item, bad []int64) {
	for _, c := range claimed {
		ev, err := c.Event()
		if err != nil {
			bad = append(bad, c.RowID)
			continue
		}
		items = append(items, Item{RowID: c.RowID, Event: ev, ReceivedAt: c.ReceivedAt, InDoubtSince: c.InDoubtSince})
	}
	return items, bad
}

// EventID is the event's id, or the checkpoint's.
func (it Item) EventID() string {
	if it.Checkpoint != nil {
		return it.Checkpoint.ID()
	}
	return it.Event.GetId()
}

// EventTime is when the activity happened, or when the checkpoint was signed.
func (it Item) EventTime() time.Time {
	if it.Checkpoint != nil {
		return it.Checkpoint.CreatedAt
	}
	return it.Event.GetTime().AsTime()
}

// Hostname is the agent's host, or the collector's for a checkpoint.
func (it Item) Hostname() string {
	if it.Checkpoint != nil {
		return it.Checkpoint.Hostname
	}
	return it.Event.GetHost().GetHostname()
}

// AgentID is the reporting agent ("" for a checkpoint).
func (it Item) AgentID() string { return it.Event.GetAgentId() }

// OrderKey keys ordered delivery (Kafka partitioning): the agent, or the audit log's origin
// so that one log's checkpoints stay in order.
func (it Item) OrderKey() string {
	if it.Checkpoint != nil {
		return it.Checkpoint.Origin
	}
	return it.Event.GetAgentId()
}
