//! With feature `metrics`, an application that embeds the console serves the engine's own
//! counters beside the store's figures. One test in this binary: it installs the global
//! recorder.
#![cfg(feature = "metrics")]

mod common;

use sentinel::{MemoryStore, Sentinel};

#[tokio::test]
async fn an_embedded_console_serves_the_engines_counters() {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .unwrap();
    let sentinel = Sentinel::builder(MemoryStore::new()).build().unwrap();
    let ran = std::sync::atomic::AtomicUsize::new(0);
    for _ in 0..3 {
        let outcome = sentinel
            .once("job")
            .run(|_| async {
                ran.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok::<_, String>(1)
            })
            .await
            .unwrap();
        assert_eq!(outcome.value(), Some(1));
    }
    assert_eq!(ran.into_inner(), 1);
    let console = sentinel_console::Console::new(sentinel).prometheus(handle);
    let addr = common::serve(console.router()).await;
    let reply = common::get(addr, "/metrics").await;
    assert_eq!(reply.status, 200);
    let body = reply.body;
    assert!(body.contains("sentinel_executions_total 1"), "{body}");
    assert!(body.contains("sentinel_replays_total 2"), "{body}");
    assert!(body.contains("sentinel_store_seconds"), "{body}");
    assert!(
        body.contains("sentinel_records{namespace=\"default\",state=\"completed\"} 1"),
        "{body}"
    );
}
