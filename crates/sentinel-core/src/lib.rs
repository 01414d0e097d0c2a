//! # sentinel-core
//!
//! The database-independent heart of Sentinel: `once(key, f)` runs `f` at most once per key across
//! competing workers and replays the stored result to every later caller. When a worker dies
//! mid-execution the key becomes *uncertain* and waits for an operator; it is never silently run
//! again.
//!
//! This crate holds the keys and outcomes, the [`Store`] trait (one atomic primitive per method),
//! the engine ([`Sentinel`]: failure policy, ambiguous commits, heartbeat, cancellation), the
//! in-memory reference store [`MemoryStore`] and the [`blocking`] facade. Most applications use
//! the `sentinel` facade crate, which adds PostgreSQL and `connect(url)`.
//!
//! Two ways to run a call: [`Once::run`] with an async function, or [`Once::begin`], which hands
//! back either the settled outcome or an [`Execution`] the caller finishes with
//! [`Execution::complete`], [`Execution::fail`] or [`Execution::release`] (for work that runs
//! elsewhere: a response body that streams, a function in another language).
//!
//! The contract (states, transitions, rules, round trips) is the repository's `docs/design.md`;
//! [`store`] says what a store must guarantee and how to add one.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod blocking;
mod cache;
mod claim;
mod coalesce;
mod config;
mod context;
mod engine;
mod error;
mod execution;
mod finish;
pub mod format;
mod heartbeat;
mod key;
mod memory;
mod metrics;
mod once;
mod operator;
mod outcome;
mod policy;
mod record;
mod runtime;
pub mod store;
mod token;
pub mod transition;
mod url;

pub use coalesce::Coalescing;
pub use config::{
    Config, MAX_HARD_TTL, MAX_RETENTION, MAX_TTL, MIN_TTL, SentinelBuilder, validate_durations,
};
pub use context::{ExecutionContext, LeaseLost};
pub use engine::{EngineStats, Sentinel};
pub use error::{BoxError, Error, NotRecorded, NotRecordedReason, StoreError, StoreErrorKind};
pub use execution::Execution;
pub use key::{
    DEFAULT_NAMESPACE, MAX_KEY_LEN, MAX_NAMESPACE_LEN, validate_identifier, validate_key,
    validate_namespace,
};
pub use memory::MemoryStore;
pub use once::{Begin, Once};
pub use outcome::{Disposition, Outcome, OutcomeKind};
pub use policy::FailurePolicy;
pub use record::{
    Event, EventKind, Record, ResultKind, State, StoredResult, StoredRow, UncertainReason,
};
pub use store::Store;
pub use token::{FencingToken, Owner};
pub use url::redact_url;

#[cfg(test)]
mod tests {
    /// Errors must work with `anyhow` and across threads.
    #[test]
    fn errors_are_send_and_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<crate::Error>();
        check::<crate::StoreError>();
    }
}
