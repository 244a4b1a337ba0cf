package store

// consoleSchema is the migration for the console and the reports (collector/console,
// collector/report): console accounts and sessions, triage of findings, the organisation's
// app sanctioning decisions, and event_facts, a derived index of the attributes the console
// filters and aggregates on that live inside the event payloads (app, rule, action, bytes).
// event_facts is rebuilt from events by IndexFacts, so it holds nothing events do not.
const consoleSchema = `
CREATE TABLE console_users (
	id                  INTEGER PRIMARY KEY AUTOINCREMENT,
	username            TEXT NOT NULL UNIQUE,
	role                TEXT NOT NULL,
	password_hash       TEXT NOT NULL DEFAULT '',     -- argon2id PHC string; '' for SSO-only accounts
	must_change         INTEGER NOT NULL DEFAULT 0,   -- set by wardctl user add/reset
	totp_secret         BLOB,                         -- AES-256-GCM sealed with the console key
	totp_enabled        INTEGER NOT NULL DEFAULT 0,
	totp_last_step      INTEGER NOT NULL DEFAULT 0,   -- replay protection: last accepted 30 s step
	failed_logins       INTEGER NOT NULL DEFAULT 0,
	locked_until        INTEGER NOT NULL DEFAULT 0,   -- unix nanoseconds
	disabled            INTEGER NOT NULL DEFAULT 0,
	oidc_subject        TEXT NOT NULL DEFAULT '',     -- issuer|sub for SSO accounts
	created_at          INTEGER NOT NULL,
	password_changed_at INTEGER NOT NULL DEFAULT 0,
	last_login_at       INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX console_users_oidc ON console_users(oidc_subject) WHERE oidc_subject != '';

CREATE TABLE console_recovery_codes (
	user_id INTEGER NOT NULL REFERENCES console_users(id) ON DELETE CASCADE,
	hash    BLOB NOT NULL,                            -- SHA-256 of an 80-bit random code
	used_at INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (user_id, hash)
) WITHOUT ROWID;

CREATE TABLE console_sessions (
	id_hash    BLOB PRIMARY KEY,                      -- SHA-256 of the cookie value; the value is never stored
	user_id    INTEGER NOT NULL REFERENCES console_users(id) ON DELETE CASCADE,
	stage      TEXT NOT NULL,                         -- mfa | enrol | full
	csrf       TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	last_seen  INTEGER NOT NULL,
	expires_at INTEGER NOT NULL,                      -- absolute timeout
	remote     TEXT NOT NULL DEFAULT '',
	user_agent TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE INDEX console_sessions_user ON console_sessions(user_id);

CREATE TABLE event_triage (
	event_rowid INTEGER PRIMARY KEY REFERENCES events(rowid) ON DELETE CASCADE,
	status      TEXT NOT NULL,                        -- new | investigating | closed
	reason      TEXT NOT NULL DEFAULT '',             -- why it was closed
	updated_at  INTEGER NOT NULL,
	updated_by  TEXT NOT NULL
);

CREATE TABLE event_notes (
	id          INTEGER PRIMARY KEY AUTOINCREMENT,
	event_rowid INTEGER NOT NULL REFERENCES events(rowid) ON DELETE CASCADE,
	author      TEXT NOT NULL,
	body        TEXT NOT NULL,
	created_at  INTEGER NOT NULL
);
CREATE INDEX event_notes_event ON event_notes(event_rowid, id);

CREATE TABLE app_sanctions (
	app_id     TEXT PRIMARY KEY,
	status     TEXT NOT NULL,                         -- sanctioned | unsanctioned | monitored
	changed_at INTEGER NOT NULL,
	changed_by TEXT NOT NULL
);

CREATE TABLE event_facts (
	rowid      INTEGER PRIMARY KEY REFERENCES events(rowid) ON DELETE CASCADE,
	agent_id   TEXT NOT NULL,
	kind       TEXT NOT NULL,                         -- finding | flow
	time       INTEGER NOT NULL,
	severity   INTEGER NOT NULL DEFAULT 0,
	data_class INTEGER NOT NULL DEFAULT 0,
	host       TEXT NOT NULL DEFAULT '',
	user_key   TEXT NOT NULL DEFAULT '',              -- keyed HMAC of the user name: the name itself stays in the (encrypted) payload
	app        TEXT NOT NULL DEFAULT '',
	app_name   TEXT NOT NULL DEFAULT '',
	category   TEXT NOT NULL DEFAULT '',
	action     INTEGER NOT NULL DEFAULT 0,            -- ward.v1.Action actually taken
	rule       TEXT NOT NULL DEFAULT '',
	consent    TEXT NOT NULL DEFAULT '',
	detection  INTEGER NOT NULL DEFAULT 0,            -- 1: shown in the console's event list
	bytes_up   INTEGER NOT NULL DEFAULT 0,
	bytes_down INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX event_facts_detection ON event_facts(detection, rowid);
CREATE INDEX event_facts_app ON event_facts(kind, app, time);
CREATE INDEX event_facts_time ON event_facts(kind, time);

CREATE TABLE event_facts_cursor (
	id    INTEGER PRIMARY KEY CHECK (id = 1),
	rowid INTEGER NOT NULL
);
INSERT INTO event_facts_cursor(id, rowid) VALUES (1, 0);

-- The newest Health event per agent, for the fleet view.
CREATE TABLE agent_health (
	agent_id    TEXT PRIMARY KEY REFERENCES agents(id),
	event_rowid INTEGER NOT NULL,
	time        INTEGER NOT NULL
);

-- Exec events by process, for the ancestry of a finding's process.
CREATE INDEX events_process_pid ON events(agent_id, pid, time) WHERE kind = 'process';
`
