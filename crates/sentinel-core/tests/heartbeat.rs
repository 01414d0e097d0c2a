//! The heartbeat under a slow store.

use std::time::Duration;

use sentinel_core::{MemoryStore, Outcome, Sentinel};
use sentinel_testkit::FaultStore;

/// M5: while short-lease executions come and go, a slow heartbeat reply (400 ms, longer than a
/// short lease's headroom) still renews a long-lease execution: one short lease in a batch does
/// not cut everyone's renewal.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn timing_short_leases_do_not_cut_long_renewals() {
    let fault = FaultStore::new(MemoryStore::new());
    fault.arm(|f| f.heartbeat_delay = Duration::from_millis(400));
    let s = Sentinel::builder(fault.clone()).build().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let (s, stop) = (s.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let s = s.clone();
                tokio::spawn(async move {
                    let _: Result<Outcome<u32, String>, _> = s
                        .once(format!("short-{i}"))
                        .ttl(Duration::from_millis(500))
                        .run(|_| async {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            Ok(1)
                        })
                        .await;
                });
                i += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let out: Outcome<bool, String> = s
        .once("long")
        .ttl(Duration::from_secs(3))
        .run(|ctx| async move {
            tokio::time::sleep(Duration::from_millis(3500)).await;
            Ok(ctx.is_lease_lost())
        })
        .await
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    churn.await.unwrap();
    match out {
        Outcome::Completed { value: lost, .. } => {
            assert!(
                !lost,
                "the long execution lost its lease to the short ones' deadlines"
            );
        }
        other => panic!("{other:?}"),
    }
}

/// A short lease started while the loop sleeps towards a long lease's distant renewal wakes the
/// loop: the loop skips the wake-up only for executions it would reach in time anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn timing_short_lease_after_a_long_one_is_renewed() {
    let s = Sentinel::builder(MemoryStore::new()).build().unwrap();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let long = {
        let s = s.clone();
        tokio::spawn(async move {
            let _: Outcome<u32, String> = s
                .once("long")
                .ttl(Duration::from_secs(60))
                .run(|_| async move {
                    started_tx.send(()).unwrap();
                    release_rx.await.unwrap();
                    Ok(1)
                })
                .await
                .unwrap();
        })
    };
    started_rx.await.unwrap();
    let seen = s.clone();
    let out: Outcome<bool, String> = s
        .once("short")
        .ttl(Duration::from_millis(400))
        .run(|_| async move {
            // Several lease lengths: without renewals the stored lease has long expired and
            // another caller finds the key uncertain.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let other: Outcome<u32, String> =
                seen.once("short").run(|_| async { Ok(2) }).await.unwrap();
            Ok(matches!(other, Outcome::Running { .. }))
        })
        .await
        .unwrap();
    release_tx.send(()).unwrap();
    long.await.unwrap();
    match out {
        Outcome::Completed { value: running, .. } => {
            assert!(running, "the short execution was not renewed in time");
        }
        other => panic!("{other:?}"),
    }
}
