package store

// auditSchema is migration 6: the audit log's tables (see audit.go) and the per-sink
// delivery counters wardctl sinks status reports (see sinkadmin.go).
const auditSchema = `
CREATE TABLE audit_log (
	idx    INTEGER PRIMARY KEY,                 -- leaf index in the Merkle tree, from 0, dense
	record BLOB NOT NULL                        -- the exact bytes the leaf hash covers (canonical JSON)
);

-- tlog stored hashes: leaf and interior node hashes, numbered by tlog.StoredHashIndex.
CREATE TABLE audit_hashes (
	id   INTEGER PRIMARY KEY,
	hash BLOB NOT NULL
);

-- Signed tree heads (C2SP tlog-checkpoint bodies in golang.org/x/mod/sumdb/note notes).
CREATE TABLE audit_checkpoints (
	size       INTEGER PRIMARY KEY,
	root       BLOB NOT NULL,
	note       BLOB NOT NULL,
	created_at INTEGER NOT NULL                 -- unix nanoseconds
);

-- Checkpoints still to deliver to each SIEM sink; dead = 1 after a permanent refusal.
CREATE TABLE audit_outbox (
	sink            TEXT NOT NULL,
	size            INTEGER NOT NULL REFERENCES audit_checkpoints(size) ON DELETE CASCADE,
	enqueued_at     INTEGER NOT NULL,
	attempts        INTEGER NOT NULL DEFAULT 0,
	next_attempt_at INTEGER NOT NULL DEFAULT 0,
	dead            INTEGER NOT NULL DEFAULT 0,
	failed_at       INTEGER NOT NULL DEFAULT 0,
	last_error      TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (sink, size)
);

-- Events each sink's destination confirmed (or that its format skipped), since the first
-- start with this schema.
CREATE TABLE outbox_counters (
	sink      TEXT PRIMARY KEY,
	delivered INTEGER NOT NULL DEFAULT 0,
	skipped   INTEGER NOT NULL DEFAULT 0,
	checkpoints_delivered INTEGER NOT NULL DEFAULT 0
);
`
