//! `PgStore`: the `Store` trait on PostgreSQL.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use sentinel_core::store::{
    ClaimRequest, ClaimResponse, Completion, ListQuery, OperatorAction, OperatorResponse,
    PruneQuery, Renewal, Resolution, Store, StoreStats, Write,
};
use sentinel_core::{
    Error, Event, EventKind, FencingToken, Owner, Record, ResultKind, State, StoreError,
    StoreErrorKind, StoredResult, StoredRow, UncertainReason,
};
use tokio::sync::Mutex;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{AsyncMessage, Client, NoTls, Row, Socket, Statement};

use crate::error::{self, Phase, map};
use crate::listen::{self, Listener, Signal};
use crate::migrate;
use crate::sql::{Sql, Stmt};

/// How connections are encrypted.
#[derive(Clone)]
enum Tls {
    None,
    #[cfg(feature = "rustls")]
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

#[cfg(feature = "rustls")]
fn default_rustls() -> Result<rustls::ClientConfig, Error> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::InvalidInput(format!("TLS set-up failed: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// Asks the server to cancel a statement whose reply we stopped waiting for, so that it cannot
/// commit long after we reported it lost. Best effort, in the background.
fn cancel_in_background(token: tokio_postgres::CancelToken, tls: Tls) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    handle.spawn(async move {
        let r = match tls {
            Tls::None => token.cancel_query(NoTls).await,
            #[cfg(feature = "rustls")]
            Tls::Rustls(t) => token.cancel_query(t).await,
        };
        if let Err(e) = r {
            tracing::debug!(error = %e, "could not cancel a timed-out statement");
        }
    });
}

/// Opens Sentinel's own connections (heartbeat, LISTEN), with `synchronous_commit = on`.
#[derive(Clone)]
pub(crate) struct PgConnector {
    config: tokio_postgres::Config,
    tls: Tls,
}

type Messages = tokio::sync::mpsc::UnboundedReceiver<Result<AsyncMessage, tokio_postgres::Error>>;

impl PgConnector {
    async fn connect(&self) -> Result<Client, StoreError> {
        self.open(None).await
    }

    pub(crate) async fn connect_streaming(&self) -> Result<(Client, Messages), StoreError> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        Ok((self.open(Some(tx)).await?, rx))
    }

    async fn open(
        &self,
        forward: Option<
            tokio::sync::mpsc::UnboundedSender<Result<AsyncMessage, tokio_postgres::Error>>,
        >,
    ) -> Result<Client, StoreError> {
        let connected = match &self.tls {
            Tls::None => spawn_connection(&self.config, NoTls, forward).await,
            #[cfg(feature = "rustls")]
            Tls::Rustls(tls) => spawn_connection(&self.config, tls.clone(), forward).await,
        };
        connected.map_err(|e| map(Phase::Connect, "connect", e))
    }
}

async fn spawn_connection<T>(
    config: &tokio_postgres::Config,
    tls: T,
    forward: Option<
        tokio::sync::mpsc::UnboundedSender<Result<AsyncMessage, tokio_postgres::Error>>,
    >,
) -> Result<Client, tokio_postgres::Error>
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let (client, mut connection) = config.connect(tls).await?;
    tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            let failed = message.is_err();
            if let Some(tx) = &forward {
                let _ = tx.send(message);
            }
            if failed {
                return;
            }
        }
    });
    Ok(client)
}

/// Builds a [`PgStore`]: from a URL, a `tokio_postgres::Config`, or the application's own
/// deadpool pool.
#[must_use]
pub struct PgStoreBuilder {
    config: Option<tokio_postgres::Config>,
    url_error: Option<String>,
    pool: Option<Pool>,
    schema: String,
    pool_size: usize,
    statement_timeout: Duration,
    allow_async_commit: bool,
    unnamed: bool,
    #[cfg(feature = "rustls")]
    tls: Option<rustls::ClientConfig>,
}

impl Default for PgStoreBuilder {
    fn default() -> Self {
        Self {
            config: None,
            url_error: None,
            pool: None,
            schema: "sentinel".into(),
            pool_size: 16,
            statement_timeout: Duration::from_secs(30),
            allow_async_commit: false,
            unnamed: false,
            #[cfg(feature = "rustls")]
            tls: None,
        }
    }
}

impl std::fmt::Debug for PgStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStoreBuilder")
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .finish_non_exhaustive()
    }
}

