//! The second half of the once path: an [`Execution`] this call owns, kept alive by the
//! heartbeat until it is finished (`finish.rs` stores the result, releases the key or leaves it
//! uncertain, per the failure policy) or dropped (the key is left uncertain).

use std::marker::PhantomData;

use serde::Serialize;
use tokio::time::Instant;
use tracing::Instrument;

use crate::engine::Admission;
use crate::once::Plan;
use crate::policy::failure_reason;
use crate::{
    Disposition, Error, ExecutionContext, FencingToken, LeaseLost, Outcome, Sentinel,
    UncertainReason, metrics,
};

/// An execution this call owns, from [`Once::begin`](crate::Once::begin): the key, its fencing
/// token and its lease-lost signal. The heartbeat renews the lease until the handle is finished
/// with [`complete`](Execution::complete), [`fail`](Execution::fail) or
/// [`release`](Execution::release). Dropping it unfinished leaves the key uncertain (reason
/// `cancelled`), exactly as dropping [`Once::run`](crate::Once::run)'s future does.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sentinel_core::Error> {
/// use sentinel_core::{Begin, MemoryStore, Outcome, Sentinel};
///
/// let sentinel = Sentinel::builder(MemoryStore::new()).build()?;
/// match sentinel.once("webhook-77").begin::<String, String>().await? {
///     Begin::Acquired(execution) => {
///         // … deliver the webhook, passing execution.fencing_token() downstream …
///         let outcome = execution.complete("delivered".to_owned()).await?;
///         assert!(matches!(outcome, Outcome::Completed { replayed: false, .. }));
///     }
///     Begin::Settled(outcome) => println!("already settled: {outcome:?}"),
///     _ => {}
/// }
/// # Ok(()) }
/// ```
#[must_use = "an Execution must be finished with complete, fail or release, or the key turns uncertain"]
pub struct Execution<T, E> {
    pub(crate) sentinel: Sentinel,
    pub(crate) plan: Plan,
    pub(crate) ctx: ExecutionContext,
    heartbeat_id: u64,
    /// Still unfinished: dropping the handle marks the key uncertain.
    armed: bool,
    span: tracing::Span,
    _admission: Admission,
    _types: PhantomData<fn() -> (T, E)>,
}

impl<T, E> std::fmt::Debug for Execution<T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Execution")
            .field("namespace", &self.plan.namespace)
            .field("key", &self.plan.key)
            .field("token", &self.ctx.fencing_token())
            .field("lease_lost", &self.ctx.lease_lost_reason())
            .finish_non_exhaustive()
    }
}

impl<T, E> Execution<T, E> {
    /// Joins the heartbeat's in-flight set; `sent` is when the claim was first sent, which the
    /// local lease deadline is dated from.
    pub(crate) fn start(
        sentinel: Sentinel,
        plan: Plan,
        token: FencingToken,
        sent: Instant,
        admission: Admission,
        span: tracing::Span,
    ) -> Self {
        let (heartbeat_id, lost) = sentinel.inner.in_flight.register(
            &plan.namespace,
            &plan.key,
            token,
            plan.ttl,
            plan.hard_ttl,
            sent,
        );
        let ctx = ExecutionContext::new(
            plan.namespace.clone(),
            plan.key.clone(),
            token,
            plan.ttl,
            lost,
        );
        Self {
            sentinel,
            plan,
            ctx,
            heartbeat_id,
            armed: true,
            span,
            _admission: admission,
            _types: PhantomData,
        }
    }

    /// The key being executed.
    pub fn key(&self) -> &str {
        &self.plan.key
    }

    /// Its namespace.
    pub fn namespace(&self) -> &str {
        &self.plan.namespace
    }

    /// The fencing token of this execution: pass it downstream so other systems can reject a
    /// stale writer.
    pub fn fencing_token(&self) -> FencingToken {
        self.ctx.fencing_token()
    }

    /// The context a function run by [`Once::run`](crate::Once::run) gets: token, lease-lost
    /// signal, `mark_not_started`.
    pub fn context(&self) -> &ExecutionContext {
        &self.ctx
    }

    /// Cheap check: has the lease been lost?
    pub fn is_lease_lost(&self) -> bool {
        self.ctx.is_lease_lost()
    }

