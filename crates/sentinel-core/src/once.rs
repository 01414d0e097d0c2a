//! One call of `once`: the owned [`Once`] builder, its validated [`Plan`], and the two ways to
//! drive it — [`Once::run`] with a function, or [`Once::begin`] and an [`Execution`] handle
//! finished by the caller.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::config::{MAX_HARD_TTL, MAX_RETENTION, at_most, default_hard_ttl, validate_durations};
use crate::{
    Error, Execution, ExecutionContext, FailurePolicy, Outcome, Sentinel, UncertainReason,
};

/// What [`Once::begin`] found.
#[derive(Debug)]
#[must_use = "an acquired Execution must be finished, or the key turns uncertain"]
#[non_exhaustive]
#[allow(clippy::large_enum_variant)] // returned once per call, never stored in bulk
pub enum Begin<T, E> {
    /// The key already has a record and this call does not run: a replay (`Completed`,
    /// `CompletedWithoutResult`, a recorded `Failed`), `Running` (another owner holds a live
    /// lease) or `Uncertain`.
    Settled(Outcome<T, E>),
    /// This call owns the key: do the work, then finish the handle with
    /// [`Execution::complete`], [`Execution::fail`] or [`Execution::release`].
    Acquired(Execution<T, E>),
}

/// One call of `once`, configured with builder methods and started with [`Once::run`] or
/// [`Once::begin`]. Owned (`'static`): it can move into a task, a service future or a binding.
#[derive(Debug, Clone)]
#[must_use = "a Once does nothing until `run` or `begin` is awaited"]
pub struct Once {
    sentinel: Sentinel,
    key: String,
    namespace: Option<String>,
    ttl: Option<Duration>,
    hard_ttl: Option<Duration>,
    policy: FailurePolicy,
    fingerprint: Option<Vec<u8>>,
    retain_for: Option<Duration>,
    wait: Option<Duration>,
}

/// A validated call: what the engine needs from the builder.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) namespace: String,
    pub(crate) key: String,
    pub(crate) ttl: Duration,
    pub(crate) hard_ttl: Duration,
    pub(crate) policy: FailurePolicy,
    pub(crate) fingerprint: Option<Vec<u8>>,
    pub(crate) retain_for: Option<Duration>,
    pub(crate) wait: Option<Duration>,
}

impl Once {
    pub(crate) fn new(sentinel: Sentinel, key: String) -> Self {
        Self {
            sentinel,
            key,
            namespace: None,
            ttl: None,
            hard_ttl: None,
            policy: FailurePolicy::default(),
            fingerprint: None,
            retain_for: None,
            wait: None,
        }
    }

    /// The namespace (default: the Sentinel's).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Lease length; renewed every third of it while the function runs.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Absolute lifetime from the claim (default: the larger of ttl and 1 hour).
    pub fn hard_ttl(mut self, hard_ttl: Duration) -> Self {
        self.hard_ttl = Some(hard_ttl);
        self
    }

