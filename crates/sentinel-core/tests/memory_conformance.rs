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

/// M1: a batch driver spawned onto a runtime that is shutting down (and so never polled) gives
/// its slot back; later claims through the same decorator do not hang.
#[test]
fn coalescing_survives_drivers_that_never_ran() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    use std::time::Duration;

    use sentinel_core::store::ClaimRequest;
    use sentinel_core::{Coalescing, MemoryStore, Owner, Store};

    let coalescing = Coalescing::new(MemoryStore::new(), 64);
    let request = |key: &str| {
        ClaimRequest::new(
            "default",
            key,
            Owner::current(),
            Duration::from_secs(10),
            Duration::from_secs(60),
            None,
        )
    };
    let dead = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let handle = dead.handle().clone();
    dead.shutdown_background();
    {
        let _inside = handle.enter();
        for key in ["a", "b", "c"] {
            let r = request(key);
            let mut claim = std::pin::pin!(coalescing.claim(&r));
            let mut cx = Context::from_waker(Waker::noop());
            // Polled once: it queues the claim and spawns a driver that never runs.
            assert!(matches!(
                claim.as_mut().poll(&mut cx),
                Poll::Pending | Poll::Ready(Err(_))
            ));
        }
    }
    let live = tokio::runtime::Runtime::new().unwrap();
    live.block_on(async {
        let r = request("d");
        let answer = tokio::time::timeout(Duration::from_secs(5), coalescing.claim(&r)).await;
        assert!(
            matches!(answer, Ok(Ok(_))),
            "a claim through the decorator hung or failed: {answer:?}"
        );
    });
}

/// L4: when the caller a coalesced claim was made for goes away while the batch is in flight,
/// its claim is released and the other caller of the same key in that batch claims the key for
/// itself, instead of being told that somebody (nobody) is running it.
#[tokio::test(flavor = "current_thread")]
async fn coalesced_duplicate_takes_over_an_abandoned_claim() {
    use std::time::Duration;

    use sentinel_core::{Begin, Coalescing, EventKind, Sentinel};
    use sentinel_testkit::FaultStore;

    let fault = FaultStore::new(MemoryStore::new());
    fault.arm(|f| f.claim_reply_delay = Duration::from_millis(200));
    let s = Sentinel::builder(Coalescing::with_in_flight(fault.clone(), 64, 1))
        .build()
        .unwrap();
    // On one thread, both callers queue their claim before the batch driver first runs.
    let begin = |s: &Sentinel| {
        let s = s.clone();
        tokio::spawn(async move { s.once("k").begin::<u64, String>().await })
    };
    let (first, second) = (begin(&s), begin(&s));
    while fault.claim_calls() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    first.abort(); // the batch has claimed; its reply is still on the way
    fault.arm(|f| f.claim_reply_delay = Duration::ZERO);
    let execution = match second.await.unwrap().unwrap() {
        Begin::Acquired(execution) => execution,
        other => panic!("the live caller was not handed the key: {other:?}"),
    };
    assert!(execution.complete(7).await.unwrap().ran_here());
    let history: Vec<EventKind> = s
        .history("default", "k", 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        history,
        [
            EventKind::Acquired,
            EventKind::Released,
            EventKind::Acquired,
            EventKind::Completed
        ]
    );
}

/// Random operation sequences agree with the reference model (`sentinel_testkit::model`):
/// answers, states, token order and event logs. `PROPTEST_CASES` runs more.
#[test]
fn memory_store_agrees_with_the_model() {
    sentinel_testkit::model::check(64, || async {
        Arc::new(MemoryStore::new()) as Arc<dyn Store>
    });
}

/// The same through the coalescing decorator.
#[test]
fn coalesced_memory_store_agrees_with_the_model() {
    sentinel_testkit::model::check(64, || async {
        Arc::new(sentinel_core::Coalescing::new(MemoryStore::new(), 64)) as Arc<dyn Store>
    });
}
