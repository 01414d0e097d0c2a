//! `PgStore`: the `Store` trait on PostgreSQL. Each method is one statement of `sql.rs` on a
//! pooled connection (the heartbeat on a reserved one), decoded by `row.rs`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use deadpool_postgres::{Object, Pool};
use sentinel_core::store::columns::{self, millis};
use sentinel_core::store::{
    ClaimRequest, ClaimResponse, Completion, KeyedEvent, ListOrder, ListQuery, OperatorAction,
    OperatorResponse, PruneQuery, Renewal, Resolution, StateCount, Store, StoreStats, Write,
};
use sentinel_core::{Error, Event, FencingToken, Record, State, StoreError, UncertainReason};
use tokio::sync::Mutex;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Row, Statement};

use crate::PgStoreBuilder;
use crate::connect::{PgConnector, Tls, cancel_in_background};
use crate::error::{self, Phase, map};
use crate::listen::{self, Inserted, Listener, Registry, Removal, Remover, Signal, Slot};
use crate::migrate;
use crate::row;
use crate::sql::{Sql, Stmt};

/// The PostgreSQL store. Cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    schema: String,
    sql: Sql,
    pool: Pool,
    connector: Option<PgConnector>,
    statement_timeout: Duration,
    unnamed: bool,
    /// Where connections go, for messages (`host:port`, never credentials).
    target: String,
    heartbeat: Mutex<Option<Reserved>>,
    listener: std::sync::Mutex<Slot>,
    registry: Arc<Registry>,
}

/// The heartbeat's connection, with its statement prepared.
struct Reserved {
    client: ReservedClient,
    /// Prepared once, unless statements run unnamed.
    statement: Option<Statement>,
}

enum ReservedClient {
    Own(Client),
    Pooled(Object),
}

/// A waiter's hold on this process's registration of a key; left when dropped (the
/// registration itself lingers for the next step, see [`listen::LINGER`]).
struct WaiterRegistration {
    store: PgStore,
    payload: String,
    token: i64,
}

impl Drop for WaiterRegistration {
    fn drop(&mut self) {
        let registry = &self.store.inner.registry;
        let Some(generation) = registry.leave(&self.payload, self.token) else {
            return;
        };
        self.store
            .linger(std::mem::take(&mut self.payload), generation);
    }
}

/// A `LISTEN` connection attempt in progress. However it ends — done, failed, or dropped with
/// the runtime that ran it — it leaves the slot and wakes whoever waits for it, so a stranded
/// attempt cannot keep later waiters from connecting again.
struct ListenAttempt {
    store: PgStore,
    done: Arc<tokio::sync::Notify>,
}

impl ListenAttempt {
    fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.store
            .inner
            .listener
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for ListenAttempt {
    fn drop(&mut self) {
        let mut slot = self.slot();
        if slot
            .connecting
            .as_ref()
            .is_some_and(|n| Arc::ptr_eq(n, &self.done))
        {
            slot.connecting = None;
        }
        drop(slot);
        self.done.notify_waiters();
    }
}

/// The heartbeat connection while its statement runs; cancels the statement when dropped
/// before it answered.
struct BusyHeartbeat {
    reserved: Option<Reserved>,
    cancel: Option<(tokio_postgres::CancelToken, Tls)>,
}

impl Drop for BusyHeartbeat {
    fn drop(&mut self) {
        if let Some((token, tls)) = self.cancel.take() {
            cancel_in_background(token, tls);
        }
    }
}

impl std::ops::Deref for ReservedClient {
    type Target = Client;

    fn deref(&self) -> &Client {
        match self {
            ReservedClient::Own(c) => c,
            ReservedClient::Pooled(o) => o,
        }
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("schema", &self.inner.schema)
            .finish_non_exhaustive()
    }
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

impl PgStore {
    pub(crate) fn new(
        schema: String,
        pool: Pool,
        connector: Option<PgConnector>,
        statement_timeout: Duration,
        unnamed: bool,
    ) -> Self {
        let target = connector.as_ref().map_or_else(
            || "the application's pool".to_owned(),
            |c| error::target(&c.config),
        );
        Self {
            inner: Arc::new(Inner {
                target,
                sql: Sql::new(&schema),
                schema,
                pool,
                connector,
                statement_timeout,
                unnamed,
                heartbeat: Mutex::new(None),
                listener: std::sync::Mutex::new(Slot::default()),
                registry: Arc::default(),
            }),
        }
    }

