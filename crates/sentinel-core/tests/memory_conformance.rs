//! The conformance suite against `MemoryStore`.

use std::sync::Arc;

use sentinel_core::{MemoryStore, Store};

async fn memory_store() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

sentinel_testkit::conformance_tests!(memory_store);
