//! The second half of the once path: an [`Execution`] this call owns, kept alive by the
//! heartbeat, and its finish — the result stored, the key released or left uncertain, per the
//! failure policy. Every way out of here writes at most one fenced transition.

use std::any::Any;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::time::SystemTime;

use serde::Serialize;
use tokio::time::Instant;

use crate::cache::Completed;
use crate::engine::{Admission, timed};
use crate::error::{NotRecorded, NotRecordedReason};
use crate::once::Plan;
use crate::policy::failure_reason;
use crate::store::{Completion, Write};
use crate::{
    Disposition, Error, ExecutionContext, FailurePolicy, FencingToken, LeaseLost, Outcome,
    ResultKind, Sentinel, State, StoredResult, UncertainReason, metrics,
};

/// How often a completion whose reply was lost is written again after re-reading the row.
const WRITE_ATTEMPTS: u32 = 3;

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
    sentinel: Sentinel,
    plan: Plan,
    ctx: ExecutionContext,
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

/// Why an outcome could not be stored (internal; becomes [`NotRecorded`]).
struct Unrecorded {
    reason: NotRecordedReason,
    detail: String,
}

impl Unrecorded {
    fn new(reason: NotRecordedReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }

    fn fenced() -> Self {
        Self::new(
            NotRecordedReason::Fenced,
            "another owner holds a newer token",
        )
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
        let result = self.settle(Ok(value)).await;
        self.disarm(&result);
        result
    }

