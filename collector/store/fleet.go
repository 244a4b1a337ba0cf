package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
)

// Collector-raised events about an agent (fleet alerts) are stored under that agent's id so
// the SIEM sees them on the right device, with negative seq numbers: agents number their
// events 1..2^63-1, so (agent_id, seq) stays unique without a second key space, and an
// agent's resend can never collide with an alert. Their Event.seq is 0.

// storedSeq is the Event seq of a row: the agent's seq, or 0 for collector-raised rows.
func storedSeq(dbSeq int64) uint64 {
	if dbSeq < 0 {
		return 0
	}
	return uint64(dbSeq)
}

// FleetSeverity is the severity stored (and routed on) for a fleet alert kind: a silent
// agent may be an agent that was stopped, a revoked one calling in is an intrusion signal,
// and an agent coming back is information that closes the silent alert.
func FleetSeverity(k wardv1.FleetAlert_Kind) wardv1.Severity {
	switch k {
	case wardv1.FleetAlert_KIND_AGENT_SILENT:
		return wardv1.Severity_SEVERITY_MEDIUM
	case wardv1.FleetAlert_KIND_AGENT_REVOKED_CONTACT:
		return wardv1.Severity_SEVERITY_HIGH
	case wardv1.FleetAlert_KIND_AGENT_BACK:
		return wardv1.Severity_SEVERITY_INFO
	}
	return wardv1.Severity_SEVERITY_UNSPECIFIED
}

