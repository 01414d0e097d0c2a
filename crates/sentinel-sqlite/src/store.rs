//! `SqliteStore`: the `Store` trait on SQLite, run on the store's own threads.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rusqlite::{
    Connection, ErrorCode, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params,
};
use sentinel_core::store::{
    ClaimRequest, ClaimResponse, Completion, ListQuery, OperatorAction, OperatorResponse,
    PruneQuery, Renewal, Resolution, Store, StoreStats, Write,
};
use sentinel_core::{
    Error, Event, EventKind, FencingToken, Owner, Record, ResultKind, State, StoreError,
    StoreErrorKind, StoredResult, StoredRow, UncertainReason,
};
use tokio::sync::{Notify, oneshot};

use crate::schema;

const COLS: &str = "namespace, key, state, fencing_token, owner_host, owner_pid, owner_attempt, \
    operator, fingerprint, lease_expires_at, hard_expires_at, created_at, updated_at, \
    completed_at, retain_until, reason, result_kind, result";

/// The host clock in integer milliseconds, read by SQLite.
const NOW: &str = "SELECT CAST(ROUND(unixepoch('subsec') * 1000) AS INTEGER)";

/// How often a write that found the database locked (after the busy timeout) is tried again.
const BUSY_RETRIES: u32 = 3;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;
type Id = (String, String);

/// Builds a [`SqliteStore`].
#[derive(Debug, Clone)]
#[must_use]
pub struct SqliteStoreBuilder {
    path: String,
    threads: usize,
    busy_timeout: Duration,
    synchronous_full: bool,
}

impl SqliteStoreBuilder {
    /// Number of connections (threads) serving the store (default 4; 1 for `:memory:`).
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// How long a statement waits for another process's lock (default 5 s).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// `synchronous=NORMAL` instead of `FULL`: faster commits, but a power loss (not a process
    /// crash) may lose the last transactions — a claim reported committed could vanish and its
    /// key run again. Off by default.
    pub fn synchronous_normal(mut self, normal: bool) -> Self {
        self.synchronous_full = !normal;
        self
    }

