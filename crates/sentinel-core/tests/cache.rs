//! The in-process result cache: replays without a round trip, never past retention or max age.

use std::time::Duration;

use sentinel_core::store::OperatorAction;
use sentinel_core::{Error, MemoryStore, Outcome, Sentinel};

type Out = Outcome<u32, String>;

fn forget(key: &str) -> OperatorAction {
    OperatorAction::new("default", key, "ops", Some("test".into()))
}

#[tokio::test]
async fn cached_replay_does_not_consult_the_store() {
    let store = MemoryStore::new();
    let s = Sentinel::builder(store.clone())
        .result_cache(100, Duration::from_secs(60))
        .build()
        .unwrap();
    let operator = Sentinel::builder(store).build().unwrap();
    let _: Out = s
        .once("k")
        .fingerprint("a")
        .run(|_| async { Ok(1) })
        .await
        .unwrap();
    // Another instance (another process) removed the record; the cache still replays it.
    operator.forget(&forget("k")).await.unwrap();
    let out: Out = s.once("k").run(|_| async { Ok(2) }).await.unwrap();
    assert!(
        matches!(
            out,
            Outcome::Completed {
                value: 1,
                replayed: true,
                ..
            }
        ),
        "{out:?}"
    );
    assert_eq!(s.stats().cache_hits, 1);
    // The fingerprint is checked against the cached one.
    let r = s
        .once("k")
        .fingerprint("b")
        .run(|_| async { Ok::<u32, String>(2) })
        .await;
    assert!(matches!(r, Err(Error::FingerprintMismatch { .. })));
}

#[tokio::test]
async fn replays_read_from_the_store_are_cached_too() {
    let store = MemoryStore::new();
    let writer = Sentinel::builder(store.clone()).build().unwrap();
    let reader = Sentinel::builder(store)
        .result_cache(100, Duration::from_secs(60))
        .build()
        .unwrap();
    let _: Out = writer.once("k").run(|_| async { Ok(5) }).await.unwrap();
    let _: Out = reader.once("k").run(|_| async { Ok(0) }).await.unwrap();
    writer.forget(&forget("k")).await.unwrap();
    let out: Out = reader.once("k").run(|_| async { Ok(0) }).await.unwrap();
    assert!(
        matches!(
            out,
            Outcome::Completed {
                value: 5,
                replayed: true,
                ..
            }
        ),
        "{out:?}"
    );
}

#[tokio::test]
async fn cache_entries_never_outlive_retention() {
    let s = Sentinel::builder(MemoryStore::new())
        .result_cache(100, Duration::from_secs(60))
        .build()
        .unwrap();
    let _: Out = s
        .once("k")
        .retain_for(Duration::ZERO)
        .run(|_| async { Ok(1) })
        .await
        .unwrap();
    s.forget(&forget("k")).await.unwrap();
    let out: Out = s.once("k").run(|_| async { Ok(2) }).await.unwrap();
    assert!(
        matches!(
            out,
            Outcome::Completed {
                value: 2,
                replayed: false,
                ..
            }
        ),
        "{out:?}"
    );
}

#[tokio::test]
async fn cache_is_off_by_default_and_bounded() {
    let s = Sentinel::builder(MemoryStore::new()).build().unwrap();
    let _: Out = s.once("k").run(|_| async { Ok(1) }).await.unwrap();
    s.forget(&forget("k")).await.unwrap();
    let out: Out = s.once("k").run(|_| async { Ok(2) }).await.unwrap();
    assert!(out.ran_here());

    let small = Sentinel::builder(MemoryStore::new())
        .result_cache(1, Duration::from_secs(60))
        .build()
        .unwrap();
    let _: Out = small.once("a").run(|_| async { Ok(1) }).await.unwrap();
    let _: Out = small.once("b").run(|_| async { Ok(2) }).await.unwrap(); // evicts a
    small.forget(&forget("a")).await.unwrap();
    let out: Out = small.once("a").run(|_| async { Ok(3) }).await.unwrap();
    assert!(out.ran_here(), "an evicted entry was replayed: {out:?}");
}

#[tokio::test]
async fn operator_actions_through_the_instance_evict_its_cache() {
    let s = Sentinel::builder(MemoryStore::new())
        .result_cache(100, Duration::from_secs(60))
        .build()
        .unwrap();
    let _: Out = s.once("k").run(|_| async { Ok(1) }).await.unwrap();
    s.forget(&forget("k")).await.unwrap();
    let out: Out = s.once("k").run(|_| async { Ok(2) }).await.unwrap();
    assert!(
        out.ran_here(),
        "a forgotten key was replayed from the cache: {out:?}"
    );
    let mut older = sentinel_core::store::PruneQuery::default();
    older.older_than = Some(Duration::ZERO);
    assert_eq!(s.prune(&older).await.unwrap(), 1);
    let out: Out = s.once("k").run(|_| async { Ok(3) }).await.unwrap();
    assert!(
        out.ran_here(),
        "a pruned key was replayed from the cache: {out:?}"
    );
}

/// L5: a replay whose claim read the row before an operator forgot it through the same instance
/// does not put the forgotten result back into the cache: the next call runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_read_before_forget_is_not_cached_after_it() {
    let memory = MemoryStore::new();
    let fault = sentinel_testkit::FaultStore::new(memory.clone());
    let s = Sentinel::builder(fault.clone())
        .result_cache(100, Duration::from_secs(60))
        .build()
        .unwrap();
    // Completed by another instance: not in this one's cache, so the next call reads the row.
    let other = Sentinel::builder(memory).build().unwrap();
    let _: Out = other.once("k").run(|_| async { Ok(1) }).await.unwrap();
    fault.arm(|f| f.claim_reply_delay = Duration::from_millis(300));
    let s2 = s.clone();
    let slow =
        tokio::spawn(async move { s2.once("k").run(|_| async { Ok::<u32, String>(9) }).await });
    while fault.claim_calls() == 0 {
        tokio::task::yield_now().await;
    }
    // The row has been read; now an operator forgets it through the same instance.
    s.forget(&forget("k")).await.unwrap();
    let replayed = slow.await.unwrap().unwrap();
    assert!(
        matches!(replayed, Outcome::Completed { replayed: true, .. }),
        "{replayed:?}"
    );
    fault.arm(|f| f.claim_reply_delay = Duration::ZERO);
    let next: Out = s.once("k").run(|_| async { Ok(4) }).await.unwrap();
    assert!(
        matches!(
            next,
            Outcome::Completed {
                value: 4,
                replayed: false,
                ..
            }
        ),
        "the forgotten result was replayed from the cache: {next:?}"
    );
}
