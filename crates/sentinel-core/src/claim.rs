//! The first half of the once path: claim the key (settling lost replies by re-reading the row),
//! or turn the record an earlier call left into a settled outcome.

use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::cache::Completed;
use crate::engine::{Counters, timed};
use crate::once::Plan;
use crate::store::{ClaimRequest, ClaimResponse};
use crate::{
    Begin, Disposition, Error, Execution, Outcome, Owner, Record, ResultKind, Sentinel, State,
    StoreError, UncertainReason, metrics,
};

/// How often a claim that keeps racing with concurrent inserts is tried.
const CLAIM_ATTEMPTS: u32 = 5;
/// How often a re-read after an ambiguous write is tried when the store is briefly unavailable.
pub(crate) const REREAD_ATTEMPTS: u32 = 3;

impl Sentinel {
    /// Claims the key, or turns the existing record into an outcome; with `plan.wait`, waits for
    /// a running key to settle first.
    pub(crate) async fn claim_or_settle<T, E>(
        &self,
        plan: Plan,
        span: tracing::Span,
    ) -> Result<Begin<T, E>, Error>
    where
        T: DeserializeOwned,
        E: DeserializeOwned,
    {
        let admission = self.admit()?;
        let inner = &self.inner;
        if let Some(hit) = inner.cache.get(&plan.namespace, &plan.key) {
            check_fingerprint(&plan, hit.fingerprint.as_deref())?;
            Counters::bump(&inner.counters.cache_hits);
            return self.replay(&plan, &hit).map(Begin::Settled);
        }
        let deadline = plan.wait.map(|w| Instant::now() + w);
        loop {
            let epoch = inner.cache.epoch();
            let (response, sent) = self.claim(&plan).await?;
            let record = match response {
                ClaimResponse::Acquired(record) => {
                    Counters::bump(&inner.counters.executions);
                    metrics::execution();
                    let token = record.fencing_token;
                    return Ok(Begin::Acquired(Execution::start(
                        self.clone(),
                        plan,
                        token,
                        sent,
                        admission,
                        span,
                    )));
                }
                ClaimResponse::Existing(record) => record,
                ClaimResponse::Raced => unreachable!("claim() retries races"),
            };
            check_fingerprint(&plan, record.fingerprint.as_deref())?;
            if record.state == State::Running {
                if let Some(deadline) = deadline.filter(|d| Instant::now() < *d) {
                    self.wait_unless_stopping(&plan.namespace, &plan.key, deadline)
                        .await?;
                    continue;
                }
            }
            return self
                .existing_outcome(&plan, record, epoch)
                .map(Begin::Settled);
        }
    }

    /// One claim, run again while it races with a concurrent insert; a lost reply is settled by
    /// re-reading the row for our attempt id. Returns when the claim was sent first: leases are
    /// dated from then, since an earlier attempt may be the one that committed.
    ///
    /// While a claim is in flight, a guard stands by: if this future is dropped (the caller went
    /// away) or gives up after a reply it could not settle, the claim may still commit with
    /// nobody to run the work, so the guard settles it in the background and releases what is
    /// ours (design.md §3, cancellation).
    async fn claim(&self, plan: &Plan) -> Result<(ClaimResponse, Instant), Error> {
        let request = ClaimRequest::new(
            plan.namespace.clone(),
            plan.key.clone(),
            Owner::current(),
            plan.ttl,
            plan.hard_ttl,
            plan.fingerprint.clone(),
        );
        let mut guard = AbandonedClaim {
            sentinel: self,
            request: Some(&request),
        };
        let (result, maybe_committed) = self.claim_attempts(plan, &request).await;
        if result.is_ok() || !maybe_committed {
            guard.request = None; // settled: nothing to clean up
        }
        result
    }

