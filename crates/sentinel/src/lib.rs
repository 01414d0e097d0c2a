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
//! A URL names its store ([`Scheme`]); [`connect`] opens it with defaults, [`open`] with
//! [`OpenOptions`].
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

/// The stores a database URL can name: the one registry the facade, the CLI and the bindings
/// open stores through. Adding a store is a variant here and an arm in [`open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Scheme {
    /// `postgres://…` or `postgresql://…`: [`PgStore`].
    Postgres,
    /// `sqlite:///abs/path.db`, `sqlite://rel.db`, `sqlite::memory:`: [`SqliteStore`].
    Sqlite,
    /// `memory:`: [`MemoryStore`], one process, nothing persists.
    Memory,
}

impl Scheme {
    /// Every scheme, in the order messages list them.
    pub const ALL: &'static [Scheme] = &[Scheme::Postgres, Scheme::Sqlite, Scheme::Memory];

    /// The URL prefixes of this scheme.
    pub const fn prefixes(self) -> &'static [&'static str] {
        match self {
            Scheme::Postgres => &["postgres://", "postgresql://"],
            Scheme::Sqlite => &["sqlite://", "sqlite::memory:"],
            Scheme::Memory => &["memory:"],
        }
    }

    /// The store's name, for messages.
    pub const fn store_name(self) -> &'static str {
        match self {
            Scheme::Postgres => "PostgreSQL",
            Scheme::Sqlite => "SQLite",
            Scheme::Memory => "memory",
        }
    }

    /// Whether this build can open it (the `postgres` and `sqlite` features).
    pub const fn is_available(self) -> bool {
        match self {
            Scheme::Postgres => cfg!(feature = "postgres"),
            Scheme::Sqlite => cfg!(feature = "sqlite"),
            Scheme::Memory => true,
        }
    }

    /// Which store `url` names.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for any other URL, listing the schemes (the URL shown without its
    /// password).
    pub fn parse(url: &str) -> Result<Scheme, Error> {
        Scheme::ALL
            .iter()
            .copied()
            .find(|s| s.prefixes().iter().any(|p| url.starts_with(p)))
            .ok_or_else(|| {
                let known: Vec<&str> = Scheme::ALL
                    .iter()
                    .flat_map(|s| s.prefixes().iter().copied())
                    .collect();
                Error::invalid_input(format!(
                    "unknown database URL `{}`: expected one of {}",
                    redact_url(url),
                    known.join(", ")
                ))
            })
    }

    /// True when what `url` names lives and dies with one process (`memory:`,
    /// `sqlite::memory:`), so that nothing would be shared between runs.
    pub fn is_process_local(self, url: &str) -> bool {
        match self {
            Scheme::Memory => true,
            Scheme::Sqlite => matches!(url, "sqlite::memory:" | "sqlite://:memory:"),
            Scheme::Postgres => false,
        }
    }
}

/// What [`open`] does with a store's schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SchemaSetup {
    /// Nothing: the first statement finds out (the default, as [`connect`] does).
    #[default]
    Leave,
    /// Check that it exists at this build's version (PostgreSQL), so that a missing one is
    /// reported at start with what to run.
    Check,
    /// Create or upgrade it (idempotent).
    Migrate,
}

/// How [`open`] opens a store.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct OpenOptions {
    /// PostgreSQL schema holding Sentinel's tables (default `sentinel`).
    pub pg_schema: Option<String>,
    /// Connections in the store's pool (PostgreSQL, default 16) or threads (SQLite, default 4).
    pub pool_size: Option<usize>,
    /// What to do with the schema.
    pub schema: SchemaSetup,
}

impl OpenOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`OpenOptions::pg_schema`].
    #[must_use]
    pub fn pg_schema(mut self, schema: impl Into<String>) -> Self {
        self.pg_schema = Some(schema.into());
        self
    }

    /// Sets [`OpenOptions::pool_size`].
    #[must_use]
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = Some(size);
        self
    }

    /// Sets [`OpenOptions::schema`].
    #[must_use]
    pub fn schema(mut self, setup: SchemaSetup) -> Self {
        self.schema = setup;
        self
    }
}

/// Opens the store a URL names (see [`Scheme`]) with `options`.
///
/// # Errors
///
/// [`Error::InvalidInput`] for an unknown scheme, one this build lacks, or a bad URL or option;
/// [`Error::Store`] when the store cannot be reached or (with [`SchemaSetup::Check`]) has no
/// schema at this version.
pub async fn open(url: &str, options: &OpenOptions) -> Result<Arc<dyn Store>, Error> {
    let scheme = Scheme::parse(url)?;
    if !scheme.is_available() {
        return Err(Error::invalid_input(format!(
            "this build has no {} support (enable the `{}` feature)",
            scheme.store_name(),
            scheme.store_name().to_lowercase()
        )));
    }
    let store: Arc<dyn Store> = match scheme {
        #[cfg(feature = "postgres")]
        Scheme::Postgres => {
            let mut builder = PgStore::builder().url(url);
            if let Some(schema) = &options.pg_schema {
                builder = builder.schema(schema);
            }
            if let Some(size) = options.pool_size {
                builder = builder.pool_size(size);
            }
            let store = builder.build().await?;
            if options.schema == SchemaSetup::Check {
                store.check_schema().await?;
            }
            Arc::new(store)
        }
        #[cfg(feature = "sqlite")]
        Scheme::Sqlite => {
            let mut builder = SqliteStore::builder(SqliteStore::path_from_url(url)?);
            if let Some(size) = options.pool_size {
                builder = builder.threads(size);
            }
            Arc::new(builder.build().await?)
        }
        Scheme::Memory if url == "memory:" => Arc::new(MemoryStore::new()),
        _ => {
            return Err(Error::invalid_input(format!(
                "`{}` is not a {} URL",
                redact_url(url),
                scheme.store_name()
            )));
        }
    };
    if options.schema == SchemaSetup::Migrate {
        store.migrate().await?;
    }
    Ok(store)
}

/// Opens the store a URL names (see [`Scheme`]) with default options, without touching its
/// schema.
///
/// # Errors
///
/// Those of [`open`].
pub async fn store(url: &str) -> Result<Arc<dyn Store>, Error> {
    open(url, &OpenOptions::default()).await
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
///
/// # Errors
///
/// Those of [`open`], and [`Error::Internal`] when Sentinel's thread cannot start.
pub async fn connect(url: &str) -> Result<Sentinel, Error> {
    Sentinel::builder(store(url).await?).build()
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
