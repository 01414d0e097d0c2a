//! The engine: `once`, its failure policies, ambiguous-commit handling, cancellation, the
//! operator API and graceful shutdown. Stores are thin; every rule of policy lives here.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::Instrument;

use crate::cache::{Completed, ResultCache};
use crate::error::{NotRecorded, NotRecordedReason};
use crate::heartbeat::InFlight;
use crate::runtime::OwnRuntime;
use crate::store::{
    ClaimRequest, ClaimResponse, Completion, ListQuery, OperatorAction, OperatorResponse,
    PruneQuery, Resolution, Store, Write,
};
use crate::{
    Disposition, Error, Event, ExecutionContext, FencingToken, Outcome, Owner, Record, ResultKind,
    State, StoreError, StoreErrorKind, StoredResult, UncertainReason, metrics,
};

/// Shortest accepted lease.
pub const MIN_TTL: Duration = Duration::from_millis(100);
/// Longest accepted lease.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest accepted hard ceiling, and the longest wait, shutdown timeout or cache age.
pub const MAX_HARD_TTL: Duration = Duration::from_secs(366 * 24 * 3600);
/// Longest accepted retention (and `older_than` for prune): 100 years.
pub const MAX_RETENTION: Duration = Duration::from_secs(100 * 366 * 24 * 3600);

/// Rejects durations that cannot be added to a clock reading.
fn at_most(what: &str, d: Duration, max: Duration) -> Result<(), Error> {
    if d > max {
        return Err(Error::invalid(format!(
            "{what} {d:?} is longer than the limit {max:?}"
        )));
    }
    Ok(())
}

const CLAIM_ATTEMPTS: u32 = 5;
const WRITE_ATTEMPTS: u32 = 3;

/// What a failing function means for its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// The default: the effect may have happened; the key turns uncertain at once and waits for
    /// an operator.
    #[default]
    Uncertain,
    /// The failure means nothing happened: the record is removed and the next caller runs.
    Release,
    /// The error is stored and replayed as `Failed` to later callers.
    Record,
}

impl std::str::FromStr for FailurePolicy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "uncertain" => Ok(Self::Uncertain),
            "release" => Ok(Self::Release),
            "record" => Ok(Self::Record),
            other => Err(Error::invalid(format!(
                "unknown failure policy `{other}` (expected uncertain, release or record)"
            ))),
        }
    }
}

/// Settings of one Sentinel instance.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Namespace of calls that name none. Default `default`.
    pub namespace: String,
    /// Lease length of calls that set none. Default 10 s.
    pub ttl: Duration,
    /// Hard ceiling of calls that set none; `None`: the larger of the call's ttl and 1 hour.
    pub hard_ttl: Option<Duration>,
    /// How long completed records are kept before `prune` may delete them; `None` keeps them
    /// until forgotten (or pruned with `older_than`).
    pub retention: Option<Duration>,
    /// Largest result stored, in bytes of JSON. Default 1 MiB.
    pub max_result_bytes: usize,
    /// How long `shutdown` waits for in-flight executions. Default 30 s.
    pub shutdown_timeout: Duration,
    /// How often the uncertain-records gauge is refreshed (feature `metrics`). Default 30 s.
    pub stats_interval: Duration,
    /// How many completed results this instance keeps in memory to replay without a round trip.
    /// Default 0 (off).
    pub cache_capacity: usize,
    /// How long a cached result may be replayed from memory (never past its retention). A
    /// record forgotten by an operator can still be replayed from other processes' caches for
    /// this long. Default 60 s.
    pub cache_max_age: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            namespace: crate::DEFAULT_NAMESPACE.to_owned(),
            ttl: Duration::from_secs(10),
            hard_ttl: None,
            retention: None,
            max_result_bytes: 1024 * 1024,
            shutdown_timeout: Duration::from_secs(30),
            stats_interval: Duration::from_secs(30),
            cache_capacity: 0,
            cache_max_age: Duration::from_secs(60),
        }
    }
}

/// Builds a [`Sentinel`] over a store.
pub struct SentinelBuilder {
    store: Arc<dyn Store>,
    config: Config,
}