    /// The work failed with `error`: the failure policy decides what becomes of the key
    /// (uncertain by default, released, or the error recorded and replayed), except that after
    /// a lease loss or with work declared not started the policy is overridden as documented on
    /// [`FailurePolicy`]. Returns `Failed` with that disposition.
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
        let result = self.settle(Err(error)).await;
        self.disarm(&result);
        result
    }

    /// Nothing happened: removes the record so the next caller runs, whatever the failure
    /// policy. Returns [`Disposition::Released`], or [`Disposition::Uncertain`] when the lease
    /// was lost meanwhile (then only an operator can say what happened).
    pub async fn release(mut self) -> Disposition {
        self.deregister();
        let disposition = if self.ctx.is_lease_lost() {
            self.mark_uncertain(failure_reason(&self.ctx)).await;
            Disposition::Uncertain
        } else {
            self.release_key().await
        };
        self.armed = false;
        disposition
    }

    /// Leaves the key uncertain for `reason` (the function panicked).
    pub(crate) async fn abandon(mut self, reason: UncertainReason) {
        self.deregister();
        self.mark_uncertain(reason).await;
        self.armed = false;
    }

    fn disarm<R>(&mut self, result: &Result<Outcome<T, E>, R>) {
        self.armed = false;
        if let Ok(outcome) = result {
            self.span.record("outcome", outcome.kind().as_str());
        }
    }

    /// Stores a value, or applies the failure policy to an error.
    async fn settle(&self, output: Result<T, E>) -> Result<Outcome<T, E>, Error>
    where
        T: Serialize + Send + 'static,
        E: Serialize + Send + 'static,
    {
        let token = self.fencing_token();
        let error = match output {
            Ok(value) => {
                let stored = self.encode(&value, ResultKind::Value);
                return match self.record(stored).await {
                    Ok(completed_at) => Ok(Outcome::Completed {
                        value,
                        replayed: false,
                        token,
                        completed_at,
                    }),
                    Err(u) => Err(self.not_recorded(u, Ok::<T, E>(value)).await),
                };
            }
            Err(error) => error,
        };
        let disposition = match self.plan.policy.effective(&self.ctx) {
            FailurePolicy::Release => self.release_key().await,
            FailurePolicy::Record => {
                match self.record(self.encode(&error, ResultKind::Error)).await {
                    Ok(_) => Disposition::Recorded,
                    Err(u) => return Err(self.not_recorded(u, Err::<T, E>(error)).await),
                }
            }
            _ => {
                self.mark_uncertain(failure_reason(&self.ctx)).await;
                Disposition::Uncertain
            }
        };
        Ok(Outcome::Failed {
            error,
            replayed: false,
            disposition,
            token,
        })
    }

    /// Writes the encoded completion, and caches it. (Encoding happens before, outside the
    /// future, so that it holds no reference to the value across a wait.)
    async fn record(
        &self,
        encoded: Result<StoredResult, Unrecorded>,
    ) -> Result<SystemTime, Unrecorded> {
        let stored = encoded?;
        let token = self.fencing_token();
        let plan = &self.plan;
        let completed_at = self.write_completion(stored.clone()).await?;
        let cached = Completed {
            result: Some(stored),
            token,
            completed_at,
            fingerprint: plan.fingerprint.clone(),
        };
        self.sentinel
            .inner
            .cache
            .insert(&plan.namespace, &plan.key, cached, plan.retain_for);
        Ok(completed_at)
    }

    fn encode<V: Serialize>(
        &self,
        value: &V,
        kind: ResultKind,
    ) -> Result<StoredResult, Unrecorded> {
        // A `Serialize` impl that panics must not escape as a panic after the work was done.
        let json = std::panic::catch_unwind(AssertUnwindSafe(|| serde_json::to_string(value)))
            .map_err(|_| {
                Unrecorded::new(NotRecordedReason::Codec, "serializing the result panicked")
            })?
            .map_err(|e| {
                Unrecorded::new(
                    NotRecordedReason::Codec,
                    format!("result does not serialize: {e}"),
                )
            })?;
        let limit = self.sentinel.config().max_result_bytes;
        if json.len() > limit {
            return Err(Unrecorded::new(
                NotRecordedReason::TooLarge,
                format!("result is {} bytes; the limit is {limit}", json.len()),
            ));
        }
        Ok(StoredResult::new(kind, json))
    }

    /// Writes the completion, settling a lost reply by re-reading the row.
    async fn write_completion(&self, result: StoredResult) -> Result<SystemTime, Unrecorded> {
        let plan = &self.plan;
        let token = self.fencing_token();
        let completion = Completion::new(
            plan.namespace.clone(),
            plan.key.clone(),
            token,
            result,
            plan.retain_for,
        );
        let store = &self.sentinel.inner.store;
        let mut uncertain_write = false;
        let mut last = String::new();
        for _ in 0..WRITE_ATTEMPTS {
            match timed("complete", store.complete(&completion)).await {
                Ok(Write::Applied(r)) => {
                    return Ok(r
                        .and_then(|r| r.completed_at)
                        .unwrap_or_else(SystemTime::now));
                }
                Ok(Write::Fenced) if !uncertain_write => return Err(Unrecorded::fenced()),
                Ok(Write::Fenced) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "completion not confirmed; re-reading the row");
                    uncertain_write = uncertain_write || e.is_ambiguous();
                    last = e.to_string();
                }
            }
            // Our earlier attempt may have committed: the row completed under our token says so.
            match self.sentinel.reread(plan).await {
                Ok(Some(r)) if r.fencing_token == token && r.state == State::Completed => {
                    return Ok(r.completed_at.unwrap_or(r.updated_at));
                }
                Ok(Some(r)) if r.fencing_token == token && r.state != State::Reconciling => {
                    // Still ours and not completed: write again.
                }
                Ok(_) => return Err(Unrecorded::fenced()),
                Err(e) => last = e.to_string(),
            }
        }
        Err(Unrecorded::new(NotRecordedReason::Unconfirmed, last))
    }

    /// The outcome could not be stored: the key is left uncertain (unless another owner holds
    /// it) and the caller gets the output back inside the error.
    async fn not_recorded<R: Send + 'static>(&self, u: Unrecorded, output: R) -> Error {
        if u.reason != NotRecordedReason::Fenced {
            self.mark_uncertain(UncertainReason::NotRecorded).await;
        }
        let payload: Box<dyn Any + Send> = Box::new(output);
        Error::NotRecorded(Box::new(NotRecorded::new(
            self.fencing_token(),
            u.reason,
            u.detail,
            Some(payload),
        )))
    }

    /// Best effort: lease expiry is the backstop when this write fails.
    async fn mark_uncertain(&self, reason: UncertainReason) {
        metrics::uncertain();
        let plan = &self.plan;
        let write = self.sentinel.inner.store.mark_uncertain(
            &plan.namespace,
            &plan.key,
            self.fencing_token(),
            reason,
        );
        if let Err(e) = timed("mark_uncertain", write).await {
            tracing::warn!(error = %e, "could not mark the key uncertain; its lease will expire");
        }
    }

    async fn release_key(&self) -> Disposition {
        let (plan, token) = (&self.plan, self.fencing_token());
        let write = self
            .sentinel
            .inner
            .store
            .release(&plan.namespace, &plan.key, token);
        match timed("release", write).await {
            Ok(Write::Applied(_)) => Disposition::Released,
            Ok(Write::Fenced) => {
                // Another owner took over, or our lease expired meanwhile: an expired lease is
                // uncertain, not released. Record why, if the row is still ours.
                self.mark_uncertain(UncertainReason::Failed).await;
                Disposition::Uncertain
            }
            Err(e) => {
                tracing::warn!(error = %e, "release not confirmed; re-reading the row");
                match self.sentinel.reread(plan).await {
                    Ok(None) => Disposition::Released,
                    // Claimed again by someone else after our release committed.
                    Ok(Some(r))
                        if r.fencing_token > token
                            && matches!(r.state, State::Running | State::Completed) =>
                    {
                        Disposition::Released
                    }
                    _ => {
                        self.mark_uncertain(UncertainReason::Failed).await;
                        Disposition::Uncertain
                    }
                }
            }
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
