//! The conformance suite against PostgreSQL (a real server; each test in its own schema).

mod support;

sentinel_testkit::conformance_tests!(support::pg_store);

/// The whole suite again with unnamed statements (the PgBouncer-before-1.21 mode).
mod unnamed_statements {
    use std::sync::Arc;

    use sentinel_core::Store;
    use sentinel_postgres::PgStore;

    async fn pg_store_unnamed() -> Arc<dyn Store> {
        let store = PgStore::builder()
            .url(&super::support::database_url())
            .schema(super::support::fresh_schema())
            .pool_size(16)
            .unnamed_statements(true)
            .build()
            .await
            .unwrap();
        store.migrate().await.unwrap();
        Arc::new(store)
    }

    sentinel_testkit::conformance_tests!(pg_store_unnamed);
}

/// The whole suite again through the claim-coalescing decorator (multi-row claims).
mod coalescing {
    use std::sync::Arc;

    use sentinel_core::{Coalescing, Store};

    async fn pg_store_coalescing() -> Arc<dyn Store> {
        Arc::new(Coalescing::new(
            Arc::new(super::support::store_with(16).await),
            64,
        ))
    }

    sentinel_testkit::conformance_tests!(pg_store_coalescing);
}

/// Random operation sequences agree with the reference model (`sentinel_testkit::model`):
/// answers, states, token order and event logs. `PROPTEST_CASES` runs more.
#[test]
fn postgres_store_agrees_with_the_model() {
    sentinel_testkit::model::check(24, support::pg_store);
}

/// The same through the coalescing decorator.
#[test]
fn coalesced_postgres_store_agrees_with_the_model() {
    sentinel_testkit::model::check(24, || async {
        std::sync::Arc::new(sentinel_core::Coalescing::new(
            support::store_with(4).await,
            64,
        )) as std::sync::Arc<dyn sentinel_core::Store>
    });
}