impl SentinelBuilder {
    /// Namespace of calls that name none.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.config.namespace = namespace.into();
        self
    }

    /// Default lease length.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.config.ttl = ttl;
        self
    }

    /// Default hard ceiling.
    pub fn hard_ttl(mut self, hard_ttl: Duration) -> Self {
        self.config.hard_ttl = Some(hard_ttl);
        self
    }

    /// Default retention of completed records.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.config.retention = Some(retention);
        self
    }

    /// Largest stored result in bytes.
    pub fn max_result_bytes(mut self, bytes: usize) -> Self {
        self.config.max_result_bytes = bytes;
        self
    }

    /// Keeps up to `capacity` completed results in memory, each for at most `max_age`, so that
    /// replays cost no round trip.
    pub fn result_cache(mut self, capacity: usize, max_age: Duration) -> Self {
        self.config.cache_capacity = capacity;
        self.config.cache_max_age = max_age;
        self
    }

    /// Replaces the whole configuration.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Validates the configuration and starts Sentinel's own thread (heartbeat).
    pub fn build(self) -> Result<Sentinel, Error> {
        let c = &self.config;
        crate::validate_namespace(&c.namespace)?;
        validate_durations(c.ttl, c.hard_ttl.unwrap_or_else(|| default_hard_ttl(c.ttl)))?;
        at_most("shutdown_timeout", c.shutdown_timeout, MAX_HARD_TTL)?;
        at_most("cache_max_age", c.cache_max_age, MAX_HARD_TTL)?;
        at_most("stats_interval", c.stats_interval, MAX_HARD_TTL)?;
        if let Some(r) = c.retention {
            at_most("retention", r, MAX_RETENTION)?;
        }
        if c.stats_interval.is_zero() {
            return Err(Error::invalid("stats_interval must be positive"));
        }
        if c.max_result_bytes == 0 {
            return Err(Error::invalid("max_result_bytes must be positive"));
        }
        let cache = ResultCache::new(c.cache_capacity, c.cache_max_age);
        let in_flight = Arc::new(InFlight::default());
        let stats_every = cfg!(feature = "metrics").then_some(c.stats_interval);
        let runtime = OwnRuntime::start(self.store.clone(), in_flight.clone(), stats_every)
            .map_err(|e| {
                Error::Store(
                    StoreError::new(StoreErrorKind::Other, "could not start sentinel thread")
                        .with_source(e),
                )
            })?;
        Ok(Sentinel {
            inner: Arc::new(Inner {
                store: self.store,
                config: self.config,
                in_flight,
                runtime,
                accepting: AtomicBool::new(true),
                active: AtomicUsize::new(0),
                idle: Notify::new(),
                counters: Counters::default(),
                cache,
            }),
        })
    }
}

fn default_hard_ttl(ttl: Duration) -> Duration {
    ttl.max(Duration::from_secs(3600))
}

fn validate_durations(ttl: Duration, hard_ttl: Duration) -> Result<(), Error> {
    if ttl < MIN_TTL || ttl > MAX_TTL {
        return Err(Error::invalid(format!(
            "ttl {ttl:?} is out of range ({MIN_TTL:?} to {MAX_TTL:?})"
        )));
    }
    if hard_ttl < ttl {
        return Err(Error::invalid(format!(
            "hard_ttl {hard_ttl:?} is shorter than ttl {ttl:?}"
        )));
    }
    if hard_ttl > MAX_HARD_TTL {
        return Err(Error::invalid(format!(
            "hard_ttl {hard_ttl:?} is longer than the limit {MAX_HARD_TTL:?}"
        )));
    }
    Ok(())
}

/// Counters kept by the engine whether or not the `metrics` feature is on.
#[derive(Debug, Default)]
struct Counters {
    executions: AtomicU64,
    replays: AtomicU64,
    busy: AtomicU64,
    claim_retries: AtomicU64,
    cache_hits: AtomicU64,
}

/// A snapshot of the engine's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EngineStats {
    /// Functions run by this instance.
    pub executions: u64,
    /// Results replayed.
    pub replays: u64,
    /// Calls that found another live owner.
    pub busy: u64,
    /// Claims run again because a concurrent insert committed first.
    pub claim_retries: u64,
    /// Replays served from the in-process cache (counted in `replays` too).
    pub cache_hits: u64,
    /// Executions in flight now.
    pub in_flight: usize,
}

struct Inner {
    store: Arc<dyn Store>,
    config: Config,
    in_flight: Arc<InFlight>,
    runtime: OwnRuntime,
    accepting: AtomicBool,
    active: AtomicUsize,
    idle: Notify,
    counters: Counters,
    cache: ResultCache,
}

/// The entry point: runs functions at most once per key and replays their results.
///
/// Cheap to clone; clones share one heartbeat.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sentinel_core::Error> {
/// use sentinel_core::{MemoryStore, Outcome, Sentinel};
///
/// let sentinel = Sentinel::builder(MemoryStore::new()).build()?;
/// let first = sentinel
///     .once("send-welcome-mail-42")
///     .run(|ctx| async move { Ok::<_, String>(ctx.fencing_token().get()) })
///     .await?;
/// assert!(matches!(first, Outcome::Completed { replayed: false, .. }));
///
/// let again = sentinel
///     .once("send-welcome-mail-42")
///     .run(|_| async { Ok::<u64, String>(unreachable!("never runs twice")) })
///     .await?;
/// assert!(matches!(again, Outcome::Completed { replayed: true, .. }));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Sentinel {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Sentinel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sentinel")
            .field("config", &self.inner.config)
            .field("in_flight", &self.inner.in_flight.len())
            .finish_non_exhaustive()
    }
}

impl Sentinel {
    /// Starts building a Sentinel over `store`.
    pub fn builder(store: impl Store) -> SentinelBuilder {
        Self::builder_arc(Arc::new(store))
    }

    /// Starts building a Sentinel over a shared store.
    pub fn builder_arc(store: Arc<dyn Store>) -> SentinelBuilder {
        SentinelBuilder {
            store,
            config: Config::default(),
        }
    }

    /// The store under this Sentinel.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The engine's counters.
    pub fn stats(&self) -> EngineStats {
        let c = &self.inner.counters;
        EngineStats {
            executions: c.executions.load(Ordering::Relaxed),
            replays: c.replays.load(Ordering::Relaxed),
            busy: c.busy.load(Ordering::Relaxed),
            claim_retries: c.claim_retries.load(Ordering::Relaxed),
            cache_hits: c.cache_hits.load(Ordering::Relaxed),
            in_flight: self.inner.in_flight.len(),
        }
    }

