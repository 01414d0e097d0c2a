//! `Coalescing`: a store decorator that merges concurrent claims (and completions) of one
//! process into multi-row statements (`Store::claim_many`, `Store::complete_many`), so that under
//! load a fresh execution costs less than two statements.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::oneshot;

use crate::StoreError;
use crate::store::{ClaimRequest, ClaimResponse, Completion, Store, Write};

type Reply = oneshot::Sender<Result<ClaimResponse, StoreError>>;
type WriteReply = oneshot::Sender<Result<Write, StoreError>>;
type Claim = (ClaimRequest, Reply);
type Finish = (Completion, WriteReply);

/// Items waiting for the next batch, and the batches in flight.
struct Batch<I> {
    waiting: Vec<I>,
    /// Batches in flight; when all drivers are busy, items arriving meanwhile form the next
    /// batch.
    drivers: usize,
}

impl<I> Default for Batch<I> {
    fn default() -> Self {
        Self {
            waiting: Vec::new(),
            drivers: 0,
        }
    }
}

type Queue<I> = Arc<Mutex<Batch<I>>>;

fn lock<I>(queue: &Mutex<Batch<I>>) -> std::sync::MutexGuard<'_, Batch<I>> {
    queue
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Wraps a store; claims that arrive while claim statements are in flight are sent together in
/// the next one, and so are completions. A key asked for twice in one batch is claimed once:
/// the second caller sees the first one's record. A caller that went away before its batch was
/// sent is left out, and a claim acquired for a caller that went away meanwhile is released
/// (its function never started); the next caller of that key in the batch then claims it for
/// itself. A failed batch answers each member with an ambiguous error
/// (part of it may have committed), which the engine settles per member by re-reading the row,
/// as for a single claim. Everything else goes straight to the inner store.
#[derive(Clone)]
pub struct Coalescing {
    inner: Arc<dyn Store>,
    claims: Queue<Claim>,
    completions: Queue<Finish>,
    max_batch: usize,
    max_in_flight: usize,
}

impl std::fmt::Debug for Coalescing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescing")
            .field("inner", &self.inner)
            .field("max_batch", &self.max_batch)
            .field("max_in_flight", &self.max_in_flight)
            .finish_non_exhaustive()
    }
}

/// Counts a running driver; on any exit, normal or not (a panic, its runtime shutting down),
/// it gives the slot back, and on an abnormal one it fails the waiting callers so that they
/// retry instead of waiting for ever.
struct DriverSlot<I: Send + 'static> {
    queue: Queue<I>,
    normal: bool,
}

impl<I: Send + 'static> Drop for DriverSlot<I> {
    fn drop(&mut self) {
        let mut q = lock(&self.queue);
        q.drivers -= 1;
        if !self.normal {
            q.waiting.clear(); // dropped senders: those callers retry
        }
    }
}

fn ambiguous(what: &str) -> StoreError {
    StoreError::ambiguous(what)
}

/// Sends one batch; a plain function so that one driver loop serves claims and completions.
type Dispatch<I> =
    for<'a> fn(&'a Coalescing, Vec<I>) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

impl Coalescing {
    /// Wraps `inner`; batches hold at most `max_batch` claims (or completions), and up to 2
    /// batches of each are in flight at once (measured best of 1, 2 and 4 at 64 callers).
    pub fn new(inner: impl Store, max_batch: usize) -> Self {
        Self::with_in_flight(inner, max_batch, 2)
    }

    /// Like [`Coalescing::new`], with at most `max_in_flight` batch statements at once.
    pub fn with_in_flight(inner: impl Store, max_batch: usize, max_in_flight: usize) -> Self {
        Self {
            inner: crate::store::shared(inner),
            claims: Arc::default(),
            completions: Arc::default(),
            max_batch: max_batch.max(1),
            max_in_flight: max_in_flight.max(1),
        }
    }

