//! What a store holds: records, their states, and the event log.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::{FencingToken, Owner};

/// The state of an execution record, as seen with the store's clock.
///
/// A key with no record is *absent*; it has no variant here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum State {
    /// An owner holds a live lease.
    Running,
    /// The owner died, failed under the default policy, was cancelled or passed its ceiling: the
    /// outcome is unknown until an operator reconciles the key.
    Uncertain,
    /// A result (or a recorded error) is stored and replayed.
    Completed,
    /// An operator took ownership to reconcile the key.
    Reconciling,
}

impl State {
    /// The lowercase name used in storage, the CLI and JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Uncertain => "uncertain",
            State::Completed => "completed",
            State::Reconciling => "reconciling",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for State {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "running" => State::Running,
            "uncertain" => State::Uncertain,
            "completed" => State::Completed,
            "reconciling" => State::Reconciling,
            other => {
                return Err(crate::Error::invalid(format!(
                    "unknown state `{other}` (expected running, uncertain, completed or reconciling)"
                )));
            }
        })
    }
}

/// Why a key is uncertain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum UncertainReason {
    /// The lease expired: the owner died, hung or was partitioned away.
    OwnerDied,
    /// The function returned an error under the default failure policy.
    Failed,
    /// The function panicked.
    Panicked,
    /// The `once` future was dropped while the function ran.
    Cancelled,
    /// The hard ceiling passed before the execution finished.
    CeilingPassed,
    /// The function finished but its outcome could not be stored.
    NotRecorded,
    /// An operator is reconciling the key.
    Reconciling,
}

impl UncertainReason {
    /// The snake_case name used in storage and JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            UncertainReason::OwnerDied => "owner_died",
            UncertainReason::Failed => "failed",
            UncertainReason::Panicked => "panicked",
            UncertainReason::Cancelled => "cancelled",
            UncertainReason::CeilingPassed => "ceiling_passed",
            UncertainReason::NotRecorded => "not_recorded",
            UncertainReason::Reconciling => "reconciling",
        }
    }

    /// Parses a stored reason; unknown text (from a newer version) reads as `OwnerDied`, the most
    /// conservative reading.
    pub fn parse(s: &str) -> Self {
        match s {
            "failed" => UncertainReason::Failed,
            "panicked" => UncertainReason::Panicked,
            "cancelled" => UncertainReason::Cancelled,
            "ceiling_passed" => UncertainReason::CeilingPassed,
            "not_recorded" => UncertainReason::NotRecorded,
            "reconciling" => UncertainReason::Reconciling,
            _ => UncertainReason::OwnerDied,
        }
    }
}

impl fmt::Display for UncertainReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a stored result is the function's value or its recorded error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ResultKind {
    /// The function's value; replayed as `Completed`.
    Value,
    /// An error recorded under policy `record`; replayed as `Failed`.
    Error,
}

impl ResultKind {
    /// The name used in storage.
    pub const fn as_str(self) -> &'static str {
        match self {
            ResultKind::Value => "value",
            ResultKind::Error => "error",
        }
    }

    /// Parses a stored kind.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "value" => Some(ResultKind::Value),
            "error" => Some(ResultKind::Error),
            _ => None,
        }
    }
}

/// A stored result: JSON text plus its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredResult {
    /// Value or recorded error.
    pub kind: ResultKind,
    /// The JSON document as stored.
    pub json: String,
}

impl StoredResult {
    /// Builds a stored result.
    pub fn new(kind: ResultKind, json: impl Into<String>) -> Self {
        Self {
            kind,
            json: json.into(),
        }
    }
}

/// One execution record, as read from a store at `observed_at` (the store's clock).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Record {
    /// Namespace of the record.
    pub namespace: String,
    /// Key of the record.
    pub key: String,
    /// State derived with the store's clock (an expired running lease reads as uncertain).
    pub state: State,
    /// Current fencing token.
    pub fencing_token: FencingToken,
    /// The worker that claimed the current execution, if any.
    pub owner: Option<Owner>,
    /// The operator who is reconciling or resolved the key, if any.
    pub operator: Option<String>,
    /// Fingerprint stored at claim.
    pub fingerprint: Option<Vec<u8>>,
    /// When the lease ends (running) or ended.
    pub lease_expires_at: Option<SystemTime>,
    /// The hard ceiling of the execution.
    pub hard_expires_at: Option<SystemTime>,
    /// When the record was created.
    pub created_at: SystemTime,
    /// When the record last changed.
    pub updated_at: SystemTime,
    /// When the record completed.
    pub completed_at: Option<SystemTime>,
    /// Until when a completed record is retained; `None` keeps it until forgotten.
    pub retain_until: Option<SystemTime>,
    /// Why the record is uncertain (stored, or derived from an expired lease).
    pub reason: Option<UncertainReason>,
    /// The stored result of a completed record.
    pub result: Option<StoredResult>,
    /// The store's clock when the record was read.
    pub observed_at: SystemTime,
}

impl Record {
    /// Derives the visible state of a stored row with the store's clock `now`: a running row whose
    /// lease has expired reads as uncertain (owner died, or ceiling passed). Every store uses this
    /// one rule (PostgreSQL mirrors it in SQL for filtering).
    pub fn derive_state(
        stored: State,
        stored_reason: Option<UncertainReason>,
        lease_expires_at: Option<SystemTime>,
        hard_expires_at: Option<SystemTime>,
        now: SystemTime,
    ) -> (State, Option<UncertainReason>) {
        match stored {
            State::Running if lease_expires_at.is_none_or(|l| l <= now) => {
                let reason = if hard_expires_at.is_some_and(|h| h <= now) {
                    UncertainReason::CeilingPassed
                } else {
                    UncertainReason::OwnerDied
                };
                (State::Uncertain, Some(reason))
            }
            State::Reconciling => (State::Reconciling, Some(UncertainReason::Reconciling)),
            other => (other, stored_reason),
        }
    }

