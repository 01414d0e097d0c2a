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
//! // `sentinel::connect("postgres://…")` for PostgreSQL; the memory store needs no server.
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
//!
//! ## Stores
//!
//! | URL | store | feature |
//! | --- | --- | --- |
//! | `postgres://…`, `postgresql://…` | [`PgStore`] | `postgres` (default) |
//! | `sqlite:///abs/path.db`, `sqlite://rel.db`, `sqlite::memory:` | [`SqliteStore`] | `sqlite` (default) |
//! | `memory:` | [`MemoryStore`] (one process, nothing persists) | always |
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

use std::sync::Arc;

pub use sentinel_core::*;
#[cfg(feature = "postgres")]
pub use sentinel_postgres::{PgStore, PgStoreBuilder};

#[cfg(feature = "sqlite")]
pub use sentinel_sqlite::{SqliteStore, SqliteStoreBuilder};

/// The PostgreSQL store crate.
#[cfg(feature = "postgres")]
pub use sentinel_postgres as postgres;

/// Opens the store a URL names (see the table above), without touching its schema.
pub async fn store(url: &str) -> Result<Arc<dyn Store>, Error> {
    let scheme = url.split_once(':').map_or("", |(s, _)| s);
    match scheme {
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => Ok(Arc::new(PgStore::connect(url).await?)),
        #[cfg(not(feature = "postgres"))]
        "postgres" | "postgresql" => Err(Error::InvalidInput(
            "this build has no PostgreSQL support (enable the `postgres` feature)".into(),
        )),
        #[cfg(feature = "sqlite")]
        "sqlite" => Ok(Arc::new(
            SqliteStore::builder(SqliteStore::path_from_url(url)?)
                .open()
                .await?,
        )),
        #[cfg(not(feature = "sqlite"))]
        "sqlite" => Err(Error::InvalidInput(
            "this build has no SQLite support (enable the `sqlite` feature)".into(),
        )),
        "memory" => Ok(Arc::new(MemoryStore::new())),
        _ => Err(Error::InvalidInput(format!(
            "unknown database URL scheme in `{}`: expected postgres://, postgresql://, sqlite:// or memory:",
            redact(url)
        ))),
    }
}

/// Connects to the store a URL names and starts a [`Sentinel`] over it with default settings.
/// Run [`Sentinel::migrate`] once to create the schema.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sentinel::Error> {
/// let sentinel = sentinel::connect("memory:").await?;
/// sentinel.migrate().await?;
/// # Ok(()) }
/// ```
pub async fn connect(url: &str) -> Result<Sentinel, Error> {
    Sentinel::builder(store(url).await?).build()
}

fn redact(url: &str) -> String {
    #[cfg(feature = "postgres")]
    {
        sentinel_postgres::redact_url(url)
    }
    #[cfg(not(feature = "postgres"))]
    {
        url.split_once('@')
            .map_or_else(|| url.to_owned(), |(_, h)| format!("…@{h}"))
    }
}

/// The blocking facade: [`sentinel_core::blocking`] plus [`blocking::connect`].
pub mod blocking {
    pub use sentinel_core::blocking::*;

    /// Connects to the store a URL names, for code without an async runtime. The connection is
    /// made on a short-lived thread of its own, so this never blocks on a runtime of the caller.
    pub fn connect(url: &str) -> Result<Sentinel, crate::Error> {
        let url = url.to_owned();
        let store = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| crate::Error::InvalidInput(format!("cannot start a runtime: {e}")))?;
            rt.block_on(crate::store(&url))
        })
        .join()
        .map_err(|_| crate::Error::InvalidInput("connect panicked".into()))??;
        Ok(Sentinel::new(crate::Sentinel::builder(store).build()?))
    }
}
