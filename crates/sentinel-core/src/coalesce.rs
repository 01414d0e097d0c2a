//! `Coalescing`: a store decorator that merges concurrent claims (and completions) of one
//! process into multi-row statements (`Store::claim_many`, `Store::complete_many`), so that under
//! load a fresh execution costs less than two statements.

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
type WriteReply = oneshot::Sender<Result<Write, StoreError>>;

#[derive(Default)]
struct Completions {
    waiting: Vec<(Completion, WriteReply)>,
    drivers: usize,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<(ClaimRequest, Reply)>,
    /// Batches in flight; when all drivers are busy, claims arriving meanwhile form the next
    /// batch.
    drivers: usize,
}

/// Wraps a store; claims that arrive while claim statements are in flight are sent together in
/// the next one, and so are completions. A key asked for twice in one batch is claimed once:
/// the second caller sees the first one's record. A caller that went away before its batch was
/// sent is left out, and a claim acquired for a caller that went away meanwhile is released
/// (its function never started). A failed batch answers each member with an ambiguous error
/// (part of it may have committed), which the engine settles per member by re-reading the row,
/// as for a single claim. Everything else goes straight to the inner store.
#[derive(Clone)]
pub struct Coalescing {
    inner: Arc<dyn Store>,
    queue: Arc<Mutex<Queue>>,
    completions: Arc<Mutex<Completions>>,
    max_batch: usize,
    max_in_flight: usize,
}

/// Counts a running driver; on any exit, normal or not (a panic, its runtime shutting down),
/// it gives the slot back, and on an abnormal one it fails the waiting callers so that they
/// retry instead of waiting for ever.
struct DriverSlot<T: Send + 'static> {
    queue: Arc<Mutex<T>>,
    release: fn(&mut T, bool),
    normal: bool,
}

impl<T: Send + 'static> Drop for DriverSlot<T> {
    fn drop(&mut self) {
        let mut q = self
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (self.release)(&mut q, self.normal);
    }
}

fn ambiguous(what: &str) -> StoreError {
    StoreError::new(crate::StoreErrorKind::Ambiguous, what.to_owned())
}

impl Coalescing {
    /// Wraps `inner`; batches hold at most `max_batch` claims (or completions), and up to 2
    /// batches of each are in flight at once (measured best of 1, 2 and 4 at 64 callers).
    pub fn new(inner: Arc<dyn Store>, max_batch: usize) -> Self {
        Self::with_in_flight(inner, max_batch, 2)
    }

    /// Like [`Coalescing::new`], with at most `max_in_flight` batch statements at once.
    pub fn with_in_flight(inner: Arc<dyn Store>, max_batch: usize, max_in_flight: usize) -> Self {
        Self {
            inner,
            queue: Arc::default(),
            completions: Arc::default(),
            max_batch: max_batch.max(1),
            max_in_flight: max_in_flight.max(1),
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
        let mut slot = DriverSlot {
            queue: self.queue.clone(),
            release: |q: &mut Queue, normal| {
                q.drivers -= 1;
                if !normal {
                    q.waiting.clear(); // dropped senders: those callers retry
                }
            },
            normal: false,
        };
        loop {
            let batch: Vec<(ClaimRequest, Reply)> = {
                let mut q = self.lock();
                if q.waiting.is_empty() {
                    slot.normal = true;
                    drop(q);
                    return; // `slot` gives the driver count back
                }
                let n = q.waiting.len().min(self.max_batch);
                q.waiting.drain(..n).collect()
            };
            // One request per distinct key, from a caller still waiting; later askers of the
            // same key share its answer.
            let mut index: HashMap<(String, String), usize> = HashMap::new();
            let mut distinct: Vec<ClaimRequest> = Vec::new();
            let mut slots: Vec<(usize, bool, Reply)> = Vec::new();
            for (request, reply) in batch {
                if reply.is_closed() {
                    continue; // the caller went away: do not claim for nobody
                }
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
            if distinct.is_empty() {
                continue;
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
                        if let Err(Ok(ClaimResponse::Acquired(r))) = reply.send(Ok(response)) {
                            if first {
                                // Acquired for a caller that went away: nothing started.
                                let write =
                                    self.inner.release(&r.namespace, &r.key, r.fencing_token);
                                if let Err(e) = write.await {
                                    tracing::warn!(error = %e, "could not release an abandoned claim");
                                }
                            }
                        }
                    }
                }
                Ok(_) => {
                    for (_, _, reply) in slots {
                        let _ = reply.send(Err(ambiguous(
                            "claim_many answered the wrong number of claims",
                        )));
                    }
                }
                Err(e) => {
                    // Part of the batch may have committed: each caller re-reads its row.
                    let message = format!("claim batch failed: {e}");
                    for (_, _, reply) in slots {
                        let _ = reply.send(Err(ambiguous(&message)));
                    }
                }
            }
        }
    }

