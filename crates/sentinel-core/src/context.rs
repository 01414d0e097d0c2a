//! The execution context handed to the function, and its lease-lost signal.

use std::time::Duration;

use tokio::sync::watch;

use crate::FencingToken;

/// Why an execution lost its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaseLost {
    /// A renewal was fenced: another owner (an operator) holds the key, or the lease had already
    /// expired in the store.
    Fenced,
    /// The hard ceiling passed.
    CeilingPassed,
    /// No renewal succeeded for `ttl` minus a margin (the store is unreachable or slow); others may
    /// already see the key as uncertain.
    RenewalsFailing,
    /// The Sentinel shut down (its `shutdown_timeout` passed) before the execution finished: no
    /// renewal will happen any more, and others will see the key uncertain once the lease
    /// expires. A result can still be stored if the work completes.
    Stopped,
}

/// The sending half: owned by the heartbeat.
#[derive(Debug)]
pub(crate) struct LeaseSignal {
    tx: watch::Sender<Option<LeaseLost>>,
}

impl LeaseSignal {
    pub(crate) fn new() -> (Self, watch::Receiver<Option<LeaseLost>>) {
        let (tx, rx) = watch::channel(None);
        (Self { tx }, rx)
    }

    /// Fires once; later calls keep the first reason.
    pub(crate) fn fire(&self, why: LeaseLost) {
        self.tx.send_if_modified(|v| {
            if v.is_none() {
                *v = Some(why);
                true
            } else {
                false
            }
        });
    }
}

/// What the function knows about its execution: key, namespace, fencing token, and whether the
/// lease is still held.
#[derive(Debug, Clone)]
pub struct ExecutionContext {
    namespace: String,
    key: String,
    token: FencingToken,
    ttl: Duration,
    lost: watch::Receiver<Option<LeaseLost>>,
    not_started: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl ExecutionContext {
    pub(crate) fn new(
        namespace: String,
        key: String,
        token: FencingToken,
        ttl: Duration,
        lost: watch::Receiver<Option<LeaseLost>>,
    ) -> Self {
        Self {
            namespace,
            key,
            token,
            ttl,
            lost,
            not_started: std::sync::Arc::default(),
        }
    }

    /// Declares that the work did not start (e.g. the program to run could not be executed):
    /// if the function then returns an error, the key is released whatever the failure policy,
    /// so that the next caller runs. Has no effect on a success, nor once the lease is lost.
    pub fn mark_not_started(&self) {
        self.not_started
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub(crate) fn did_not_start(&self) -> bool {
        self.not_started.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The key being executed.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Its namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The fencing token of this execution. Pass it to downstream systems so they can reject a
    /// stale writer.
    pub fn fencing_token(&self) -> FencingToken {
        self.token
    }

    /// The lease length of this execution.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Cheap check: has the lease been lost (and why)?
    pub fn lease_lost_reason(&self) -> Option<LeaseLost> {
        *self.lost.borrow()
    }

    /// Cheap check: has the lease been lost?
    pub fn is_lease_lost(&self) -> bool {
        self.lease_lost_reason().is_some()
    }

    /// Resolves when the lease is lost; select on it to stop work that must not continue
    /// without ownership. Never resolves while the lease is held.
    pub async fn lease_lost(&self) -> LeaseLost {
        let mut rx = self.lost.clone();
        match rx.wait_for(Option::is_some).await {
            Ok(v) => v.unwrap_or(LeaseLost::Fenced),
            // The heartbeat dropped the sender: the execution left the in-flight set (it is
            // finishing) or the Sentinel shut down. Either way no renewal will happen any more.
            Err(_) => self
                .lease_lost_reason()
                .unwrap_or(LeaseLost::RenewalsFailing),
        }
    }
}
