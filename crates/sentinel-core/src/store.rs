//! The `Store` trait: one atomic primitive per method. All policy (ambiguous commits, failure
//! policy, heartbeat cadence, caching) lives in the engine; a store only applies conditional
//! transitions with its own clock and appends the matching event in the same atomic step.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::{Event, FencingToken, Owner, Record, State, StoreError, StoredResult, UncertainReason};

/// A request to take ownership of an absent key.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClaimRequest {
    /// Namespace of the key.
    pub namespace: String,
    /// The key.
    pub key: String,
    /// Who claims.
    pub owner: Owner,
    /// Lease length.
    pub ttl: Duration,
    /// Absolute lifetime from the claim.
    pub hard_ttl: Duration,
    /// Optional payload fingerprint stored with the record.
    pub fingerprint: Option<Vec<u8>>,
}

impl ClaimRequest {
    /// Builds a claim request.
    pub fn new(
        namespace: impl Into<String>,
        key: impl Into<String>,
        owner: Owner,
        ttl: Duration,
        hard_ttl: Duration,
        fingerprint: Option<Vec<u8>>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            key: key.into(),
            owner,
            ttl,
            hard_ttl,
            fingerprint,
        }
    }
}

/// What a claim found.
#[derive(Debug, Clone)]
#[non_exhaustive]
#[allow(clippy::large_enum_variant)]
pub enum ClaimResponse {
    /// The key was absent; it is now running under a new token owned by the requester.
    Acquired(Record),
    /// A record exists; it is returned as read, unchanged, with its state per the store's clock.
    Existing(Record),
    /// The key was absent when the statement started but another claim committed before it
    /// could insert: nothing was written and nothing was read. The engine runs the claim again.
    Raced,
}

/// One execution to renew in a heartbeat.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Renewal {
    /// Namespace of the key.
    pub namespace: String,
    /// The key.
    pub key: String,
    /// Token of the execution.
    pub token: FencingToken,
    /// Lease length to extend by (capped by the hard ceiling).
    pub ttl: Duration,
}

impl Renewal {
    /// Builds a renewal.
    pub fn new(
        namespace: impl Into<String>,
        key: impl Into<String>,
        token: FencingToken,
        ttl: Duration,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            key: key.into(),
            token,
            ttl,
        }
    }
}

/// The result of a fenced write: it changed the row, or the token (or state) did not match.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
#[allow(clippy::large_enum_variant)] // returned once per write, never stored in bulk
pub enum Write {
    /// The transition was applied; the record after it, when one remains.
    Applied(Option<Record>),
    /// Zero rows matched the token and state: another owner holds the key.
    Fenced,
}

/// A request to complete a running execution.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Completion {
    /// Namespace of the key.
    pub namespace: String,
    /// The key.
    pub key: String,
    /// Token of the execution.
    pub token: FencingToken,
    /// The value or recorded error.
    pub result: StoredResult,
    /// How long to keep the record after completion; `None` keeps it until forgotten.
    pub retain_for: Option<Duration>,
}

impl Completion {
    /// Builds a completion.
    pub fn new(
        namespace: impl Into<String>,
        key: impl Into<String>,
        token: FencingToken,
        result: StoredResult,
        retain_for: Option<Duration>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            key: key.into(),
            token,
            result,
            retain_for,
        }
    }
}

/// Who performs an operator action, and why.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OperatorAction {
    /// Namespace of the key.
    pub namespace: String,
    /// The key.
    pub key: String,
    /// Who acts (a user name, `user@host`, a service).
    pub actor: String,
    /// Why.
    pub reason: Option<String>,
}

impl OperatorAction {
    /// Builds an operator action.
    pub fn new(
        namespace: impl Into<String>,
        key: impl Into<String>,
        actor: impl Into<String>,
        reason: Option<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            key: key.into(),
            actor: actor.into(),
            reason,
        }
    }
}

/// How an operator resolves a reconciling key.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Resolution {
    /// The work did happen: store this result (or none) and replay it from now on.
    Complete(Option<StoredResult>),
    /// The work did not happen: remove the record so the next caller runs again.
    Reset,
}

/// What an operator action found.
#[derive(Debug, Clone)]
#[non_exhaustive]
#[allow(clippy::large_enum_variant)]
pub enum OperatorResponse {
    /// Applied; the record after the action, when one remains.
    Applied(Option<Record>),
    /// Refused: the record is in a state (or under a token) the action does not accept.
    Refused(Record),
    /// No record for the key.
    NotFound,
}

/// A page request for [`Store::list`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ListQuery {
    /// Only this namespace (all when `None`).
    pub namespace: Option<String>,
    /// Only records in this state, per the store's clock.
    pub state: Option<State>,
    /// Return records strictly after this `(namespace, key)` (keyset pagination).
    pub after: Option<(String, String)>,
    /// Page size.
    pub limit: usize,
}

impl ListQuery {
    /// A query for the first `limit` records.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            ..Self::default()
        }
    }
}

/// What [`Store::prune`] deletes.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct PruneQuery {
    /// Also delete completed records that completed more than this long ago, whatever their
    /// retention. `None`: only records whose `retain_until` has passed.
    pub older_than: Option<Duration>,
}

/// Figures for alerting.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Records uncertain or reconciling, per the store's clock.
    pub uncertain: u64,
    /// Since when the oldest of them is uncertain.
    pub oldest_uncertain_since: Option<SystemTime>,
    /// The store's clock.
    pub now: Option<SystemTime>,
}