/// The URL with its password replaced, for messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = rest.split_once('/').map_or((rest, ""), |(a, t)| (a, t));
    let redacted = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    if rest.contains('/') {
        format!("{scheme}://{redacted}/{tail}")
    } else {
        format!("{scheme}://{redacted}")
    }
}

impl PgStoreBuilder {
    /// Connects with a `postgres://` URL (or a key=value connection string).
    pub fn url(mut self, url: &str) -> Self {
        match tokio_postgres::Config::from_str(url) {
            Ok(c) => self.config = Some(c),
            Err(e) => {
                self.url_error = Some(format!("invalid database URL {}: {e}", redact_url(url)));
            }
        }
        self
    }

    /// Connects with a driver config.
    pub fn config(mut self, config: tokio_postgres::Config) -> Self {
        self.config = Some(config);
        self
    }

    /// Uses the application's pool for claims and completions. Give a config too so Sentinel can
    /// open its own heartbeat and `LISTEN` connections; without one, the heartbeat keeps one
    /// pooled connection for itself and waiters poll.
    pub fn pool(mut self, pool: Pool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// The schema holding Sentinel's tables (default `sentinel`).
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Size of the pool Sentinel builds (default 16); ignored with [`PgStoreBuilder::pool`].
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size;
        self
    }

    /// How long to wait for a statement's reply before treating it as lost (default 30 s).
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// Accepts a pool whose sessions run with `synchronous_commit = off` (a crash can then lose
    /// a claim that was reported committed).
    pub fn allow_async_commit(mut self, allow: bool) -> Self {
        self.allow_async_commit = allow;
        self
    }

    /// The rustls configuration for TLS connections (default: the Mozilla roots). TLS is used
    /// unless the URL says `sslmode=disable`.
    #[cfg(feature = "rustls")]
    pub fn tls(mut self, config: rustls::ClientConfig) -> Self {
        self.tls = Some(config);
        self
    }

    /// Runs every statement unnamed (parse, bind and execute in one round trip) instead of
    /// caching prepared statements per connection: for PgBouncer in transaction mode before
    /// 1.21, which cannot keep prepared statements. Costs the server a parse per statement.
    pub fn unnamed_statements(mut self, unnamed: bool) -> Self {
        self.unnamed = unnamed;
        self
    }

