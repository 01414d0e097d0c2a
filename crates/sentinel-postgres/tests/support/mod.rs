//! Shared set-up: each test gets its own schema in the test database, so tests run in parallel.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use sentinel_core::Store;
use sentinel_postgres::PgStore;

pub use sentinel_testkit::test_database_url as database_url;

/// A fresh schema name, unique across processes and runs.
pub fn fresh_schema() -> String {
    sentinel_testkit::unique_name("sentinel_t")
}

/// A raw client for set-up and inspection.
pub async fn raw_client() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&database_url(), tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at {} ({e}); start it with scripts/services",
                database_url()
            )
        });
    tokio::spawn(conn);
    client
}

/// Drops test schemas left by runs more than an hour old.
async fn sweep_old_schemas() {
    let client = raw_client().await;
    let rows = client
        .query(
            "SELECT nspname FROM pg_namespace n
             WHERE nspname LIKE 'sentinel\\_t\\_%'
               AND EXISTS (SELECT 1 FROM pg_class c WHERE c.relnamespace = n.oid
                           AND c.relname = 'migrations')
               AND (SELECT (pg_stat_file(pg_relation_filepath((nspname || '.migrations')::regclass))).modification
                    < now() - interval '1 hour')",
            &[],
        )
        .await
        .unwrap_or_default();
    for row in rows {
        let name: String = row.get(0);
        let _ = client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
            .await;
    }
}

/// A migrated store in a schema of its own.
pub async fn store_with(pool_size: usize) -> PgStore {
    static SWEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    SWEPT.get_or_init(sweep_old_schemas).await;
    let store = PgStore::builder()
        .url(&database_url())
        .schema(fresh_schema())
        .pool_size(pool_size)
        .build()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot connect to {}: {e}; start it with scripts/services",
                database_url()
            )
        });
    store.migrate().await.unwrap();
    store
}

/// The conformance factory: a store with a pool of 16.
pub async fn pg_store() -> Arc<dyn Store> {
    Arc::new(store_with(16).await)
}

/// The server's address, for the proxy.
pub fn server_addr() -> std::net::SocketAddr {
    use tokio_postgres::config::Host;
    let config: tokio_postgres::Config = database_url().parse().unwrap();
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let host = if host == "localhost" {
        "127.0.0.1".into()
    } else {
        host
    };
    format!("{host}:{port}").parse().unwrap()
}

/// The test database URL with host and port replaced by `addr` (a proxy).
pub fn url_via(addr: std::net::SocketAddr) -> String {
    let config: tokio_postgres::Config = database_url().parse().unwrap();
    format!(
        "postgres://{}@{addr}/{}",
        config.get_user().unwrap_or("postgres"),
        config.get_dbname().unwrap_or("test")
    )
}

/// A raw client whose notifications arrive on the returned channel.
pub async fn listening_client() -> (
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>,
) {
    let (client, mut conn) = tokio_postgres::connect(&database_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(m)) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            if let tokio_postgres::AsyncMessage::Notification(n) = m {
                let _ = tx.send(n);
            }
        }
    });
    (client, rx)
}