    /// Sends completion batches until none is waiting.
    async fn drive_completions(self) {
        let mut slot = DriverSlot {
            queue: self.completions.clone(),
            release: |q: &mut Completions, normal| {
                q.drivers -= 1;
                if !normal {
                    q.waiting.clear();
                }
            },
            normal: false,
        };
        loop {
            let batch: Vec<(Completion, WriteReply)> = {
                let mut q = self
                    .completions
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if q.waiting.is_empty() {
                    slot.normal = true;
                    drop(q);
                    return;
                }
                let n = q.waiting.len().min(self.max_batch);
                q.waiting.drain(..n).collect()
            };
            let (completions, replies): (Vec<Completion>, Vec<WriteReply>) =
                batch.into_iter().unzip();
            match self.inner.complete_many(&completions).await {
                Ok(writes) if writes.len() == replies.len() => {
                    for (w, reply) in writes.into_iter().zip(replies) {
                        let _ = reply.send(Ok(w));
                    }
                }
                other => {
                    // The engine settles each member by re-reading its row.
                    let message = match other {
                        Err(e) => format!("completion batch failed: {e}"),
                        Ok(_) => "complete_many answered the wrong number of completions".into(),
                    };
                    for reply in replies {
                        let _ = reply.send(Err(ambiguous(&message)));
                    }
                }
            }
        }
    }

    /// Queues `item`; starts a driver when fewer than `max_in_flight` run. Without a Tokio
    /// runtime to drive batches, returns the item to be handled directly.
    fn enqueue<T, I>(
        &self,
        queue: &Mutex<T>,
        item: I,
        push: fn(&mut T, I),
        drivers: fn(&mut T) -> &mut usize,
    ) -> Result<bool, I> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(item);
        }
        let mut q = queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        push(&mut q, item);
        let d = drivers(&mut q);
        let lead = *d < self.max_in_flight;
        if lead {
            *d += 1;
        }
        Ok(lead)
    }
}

#[async_trait]
impl Store for Coalescing {
    async fn claim(&self, request: &ClaimRequest) -> Result<ClaimResponse, StoreError> {
        let (tx, rx) = oneshot::channel();
        let lead = match self.enqueue(
            &self.queue,
            (request.clone(), tx),
            |q: &mut Queue, item| q.waiting.push(item),
            |q: &mut Queue| &mut q.drivers,
        ) {
            Ok(lead) => lead,
            Err(_) => return self.inner.claim(request).await,
        };
        if lead {
            tokio::spawn(self.clone().drive());
        }
        rx.await
            .map_err(|_| ambiguous("the claim batch was dropped before it answered"))?
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
        let (tx, rx) = oneshot::channel();
        let lead = match self.enqueue(
            &self.completions,
            (completion.clone(), tx),
            |q: &mut Completions, item| q.waiting.push(item),
            |q: &mut Completions| &mut q.drivers,
        ) {
            Ok(lead) => lead,
            Err(_) => return self.inner.complete(completion).await,
        };
        if lead {
            tokio::spawn(self.clone().drive_completions());
        }
        rx.await
            .map_err(|_| ambiguous("the completion batch was dropped before it answered"))?
    }

    async fn complete_many(&self, completions: &[Completion]) -> Result<Vec<Write>, StoreError> {
        self.inner.complete_many(completions).await
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