    /// Opens (creating the file, its directory and its schema when missing) the database.
    pub async fn open(self) -> Result<SqliteStore, Error> {
        if self.threads == 0 {
            return Err(Error::InvalidInput("thread count must be positive".into()));
        }
        let memory = self.path == ":memory:";
        if !memory {
            let parent = Path::new(&self.path)
                .parent()
                .filter(|p| !p.as_os_str().is_empty());
            if let Some(dir) = parent {
                std::fs::create_dir_all(dir).map_err(|e| {
                    Error::Store(StoreError::new(
                        StoreErrorKind::Unavailable,
                        format!(
                            "cannot create the directory {} for the SQLite database: {e}",
                            dir.display()
                        ),
                    ))
                })?;
            }
            if Path::new(&self.path).is_dir() {
                return Err(Error::InvalidInput(format!(
                    "{} is a directory, not a SQLite database file",
                    self.path
                )));
            }
        }
        let threads = if memory { 1 } else { self.threads };
        let (tx, rx) = mpsc::channel::<Job>();
        // The heartbeat has a connection and thread of its own, so that renewals never queue
        // behind claims waiting for another process's lock (a private in-memory database has
        // only one connection, which it then shares).
        let (heartbeat_tx, heartbeat_rx) = if memory {
            (tx.clone(), None)
        } else {
            let (t, r) = mpsc::channel::<Job>();
            (t, Some(r))
        };
        let queues = std::iter::repeat_with({
            let rx = Arc::new(Mutex::new(rx));
            move || rx.clone()
        })
        .take(threads)
        .chain(heartbeat_rx.map(|r| Arc::new(Mutex::new(r))));
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut started = 0;
        for (i, rx) in queues.enumerate() {
            let (ready_tx, settings) = (ready_tx.clone(), self.clone());
            std::thread::Builder::new()
                .name(format!("sentinel-sqlite-{i}"))
                .spawn(move || {
                    let mut conn = match settings.connect() {
                        Ok(c) => {
                            let _ = ready_tx.send(Ok(()));
                            c
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    loop {
                        let job = {
                            let guard =
                                rx.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                            guard.recv()
                        };
                        let Ok(job) = job else {
                            return; // the store was dropped
                        };
                        // A panicking job must not take the thread (and its connection) with
                        // it: its caller sees the dropped reply as an error; the open
                        // transaction, if any, rolls back when dropped.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            job(&mut conn);
                        }));
                    }
                })
                .map_err(|e| {
                    Error::Store(StoreError::new(
                        StoreErrorKind::Unavailable,
                        format!("cannot start a SQLite thread: {e}"),
                    ))
                })?;
            started += 1;
        }
        drop(ready_tx);
        let store = SqliteStore {
            inner: Arc::new(Inner {
                jobs: Mutex::new(tx),
                heartbeat_jobs: Mutex::new(heartbeat_tx),
                path: self.path.clone(),
                changed: Mutex::default(),
            }),
        };
        // Every connection must open; the first error is the user's.
        let ready = tokio::task::spawn_blocking(move || {
            (0..started).try_for_each(|_| {
                ready_rx.recv().unwrap_or_else(|_| {
                    Err(Error::Store(StoreError::new(
                        StoreErrorKind::Unavailable,
                        "a SQLite thread died while opening the database",
                    )))
                })
            })
        });
        ready.await.map_err(|e| {
            Error::Store(StoreError::new(
                StoreErrorKind::Unavailable,
                format!("SQLite start-up failed: {e}"),
            ))
        })??;
        let path = self.path.clone();
        store
            .run(move |conn| match schema::migrate(conn) {
                Ok(schema::Outcome::Ready) => Ok(()),
                Ok(schema::Outcome::Newer(v)) => Err(StoreError::new(
                    StoreErrorKind::Schema,
                    format!(
                        "{path} has schema version {v}, newer than this build knows ({}); \
                         upgrade Sentinel",
                        schema::SCHEMA_VERSION
                    ),
                )),
                Err(e) => Err(map(&path, "create schema", &e)),
            })
            .await?;
        Ok(store)
    }

    fn connect(&self) -> Result<Connection, Error> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let fail = |what: &str, e: rusqlite::Error| Error::Store(map(&self.path, what, &e));
        let conn = Connection::open_with_flags(&self.path, flags).map_err(|e| fail("open", e))?;
        // The busy timeout first: switching to WAL itself may wait for another process.
        conn.busy_timeout(self.busy_timeout)
            .map_err(|e| fail("busy_timeout", e))?;
        if self.path != ":memory:" {
            // Switching to WAL needs a moment alone with the file and does not wait on the busy
            // handler, so connections opening a new file together retry it. WAL is persistent:
            // once one connection switched, the others find it set.
            let deadline = std::time::Instant::now() + self.busy_timeout;
            let mut pause = Duration::from_millis(1);
            let mode = loop {
                match conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0)) {
                    Ok(mode) => break mode,
                    Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                        std::thread::sleep(pause);
                        pause = (pause * 2).min(Duration::from_millis(50));
                    }
                    Err(e) => return Err(fail("enable WAL", e)),
                }
            };
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(Error::InvalidInput(format!(
                    "{}: cannot switch to WAL (journal mode stays {mode})",
                    self.path
                )));
            }
        }
        let sync = if self.synchronous_full {
            "FULL"
        } else {
            "NORMAL"
        };
        conn.pragma_update(None, "synchronous", sync)
            .map_err(|e| fail("set synchronous", e))?;
        Ok(conn)
    }
}

/// The SQLite store. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    jobs: Mutex<mpsc::Sender<Job>>,
    heartbeat_jobs: Mutex<mpsc::Sender<Job>>,
    path: String,
    /// In-process waiters; waiters in other processes poll.
    changed: Mutex<HashMap<Id, Arc<Notify>>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

