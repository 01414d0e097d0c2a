//! The conformance suite against `MemoryStore`.

use std::sync::Arc;

use sentinel_core::{MemoryStore, Store};

async fn memory_store() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

sentinel_testkit::conformance_tests!(memory_store);

/// The suite again through the claim-coalescing decorator.
mod coalescing {
    use std::sync::Arc;

    use sentinel_core::{Coalescing, MemoryStore, Store};

    async fn coalescing_memory_store() -> Arc<dyn Store> {
        Arc::new(Coalescing::new(Arc::new(MemoryStore::new()), 64))
    }

    sentinel_testkit::conformance_tests!(coalescing_memory_store);
}
