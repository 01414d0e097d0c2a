//! The engine's handle: [`Sentinel`], its shared state, its counters and its shutdown. The once
//! path lives in `once.rs` (the builder), `claim.rs` (claim → settled outcome or execution) and
//! `execution.rs` (the execution handle and its completion); the operator API in `operator.rs`.
//! Stores are thin; every rule of policy lives in these files (see `docs/design.md`).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::cache::ResultCache;
use crate::config::{Config, SentinelBuilder};
use crate::heartbeat::InFlight;
use crate::runtime::OwnRuntime;
use crate::store::Store;
use crate::{Error, Once, metrics};

/// Counters kept by the engine whether or not the `metrics` feature is on.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) executions: AtomicU64,
    pub(crate) replays: AtomicU64,
    pub(crate) busy: AtomicU64,
    pub(crate) claim_retries: AtomicU64,
    pub(crate) cache_hits: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
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

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) config: Config,
    pub(crate) in_flight: Arc<InFlight>,
    pub(crate) runtime: OwnRuntime,
    accepting: AtomicBool,
    /// Woken when shutdown starts, so that calls waiting on another owner stop waiting.
    stopping: Notify,
    active: AtomicUsize,
    idle: Notify,
    pub(crate) counters: Counters,
    pub(crate) cache: ResultCache,
}

/// The entry point: runs functions at most once per key and replays their results.
///
/// Cheap to clone; clones share one heartbeat, one cache and one shutdown.
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
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Sentinel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sentinel")
            .field("store", &self.inner.store)
            .field("config", &self.inner.config)
            .field("in_flight", &self.inner.in_flight.len())
            .finish_non_exhaustive()
    }
}

impl Sentinel {
    /// Starts building a Sentinel over `store` (owned, or shared as an `Arc`).
    pub fn builder(store: impl Store) -> SentinelBuilder {
        SentinelBuilder::new(store)
    }

    /// Starts the engine over a validated configuration.
    pub(crate) fn start(store: Arc<dyn Store>, config: Config) -> Result<Self, Error> {
        let cache = ResultCache::new(config.cache_capacity, config.cache_max_age);
        let in_flight = Arc::new(InFlight::default());
        let stats_every = cfg!(feature = "metrics").then_some(config.stats_interval);
        let runtime = OwnRuntime::start(store.clone(), in_flight.clone(), stats_every)
            .map_err(|e| Error::internal(format!("could not start the sentinel thread: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                config,
                in_flight,
                runtime,
                accepting: AtomicBool::new(true),
                stopping: Notify::new(),
                active: AtomicUsize::new(0),
                idle: Notify::new(),
                counters: Counters::default(),
                cache,
            }),
        })
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

    /// Prepares a call for `key`; configure it, then [`Once::run`] it (or [`Once::begin`] it and
    /// finish the [`Execution`](crate::Execution) yourself). The builder is owned: it can be
    /// moved into a task, a service future or another language's object.
    pub fn once(&self, key: impl Into<String>) -> Once {
        Once::new(self.clone(), key.into())
    }

    /// Sentinel's own runtime: it runs the heartbeat and the blocking facade's store calls.
    pub(crate) fn runtime(&self) -> &tokio::runtime::Handle {
        self.inner.runtime.handle()
    }

    /// Stops accepting work, waits (at most [`Config::shutdown_timeout`]) for in-flight
    /// executions and stops the heartbeat. Calls made afterwards fail with
    /// [`Error::ShuttingDown`].
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.accepting.store(false, Ordering::SeqCst);
        inner.stopping.notify_waiters();
        let deadline = Instant::now() + inner.config.shutdown_timeout;
        loop {
            let idle = inner.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if inner.active.load(Ordering::SeqCst) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                tracing::warn!(
                    in_flight = inner.active.load(Ordering::SeqCst),
                    "shutdown timed out with executions still running"
                );
                break;
            }
        }
        inner.runtime.stop();
    }

    /// Creates or upgrades the store's schema (idempotent).
    ///
    /// # Errors
    ///
    /// [`Error::Store`] when the store cannot be reached or its schema is newer than this build.
    pub async fn migrate(&self) -> Result<(), Error> {
        Ok(self.inner.store.migrate().await?)
    }

    /// Waits (as `wait_until_settled`) for another owner's key to settle, unless shutdown starts
    /// first: a call must not claim anything once this Sentinel stopped accepting work.
    pub(crate) async fn wait_unless_stopping(
        &self,
        namespace: &str,
        key: &str,
        deadline: Instant,
    ) -> Result<(), Error> {
        let stopping = self.inner.stopping.notified();
        tokio::pin!(stopping);
        stopping.as_mut().enable();
        if !self.inner.accepting.load(Ordering::SeqCst) {
            return Err(Error::ShuttingDown);
        }
        tokio::select! {
            r = self.wait_until_settled(namespace, key, deadline) => r.map(drop),
            () = stopping => Err(Error::ShuttingDown),
        }
    }

    /// Counts a call as active from before its claim until it is finished, so that `shutdown`
    /// cannot miss a claim in flight.
    pub(crate) fn admit(&self) -> Result<Admission, Error> {
        self.inner.active.fetch_add(1, Ordering::SeqCst);
        let admission = Admission {
            sentinel: self.clone(),
        };
        if !self.inner.accepting.load(Ordering::SeqCst) {
            return Err(Error::ShuttingDown); // the admission is dropped: not counted
        }
        Ok(admission)
    }
}

/// One call counted as active; uncounted when dropped.
pub(crate) struct Admission {
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

/// Runs a store call, recording its latency.
pub(crate) async fn timed<R>(op: &'static str, f: impl Future<Output = R>) -> R {
    let started = std::time::Instant::now();
    let r = f.await;
    metrics::store_latency(op, started.elapsed());
    r
}
