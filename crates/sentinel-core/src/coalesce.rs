//! `Coalescing`: a store decorator that merges concurrent claims of one process into one
//! multi-row claim (`Store::claim_many`), so that under load a fresh execution costs less than
//! one claim statement.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::oneshot;

use crate::store::{
    ClaimRequest, ClaimResponse, Completion, ListQuery, OperatorAction, OperatorResponse,
    PruneQuery, Renewal, Resolution, Store, StoreStats, Write,
};
use crate::{Event, FencingToken, Record, StoreError, UncertainReason};

type Reply = oneshot::Sender<Result<ClaimResponse, StoreError>>;

#[derive(Default)]
struct Queue {
    waiting: Vec<(ClaimRequest, Reply)>,
    /// A batch is in flight; claims arriving meanwhile form the next one.
    busy: bool,
}

/// Wraps a store; claims that arrive while a claim statement is in flight are sent together in
/// the next one. A key asked for twice in one batch is claimed once: the second caller sees the
/// first one's record. A failed batch fails each member with the batch's error (an ambiguous
/// one is then settled per member by the engine, as for a single claim). Everything else goes
/// straight to the inner store.
#[derive(Clone)]
pub struct Coalescing {
    inner: Arc<dyn Store>,
    queue: Arc<Mutex<Queue>>,
    max_batch: usize,
}

impl Coalescing {
    /// Wraps `inner`; batches hold at most `max_batch` claims.
    pub fn new(inner: Arc<dyn Store>, max_batch: usize) -> Self {
        Self {
            inner,
            queue: Arc::default(),
            max_batch: max_batch.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends batches until no claim is waiting. Runs as its own task, so a caller that goes
    /// away does not strand the others.
    async fn drive(self) {
        loop {
            let batch: Vec<(ClaimRequest, Reply)> = {
                let mut q = self.lock();
                if q.waiting.is_empty() {
                    q.busy = false;
                    return;
                }
                let n = q.waiting.len().min(self.max_batch);
                q.waiting.drain(..n).collect()
            };
            // One request per distinct key; later askers of the same key share its answer.
            let mut index: HashMap<(String, String), usize> = HashMap::new();
            let mut distinct: Vec<ClaimRequest> = Vec::new();
            let mut slots: Vec<(usize, bool, Reply)> = Vec::new();
            for (request, reply) in batch {
                let id = (request.namespace.clone(), request.key.clone());
                match index.get(&id) {
                    Some(&i) => slots.push((i, false, reply)),
                    None => {
                        index.insert(id, distinct.len());
                        slots.push((distinct.len(), true, reply));
                        distinct.push(request);
                    }
                }
            }
            match self.inner.claim_many(&distinct).await {
                Ok(responses) if responses.len() == distinct.len() => {
                    for (i, first, reply) in slots {
                        let response = match (&responses[i], first) {
                            (r, true) => r.clone(),
                            // The key was claimed for another caller of this batch.
                            (ClaimResponse::Acquired(r) | ClaimResponse::Existing(r), false) => {
                                ClaimResponse::Existing(r.clone())
                            }
                            (other, false) => other.clone(),
                        };
                        let _ = reply.send(Ok(response));
                    }
                }
                Ok(_) => {
                    for (_, _, reply) in slots {
                        let _ = reply.send(Err(StoreError::new(
                            crate::StoreErrorKind::Ambiguous,
                            "claim_many answered the wrong number of claims",
                        )));
                    }
                }
                Err(e) => {
                    let kind = e.kind();
                    let message = e.to_string();
                    for (_, _, reply) in slots {
                        let _ = reply.send(Err(StoreError::new(kind, message.clone())));
                    }
                }
            }
        }
    }
}

#[async_trait]
impl Store for Coalescing {
    async fn claim(&self, request: &ClaimRequest) -> Result<ClaimResponse, StoreError> {
        let (tx, rx) = oneshot::channel();
        let lead = {
            let mut q = self.lock();
            q.waiting.push((request.clone(), tx));
            !std::mem::replace(&mut q.busy, true)
        };
        if lead {
            tokio::spawn(self.clone().drive());
        }
        rx.await.map_err(|_| {
            StoreError::new(
                crate::StoreErrorKind::Ambiguous,
                "the claim batch was dropped before it answered",
            )
        })?
    }

    async fn claim_many(
        &self,
        requests: &[ClaimRequest],
    ) -> Result<Vec<ClaimResponse>, StoreError> {
        self.inner.claim_many(requests).await
    }

    async fn heartbeat(&self, renewals: &[Renewal]) -> Result<Vec<Option<SystemTime>>, StoreError> {
        self.inner.heartbeat(renewals).await
    }

    async fn complete(&self, completion: &Completion) -> Result<Write, StoreError> {
        self.inner.complete(completion).await
    }

    async fn release(
        &self,
        namespace: &str,
        key: &str,
        token: FencingToken,
    ) -> Result<Write, StoreError> {
        self.inner.release(namespace, key, token).await
    }

    async fn mark_uncertain(
        &self,
        namespace: &str,
        key: &str,
        token: FencingToken,
        reason: UncertainReason,
    ) -> Result<Write, StoreError> {
        self.inner
            .mark_uncertain(namespace, key, token, reason)
            .await
    }

    async fn load(&self, namespace: &str, key: &str) -> Result<Option<Record>, StoreError> {
        self.inner.load(namespace, key).await
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Record>, StoreError> {
        self.inner.list(query).await
    }

    async fn history(
        &self,
        namespace: &str,
        key: &str,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.inner.history(namespace, key, limit).await
    }

    async fn reconcile(
        &self,
        action: &OperatorAction,
        force: bool,
    ) -> Result<OperatorResponse, StoreError> {
        self.inner.reconcile(action, force).await
    }

    async fn resolve(
        &self,
        action: &OperatorAction,
        resolution: &Resolution,
        expected_token: Option<FencingToken>,
    ) -> Result<OperatorResponse, StoreError> {
        self.inner.resolve(action, resolution, expected_token).await
    }

    async fn forget(&self, action: &OperatorAction) -> Result<OperatorResponse, StoreError> {
        self.inner.forget(action).await
    }

    async fn prune(&self, query: &PruneQuery) -> Result<u64, StoreError> {
        self.inner.prune(query).await
    }

    async fn wait_for_change(
        &self,
        namespace: &str,
        key: &str,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        self.inner.wait_for_change(namespace, key, timeout).await
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.inner.stats().await
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        self.inner.migrate().await
    }
}
