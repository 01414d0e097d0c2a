//! Rows in and out of SQLite: the record columns, the event log, the token counter, and the
//! write transaction every transition runs in.

use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use sentinel_core::store::columns::from_epoch_millis as time;
use sentinel_core::{
    Event, EventKind, FencingToken, Owner, ResultKind, State, StoredResult, StoredRow,
    UncertainReason,
};

use crate::error::is_busy;

/// Columns of a record, in the order [`row`] reads them.
pub(crate) const COLS: &str = "namespace, key, state, fencing_token, owner_host, owner_pid, \
    owner_attempt, operator, fingerprint, lease_expires_at, hard_expires_at, created_at, \
    updated_at, completed_at, retain_until, reason, result_kind, result";

/// The host clock in integer milliseconds, read by SQLite.
const NOW: &str = "SELECT CAST(ROUND(unixepoch('subsec') * 1000) AS INTEGER)";

/// How often a write that found the database locked (after the busy timeout) is tried again.
const BUSY_RETRIES: u32 = 3;

pub(crate) fn token_param(t: FencingToken) -> rusqlite::Result<i64> {
    sentinel_core::store::columns::token(t)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))
}

pub(crate) fn now(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row(NOW, [], |r| r.get(0))
}

/// The state of a row per the store's clock, in SQL; `now` names the parameter that holds it.
pub(crate) fn derived_state(now: &str) -> String {
    format!(
        "(CASE WHEN state = 'running' AND (lease_expires_at IS NULL OR lease_expires_at <= {now}) \
         THEN 'uncertain' ELSE state END)"
    )
}

/// The columns [`event`] reads, in its order.
pub(crate) const EVENT_COLS: &str =
    "event, fencing_token, owner_host, owner_pid, owner_attempt, actor, reason, at";

/// An event from the columns of [`EVENT_COLS`].
pub(crate) fn event(r: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
    let kind: String = r.get(0)?;
    let token: i64 = r.get(1)?;
    let bad = |w: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            w.to_owned().into(),
        )
    };
    Ok(Event::new(
        EventKind::parse(&kind).ok_or_else(|| bad("unknown event"))?,
        FencingToken::from_i64(token).ok_or_else(|| bad("negative token"))?,
        Owner::from_columns(r.get(2)?, r.get(3)?, r.get(4)?),
        r.get(5)?,
        r.get(6)?,
        time(r.get(7)?),
    ))
}

/// A state as the store spells it.
pub(crate) fn state(s: &str) -> rusqlite::Result<State> {
    State::from_str(s).map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("unknown state {s}").into(),
        )
    })
}

pub(crate) fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredRow> {
    let state: String = r.get(2)?;
    let token: i64 = r.get(3)?;
    let kind: Option<String> = r.get(16)?;
    let result: Option<String> = r.get(17)?;
    let reason: Option<String> = r.get(15)?;
    let bad = |what: String| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, what.into())
    };
    Ok(StoredRow {
        namespace: r.get(0)?,
        key: r.get(1)?,
        state: self::state(&state)?,
        fencing_token: FencingToken::from_i64(token).ok_or_else(|| bad("negative token".into()))?,
        owner: Owner::from_columns(r.get(4)?, r.get(5)?, r.get(6)?),
        operator: r.get(7)?,
        fingerprint: r.get(8)?,
        lease_expires_at: r.get::<_, Option<i64>>(9)?.map(time),
        hard_expires_at: r.get::<_, Option<i64>>(10)?.map(time),
        created_at: time(r.get(11)?),
        updated_at: time(r.get(12)?),
        completed_at: r.get::<_, Option<i64>>(13)?.map(time),
        retain_until: r.get::<_, Option<i64>>(14)?.map(time),
        reason: reason.as_deref().map(UncertainReason::parse),
        result: match (kind.as_deref().and_then(ResultKind::parse), result) {
            (Some(k), Some(json)) => Some(StoredResult::new(k, json)),
            _ => None,
        },
    })
}