    /// Validates the settings, connects once and checks `synchronous_commit`.
    pub async fn build(self) -> Result<PgStore, Error> {
        if let Some(e) = self.url_error {
            return Err(Error::InvalidInput(e));
        }
        sentinel_core::validate_identifier(&self.schema)?;
        // The NOTIFY channel is `sentinel_<schema>` and channel names are limited to 63 bytes.
        if self.schema.len() > 48 {
            return Err(Error::InvalidInput(format!(
                "schema name `{}` is longer than 48 bytes",
                self.schema
            )));
        }
        if self.pool_size == 0 {
            return Err(Error::InvalidInput("pool size must be positive".into()));
        }
        if self.statement_timeout.is_zero() {
            return Err(Error::InvalidInput(
                "statement timeout must be positive".into(),
            ));
        }
        // TLS when the URL requires it (the certificate is verified, unlike libpq's `require`),
        // or when a TLS config was given and the URL does not disable it.
        let ssl_mode = self
            .config
            .as_ref()
            .map(tokio_postgres::Config::get_ssl_mode);
        let required = ssl_mode == Some(tokio_postgres::config::SslMode::Require);
        #[cfg(feature = "rustls")]
        let tls = {
            let preferred = ssl_mode == Some(tokio_postgres::config::SslMode::Prefer);
            match self.tls {
                Some(config) if required || preferred => {
                    Tls::Rustls(tokio_postgres_rustls::MakeRustlsConnect::new(config))
                }
                None if required => Tls::Rustls(tokio_postgres_rustls::MakeRustlsConnect::new(
                    default_rustls()?,
                )),
                _ => Tls::None,
            }
        };
        #[cfg(not(feature = "rustls"))]
        let tls = if required {
            return Err(Error::InvalidInput(
                "sslmode=require needs TLS support: build with the `rustls` feature".into(),
            ));
        } else {
            Tls::None
        };
        let connector = self.config.map(|mut config| {
            let options = match config.get_options() {
                Some(o) if !o.is_empty() => format!("{o} -c synchronous_commit=on"),
                _ => "-c synchronous_commit=on".to_owned(),
            };
            config.options(&options);
            if config.get_connect_timeout().is_none() {
                config.connect_timeout(Duration::from_secs(10));
            }
            config.keepalives(true);
            config.keepalives_idle(Duration::from_secs(30));
            PgConnector { config, tls }
        });
        let (pool, own_pool) = match (self.pool, &connector) {
            (Some(pool), _) => (pool, false),
            (None, Some(c)) => {
                let manager_config = ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                };
                let manager = match &c.tls {
                    Tls::None => Manager::from_config(c.config.clone(), NoTls, manager_config),
                    #[cfg(feature = "rustls")]
                    Tls::Rustls(tls) => {
                        Manager::from_config(c.config.clone(), tls.clone(), manager_config)
                    }
                };
                let pool = Pool::builder(manager)
                    .max_size(self.pool_size)
                    .build()
                    .map_err(|e| Error::InvalidInput(format!("cannot build pool: {e}")))?;
                (pool, true)
            }
            (None, None) => {
                return Err(Error::InvalidInput(
                    "PgStore needs a URL, a config or a pool".into(),
                ));
            }
        };
        let store = PgStore {
            inner: Arc::new(Inner {
                sql: Sql::new(&self.schema),
                schema: self.schema,
                pool,
                connector,
                statement_timeout: self.statement_timeout,
                unnamed: self.unnamed,
                heartbeat: Mutex::new(None),
                listener: Mutex::new(None),
            }),
        };
        let client = store.client().await?;
        if !own_pool {
            // The simple protocol: no prepared statement, whatever the pooler.
            let messages = client
                .simple_query("SHOW synchronous_commit")
                .await
                .map_err(|e| map(Phase::Execute, "check synchronous_commit", e))?;
            let setting = messages
                .iter()
                .find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                    _ => None,
                })
                .unwrap_or_default();
            if setting == "off" && !self.allow_async_commit {
                return Err(Error::InvalidInput(
                    "the pool's sessions run with synchronous_commit = off: a crash could lose a \
                     claim that was reported committed; set it on, or allow it explicitly"
                        .into(),
                ));
            }
        }
        Ok(store)
    }
}

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
    heartbeat: Mutex<Option<Reserved>>,
    listener: Mutex<Option<Arc<Listener>>>,
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

/// A waiter counted on a row; uncounted when dropped, in the background.
struct WaiterRegistration {
    store: PgStore,
    namespace: String,
    key: String,
    token: i64,
}

impl Drop for WaiterRegistration {
    fn drop(&mut self) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (store, namespace, key, token) = (
            self.store.clone(),
            std::mem::take(&mut self.namespace),
            std::mem::take(&mut self.key),
            self.token,
        );
        handle.spawn(async move {
            let sql = &store.inner.sql.remove_waiter;
            if let Err(e) = store.query("wait", sql, &[&namespace, &key, &token]).await {
                tracing::debug!(error = %e, "could not unregister a waiter");
            }
        });
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

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn token_param(t: FencingToken) -> Result<i64, StoreError> {
    t.to_i64()
        .ok_or_else(|| error::corrupt(format!("fencing token {t} does not fit a bigint")))
}

impl PgStore {
    /// Starts building a store.
    pub fn builder() -> PgStoreBuilder {
        PgStoreBuilder::default()
    }

    /// Connects with a URL, with default settings (schema `sentinel`, pool of 16).
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
    pub async fn migrate(&self) -> Result<(), Error> {
        let mut client = self.client().await?;
        Ok(migrate::run(&mut client, &self.inner.schema).await?)
    }

    /// Checks that the schema exists at the version this build knows.
    pub async fn check_schema(&self) -> Result<(), Error> {
        let client = self.client().await?;
        Ok(migrate::check(&client, &self.inner.schema).await?)
    }

