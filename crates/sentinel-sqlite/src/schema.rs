//! The schema, versioned with `PRAGMA user_version` and created under `BEGIN IMMEDIATE`, so that
//! processes starting at once create it exactly once and nobody sees half of it.

use rusqlite::{Connection, TransactionBehavior};

/// The schema version this build creates and understands.
pub const SCHEMA_VERSION: i64 = 1;

const V1: &str = "
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO counters (name, value) VALUES ('fencing_token', 0);

CREATE TABLE executions (
    namespace        TEXT    NOT NULL,
    key              TEXT    NOT NULL,
    state            TEXT    NOT NULL
                     CHECK (state IN ('running', 'uncertain', 'completed', 'reconciling')),
    fencing_token    INTEGER NOT NULL,
    owner_host       TEXT,
    owner_pid        INTEGER,
    owner_attempt    TEXT,
    operator         TEXT,
    fingerprint      BLOB,
    lease_expires_at INTEGER,
    hard_expires_at  INTEGER,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    completed_at     INTEGER,
    retain_until     INTEGER,
    reason           TEXT,
    result_kind      TEXT CHECK (result_kind IN ('value', 'error')),
    result           TEXT,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID;
CREATE INDEX executions_state ON executions (state, lease_expires_at);

CREATE TABLE events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace     TEXT    NOT NULL,
    key           TEXT    NOT NULL,
    event         TEXT    NOT NULL,
    fencing_token INTEGER NOT NULL,
    owner_host    TEXT,
    owner_pid     INTEGER,
    owner_attempt TEXT,
    actor         TEXT,
    reason        TEXT,
    at            INTEGER NOT NULL
);
CREATE INDEX events_key ON events (namespace, key, id);
";

pub(crate) enum Outcome {
    Ready,
    Newer(i64),
}

/// Creates the schema if the file has none; refuses a newer one.
pub(crate) fn migrate(conn: &mut Connection) -> rusqlite::Result<Outcome> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version == SCHEMA_VERSION {
        return Ok(Outcome::Ready);
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Ok(Outcome::Newer(version));
    }
    if version < 1 {
        tx.execute_batch(V1)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(Outcome::Ready)
}
