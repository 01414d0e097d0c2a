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

/// The suite again through `FaultStore` with nothing armed: a decorator that forwards every
/// method is the store it wraps.
mod unarmed_faults {
    use std::sync::Arc;

    use sentinel_core::{MemoryStore, Store};
    use sentinel_testkit::FaultStore;

    async fn unarmed_fault_store() -> Arc<dyn Store> {
        Arc::new(FaultStore::new(MemoryStore::new()))
    }

    sentinel_testkit::conformance_tests!(unarmed_fault_store);
}

/// And through a shared `Arc` (the `Arc<T>: Store` forwarding impl).
mod shared_arc {
    use std::sync::Arc;

    use sentinel_core::{MemoryStore, Store};

    async fn arc_of_arc() -> Arc<dyn Store> {
        let shared: Arc<MemoryStore> = Arc::new(MemoryStore::new());
        Arc::new(shared)
    }

    sentinel_testkit::conformance_tests!(arc_of_arc);
}