    /// Starts building a store.
    pub fn builder() -> PgStoreBuilder {
        PgStoreBuilder::default()
    }

    /// Connects with a URL, with default settings (schema `sentinel`, pool of 16).
    ///
    /// # Errors
    ///
    /// Those of [`PgStoreBuilder::build`].
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::builder().url(url).build().await
    }

    /// The schema holding Sentinel's tables.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// The connection pool.
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// Creates or upgrades the schema (idempotent; concurrent callers serialise on an advisory
    /// lock).
    ///
    /// # Errors
    ///
    /// [`Error::Store`] when the server cannot be reached, the role may not create the schema,
    /// or the schema is newer than this build.
    pub async fn migrate(&self) -> Result<(), Error> {
        Ok(self.migrate_within().await?)
    }

    /// Migrates within the statement timeout (it also bounds the wait for another migrator).
    async fn migrate_within(&self) -> Result<(), StoreError> {
        let schema = &self.inner.schema;
        self.within("migrate", async |client| migrate::run(client, schema).await)
            .await
    }

    /// Gets a connection and runs `work` on it, all within the statement timeout. A statement
    /// still running when time is up is cancelled and its connection leaves the pool, so no
    /// later statement queues behind it.
    pub(crate) async fn within<T>(
        &self,
        what: &str,
        work: impl AsyncFnOnce(&mut Object) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let deadline = tokio::time::Instant::now() + self.inner.statement_timeout;
        let late = || {
            StoreError::unavailable(format!(
                "{what}: no reply from PostgreSQL at {} within the statement timeout ({} s)",
                self.inner.target,
                self.inner.statement_timeout.as_secs_f64()
            ))
        };
        let mut client = tokio::time::timeout_at(deadline, self.client())
            .await
            .map_err(|_| late())??;
        match tokio::time::timeout_at(deadline, work(&mut client)).await {
            Ok(result) => result,
            Err(_) => {
                cancel_in_background(client.cancel_token(), self.tls());
                drop(Object::take(client));
                Err(late())
            }
        }
    }

    /// How long setting up one of Sentinel's own connections may take: the connect timeout,
    /// at most the statement timeout.
    fn connect_bound(&self) -> Duration {
        let statement = self.inner.statement_timeout;
        self.inner
            .connector
            .as_ref()
            .and_then(|c| c.config.get_connect_timeout().copied())
            .map_or(statement, |c| c.min(statement))
    }

    /// Checks that the schema exists at the version this build knows.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] of kind `Schema` when it is missing, older or newer.
    pub async fn check_schema(&self) -> Result<(), Error> {
        let schema = &self.inner.schema;
        let checked = self.within("check schema", async |client| {
            migrate::check(client, schema).await
        });
        Ok(checked.await?)
    }

    pub(crate) async fn client(&self) -> Result<Object, StoreError> {
        self.inner
            .pool
            .get()
            .await
            .map_err(|e| error::pool(&self.inner.target, e))
    }

    fn tls(&self) -> Tls {
        self.inner
            .connector
            .as_ref()
            .map_or(Tls::None, |c| c.tls.clone())
    }