/// A storage backend. Every method is one atomic step; every write to a running record is
/// conditional on `(namespace, key, token)`.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Takes ownership of an absent key, or returns the existing record unchanged. Must not lock
    /// or write an existing row. Appends `acquired` when it inserts.
    async fn claim(&self, request: &ClaimRequest) -> Result<ClaimResponse, StoreError>;

    /// Claims several distinct keys in one atomic step where the store can (one statement on
    /// PostgreSQL); answers in input order, each exactly as [`Store::claim`] would. The requests
    /// must name distinct `(namespace, key)` pairs. The default claims them one by one; an error
    /// after some of them committed is reported as ambiguous.
    async fn claim_many(
        &self,
        requests: &[ClaimRequest],
    ) -> Result<Vec<ClaimResponse>, StoreError> {
        let mut out = Vec::with_capacity(requests.len());
        for r in requests {
            match self.claim(r).await {
                Ok(response) => out.push(response),
                // Earlier claims of the batch committed: the failure must not read as "nothing
                // happened", or their callers would never run what they own.
                Err(e) if !out.is_empty() => {
                    return Err(StoreError::new(
                        crate::StoreErrorKind::Ambiguous,
                        format!("claim batch stopped part-way: {e}"),
                    ));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Extends the lease of each running execution whose token matches and whose lease is still
    /// alive to `min(now + ttl, hard_expires_at)`. Returns, in input order, the new lease expiry
    /// or `None` when the renewal was fenced (token, state or expired lease).
    async fn heartbeat(&self, renewals: &[Renewal]) -> Result<Vec<Option<SystemTime>>, StoreError>;

    /// Stores the result of a running execution (lease alive or expired) whose token matches.
    /// Appends `completed` or `failed`.
    async fn complete(&self, completion: &Completion) -> Result<Write, StoreError>;

    /// Stores several completions in one atomic step where the store can; answers in input
    /// order, each exactly as [`Store::complete`] would. The default completes them one by one.
    async fn complete_many(&self, completions: &[Completion]) -> Result<Vec<Write>, StoreError> {
        let mut out = Vec::with_capacity(completions.len());
        for c in completions {
            out.push(self.complete(c).await?);
        }
        Ok(out)
    }

    /// Removes a running execution whose token matches and whose lease is still alive (policy
    /// `release`; an expired lease is uncertain and stays). Appends `released`.
    async fn release(
        &self,
        namespace: &str,
        key: &str,
        token: FencingToken,
    ) -> Result<Write, StoreError>;

    /// Marks a running execution whose token matches uncertain and expires its lease at once.
    /// Appends `uncertain`.
    async fn mark_uncertain(
        &self,
        namespace: &str,
        key: &str,
        token: FencingToken,
        reason: UncertainReason,
    ) -> Result<Write, StoreError>;

    /// Reads one record, with its state per the store's clock.
    async fn load(&self, namespace: &str, key: &str) -> Result<Option<Record>, StoreError>;

    /// Lists records ordered by `(namespace, key)`.
    async fn list(&self, query: &ListQuery) -> Result<Vec<Record>, StoreError>;

    /// The events of one key, oldest first, at most `limit`.
    async fn history(
        &self,
        namespace: &str,
        key: &str,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError>;

    /// uncertain (stored or derived) → reconciling with a new token; with `force`, also
    /// reconciling → reconciling. Refuses a live, completed (or, without force, reconciling)
    /// record. Appends `reconciling`.
    async fn reconcile(
        &self,
        action: &OperatorAction,
        force: bool,
    ) -> Result<OperatorResponse, StoreError>;

    /// reconciling → completed (`resolved`) or absent (`reset`); with `expected_token`, only when
    /// the record still carries it.
    async fn resolve(
        &self,
        action: &OperatorAction,
        resolution: &Resolution,
        expected_token: Option<FencingToken>,
    ) -> Result<OperatorResponse, StoreError>;

    /// completed → absent. Appends `forgotten`.
    async fn forget(&self, action: &OperatorAction) -> Result<OperatorResponse, StoreError>;

    /// Deletes completed records whose retention has passed (or, with `older_than`, that
    /// completed that long ago) with their earlier events, leaving one `pruned` event per key.
    /// Returns how many records were deleted.
    async fn prune(&self, query: &PruneQuery) -> Result<u64, StoreError>;

    /// Returns when the record of the key may have changed (a completion or a transition out of
    /// running was signalled) or after `timeout`, whichever is first. The engine re-reads the row
    /// afterwards, so a spurious return is harmless.
    async fn wait_for_change(
        &self,
        namespace: &str,
        key: &str,
        timeout: Duration,
    ) -> Result<(), StoreError>;

    /// Counts uncertain and reconciling records, for alerting.
    async fn stats(&self) -> Result<StoreStats, StoreError>;

    /// Creates or upgrades the store's schema; idempotent and safe to run from many processes at
    /// once. Stores that need no schema do nothing.
    async fn migrate(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// For stores that signal in-process waiters through a map of `Notify`s: removes `notify` from
/// the map once its last waiter is done (the map and the caller hold the only references), so
/// that keys nobody waits on any more do not accumulate.
pub fn forget_notifier<K: std::hash::Hash + Eq>(
    map: &std::sync::Mutex<std::collections::HashMap<K, std::sync::Arc<tokio::sync::Notify>>>,
    key: &K,
    notify: &std::sync::Arc<tokio::sync::Notify>,
) {
    let mut map = map
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let unused = map
        .get(key)
        .is_some_and(|n| std::sync::Arc::ptr_eq(n, notify) && std::sync::Arc::strong_count(n) == 2);
    if unused {
        map.remove(key);
    }
}