    /// Sends batches until nothing is waiting. Runs as its own task, so a caller that goes away
    /// does not strand the others.
    /// `slot` was taken before the task was spawned and moves into it, so that a task dropped
    /// before its first poll (spawned onto a runtime that is shutting down) still gives it back.
    async fn drive<I: Send + 'static>(
        self,
        queue: Queue<I>,
        mut slot: DriverSlot<I>,
        send: Dispatch<I>,
    ) {
        loop {
            let batch: Vec<I> = {
                let mut q = lock(&queue);
                if q.waiting.is_empty() {
                    slot.normal = true;
                    drop(q);
                    return; // `slot` gives the driver count back
                }
                let n = q.waiting.len().min(self.max_batch);
                q.waiting.drain(..n).collect()
            };
            send(&self, batch).await;
        }
    }

    async fn send_claims(&self, batch: Vec<Claim>) {
        // One request per distinct key, from a caller still waiting; later askers of the same
        // key share its answer.
        let mut index: HashMap<(String, String), usize> = HashMap::new();
        let mut distinct: Vec<ClaimRequest> = Vec::new();
        let mut slots: Vec<(usize, Option<ClaimRequest>, Reply)> = Vec::new();
        for (request, reply) in batch {
            if reply.is_closed() {
                continue; // the caller went away: do not claim for nobody
            }
            let id = (request.namespace.clone(), request.key.clone());
            match index.get(&id) {
                Some(&i) => slots.push((i, Some(request), reply)),
                None => {
                    index.insert(id, distinct.len());
                    slots.push((distinct.len(), None, reply));
                    distinct.push(request);
                }
            }
        }
        if distinct.is_empty() {
            return;
        }
        match self.inner.claim_many(&distinct).await {
            Ok(mut responses) if responses.len() == distinct.len() => {
                // Keys whose claim was released because the caller it was made for went away:
                // the next caller of the key claims for itself instead of being told "running".
                let mut vacated = vec![false; distinct.len()];
                for (i, duplicate, reply) in slots {
                    let owner = match duplicate {
                        None => true,
                        Some(request) if vacated[i] => {
                            match self.inner.claim(&request).await {
                                Ok(r) => responses[i] = r,
                                Err(e) => {
                                    let _ = reply.send(Err(e));
                                    continue;
                                }
                            }
                            vacated[i] = false;
                            true
                        }
                        Some(_) => false,
                    };
                    let response = match &responses[i] {
                        r if owner => r.clone(),
                        // The key was claimed for another caller of this batch.
                        ClaimResponse::Acquired(r) | ClaimResponse::Existing(r) => {
                            ClaimResponse::Existing(r.clone())
                        }
                        other => other.clone(),
                    };
                    if let Err(Ok(ClaimResponse::Acquired(r))) = reply.send(Ok(response)) {
                        if owner {
                            // Acquired for a caller that went away: nothing started.
                            let write = self.inner.release(&r.namespace, &r.key, r.fencing_token);
                            match write.await {
                                Ok(_) => vacated[i] = true,
                                Err(e) => {
                                    tracing::warn!(error = %e, "could not release an abandoned claim");
                                }
                            }
                        }
                    }
                }
            }
            other => {
                // Part of the batch may have committed: each caller re-reads its row.
                let message = match other {
                    Err(e) => format!("claim batch failed: {e}"),
                    Ok(_) => "claim_many answered the wrong number of claims".into(),
                };
                for (_, _, reply) in slots {
                    let _ = reply.send(Err(ambiguous(&message)));
                }
            }
        }
    }

    async fn send_completions(&self, batch: Vec<Finish>) {
        let (completions, replies): (Vec<Completion>, Vec<WriteReply>) = batch.into_iter().unzip();
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

    /// Queues `item` and starts a driver when fewer than `max_in_flight` run. Without a Tokio
    /// runtime to drive batches, returns the item to be handled directly.
    fn enqueue<I: Send + 'static>(
        &self,
        queue: &Queue<I>,
        item: I,
        send: Dispatch<I>,
    ) -> Result<(), I> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(item);
        }
        let lead = {
            let mut q = lock(queue);
            q.waiting.push(item);
            let lead = q.drivers < self.max_in_flight;
            if lead {
                q.drivers += 1;
            }
            lead
        };
        if lead {
            let slot = DriverSlot {
                queue: queue.clone(),
                normal: false,
            };
            tokio::spawn(self.clone().drive(queue.clone(), slot, send));
        }
        Ok(())
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Store for Coalescing {
    async fn claim(&self, request: &ClaimRequest) -> Result<ClaimResponse, StoreError> {
        let (tx, rx) = oneshot::channel();
        let send: Dispatch<Claim> = |c, batch| Box::pin(c.send_claims(batch));
        if self
            .enqueue(&self.claims, (request.clone(), tx), send)
            .is_err()
        {
            return self.inner.claim(request).await;
        }
        rx.await
            .map_err(|_| ambiguous("the claim batch was dropped before it answered"))?
    }

    async fn complete(&self, completion: &Completion) -> Result<Write, StoreError> {
        let (tx, rx) = oneshot::channel();
        let send: Dispatch<Finish> = |c, batch| Box::pin(c.send_completions(batch));
        if self
            .enqueue(&self.completions, (completion.clone(), tx), send)
            .is_err()
        {
            return self.inner.complete(completion).await;
        }
        rx.await
            .map_err(|_| ambiguous("the completion batch was dropped before it answered"))?
    }

    crate::forward_store!([inner] claim_many, heartbeat, complete_many, release, mark_uncertain,
        load, list, counts, recent_events, history, reconcile, resolve, forget, prune, wait_for_change, stats, migrate);
}