    async fn client(&self) -> Result<Object, StoreError> {
        self.inner.pool.get().await.map_err(error::pool)
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
            StoreError::new(
                StoreErrorKind::Unavailable,
                format!("{what}: no database connection within the statement timeout"),
            )
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

    async fn listener(&self) -> Option<Arc<Listener>> {
        let connector = self.inner.connector.as_ref()?;
        let mut guard = self.inner.listener.lock().await;
        if let Some(l) = guard.as_ref().filter(|l| l.is_alive()) {
            return Some(l.clone());
        }
        match Listener::start(connector, &self.inner.sql.channel).await {
            Ok(l) => {
                let l = Arc::new(l);
                *guard = Some(l.clone());
                Some(l)
            }
            Err(e) => {
                tracing::debug!(error = %e, "LISTEN connection unavailable; waiters poll");
                *guard = None;
                None
            }
        }
    }

    /// Reads `(acquired/applied flag?, record)` rows: `now()` first, then an optional flag, then
    /// the record columns.
    fn record(row: &Row, start: usize) -> Result<Record, StoreError> {
        let c = |e: tokio_postgres::Error| error::corrupt(format!("unexpected row shape: {e}"));
        let now: SystemTime = row.try_get(0).map_err(c)?;
        let state: String = row.try_get(start + 2).map_err(c)?;
        let state = State::from_str(&state)
            .map_err(|_| error::corrupt(format!("unknown state {state}")))?;
        let token: i64 = row.try_get(start + 3).map_err(c)?;
        let host: Option<String> = row.try_get(start + 4).map_err(c)?;
        let pid: Option<i64> = row.try_get(start + 5).map_err(c)?;
        let attempt: Option<String> = row.try_get(start + 6).map_err(c)?;
        let kind: Option<String> = row.try_get(start + 16).map_err(c)?;
        let result_text: Option<String> = row.try_get(start + 17).map_err(c)?;
        let reason: Option<String> = row.try_get(start + 15).map_err(c)?;
        let result = match (kind.as_deref().and_then(ResultKind::parse), result_text) {
            (Some(kind), Some(json)) => Some(StoredResult::new(kind, json)),
            _ => None,
        };
        Ok(StoredRow {
            namespace: row.try_get(start).map_err(c)?,
            key: row.try_get(start + 1).map_err(c)?,
            state,
            fencing_token: FencingToken::from_i64(token)
                .ok_or_else(|| error::corrupt("negative fencing token"))?,
            owner: match (host, pid.and_then(|p| u32::try_from(p).ok()), attempt) {
                (Some(h), Some(p), Some(a)) => Some(Owner::new(h, p, a)),
                _ => None,
            },
            operator: row.try_get(start + 7).map_err(c)?,
            fingerprint: row.try_get(start + 8).map_err(c)?,
            lease_expires_at: row.try_get(start + 9).map_err(c)?,
            hard_expires_at: row.try_get(start + 10).map_err(c)?,
            created_at: row.try_get(start + 11).map_err(c)?,
            updated_at: row.try_get(start + 12).map_err(c)?,
            completed_at: row.try_get(start + 13).map_err(c)?,
            retain_until: row.try_get(start + 14).map_err(c)?,
            reason: reason.as_deref().map(UncertainReason::parse),
            result,
        }
        .into_record(now))
    }

    fn write(rows: &[Row]) -> Result<Write, StoreError> {
        match rows.first() {
            Some(row) => Ok(Write::Applied(Some(Self::record(row, 1)?))),
            None => Ok(Write::Fenced),
        }
    }

    fn operator_response(rows: &[Row]) -> Result<OperatorResponse, StoreError> {
        let Some(row) = rows.first() else {
            return Ok(OperatorResponse::NotFound);
        };
        let applied: bool = row
            .try_get(1)
            .map_err(|e| error::corrupt(format!("unexpected row shape: {e}")))?;
        let record = Self::record(row, 2)?;
        Ok(if applied {
            OperatorResponse::Applied(Some(record))
        } else {
            OperatorResponse::Refused(record)
        })
    }
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
                    &ms(r.ttl),
                    &ms(r.hard_ttl),
                ],
            )
            .await?;
        let Some(row) = rows.first() else {
            // Empty snapshot, then a concurrent insert won the conflict check.
            return Ok(ClaimResponse::Raced);
        };
        let acquired: bool = row
            .try_get(1)
            .map_err(|e| error::corrupt(format!("unexpected row shape: {e}")))?;
        let record = Self::record(row, 2)?;
        Ok(if acquired {
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
            return Err(StoreError::new(
                StoreErrorKind::Other,
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
        let ttls: Vec<i64> = requests.iter().map(|r| ms(r.ttl)).collect();
        let hards: Vec<i64> = requests.iter().map(|r| ms(r.hard_ttl)).collect();
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
            StoreError::new(
                StoreErrorKind::Ambiguous,
                format!("claim batch committed but its answer is unreadable: {e}"),
            )
        };
        // A position without a row raced with a concurrent insert, like a single claim.
        let mut out: Vec<ClaimResponse> = vec![ClaimResponse::Raced; requests.len()];
        for row in &rows {
            let c = |e: tokio_postgres::Error| error::corrupt(format!("unexpected row shape: {e}"));
            let acquired: bool = row.try_get(1).map_err(c).map_err(committed)?;
            let ord: i64 = row.try_get(2).map_err(c).map_err(committed)?;
            let record = Self::record(row, 3).map_err(committed)?;
            let slot = usize::try_from(ord - 1)
                .ok()
                .and_then(|i| out.get_mut(i))
                .ok_or_else(|| {
                    committed(error::corrupt(format!("claim returned position {ord}")))
                })?;
            *slot = if acquired {
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
            .map(|r| token_param(r.token))
            .collect::<Result<Vec<i64>, _>>()?;
        let ttls: Vec<i64> = renewals.iter().map(|r| ms(r.ttl)).collect();
        let mut guard = self.reserved().await?;
        // The connection leaves the slot while its statement runs: if this future is dropped
        // (the engine gives up at its local deadline) the connection is closed and the statement
        // cancelled, instead of later ticks queueing behind it.
        let Some(reserved) = guard.take() else {
            return Err(StoreError::new(
                StoreErrorKind::Unavailable,
                "no heartbeat connection",
            ));
        };
        let mut busy = BusyHeartbeat {
            cancel: Some((reserved.client.cancel_token(), self.tls())),
            reserved: Some(reserved),
        };
        let params: [&(dyn ToSql + Sync); 4] = [&namespaces, &keys, &tokens, &ttls];
        let outcome = {
            let r = busy.reserved.as_ref().map(|r| (&r.client, &r.statement));
            let Some((client, statement)) = r else {
                return Err(StoreError::new(
                    StoreErrorKind::Unavailable,
                    "no heartbeat connection",
                ));
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
        // Rows come back by input position (1-based `ord`), so no key is copied or hashed.
        let mut renewed: Vec<Option<SystemTime>> = vec![None; renewals.len()];
        for row in rows {
            let c = |e: tokio_postgres::Error| error::corrupt(format!("unexpected row shape: {e}"));
            let ord: i64 = row.try_get(0).map_err(c)?;
            let slot = usize::try_from(ord - 1)
                .ok()
                .and_then(|i| renewed.get_mut(i))
                .ok_or_else(|| error::corrupt(format!("heartbeat returned position {ord}")))?;
            *slot = Some(row.try_get(1).map_err(c)?);
        }
        Ok(renewed)
    }

    async fn complete(&self, c: &Completion) -> Result<Write, StoreError> {
        let token = token_param(c.token)?;
        let retain = c.retain_for.map(ms);
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
        Self::write(&rows)
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
            .map(|c| token_param(c.token))
            .collect::<Result<Vec<i64>, _>>()?;
        let kinds: Vec<&str> = sorted.iter().map(|c| c.result.kind.as_str()).collect();
        let jsons: Vec<&str> = sorted.iter().map(|c| c.result.json.as_str()).collect();
        let retains: Vec<Option<i64>> = sorted.iter().map(|c| c.retain_for.map(ms)).collect();
        let rows = self
            .query(
                "complete",
                &self.inner.sql.complete_many,
                &[&namespaces, &keys, &tokens, &kinds, &jsons, &retains],
            )
            .await?;
        let mut out = vec![Write::Fenced; completions.len()];
        for row in &rows {
            let c = |e: tokio_postgres::Error| error::corrupt(format!("unexpected row shape: {e}"));
            let ord: i64 = row.try_get(1).map_err(c)?;
            let record = Self::record(row, 2)?;
            let slot = usize::try_from(ord - 1)
                .ok()
                .and_then(|i| order.get(i))
                .and_then(|i| out.get_mut(*i))
                .ok_or_else(|| error::corrupt(format!("complete returned position {ord}")))?;
            *slot = Write::Applied(Some(record));
        }
        Ok(out)
    }

    async fn release(
        &self,
        namespace: &str,
        key: &str,
        token: FencingToken,
    ) -> Result<Write, StoreError> {
        let token = token_param(token)?;
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
        let token = token_param(token)?;
        let rows = self
            .query(
                "mark_uncertain",
                &self.inner.sql.mark_uncertain,
                &[&namespace, &key, &token, &reason.as_str()],
            )
            .await?;
        Self::write(&rows)
    }

    async fn load(&self, namespace: &str, key: &str) -> Result<Option<Record>, StoreError> {
        let rows = self
            .read("load", &self.inner.sql.load, &[&namespace, &key])
            .await?;
        rows.first().map(|r| Self::record(r, 1)).transpose()
    }

    async fn list(&self, q: &ListQuery) -> Result<Vec<Record>, StoreError> {
        let (after_ns, after_key) = match &q.after {
            Some((ns, k)) => (Some(ns.as_str()), Some(k.as_str())),
            None => (None, None),
        };
        let state = q.state.map(State::as_str);
        let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
        let rows = self
            .read(
                "list",
                &self.inner.sql.list,
                &[&q.namespace, &after_ns, &after_key, &state, &limit],
            )
            .await?;
        rows.iter().map(|r| Self::record(r, 1)).collect()
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
        rows.iter()
            .map(|row| {
                let c =
                    |e: tokio_postgres::Error| error::corrupt(format!("unexpected row shape: {e}"));
                let kind: String = row.try_get(0).map_err(c)?;
                let token: i64 = row.try_get(1).map_err(c)?;
                let host: Option<String> = row.try_get(2).map_err(c)?;
                let pid: Option<i64> = row.try_get(3).map_err(c)?;
                let attempt: Option<String> = row.try_get(4).map_err(c)?;
                Ok(Event::new(
                    EventKind::parse(&kind)
                        .ok_or_else(|| error::corrupt(format!("unknown event {kind}")))?,
                    FencingToken::from_i64(token)
                        .ok_or_else(|| error::corrupt("negative token"))?,
                    match (host, pid.and_then(|p| u32::try_from(p).ok()), attempt) {
                        (Some(h), Some(p), Some(a)) => Some(Owner::new(h, p, a)),
                        _ => None,
                    },
                    row.try_get(5).map_err(c)?,
                    row.try_get(6).map_err(c)?,
                    row.try_get(7).map_err(c)?,
                ))
            })
            .collect()
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
        Self::operator_response(&rows)
    }

    async fn resolve(
        &self,
        a: &OperatorAction,
        resolution: &Resolution,
        expected_token: Option<FencingToken>,
    ) -> Result<OperatorResponse, StoreError> {
        let expected = expected_token.map(token_param).transpose()?;
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
            _ => return Err(error::corrupt("unknown resolution")),
        };
        let response = Self::operator_response(&rows)?;
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
        Ok(match Self::operator_response(&rows)? {
            OperatorResponse::Applied(_) => OperatorResponse::Applied(None),
            other => other,
        })
    }

    async fn prune(&self, q: &PruneQuery) -> Result<u64, StoreError> {
        const BATCH: i64 = 5000;
        let older = q.older_than.map(ms);
        let mut total = 0u64;
        loop {
            let rows = self
                .query("prune", &self.inner.sql.prune, &[&older, &BATCH])
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
        let Some(listener) = self.listener().await else {
            tokio::time::sleep(timeout).await;
            return Ok(());
        };
        // Subscribe before registering, so a completion between the two is not missed.
        let mut rx = listener.subscribe();
        let registered = self
            .query("wait", &self.inner.sql.add_waiter, &[&namespace, &key])
            .await?;
        let Some(token) = registered.first().and_then(|r| r.try_get::<_, i64>(0).ok()) else {
            return Ok(()); // no longer running: the caller re-reads
        };
        // Unregisters even when this future is dropped; tied to the token, so it never touches
        // a later execution's counter.
        let _registration = WaiterRegistration {
            store: self.clone(),
            namespace: namespace.to_owned(),
            key: key.to_owned(),
            token,
        };
        let expected = listen::payload(namespace, key);
        let _ = tokio::time::timeout(timeout, async {
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
        if let Some(row) = rows.first() {
            let c = |e: tokio_postgres::Error| error::corrupt(format!("unexpected row shape: {e}"));
            stats.now = Some(row.try_get(0).map_err(c)?);
            let n: i64 = row.try_get(1).map_err(c)?;
            stats.uncertain = u64::try_from(n).unwrap_or(0);
            stats.oldest_uncertain_since = row.try_get(2).map_err(c)?;
        }
        Ok(stats)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        migrate::run(&mut client, &self.inner.schema).await
    }
}
