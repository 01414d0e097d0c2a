//! The blocking facade, for code without an async runtime.
//!
//! Store calls run on Sentinel's own runtime thread and their results come back over channels;
//! the function runs on the caller's thread. Nothing here calls `block_on` on the caller's thread,
//! so it is safe (if wasteful) to call from inside another runtime, and heartbeats keep running
//! while the function works.
//!
//! ```
//! use sentinel_core::{MemoryStore, Outcome, Sentinel};
//!
//! let sentinel = sentinel_core::blocking::Sentinel::new(Sentinel::builder(MemoryStore::new()).build()?);
//! let outcome = sentinel.once("nightly-report").run(|ctx| Ok::<_, String>(ctx.fencing_token().get()))?;
//! assert!(matches!(outcome, Outcome::Completed { replayed: false, .. }));
//! # Ok::<(), sentinel_core::Error>(())
//! ```

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::store::{ListQuery, OperatorAction, PruneQuery, Resolution};
use crate::{Error, Event, ExecutionContext, FailurePolicy, FencingToken, Outcome, Record};

/// A blocking handle over an async [`crate::Sentinel`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Sentinel {
    inner: crate::Sentinel,
}

impl Sentinel {
    /// Wraps an async Sentinel.
    pub fn new(sentinel: crate::Sentinel) -> Self {
        Self { inner: sentinel }
    }

    /// The async Sentinel underneath.
    pub fn as_async(&self) -> &crate::Sentinel {
        &self.inner
    }

    /// Prepares a call for `key`.
    pub fn once(&self, key: impl Into<String>) -> Once {
        Once(self.inner.once(key))
    }

    fn call<R, Fut>(&self, f: impl FnOnce(crate::Sentinel) -> Fut) -> Result<R, Error>
    where
        Fut: Future<Output = Result<R, Error>> + Send + 'static,
        R: Send + 'static,
    {
        call(&self.inner, f(self.inner.clone()))
    }

    /// See [`crate::Sentinel::migrate`].
    ///
    /// # Errors
    ///
    /// Those of [`crate::Sentinel::migrate`].
    pub fn migrate(&self) -> Result<(), Error> {
        self.call(|s| async move { s.migrate().await })
    }

    /// See [`crate::Sentinel::inspect`].
    ///
    /// # Errors
    ///
    /// Those of [`crate::Sentinel::inspect`].
    pub fn inspect(&self, namespace: &str, key: &str) -> Result<Option<Record>, Error> {
        let (ns, k) = (namespace.to_owned(), key.to_owned());
        self.call(|s| async move { s.inspect(&ns, &k).await })
    }

    /// See [`crate::Sentinel::list`].
    ///
    /// # Errors
    ///
    /// Those of [`crate::Sentinel::list`].
    pub fn list(&self, query: &ListQuery) -> Result<Vec<Record>, Error> {
        let q = query.clone();
        self.call(|s| async move { s.list(&q).await })
    }

    /// See [`crate::Sentinel::history`].
    ///
    /// # Errors
    ///
    /// Those of [`crate::Sentinel::history`].
    pub fn history(&self, namespace: &str, key: &str, limit: usize) -> Result<Vec<Event>, Error> {
        let (ns, k) = (namespace.to_owned(), key.to_owned());
        self.call(|s| async move { s.history(&ns, &k, limit).await })
    }

    /// See [`crate::Sentinel::reconcile`].
    ///
    /// # Errors
    ///
    /// Those of [`crate::Sentinel::reconcile`].
    pub fn reconcile(&self, action: &OperatorAction, force: bool) -> Result<FencingToken, Error> {
        let a = action.clone();
        self.call(|s| async move { s.reconcile(&a, force).await })
    }

    /// See [`crate::Sentinel::resolve`].
    ///
    /// # Errors
    ///
    /// Those of [`crate::Sentinel::resolve`].
    pub fn resolve(
        &self,
        action: &OperatorAction,
        resolution: &Resolution,
        expected_token: Option<FencingToken>,
    ) -> Result<(), Error> {
        let (a, r) = (action.clone(), resolution.clone());
        self.call(|s| async move { s.resolve(&a, &r, expected_token).await })
    }

    /// See [`crate::Sentinel::forget`].
    ///
    /// # Errors
    ///
    /// Those of [`crate::Sentinel::forget`].
    pub fn forget(&self, action: &OperatorAction) -> Result<(), Error> {
        let a = action.clone();
        self.call(|s| async move { s.forget(&a).await })
    }

