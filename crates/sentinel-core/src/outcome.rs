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

impl<T, E> Outcome<T, E> {
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