    /// Since when the record is uncertain: the lease expiry for a derived state, else the last
    /// update.
    pub fn uncertain_since(&self) -> SystemTime {
        match self.reason {
            Some(UncertainReason::OwnerDied | UncertainReason::CeilingPassed) => {
                self.lease_expires_at.unwrap_or(self.updated_at)
            }
            _ => self.updated_at,
        }
    }
}

/// A row as a store holds it, before its state is derived with the store's clock. Stores build
/// it and turn it into a [`Record`] with [`StoredRow::into_record`]; it has no `non_exhaustive`
/// marker on purpose, so that stores outside this crate can build it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRow {
    /// Namespace of the record.
    pub namespace: String,
    /// Key of the record.
    pub key: String,
    /// The state as stored (a running row may have an expired lease).
    pub state: State,
    /// Current fencing token.
    pub fencing_token: FencingToken,
    /// The worker that claimed the current execution.
    pub owner: Option<Owner>,
    /// The operator reconciling or having resolved the key.
    pub operator: Option<String>,
    /// Fingerprint stored at claim.
    pub fingerprint: Option<Vec<u8>>,
    /// Lease end.
    pub lease_expires_at: Option<SystemTime>,
    /// Hard ceiling.
    pub hard_expires_at: Option<SystemTime>,
    /// Creation time.
    pub created_at: SystemTime,
    /// Last change.
    pub updated_at: SystemTime,
    /// Completion time.
    pub completed_at: Option<SystemTime>,
    /// Retention end.
    pub retain_until: Option<SystemTime>,
    /// Stored uncertain reason.
    pub reason: Option<UncertainReason>,
    /// Stored result.
    pub result: Option<StoredResult>,
}

impl StoredRow {
    /// The row a claim inserts: running under `token`, owned by the requester, its lease and
    /// ceiling dated from `now` (the store's clock).
    pub fn claimed(
        request: &crate::store::ClaimRequest,
        token: FencingToken,
        now: SystemTime,
    ) -> Self {
        let after = |d| now.checked_add(d).unwrap_or(now + crate::MAX_RETENTION);
        Self {
            namespace: request.namespace.clone(),
            key: request.key.clone(),
            state: State::Running,
            fencing_token: token,
            owner: Some(request.owner.clone()),
            operator: None,
            fingerprint: request.fingerprint.clone(),
            lease_expires_at: Some(after(request.ttl)),
            hard_expires_at: Some(after(request.hard_ttl)),
            created_at: now,
            updated_at: now,
            completed_at: None,
            retain_until: None,
            reason: None,
            result: None,
        }
    }

    /// The record as seen at `now`, the store's clock.
    pub fn into_record(self, now: SystemTime) -> Record {
        let (state, reason) = Record::derive_state(
            self.state,
            self.reason,
            self.lease_expires_at,
            self.hard_expires_at,
            now,
        );
        Record {
            namespace: self.namespace,
            key: self.key,
            state,
            fencing_token: self.fencing_token,
            owner: self.owner,
            operator: self.operator,
            fingerprint: self.fingerprint,
            lease_expires_at: self.lease_expires_at,
            hard_expires_at: self.hard_expires_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
            completed_at: self.completed_at,
            retain_until: self.retain_until,
            reason,
            result: self.result,
            observed_at: now,
        }
    }
}

/// The kind of a stored transition in the event log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// absent → running.
    Acquired,
    /// running → completed with a value.
    Completed,
    /// running → completed with a recorded error.
    Failed,
    /// running → absent (policy `release`).
    Released,
    /// running → uncertain (stored).
    Uncertain,
    /// uncertain/reconciling → reconciling.
    Reconciling,
    /// reconciling → completed.
    Resolved,
    /// reconciling → absent.
    Reset,
    /// completed → absent by an operator.
    Forgotten,
    /// completed → absent after retention.
    Pruned,
}

impl EventKind {
    /// The snake_case name used in storage and JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::Acquired => "acquired",
            EventKind::Completed => "completed",
            EventKind::Failed => "failed",
            EventKind::Released => "released",
            EventKind::Uncertain => "uncertain",
            EventKind::Reconciling => "reconciling",
            EventKind::Resolved => "resolved",
            EventKind::Reset => "reset",
            EventKind::Forgotten => "forgotten",
            EventKind::Pruned => "pruned",
        }
    }

    /// Parses a stored event name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "acquired" => EventKind::Acquired,
            "completed" => EventKind::Completed,
            "failed" => EventKind::Failed,
            "released" => EventKind::Released,
            "uncertain" => EventKind::Uncertain,
            "reconciling" => EventKind::Reconciling,
            "resolved" => EventKind::Resolved,
            "reset" => EventKind::Reset,
            "forgotten" => EventKind::Forgotten,
            "pruned" => EventKind::Pruned,
            _ => return None,
        })
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of the append-only event log.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The token in force after the transition (the token of the writer for removals).
    pub fencing_token: FencingToken,
    /// The worker involved, for worker transitions.
    pub owner: Option<Owner>,
    /// The operator, for operator transitions.
    pub actor: Option<String>,
    /// Why: the uncertain reason, or the operator's stated reason.
    pub reason: Option<String>,
    /// When, by the store's clock.
    pub at: SystemTime,
}

impl Event {
    /// Builds an event.
    pub fn new(
        kind: EventKind,
        fencing_token: FencingToken,
        owner: Option<Owner>,
        actor: Option<String>,
        reason: Option<String>,
        at: SystemTime,
    ) -> Self {
        Self {
            kind,
            fencing_token,
            owner,
            actor,
            reason,
            at,
        }
    }
}