    /// See [`crate::Sentinel::prune`].
    ///
    /// # Errors
    ///
    /// Those of [`crate::Sentinel::prune`].
    pub fn prune(&self, query: &PruneQuery) -> Result<u64, Error> {
        let q = query.clone();
        self.call(|s| async move { s.prune(&q).await })
    }

    /// See [`crate::Sentinel::wait`].
    ///
    /// # Errors
    ///
    /// Those of [`crate::Sentinel::wait`].
    pub fn wait(
        &self,
        namespace: &str,
        key: &str,
        timeout: Duration,
    ) -> Result<Option<Record>, Error> {
        let (ns, k) = (namespace.to_owned(), key.to_owned());
        self.call(|s| async move { s.wait(&ns, &k, timeout).await })
    }

    /// See [`crate::Sentinel::shutdown`].
    pub fn shutdown(&self) {
        let _ = self.call(|s| async move {
            s.shutdown().await;
            Ok(())
        });
    }
}

/// Runs `fut` on Sentinel's own runtime and waits for it on this thread. Once that runtime is
/// gone (after `shutdown`), work it never started runs on a thread of its own instead, so that
/// nothing handed over is silently dropped; work it dropped half-way is `ShuttingDown`.
fn call<R: Send + 'static>(
    sentinel: &crate::Sentinel,
    fut: impl Future<Output = Result<R, Error>> + Send + 'static,
) -> Result<R, Error> {
    let slot = std::sync::Arc::new(std::sync::Mutex::new(Some(fut)));
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let task_slot = slot.clone();
    sentinel.runtime().spawn(async move {
        let fut = task_slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(fut) = fut {
            let _ = tx.send(fut.await);
        }
    });
    if let Ok(r) = rx.recv() {
        return r;
    }
    let unstarted = slot
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    match unstarted {
        Some(fut) => crate::runtime::run_on_own_thread(fut).unwrap_or(Err(Error::ShuttingDown)),
        None => Err(Error::ShuttingDown),
    }
}

/// A finishing write that Sentinel's runtime dropped half-way: the work ran, its outcome is not
/// known to be stored.
fn unfinished(token: FencingToken, e: Error) -> Error {
    match e {
        Error::ShuttingDown => Error::NotRecorded(Box::new(crate::NotRecorded::new(
            token,
            crate::NotRecordedReason::Unconfirmed,
            "Sentinel's runtime stopped while the outcome was being written",
            None,
        ))),
        other => other,
    }
}

/// One blocking call of `once`; the same knobs as [`crate::Once`], and owned like it.
#[derive(Debug, Clone)]
#[must_use = "a Once does nothing until `run` or `begin` is called"]
pub struct Once(crate::Once);

/// What [`Once::begin`] found: the blocking twin of [`crate::Begin`].
#[derive(Debug)]
#[must_use = "an acquired Execution must be finished, or the key turns uncertain"]
#[non_exhaustive]
#[allow(clippy::large_enum_variant)]
pub enum Begin<T, E> {
    /// The key has a record and this call does not run (see [`crate::Begin::Settled`]).
    Settled(Outcome<T, E>),
    /// This call owns the key: do the work, then finish the handle.
    Acquired(Execution<T, E>),
}

impl Once {
    /// See [`crate::Once::namespace`].
    pub fn namespace(self, namespace: impl Into<String>) -> Self {
        Self(self.0.namespace(namespace))
    }

    /// See [`crate::Once::ttl`].
    pub fn ttl(self, ttl: Duration) -> Self {
        Self(self.0.ttl(ttl))
    }

    /// See [`crate::Once::hard_ttl`].
    pub fn hard_ttl(self, hard_ttl: Duration) -> Self {
        Self(self.0.hard_ttl(hard_ttl))
    }

    /// See [`crate::Once::on_failure`].
    pub fn on_failure(self, policy: FailurePolicy) -> Self {
        Self(self.0.on_failure(policy))
    }

    /// See [`crate::Once::fingerprint`].
    pub fn fingerprint(self, fingerprint: impl AsRef<[u8]>) -> Self {
        Self(self.0.fingerprint(fingerprint))
    }

    /// See [`crate::Once::retain_for`].
    pub fn retain_for(self, retention: Duration) -> Self {
        Self(self.0.retain_for(retention))
    }

    /// See [`crate::Once::wait`].
    pub fn wait(self, timeout: Duration) -> Self {
        Self(self.0.wait(timeout))
    }

