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

/// Random operation sequences agree with the reference model (`sentinel_testkit::model`):
/// answers, states, token order and event logs. `PROPTEST_CASES` runs more.
#[test]
fn sqlite_store_agrees_with_the_model() {
    sentinel_testkit::model::check(32, sqlite_store);
}

/// The same through the coalescing decorator.
#[test]
fn coalesced_sqlite_store_agrees_with_the_model() {
    sentinel_testkit::model::check(32, || async {
        Arc::new(sentinel_core::Coalescing::new(sqlite_store().await, 64)) as Arc<dyn Store>
    });
}