    /// One statement on a pooled connection, all of it (connection, preparation, execution)
    /// within the statement timeout. A statement that times out is cancelled on the server and
    /// its connection leaves the pool.
    async fn query(
        &self,
        what: &str,
        stmt: &Stmt,
        params: Params<'_>,
    ) -> Result<Vec<Row>, StoreError> {
        let deadline = tokio::time::Instant::now() + self.inner.statement_timeout;
        let unavailable = || {
            StoreError::unavailable(format!(
                "{what}: no connection to PostgreSQL at {} within the statement timeout",
                self.inner.target
            ))
        };
        let client = tokio::time::timeout_at(deadline, self.client())
            .await
            .map_err(|_| unavailable())??;
        let rows = if self.inner.unnamed {
            // Parse, bind and execute an unnamed statement in one round trip: nothing outlives
            // the transaction, as PgBouncer before 1.21 (transaction mode) needs.
            let typed: Vec<(&(dyn ToSql + Sync), Type)> = params
                .iter()
                .copied()
                .zip(stmt.types.iter().cloned())
                .collect();
            tokio::time::timeout_at(deadline, client.query_typed(&stmt.sql, &typed)).await
        } else {
            let statement = tokio::time::timeout_at(deadline, client.prepare_cached(&stmt.sql))
                .await
                .map_err(|_| unavailable())?
                .map_err(|e| map(Phase::Connect, what, e))?;
            tokio::time::timeout_at(deadline, client.query(&statement, params)).await
        };
        match rows {
            Ok(r) => r.map_err(|e| map(Phase::Execute, what, e)),
            Err(_) => {
                cancel_in_background(client.cancel_token(), self.tls());
                drop(Object::take(client));
                Err(error::timeout(what))
            }
        }
    }

    /// A read-only statement: when the pooled connection turns out to be dead (its server went
    /// away, or the runtime that drove it shut down), it is safe to run again once on another.
    async fn read(
        &self,
        what: &str,
        stmt: &Stmt,
        params: Params<'_>,
    ) -> Result<Vec<Row>, StoreError> {
        match self.query(what, stmt, params).await {
            Err(e) if e.is_transient() => {
                tracing::debug!(error = %e, "read failed; trying once more on another connection");
                self.query(what, stmt, params).await
            }
            other => other,
        }
    }

    async fn reserved(&self) -> Result<tokio::sync::MutexGuard<'_, Option<Reserved>>, StoreError> {
        let mut guard = self.inner.heartbeat.lock().await;
        if guard.as_ref().is_some_and(|r| r.client.is_closed()) {
            *guard = None;
        }
        if guard.is_none() {
            let client = match &self.inner.connector {
                Some(c) => ReservedClient::Own(c.connect().await?),
                None => ReservedClient::Pooled(self.client().await?),
            };
            let statement = if self.inner.unnamed {
                None
            } else {
                let hb = &self.inner.sql.heartbeat;
                Some(
                    client
                        .prepare_typed(&hb.sql, hb.types)
                        .await
                        .map_err(|e| map(Phase::Connect, "heartbeat", e))?,
                )
            };
            *guard = Some(Reserved { client, statement });
        }
        Ok(guard)
    }

