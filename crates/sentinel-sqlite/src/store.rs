//! `SqliteStore`: the `Store` trait on SQLite, run on the store's own threads. Every method is
//! one job on a connection thread; every write one `BEGIN IMMEDIATE` transaction that applies the
//! transition and appends its event.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use sentinel_core::store::columns::{epoch_millis, from_epoch_millis as time, millis as ms};
use sentinel_core::store::{
    ClaimRequest, ClaimResponse, Completion, KeyedEvent, ListOrder, ListQuery, OperatorAction,
    OperatorResponse, PruneQuery, Renewal, Resolution, StateCount, Store, StoreStats, Waiters,
    Write,
};
use sentinel_core::transition;
use sentinel_core::{
    Error, Event, EventKind, FencingToken, Owner, Record, ResultKind, State, StoreError, StoredRow,
    UncertainReason,
};
use tokio::sync::oneshot;

use crate::builder::{SqliteStoreBuilder, Workers};
use crate::dispatch::Dispatch;
use crate::error::map;
use crate::row::{
    COLS, Conn, EVENT_COLS, Entry, derived_state, event, load_row, log, next_token, now, row,
    state, token_param, write,
};

/// A unit of work for a connection thread. It returns its reply to the caller, which the thread
/// sends once it is ready for the next job (see [`Dispatch`]).
pub(crate) type Job = Box<dyn FnOnce(&mut Conn) -> Reply + Send>;

/// Sends a job's answer to its caller.
pub(crate) type Reply = Box<dyn FnOnce() + Send>;

