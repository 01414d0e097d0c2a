//! # sentinel-sqlite
//!
//! [`SqliteStore`]: Sentinel's embedded default, for one host — cron jobs, startup jobs and worker
//! processes on one machine, with no server. It gives the same guarantees as PostgreSQL on that
//! machine: claims are atomic across processes, fencing tokens strictly increase (the counter
//! lives in the database), and a killed process leaves its keys uncertain after their ttl.
//!
//! * WAL journal, `synchronous=FULL`, a busy timeout set before anything else, and
//!   `BEGIN IMMEDIATE` for every write transaction (a deferred transaction that upgrades to a
//!   write fails with `SQLITE_BUSY` without honouring the timeout).
//! * Replays take no write lock: a claim reads first and opens a write transaction only when the
//!   key is absent, re-checking inside it.
//! * Times are integer milliseconds of the host clock, read by SQLite inside each transaction.
//!   A jump of the wall clock can shorten or lengthen leases.
//! * SQLite work runs on the store's own threads, never on the async runtime.
//!
//! Not for: several hosts, or a database file on a network filesystem (NFS, SMB), whose locking
//! SQLite cannot rely on. Use PostgreSQL there.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod builder;
mod dispatch;
mod error;
mod row;
mod schema;
mod store;

pub use builder::SqliteStoreBuilder;
pub use schema::SCHEMA_VERSION;
pub use store::SqliteStore;