    /// Prepares a call for `key`; configure it, then [`Once::run`] it.
    pub fn once(&self, key: impl Into<String>) -> Once<'_> {
        Once {
            sentinel: self,
            key: key.into(),
            namespace: None,
            ttl: None,
            hard_ttl: None,
            policy: FailurePolicy::default(),
            fingerprint: None,
            retain_for: None,
            wait: None,
        }
    }

    pub(crate) fn runtime(&self) -> &tokio::runtime::Handle {
        self.inner.runtime.handle()
    }

    /// Stops accepting work, waits (at most `Config::shutdown_timeout`) for in-flight executions
    /// and stops the heartbeat. Calls made afterwards fail with [`Error::ShuttingDown`].
    pub async fn shutdown(&self) {
        self.inner.accepting.store(false, Ordering::SeqCst);
        let deadline = Instant::now() + self.inner.config.shutdown_timeout;
        loop {
            let idle = self.inner.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.inner.active.load(Ordering::SeqCst) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                tracing::warn!(
                    in_flight = self.inner.active.load(Ordering::SeqCst),
                    "shutdown timed out with executions still running"
                );
                break;
            }
        }
        self.inner.runtime.stop();
    }

    /// Creates or upgrades the store's schema (idempotent).
    pub async fn migrate(&self) -> Result<(), Error> {
        Ok(self.inner.store.migrate().await?)
    }

    // ---- operator API -------------------------------------------------------------------

    /// Reads one record (state per the store's clock).
    pub async fn inspect(&self, namespace: &str, key: &str) -> Result<Option<Record>, Error> {
        crate::validate_namespace(namespace)?;
        crate::validate_key(key)?;
        Ok(timed("load", self.inner.store.load(namespace, key)).await?)
    }

    /// Lists records, ordered by namespace and key; page with `query.after`.
    pub async fn list(&self, query: &ListQuery) -> Result<Vec<Record>, Error> {
        if query.limit == 0 {
            return Err(Error::invalid("list limit must be positive"));
        }
        Ok(timed("list", self.inner.store.list(query)).await?)
    }

    /// The events of one key, oldest first.
    pub async fn history(
        &self,
        namespace: &str,
        key: &str,
        limit: usize,
    ) -> Result<Vec<Event>, Error> {
        crate::validate_namespace(namespace)?;
        crate::validate_key(key)?;
        Ok(timed("history", self.inner.store.history(namespace, key, limit)).await?)
    }

    /// Takes an uncertain key (or, with `force`, a reconciling one) into reconciliation under a
    /// new token, which is returned. Refuses a live or completed record.
    pub async fn reconcile(
        &self,
        action: &OperatorAction,
        force: bool,
    ) -> Result<FencingToken, Error> {
        validate_action(action)?;
        let response = timed("reconcile", self.inner.store.reconcile(action, force)).await?;
        match applied(action, response, || {
            if force {
                "only an uncertain or reconciling record can be reconciled"
            } else {
                "only an uncertain record can be reconciled (use force to take over from another operator)"
            }
        })? {
            Some(record) => Ok(record.fencing_token),
            None => Err(Error::Store(StoreError::new(
                StoreErrorKind::Other,
                "store returned no record after reconcile",
            ))),
        }
    }

    /// Resolves a reconciling key: completed with a result (or none), or reset to absent. With
    /// `expected_token`, refuses when another operator has taken over since.
    pub async fn resolve(
        &self,
        action: &OperatorAction,
        resolution: &Resolution,
        expected_token: Option<FencingToken>,
    ) -> Result<(), Error> {
        validate_action(action)?;
        if let Resolution::Complete(Some(result)) = resolution {
            serde_json::from_str::<serde::de::IgnoredAny>(&result.json)
                .map_err(|e| Error::invalid(format!("result is not JSON: {e}")))?;
        }
        let response = timed(
            "resolve",
            self.inner.store.resolve(action, resolution, expected_token),
        )
        .await?;
        self.inner.cache.remove(&action.namespace, &action.key);
        applied(
            action,
            response,
            || "only a reconciling record (under the given token) can be resolved",
        )
        .map(drop)
    }

    /// Removes a completed record so the key may run again.
    pub async fn forget(&self, action: &OperatorAction) -> Result<(), Error> {
        validate_action(action)?;
        let response = timed("forget", self.inner.store.forget(action)).await?;
        self.inner.cache.remove(&action.namespace, &action.key);
        applied(
            action,
            response,
            || "only a completed record can be forgotten",
        )
        .map(drop)
    }

    /// Deletes completed records whose retention has passed (or older than
    /// `query.older_than`). Returns how many.
    pub async fn prune(&self, query: &PruneQuery) -> Result<u64, Error> {
        if let Some(d) = query.older_than {
            at_most("older_than", d, MAX_RETENTION)?;
        }
        let pruned = timed("prune", self.inner.store.prune(query)).await?;
        if pruned > 0 {
            self.inner.cache.clear();
        }
        Ok(pruned)
    }

    /// Waits until `key` is no longer running (completed, uncertain, reconciling or absent) or
    /// `timeout` passes, and returns the record as last read (`None` when absent).
    pub async fn wait(
        &self,
        namespace: &str,
        key: &str,
        timeout: Duration,
    ) -> Result<Option<Record>, Error> {
        crate::validate_namespace(namespace)?;
        crate::validate_key(key)?;
        at_most("wait timeout", timeout, MAX_HARD_TTL)?;
        self.wait_until_settled(namespace, key, Instant::now() + timeout)
            .await
    }

    async fn wait_until_settled(
        &self,
        namespace: &str,
        key: &str,
        deadline: Instant,
    ) -> Result<Option<Record>, Error> {
        let store = &self.inner.store;
        let mut poll = Duration::from_millis(50);
        loop {
            let record = timed("load", store.load(namespace, key)).await?;
            let running = record.as_ref().is_some_and(|r| r.state == State::Running);
            let now = Instant::now();
            if !running || now >= deadline {
                return Ok(record);
            }
            // Notified on completion; the poll interval is the fallback (and catches a lease that
            // silently expires, which no statement signals).
            let mut step = poll.min(deadline - now);
            if let Some(lease) = record.as_ref().and_then(|r| r.lease_expires_at) {
                let r = record.as_ref().map_or(SystemTime::now(), |r| r.observed_at);
                if let Ok(left) = lease.duration_since(r) {
                    step = step.min(left + Duration::from_millis(10));
                }
            }
            store.wait_for_change(namespace, key, step).await?;
            poll = (poll * 2).min(Duration::from_secs(1));
        }
    }

    // ---- execution --------------------------------------------------------------------

    fn plan(&self, once: &Once<'_>) -> Result<Plan, Error> {
        let config = &self.inner.config;
        let namespace = once
            .namespace
            .clone()
            .unwrap_or_else(|| config.namespace.clone());
        crate::validate_namespace(&namespace)?;
        crate::validate_key(&once.key)?;
        let ttl = once.ttl.unwrap_or(config.ttl);
        let hard_ttl = once
            .hard_ttl
            .or(config.hard_ttl)
            .unwrap_or_else(|| default_hard_ttl(ttl));
        validate_durations(ttl, hard_ttl)?;
        if let Some(r) = once.retain_for {
            at_most("retention", r, MAX_RETENTION)?;
        }
        if let Some(w) = once.wait {
            at_most("wait timeout", w, MAX_HARD_TTL)?;
        }
        Ok(Plan {
            namespace,
            key: once.key.clone(),
            ttl,
            hard_ttl,
            policy: once.policy,
            fingerprint: once.fingerprint.clone(),
            retain_for: once.retain_for.or(config.retention),
            wait: once.wait,
        })
    }

    /// Claims the key, or turns the existing record into an outcome.
    pub(crate) async fn begin<T, E>(&self, plan: &Plan) -> Result<Begin<T, E>, Error>
    where
        T: DeserializeOwned,
        E: DeserializeOwned,
    {
        let admission = self.admit()?;
        if let Some(hit) = self.inner.cache.get(&plan.namespace, &plan.key) {
            check_fingerprint(plan, hit.fingerprint.as_deref())?;
            self.inner
                .counters
                .cache_hits
                .fetch_add(1, Ordering::Relaxed);
            return self.replay(plan, &hit).map(Begin::Done);
        }
        let deadline = plan.wait.map(|w| Instant::now() + w);
        loop {
            let (response, owner, sent) = self.claim(plan).await?;
            let record = match response {
                ClaimResponse::Acquired(record) => {
                    return Ok(Begin::Run(
                        self.start_execution(plan, &record, owner, sent, admission),
                    ));
                }
                ClaimResponse::Existing(record) => record,
                ClaimResponse::Raced => unreachable!("claim() retries races"),
            };
            check_fingerprint(plan, record.fingerprint.as_deref())?;
            if record.state == State::Running {
                if let Some(deadline) = deadline.filter(|d| Instant::now() < *d) {
                    self.wait_until_settled(&plan.namespace, &plan.key, deadline)
                        .await?;
                    continue;
                }
            }
            return self.existing_outcome(plan, record).map(Begin::Done);
        }
    }

    async fn claim(&self, plan: &Plan) -> Result<(ClaimResponse, Owner, Instant), Error> {
        let owner = Owner::current();
        let request = ClaimRequest::new(
            plan.namespace.clone(),
            plan.key.clone(),
            owner.clone(),
            plan.ttl,
            plan.hard_ttl,
            plan.fingerprint.clone(),
        );
        let store = &self.inner.store;
        let mut last_error = None;
        // Leases are dated from the first attempt: an earlier attempt may be the one that
        // committed.
        let first_sent = Instant::now();
        // A row carrying our attempt id is ours, however we learn of it: an earlier attempt
        // whose reply was lost (or that committed after we gave up on it) claimed the key.
        let ours = |r: Record| {
            if r.owner.as_ref().is_some_and(|o| o.attempt == owner.attempt)
                && r.state == State::Running
            {
                ClaimResponse::Acquired(r)
            } else {
                ClaimResponse::Existing(r)
            }
        };
        for _ in 0..CLAIM_ATTEMPTS {
            match timed("claim", store.claim(&request)).await {
                Ok(ClaimResponse::Raced) => {
                    self.inner
                        .counters
                        .claim_retries
                        .fetch_add(1, Ordering::Relaxed);
                    metrics::claim_retry();
                }
                Ok(ClaimResponse::Existing(r)) => return Ok((ours(r), owner, first_sent)),
                Ok(response) => return Ok((response, owner, first_sent)),
                Err(e) if e.is_ambiguous() => {
                    // The claim may have committed: our attempt id on the row says it did.
                    tracing::warn!(error = %e, "claim reply lost; re-reading the row");
                    match self.reread(plan).await {
                        Ok(Some(r)) => return Ok((ours(r), owner, first_sent)),
                        Ok(None) => last_error = Some(e), // did not commit: claim again
                        Err(_) => return Err(e.into()),
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(last_error.map_or_else(
            || {
                Error::Store(StoreError::new(
                    StoreErrorKind::Busy,
                    "claim kept racing with concurrent inserts",
                ))
            },
            Error::Store,
        ))
    }

    /// Re-reads a row after an ambiguous write, retrying transient failures briefly.
    async fn reread(&self, plan: &Plan) -> Result<Option<Record>, StoreError> {
        let mut delay = Duration::from_millis(20);
        let mut attempt = 0;
        loop {
            match self.inner.store.load(&plan.namespace, &plan.key).await {
                Ok(r) => return Ok(r),
                Err(e) if e.is_transient() && attempt + 1 < WRITE_ATTEMPTS => {
                    attempt += 1;
                    tokio::time::sleep(delay).await;
                    delay *= 4;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn admit(&self) -> Result<Admission, Error> {
        self.inner.active.fetch_add(1, Ordering::SeqCst);
        let admission = Admission {
            sentinel: self.clone(),
        };
        if !self.inner.accepting.load(Ordering::SeqCst) {
            return Err(Error::ShuttingDown); // the admission is dropped: not counted
        }
        Ok(admission)
    }

    fn start_execution(
        &self,
        plan: &Plan,
        record: &Record,
        owner: Owner,
        sent: Instant,
        admission: Admission,
    ) -> Execution {
        let token = record.fencing_token;
        let (id, lost) = self.inner.in_flight.register(
            &plan.namespace,
            &plan.key,
            token,
            plan.ttl,
            plan.hard_ttl,
            sent,
        );
        self.inner
            .counters
            .executions
            .fetch_add(1, Ordering::Relaxed);
        metrics::execution();
        let ctx = ExecutionContext::new(
            plan.namespace.clone(),
            plan.key.clone(),
            token,
            plan.ttl,
            lost,
        );
        Execution {
            guard: ExecutionGuard {
                sentinel: self.clone(),
                _admission: admission,
                namespace: plan.namespace.clone(),
                key: plan.key.clone(),
                token,
                heartbeat_id: id,
                armed: true,
            },
            ctx,
            owner,
        }
    }

    fn existing_outcome<T, E>(&self, plan: &Plan, record: Record) -> Result<Outcome<T, E>, Error>
    where
        T: DeserializeOwned,
        E: DeserializeOwned,
    {
        let token = record.fencing_token;
        match record.state {
            State::Completed => {
                let completed = Completed::from_record(&record);
                let retention_left = record
                    .retain_until
                    .map(|r| r.duration_since(record.observed_at).unwrap_or_default());
                let outcome = self.replay(plan, &completed);
                self.inner
                    .cache
                    .insert(&plan.namespace, &plan.key, completed, retention_left);
                outcome
            }
            State::Running => {
                self.inner.counters.busy.fetch_add(1, Ordering::Relaxed);
                metrics::busy();
                Ok(Outcome::Running {
                    owner: record.owner,
                    lease_expires_at: record.lease_expires_at,
                    token,
                })
            }
            State::Uncertain | State::Reconciling => Ok(Outcome::Uncertain {
                reason: record.reason.unwrap_or(UncertainReason::OwnerDied),
                since: record.uncertain_since(),
                owner: record.owner,
                token,
            }),
        }
    }

    fn replay<T, E>(&self, plan: &Plan, completed: &Completed) -> Result<Outcome<T, E>, Error>
    where
        T: DeserializeOwned,
        E: DeserializeOwned,
    {
        self.inner.counters.replays.fetch_add(1, Ordering::Relaxed);
        metrics::replay();
        let (token, completed_at) = (completed.token, completed.completed_at);
        match &completed.result {
            None => Ok(Outcome::CompletedWithoutResult {
                token,
                completed_at,
            }),
            Some(r) if r.kind == ResultKind::Value => Ok(Outcome::Completed {
                value: decode(plan, &r.json)?,
                replayed: true,
                token,
                completed_at,
            }),
            Some(r) => Ok(Outcome::Failed {
                error: decode(plan, &r.json)?,
                replayed: true,
                disposition: Disposition::Recorded,
                token,
            }),
        }
    }

    /// Stores what the function produced, per policy.
    pub(crate) async fn finish<T, E>(
        &self,
        plan: &Plan,
        mut execution: Execution,
        output: Result<T, E>,
    ) -> Result<Outcome<T, E>, Error>
    where
        T: Serialize + Send + 'static,
        E: Serialize + Send + 'static,
    {
        let token = execution.guard.token;
        // Leave the in-flight set before writing, so a tick never reads our completion as a
        // lost lease.
        self.inner
            .in_flight
            .deregister(execution.guard.heartbeat_id);
        let result = match output {
            Ok(value) => match self.encode(&value, ResultKind::Value) {
                Ok(stored) => match self.complete(plan, token, stored).await {
                    Ok(completed_at) => Ok(Outcome::Completed {
                        value,
                        replayed: false,
                        token,
                        completed_at,
                    }),
                    Err((reason, detail)) => Err(self
                        .not_recorded(plan, token, reason, detail, Ok::<T, E>(value))
                        .await),
                },
                Err((reason, detail)) => Err(self
                    .not_recorded(plan, token, reason, detail, Ok::<T, E>(value))
                    .await),
            },
            // Once the lease is lost, an error says nothing reliable about what happened (the
            // function may have been stopped half-way): only an operator can decide, so neither
            // release nor record applies. A success is still stored: the work did finish.
            Err(error) => match policy_after(plan.policy, &execution.ctx) {
                FailurePolicy::Uncertain => {
                    self.mark_uncertain(plan, token, failure_reason(&execution.ctx))
                        .await;
                    Ok(Outcome::Failed {
                        error,
                        replayed: false,
                        disposition: Disposition::Uncertain,
                        token,
                    })
                }
                FailurePolicy::Release => {
                    let disposition = self.release(plan, token).await;
                    Ok(Outcome::Failed {
                        error,
                        replayed: false,
                        disposition,
                        token,
                    })
                }
                FailurePolicy::Record => match self.encode(&error, ResultKind::Error) {
                    Ok(stored) => match self.complete(plan, token, stored).await {
                        Ok(_) => Ok(Outcome::Failed {
                            error,
                            replayed: false,
                            disposition: Disposition::Recorded,
                            token,
                        }),
                        Err((reason, detail)) => Err(self
                            .not_recorded(plan, token, reason, detail, Err::<T, E>(error))
                            .await),
                    },
                    Err((reason, detail)) => Err(self
                        .not_recorded(plan, token, reason, detail, Err::<T, E>(error))
                        .await),
                },
            },
        };
        execution.guard.armed = false;
        result
    }

    /// The function panicked: leave the key uncertain.
    pub(crate) async fn finish_panicked(&self, plan: &Plan, mut execution: Execution) {
        self.inner
            .in_flight
            .deregister(execution.guard.heartbeat_id);
        self.mark_uncertain(plan, execution.guard.token, UncertainReason::Panicked)
            .await;
        execution.guard.armed = false;
    }

    fn encode<V: Serialize>(
        &self,
        value: &V,
        kind: ResultKind,
    ) -> Result<StoredResult, (NotRecordedReason, String)> {
        // A `Serialize` impl that panics must not escape as a panic after the work was done.
        let json = std::panic::catch_unwind(AssertUnwindSafe(|| serde_json::to_string(value)))
            .map_err(|_| {
                (
                    NotRecordedReason::Codec,
                    "serializing the result panicked".into(),
                )
            })?
            .map_err(|e| {
                (
                    NotRecordedReason::Codec,
                    format!("result does not serialize: {e}"),
                )
            })?;
        let limit = self.inner.config.max_result_bytes;
        if json.len() > limit {
            return Err((
                NotRecordedReason::TooLarge,
                format!("result is {} bytes; the limit is {limit}", json.len()),
            ));
        }
        Ok(StoredResult::new(kind, json))
    }

    /// Writes the completion and caches it.
    async fn complete(
        &self,
        plan: &Plan,
        token: FencingToken,
        result: StoredResult,
    ) -> Result<SystemTime, (NotRecordedReason, String)> {
        let cached = Completed {
            result: Some(result.clone()),
            token,
            completed_at: SystemTime::UNIX_EPOCH,
            fingerprint: plan.fingerprint.clone(),
        };
        let completed_at = self.write_completion(plan, token, result).await?;
        let cached = Completed {
            completed_at,
            ..cached
        };
        self.inner
            .cache
            .insert(&plan.namespace, &plan.key, cached, plan.retain_for);
        Ok(completed_at)
    }

    /// Writes the completion, settling a lost reply by re-reading the row.
    async fn write_completion(
        &self,
        plan: &Plan,
        token: FencingToken,
        result: StoredResult,
    ) -> Result<SystemTime, (NotRecordedReason, String)> {
        let completion = Completion::new(
            plan.namespace.clone(),
            plan.key.clone(),
            token,
            result,
            plan.retain_for,
        );
        let store = &self.inner.store;
        let mut uncertain_write = false;
        let mut last = String::new();
        for _ in 0..WRITE_ATTEMPTS {
            match timed("complete", store.complete(&completion)).await {
                Ok(Write::Applied(r)) => {
                    return Ok(r
                        .and_then(|r| r.completed_at)
                        .unwrap_or_else(SystemTime::now));
                }
                Ok(Write::Fenced) if !uncertain_write => {
                    return Err((
                        NotRecordedReason::Fenced,
                        "another owner holds a newer token".into(),
                    ));
                }
                Ok(Write::Fenced) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "completion not confirmed; re-reading the row");
                    uncertain_write = uncertain_write || e.is_ambiguous();
                    last = e.to_string();
                }
            }
            // Our earlier attempt may have committed: the row completed under our token says so.
            match self.reread(plan).await {
                Ok(Some(r)) if r.fencing_token == token && r.state == State::Completed => {
                    return Ok(r.completed_at.unwrap_or(r.updated_at));
                }
                Ok(Some(r)) if r.fencing_token == token && r.state != State::Reconciling => {
                    // Still ours and not completed: write again.
                }
                Ok(_) => {
                    return Err((
                        NotRecordedReason::Fenced,
                        "another owner holds a newer token".into(),
                    ));
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err((NotRecordedReason::Unconfirmed, last))
    }

    async fn not_recorded<R: Send + 'static>(
        &self,
        plan: &Plan,
        token: FencingToken,
        reason: NotRecordedReason,
        detail: String,
        output: R,
    ) -> Error {
        if reason != NotRecordedReason::Fenced {
            self.mark_uncertain(plan, token, UncertainReason::NotRecorded)
                .await;
        }
        let payload: Box<dyn Any + Send> = Box::new(output);
        Error::NotRecorded(Box::new(NotRecorded::new(
            token,
            reason,
            detail,
            Some(payload),
        )))
    }

    /// Best effort: lease expiry is the backstop when this write fails.
    async fn mark_uncertain(&self, plan: &Plan, token: FencingToken, reason: UncertainReason) {
        metrics::uncertain();
        let write = self
            .inner
            .store
            .mark_uncertain(&plan.namespace, &plan.key, token, reason);
        if let Err(e) = timed("mark_uncertain", write).await {
            tracing::warn!(error = %e, "could not mark the key uncertain; its lease will expire");
        }
    }

    async fn release(&self, plan: &Plan, token: FencingToken) -> Disposition {
        let write = self.inner.store.release(&plan.namespace, &plan.key, token);
        match timed("release", write).await {
            Ok(Write::Applied(_)) => Disposition::Released,
            Ok(Write::Fenced) => {
                // Another owner took over, or our lease expired meanwhile: an expired lease is
                // uncertain, not released. Record why, if the row is still ours.
                self.mark_uncertain(plan, token, UncertainReason::Failed)
                    .await;
                Disposition::Uncertain
            }
            Err(e) => {
                tracing::warn!(error = %e, "release not confirmed; re-reading the row");
                match self.reread(plan).await {
                    Ok(None) => Disposition::Released,
                    // Claimed again by someone else after our release committed.
                    Ok(Some(r))
                        if r.fencing_token > token
                            && matches!(r.state, State::Running | State::Completed) =>
                    {
                        Disposition::Released
                    }
                    _ => {
                        self.mark_uncertain(plan, token, UncertainReason::Failed)
                            .await;
                        Disposition::Uncertain
                    }
                }
            }
        }
    }
}

fn policy_after(policy: FailurePolicy, ctx: &ExecutionContext) -> FailurePolicy {
    if ctx.is_lease_lost() {
        FailurePolicy::Uncertain
    } else if ctx.did_not_start() {
        FailurePolicy::Release
    } else {
        policy
    }
}

/// Why a failure left the key uncertain: the lease loss when there was one.
fn failure_reason(ctx: &ExecutionContext) -> UncertainReason {
    match ctx.lease_lost_reason() {
        Some(crate::LeaseLost::CeilingPassed) => UncertainReason::CeilingPassed,
        Some(_) => UncertainReason::OwnerDied,
        None => UncertainReason::Failed,
    }
}

fn check_fingerprint(plan: &Plan, stored: Option<&[u8]>) -> Result<(), Error> {
    match &plan.fingerprint {
        Some(fp) if stored != Some(fp.as_slice()) => Err(Error::FingerprintMismatch {
            namespace: plan.namespace.clone(),
            key: plan.key.clone(),
        }),
        _ => Ok(()),
    }
}

fn decode<V: DeserializeOwned>(plan: &Plan, json: &str) -> Result<V, Error> {
    serde_json::from_str(json).map_err(|e| {
        Error::Codec(format!(
            "stored result of {}/{} does not deserialize into the requested type: {e}",
            plan.namespace, plan.key
        ))
    })
}

fn validate_action(action: &OperatorAction) -> Result<(), Error> {
    crate::validate_namespace(&action.namespace)?;
    crate::validate_key(&action.key)?;
    if action.actor.trim().is_empty() {
        return Err(Error::invalid("an operator action needs an actor"));
    }
    Ok(())
}

fn applied(
    action: &OperatorAction,
    response: OperatorResponse,
    why: impl FnOnce() -> &'static str,
) -> Result<Option<Record>, Error> {
    match response {
        OperatorResponse::Applied(r) => Ok(r),
        OperatorResponse::Refused(r) => Err(Error::refused(&r, why())),
        OperatorResponse::NotFound => Err(Error::NotFound {
            namespace: action.namespace.clone(),
            key: action.key.clone(),
        }),
    }
}

async fn timed<R>(op: &'static str, f: impl Future<Output = R>) -> R {
    let started = std::time::Instant::now();
    let r = f.await;
    metrics::store_latency(op, started.elapsed());
    r
}

/// A validated call.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) namespace: String,
    pub(crate) key: String,
    ttl: Duration,
    hard_ttl: Duration,
    policy: FailurePolicy,
    fingerprint: Option<Vec<u8>>,
    retain_for: Option<Duration>,
    wait: Option<Duration>,
}

pub(crate) enum Begin<T, E> {
    Done(Outcome<T, E>),
    Run(Execution),
}

/// An acquired execution: the context for the function and the guard that marks the key
/// uncertain when the call is dropped before finishing.
pub(crate) struct Execution {
    guard: ExecutionGuard,
    pub(crate) ctx: ExecutionContext,
    #[allow(dead_code)]
    owner: Owner,
}

struct ExecutionGuard {
    sentinel: Sentinel,
    _admission: Admission,
    namespace: String,
    key: String,
    token: FencingToken,
    heartbeat_id: u64,
    armed: bool,
}

impl Drop for ExecutionGuard {
    fn drop(&mut self) {
        let inner = &self.sentinel.inner;
        inner.in_flight.deregister(self.heartbeat_id);
        if self.armed {
            // Cancelled mid-function: mark the key uncertain, best effort, on Sentinel's own
            // runtime (this drop may happen anywhere). Lease expiry is the backstop.
            metrics::uncertain();
            let store = inner.store.clone();
            let (namespace, key, token) = (self.namespace.clone(), self.key.clone(), self.token);
            inner.runtime.spawn_tracked(async move {
                let r = store
                    .mark_uncertain(&namespace, &key, token, UncertainReason::Cancelled)
                    .await;
                if let Err(e) = r {
                    tracing::warn!(error = %e, "could not mark a cancelled execution uncertain");
                }
            });
        }
    }
}

/// Counts a call as active from before its claim until it is finished, so that `shutdown`
/// cannot miss a claim in flight.
struct Admission {
    sentinel: Sentinel,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let inner = &self.sentinel.inner;
        if inner.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            inner.idle.notify_waiters();
        }
    }
}

/// One call of `once`, configured with builder methods and started with [`Once::run`].
#[must_use = "a Once does nothing until `run` is awaited"]
pub struct Once<'a> {
    sentinel: &'a Sentinel,
    key: String,
    namespace: Option<String>,
    ttl: Option<Duration>,
    hard_ttl: Option<Duration>,
    policy: FailurePolicy,
    fingerprint: Option<Vec<u8>>,
    retain_for: Option<Duration>,
    wait: Option<Duration>,
}

impl Once<'_> {
    /// The namespace (default: the Sentinel's).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Lease length; renewed every third of it while the function runs.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Absolute lifetime from the claim (default: the larger of ttl and 1 hour).
    pub fn hard_ttl(mut self, hard_ttl: Duration) -> Self {
        self.hard_ttl = Some(hard_ttl);
        self
    }

    /// What a failing function means for the key (default: uncertain).
    pub fn on_failure(mut self, policy: FailurePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// A fingerprint of the request; a later call with another fingerprint gets
    /// [`Error::FingerprintMismatch`] instead of a replay.
    pub fn fingerprint(mut self, fingerprint: impl AsRef<[u8]>) -> Self {
        self.fingerprint = Some(fingerprint.as_ref().to_vec());
        self
    }

    /// How long the completed record is kept before `prune` may delete it.
    pub fn retain_for(mut self, retention: Duration) -> Self {
        self.retain_for = Some(retention);
        self
    }

    /// When another worker holds the key, wait up to `timeout` for it to finish and return its
    /// outcome instead of `Running`.
    pub fn wait(mut self, timeout: Duration) -> Self {
        self.wait = Some(timeout);
        self
    }

    /// Runs `f` unless the key already has a record, and returns the outcome.
    ///
    /// A panic in `f` leaves the key uncertain and resumes unwinding; dropping this future while
    /// `f` runs leaves it uncertain too (reason `cancelled`).
    pub async fn run<F, Fut, T, E>(self, f: F) -> Result<Outcome<T, E>, Error>
    where
        F: FnOnce(ExecutionContext) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        T: Serialize + DeserializeOwned + Send + 'static,
        E: Serialize + DeserializeOwned + Send + 'static,
    {
        let sentinel = self.sentinel;
        let plan = sentinel.plan(&self)?;
        let span = tracing::info_span!(
            "sentinel.once",
            namespace = %plan.namespace,
            key = %plan.key,
            token = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        async move {
            let execution = match sentinel.begin::<T, E>(&plan).await? {
                Begin::Done(outcome) => {
                    record_outcome(&outcome);
                    return Ok(outcome);
                }
                Begin::Run(execution) => execution,
            };
            tracing::Span::current().record("token", execution.ctx.fencing_token().get());
            // `f` itself is called inside the catch, so a panic before its first await counts
            // as a panic too.
            let ctx = execution.ctx.clone();
            let output = CatchUnwind(Box::pin(async move { f(ctx).await })).await;
            match output {
                Ok(output) => {
                    let outcome = sentinel.finish(&plan, execution, output).await;
                    if let Ok(o) = &outcome {
                        record_outcome(o);
                    }
                    outcome
                }
                Err(panic) => {
                    sentinel.finish_panicked(&plan, execution).await;
                    std::panic::resume_unwind(panic)
                }
            }
        }
        .instrument(span)
        .await
    }
}

fn record_outcome<T, E>(outcome: &Outcome<T, E>) {
    let name = match outcome {
        Outcome::Completed {
            replayed: false, ..
        } => "completed",
        Outcome::Completed { replayed: true, .. } | Outcome::CompletedWithoutResult { .. } => {
            "replayed"
        }
        Outcome::Failed { .. } => "failed",
        Outcome::Running { .. } => "running",
        Outcome::Uncertain { .. } => "uncertain",
    };
    tracing::Span::current().record("outcome", name);
}

/// Catches a panic raised while polling the user's future.
pub(crate) struct CatchUnwind<F>(pub(crate) Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

impl Sentinel {
    pub(crate) fn plan_for(&self, once: &Once<'_>) -> Result<Plan, Error> {
        self.plan(once)
    }
}

impl<'a> Once<'a> {
    pub(crate) fn sentinel(&self) -> &'a Sentinel {
        self.sentinel
    }
}