/// The SQLite store. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    jobs: Arc<Dispatch>,
    heartbeat_jobs: Arc<Dispatch>,
    path: String,
    /// In-process waiters; waiters in other processes poll.
    waiters: Waiters,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.jobs.close();
        self.heartbeat_jobs.close();
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    pub(crate) fn new(workers: Workers, path: String) -> Self {
        Self {
            inner: Arc::new(Inner {
                jobs: workers.jobs,
                heartbeat_jobs: workers.heartbeat_jobs,
                path,
                waiters: Waiters::default(),
            }),
        }
    }

    /// Starts building a store on a file path (`:memory:` for a private in-memory database).
    pub fn builder(path: impl Into<String>) -> SqliteStoreBuilder {
        SqliteStoreBuilder::new(path.into())
    }

    /// Opens a database file with default settings, creating it when missing.
    ///
    /// # Errors
    ///
    /// Those of [`SqliteStoreBuilder::build`].
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::builder(path.as_ref().to_string_lossy().into_owned())
            .build()
            .await
    }

    /// Parses `sqlite://PATH` (`sqlite:///abs/path.db`, `sqlite://rel.db`) or `sqlite::memory:`
    /// into a path for [`SqliteStore::builder`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for anything else.
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

    pub(crate) async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Conn) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        self.run_on(&self.inner.jobs, move |conn, _| f(conn)).await
    }

    /// Queues `f` for a connection thread. `f` is told whether its caller is still waiting: a
    /// caller that gave up (the engine stops waiting for a heartbeat at its local deadline) must
    /// not have its work start late, nor commit late (L6).
    async fn run_on<R: Send + 'static>(
        &self,
        queue: &Dispatch,
        f: impl FnOnce(&mut Conn, &dyn Fn() -> bool) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            if tx.is_closed() {
                return Box::new(|| {}); // the caller gave up before its work started
            }
            let r = f(conn, &|| tx.is_closed());
            Box::new(move || {
                let _ = tx.send(r);
            })
        });
        if !queue.send(job) {
            return Err(StoreError::unavailable("SQLite threads stopped"));
        }
        rx.await
            .map_err(|_| StoreError::other("a SQLite thread panicked"))?
    }

    /// Runs a closure on a connection, mapping its errors.
    async fn with<R: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce(&mut Conn) -> rusqlite::Result<R> + Send + 'static,
    ) -> Result<R, StoreError> {
        let path = self.inner.path.clone();
        self.run(move |conn| f(conn).map_err(|e| map(&path, what, &e)))
            .await
    }

    fn signal(&self, namespace: &str, key: &str) {
        self.inner.waiters.notify(namespace, key);
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
                let row = StoredRow::claimed(&r, token, time(now));
                let at = |t: Option<SystemTime>| t.map(epoch_millis);
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
                    at(row.lease_expires_at),
                    at(row.hard_expires_at),
                    now
                ])?;
                log(
                    tx,
                    &r.namespace,
                    &r.key,
                    Entry::worker(EventKind::Acquired, token, Some(&r.owner)),
                    now,
                )?;
                Ok(ClaimResponse::Acquired(row.into_record(time(now))))
            })
        })
        .await
    }

    async fn heartbeat(&self, renewals: &[Renewal]) -> Result<Vec<Option<SystemTime>>, StoreError> {
        let renewals = renewals.to_vec();
        let path = self.inner.path.clone();
        self.run_on(&self.inner.heartbeat_jobs, move |conn, given_up| {
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
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .and_then(|renewed| {
                        // Waited for the lock past the engine's patience: the engine already
                        // declared these leases lost, so do not extend them now (roll back).
                        if given_up() {
                            Err(rusqlite::Error::ToSqlConversionFailure(
                                "the heartbeat was given up while it waited for the lock".into(),
                            ))
                        } else {
                            Ok(renewed)
                        }
                    })
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
                               AND (?4 <> 'error' OR lease_expires_at > ?6)
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
                        Entry::worker(event, c.token, updated.owner.as_ref()),
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
                            Ok(Owner::from_columns(r.get(0)?, r.get(1)?, r.get(2)?))
                        })
                        .optional()?;
                    let Some(o) = deleted else {
                        return Ok(Write::Fenced);
                    };
                    log(
                        tx,
                        &ns,
                        &k,
                        Entry::worker(EventKind::Released, token, o.as_ref()),
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
                        Entry::worker(EventKind::Uncertain, token, updated.owner.as_ref())
                            .because(reason.as_str()),
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
            let (order, after) = match q.order {
                ListOrder::Oldest => (
                    "created_at, namespace, key",
                    "(created_at, namespace, key) > (?2, ?3, ?4)",
                ),
                ListOrder::Newest => (
                    "created_at DESC, namespace DESC, key DESC",
                    "(created_at, namespace, key) < (?2, ?3, ?4)",
                ),
                _ => ("namespace, key", "(namespace, key) > (?3, ?4)"),
            };
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLS} FROM executions
                 WHERE (?1 IS NULL OR namespace = ?1)
                   AND (?3 IS NULL OR {after})
                   AND (?5 IS NULL OR {state} = ?5)
                   AND (?7 IS NULL OR substr(key, 1, length(?7)) = ?7)
                 ORDER BY {order}
                 LIMIT ?8",
                state = derived_state("?6")
            ))?;
            let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
            let after = q.after.as_ref();
            let rows = stmt.query_map(
                params![
                    q.namespace,
                    after.map(|c| epoch_millis(c.created_at)),
                    after.map(|c| c.namespace.as_str()),
                    after.map(|c| c.key.as_str()),
                    q.state.map(State::as_str),
                    now,
                    q.key_prefix,
                    limit
                ],
                row,
            )?;
            rows.map(|r| r.map(|r| r.into_record(time(now)))).collect()
        })
        .await
    }

    async fn counts(&self) -> Result<Vec<StateCount>, StoreError> {
        self.with("counts", move |conn| {
            let now = now(conn)?;
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT namespace, {} AS s, count(*) FROM executions
                 GROUP BY namespace, s ORDER BY namespace, s",
                derived_state("?1")
            ))?;
            let rows = stmt.query_map(params![now], |r| {
                let n: i64 = r.get(2)?;
                Ok(StateCount::new(
                    r.get::<_, String>(0)?,
                    state(&r.get::<_, String>(1)?)?,
                    u64::try_from(n).unwrap_or(0),
                ))
            })?;
            rows.collect()
        })
        .await
    }

    async fn recent_events(&self, limit: usize) -> Result<Vec<KeyedEvent>, StoreError> {
        self.with("recent_events", move |conn| {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {EVENT_COLS}, namespace, key FROM events ORDER BY id DESC LIMIT ?1"
            ))?;
            let rows = stmt.query_map(params![limit], |r| {
                Ok(KeyedEvent::new(
                    r.get::<_, String>(8)?,
                    r.get::<_, String>(9)?,
                    event(r)?,
                ))
            })?;
            rows.collect()
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
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {EVENT_COLS} FROM events WHERE namespace = ?1 AND key = ?2 ORDER BY id LIMIT ?3"
            ))?;
            let rows = stmt.query_map(params![ns, k, limit], event)?;
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
                let record = current.into_record(time(now));
                if transition::may_reconcile(&record, force).is_err() {
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
                    Entry::operator(EventKind::Reconciling, token, &a.actor, a.reason.as_deref()),
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
                    let record = current.into_record(time(now));
                    if transition::may_resolve(&record, expected_token).is_err() {
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
                        Entry::operator(event, token, &a.actor, a.reason.as_deref()),
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
                if transition::may_forget(&record).is_err() {
                    return Ok(OperatorResponse::Refused(record));
                }
                tx.prepare_cached("DELETE FROM executions WHERE namespace = ?1 AND key = ?2")?
                    .execute(params![a.namespace, a.key])?;
                log(
                    tx,
                    &a.namespace,
                    &a.key,
                    Entry::operator(
                        EventKind::Forgotten,
                        record.fencing_token,
                        &a.actor,
                        a.reason.as_deref(),
                    ),
                    now,
                )?;
                Ok(OperatorResponse::Applied(None))
            })
        })
        .await
    }

    async fn prune(&self, q: &PruneQuery) -> Result<u64, StoreError> {
        let older_than = q.older_than;
        let older = older_than.map(ms);
        let namespace = q.namespace.clone();
        self.with("prune", move |conn| {
            let mut total = 0u64;
            loop {
                let (seen, n) = write(conn, |tx, now| {
                    // The index narrows the candidates; `transition::may_prune` decides.
                    let candidates: Vec<StoredRow> = tx
                        .prepare_cached(&format!(
                            "SELECT {COLS} FROM executions
                             WHERE state = 'completed'
                               AND (?3 IS NULL OR namespace = ?3)
                               AND (retain_until <= ?1
                                    OR (?2 IS NOT NULL AND completed_at <= ?1 - ?2))
                             LIMIT 1000"
                        ))?
                        .query_map(params![now, older, namespace], row)?
                        .collect::<rusqlite::Result<_>>()?;
                    let seen = candidates.len();
                    let mut pruned: u64 = 0;
                    for row in candidates {
                        let record = row.into_record(time(now));
                        if !transition::may_prune(&record, older_than) {
                            continue;
                        }
                        let (ns, k) = (&record.namespace, &record.key);
                        tx.prepare_cached(
                            "DELETE FROM executions WHERE namespace = ?1 AND key = ?2",
                        )?
                        .execute(params![ns, k])?;
                        tx.prepare_cached("DELETE FROM events WHERE namespace = ?1 AND key = ?2")?
                            .execute(params![ns, k])?;
                        let token = record.fencing_token;
                        log(
                            tx,
                            ns,
                            k,
                            Entry::worker(EventKind::Pruned, token, None),
                            now,
                        )?;
                        pruned += 1;
                    }
                    Ok((seen, pruned))
                })?;
                total += n;
                if seen < 1000 || n == 0 {
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
        // Changes by other processes are seen when this times out and the engine re-reads.
        let still_running = async {
            let record = self.load(namespace, key).await?;
            Ok(record.is_some_and(|r| r.state == State::Running))
        };
        self.inner
            .waiters
            .wait(namespace, key, timeout, still_running)
            .await
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.with("stats", move |conn| {
            let now = now(conn)?;
            // One statement, as on PostgreSQL: the count and the oldest come from one read.
            let (count, oldest) = conn.query_row(
                &format!(
                    "WITH u AS (
                        SELECT namespace, key,
                            CASE WHEN state = 'running' THEN lease_expires_at ELSE updated_at END
                                AS since
                        FROM executions WHERE {} IN ('uncertain', 'reconciling')
                     )
                     SELECT (SELECT count(*) FROM u), o.since, o.namespace, o.key
                     FROM (SELECT 1) one
                     LEFT JOIN (SELECT * FROM u ORDER BY since, namespace, key LIMIT 1) o",
                    derived_state("?1")
                ),
                params![now],
                |r| {
                    let since: Option<i64> = r.get(1)?;
                    let ns: Option<String> = r.get(2)?;
                    let key: Option<String> = r.get(3)?;
                    Ok((r.get::<_, i64>(0)?, since.zip(ns.zip(key))))
                },
            )?;
            let mut stats = StoreStats::default();
            stats.uncertain = u64::try_from(count).unwrap_or(0);
            if let Some((since, (ns, key))) = oldest {
                stats.oldest_uncertain_since = Some(time(since));
                stats.oldest_uncertain = Some((ns, key));
            }
            stats.now = Some(time(now));
            Ok(stats)
        })
        .await
    }
}