    async fn claim_attempts(
        &self,
        plan: &Plan,
        request: &ClaimRequest,
    ) -> (Result<(ClaimResponse, Instant), Error>, bool) {
        let store = &self.inner.store;
        let mut last_error = None;
        let mut maybe_committed = false;
        let first_sent = Instant::now();
        // A row carrying our attempt id is ours, however we learn of it: an earlier attempt
        // whose reply was lost (or that committed after we gave up on it) claimed the key.
        let ours = |r: Record| {
            if request.owns(&r) {
                ClaimResponse::Acquired(r)
            } else {
                ClaimResponse::Existing(r)
            }
        };
        for _ in 0..CLAIM_ATTEMPTS {
            match timed("claim", store.claim(request)).await {
                Ok(ClaimResponse::Raced) => {
                    Counters::bump(&self.inner.counters.claim_retries);
                    metrics::claim_retry();
                }
                Ok(ClaimResponse::Existing(r)) => return (Ok((ours(r), first_sent)), false),
                Ok(response) => return (Ok((response, first_sent)), false),
                Err(e) if e.is_ambiguous() => {
                    // The claim may have committed: our attempt id on the row says it did.
                    maybe_committed = true;
                    tracing::warn!(error = %e, "claim reply lost; re-reading the row");
                    match self.reread(plan).await {
                        Ok(Some(r)) => return (Ok((ours(r), first_sent)), false),
                        Ok(None) => last_error = Some(e), // not yet committed: claim again
                        Err(_) => return (Err(e.into()), true),
                    }
                }
                Err(e) => return (Err(e.into()), maybe_committed),
            }
        }
        let e = last_error
            .unwrap_or_else(|| StoreError::busy("claim kept racing with concurrent inserts"));
        (Err(Error::Store(e)), maybe_committed)
    }

    /// Re-reads a row after an ambiguous write, retrying transient failures briefly.
    pub(crate) async fn reread(&self, plan: &Plan) -> Result<Option<Record>, StoreError> {
        let mut delay = Duration::from_millis(20);
        let mut attempt = 0;
        loop {
            match self.inner.store.load(&plan.namespace, &plan.key).await {
                Ok(r) => return Ok(r),
                Err(e) if e.is_transient() && attempt + 1 < REREAD_ATTEMPTS => {
                    attempt += 1;
                    tokio::time::sleep(delay).await;
                    delay *= 4;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The outcome of a record this call does not own.
    fn existing_outcome<T, E>(
        &self,
        plan: &Plan,
        record: Record,
        epoch: u64,
    ) -> Result<Outcome<T, E>, Error>
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
                self.inner.cache.insert(
                    &plan.namespace,
                    &plan.key,
                    completed,
                    retention_left,
                    epoch,
                );
                outcome
            }
            State::Running => {
                Counters::bump(&self.inner.counters.busy);
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

    /// A stored result as a replayed outcome.
    fn replay<T, E>(&self, plan: &Plan, completed: &Completed) -> Result<Outcome<T, E>, Error>
    where
        T: DeserializeOwned,
        E: DeserializeOwned,
    {
        Counters::bump(&self.inner.counters.replays);
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

/// Stands by while a claim is in flight; see [`Sentinel::claim`].
struct AbandonedClaim<'a> {
    sentinel: &'a Sentinel,
    request: Option<&'a ClaimRequest>,
}

impl Drop for AbandonedClaim<'_> {
    fn drop(&mut self) {
        let Some(request) = self.request.take() else {
            return;
        };
        let store = self.sentinel.inner.store.clone();
        self.sentinel
            .inner
            .runtime
            .spawn_tracked(release_abandoned(store, request.clone()));
    }
}

/// Settles a claim nobody waits for any more: the same request again (same attempt id) returns
/// our row if the first one committed, or claims the key if it did not — and once it has
/// answered, the first one can no longer commit after it. Whatever is ours is released: its work
/// never started.
async fn release_abandoned(store: std::sync::Arc<dyn crate::Store>, request: ClaimRequest) {
    let mut delay = Duration::from_millis(20);
    for _ in 0..CLAIM_ATTEMPTS {
        let record = match store.claim(&request).await {
            Ok(ClaimResponse::Acquired(r)) => r,
            Ok(ClaimResponse::Existing(r)) if request.owns(&r) => r,
            Ok(ClaimResponse::Existing(_)) => return, // another owner's, or settled
            Ok(_) => continue,                        // raced: claim again
            Err(e) => {
                tracing::debug!(error = %e, "could not settle an abandoned claim yet");
                tokio::time::sleep(delay).await;
                delay *= 4;
                continue;
            }
        };
        metrics::execution_abandoned();
        match store
            .release(&request.namespace, &request.key, record.fencing_token)
            .await
        {
            Ok(_) => return,
            Err(e) => tracing::warn!(error = %e, "could not release an abandoned claim"),
        }
        return;
    }
    tracing::warn!(
        namespace = %request.namespace,
        key = %request.key,
        "an abandoned claim could not be settled; its lease will expire"
    );
}
