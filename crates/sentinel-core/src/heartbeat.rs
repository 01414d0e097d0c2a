//! The heartbeat: one loop per Sentinel, on Sentinel's own runtime thread, renewing every
//! in-flight execution in one store call per tick.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::FencingToken;
use crate::context::{LeaseLost, LeaseSignal};
use crate::metrics;
use crate::store::{Renewal, Store};

/// The local deadline fires this much before the store would see the lease expire: renewals are
/// dated from when they were *sent*, and the store's clock at the statement is later than that.
pub(crate) fn local_margin(ttl: Duration) -> Duration {
    (ttl / 5).min(Duration::from_secs(2))
}

struct Entry {
    namespace: String,
    key: String,
    token: FencingToken,
    ttl: Duration,
    /// When the last successful renewal (or the claim) was sent.
    renewed_at: Instant,
    hard_deadline: Instant,
    signal: LeaseSignal,
}

impl Entry {
    fn due(&self) -> Instant {
        self.renewed_at + self.ttl / 3
    }

    fn local_deadline(&self) -> Instant {
        (self.renewed_at + self.ttl.saturating_sub(local_margin(self.ttl))).min(self.hard_deadline)
    }

    /// When the loop must next look at this entry: to renew it, or to fire its local loss.
    fn wake_at(&self) -> Instant {
        self.due().min(self.local_deadline())
    }
}

/// The in-flight set, shared by the engine (register/deregister) and the loop.
#[derive(Default)]
pub(crate) struct InFlight {
    entries: Mutex<Entries>,
    next_id: AtomicU64,
    wake: Notify,
}

/// The entries, and whether the loop has stopped (then nothing is renewed any more).
#[derive(Default)]
struct Entries {
    map: HashMap<u64, Entry>,
    closed: bool,
    /// When the sleeping loop wakes by itself; `None` while it ticks or sleeps without a timer.
    /// A new entry wakes the loop only when it needs attention before then: in a steady stream
    /// of executions the loop wakes once per renewal interval, not once per execution.
    armed: Option<Instant>,
}

impl std::ops::Deref for Entries {
    type Target = HashMap<u64, Entry>;
    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl std::ops::DerefMut for Entries {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.map
    }
}

impl InFlight {
    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The heartbeat stopped: every execution still in flight is told (its lease will not be
    /// renewed again), and executions registered later are told at once.
    pub(crate) fn close(&self) {
        let mut entries = self.lock();
        entries.closed = true;
        for (_, e) in entries.map.drain() {
            e.signal.fire(LeaseLost::Stopped);
            metrics::lease_lost();
        }
    }

    /// Adds an execution. `claimed_at` is when the claim was sent; the returned receiver is the
    /// execution's lease-lost signal.
    pub(crate) fn register(
        &self,
        namespace: &str,
        key: &str,
        token: FencingToken,
        ttl: Duration,
        hard_ttl: Duration,
        claimed_at: Instant,
    ) -> (u64, tokio::sync::watch::Receiver<Option<LeaseLost>>) {
        let (signal, rx) = LeaseSignal::new();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut entries = self.lock();
        if entries.closed {
            signal.fire(LeaseLost::Stopped);
            return (id, rx);
        }
        let entry = Entry {
            namespace: namespace.to_owned(),
            key: key.to_owned(),
            token,
            ttl,
            renewed_at: claimed_at,
            hard_deadline: claimed_at + hard_ttl,
            signal,
        };
        let needed_by = entry.wake_at();
        entries.insert(id, entry);
        let in_time = entries.armed.is_some_and(|armed| armed <= needed_by);
        drop(entries);
        if !in_time {
            self.wake.notify_one();
        }
        (id, rx)
    }

    /// Removes an execution; done before its completion is written, so that a tick never takes a
    /// completion for a lost lease.
    pub(crate) fn deregister(&self, id: u64) {
        self.lock().remove(&id);
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Runs until `stop` fires. One tick in flight at a time.
pub(crate) async fn run(store: Arc<dyn Store>, in_flight: Arc<InFlight>, stop: Arc<Notify>) {
    let mut backoff = Backoff::default();
    loop {
        // Ticking: entries registered from now on wake the loop (a stored permit), since this
        // tick may already have computed its next wake without them.
        in_flight.lock().armed = None;
        let next = tokio::select! {
            next = tick(&*store, &in_flight, &mut backoff) => next,
            () = stop.notified() => break,
        };
        in_flight.lock().armed = next;
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => {}
            () = in_flight.wake.notified() => {}
            () = stop.notified() => break,
        }
    }
    in_flight.close();
}

/// Delay before retrying after failed heartbeats: 50 ms, doubling, at most 2 s.
#[derive(Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let d = Duration::from_millis(50) * 2u32.saturating_pow(self.failures.min(6));
        self.failures = self.failures.saturating_add(1);
        d.min(Duration::from_secs(2))
    }
}