// TouchAgents records contact with several agents in one transaction: calls the collector
// answered without storing anything (throttled exports), which still prove the agent is
// alive. last_seen never moves backwards.
func (s *Store) TouchAgents(ctx context.Context, seen map[string]time.Time) error {
	if len(seen) == 0 {
		return nil
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		for id, t := range seen {
			if _, err := tx.ExecContext(ctx, `UPDATE agents SET last_seen = MAX(COALESCE(last_seen, 0), ?) WHERE id = ?`,
				t.UnixNano(), id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: touch %d agents: %w", len(seen), err)
	}
	return nil
}

// FleetCheck says which transition RaiseFleetAlert should test for.
type FleetCheck struct {
	Kind    wardv1.FleetAlert_Kind
	AgentID string
	// Now is the alert time.
	Now time.Time
	// SilentBefore is, for KIND_AGENT_SILENT, the last_seen below which the agent is silent.
	SilentBefore time.Time
	// Throttle is, for KIND_AGENT_REVOKED_CONTACT, the least time between two alerts.
	Throttle time.Duration
}

// RaiseFleetAlert checks the transition c describes against the agent's row and, when it
// holds, records it and stores the alert event (queued for the sinks like any event), all
// in one transaction: two monitors (or two collector replicas) racing raise one alert.
// It returns the stored alert, or nil when the condition did not hold.
//
//   - AGENT_SILENT: an unrevoked agent with a last_seen before c.SilentBefore and no open
//     silent alert;
//   - AGENT_BACK: an agent with an open silent alert seen again since it was raised;
//   - AGENT_REVOKED_CONTACT: a revoked agent whose last such alert is older than c.Throttle.
func (s *Store) RaiseFleetAlert(ctx context.Context, c FleetCheck) (*wardv1.Event, error) {
	var raised *wardv1.Event
	err := s.write(ctx, func(tx *sql.Tx) error {
		var a Agent
		var lastSeen, silentSince, silentLastSeen, revokedContact sql.NullInt64
		err := tx.QueryRowContext(ctx, `SELECT hostname, machine_id, version, revoked, last_seen, silent_since,
			silent_last_seen, revoked_contact_at FROM agents WHERE id = ?`, c.AgentID).
			Scan(&a.Hostname, &a.MachineID, &a.Version, &a.Revoked, &lastSeen, &silentSince, &silentLastSeen, &revokedContact)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrAgentUnknown
		}
		if err != nil {
			return fmt.Errorf("read agent: %w", err)
		}
		now := c.Now.UnixNano()
		alert := &wardv1.FleetAlert{Kind: c.Kind, AgentId: c.AgentID, Hostname: a.Hostname}
		var update string
		var args []any
		switch c.Kind {
		case wardv1.FleetAlert_KIND_AGENT_SILENT:
			if a.Revoked || !lastSeen.Valid || silentSince.Valid || lastSeen.Int64 >= c.SilentBefore.UnixNano() {
				return nil
			}
			alert.LastSeen = timestamppb.New(time.Unix(0, lastSeen.Int64))
			alert.SilentForSeconds = uint64(max(0, now-lastSeen.Int64) / int64(time.Second))
			update, args = `UPDATE agents SET silent_since = ?, silent_last_seen = last_seen WHERE id = ?`, []any{now, c.AgentID}
		case wardv1.FleetAlert_KIND_AGENT_BACK:
			if !silentSince.Valid || !lastSeen.Valid || !silentLastSeen.Valid || lastSeen.Int64 <= silentLastSeen.Int64 {
				return nil
			}
			alert.LastSeen = timestamppb.New(time.Unix(0, silentLastSeen.Int64))
			alert.SilentForSeconds = uint64(max(0, lastSeen.Int64-silentLastSeen.Int64) / int64(time.Second))
			update, args = `UPDATE agents SET silent_since = NULL, silent_last_seen = NULL WHERE id = ?`, []any{c.AgentID}
		case wardv1.FleetAlert_KIND_AGENT_REVOKED_CONTACT:
			if !a.Revoked || revokedContact.Valid && now-revokedContact.Int64 < int64(c.Throttle) {
				return nil
			}
			if lastSeen.Valid {
				alert.LastSeen = timestamppb.New(time.Unix(0, lastSeen.Int64))
			}
			update, args = `UPDATE agents SET revoked_contact_at = ? WHERE id = ?`, []any{now, c.AgentID}
		default:
			return fmt.Errorf("unknown fleet alert kind %v", c.Kind)
		}
		if _, err := tx.ExecContext(ctx, update, args...); err != nil {
			return fmt.Errorf("update agent: %w", err)
		}
		var minSeq int64
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MIN(seq), 0) FROM events WHERE agent_id = ? AND seq < 0`, c.AgentID).
			Scan(&minSeq); err != nil {
			return fmt.Errorf("allocate seq: %w", err)
		}
		ev := &wardv1.Event{
			Id:      uuid.Must(uuid.NewV7()).String(),
			AgentId: c.AgentID,
			Time:    timestamppb.New(c.Now),
			Host:    &wardv1.Host{Hostname: a.Hostname, MachineId: a.MachineID, AgentVersion: a.Version},
			Payload: &wardv1.Event_Fleet{Fleet: alert},
		}
		if err := s.insertCollectorEvent(ctx, tx, ev, minSeq-1, c.Now); err != nil {
			return err
		}
		raised = ev
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: raise %s for agent %s: %w", c.Kind, c.AgentID, err)
	}
	if raised != nil {
		s.notify()
	}
	return raised, nil
}

// insertCollectorEvent stores ev under dbSeq (negative) inside tx, sealed like agent events,
// and queues it for the sinks.
func (s *Store) insertCollectorEvent(ctx context.Context, tx *sql.Tx, ev *wardv1.Event, dbSeq int64, now time.Time) error {
	payload, err := proto.MarshalOptions{Deterministic: true}.Marshal(ev)
	if err != nil {
		return fmt.Errorf("marshal: %w", err)
	}
	r := deriveColumns(ev)
	r.Payload = payload
	w := sealedRow{path: r.Path, exe: r.Exe, user: r.User, payload: payload}
	if ring := s.evidence.Load(); ring != nil && ring.current != "" {
		sl, err := ring.newSealer()
		if err != nil {
			return err
		}
		w = sealedRow{keyID: sl.keyID, payload: sl.seal(r.AgentID, dbSeq, payload)}
	}
	// PostgreSQL: event inserts are serialised across replicas (postgres.go), and the
	// rowid comes back with RETURNING, which both databases support.
	if err := s.lockEvents(ctx, tx); err != nil {
		return err
	}
	var rowid int64
	err = tx.QueryRowContext(ctx, `INSERT INTO events
		(event_id, agent_id, seq, time, received_at, kind, severity, data_class, host, path, pid, exe, user, payload, key_id)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING rowid`,
		r.EventID, r.AgentID, dbSeq, r.Time.UnixNano(), now.UnixNano(), r.Kind, int32(r.Severity), int32(r.DataClass),
		r.Host, w.path, int64(r.PID), w.exe, w.user, w.payload, w.keyID).Scan(&rowid)
	if err != nil {
		return fmt.Errorf("insert event: %w", err)
	}
	if err := s.enqueueOutbox(ctx, tx, rowid, r, now); err != nil {
		return fmt.Errorf("enqueue: %w", err)
	}
	return nil
}
