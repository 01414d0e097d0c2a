#![doc = include_str!("docs/store.md")]

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::{Event, FencingToken, Owner, Record, State, StoreError, StoredResult, UncertainReason};

/// [`Store::claim_many`] one request at a time through `store.claim` (the trait's default, and
/// what a decorator uses to make batches see its own `claim`). An error after some claims
/// committed is ambiguous: the failure must not read as "nothing happened", or their callers
/// would never run what they own.
///
/// # Errors
///
/// The first claim's error as it is; a later one as [`StoreErrorKind::Ambiguous`](crate::StoreErrorKind).
pub async fn claim_each<S: Store + ?Sized>(
    store: &S,
    requests: &[ClaimRequest],
) -> Result<Vec<ClaimResponse>, StoreError> {
    let mut out = Vec::with_capacity(requests.len());
    for r in requests {
        match store.claim(r).await {
            Ok(response) => out.push(response),
            Err(e) if !out.is_empty() => {
                return Err(StoreError::ambiguous(format!(
                    "claim batch stopped part-way: {e}"
                )));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// [`Store::complete_many`] one completion at a time through `store.complete`.
///
/// # Errors
///
/// The first completion's error.
pub async fn complete_each<S: Store + ?Sized>(
    store: &S,
    completions: &[Completion],
) -> Result<Vec<Write>, StoreError> {
    let mut out = Vec::with_capacity(completions.len());
    for c in completions {
        out.push(store.complete(c).await?);
    }
    Ok(out)
}

/// The future a [`Store`] method returns (what `#[async_trait]` expands an `async fn` to);
/// [`forward_store!`](crate::forward_store) writes forwarding methods in this form.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

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

    /// Whether `record` is this claim's own: running under its attempt id. Attempt ids are
    /// unique per claim, so a store that reads the row back, and an engine that re-reads after
    /// a lost reply, both tell an acquired key by this.
    pub fn owns(&self, record: &Record) -> bool {
        record.state == State::Running
            && record
                .owner
                .as_ref()
                .is_some_and(|o| o.attempt == self.owner.attempt)
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
    /// Only keys that start with this (compared character by character, no wildcards).
    pub key_prefix: Option<String>,
    /// The order of the page.
    pub order: ListOrder,
    /// Return records strictly after this one in `order` (keyset pagination): the cursor of
    /// the last record of the previous page, [`ListCursor::of`].
    pub after: Option<ListCursor>,
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

/// The order of [`Store::list`]. Ties on `created_at` are broken by `(namespace, key)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ListOrder {
    /// By `(namespace, key)`.
    #[default]
    Key,
    /// Oldest first: by `created_at`, then `(namespace, key)`.
    Oldest,
    /// Newest first: by `created_at` descending, then `(namespace, key)` descending.
    Newest,
}

/// Where a page of [`Store::list`] starts: the position of the last record of the previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListCursor {
    /// The record's `created_at` (used by the age orders).
    pub created_at: SystemTime,
    /// The record's namespace.
    pub namespace: String,
    /// The record's key.
    pub key: String,
}

impl ListCursor {
    /// The position of `record`.
    pub fn of(record: &Record) -> Self {
        Self::new(record.created_at, &record.namespace, &record.key)
    }

    /// A position from its parts.
    pub fn new(created_at: SystemTime, namespace: &str, key: &str) -> Self {
        Self {
            created_at,
            namespace: namespace.to_owned(),
            key: key.to_owned(),
        }
    }

    /// Whether `record` comes strictly after this position in `order`.
    pub fn precedes(&self, record: &Record, order: ListOrder) -> bool {
        let mine = (self.namespace.as_str(), self.key.as_str());
        let theirs = (record.namespace.as_str(), record.key.as_str());
        match order {
            ListOrder::Key => theirs > mine,
            ListOrder::Oldest => (record.created_at, theirs) > (self.created_at, mine),
            ListOrder::Newest => (record.created_at, theirs) < (self.created_at, mine),
        }
    }
}

/// How many records of one namespace are in one state, for [`Store::counts`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StateCount {
    /// The namespace.
    pub namespace: String,
    /// The state, per the store's clock.
    pub state: State,
    /// How many.
    pub count: u64,
}

impl StateCount {
    /// Builds a count.
    pub fn new(namespace: impl Into<String>, state: State, count: u64) -> Self {
        Self {
            namespace: namespace.into(),
            state,
            count,
        }
    }
}

/// An event with the key it belongs to, for [`Store::recent_events`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct KeyedEvent {
    /// Namespace of the key.
    pub namespace: String,
    /// The key.
    pub key: String,
    /// The event.
    pub event: Event,
}

impl KeyedEvent {
    /// Builds a keyed event.
    pub fn new(namespace: impl Into<String>, key: impl Into<String>, event: Event) -> Self {
        Self {
            namespace: namespace.into(),
            key: key.into(),
            event,
        }
    }
}

/// What [`Store::prune`] deletes.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct PruneQuery {
    /// Only this namespace; `None` prunes every namespace. The CLI always names one.
    pub namespace: Option<String>,
    /// Also delete completed records that completed more than this long ago, whatever their
    /// retention. `None`: only records whose `retain_until` has passed.
    pub older_than: Option<Duration>,
}