    /// Cheap check: has the lease been lost, and why?
    pub fn lease_lost_reason(&self) -> Option<LeaseLost> {
        self.ctx.lease_lost_reason()
    }

    /// Resolves when the lease is lost (see [`ExecutionContext::lease_lost`]).
    pub async fn lease_lost(&self) -> LeaseLost {
        self.ctx.lease_lost().await
    }

    pub(crate) fn sentinel(&self) -> &Sentinel {
        &self.sentinel
    }

    pub(crate) fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Leaves the heartbeat's in-flight set: done before any finishing write, so that a tick
    /// never takes the completion for a lost lease.
    fn deregister(&self) {
        self.sentinel.inner.in_flight.deregister(self.heartbeat_id);
    }

    /// The work is done: stores `value` and returns `Completed`.
    ///
    /// # Errors
    ///
    /// [`Error::NotRecorded`] (carrying `Ok(value)` as `Result<T, E>`) when the value cannot be
    /// serialized, is over the size limit, or its write is fenced or cannot be confirmed; the
    /// key is then left uncertain.
    pub async fn complete(mut self, value: T) -> Result<Outcome<T, E>, Error>
    where
        T: Serialize + Send + 'static,
        E: Serialize + Send + 'static,
    {
        self.deregister();
        let span = self.span.clone();
        let result = self.settle(Ok(value)).instrument(span).await;
        self.disarm(&result);
        result
    }

    /// The work failed with `error`: the failure policy decides what becomes of the key
    /// (uncertain by default, released, or the error recorded and replayed), except that after
    /// a lease loss or with work declared not started the policy is overridden as documented on
    /// [`FailurePolicy`](crate::FailurePolicy). Returns `Failed` with that disposition.
    ///
    /// # Errors
    ///
    /// [`Error::NotRecorded`] (carrying `Err(error)`) when policy `record` cannot store it.
    pub async fn fail(mut self, error: E) -> Result<Outcome<T, E>, Error>
    where
        T: Serialize + Send + 'static,
        E: Serialize + Send + 'static,
    {
        self.deregister();
        let span = self.span.clone();
        let result = self.settle(Err(error)).instrument(span).await;
        self.disarm(&result);
        result
    }

    /// Nothing happened: removes the record so the next caller runs, whatever the failure
    /// policy. Returns [`Disposition::Released`], or [`Disposition::Uncertain`] when the lease
    /// was lost meanwhile (then only an operator can say what happened).
    pub async fn release(mut self) -> Disposition {
        self.deregister();
        let span = self.span.clone();
        let disposition = async {
            if self.ctx.is_lease_lost() {
                self.mark_uncertain(failure_reason(&self.ctx)).await;
                Disposition::Uncertain
            } else {
                self.release_key().await
            }
        }
        .instrument(span)
        .await;
        self.armed = false;
        let name = match disposition {
            Disposition::Released => "released",
            _ => "uncertain",
        };
        self.span.record("outcome", name);
        disposition
    }

    /// Leaves the key uncertain for `reason` now — `Panicked`, `Cancelled` for work interrupted
    /// part-way (a binding's interrupt), `NotRecorded` for a result that cannot be stored — and
    /// returns once the mark is written (or could not be), where dropping the handle marks it
    /// in the background.
    pub async fn abandon(mut self, reason: UncertainReason) {
        self.deregister();
        let span = self.span.clone();
        self.mark_uncertain(reason).instrument(span).await;
        self.armed = false;
    }

    fn disarm<R>(&mut self, result: &Result<Outcome<T, E>, R>) {
        self.armed = false;
        if let Ok(outcome) = result {
            self.span.record("outcome", outcome.kind().as_str());
        }
    }
}

impl<T, E> Drop for Execution<T, E> {
    fn drop(&mut self) {
        self.deregister();
        if self.armed {
            // Dropped unfinished (cancelled mid-function): mark the key uncertain, best effort,
            // on Sentinel's own runtime (this drop may happen anywhere). Lease expiry is the
            // backstop.
            metrics::uncertain();
            let inner = &self.sentinel.inner;
            let store = inner.store.clone();
            let (namespace, key, token) = (
                self.plan.namespace.clone(),
                self.plan.key.clone(),
                self.fencing_token(),
            );
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