    /// The `LISTEN` connection, waited for until `deadline` at most; `None` (poll instead) when
    /// there is no connector, or no connection by then.
    async fn listener(&self, deadline: tokio::time::Instant) -> Option<Arc<Listener>> {
        let connector = self.inner.connector.as_ref()?;
        let lock = || {
            self.inner
                .listener
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        let attempt = {
            let mut slot = lock();
            if let Some(l) = slot.ready.as_ref().filter(|l| l.is_alive()) {
                return Some(l.clone());
            }
            if slot.ready.take().is_some() {
                // Died without its task noticing (its runtime is gone): notifications may have
                // been missed, so nothing registered before is trusted.
                self.inner
                    .registry
                    .drain()
                    .into_iter()
                    .for_each(|r| self.remover()(r));
            }
            match &slot.connecting {
                Some(n) => n.clone(),
                None => {
                    let n = Arc::new(tokio::sync::Notify::new());
                    slot.connecting = Some(n.clone());
                    self.connect_listener(connector.clone(), n.clone());
                    n
                }
            }
        };
        let connected = attempt.notified();
        // notify_waiters reaches every future created before it; should the attempt have ended
        // before this one was created, the slot says so.
        let pending = lock()
            .connecting
            .as_ref()
            .is_some_and(|n| Arc::ptr_eq(n, &attempt));
        if !pending {
            return lock().ready.clone().filter(|l| l.is_alive());
        }
        tokio::time::timeout_at(deadline, connected).await.ok()?;
        lock().ready.clone().filter(|l| l.is_alive())
    }

    /// Opens the `LISTEN` connection in the background, within the statement timeout, whoever
    /// waits for it.
    fn connect_listener(&self, connector: PgConnector, done: Arc<tokio::sync::Notify>) {
        let attempt = ListenAttempt {
            store: self.clone(),
            done,
        };
        tokio::spawn(async move {
            let inner = &attempt.store.inner;
            let started = tokio::time::timeout(
                inner.statement_timeout,
                Listener::start(
                    &connector,
                    &inner.sql.channel,
                    inner.registry.clone(),
                    attempt.store.remover(),
                ),
            )
            .await;
            match started {
                Ok(Ok(l)) => attempt.slot().ready = Some(Arc::new(l)),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "LISTEN connection unavailable; waiters poll");
                }
                Err(_) => tracing::debug!("LISTEN connection timed out; waiters poll"),
            }
            // `attempt` ends here, or wherever the task is dropped (its runtime going away).
        });
    }

    /// Takes registrations off their rows in the background; holds the store weakly, so the
    /// listener's task does not keep it alive.
    fn remover(&self) -> Remover {
        let inner = Arc::downgrade(&self.inner);
        Arc::new(move |r: Removal| {
            let (Some(inner), Ok(handle)) =
                (inner.upgrade(), tokio::runtime::Handle::try_current())
            else {
                return;
            };
            let store = PgStore { inner };
            handle.spawn(async move { store.unregister(r).await });
        })
    }

    /// Counts a waiter on the row, when it is still running; records the registration in this
    /// process's registry, held by nobody yet. `false` when the row is no longer running, or
    /// changed while the registration was made (the caller re-reads).
    async fn register(
        &self,
        namespace: String,
        key: String,
        payload: String,
    ) -> Result<bool, StoreError> {
        let registry = &self.inner.registry;
        let ticket = registry.begin();
        let sql = &self.inner.sql.add_waiter;
        let rows = self.query("wait", sql, &[&namespace, &key]).await?;
        let Some(token) = rows.first().and_then(|r| r.try_get::<_, i64>(0).ok()) else {
            return Ok(false);
        };
        let removal = Removal {
            namespace,
            key,
            token,
        };
        match registry.insert_idle(&ticket, &payload, removal) {
            Inserted::Idle {
                generation,
                replaced,
            } => {
                drop(ticket);
                self.linger(payload, generation);
                if let Some(old) = replaced {
                    self.unregister(old).await;
                }
                Ok(true)
            }
            Inserted::Duplicate(ours) => {
                drop(ticket);
                self.unregister(ours).await;
                Ok(true)
            }
            Inserted::Refused(ours) => {
                drop(ticket);
                self.unregister(ours).await;
                Ok(false)
            }
        }
    }

    /// Removes an unheld registration after [`listen::LINGER`], unless a waiter joined it since.
    fn linger(&self, payload: String, generation: u64) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            // No runtime to run the removal on: the count stays, which costs only NOTIFYs.
            let _ = self.inner.registry.expire(&payload, generation);
            return;
        };
        let store = self.clone();
        handle.spawn(async move {
            tokio::time::sleep(listen::LINGER).await;
            if let Some(r) = store.inner.registry.expire(&payload, generation) {
                store.unregister(r).await;
            }
        });
    }

    async fn unregister(&self, r: Removal) {
        let sql = &self.inner.sql.remove_waiter;
        if let Err(e) = self
            .query("wait", sql, &[&r.namespace, &r.key, &r.token])
            .await
        {
            tracing::debug!(error = %e, "could not unregister a waiter");
        }
    }
}

/// The heartbeat's answer: rows come back by input position (1-based `ord`), so no key is
/// copied or hashed.
fn renewed(rows: &[Row], n: usize) -> Result<Vec<Option<SystemTime>>, StoreError> {
    let mut renewed: Vec<Option<SystemTime>> = vec![None; n];
    for r in rows {
        let i = row::position(r, 0, n)?;
        renewed[i] = Some(row::get(r, 1)?);
    }
    Ok(renewed)
}