pub(crate) fn load_row(
    conn: &Connection,
    namespace: &str,
    key: &str,
) -> rusqlite::Result<Option<StoredRow>> {
    conn.prepare_cached(&format!(
        "SELECT {COLS} FROM executions WHERE namespace = ?1 AND key = ?2"
    ))?
    .query_row(params![namespace, key], row)
    .optional()
}

/// One event row, before its key and time are known.
pub(crate) struct Entry<'a> {
    kind: EventKind,
    token: FencingToken,
    owner: Option<&'a Owner>,
    actor: Option<&'a str>,
    reason: Option<&'a str>,
}

impl<'a> Entry<'a> {
    /// A worker's transition.
    pub(crate) fn worker(kind: EventKind, token: FencingToken, owner: Option<&'a Owner>) -> Self {
        Self {
            kind,
            token,
            owner,
            actor: None,
            reason: None,
        }
    }

    /// An operator's transition, with who and why.
    pub(crate) fn operator(
        kind: EventKind,
        token: FencingToken,
        actor: &'a str,
        reason: Option<&'a str>,
    ) -> Self {
        Self {
            kind,
            token,
            owner: None,
            actor: Some(actor),
            reason,
        }
    }

    /// Sets why.
    pub(crate) fn because(mut self, reason: &'a str) -> Self {
        self.reason = Some(reason);
        self
    }
}

/// Appends one event in the transition's own transaction.
pub(crate) fn log(
    tx: &Transaction<'_>,
    namespace: &str,
    key: &str,
    entry: Entry<'_>,
    at: i64,
) -> rusqlite::Result<()> {
    let owner = entry.owner;
    tx.prepare_cached(
        "INSERT INTO events (namespace, key, event, fencing_token, owner_host, owner_pid,
             owner_attempt, actor, reason, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        namespace,
        key,
        entry.kind.as_str(),
        token_param(entry.token)?,
        owner.map(|o| o.host.as_str()),
        owner.map(|o| i64::from(o.pid)),
        owner.map(|o| o.attempt.as_str()),
        entry.actor,
        entry.reason,
        at
    ])?;
    Ok(())
}

pub(crate) fn next_token(tx: &Transaction<'_>) -> rusqlite::Result<FencingToken> {
    let value: i64 = tx
        .prepare_cached(
            "UPDATE counters SET value = value + 1 WHERE name = 'fencing_token' RETURNING value",
        )?
        .query_row([], |r| r.get(0))?;
    FencingToken::from_i64(value).ok_or_else(|| rusqlite::Error::IntegralValueOutOfRange(0, value))
}

/// One of the store's connections, with the lock its write transactions share.
pub(crate) struct Conn {
    conn: Connection,
    writes: Arc<Mutex<()>>,
}

impl Conn {
    /// `conn`, writing under `writes` (one lock for every connection of a store).
    pub(crate) fn new(conn: Connection, writes: Arc<Mutex<()>>) -> Self {
        Self { conn, writes }
    }
}

impl Deref for Conn {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

/// Runs `f` in a `BEGIN IMMEDIATE` transaction with the SQLite clock, retrying a bounded number
/// of times when the database stays locked past the busy timeout.
///
/// The store's connections take turns through an in-process lock before they ask SQLite for
/// its write lock. Left to SQLite's busy handler, which sleeps and polls with growing pauses,
/// a waiting writer kept losing to ones that came later: with eight concurrent fresh requests
/// the slowest 1% waited 2.5 s. Other processes still meet the busy timeout.
pub(crate) fn write<R>(
    conn: &mut Conn,
    mut f: impl FnMut(&Transaction<'_>, i64) -> rusqlite::Result<R>,
) -> rusqlite::Result<R> {
    let writes = Arc::clone(&conn.writes);
    let _turn = writes
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut attempt = 0;
    loop {
        let result = (|| {
            let tx = conn
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let now = now(&tx)?;
            let r = f(&tx, now)?;
            tx.commit()?;
            Ok(r)
        })();
        match result {
            Err(e) if is_busy(&e) && attempt < BUSY_RETRIES => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(10 * u64::from(attempt)));
            }
            other => return other,
        }
    }
}
