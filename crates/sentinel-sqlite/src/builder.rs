//! [`SqliteStoreBuilder`]: checks the path, opens one connection per thread (plus the
//! heartbeat's), and creates the schema.

use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use sentinel_core::{Error, StoreError};

use crate::dispatch::Dispatch;
use crate::error::{is_busy, map};
use crate::row::Conn;
use crate::schema;
use crate::store::SqliteStore;

/// Builds a [`SqliteStore`]; [`SqliteStoreBuilder::build`] opens it.
#[derive(Debug, Clone)]
#[must_use = "a SqliteStoreBuilder does nothing until `build` is awaited"]
pub struct SqliteStoreBuilder {
    path: String,
    threads: usize,
    busy_timeout: Duration,
    synchronous_full: bool,
}

/// The job queues of the store's threads.
pub(crate) struct Workers {
    pub(crate) jobs: Arc<Dispatch>,
    pub(crate) heartbeat_jobs: Arc<Dispatch>,
}

impl SqliteStoreBuilder {
    pub(crate) fn new(path: String) -> Self {
        Self {
            path,
            threads: 4,
            busy_timeout: Duration::from_secs(5),
            synchronous_full: true,
        }
    }

    /// Number of connections (threads) serving the store (default 4; 1 for `:memory:`).
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// How long a statement waits for another process's lock (default 5 s).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// `synchronous=NORMAL` instead of `FULL`: faster commits, but a power loss (not a process
    /// crash) may lose the last transactions — a claim reported committed could vanish and its
    /// key run again. Off by default.
    pub fn synchronous_normal(mut self, normal: bool) -> Self {
        self.synchronous_full = !normal;
        self
    }

    fn in_memory(&self) -> bool {
        self.path == ":memory:"
    }

    /// Opens the database, creating the file, its directory and its schema when missing.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a zero thread count, a directory where the file should be,
    /// or a file that cannot switch to WAL; [`Error::Store`] when the file cannot be opened or
    /// created, is not a SQLite database, or has a newer schema.
    pub async fn build(self) -> Result<SqliteStore, Error> {
        if self.threads == 0 {
            return Err(Error::invalid_input("thread count must be positive"));
        }
        self.check_path()?;
        let workers = self.spawn_workers().await?;
        let store = SqliteStore::new(workers, self.path.clone());
        let path = self.path;
        store
            .run(move |conn| match schema::migrate(conn) {
                Ok(schema::Outcome::Ready) => Ok(()),
                Ok(schema::Outcome::Newer(v)) => Err(StoreError::schema(format!(
                    "{path} has schema version {v}, newer than this build knows ({}); \
                     upgrade Sentinel",
                    schema::SCHEMA_VERSION
                ))),
                Err(e) => Err(map(&path, "create schema", &e)),
            })
            .await?;
        Ok(store)
    }

    /// Same as [`SqliteStoreBuilder::build`].
    ///
    /// # Errors
    ///
    /// Those of [`SqliteStoreBuilder::build`].
    pub async fn open(self) -> Result<SqliteStore, Error> {
        self.build().await
    }

    /// Creates the file's directory; refuses a directory where the file should be.
    fn check_path(&self) -> Result<(), Error> {
        if self.in_memory() {
            return Ok(());
        }
        let path = Path::new(&self.path);
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::Store(StoreError::unavailable(format!(
                    "cannot create the directory {} for the SQLite database: {e}",
                    dir.display()
                )))
            })?;
        }
        if path.is_dir() {
            return Err(Error::invalid_input(format!(
                "{} is a directory, not a SQLite database file",
                self.path
            )));
        }
        Ok(())
    }

    /// Starts one thread per connection, sharing a job queue (last idle first), and one more with its own queue
    /// for the heartbeat, so that renewals never queue behind claims waiting for another
    /// process's lock (a private in-memory database has only one connection, which it then
    /// shares). Returns once every connection opened; the first error is the user's.
    async fn spawn_workers(&self) -> Result<Workers, Error> {
        let memory = self.in_memory();
        let threads = if memory { 1 } else { self.threads };
        let jobs = Arc::new(Dispatch::default());
        let heartbeat_jobs = if memory {
            jobs.clone()
        } else {
            Arc::new(Dispatch::default())
        };
        let queues = std::iter::repeat_n(jobs.clone(), threads)
            .chain((!memory).then(|| heartbeat_jobs.clone()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let writes = Arc::new(Mutex::new(()));
        let mut started = 0;
        for (i, rx) in queues.enumerate() {
            let (ready_tx, settings, writes) = (ready_tx.clone(), self.clone(), writes.clone());
            std::thread::Builder::new()
                .name(format!("sentinel-sqlite-{i}"))
                .spawn(move || match settings.connect() {
                    Ok(conn) => {
                        let _ = ready_tx.send(Ok(()));
                        rx.serve(Conn::new(conn, writes));
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                })
                .map_err(|e| Error::internal(format!("cannot start a SQLite thread: {e}")))?;
            started += 1;
        }
        drop(ready_tx);
        let ready = tokio::task::spawn_blocking(move || {
            (0..started).try_for_each(|_| {
                ready_rx.recv().unwrap_or_else(|_| {
                    Err(Error::internal(
                        "a SQLite thread died while opening the database",
                    ))
                })
            })
        });
        ready
            .await
            .map_err(|e| Error::internal(format!("SQLite start-up failed: {e}")))??;
        Ok(Workers {
            jobs,
            heartbeat_jobs,
        })
    }

    fn connect(&self) -> Result<Connection, Error> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let fail = |what: &str, e: rusqlite::Error| Error::Store(map(&self.path, what, &e));
        let conn = Connection::open_with_flags(&self.path, flags).map_err(|e| fail("open", e))?;
        // The busy timeout first: switching to WAL itself may wait for another process.
        conn.busy_timeout(self.busy_timeout)
            .map_err(|e| fail("busy_timeout", e))?;
        if !self.in_memory() {
            // Switching to WAL needs a moment alone with the file and does not wait on the busy
            // handler, so connections opening a new file together retry it. WAL is persistent:
            // once one connection switched, the others find it set.
            let deadline = std::time::Instant::now() + self.busy_timeout;
            let mut pause = Duration::from_millis(1);
            let mode = loop {
                match conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0)) {
                    Ok(mode) => break mode,
                    Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                        std::thread::sleep(pause);
                        pause = (pause * 2).min(Duration::from_millis(50));
                    }
                    Err(e) => return Err(fail("enable WAL", e)),
                }
            };
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(Error::invalid_input(format!(
                    "{}: cannot switch to WAL (journal mode stays {mode})",
                    self.path
                )));
            }
        }
        let sync = if self.synchronous_full {
            "FULL"
        } else {
            "NORMAL"
        };
        conn.pragma_update(None, "synchronous", sync)
            .map_err(|e| fail("set synchronous", e))?;
        Ok(conn)
    }
}