#[async_trait]
impl Store for PgStore {
    async fn claim(&self, r: &ClaimRequest) -> Result<ClaimResponse, StoreError> {
        let pid = i64::from(r.owner.pid);
        let rows = self
            .query(
                "claim",
                &self.inner.sql.claim,
                &[
                    &r.namespace,
                    &r.key,
                    &r.owner.host,
                    &pid,
                    &r.owner.attempt,
                    &r.fingerprint,
                    &millis(r.ttl),
                    &millis(r.hard_ttl),
                ],
            )
            .await?;
        // The statement ran: an answer that does not decode may be a committed claim.
        let undecodable = |e: StoreError| StoreError::ambiguous(format!("claim: {e}"));
        let Some(record) = row::composite(&rows).map_err(undecodable)? else {
            // Taken and removed again between the reads.
            return Ok(ClaimResponse::Raced);
        };
        Ok(if r.owns(&record) {
            ClaimResponse::Acquired(record)
        } else {
            ClaimResponse::Existing(record)
        })
    }

    async fn claim_many(
        &self,
        requests: &[ClaimRequest],
    ) -> Result<Vec<ClaimResponse>, StoreError> {
        if requests.len() <= 1 {
            let mut out = Vec::with_capacity(1);
            for r in requests {
                out.push(self.claim(r).await?);
            }
            return Ok(out);
        }
        let mut seen = std::collections::HashSet::with_capacity(requests.len());
        if !requests.iter().all(|r| seen.insert((&r.namespace, &r.key))) {
            return Err(StoreError::other(
                "claim_many needs distinct keys: one statement cannot claim a key twice",
            ));
        }
        let column = |f: fn(&ClaimRequest) -> &str| requests.iter().map(f).collect::<Vec<&str>>();
        let namespaces = column(|r| &r.namespace);
        let keys = column(|r| &r.key);
        let hosts = column(|r| &r.owner.host);
        let attempts = column(|r| &r.owner.attempt);
        let pids: Vec<i64> = requests.iter().map(|r| i64::from(r.owner.pid)).collect();
        let fingerprints: Vec<Option<&[u8]>> =
            requests.iter().map(|r| r.fingerprint.as_deref()).collect();
        let ttls: Vec<i64> = requests.iter().map(|r| millis(r.ttl)).collect();
        let hards: Vec<i64> = requests.iter().map(|r| millis(r.hard_ttl)).collect();
        let rows = self
            .query(
                "claim",
                &self.inner.sql.claim_many,
                &[
                    &namespaces,
                    &keys,
                    &hosts,
                    &pids,
                    &attempts,
                    &fingerprints,
                    &ttls,
                    &hards,
                ],
            )
            .await?;
        // The statement committed: a row we cannot read must not pass for "nothing happened".
        let committed = |e: StoreError| {
            StoreError::ambiguous(format!(
                "claim batch committed but its answer is unreadable: {e}"
            ))
        };
        // A position without a row raced with a concurrent insert, like a single claim.
        let mut out: Vec<ClaimResponse> = vec![ClaimResponse::Raced; requests.len()];
        for r in &rows {
            let acquired: bool = row::get(r, 1).map_err(committed)?;
            let i = row::position(r, 2, out.len()).map_err(committed)?;
            let record = row::record(r, 3).map_err(committed)?;
            out[i] = if acquired {
                ClaimResponse::Acquired(record)
            } else {
                ClaimResponse::Existing(record)
            };
        }
        Ok(out)
    }

