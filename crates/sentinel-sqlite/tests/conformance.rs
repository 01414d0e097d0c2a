//! The conformance suite against SQLite files (each test in a database of its own).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use sentinel_core::Store;
use sentinel_sqlite::SqliteStore;

fn fresh_path() -> std::path::PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir()
        .join(format!(
            "sentinel-sqlite-conf-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            sentinel_core::Owner::current().attempt
        ))
        .join("sentinel.db")
}

async fn sqlite_store() -> Arc<dyn Store> {
    Arc::new(SqliteStore::open(fresh_path()).await.unwrap())
}

sentinel_testkit::conformance_tests!(sqlite_store);

mod memory_url {
    use super::*;

    async fn sqlite_memory_store() -> Arc<dyn Store> {
        let path = SqliteStore::path_from_url("sqlite::memory:").unwrap();
        Arc::new(SqliteStore::builder(path).open().await.unwrap())
    }

    sentinel_testkit::conformance_tests!(sqlite_memory_store);
}
