//! # sentinel-postgres
//!
//! [`PgStore`]: Sentinel's primary store, on PostgreSQL through tokio-postgres and
//! deadpool-postgres.
//!
//! * Tables live in their own schema (default `sentinel`, validated as an identifier); every
//!   statement is schema-qualified. [`PgStore::migrate`] creates or upgrades it: embedded,
//!   versioned, checksummed migrations under an advisory lock.
//! * Every time comparison uses the server's clock (`now()`) inside the statement.
//! * Round trips: a fresh `once` is two statements (claim, completion), a replay one, a heartbeat
//!   tick one for all executions in flight; events are written by the same statements.
//! * Sentinel's own connections run with `synchronous_commit = on`; a pool handed in is checked
//!   and refused when it is `off` unless [`PgStoreBuilder::allow_async_commit`] says otherwise.
//!   A failover to an asynchronous replica can still lose a committed claim.
//! * The heartbeat uses a reserved connection, waiters a dedicated `LISTEN` connection.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod builder;
mod connect;
mod error;
mod listen;
mod migrate;
mod row;
mod sql;
mod store;

pub use builder::PgStoreBuilder;
pub use migrate::SCHEMA_VERSION;
pub use sentinel_core::redact_url;
pub use store::PgStore;

pub(crate) use connect::PgConnector;

/// Re-exports of the driver crates, so applications can build a pool or config of the same
/// versions.
pub mod reexports {
    pub use deadpool_postgres;
    pub use tokio_postgres;
}
