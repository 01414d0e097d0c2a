//! # sentinel-testkit
//!
//! What every Sentinel store is tested with: the [`conformance`] suite (one function per rule of
//! the contract, instantiated per store with [`conformance_tests!`]), the fault-injecting
//! [`FaultStore`] decorator, and a loopback TCP [`proxy`] that counts PostgreSQL protocol messages
//! on the wire and can cut a connection after a statement reached the server.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod conformance;
mod fault;
pub mod model;
pub mod proxy;
pub mod race;
mod support;

pub use fault::{FaultStore, Faults};
pub use support::{
    assert_uncertain_after_expiry, hold, run_counted, test_database_url, unique_name,
};

/// The property-testing crate the model and the fuzz tests use, re-exported for the test crates.
pub use proptest;
#[doc(hidden)]
pub use sentinel_core as __core;

/// True when tests run in CI (`CI=true`), where a missing server is a failure, not a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}
