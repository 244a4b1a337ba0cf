package sinks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/ward-dlp/ward/collector/sinks/core"
	"github.com/ward-dlp/ward/collector/store"
)

// dispatcher moves one sink's outbox items to the sink: claim a batch, deliver, then ack,
// reschedule with backoff, or dead-letter each item according to the outcome.
type dispatcher struct {
	name    string
	sink    core.Sink
	store   *store.Store
	batch   BatchConfig
	retry   RetryConfig
	metrics *Metrics
	log     *slog.Logger
	now     func() time.Time
	// hostname is the collector's, for audit checkpoints.
	hostname string

	failures  int       // consecutive failed attempts, for the backoff exponent
	notBefore time.Time // sink-level backoff
}

// leaseFor bounds how long a claimed batch stays invisible to other claims; in-process the
// dispatcher is the only claimer and releases leases at start, so this only matters for a
// dispatcher that hangs.
const leaseFor = 10 * time.Minute

// statsEvery is how often queue gauges refresh while nothing else happens.
const statsEvery = 5 * time.Second

func (d *dispatcher) run(ctx context.Context) error {
	if err := d.store.ReleaseOutboxLeases(ctx, d.name); err != nil {
		return err
	}
	d.refreshStats(ctx, true)
	for ctx.Err() == nil {
		if wait := d.notBefore.Sub(d.now()); wait > 0 {
			sleep(ctx, min(wait, statsEvery))
			d.refreshStats(ctx, false)
			continue
		}
		changed := d.store.OutboxChanged()
		st, ok := d.refreshStats(ctx, false)
		if !ok {
			sleep(ctx, time.Second)
			continue
		}
		if err := d.deliverCheckpoints(ctx); err != nil && ctx.Err() == nil {
			d.log.Error("sink dispatcher: audit checkpoints", "err", err)
		}
		if wait := d.notBefore.Sub(d.now()); wait > 0 {
			continue // the checkpoint delivery failed and backs off; so do events
		}
		if st.Due == 0 {
			waitFor(ctx, changed, statsEvery)
			continue
		}
		// Batch by time: wait for a full batch until the oldest item has waited MaxWait.
		if st.Due < int64(d.batch.MaxEvents) {
			if left := d.batch.MaxWait - d.now().Sub(st.Oldest); left > 0 {
				waitFor(ctx, changed, left)
				continue
			}
		}
		if err := d.deliverOnce(ctx); err != nil && ctx.Err() == nil {
			d.log.Error("sink dispatcher", "err", err)
			sleep(ctx, time.Second)
		}
	}
	return nil
}

// deliverOnce claims and delivers one batch.
func (d *dispatcher) deliverOnce(ctx context.Context) error {
	claimed, err := d.store.ClaimOutbox(ctx, d.name, d.now(), d.batch.MaxEvents, d.batch.MaxBytes, leaseFor)
	if err != nil || len(claimed) == 0 {
		return err
	}
	items, bad := core.ItemsFromOutbox(claimed)
	// Bookkeeping must survive shutdown: a batch delivered just as ctx ends is still acked.
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if len(bad) > 0 {
		if err := d.deadLetter(bctx, bad, "stored payload does not decode"); err != nil {
			return err
		}
	}
	if len(items) == 0 {
		return nil
	}
	derr := d.sink.Deliver(ctx, items)

	var ack, skip, dead, retry []int64
	var retryAfter time.Duration
	var firstErr, deadReason string
	classify := func(rowid int64, err error) {
		outcome, after := core.Outcome(err)
		switch outcome {
		case "skipped":
			skip = append(skip, rowid)
		case "dead_letter":
			dead = append(dead, rowid)
			if deadReason == "" {
				deadReason = err.Error()
			}
		default:
			retry = append(retry, rowid)
			retryAfter = max(retryAfter, after)
			if firstErr == "" {
				firstErr = err.Error()
			}
		}
	}
	var be *core.BatchError
	switch {
	case derr == nil:
		for _, it := range items {
			ack = append(ack, it.RowID)
		}
	case errors.As(derr, &be):
		for i, it := range items {
			if err, failed := be.Failed[i]; failed && err != nil {
				classify(it.RowID, err)
			} else {
				ack = append(ack, it.RowID)
			}
		}
	default:
		if ctx.Err() != nil {
			derr = core.Retry(fmt.Errorf("shutting down: %w", derr), 0)
		}
		for _, it := range items {
			classify(it.RowID, derr)
		}
	}

	if err := d.store.SettleOutbox(bctx, d.name, ack, skip); err != nil {
		return err
	}
	d.metrics.events.WithLabelValues(d.name, "delivered").Add(float64(len(ack)))
	d.metrics.events.WithLabelValues(d.name, "skipped").Add(float64(len(skip)))
	if len(dead) > 0 {
		d.log.Error("destination refused events permanently; kept in the dead-letter table",
			"events", len(dead), "reason", deadReason)
		if err := d.deadLetter(bctx, dead, deadReason); err != nil {
			return err
		}
	}
	if len(retry) > 0 {
		d.failures++
		delay := max(backoff(d.retry, d.failures), retryAfter)
		next := d.now().Add(delay)
		d.notBefore = next
		d.log.Warn("delivery failed; will retry", "events", len(retry), "attempt", d.failures, "retry_in", delay.Round(time.Millisecond), "err", firstErr)
		d.metrics.events.WithLabelValues(d.name, "retry").Add(float64(len(retry)))
		if err := d.store.RetryOutbox(bctx, d.name, retry, next, firstErr); err != nil {
			return err
		}
	} else {
		if d.failures > 0 {
			d.log.Info("delivery recovered", "after_failures", d.failures)
		}
		d.failures = 0
	}
	d.log.Debug("batch", "delivered", len(ack), "skipped", len(skip), "dead_letter", len(dead), "retry", len(retry))
	d.refreshStats(bctx, false)
	return nil
}