fn map(path: &str, what: &str, e: &rusqlite::Error) -> StoreError {
    let (kind, message) = match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => (
            StoreErrorKind::Busy,
            format!("{path}: {what}: the database stayed locked by another process"),
        ),
        Some(ErrorCode::ReadOnly) => (
            StoreErrorKind::Other,
            format!("{path}: {what}: the database is read-only"),
        ),
        Some(ErrorCode::NotADatabase) => (
            StoreErrorKind::Schema,
            format!("{path}: {what}: the file is not a SQLite database"),
        ),
        Some(ErrorCode::CannotOpen) => (
            StoreErrorKind::Unavailable,
            format!("{path}: {what}: cannot open the database file"),
        ),
        Some(ErrorCode::DiskFull) => (
            StoreErrorKind::Other,
            format!("{path}: {what}: the disk is full"),
        ),
        _ => (StoreErrorKind::Other, format!("{path}: {what}: {e}")),
    };
    StoreError::new(kind, message)
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn token_param(t: FencingToken) -> rusqlite::Result<i64> {
    t.to_i64()
        .ok_or_else(|| rusqlite::Error::ToSqlConversionFailure("token out of range".into()))
}

fn now(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row(NOW, [], |r| r.get(0))
}

fn owner(host: Option<String>, pid: Option<i64>, attempt: Option<String>) -> Option<Owner> {
    match (host, pid.and_then(|p| u32::try_from(p).ok()), attempt) {
        (Some(h), Some(p), Some(a)) => Some(Owner::new(h, p, a)),
        _ => None,
    }
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredRow> {
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
        state: State::from_str(&state).map_err(|_| bad(format!("unknown state {state}")))?,
        fencing_token: FencingToken::from_i64(token).ok_or_else(|| bad("negative token".into()))?,
        owner: owner(r.get(4)?, r.get(5)?, r.get(6)?),
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

fn load_row(conn: &Connection, namespace: &str, key: &str) -> rusqlite::Result<Option<StoredRow>> {
    conn.prepare_cached(&format!(
        "SELECT {COLS} FROM executions WHERE namespace = ?1 AND key = ?2"
    ))?
    .query_row(params![namespace, key], row)
    .optional()
}

#[allow(clippy::too_many_arguments)]
fn log(
    tx: &Transaction<'_>,
    namespace: &str,
    key: &str,
    event: EventKind,
    token: FencingToken,
    owner: Option<&Owner>,
    actor: Option<&str>,
    reason: Option<&str>,
    at: i64,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO events (namespace, key, event, fencing_token, owner_host, owner_pid,
             owner_attempt, actor, reason, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        namespace,
        key,
        event.as_str(),
        token_param(token)?,
        owner.map(|o| o.host.as_str()),
        owner.map(|o| i64::from(o.pid)),
        owner.map(|o| o.attempt.as_str()),
        actor,
        reason,
        at
    ])?;
    Ok(())
}

fn next_token(tx: &Transaction<'_>) -> rusqlite::Result<FencingToken> {
    let value: i64 = tx
        .prepare_cached(
            "UPDATE counters SET value = value + 1 WHERE name = 'fencing_token' RETURNING value",
        )?
        .query_row([], |r| r.get(0))?;
    FencingToken::from_i64(value).ok_or_else(|| rusqlite::Error::IntegralValueOutOfRange(0, value))
}

/// Runs `f` in a `BEGIN IMMEDIATE` transaction with the SQLite clock, retrying a bounded number
/// of times when the database stays locked past the busy timeout.
fn write<R>(
    conn: &mut Connection,
    mut f: impl FnMut(&Transaction<'_>, i64) -> rusqlite::Result<R>,
) -> rusqlite::Result<R> {
    let mut attempt = 0;
    loop {
        let result = (|| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
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

impl SqliteStore {
    /// Starts building a store on a file path (`:memory:` for a private in-memory database).
    pub fn builder(path: impl Into<String>) -> SqliteStoreBuilder {
        SqliteStoreBuilder {
            path: path.into(),
            threads: 4,
            busy_timeout: Duration::from_secs(5),
            synchronous_full: true,
        }
    }

    /// Opens a database file with default settings, creating it when missing.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::builder(path.as_ref().to_string_lossy().into_owned())
            .open()
            .await
    }

    /// Parses `sqlite://PATH` (`sqlite:///abs/path.db`, `sqlite://rel.db`) or `sqlite::memory:`
    /// into a path for [`SqliteStore::builder`].
    pub fn path_from_url(url: &str) -> Result<String, Error> {
        if url == "sqlite::memory:" || url == "sqlite://:memory:" {
            return Ok(":memory:".into());
        }
        match url.strip_prefix("sqlite://") {
            Some(path) if !path.is_empty() => Ok(path.to_owned()),
            _ => Err(Error::InvalidInput(format!(
                "`{url}` is not a SQLite URL: use sqlite:///abs/path.db, sqlite://rel.db or sqlite::memory:"
            ))),
        }
    }

    /// The database path.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(&self.inner.path)
    }

    async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        self.run_on(&self.inner.jobs, f).await
    }

    async fn run_on<R: Send + 'static>(
        &self,
        queue: &Mutex<mpsc::Sender<Job>>,
        f: impl FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let _ = tx.send(f(conn));
        });
        let sent = queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .send(job);
        if sent.is_err() {
            return Err(StoreError::new(
                StoreErrorKind::Unavailable,
                "SQLite threads stopped",
            ));
        }
        rx.await
            .map_err(|_| StoreError::new(StoreErrorKind::Other, "a SQLite thread panicked"))?
    }

    /// Runs a closure on a connection, mapping its errors.
    async fn with<R: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<R> + Send + 'static,
    ) -> Result<R, StoreError> {
        let path = self.inner.path.clone();
        self.run(move |conn| f(conn).map_err(|e| map(&path, what, &e)))
            .await
    }

    fn signal(&self, namespace: &str, key: &str) {
        let notify = self
            .inner
            .changed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&(namespace.to_owned(), key.to_owned()));
        if let Some(n) = notify {
            n.notify_waiters();
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn claim(&self, r: &ClaimRequest) -> Result<ClaimResponse, StoreError> {
        let r = r.clone();
        self.with("claim", move |conn| {
            // Read first: a replay takes no write lock.
            let now_ms = now(conn)?;
            if let Some(existing) = load_row(conn, &r.namespace, &r.key)? {
                return Ok(ClaimResponse::Existing(existing.into_record(time(now_ms))));
            }
            write(conn, |tx, now| {
                if let Some(existing) = load_row(tx, &r.namespace, &r.key)? {
                    return Ok(ClaimResponse::Existing(existing.into_record(time(now))));
                }
                let token = next_token(tx)?;
                let row = StoredRow {
                    namespace: r.namespace.clone(),
                    key: r.key.clone(),
                    state: State::Running,
                    fencing_token: token,
                    owner: Some(r.owner.clone()),
                    operator: None,
                    fingerprint: r.fingerprint.clone(),
                    lease_expires_at: Some(time(now.saturating_add(ms(r.ttl)))),
                    hard_expires_at: Some(time(now.saturating_add(ms(r.hard_ttl)))),
                    created_at: time(now),
                    updated_at: time(now),
                    completed_at: None,
                    retain_until: None,
                    reason: None,
                    result: None,
                };
                tx.prepare_cached(
                    "INSERT INTO executions (namespace, key, state, fencing_token, owner_host,
                         owner_pid, owner_attempt, fingerprint, lease_expires_at, hard_expires_at,
                         created_at, updated_at)
                     VALUES (?1, ?2, 'running', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
                )?
                .execute(params![
                    r.namespace,
                    r.key,
                    token_param(token)?,
                    r.owner.host,
                    i64::from(r.owner.pid),
                    r.owner.attempt,
                    r.fingerprint,
                    now.saturating_add(ms(r.ttl)),
                    now.saturating_add(ms(r.hard_ttl)),
                    now
                ])?;
                log(
                    tx,
                    &r.namespace,
                    &r.key,
                    EventKind::Acquired,
                    token,
                    Some(&r.owner),
                    None,
                    None,
                    now,
                )?;
                Ok(ClaimResponse::Acquired(row.clone().into_record(time(now))))
            })
        })
        .await
    }

    async fn heartbeat(&self, renewals: &[Renewal]) -> Result<Vec<Option<SystemTime>>, StoreError> {
        let renewals = renewals.to_vec();
        let path = self.inner.path.clone();
        self.run_on(&self.inner.heartbeat_jobs, move |conn| {
            write(conn, |tx, now| {
                let mut stmt = tx.prepare_cached(
                    "UPDATE executions
                     SET lease_expires_at = MIN(?4 + ?5, hard_expires_at), updated_at = ?4
                     WHERE namespace = ?1 AND key = ?2 AND fencing_token = ?3
                       AND state = 'running' AND lease_expires_at > ?4
                     RETURNING lease_expires_at",
                )?;
                renewals
                    .iter()
                    .map(|r| {
                        stmt.query_row(
                            params![r.namespace, r.key, token_param(r.token)?, now, ms(r.ttl)],
                            |row| row.get::<_, i64>(0),
                        )
                        .optional()
                        .map(|lease| lease.map(time))
                    })
                    .collect()
            })
            .map_err(|e| map(&path, "heartbeat", &e))
        })
        .await
    }

    async fn complete(&self, c: &Completion) -> Result<Write, StoreError> {
        let c = c.clone();
        let (ns, key) = (c.namespace.clone(), c.key.clone());
        let write_result = self
            .with("complete", move |conn| {
                write(conn, |tx, now| {
                    let retain = c.retain_for.map(|d| now.saturating_add(ms(d)));
                    let updated = tx
                        .prepare_cached(&format!(
                            "UPDATE executions
                             SET state = 'completed', result_kind = ?4, result = ?5,
                                 completed_at = ?6, updated_at = ?6, reason = NULL,
                                 retain_until = ?7
                             WHERE namespace = ?1 AND key = ?2 AND fencing_token = ?3
                               AND state = 'running'
                             RETURNING {COLS}"
                        ))?
                        .query_row(
                            params![
                                c.namespace,
                                c.key,
                                token_param(c.token)?,
                                c.result.kind.as_str(),
                                c.result.json,
                                now,
                                retain
                            ],
                            row,
                        )
                        .optional()?;
                    let Some(updated) = updated else {
                        return Ok(Write::Fenced);
                    };
                    let event = match c.result.kind {
                        ResultKind::Error => EventKind::Failed,
                        _ => EventKind::Completed,
                    };
                    log(
                        tx,
                        &c.namespace,
                        &c.key,
                        event,
                        c.token,
                        updated.owner.as_ref(),
                        None,
                        None,
                        now,
                    )?;
                    Ok(Write::Applied(Some(updated.into_record(time(now)))))
                })
            })
            .await?;
        self.signal(&ns, &key);
        Ok(write_result)
    }

    async fn release(
        &self,
        namespace: &str,
        key: &str,
        token: FencingToken,
    ) -> Result<Write, StoreError> {
        let (ns, k) = (namespace.to_owned(), key.to_owned());
        let result = self
            .with("release", move |conn| {
                write(conn, |tx, now| {
                    let deleted = tx
                        .prepare_cached(
                            "DELETE FROM executions
                             WHERE namespace = ?1 AND key = ?2 AND fencing_token = ?3
                               AND state = 'running' AND lease_expires_at > ?4
                             RETURNING owner_host, owner_pid, owner_attempt",
                        )?
                        .query_row(params![ns, k, token_param(token)?, now], |r| {
                            Ok(owner(r.get(0)?, r.get(1)?, r.get(2)?))
                        })
                        .optional()?;
                    let Some(o) = deleted else {
                        return Ok(Write::Fenced);
                    };
                    log(
                        tx,
                        &ns,
                        &k,
                        EventKind::Released,
                        token,
                        o.as_ref(),
                        None,
                        None,
                        now,
                    )?;
                    Ok(Write::Applied(None))
                })
            })
            .await?;
        self.signal(namespace, key);
        Ok(result)
    }

    async fn mark_uncertain(
        &self,
        namespace: &str,
        key: &str,
        token: FencingToken,
        reason: UncertainReason,
    ) -> Result<Write, StoreError> {
        let (ns, k) = (namespace.to_owned(), key.to_owned());
        let result = self
            .with("mark_uncertain", move |conn| {
                write(conn, |tx, now| {
                    let updated = tx
                        .prepare_cached(&format!(
                            "UPDATE executions
                             SET state = 'uncertain', reason = ?4, updated_at = ?5,
                                 lease_expires_at = MIN(lease_expires_at, ?5)
                             WHERE namespace = ?1 AND key = ?2 AND fencing_token = ?3
                               AND state = 'running'
                             RETURNING {COLS}"
                        ))?
                        .query_row(
                            params![ns, k, token_param(token)?, reason.as_str(), now],
                            row,
                        )
                        .optional()?;
                    let Some(updated) = updated else {
                        return Ok(Write::Fenced);
                    };
                    log(
                        tx,
                        &ns,
                        &k,
                        EventKind::Uncertain,
                        token,
                        updated.owner.as_ref(),
                        None,
                        Some(reason.as_str()),
                        now,
                    )?;
                    Ok(Write::Applied(Some(updated.into_record(time(now)))))
                })
            })
            .await?;
        self.signal(namespace, key);
        Ok(result)
    }

    async fn load(&self, namespace: &str, key: &str) -> Result<Option<Record>, StoreError> {
        let (ns, k) = (namespace.to_owned(), key.to_owned());
        self.with("load", move |conn| {
            let now = now(conn)?;
            Ok(load_row(conn, &ns, &k)?.map(|r| r.into_record(time(now))))
        })
        .await
    }

    async fn list(&self, q: &ListQuery) -> Result<Vec<Record>, StoreError> {
        let q = q.clone();
        self.with("list", move |conn| {
            let now = now(conn)?;
            let (after_ns, after_key) = match &q.after {
                Some((n, k)) => (Some(n.clone()), Some(k.clone())),
                None => (None, None),
            };
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLS} FROM executions
                 WHERE (?1 IS NULL OR namespace = ?1)
                   AND (?2 IS NULL OR namespace > ?2 OR (namespace = ?2 AND key > ?3))
                   AND (?4 IS NULL OR (CASE WHEN state = 'running'
                        AND (lease_expires_at IS NULL OR lease_expires_at <= ?5)
                        THEN 'uncertain' ELSE state END) = ?4)
                 ORDER BY namespace, key
                 LIMIT ?6"
            ))?;
            let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
            let rows = stmt.query_map(
                params![
                    q.namespace,
                    after_ns,
                    after_key,
                    q.state.map(State::as_str),
                    now,
                    limit
                ],
                row,
            )?;
            rows.map(|r| r.map(|r| r.into_record(time(now)))).collect()
        })
        .await
    }

    async fn history(
        &self,
        namespace: &str,
        key: &str,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let (ns, k) = (namespace.to_owned(), key.to_owned());
        self.with("history", move |conn| {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let mut stmt = conn.prepare_cached(
                "SELECT event, fencing_token, owner_host, owner_pid, owner_attempt, actor, reason, at
                 FROM events WHERE namespace = ?1 AND key = ?2 ORDER BY id LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![ns, k, limit], |r| {
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
                    owner(r.get(2)?, r.get(3)?, r.get(4)?),
                    r.get(5)?,
                    r.get(6)?,
                    time(r.get(7)?),
                ))
            })?;
            rows.collect()
        })
        .await
    }

    async fn reconcile(
        &self,
        a: &OperatorAction,
        force: bool,
    ) -> Result<OperatorResponse, StoreError> {
        let a = a.clone();
        self.with("reconcile", move |conn| {
            write(conn, |tx, now| {
                let Some(current) = load_row(tx, &a.namespace, &a.key)? else {
                    return Ok(OperatorResponse::NotFound);
                };
                let record = current.clone().into_record(time(now));
                let allowed = record.state == State::Uncertain
                    || (force && record.state == State::Reconciling);
                if !allowed {
                    return Ok(OperatorResponse::Refused(record));
                }
                let token = next_token(tx)?;
                let updated = tx
                    .prepare_cached(&format!(
                        "UPDATE executions
                         SET state = 'reconciling', fencing_token = ?3, operator = ?4,
                             reason = 'reconciling', updated_at = ?5,
                             lease_expires_at = MIN(COALESCE(lease_expires_at, ?5), ?5)
                         WHERE namespace = ?1 AND key = ?2
                         RETURNING {COLS}"
                    ))?
                    .query_row(
                        params![a.namespace, a.key, token_param(token)?, a.actor, now],
                        row,
                    )?;
                log(
                    tx,
                    &a.namespace,
                    &a.key,
                    EventKind::Reconciling,
                    token,
                    None,
                    Some(&a.actor),
                    a.reason.as_deref(),
                    now,
                )?;
                Ok(OperatorResponse::Applied(Some(
                    updated.into_record(time(now)),
                )))
            })
        })
        .await
    }

    async fn resolve(
        &self,
        a: &OperatorAction,
        resolution: &Resolution,
        expected_token: Option<FencingToken>,
    ) -> Result<OperatorResponse, StoreError> {
        let (a2, resolution) = (a.clone(), resolution.clone());
        let response = self
            .with("resolve", move |conn| {
                let a = a2;
                write(conn, |tx, now| {
                    let Some(current) = load_row(tx, &a.namespace, &a.key)? else {
                        return Ok(OperatorResponse::NotFound);
                    };
                    let record = current.clone().into_record(time(now));
                    if record.state != State::Reconciling
                        || expected_token.is_some_and(|t| t != record.fencing_token)
                    {
                        return Ok(OperatorResponse::Refused(record));
                    }
                    let token = record.fencing_token;
                    let (event, after) = match &resolution {
                        Resolution::Reset => {
                            tx.prepare_cached(
                                "DELETE FROM executions WHERE namespace = ?1 AND key = ?2",
                            )?
                            .execute(params![a.namespace, a.key])?;
                            (EventKind::Reset, None)
                        }
                        Resolution::Complete(result) => {
                            let updated = tx
                                .prepare_cached(&format!(
                                    "UPDATE executions
                                     SET state = 'completed', result_kind = ?3, result = ?4,
                                         reason = NULL, operator = ?5, completed_at = ?6,
                                         updated_at = ?6
                                     WHERE namespace = ?1 AND key = ?2
                                     RETURNING {COLS}"
                                ))?
                                .query_row(
                                    params![
                                        a.namespace,
                                        a.key,
                                        result.as_ref().map(|r| r.kind.as_str()),
                                        result.as_ref().map(|r| r.json.as_str()),
                                        a.actor,
                                        now
                                    ],
                                    row,
                                )?;
                            (EventKind::Resolved, Some(updated.into_record(time(now))))
                        }
                        _ => {
                            return Err(rusqlite::Error::InvalidParameterName(
                                "unknown resolution".into(),
                            ));
                        }
                    };
                    log(
                        tx,
                        &a.namespace,
                        &a.key,
                        event,
                        token,
                        None,
                        Some(&a.actor),
                        a.reason.as_deref(),
                        now,
                    )?;
                    Ok(OperatorResponse::Applied(after))
                })
            })
            .await?;
        self.signal(&a.namespace, &a.key);
        Ok(response)
    }

    async fn forget(&self, a: &OperatorAction) -> Result<OperatorResponse, StoreError> {
        let a = a.clone();
        self.with("forget", move |conn| {
            write(conn, |tx, now| {
                let Some(current) = load_row(tx, &a.namespace, &a.key)? else {
                    return Ok(OperatorResponse::NotFound);
                };
                let record = current.into_record(time(now));
                if record.state != State::Completed {
                    return Ok(OperatorResponse::Refused(record));
                }
                tx.prepare_cached("DELETE FROM executions WHERE namespace = ?1 AND key = ?2")?
                    .execute(params![a.namespace, a.key])?;
                log(
                    tx,
                    &a.namespace,
                    &a.key,
                    EventKind::Forgotten,
                    record.fencing_token,
                    None,
                    Some(&a.actor),
                    a.reason.as_deref(),
                    now,
                )?;
                Ok(OperatorResponse::Applied(None))
            })
        })
        .await
    }

    async fn prune(&self, q: &PruneQuery) -> Result<u64, StoreError> {
        let older = q.older_than.map(ms);
        self.with("prune", move |conn| {
            let mut total = 0u64;
            loop {
                let n = write(conn, |tx, now| {
                    let doomed: Vec<(String, String, i64)> = tx
                        .prepare_cached(
                            "SELECT namespace, key, fencing_token FROM executions
                             WHERE state = 'completed'
                               AND (retain_until <= ?1
                                    OR (?2 IS NOT NULL AND completed_at <= ?1 - ?2))
                             LIMIT 1000",
                        )?
                        .query_map(params![now, older], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                        })?
                        .collect::<rusqlite::Result<_>>()?;
                    for (ns, k, token) in &doomed {
                        tx.prepare_cached(
                            "DELETE FROM executions WHERE namespace = ?1 AND key = ?2",
                        )?
                        .execute(params![ns, k])?;
                        tx.prepare_cached("DELETE FROM events WHERE namespace = ?1 AND key = ?2")?
                            .execute(params![ns, k])?;
                        let token = FencingToken::from_i64(*token).unwrap_or(FencingToken::new(0));
                        log(tx, ns, k, EventKind::Pruned, token, None, None, None, now)?;
                    }
                    Ok(doomed.len())
                })?;
                total += n as u64;
                if n < 1000 {
                    return Ok(total);
                }
            }
        })
        .await
    }

    async fn wait_for_change(
        &self,
        namespace: &str,
        key: &str,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        let id = (namespace.to_owned(), key.to_owned());
        let notify = self
            .inner
            .changed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(id.clone())
            .or_default()
            .clone();
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let still_running = self
            .load(namespace, key)
            .await?
            .is_some_and(|r| r.state == State::Running);
        if still_running {
            // Changes by other processes are seen when this times out and the engine re-reads.
            let _ = tokio::time::timeout(timeout, notified).await;
        }
        sentinel_core::store::forget_notifier(&self.inner.changed, &id, &notify);
        Ok(())
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.with("stats", move |conn| {
            let now = now(conn)?;
            let (count, oldest): (i64, Option<i64>) = conn.query_row(
                "SELECT count(*), min(CASE WHEN state = 'running' THEN lease_expires_at ELSE updated_at END)
                 FROM executions
                 WHERE state IN ('uncertain', 'reconciling')
                    OR (state = 'running' AND (lease_expires_at IS NULL OR lease_expires_at <= ?1))",
                params![now],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let mut stats = StoreStats::default();
            stats.uncertain = u64::try_from(count).unwrap_or(0);
            stats.oldest_uncertain_since = oldest.map(time);
            stats.now = Some(time(now));
            Ok(stats)
        })
        .await
    }
}
