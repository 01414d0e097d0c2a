//! What `once` returns.

use std::time::SystemTime;

use crate::{FencingToken, Owner, UncertainReason};

/// What became of a failed execution's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Disposition {
    /// Policy `uncertain` (the default), or a decision that could not be stored: the key waits
    /// for an operator.
    Uncertain,
    /// Policy `release`: the key is absent again and the next caller runs.
    Released,
    /// Policy `record`: the error is stored and replayed as `Failed` to later callers.
    Recorded,
}

/// The outcome of [`Once::run`](crate::Once::run). Errors of Sentinel itself are the `Err` side of
/// the surrounding `Result`.
#[derive(Debug)]
#[must_use]
#[non_exhaustive]
pub enum Outcome<T, E> {
    /// The function completed: this call ran it (`replayed == false`) or an earlier one did.
    Completed {
        /// The value the function returned.
        value: T,
        /// True when the value was read from the store rather than produced by this call.
        replayed: bool,
        /// The token of the execution that produced it.
        token: FencingToken,
        /// When it completed, by the store's clock.
        completed_at: SystemTime,
    },
    /// An operator resolved the key as done without storing a result. Distinct from a `()` or
    /// `None` value, which is stored.
    CompletedWithoutResult {
        /// The operator's token.
        token: FencingToken,
        /// When it was resolved.
        completed_at: SystemTime,
    },
    /// The function failed: this call ran it (`replayed == false`, `disposition` says what became
    /// of the key) or a recorded error was replayed (`replayed == true`).
    Failed {
        /// The function's error.
        error: E,
        /// True when the error was read from the store.
        replayed: bool,
        /// What became of the key.
        disposition: Disposition,
        /// The token of the execution that failed.
        token: FencingToken,
    },
    /// Another worker holds a live lease.
    Running {
        /// Who holds it.
        owner: Option<Owner>,
        /// When its lease ends unless renewed, by the store's clock.
        lease_expires_at: Option<SystemTime>,
        /// Its token.
        token: FencingToken,
    },
    /// The outcome of an earlier execution is unknown; an operator must reconcile the key.
    Uncertain {
        /// Why.
        reason: UncertainReason,
        /// The owner of the execution in doubt.
        owner: Option<Owner>,
        /// Since when, by the store's clock.
        since: SystemTime,
        /// The current token.
        token: FencingToken,
    },
}

/// The kind of an [`Outcome`], without its data: for metrics, logs and mappings (exit codes,
/// HTTP statuses) written once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OutcomeKind {
    /// This call ran the function and its value is stored.
    Completed,
    /// A stored value was replayed (or an operator resolved the key without one).
    Replayed,
    /// The function failed: in this call, or a recorded failure was replayed.
    Failed,
    /// Another worker holds a live lease.
    Running,
    /// An earlier execution's outcome is unknown.
    Uncertain,
}

impl OutcomeKind {
    /// The lowercase name used in spans and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Completed => "completed",
            OutcomeKind::Replayed => "replayed",
            OutcomeKind::Failed => "failed",
            OutcomeKind::Running => "running",
            OutcomeKind::Uncertain => "uncertain",
        }
    }
}

impl<T, E> Outcome<T, E> {
    /// What kind of outcome this is.
    pub fn kind(&self) -> OutcomeKind {
        match self {
            Outcome::Completed {
                replayed: false, ..
            } => OutcomeKind::Completed,
            Outcome::Completed { replayed: true, .. } | Outcome::CompletedWithoutResult { .. } => {
                OutcomeKind::Replayed
            }
            Outcome::Failed { .. } => OutcomeKind::Failed,
            Outcome::Running { .. } => OutcomeKind::Running,
            Outcome::Uncertain { .. } => OutcomeKind::Uncertain,
        }
    }

    /// The value of a completed execution, fresh or replayed.
    pub fn value(self) -> Option<T> {
        match self {
            Outcome::Completed { value, .. } => Some(value),
            _ => None,
        }
    }

    /// True when this call ran the function.
    pub fn ran_here(&self) -> bool {
        matches!(
            self,
            Outcome::Completed {
                replayed: false,
                ..
            } | Outcome::Failed {
                replayed: false,
                ..
            }
        )
    }

    /// The fencing token the outcome refers to.
    pub fn token(&self) -> FencingToken {
        match self {
            Outcome::Completed { token, .. }
            | Outcome::CompletedWithoutResult { token, .. }
            | Outcome::Failed { token, .. }
            | Outcome::Running { token, .. }
            | Outcome::Uncertain { token, .. } => *token,
        }
    }
}