    async fn heartbeat(&self, renewals: &[Renewal]) -> Result<Vec<Option<SystemTime>>, StoreError> {
        let namespaces: Vec<&str> = renewals.iter().map(|r| r.namespace.as_str()).collect();
        let keys: Vec<&str> = renewals.iter().map(|r| r.key.as_str()).collect();
        let tokens = renewals
            .iter()
            .map(|r| columns::token(r.token))
            .collect::<Result<Vec<i64>, _>>()?;
        let ttls: Vec<i64> = renewals.iter().map(|r| millis(r.ttl)).collect();
        let params: [&(dyn ToSql + Sync); 4] = [&namespaces, &keys, &tokens, &ttls];
        // Setting up the reserved connection is bounded like any connection: a server that
        // accepts and never finishes the start-up must not hold every renewal. Meanwhile this
        // tick runs on the pool.
        let set_up = tokio::time::timeout(self.connect_bound(), self.reserved()).await;
        let mut guard = match set_up {
            Ok(Ok(guard)) => guard,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "heartbeat connection unavailable; renewing through the pool");
                let rows = self
                    .query("heartbeat", &self.inner.sql.heartbeat, &params)
                    .await?;
                return renewed(&rows, renewals.len());
            }
            Err(_) => {
                tracing::warn!("heartbeat connection timed out; renewing through the pool");
                let rows = self
                    .query("heartbeat", &self.inner.sql.heartbeat, &params)
                    .await?;
                return renewed(&rows, renewals.len());
            }
        };
        // The connection leaves the slot while its statement runs: if this future is dropped
        // (the engine gives up at its local deadline) the connection is closed and the statement
        // cancelled, instead of later ticks queueing behind it.
        let Some(reserved) = guard.take() else {
            return Err(StoreError::unavailable("no heartbeat connection"));
        };
        let mut busy = BusyHeartbeat {
            cancel: Some((reserved.client.cancel_token(), self.tls())),
            reserved: Some(reserved),
        };
        let outcome = {
            let r = busy.reserved.as_ref().map(|r| (&r.client, &r.statement));
            let Some((client, statement)) = r else {
                return Err(StoreError::unavailable("no heartbeat connection"));
            };
            let hb = &self.inner.sql.heartbeat;
            let typed: Vec<(&(dyn ToSql + Sync), Type)> = params
                .iter()
                .copied()
                .zip(hb.types.iter().cloned())
                .collect();
            let query = async {
                match statement {
                    Some(statement) => client.query(statement, &params).await,
                    None => client.query_typed(&hb.sql, &typed).await,
                }
            };
            tokio::time::timeout(self.inner.statement_timeout, query).await
        };
        let rows = match outcome {
            Ok(Ok(rows)) => {
                busy.cancel = None;
                *guard = busy.reserved.take();
                rows
            }
            Ok(Err(e)) => {
                busy.cancel = None;
                return Err(map(Phase::Execute, "heartbeat", e));
            }
            Err(_) => return Err(error::timeout("heartbeat")),
        };
        renewed(&rows, renewals.len())
    }

    async fn complete(&self, c: &Completion) -> Result<Write, StoreError> {
        let token = columns::token(c.token)?;
        let retain = c.retain_for.map(millis);
        let rows = self
            .query(
                "complete",
                &self.inner.sql.complete,
                &[
                    &c.namespace,
                    &c.key,
                    &token,
                    &c.result.kind.as_str(),
                    &c.result.json,
                    &retain,
                ],
            )
            .await?;
        row::completed(&rows)
    }

    async fn complete_many(&self, completions: &[Completion]) -> Result<Vec<Write>, StoreError> {
        if completions.len() <= 1 {
            let mut out = Vec::with_capacity(1);
            for c in completions {
                out.push(self.complete(c).await?);
            }
            return Ok(out);
        }
        // Rows are locked in key order, as the heartbeat does, so the two never deadlock; the
        // answers are mapped back to the callers' order.
        let mut order: Vec<usize> = (0..completions.len()).collect();
        order.sort_by(|a, b| {
            let (a, b) = (&completions[*a], &completions[*b]);
            (&a.namespace, &a.key).cmp(&(&b.namespace, &b.key))
        });
        let sorted: Vec<&Completion> = order.iter().map(|i| &completions[*i]).collect();
        let namespaces: Vec<&str> = sorted.iter().map(|c| c.namespace.as_str()).collect();
        let keys: Vec<&str> = sorted.iter().map(|c| c.key.as_str()).collect();
        let tokens = sorted
            .iter()
            .map(|c| columns::token(c.token))
            .collect::<Result<Vec<i64>, _>>()?;
        let kinds: Vec<&str> = sorted.iter().map(|c| c.result.kind.as_str()).collect();
        let jsons: Vec<&str> = sorted.iter().map(|c| c.result.json.as_str()).collect();
        let retains: Vec<Option<i64>> = sorted.iter().map(|c| c.retain_for.map(millis)).collect();
        let rows = self
            .query(
                "complete",
                &self.inner.sql.complete_many,
                &[&namespaces, &keys, &tokens, &kinds, &jsons, &retains],
            )
            .await?;
        let mut out = vec![Write::Fenced; completions.len()];
        for r in &rows {
            let i = order[row::position(r, 1, order.len())?];
            if let Some(record) = row::composite_at(r, 2)? {
                out[i] = Write::Applied(Some(record));
            }
        }
        Ok(out)
    }

    async fn release(
        &self,
        namespace: &str,
        key: &str,
        token: FencingToken,
    ) -> Result<Write, StoreError> {
        let token = columns::token(token)?;
        let rows = self
            .query(
                "release",
                &self.inner.sql.release,
                &[&namespace, &key, &token],
            )
            .await?;
        Ok(if rows.is_empty() {
            Write::Fenced
        } else {
            Write::Applied(None)
        })
    }

    async fn mark_uncertain(
        &self,
        namespace: &str,
        key: &str,
        token: FencingToken,
        reason: UncertainReason,
    ) -> Result<Write, StoreError> {
        let token = columns::token(token)?;
        let rows = self
            .query(
                "mark_uncertain",
                &self.inner.sql.mark_uncertain,
                &[&namespace, &key, &token, &reason.as_str()],
            )
            .await?;
        row::write(&rows)
    }

    async fn load(&self, namespace: &str, key: &str) -> Result<Option<Record>, StoreError> {
        let rows = self
            .read("load", &self.inner.sql.load, &[&namespace, &key])
            .await?;
        rows.first().map(|r| row::record(r, 1)).transpose()
    }

    async fn list(&self, q: &ListQuery) -> Result<Vec<Record>, StoreError> {
        let after = q.after.as_ref();
        let (stmt, by_age) = match q.order {
            ListOrder::Oldest => (&self.inner.sql.list[1], true),
            ListOrder::Newest => (&self.inner.sql.list[2], true),
            _ => (&self.inner.sql.list[0], false),
        };
        let (after_ns, after_key) = (
            after.map(|c| c.namespace.as_str()),
            after.map(|c| c.key.as_str()),
        );
        let state = q.state.map(State::as_str);
        let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
        let created = after.map(|c| c.created_at);
        let params: [&(dyn ToSql + Sync); 7] = [
            &q.namespace,
            &after_ns,
            &after_key,
            &state,
            &q.key_prefix,
            &limit,
            &created,
        ];
        let rows = self
            .read("list", stmt, &params[..if by_age { 7 } else { 6 }])
            .await?;
        rows.iter().map(|r| row::record(r, 1)).collect()
    }

    async fn counts(&self) -> Result<Vec<StateCount>, StoreError> {
        let rows = self.read("counts", &self.inner.sql.counts, &[]).await?;
        rows.iter()
            .map(|r| {
                let state: String = row::get(r, 1)?;
                let n: i64 = row::get(r, 2)?;
                Ok(StateCount::new(
                    row::get::<String>(r, 0)?,
                    row::state(&state)?,
                    u64::try_from(n).unwrap_or(0),
                ))
            })
            .collect()
    }

    async fn recent_events(&self, limit: usize) -> Result<Vec<KeyedEvent>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .read("recent_events", &self.inner.sql.recent_events, &[&limit])
            .await?;
        rows.iter()
            .map(|r| {
                Ok(KeyedEvent::new(
                    row::get::<String>(r, 8)?,
                    row::get::<String>(r, 9)?,
                    row::event(r)?,
                ))
            })
            .collect()
    }

    async fn history(
        &self,
        namespace: &str,
        key: &str,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .read(
                "history",
                &self.inner.sql.history,
                &[&namespace, &key, &limit],
            )
            .await?;
        rows.iter().map(row::event).collect()
    }

    async fn reconcile(
        &self,
        a: &OperatorAction,
        force: bool,
    ) -> Result<OperatorResponse, StoreError> {
        let rows = self
            .query(
                "reconcile",
                &self.inner.sql.reconcile,
                &[&a.namespace, &a.key, &a.actor, &a.reason, &force],
            )
            .await?;
        row::operator_response(&rows)
    }

    async fn resolve(
        &self,
        a: &OperatorAction,
        resolution: &Resolution,
        expected_token: Option<FencingToken>,
    ) -> Result<OperatorResponse, StoreError> {
        let expected = expected_token.map(columns::token).transpose()?;
        let rows = match resolution {
            Resolution::Complete(result) => {
                let kind = result.as_ref().map(|r| r.kind.as_str());
                let json = result.as_ref().map(|r| r.json.as_str());
                self.query(
                    "resolve",
                    &self.inner.sql.resolve_complete,
                    &[
                        &a.namespace,
                        &a.key,
                        &a.actor,
                        &a.reason,
                        &kind,
                        &json,
                        &expected,
                    ],
                )
                .await?
            }
            Resolution::Reset => {
                self.query(
                    "resolve",
                    &self.inner.sql.resolve_reset,
                    &[&a.namespace, &a.key, &a.actor, &a.reason, &expected],
                )
                .await?
            }
            _ => return Err(StoreError::other("unknown resolution")),
        };
        let response = row::operator_response(&rows)?;
        Ok(match (resolution, response) {
            (Resolution::Reset, OperatorResponse::Applied(_)) => OperatorResponse::Applied(None),
            (_, r) => r,
        })
    }

    async fn forget(&self, a: &OperatorAction) -> Result<OperatorResponse, StoreError> {
        let rows = self
            .query(
                "forget",
                &self.inner.sql.forget,
                &[&a.namespace, &a.key, &a.actor, &a.reason],
            )
            .await?;
        Ok(match row::operator_response(&rows)? {
            OperatorResponse::Applied(_) => OperatorResponse::Applied(None),
            other => other,
        })
    }

    async fn prune(&self, q: &PruneQuery) -> Result<u64, StoreError> {
        const BATCH: i64 = 5000;
        let older = q.older_than.map(millis);
        let mut total = 0u64;
        loop {
            let rows = self
                .query(
                    "prune",
                    &self.inner.sql.prune,
                    &[&older, &BATCH, &q.namespace],
                )
                .await?;
            let n: i64 = rows.first().and_then(|r| r.try_get(0).ok()).unwrap_or(0);
            total += u64::try_from(n).unwrap_or(0);
            if n < BATCH {
                return Ok(total);
            }
        }
    }

    async fn wait_for_change(
        &self,
        namespace: &str,
        key: &str,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let Some(listener) = self.listener(deadline).await else {
            tokio::time::sleep_until(deadline).await;
            return Ok(());
        };
        // Subscribe before registering, so a completion between the two is not missed.
        let mut rx = listener.subscribe();
        let expected = listen::payload(namespace, key);
        let token = match self.inner.registry.join(&expected) {
            Some(token) => token,
            None => {
                // Registered in a task of its own: should this step end first, a registration
                // that commits still lingers for the next one instead of being lost on the row.
                let store = self.clone();
                let (ns, k, p) = (namespace.to_owned(), key.to_owned(), expected.clone());
                let registering = tokio::spawn(async move { store.register(ns, k, p).await });
                match tokio::time::timeout_at(deadline, registering).await {
                    Err(_) | Ok(Err(_)) | Ok(Ok(Ok(false))) => return Ok(()), // the caller re-reads
                    Ok(Ok(Err(e))) => return Err(e),
                    Ok(Ok(Ok(true))) => match self.inner.registry.join(&expected) {
                        Some(token) => token,
                        None => return Ok(()), // changed already: the caller re-reads
                    },
                }
            }
        };
        // Left even when this future is dropped; tied to the token, so it never touches a later
        // execution's counter.
        let _registration = WaiterRegistration {
            store: self.clone(),
            payload: expected.clone(),
            token,
        };
        let _ = tokio::time::timeout_at(deadline, async {
            loop {
                match rx.recv().await {
                    Ok(Signal::Key(p)) if *p == *expected => return,
                    Ok(Signal::Key(_)) => {}
                    Ok(Signal::Resync) | Err(_) => return,
                }
            }
        })
        .await;
        Ok(())
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let rows = self.read("stats", &self.inner.sql.stats, &[]).await?;
        let mut stats = StoreStats::default();
        if let Some(r) = rows.first() {
            stats.now = Some(row::get(r, 0)?);
            let n: i64 = row::get(r, 1)?;
            stats.uncertain = u64::try_from(n).unwrap_or(0);
            stats.oldest_uncertain_since = row::get(r, 2)?;
            let ns: Option<String> = row::get(r, 3)?;
            let key: Option<String> = row::get(r, 4)?;
            stats.oldest_uncertain = ns.zip(key);
        }
        Ok(stats)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        self.migrate_within().await
    }
}
