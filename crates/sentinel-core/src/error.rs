//! Errors. Running, uncertain and failed are outcomes, not errors; `Err` is for an unreachable
//! store, a missing schema, bad input, a codec failure, a fingerprint mismatch or a result that
//! could not be recorded.

use std::any::Any;
use std::fmt;

use crate::{FencingToken, State};

/// A boxed error source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong in a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The store could not be reached, or the connection failed before the statement was sent.
    /// Nothing was written; retrying is safe.
    Unavailable,
    /// The statement may or may not have committed (the connection dropped after it was sent).
    Ambiguous,
    /// The store's schema is missing or from another version.
    Schema,
    /// The store is busy (lock timeout); nothing was written.
    Busy,
    /// Anything else: a bug, a constraint violation, corrupt data.
    Other,
}

/// An error from a store, saying whether it is transient and whether a commit may have happened.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    kind: StoreErrorKind,
    message: String,
    #[source]
    source: Option<BoxError>,
}

impl StoreError {
    /// Builds a store error.
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Nothing was written and retrying is safe: the store could not be reached, or the connection
    /// failed before the statement was sent.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StoreErrorKind::Unavailable, message)
    }

    /// The statement may or may not have committed (no reply arrived after it was sent).
    pub fn ambiguous(message: impl Into<String>) -> Self {
        Self::new(StoreErrorKind::Ambiguous, message)
    }

    /// The store is busy (a lock stayed taken); nothing was written.
    pub fn busy(message: impl Into<String>) -> Self {
        Self::new(StoreErrorKind::Busy, message)
    }

    /// The store's schema is missing or from another version.
    pub fn schema(message: impl Into<String>) -> Self {
        Self::new(StoreErrorKind::Schema, message)
    }

    /// Anything else: a bug, a constraint violation, data the store cannot read.
    pub fn other(message: impl Into<String>) -> Self {
        Self::new(StoreErrorKind::Other, message)
    }

    /// Attaches the underlying cause.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The kind of failure.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// True when the statement may have committed although no reply arrived.
    pub fn is_ambiguous(&self) -> bool {
        self.kind == StoreErrorKind::Ambiguous
    }

    /// True when trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            StoreErrorKind::Unavailable | StoreErrorKind::Ambiguous | StoreErrorKind::Busy
        )
    }
}

/// Why an outcome could not be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotRecordedReason {
    /// Another owner (an operator) holds a newer token: our write was fenced out.
    Fenced,
    /// The store did not confirm the write and re-reading could not settle it.
    Unconfirmed,
    /// The result is larger than the configured limit.
    TooLarge,
    /// The result could not be serialized.
    Codec,
}

/// The function ran but its outcome is not stored. The key is (or will turn) uncertain. Carries
/// the fencing token and what the function produced, so the caller can act on it.
pub struct NotRecorded {
    /// Token the function ran under.
    pub token: FencingToken,
    /// Why the outcome is not stored.
    pub reason: NotRecordedReason,
    /// Human-readable detail.
    pub detail: String,
    // In a mutex so that the error is `Sync` (usable with anyhow) without requiring `T: Sync`.
    payload: std::sync::Mutex<Option<Box<dyn Any + Send>>>,
}

impl NotRecorded {
    pub(crate) fn new(
        token: FencingToken,
        reason: NotRecordedReason,
        detail: impl Into<String>,
        payload: Option<Box<dyn Any + Send>>,
    ) -> Self {
        Self {
            token,
            reason,
            detail: detail.into(),
            payload: std::sync::Mutex::new(payload),
        }
    }

    /// Takes what the function returned: `Result<T, E>` as the function produced it. Returns
    /// `None` when already taken or when `R` is not that type.
    pub fn take_output<R: 'static>(&mut self) -> Option<R> {
        let slot = self
            .payload
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let payload = slot.take()?;
        match payload.downcast::<R>() {
            Ok(v) => Some(*v),
            Err(p) => {
                *slot = Some(p);
                None
            }
        }
    }
}

impl fmt::Debug for NotRecorded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotRecorded")
            .field("token", &self.token)
            .field("reason", &self.reason)
            .field("detail", &self.detail)
            .finish_non_exhaustive()
    }
}

/// The error type of every Sentinel operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad input from the caller (empty key, `hard_ttl < ttl`, …).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The store failed.
    #[error("store error: {0}")]
    Store(#[from] StoreError),
    /// A stored result does not deserialize into the requested type, or a value does not
    /// serialize.
    #[error("codec error: {0}")]
    Codec(String),
    /// The key was used with a different payload fingerprint.
    #[error("fingerprint mismatch for {namespace}/{key}: the key was used with another payload")]
    FingerprintMismatch {
        /// Namespace of the key.
        namespace: String,
        /// The key.
        key: String,
    },
    /// The function ran but its outcome could not be stored; the key is left uncertain.
    #[error("outcome not recorded (token {}, {:?}): {}", .0.token, .0.reason, .0.detail)]
    NotRecorded(Box<NotRecorded>),
    /// No record exists for the key.
    #[error("no record for {namespace}/{key}")]
    NotFound {
        /// Namespace of the key.
        namespace: String,
        /// The key.
        key: String,
    },
    /// An operator action was refused because the record is in another state, or (with a token
    /// check) another operator has taken over.
    #[error("refused: {namespace}/{key} is {state} with token {token}; {why}")]
    Refused {
        /// Namespace of the key.
        namespace: String,
        /// The key.
        key: String,
        /// Its current state.
        state: State,
        /// Its current token.
        token: FencingToken,
        /// What the action needed.
        why: String,
    },
    /// The Sentinel is shutting down and accepts no new work.
    #[error("sentinel is shutting down")]
    ShuttingDown,
    /// Sentinel itself failed: a thread or runtime could not start, a task panicked.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Bad input from the caller, with a message that says what is wrong and what would do.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Error::InvalidInput(message.into())
    }

    /// A failure of Sentinel itself (not of the store, not of the input).
    pub fn internal(message: impl Into<String>) -> Self {
        Error::Internal(message.into())
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Self::invalid_input(msg)
    }

    pub(crate) fn refused(record: &crate::Record, why: impl Into<String>) -> Self {
        Error::Refused {
            namespace: record.namespace.clone(),
            key: record.key.clone(),
            state: record.state,
            token: record.fencing_token,
            why: why.into(),
        }
    }
}