impl PruneQuery {
    /// Prunes only `namespace`.
    pub fn in_namespace(namespace: impl Into<String>) -> Self {
        Self {
            namespace: Some(namespace.into()),
            older_than: None,
        }
    }
}

/// Figures for alerting.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Records uncertain or reconciling, per the store's clock.
    pub uncertain: u64,
    /// Since when the oldest of them is uncertain.
    pub oldest_uncertain_since: Option<SystemTime>,
    /// That record's `(namespace, key)`.
    pub oldest_uncertain: Option<(String, String)>,
    /// The store's clock.
    pub now: Option<SystemTime>,
}

/// A storage backend. Every method is one atomic step; every write to a running record is
/// conditional on `(namespace, key, token)`. See the [module docs](self) for what each method
/// must guarantee and how to test a new store.
#[async_trait]
pub trait Store: std::fmt::Debug + Send + Sync + 'static {
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
        claim_each(self, requests).await
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
        complete_each(self, completions).await
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

    /// Lists records in `query.order`, after `query.after`, filtered by namespace, state (per
    /// the store's clock) and key prefix.
    async fn list(&self, query: &ListQuery) -> Result<Vec<Record>, StoreError>;

    /// How many records each namespace has in each state (per the store's clock); states with
    /// none are left out. Ordered by namespace, then state.
    async fn counts(&self) -> Result<Vec<StateCount>, StoreError>;

    /// The last `limit` events of every key, newest first.
    async fn recent_events(&self, limit: usize) -> Result<Vec<KeyedEvent>, StoreError>;

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

    /// Deletes completed records of `query.namespace` (every namespace when `None`) whose
    /// retention has passed (or, with `older_than`, that completed that long ago) with their
    /// earlier events, leaving one `pruned` event per key. Never touches another namespace.
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

    /// Counts uncertain and reconciling records, and finds the oldest, for alerting.
    async fn stats(&self) -> Result<StoreStats, StoreError>;

    /// Creates or upgrades the store's schema; idempotent and safe to run from many processes at
    /// once. Stores that need no schema do nothing.
    async fn migrate(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// In-process waiters of a store that has no notification channel of its own (memory, SQLite):
/// [`Waiters::wait`] blocks until [`Waiters::notify`] is called for the key or the timeout passes.
/// Entries exist only while someone waits.
#[derive(Debug, Default)]
pub struct Waiters {
    map: Mutex<HashMap<(String, String), Arc<Notify>>>,
}

impl Waiters {
    /// Waits until the key is notified or `timeout` passes. `still_running` is checked after
    /// registering, so that a change between the caller's read and the registration is not
    /// missed; when it says the key no longer runs, this returns at once.
    ///
    /// # Errors
    ///
    /// What `still_running` returns.
    pub async fn wait(
        &self,
        namespace: &str,
        key: &str,
        timeout: Duration,
        still_running: impl Future<Output = Result<bool, StoreError>>,
    ) -> Result<(), StoreError> {
        let id = (namespace.to_owned(), key.to_owned());
        let notify = self.lock().entry(id.clone()).or_default().clone();
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let result = match still_running.await {
            Ok(true) => {
                let _ = tokio::time::timeout(timeout, notified).await;
                Ok(())
            }
            other => other.map(drop),
        };
        // The map and this call hold the only references: nobody else waits on the key.
        let mut map = self.lock();
        let unused = map
            .get(&id)
            .is_some_and(|n| Arc::ptr_eq(n, &notify) && Arc::strong_count(n) == 2);
        if unused {
            map.remove(&id);
        }
        result
    }

    /// Wakes everyone waiting on the key (its record changed).
    pub fn notify(&self, namespace: &str, key: &str) {
        let notify = self.lock().remove(&(namespace.to_owned(), key.to_owned()));
        if let Some(n) = notify {
            n.notify_waiters();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Arc<Notify>>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Conversions between the engine's types and the columns SQL stores keep them in.
pub mod columns {
    use super::{Duration, FencingToken, StoreError, SystemTime, UNIX_EPOCH};

    /// A duration as whole milliseconds, saturating at `i64::MAX`.
    pub fn millis(d: Duration) -> i64 {
        i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
    }

    /// A point in time as milliseconds since the Unix epoch (0 before it, saturating after).
    pub fn epoch_millis(t: SystemTime) -> i64 {
        t.duration_since(UNIX_EPOCH).map_or(0, millis)
    }

    /// Milliseconds since the Unix epoch as a point in time (negative values read as the epoch).
    pub fn from_epoch_millis(ms: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    }

    /// A fencing token as a `bigint` column.
    ///
    /// # Errors
    ///
    /// A token above `i64::MAX` (never drawn by a store; only a caller can make one) is refused
    /// rather than wrapped.
    pub fn token(t: FencingToken) -> Result<i64, StoreError> {
        t.to_i64()
            .ok_or_else(|| StoreError::other(format!("fencing token {t} does not fit a bigint")))
    }

    /// A fencing token read from a `bigint` column.
    ///
    /// # Errors
    ///
    /// A negative value, which no store writes.
    pub fn token_from(value: i64) -> Result<FencingToken, StoreError> {
        FencingToken::from_i64(value).ok_or_else(|| {
            StoreError::other(format!("negative fencing token {value} in the store"))
        })
    }
}

/// Writes the [`Store`] methods named in the list as forwards to an inner store: `self.<path>`,
/// where the path in brackets is a field (`[inner]`) or a method call (`[as_ref()]`). The
/// forwarded call returns the inner store's future itself, so a decorator costs no allocation per
/// call. For decorators: put `#[deny(clippy::missing_trait_methods)]` on the `impl` so that a
/// method added to the trait later cannot silently fall back to its default.
///
/// ```
/// use std::sync::Arc;
/// use sentinel_core::store::{ClaimRequest, ClaimResponse, Store};
/// use sentinel_core::{MemoryStore, StoreError};
///
/// /// Counts claims, forwards everything.
/// #[derive(Debug)]
/// struct Counting {
///     inner: Arc<dyn Store>,
///     claims: std::sync::atomic::AtomicU64,
/// }
///
/// #[async_trait::async_trait]
/// #[deny(clippy::missing_trait_methods)]
/// impl Store for Counting {
///     async fn claim(&self, request: &ClaimRequest) -> Result<ClaimResponse, StoreError> {
///         self.claims.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
///         self.inner.claim(request).await
///     }
///
///     sentinel_core::forward_store!([inner] claim_many, heartbeat, complete, complete_many,
///         release, mark_uncertain, load, list, counts, recent_events, history, reconcile,
///         resolve, forget, prune, wait_for_change, stats, migrate);
/// }
/// # let _ = Counting { inner: Arc::new(MemoryStore::new()), claims: Default::default() };
/// ```
#[macro_export]
macro_rules! forward_store {
    ($inner:tt $($method:ident),* $(,)?) => {
        $( $crate::forward_store!(@one $inner $method); )*
    };
    (@one [$($i:tt)+] claim) => {
        fn claim<'s, 'a, 'async_trait>(&'s self, request: &'a $crate::store::ClaimRequest)
            -> $crate::store::StoreFuture<'async_trait, $crate::store::ClaimResponse>
        where 's: 'async_trait, 'a: 'async_trait, Self: 'async_trait
        { self.$($i)+.claim(request) }
    };
    (@one [$($i:tt)+] claim_many) => {
        fn claim_many<'s, 'a, 'async_trait>(&'s self, requests: &'a [$crate::store::ClaimRequest])
            -> $crate::store::StoreFuture<'async_trait, ::std::vec::Vec<$crate::store::ClaimResponse>>
        where 's: 'async_trait, 'a: 'async_trait, Self: 'async_trait
        { self.$($i)+.claim_many(requests) }
    };
    (@one [$($i:tt)+] heartbeat) => {
        fn heartbeat<'s, 'a, 'async_trait>(&'s self, renewals: &'a [$crate::store::Renewal])
            -> $crate::store::StoreFuture<'async_trait,
                ::std::vec::Vec<::std::option::Option<::std::time::SystemTime>>>
        where 's: 'async_trait, 'a: 'async_trait, Self: 'async_trait
        { self.$($i)+.heartbeat(renewals) }
    };
    (@one [$($i:tt)+] complete) => {
        fn complete<'s, 'a, 'async_trait>(&'s self, completion: &'a $crate::store::Completion)
            -> $crate::store::StoreFuture<'async_trait, $crate::store::Write>
        where 's: 'async_trait, 'a: 'async_trait, Self: 'async_trait
        { self.$($i)+.complete(completion) }
    };
    (@one [$($i:tt)+] complete_many) => {
        fn complete_many<'s, 'a, 'async_trait>(&'s self, completions: &'a [$crate::store::Completion])
            -> $crate::store::StoreFuture<'async_trait, ::std::vec::Vec<$crate::store::Write>>
        where 's: 'async_trait, 'a: 'async_trait, Self: 'async_trait
        { self.$($i)+.complete_many(completions) }
    };
    (@one [$($i:tt)+] release) => {
        fn release<'s, 'a, 'b, 'async_trait>(&'s self, namespace: &'a str, key: &'b str,
            token: $crate::FencingToken)
            -> $crate::store::StoreFuture<'async_trait, $crate::store::Write>
        where 's: 'async_trait, 'a: 'async_trait, 'b: 'async_trait, Self: 'async_trait
        { self.$($i)+.release(namespace, key, token) }
    };
    (@one [$($i:tt)+] mark_uncertain) => {
        fn mark_uncertain<'s, 'a, 'b, 'async_trait>(&'s self, namespace: &'a str, key: &'b str,
            token: $crate::FencingToken, reason: $crate::UncertainReason)
            -> $crate::store::StoreFuture<'async_trait, $crate::store::Write>
        where 's: 'async_trait, 'a: 'async_trait, 'b: 'async_trait, Self: 'async_trait
        { self.$($i)+.mark_uncertain(namespace, key, token, reason) }
    };
    (@one [$($i:tt)+] load) => {
        fn load<'s, 'a, 'b, 'async_trait>(&'s self, namespace: &'a str, key: &'b str)
            -> $crate::store::StoreFuture<'async_trait, ::std::option::Option<$crate::Record>>
        where 's: 'async_trait, 'a: 'async_trait, 'b: 'async_trait, Self: 'async_trait
        { self.$($i)+.load(namespace, key) }
    };
    (@one [$($i:tt)+] list) => {
        fn list<'s, 'a, 'async_trait>(&'s self, query: &'a $crate::store::ListQuery)
            -> $crate::store::StoreFuture<'async_trait, ::std::vec::Vec<$crate::Record>>
        where 's: 'async_trait, 'a: 'async_trait, Self: 'async_trait
        { self.$($i)+.list(query) }
    };
    (@one [$($i:tt)+] counts) => {
        fn counts<'s, 'async_trait>(&'s self)
            -> $crate::store::StoreFuture<'async_trait, ::std::vec::Vec<$crate::store::StateCount>>
        where 's: 'async_trait, Self: 'async_trait
        { self.$($i)+.counts() }
    };
    (@one [$($i:tt)+] recent_events) => {
        fn recent_events<'s, 'async_trait>(&'s self, limit: usize)
            -> $crate::store::StoreFuture<'async_trait, ::std::vec::Vec<$crate::store::KeyedEvent>>
        where 's: 'async_trait, Self: 'async_trait
        { self.$($i)+.recent_events(limit) }
    };
    (@one [$($i:tt)+] history) => {
        fn history<'s, 'a, 'b, 'async_trait>(&'s self, namespace: &'a str, key: &'b str,
            limit: usize)
            -> $crate::store::StoreFuture<'async_trait, ::std::vec::Vec<$crate::Event>>
        where 's: 'async_trait, 'a: 'async_trait, 'b: 'async_trait, Self: 'async_trait
        { self.$($i)+.history(namespace, key, limit) }
    };
    (@one [$($i:tt)+] reconcile) => {
        fn reconcile<'s, 'a, 'async_trait>(&'s self, action: &'a $crate::store::OperatorAction,
            force: bool)
            -> $crate::store::StoreFuture<'async_trait, $crate::store::OperatorResponse>
        where 's: 'async_trait, 'a: 'async_trait, Self: 'async_trait
        { self.$($i)+.reconcile(action, force) }
    };
    (@one [$($i:tt)+] resolve) => {
        fn resolve<'s, 'a, 'b, 'async_trait>(&'s self, action: &'a $crate::store::OperatorAction,
            resolution: &'b $crate::store::Resolution,
            expected_token: ::std::option::Option<$crate::FencingToken>)
            -> $crate::store::StoreFuture<'async_trait, $crate::store::OperatorResponse>
        where 's: 'async_trait, 'a: 'async_trait, 'b: 'async_trait, Self: 'async_trait
        { self.$($i)+.resolve(action, resolution, expected_token) }
    };
    (@one [$($i:tt)+] forget) => {
        fn forget<'s, 'a, 'async_trait>(&'s self, action: &'a $crate::store::OperatorAction)
            -> $crate::store::StoreFuture<'async_trait, $crate::store::OperatorResponse>
        where 's: 'async_trait, 'a: 'async_trait, Self: 'async_trait
        { self.$($i)+.forget(action) }
    };
    (@one [$($i:tt)+] prune) => {
        fn prune<'s, 'a, 'async_trait>(&'s self, query: &'a $crate::store::PruneQuery)
            -> $crate::store::StoreFuture<'async_trait, u64>
        where 's: 'async_trait, 'a: 'async_trait, Self: 'async_trait
        { self.$($i)+.prune(query) }
    };
    (@one [$($i:tt)+] wait_for_change) => {
        fn wait_for_change<'s, 'a, 'b, 'async_trait>(&'s self, namespace: &'a str, key: &'b str,
            timeout: ::std::time::Duration)
            -> $crate::store::StoreFuture<'async_trait, ()>
        where 's: 'async_trait, 'a: 'async_trait, 'b: 'async_trait, Self: 'async_trait
        { self.$($i)+.wait_for_change(namespace, key, timeout) }
    };
    (@one [$($i:tt)+] stats) => {
        fn stats<'s, 'async_trait>(&'s self)
            -> $crate::store::StoreFuture<'async_trait, $crate::store::StoreStats>
        where 's: 'async_trait, Self: 'async_trait
        { self.$($i)+.stats() }
    };
    (@one [$($i:tt)+] migrate) => {
        fn migrate<'s, 'async_trait>(&'s self) -> $crate::store::StoreFuture<'async_trait, ()>
        where 's: 'async_trait, Self: 'async_trait
        { self.$($i)+.migrate() }
    };
}

/// `store` behind an `Arc<dyn Store>`: the same `Arc` when it already is one, so that sharing a
/// store never stacks indirections.
pub fn shared(store: impl Store) -> Arc<dyn Store> {
    match (&store as &dyn std::any::Any).downcast_ref::<Arc<dyn Store>>() {
        Some(arc) => arc.clone(),
        None => Arc::new(store),
    }
}

/// A shared store is a store: `Sentinel::builder(arc)` and decorators take either.
#[deny(clippy::missing_trait_methods)]
impl<T: Store + ?Sized> Store for Arc<T> {
    crate::forward_store!([as_ref()] claim, claim_many, heartbeat, complete, complete_many,
        release, mark_uncertain, load, list, counts, recent_events, history, reconcile, resolve,
        forget, prune, wait_for_change, stats, migrate);
}
