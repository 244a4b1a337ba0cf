package store

// fleetSchema is the migration for ingest and fleet operations:
//   - agents: when the last Health event arrived, and the fleet monitor's silence state
//     (silent_since is set while an "agent silent" alert is open; silent_last_seen is the
//     last contact before it, kept for the "agent back" alert), and when a revoked agent
//     last presented its certificate (throttles AGENT_REVOKED_CONTACT alerts);
//   - events.key_id: the evidence key a row's payload is encrypted with (empty: clear);
//   - evidence_keys: every key id rows were written with, checked at start;
//   - indexes on outbox(event_rowid) and outbox_dead(event_rowid): deleting an event
//     (retention) cascades to both, and without them each delete scans the queues.
//
// Incremental vacuum cannot be switched on in a migration (auto_vacuum changes on an
// existing database only take effect with a VACUUM, which cannot run in a transaction):
// new databases get it before their first table (migrate), existing ones are converted
// once by EnableIncrementalVacuum, which the retention job calls.
const fleetSchema = `
ALTER TABLE agents ADD COLUMN last_health_at INTEGER;      -- unix nanoseconds of the last Health event received
ALTER TABLE agents ADD COLUMN silent_since INTEGER;        -- set while an "agent silent" alert is open
ALTER TABLE agents ADD COLUMN silent_last_seen INTEGER;    -- last_seen when the alert was raised
ALTER TABLE agents ADD COLUMN revoked_contact_at INTEGER;  -- last AGENT_REVOKED_CONTACT alert

ALTER TABLE events ADD COLUMN key_id TEXT NOT NULL DEFAULT '';

CREATE TABLE evidence_keys (
	id            TEXT PRIMARY KEY,
	first_used_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX outbox_event ON outbox(event_rowid);
CREATE INDEX outbox_dead_event ON outbox_dead(event_rowid);
`