    /// What a failing function means for the key (default: uncertain).
    pub fn on_failure(mut self, policy: FailurePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// A fingerprint of the request; a later call with another fingerprint gets
    /// [`Error::FingerprintMismatch`] instead of a replay.
    pub fn fingerprint(mut self, fingerprint: impl AsRef<[u8]>) -> Self {
        self.fingerprint = Some(fingerprint.as_ref().to_vec());
        self
    }

    /// How long the completed record is kept before `prune` may delete it.
    pub fn retain_for(mut self, retention: Duration) -> Self {
        self.retain_for = Some(retention);
        self
    }

    /// When another worker holds the key, wait up to `timeout` for it to finish and return its
    /// outcome instead of `Running`.
    pub fn wait(mut self, timeout: Duration) -> Self {
        self.wait = Some(timeout);
        self
    }

    /// The Sentinel this call runs on.
    pub fn sentinel(&self) -> &Sentinel {
        &self.sentinel
    }

    /// Checks the call as [`Once::begin`] would, without touching the store: for callers that
    /// must refuse bad input before they start anything else.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a bad key, namespace or duration.
    pub fn validate(&self) -> Result<(), Error> {
        self.plan().map(drop)
    }

    /// Checks the call against the limits and fills in the Sentinel's defaults.
    pub(crate) fn plan(&self) -> Result<Plan, Error> {
        let config = self.sentinel.config();
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| config.namespace.clone());
        crate::validate_namespace(&namespace)?;
        crate::validate_key(&self.key)?;
        let ttl = self.ttl.unwrap_or(config.ttl);
        let hard_ttl = self
            .hard_ttl
            .or(config.hard_ttl)
            .unwrap_or_else(|| default_hard_ttl(ttl));
        validate_durations(ttl, hard_ttl)?;
        if let Some(r) = self.retain_for {
            at_most("retention", r, MAX_RETENTION)?;
        }
        if let Some(w) = self.wait {
            at_most("wait timeout", w, MAX_HARD_TTL)?;
        }
        Ok(Plan {
            namespace,
            key: self.key.clone(),
            ttl,
            hard_ttl,
            policy: self.policy,
            fingerprint: self.fingerprint.clone(),
            retain_for: self.retain_for.or(config.retention),
            wait: self.wait,
        })
    }

    /// Claims the key, or reads what an earlier call left. Returns the settled outcome, or the
    /// [`Execution`] this call now owns: its heartbeat runs until the handle is finished, and
    /// dropping it unfinished leaves the key uncertain (reason `cancelled`), exactly as dropping
    /// [`Once::run`]'s future does.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a bad key, namespace or duration; [`Error::Store`] when the
    /// store fails; [`Error::FingerprintMismatch`]; [`Error::Codec`] when a stored result does
    /// not deserialize into `T` or `E`; [`Error::ShuttingDown`].
    pub async fn begin<T, E>(self) -> Result<Begin<T, E>, Error>
    where
        T: DeserializeOwned,
        E: DeserializeOwned,
    {
        let plan = self.plan()?;
        let span = tracing::info_span!(
            "sentinel.once",
            namespace = %plan.namespace,
            key = %plan.key,
            token = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        let begun = self
            .sentinel
            .claim_or_settle(plan, span.clone())
            .instrument(span.clone())
            .await?;
        match &begun {
            Begin::Settled(outcome) => {
                span.record("outcome", outcome.kind().as_str());
            }
            Begin::Acquired(execution) => {
                span.record("token", execution.fencing_token().get());
            }
        }
        Ok(begun)
    }

    /// Runs `f` unless the key already has a record, and returns the outcome. Written on
    /// [`Once::begin`]: `f`'s value completes the execution, its error fails it under the
    /// failure policy.
    ///
    /// A panic in `f` leaves the key uncertain and resumes unwinding; dropping this future while
    /// `f` runs leaves it uncertain too (reason `cancelled`).
    ///
    /// # Errors
    ///
    /// Those of [`Once::begin`], and [`Error::NotRecorded`] when `f` ran but its outcome could
    /// not be stored (the output is inside; the key is left uncertain).
    pub async fn run<F, Fut, T, E>(self, f: F) -> Result<Outcome<T, E>, Error>
    where
        F: FnOnce(ExecutionContext) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        T: Serialize + DeserializeOwned + Send + 'static,
        E: Serialize + DeserializeOwned + Send + 'static,
    {
        let execution = match self.begin::<T, E>().await? {
            Begin::Settled(outcome) => return Ok(outcome),
            Begin::Acquired(execution) => execution,
        };
        // `f` itself is called inside the catch, so a panic before its first await counts as a
        // panic too.
        let ctx = execution.context().clone();
        let work = CatchUnwind(Box::pin(async move { f(ctx).await }));
        match work.instrument(execution.span().clone()).await {
            Ok(Ok(value)) => execution.complete(value).await,
            Ok(Err(error)) => execution.fail(error).await,
            Err(panic) => {
                execution.abandon(UncertainReason::Panicked).await;
                std::panic::resume_unwind(panic)
            }
        }
    }
}

/// Catches a panic raised while polling the user's future.
pub(crate) struct CatchUnwind<F>(pub(crate) Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}
