//! Finishing an execution: the result stored (a lost reply settled by re-reading the row), the
//! key released, or left uncertain — per the failure policy, overridden after a lease loss. Every
//! way out of here writes at most one fenced transition.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::time::SystemTime;

use serde::Serialize;

use crate::cache::Completed;
use crate::engine::timed;
use crate::error::{NotRecorded, NotRecordedReason};
use crate::policy::failure_reason;
use crate::store::{Completion, Write};
use crate::{
    Disposition, Error, Execution, FailurePolicy, Outcome, ResultKind, State, StoredResult,
    UncertainReason, metrics,
};

/// How often a completion whose reply was lost is written again after re-reading the row.
const WRITE_ATTEMPTS: u32 = 3;

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
    /// Stores a value, or applies the failure policy to an error.
    pub(crate) async fn settle(&self, output: Result<T, E>) -> Result<Outcome<T, E>, Error>
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
                    // The store refuses a recorded error once our lease expired (the owner may
                    // not have noticed: a suspended VM). A failure then decides nothing (L2).
                    Err(u) if u.reason == NotRecordedReason::Fenced && self.still_ours().await => {
                        self.mark_uncertain(UncertainReason::OwnerDied).await;
                        Disposition::Uncertain
                    }
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
        let epoch = self.sentinel.inner.cache.epoch();
        let token = self.fencing_token();
        let plan = &self.plan;
        let completed_at = self.write_completion(stored.clone()).await?;
        let cached = Completed {
            result: Some(stored),
            token,
            completed_at,
            fingerprint: plan.fingerprint.clone(),
        };
        self.sentinel.inner.cache.insert(
            &plan.namespace,
            &plan.key,
            cached,
            plan.retain_for,
            epoch,
        );
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
    pub(crate) async fn mark_uncertain(&self, reason: UncertainReason) {
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

    /// Whether the row still carries our token (running, or uncertain since its lease expired),
    /// rather than another owner's or an operator's.
    async fn still_ours(&self) -> bool {
        let token = self.fencing_token();
        matches!(
            self.sentinel.reread(&self.plan).await,
            Ok(Some(r)) if r.fencing_token == token
                && matches!(r.state, State::Running | State::Uncertain)
        )
    }

    /// Removes our record (nothing happened). A release that reached nothing (the store was
    /// unreachable or busy) is tried again; one whose reply was lost is settled by re-reading the
    /// row. Whatever cannot be settled leaves the key uncertain.
    pub(crate) async fn release_key(&self) -> Disposition {
        let (plan, token) = (&self.plan, self.fencing_token());
        let store = &self.sentinel.inner.store;
        let mut delay = std::time::Duration::from_millis(20);
        for attempt in 1..=WRITE_ATTEMPTS {
            let write = store.release(&plan.namespace, &plan.key, token);
            let e = match timed("release", write).await {
                Ok(Write::Applied(_)) => return Disposition::Released,
                Ok(Write::Fenced) => {
                    // Another owner took over, or our lease expired meanwhile: an expired lease
                    // is uncertain, not released. Record why, if the row is still ours.
                    self.mark_uncertain(UncertainReason::Failed).await;
                    return Disposition::Uncertain;
                }
                Err(e) => e,
            };
            tracing::warn!(error = %e, "release not confirmed");
            if !e.is_ambiguous() {
                // Nothing was written: try again (L3).
                if attempt < WRITE_ATTEMPTS {
                    tokio::time::sleep(delay).await;
                    delay *= 4;
                    continue;
                }
                break;
            }
            match self.sentinel.reread(plan).await {
                Ok(None) => return Disposition::Released,
                // Claimed again by a worker after our release committed (an operator's token
                // would carry the operator's name: then our release never applied).
                Ok(Some(r))
                    if r.fencing_token > token
                        && r.operator.is_none()
                        && matches!(r.state, State::Running | State::Completed) =>
                {
                    return Disposition::Released;
                }
                // Still ours: the release did not apply; try again.
                Ok(Some(r)) if r.fencing_token == token && r.state == State::Running => {}
                _ => break,
            }
        }
        self.mark_uncertain(UncertainReason::Failed).await;
        Disposition::Uncertain
    }
}
