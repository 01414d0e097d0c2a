//! The operator transitions' admissibility rules, written once. Stores that decide in Rust
//! (memory, SQLite) call these inside their atomic step; a store that decides in SQL (PostgreSQL)
//! mirrors each one in its statement, marked `-- mirrors transition::…`. The engine calls the same
//! function on a refused record to say why it was refused, so the rule and its message cannot
//! drift apart. See `docs/design.md`, "States and transitions".

use std::time::Duration;

use crate::{FencingToken, Record, State};

/// Why a transition is refused, in an operator's words.
pub type Refusal = &'static str;

/// uncertain (stored or derived from an expired lease) → reconciling; with `force`, also
/// reconciling → reconciling (taking over from an operator who vanished).
///
/// # Errors
///
/// The refusal for a live, completed or (without `force`) reconciling record.
pub fn may_reconcile(record: &Record, force: bool) -> Result<(), Refusal> {
    match record.state {
        State::Uncertain => Ok(()),
        State::Reconciling if force => Ok(()),
        State::Reconciling => Err(
            "another operator is reconciling it; use force to take over (their token is then fenced out)",
        ),
        State::Running => Err(
            "it is running under a live lease; wait for it to finish, or for its lease to expire",
        ),
        State::Completed => Err("it is completed; use forget to let it run again"),
    }
}

/// reconciling → completed or absent; with `expected`, only while the record still carries that
/// token (so a second operator who took over is not trampled).
///
/// # Errors
///
/// The refusal for a record that is not reconciling, or that carries another token.
pub fn may_resolve(record: &Record, expected: Option<FencingToken>) -> Result<(), Refusal> {
    if record.state != State::Reconciling {
        return Err("only a reconciling record can be resolved; reconcile it first");
    }
    match expected {
        Some(t) if t != record.fencing_token => {
            Err("another operator has taken it over since the given token was handed out")
        }
        _ => Ok(()),
    }
}

/// completed → absent, by an operator.
///
/// # Errors
///
/// The refusal for a record that is not completed.
pub fn may_forget(record: &Record) -> Result<(), Refusal> {
    match record.state {
        State::Completed => Ok(()),
        State::Running => Err("it is running; only a completed record can be forgotten"),
        _ => Err("its outcome is unknown; reconcile and resolve it instead of forgetting it"),
    }
}

/// completed → absent by `prune`: a completed record whose retention has passed or, with
/// `older_than`, that completed at least that long ago (by the store's clock at
/// `record.observed_at`). Never a running, uncertain or reconciling one.
pub fn may_prune(record: &Record, older_than: Option<Duration>) -> bool {
    let now = record.observed_at;
    record.state == State::Completed
        && (record.retain_until.is_some_and(|t| t <= now)
            || older_than.is_some_and(|d| {
                record
                    .completed_at
                    .is_some_and(|c| c.checked_add(d).is_some_and(|t| t <= now))
            }))
}
