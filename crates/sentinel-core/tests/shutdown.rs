//! Shutdown (H1 of the correctness review): work still running when `shutdown_timeout` passes is
//! told its lease is gone, callers waiting on another owner stop without claiming, and a
//! blocking completion handed over after shutdown is still written.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sentinel_core::store::Store;
use sentinel_core::{Config, Error, LeaseLost, MemoryStore, Outcome, Sentinel, State, blocking};

/// Counts `wait_for_change` calls, so a test knows a caller is waiting.
#[derive(Debug)]
struct CountingWaits {
    inner: Arc<dyn Store>,
    waits: AtomicUsize,
}

#[async_trait::async_trait]
#[deny(clippy::missing_trait_methods)]
impl Store for CountingWaits {
    async fn wait_for_change(
        &self,
        namespace: &str,
        key: &str,
        timeout: Duration,
    ) -> Result<(), sentinel_core::StoreError> {
        self.waits.fetch_add(1, Ordering::SeqCst);
        self.inner.wait_for_change(namespace, key, timeout).await
    }

    sentinel_core::forward_store!([inner] claim, claim_many, heartbeat, complete, complete_many,
        release, mark_uncertain, load, list, counts, recent_events, history, reconcile, resolve, forget, prune, stats,
        migrate);
}

fn quick_shutdown(store: impl Store) -> Sentinel {
    let mut config = Config::default();
    config.shutdown_timeout = Duration::from_millis(50);
    Sentinel::builder(store).config(config).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timing_shutdown_tells_a_running_execution_its_lease_is_gone() {
    let s = quick_shutdown(MemoryStore::new());
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let s2 = s.clone();
    let worker = tokio::spawn(async move {
        s2.once("k")
            .ttl(Duration::from_millis(300))
            .run(|ctx| async move {
                let _ = started_tx.send(());
                let why = tokio::time::timeout(Duration::from_secs(2), ctx.lease_lost())
                    .await
                    .expect("the lease-lost signal never fired after shutdown");
                Ok::<_, String>(format!("{why:?}"))
            })
            .await
    });
    started_rx.await.unwrap();
    s.shutdown().await;
    let out = worker.await.unwrap().unwrap();
    // The work finished, so its result is still stored.
    match out {
        Outcome::Completed { value, .. } => assert_eq!(value, format!("{:?}", LeaseLost::Stopped)),
        other => panic!("{other:?}"),
    }
    let record = s.inspect("default", "k").await.unwrap().unwrap();
    assert_eq!(record.state, State::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_caller_stops_at_shutdown_and_never_claims() {
    let memory = MemoryStore::new();
    let holder = Sentinel::builder(memory.clone()).build().unwrap();
    let held = sentinel_testkit::hold(&holder, "k").await;
    let counting = Arc::new(CountingWaits {
        inner: Arc::new(memory),
        waits: AtomicUsize::new(0),
    });
    let s = quick_shutdown(counting.clone());
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let s2 = s.clone();
    let waiter = tokio::spawn(async move {
        s2.once("k")
            .wait(Duration::from_secs(30))
            .run(|_| async move {
                r.fetch_add(1, Ordering::SeqCst);
                Ok::<u64, String>(1)
            })
            .await
    });
    while counting.waits.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let started = Instant::now();
    s.shutdown().await;
    // The holder lets go after shutdown: the waiter must not take the key now.
    held.release().await;
    let answer = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiting caller did not stop at shutdown")
        .unwrap();
    assert!(matches!(answer, Err(Error::ShuttingDown)), "{answer:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    assert!(holder.inspect("default", "k").await.unwrap().is_none());
}

#[test]
fn blocking_completion_after_shutdown_is_recorded() {
    let s = blocking::Sentinel::new(quick_shutdown(MemoryStore::new()));
    let blocking::Begin::Acquired(execution) = s.once("k").begin::<u32, String>().unwrap() else {
        panic!("a fresh key is acquired");
    };
    s.shutdown(); // times out after 50 ms: the execution is still in flight
    let out = execution.complete(5).unwrap();
    assert!(
        matches!(out, Outcome::Completed { value: 5, .. }),
        "{out:?}"
    );
    let record = s.inspect("default", "k").unwrap().unwrap();
    assert_eq!(record.state, State::Completed);
}
