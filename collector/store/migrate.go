package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// migrations are applied in order; migrations[i] brings the schema to version i+1. Never edit
// a migration that has shipped: append a new one.
var migrations = []string{
	// 1: agents, enrolment tokens, events.
	`
CREATE TABLE agents (
	id          TEXT PRIMARY KEY,
	hostname    TEXT NOT NULL DEFAULT '',
	machine_id  TEXT NOT NULL DEFAULT '',
	version     TEXT NOT NULL DEFAULT '',
	enrolled_at INTEGER NOT NULL,            -- unix nanoseconds
	last_seen   INTEGER,                     -- unix nanoseconds, NULL until the first call
	revoked     INTEGER NOT NULL DEFAULT 0,
	revoked_at  INTEGER
);

CREATE TABLE enroll_tokens (
	hash       BLOB PRIMARY KEY,             -- SHA-256 of the token; the token itself is never stored
	created_at INTEGER NOT NULL,
	expires_at INTEGER NOT NULL,
	used_at    INTEGER,
	used_by    TEXT REFERENCES agents(id)
);

CREATE TABLE events (
	rowid       INTEGER PRIMARY KEY AUTOINCREMENT, -- AUTOINCREMENT: never reused, so cursors stay valid after deletes
	event_id    TEXT NOT NULL,
	agent_id    TEXT NOT NULL REFERENCES agents(id),
	seq         INTEGER NOT NULL,
	time        INTEGER NOT NULL,                  -- unix nanoseconds of the observed activity
	received_at INTEGER NOT NULL,
	kind        TEXT NOT NULL,                     -- process | file | finding | health
	severity    INTEGER NOT NULL DEFAULT 0,        -- ward.v1.Severity number
	data_class  INTEGER NOT NULL DEFAULT 0,        -- ward.v1.DataClass number
	host        TEXT NOT NULL DEFAULT '',
	path        TEXT NOT NULL DEFAULT '',
	pid         INTEGER NOT NULL DEFAULT 0,
	exe         TEXT NOT NULL DEFAULT '',
	user        TEXT NOT NULL DEFAULT '',
	payload     BLOB NOT NULL,                     -- the ward.v1.Event, protobuf wire format
	UNIQUE (agent_id, seq)
);
`,
	// 2: indexes for the admin API's filters.
	`
CREATE INDEX events_kind ON events(kind, rowid);
CREATE INDEX events_time ON events(time);
CREATE INDEX events_agent ON events(agent_id, rowid);
`,
	// 3: signed policy bundles pushed by wardctl, and the policy each agent reports applying.
	`
CREATE TABLE policy_bundles (
	target_group TEXT NOT NULL,
	version      INTEGER NOT NULL,
	name         TEXT NOT NULL,
	sha256       TEXT NOT NULL,                -- of the payload
	signed_note  BLOB NOT NULL,
	payload      BLOB NOT NULL,
	not_before   INTEGER NOT NULL,             -- unix nanoseconds, as signed
	expires_at   INTEGER NOT NULL,
	pushed_at    INTEGER NOT NULL,
	pushed_by    INTEGER NOT NULL DEFAULT -1,  -- uid of the wardctl peer (SO_PEERCRED)
	PRIMARY KEY (target_group, version)
);

CREATE TABLE agent_policy (
	agent_id         TEXT PRIMARY KEY REFERENCES agents(id),
	target_group     TEXT NOT NULL,
	version          INTEGER NOT NULL,          -- 0: the built-in pack
	sha256           TEXT NOT NULL DEFAULT '',
	last_error       TEXT NOT NULL DEFAULT '',  -- why the agent refused the last offered bundle
	rejected_version INTEGER NOT NULL DEFAULT 0,
	reported_at      INTEGER NOT NULL
);
`,
	// 4: the SIEM outbox. One row per (sink, event) still to deliver, written in the same
	// transaction as the event, and a dead-letter table for permanent refusals.
	`
CREATE TABLE outbox (
	sink            TEXT NOT NULL,
	event_rowid     INTEGER NOT NULL REFERENCES events(rowid) ON DELETE CASCADE,
	enqueued_at     INTEGER NOT NULL,            -- unix nanoseconds
	attempts        INTEGER NOT NULL DEFAULT 0,
	next_attempt_at INTEGER NOT NULL DEFAULT 0,  -- unix nanoseconds; backoff
	lease_until     INTEGER NOT NULL DEFAULT 0,  -- unix nanoseconds; a claimed batch in flight
	last_error      TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (sink, event_rowid)
) WITHOUT ROWID;

CREATE TABLE outbox_dead (
	sink        TEXT NOT NULL,
	event_rowid INTEGER NOT NULL REFERENCES events(rowid) ON DELETE CASCADE,
	enqueued_at INTEGER NOT NULL,
	failed_at   INTEGER NOT NULL,
	attempts    INTEGER NOT NULL,
	reason      TEXT NOT NULL,
	PRIMARY KEY (sink, event_rowid)
) WITHOUT ROWID;
CREATE INDEX outbox_dead_failed ON outbox_dead(sink, failed_at);

-- Which sinks want which events, rewritten from the configuration at start. A row per
-- (sink, kind); findings also need severity >= min_severity.
CREATE TABLE outbox_routes (
	sink         TEXT NOT NULL,
	kind         TEXT NOT NULL,
	min_severity INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (sink, kind)
) WITHOUT ROWID;
`,
	// 5: console accounts, sessions, triage, app sanctioning and the event facts index
	// (console_schema.go).
	consoleSchema,
	// 6: the tamper-evident audit log (Merkle tree records, stored hashes, signed
	// checkpoints and their SIEM queue) and persistent per-sink delivery counters
	// (audit_schema.go).
	auditSchema,
	// 7: fleet state on agents, evidence key ids, indexes retention needs (fleet_schema.go).
	fleetSchema,
	// 8: outbox lease owners and replica heartbeats, for collectors sharing PostgreSQL
	// (replica_schema.go).
	replicaSchema,
}

// migrate applies the migrations above the database's version, up to target, each in its own
// transaction together with the version record, so a crash leaves a consistent version.
func (s *Store) migrate(ctx context.Context, target int) error {
	if target > len(migrations) {
		return fmt.Errorf("target schema version %d is newer than this build knows (%d)", target, len(migrations))
	}
	if _, err := s.db.ExecContext(ctx, s.schemaSQL(0, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		applied_at INTEGER NOT NULL
	)`)); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	current, err := s.SchemaVersion(ctx)
	if err != nil {
		return err
	}
	if current > len(migrations) {
		return fmt.Errorf("database schema version %d is newer than this build supports (%d); refusing to run an older collector on it", current, len(migrations))
	}
	for v := current + 1; v <= target; v++ {
		err := s.write(ctx, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, s.schemaSQL(v, migrations[v-1])); err != nil {
				return fmt.Errorf("apply migration %d: %w", v, err)
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations(version, applied_at) VALUES (?, ?)`,
				v, time.Now().UnixNano()); err != nil {
				return fmt.Errorf("record migration %d: %w", v, err)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// SchemaVersion reports the highest applied migration (0 for an empty database).
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var v sql.NullInt64
	if err := s.db.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return int(v.Int64), nil
}
