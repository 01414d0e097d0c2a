//! `FaultStore`: a decorator that injects the failures a real network produces: replies lost
//! after the statement committed (ambiguous), statements that never reached the store, and a
//! heartbeat that cannot get through.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sentinel_core::store::{
    ClaimRequest, ClaimResponse, Completion, OperatorAction, Renewal, Resolution, Store, Write,
};
use sentinel_core::{Record, StoreError};

/// Counts of faults still to inject, per operation.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// Apply the next N claims, then report their reply as lost.
    pub claim_reply_lost: u32,
    /// Apply the next N completions, then report their reply as lost.
    pub complete_reply_lost: u32,
    /// Fail the next N completions before they reach the store.
    pub complete_unavailable: u32,
    /// Fail the next N loads before they reach the store.
    pub load_unavailable: u32,
    /// Fail every heartbeat while set.
    pub heartbeat_unavailable: bool,
    /// Every heartbeat hangs (never answers) while set, like a half-open connection.
    pub heartbeat_hangs: bool,
    /// The next N claims report a lost reply at once and commit late: just after the next
    /// load has read the row without them.
    pub claim_commits_late: u32,
    /// Every claim's reply is held back this long after it committed (a slow network).
    pub claim_reply_delay: Duration,
    /// Every heartbeat answers "renewed" without reaching the store (the owner believes its
    /// lease is alive while the store lets it expire, as after a suspended VM).
    pub heartbeat_lies: bool,
    /// Every heartbeat is answered this much later (a slow network).
    pub heartbeat_delay: Duration,
    /// Fail the next N releases before they reach the store.
    pub release_unavailable: u32,
    /// The next N releases never apply and their reply is lost; meanwhile the key is taken
    /// over: marked uncertain, reconciled and resolved as completed by an operator.
    pub release_lost_to_an_operator: u32,
}

/// Wraps a store and injects [`Faults`]; with none armed it is the inner store.
#[derive(Clone, Debug)]
pub struct FaultStore {
    inner: Arc<dyn Store>,
    faults: Arc<Mutex<Faults>>,
    late_claim: Arc<Mutex<Option<ClaimRequest>>>,
    heartbeat_calls: Arc<std::sync::atomic::AtomicU64>,
    claim_calls: Arc<std::sync::atomic::AtomicU64>,
}

fn lost() -> StoreError {
    StoreError::ambiguous("injected: reply lost after commit")
}

fn unavailable() -> StoreError {
    StoreError::unavailable("injected: store unreachable")
}

fn take(counter: &mut u32) -> bool {
    if *counter > 0 {
        *counter -= 1;
        true
    } else {
        false
    }
}

impl FaultStore {
    /// Wraps `inner` (owned or shared) with no faults armed.
    pub fn new(inner: impl Store) -> Self {
        Self {
            inner: sentinel_core::store::shared(inner),
            faults: Arc::default(),
            late_claim: Arc::default(),
            heartbeat_calls: Arc::default(),
            claim_calls: Arc::default(),
        }
    }

    /// How many heartbeat calls reached this decorator (failed ones included).
    pub fn heartbeat_calls(&self) -> u64 {
        self.heartbeat_calls
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How many claims reached the inner store through this decorator.
    pub fn claim_calls(&self) -> u64 {
        self.claim_calls.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Changes the armed faults.
    pub fn arm(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.faults.lock().unwrap());
    }

    fn with<R>(&self, f: impl FnOnce(&mut Faults) -> R) -> R {
        f(&mut self.faults.lock().unwrap())
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Store for FaultStore {
    async fn claim(&self, request: &ClaimRequest) -> Result<ClaimResponse, StoreError> {
        if self.with(|f| take(&mut f.claim_commits_late)) {
            *self.late_claim.lock().unwrap() = Some(request.clone());
            return Err(lost());
        }
        let r = self.inner.claim(request).await;
        self.claim_calls
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let r = r?;
        let delay = self.with(|f| f.claim_reply_delay);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if self.with(|f| take(&mut f.claim_reply_lost)) {
            return Err(lost());
        }
        Ok(r)
    }

    async fn heartbeat(&self, renewals: &[Renewal]) -> Result<Vec<Option<SystemTime>>, StoreError> {
        self.heartbeat_calls
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.with(|f| f.heartbeat_unavailable) {
            return Err(unavailable());
        }
        if self.with(|f| f.heartbeat_hangs) {
            std::future::pending::<()>().await;
        }
        let delay = self.with(|f| f.heartbeat_delay);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if self.with(|f| f.heartbeat_lies) {
            let now = SystemTime::now();
            return Ok(renewals.iter().map(|r| Some(now + r.ttl)).collect());
        }
        self.inner.heartbeat(renewals).await
    }

    async fn complete(&self, completion: &Completion) -> Result<Write, StoreError> {
        if self.with(|f| take(&mut f.complete_unavailable)) {
            return Err(unavailable());
        }
        let r = self.inner.complete(completion).await?;
        if self.with(|f| take(&mut f.complete_reply_lost)) {
            return Err(lost());
        }
        Ok(r)
    }

    async fn load(&self, namespace: &str, key: &str) -> Result<Option<Record>, StoreError> {
        if self.with(|f| take(&mut f.load_unavailable)) {
            return Err(unavailable());
        }
        let record = self.inner.load(namespace, key).await;
        let late = self.late_claim.lock().unwrap().take();
        if let Some(request) = late {
            self.inner.claim(&request).await?;
        }
        record
    }

    /// One by one through [`FaultStore::claim`], so that batches see the injected faults too.
    async fn claim_many(
        &self,
        requests: &[ClaimRequest],
    ) -> Result<Vec<ClaimResponse>, StoreError> {
        sentinel_core::store::claim_each(self, requests).await
    }

    /// One by one through [`FaultStore::complete`].
    async fn complete_many(&self, completions: &[Completion]) -> Result<Vec<Write>, StoreError> {
        sentinel_core::store::complete_each(self, completions).await
    }

    async fn release(
        &self,
        namespace: &str,
        key: &str,
        token: sentinel_core::FencingToken,
    ) -> Result<Write, StoreError> {
        if self.with(|f| take(&mut f.release_unavailable)) {
            return Err(unavailable());
        }
        if self.with(|f| take(&mut f.release_lost_to_an_operator)) {
            let reason = sentinel_core::UncertainReason::Failed;
            self.inner
                .mark_uncertain(namespace, key, token, reason)
                .await?;
            let action = OperatorAction::new(namespace, key, "ops@fault", None);
            self.inner.reconcile(&action, false).await?;
            let resolution = Resolution::Complete(None);
            self.inner.resolve(&action, &resolution, None).await?;
            return Err(lost());
        }
        self.inner.release(namespace, key, token).await
    }

    sentinel_core::forward_store!([inner] mark_uncertain, list, counts, recent_events, history, reconcile, resolve,
        forget, prune, wait_for_change, stats, migrate);
}