    /// Claims the key on Sentinel's own runtime, blocking this thread until it is settled or
    /// acquired; see [`crate::Once::begin`].
    ///
    /// # Errors
    ///
    /// Those of [`crate::Once::begin`].
    pub fn begin<T, E>(self) -> Result<Begin<T, E>, Error>
    where
        T: DeserializeOwned + Send + 'static,
        E: DeserializeOwned + Send + 'static,
    {
        let once = self.0;
        once.validate()?;
        let sentinel = once.sentinel().clone();
        match call(&sentinel, async move { once.begin::<T, E>().await })? {
            crate::Begin::Settled(outcome) => Ok(Begin::Settled(outcome)),
            crate::Begin::Acquired(execution) => Ok(Begin::Acquired(Execution(execution))),
        }
    }

    /// Runs `f` on this thread unless the key already has a record. A panic in `f` leaves the
    /// key uncertain and resumes unwinding.
    ///
    /// # Errors
    ///
    /// Those of [`crate::Once::run`].
    pub fn run<F, T, E>(self, f: F) -> Result<Outcome<T, E>, Error>
    where
        F: FnOnce(&ExecutionContext) -> Result<T, E>,
        T: Serialize + DeserializeOwned + Send + 'static,
        E: Serialize + DeserializeOwned + Send + 'static,
    {
        let execution = match self.begin::<T, E>()? {
            Begin::Settled(outcome) => return Ok(outcome),
            Begin::Acquired(execution) => execution,
        };
        match std::panic::catch_unwind(AssertUnwindSafe(|| f(execution.context()))) {
            Ok(Ok(value)) => execution.complete(value),
            Ok(Err(error)) => execution.fail(error),
            Err(panic) => {
                execution.abandon(crate::UncertainReason::Panicked);
                std::panic::resume_unwind(panic)
            }
        }
    }
}

/// An execution this call owns: the blocking twin of [`crate::Execution`]. Its heartbeat runs on
/// Sentinel's own thread while the work runs on the caller's; dropping it unfinished leaves the
/// key uncertain (reason `cancelled`).
#[derive(Debug)]
#[must_use = "an Execution must be finished with complete, fail or release, or the key turns uncertain"]
pub struct Execution<T, E>(crate::Execution<T, E>);

impl<T, E> Execution<T, E> {
    /// The key being executed.
    pub fn key(&self) -> &str {
        self.0.key()
    }

    /// Its namespace.
    pub fn namespace(&self) -> &str {
        self.0.namespace()
    }

    /// The fencing token of this execution.
    pub fn fencing_token(&self) -> FencingToken {
        self.0.fencing_token()
    }

    /// Token, lease-lost signal and `mark_not_started`.
    pub fn context(&self) -> &ExecutionContext {
        self.0.context()
    }

    /// Cheap check: has the lease been lost?
    pub fn is_lease_lost(&self) -> bool {
        self.0.is_lease_lost()
    }

    /// Cheap check: has the lease been lost, and why?
    pub fn lease_lost_reason(&self) -> Option<crate::LeaseLost> {
        self.0.lease_lost_reason()
    }
}

impl<T, E> Execution<T, E>
where
    T: Serialize + Send + 'static,
    E: Serialize + Send + 'static,
{
    /// See [`crate::Execution::complete`].
    ///
    /// # Errors
    ///
    /// Those of [`crate::Execution::complete`].
    pub fn complete(self, value: T) -> Result<Outcome<T, E>, Error> {
        let execution = self.0;
        let (sentinel, token) = (execution.sentinel().clone(), execution.fencing_token());
        call(&sentinel, async move { execution.complete(value).await })
            .map_err(|e| unfinished(token, e))
    }

    /// See [`crate::Execution::fail`].
    ///
    /// # Errors
    ///
    /// Those of [`crate::Execution::fail`].
    pub fn fail(self, error: E) -> Result<Outcome<T, E>, Error> {
        let execution = self.0;
        let (sentinel, token) = (execution.sentinel().clone(), execution.fencing_token());
        call(&sentinel, async move { execution.fail(error).await })
            .map_err(|e| unfinished(token, e))
    }

    /// See [`crate::Execution::release`].
    pub fn release(self) -> crate::Disposition {
        let execution = self.0;
        let sentinel = execution.sentinel().clone();
        call(&sentinel, async move { Ok(execution.release().await) })
            .unwrap_or(crate::Disposition::Uncertain)
    }

    /// Leaves the key uncertain for `reason` now, waiting for the mark; see
    /// [`crate::Execution::abandon`].
    pub fn abandon(self, reason: crate::UncertainReason) {
        let execution = self.0;
        let sentinel = execution.sentinel().clone();
        let _ = call(&sentinel, async move {
            execution.abandon(reason).await;
            Ok(())
        });
    }
}
