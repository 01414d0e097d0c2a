//! The conformance suite against SQLite files (each test in a database of its own).

use std::sync::Arc;

use sentinel_core::Store;
use sentinel_sqlite::SqliteStore;

fn fresh_path() -> std::path::PathBuf {
    std::env::temp_dir()
        .join(sentinel_testkit::unique_name("sentinel-sqlite-conf"))
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
        Arc::new(SqliteStore::builder(path).build().await.unwrap())
    }

    sentinel_testkit::conformance_tests!(sqlite_memory_store);
}
