package store

// replicaSchema is the migration for collectors sharing one PostgreSQL store (postgres.go,
// replicas.go): which replica holds an outbox lease, and each replica's heartbeat, so that
// a replica takes over the leases of one that died instead of waiting for them to expire,
// and never those of one that is alive. On SQLite (one collector) the columns stay empty.
const replicaSchema = `
ALTER TABLE outbox ADD COLUMN lease_owner TEXT NOT NULL DEFAULT '';

CREATE TABLE collector_replicas (
	id           TEXT PRIMARY KEY,
	started_at   INTEGER NOT NULL,            -- unix nanoseconds
	heartbeat_at INTEGER NOT NULL             -- unix nanoseconds; stale after replicaStaleAfter
) WITHOUT ROWID;
`