/// Fires the local loss of every execution past its ceiling or its local deadline and drops it
/// from the set (nothing renews it any more).
fn expire(in_flight: &InFlight, now: Instant) {
    in_flight.lock().retain(|_, e| {
        let why = if now >= e.hard_deadline {
            Some(LeaseLost::CeilingPassed)
        } else if now >= e.local_deadline() {
            Some(LeaseLost::RenewalsFailing)
        } else {
            None
        };
        if let Some(why) = why {
            e.signal.fire(why);
            metrics::lease_lost();
        }
        why.is_none()
    });
}

/// Fires local losses, renews what is due, and returns when to wake next.
async fn tick(store: &dyn Store, in_flight: &InFlight, backoff: &mut Backoff) -> Option<Instant> {
    let now = Instant::now();
    expire(in_flight, now);
    let (batch, bound) = {
        let entries = in_flight.lock();
        // Renew what is due now, plus what would fall due within a sixth of its ttl, so that
        // executions started close together share ticks.
        let mut batch: Vec<(u64, Renewal)> = entries
            .iter()
            .filter(|(_, e)| e.due() <= now + e.ttl / 6)
            .map(|(id, e)| {
                (
                    *id,
                    Renewal::new(e.namespace.clone(), e.key.clone(), e.token, e.ttl),
                )
            })
            .collect();
        // Sorted keys: concurrent heartbeats of several instances lock rows in one order.
        batch.sort_by(|a, b| (&a.1.namespace, &a.1.key).cmp(&(&b.1.namespace, &b.1.key)));
        // The call is given up only when no member of the batch could still use its answer: at
        // the latest of their local deadlines. Each member's own loss fires on time meanwhile,
        // so one short lease in the batch cannot cut the renewals of long ones (M5).
        let bound = batch
            .iter()
            .filter_map(|(id, _)| entries.get(id).map(Entry::local_deadline))
            .max();
        (batch, bound)
    };

    if !batch.is_empty() {
        let sent_at = Instant::now();
        let renewals: Vec<Renewal> = batch.iter().map(|(_, r)| r.clone()).collect();
        let started = std::time::Instant::now();
        let call = store.heartbeat(&renewals);
        tokio::pin!(call);
        let result = loop {
            let next_loss = in_flight.lock().values().map(Entry::local_deadline).min();
            let wake = match (next_loss, bound) {
                (Some(l), Some(b)) => Some(l.min(b)),
                (l, b) => l.or(b),
            };
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = &mut call => break r,
                () = sleep => {
                    let now = Instant::now();
                    expire(in_flight, now);
                    if bound.is_some_and(|b| now >= b) {
                        break Err(crate::StoreError::ambiguous(
                            "heartbeat got no reply before its executions' local lease deadlines",
                        ));
                    }
                }
            }
        };
        metrics::store_latency("heartbeat", started.elapsed());
        let mut entries = in_flight.lock();
        match result {
            Ok(renewed) => {
                backoff.failures = 0;
                for ((id, _), lease) in batch.iter().zip(renewed) {
                    let Some(e) = entries.get_mut(id) else {
                        continue; // finished (or lost) meanwhile
                    };
                    if lease.is_some() {
                        e.renewed_at = sent_at;
                    } else {
                        e.signal.fire(LeaseLost::Fenced);
                        metrics::lease_lost();
                        entries.remove(id);
                    }
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, executions = batch.len(), "heartbeat failed");
                // Retry after a growing pause (the failed entries are overdue, so their due
                // time must not count), but wake for the first local deadline meanwhile.
                let retry = Instant::now() + backoff.next();
                let deadline = entries.values().map(Entry::local_deadline).min();
                return Some(deadline.map_or(retry, |d| d.min(retry)));
            }
        }
    }
    next_wake(in_flight)
}

fn next_wake(in_flight: &InFlight) -> Option<Instant> {
    in_flight.lock().values().map(Entry::wake_at).min()
}