func (d *dispatcher) deadLetter(ctx context.Context, rowids []int64, reason string) error {
	if err := d.store.DeadLetterOutbox(ctx, d.name, rowids, d.now(), reason); err != nil {
		return err
	}
	d.metrics.events.WithLabelValues(d.name, "dead_letter").Add(float64(len(rowids)))
	d.metrics.dead.WithLabelValues(d.name).Add(float64(len(rowids)))
	return nil
}

// refreshStats reads the queue and updates the gauges; initial also seeds the dead-letter
// counter from the table so it survives restarts.
func (d *dispatcher) refreshStats(ctx context.Context, initial bool) (store.OutboxStats, bool) {
	now := d.now()
	st, err := d.store.OutboxStats(ctx, d.name, now)
	if err != nil {
		if ctx.Err() == nil {
			d.log.Error("reading outbox stats", "err", err)
		}
		return st, false
	}
	if initial {
		d.metrics.dead.WithLabelValues(d.name).Add(float64(st.DeadLetters))
		for _, o := range []string{"delivered", "retry", "dead_letter", "skipped"} {
			d.metrics.events.WithLabelValues(d.name, o) // export zeros from the start
		}
	}
	age := 0.0
	if st.Depth > 0 {
		age = max(0, now.Sub(st.Oldest).Seconds())
	}
	d.metrics.oldest.WithLabelValues(d.name).Set(age)
	d.metrics.depth.WithLabelValues(d.name).Set(float64(st.Depth))
	return st, true
}

// backoff is exponential backoff with full jitter: uniform in [0, min(max, initial·2^n)),
// so many sinks recovering together do not retry in lockstep. It is at least a millisecond.
func backoff(r RetryConfig, attempt int) time.Duration {
	ceil := r.Initial
	for i := 1; i < attempt && ceil < r.Max; i++ {
		ceil *= 2
	}
	ceil = min(ceil, r.Max)
	if ceil <= time.Millisecond {
		return time.Millisecond
	}
	return time.Millisecond + rand.N(ceil-time.Millisecond)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func waitFor(ctx context.Context, ch <-chan struct{}, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-ch:
	case <-t.C:
	}
}

// deliverCheckpoints sends the audit-log checkpoints queued for this sink, before events:
// they are few and small, and the SIEM's copy of the tree head is what makes the audit log
// tamper-evident. Outcomes follow the event rules: transient failures back the whole sink
// off, permanent refusals are kept as dead letters (replayable), a format that cannot
// represent them skips them.
func (d *dispatcher) deliverCheckpoints(ctx context.Context) error {
	cps, err := d.store.ClaimAuditOutbox(ctx, d.name, d.now(), 32)
	if err != nil || len(cps) == 0 {
		return err
	}
	items := make([]core.Item, len(cps))
	for i, c := range cps {
		lines := strings.SplitN(string(c.Note), "\n", 4)
		cp := &core.Checkpoint{Size: c.Size, Note: string(c.Note), CreatedAt: c.CreatedAt, Hostname: d.hostname}
		if len(lines) >= 3 {
			cp.Origin, cp.RootHash = lines[0], lines[2]
		}
		items[i] = core.Item{RowID: c.Size, ReceivedAt: c.CreatedAt, Checkpoint: cp}
	}
	derr := d.sink.Deliver(ctx, items)
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	var done, retry, dead []int64
	var retryAfter time.Duration
	var reason string
	for i, it := range items {
		err := derr
		var be *core.BatchError
		if errors.As(derr, &be) {
			err = be.Failed[i]
		}
		if err == nil {
			done = append(done, it.RowID)
			continue
		}
		switch outcome, after := core.Outcome(err); outcome {
		case "skipped":
			done = append(done, it.RowID)
		case "dead_letter":
			dead = append(dead, it.RowID)
			reason = err.Error()
		default:
			retry = append(retry, it.RowID)
			retryAfter = max(retryAfter, after)
			if reason == "" {
				reason = err.Error()
			}
		}
	}
	var next time.Time
	if len(retry) > 0 {
		d.failures++
		next = d.now().Add(max(backoff(d.retry, d.failures), retryAfter))
		d.notBefore = next
		d.log.Warn("audit checkpoint delivery failed; will retry", "checkpoints", len(retry), "retry_at", next, "err", reason)
	}
	if len(dead) > 0 {
		d.log.Error("destination refused audit checkpoints permanently; kept as dead letters", "checkpoints", len(dead), "reason", reason)
	}
	return d.store.SettleAuditOutbox(bctx, d.name, done, retry, dead, next, d.now(), reason)
}
