//! # Sentinel
//!
//! `once(key, f)` runs `f` at most once per key across any number of competing workers and
//! processes, and replays the stored result to every later caller. Leases are kept alive by a
//! heartbeat up to a hard ceiling; every ownership change hands out a larger fencing token and
//! every write is fenced by it. When a worker dies mid-execution the key becomes *uncertain* —
//! never silently re-run — until an operator reconciles it.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sentinel::Error> {
//! use std::time::Duration;
//! use sentinel::{MemoryStore, Outcome, Sentinel};
//!
//! let sentinel = Sentinel::builder(MemoryStore::new()).build()?;
//! let outcome = sentinel
//!     .once("payment-order-789")
//!     .namespace("payments")
//!     .ttl(Duration::from_secs(3))
//!     .run(|ctx| async move {
//!         // charge the card, passing ctx.fencing_token() downstream
//!         Ok::<_, String>(format!("charged under token {}", ctx.fencing_token()))
//!     })
//!     .await?;
//! match outcome {
//!     Outcome::Completed { value, replayed, .. } => println!("{value} (replayed: {replayed})"),
//!     Outcome::Failed { error, disposition, .. } => println!("failed: {error}, key {disposition:?}"),
//!     Outcome::Running { owner, .. } => println!("someone else is on it: {owner:?}"),
//!     Outcome::Uncertain { reason, .. } => println!("needs an operator: {reason}"),
//!     other => println!("{other:?}"),
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub use sentinel_core::*;
