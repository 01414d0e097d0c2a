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
//! The contract (states, transitions, rules) is in the project's `DESIGN.md`.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod blocking;
mod cache;
mod coalesce;
mod context;
mod engine;
mod error;
mod heartbeat;
mod key;
mod memory;
mod metrics;
mod outcome;
mod record;
mod runtime;
pub mod store;
mod token;

pub use coalesce::Coalescing;
pub use context::{ExecutionContext, LeaseLost};
pub use engine::{
    Config, EngineStats, FailurePolicy, MAX_HARD_TTL, MAX_RETENTION, MAX_TTL, MIN_TTL, Once,
    Sentinel, SentinelBuilder,
};
pub use error::{BoxError, Error, NotRecorded, NotRecordedReason, StoreError, StoreErrorKind};
pub use key::{
    DEFAULT_NAMESPACE, MAX_KEY_LEN, MAX_NAMESPACE_LEN, validate_identifier, validate_key,
    validate_namespace,
};
pub use memory::MemoryStore;
pub use outcome::{Disposition, Outcome};
pub use record::{
    Event, EventKind, Record, ResultKind, State, StoredResult, StoredRow, UncertainReason,
};
pub use store::Store;
pub use token::{FencingToken, Owner};

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
