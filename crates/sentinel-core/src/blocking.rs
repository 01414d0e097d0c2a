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

use crate::engine::Begin;
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
    pub fn once(&self, key: impl Into<String>) -> Once<'_> {
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
    pub fn migrate(&self) -> Result<(), Error> {
        self.call(|s| async move { s.migrate().await })
    }

    /// See [`crate::Sentinel::inspect`].
    pub fn inspect(&self, namespace: &str, key: &str) -> Result<Option<Record>, Error> {
        let (ns, k) = (namespace.to_owned(), key.to_owned());
        self.call(|s| async move { s.inspect(&ns, &k).await })
    }

    /// See [`crate::Sentinel::list`].
    pub fn list(&self, query: &ListQuery) -> Result<Vec<Record>, Error> {
        let q = query.clone();
        self.call(|s| async move { s.list(&q).await })
    }

    /// See [`crate::Sentinel::history`].
    pub fn history(&self, namespace: &str, key: &str, limit: usize) -> Result<Vec<Event>, Error> {
        let (ns, k) = (namespace.to_owned(), key.to_owned());
        self.call(|s| async move { s.history(&ns, &k, limit).await })
    }

    /// See [`crate::Sentinel::reconcile`].
    pub fn reconcile(&self, action: &OperatorAction, force: bool) -> Result<FencingToken, Error> {
        let a = action.clone();
        self.call(|s| async move { s.reconcile(&a, force).await })
    }

    /// See [`crate::Sentinel::resolve`].
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
    pub fn forget(&self, action: &OperatorAction) -> Result<(), Error> {
        let a = action.clone();
        self.call(|s| async move { s.forget(&a).await })
    }

    /// See [`crate::Sentinel::prune`].
    pub fn prune(&self, query: &PruneQuery) -> Result<u64, Error> {
        let q = *query;
        self.call(|s| async move { s.prune(&q).await })
    }

    /// See [`crate::Sentinel::wait`].
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

/// Runs `fut` on Sentinel's own runtime and waits for it on this thread.
fn call<R: Send + 'static>(
    sentinel: &crate::Sentinel,
    fut: impl Future<Output = Result<R, Error>> + Send + 'static,
) -> Result<R, Error> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    sentinel.runtime().spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv().unwrap_or(Err(Error::ShuttingDown))
}

/// One blocking call of `once`; the same knobs as [`crate::Once`].
#[must_use = "a Once does nothing until `run` is called"]
pub struct Once<'a>(crate::Once<'a>);

impl Once<'_> {
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

    /// Runs `f` on this thread unless the key already has a record. A panic in `f` leaves the
    /// key uncertain and resumes unwinding.
    pub fn run<F, T, E>(self, f: F) -> Result<Outcome<T, E>, Error>
    where
        F: FnOnce(&ExecutionContext) -> Result<T, E>,
        T: Serialize + DeserializeOwned + Send + 'static,
        E: Serialize + DeserializeOwned + Send + 'static,
    {
        let sentinel = self.0.sentinel().clone();
        let plan = sentinel.plan_for(&self.0)?;
        let (s, p) = (sentinel.clone(), plan.clone());
        let execution = match call(&sentinel, async move { s.begin::<T, E>(&p).await })? {
            Begin::Done(outcome) => return Ok(outcome),
            Begin::Run(execution) => execution,
        };
        let output = std::panic::catch_unwind(AssertUnwindSafe(|| f(&execution.ctx)));
        let s = sentinel.clone();
        match output {
            Ok(output) => call(&sentinel, async move {
                s.finish(&plan, execution, output).await
            }),
            Err(panic) => {
                let _ = call(&sentinel, async move {
                    s.finish_panicked(&plan, execution).await;
                    Ok(())
                });
                std::panic::resume_unwind(panic)
            }
        }
    }
}
