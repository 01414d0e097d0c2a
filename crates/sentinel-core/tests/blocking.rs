//! The blocking facade: store work on Sentinel's own runtime, the function on the caller's thread.

use std::time::Duration;

use sentinel_core::{MemoryStore, Outcome, Sentinel, State, UncertainReason, blocking};

fn blocking_sentinel() -> blocking::Sentinel {
    blocking::Sentinel::new(Sentinel::builder(MemoryStore::new()).build().unwrap())
}

#[test]
fn blocking_run_then_replay() {
    let s = blocking_sentinel();
    let out = s.once("k").run(|_| Ok::<u32, String>(1)).unwrap();
    assert!(matches!(
        out,
        Outcome::Completed {
            value: 1,
            replayed: false,
            ..
        }
    ));
    let out = s.once("k").run(|_| Ok::<u32, String>(2)).unwrap();
    assert!(matches!(
        out,
        Outcome::Completed {
            value: 1,
            replayed: true,
            ..
        }
    ));
}

#[test]
fn heartbeat_runs_while_the_caller_thread_is_busy() {
    let s = blocking_sentinel();
    let out = s
        .once("k")
        .ttl(Duration::from_millis(300))
        .run(|ctx| {
            // The caller's thread is blocked for 3 ttls; renewals must still happen.
            std::thread::sleep(Duration::from_millis(900));
            Ok::<bool, String>(ctx.is_lease_lost())
        })
        .unwrap();
    assert!(
        matches!(out, Outcome::Completed { value: false, .. }),
        "{out:?}"
    );
}

#[test]
fn blocking_facade_does_not_panic_inside_a_runtime() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = blocking_sentinel();
        let out = s.once("k").run(|_| Ok::<u32, String>(3)).unwrap();
        assert!(out.ran_here());
        let rec = s.inspect("default", "k").unwrap().unwrap();
        assert_eq!(rec.state, State::Completed);
    });
}

#[test]
fn blocking_panic_leaves_key_uncertain() {
    let s = blocking_sentinel();
    let s2 = s.clone();
    let joined = std::thread::spawn(move || {
        let _ = s2
            .once("k")
            .run(|_| -> Result<u32, String> { panic!("boom") });
    })
    .join();
    assert!(joined.is_err());
    let out = s.once("k").run(|_| Ok::<u32, String>(1)).unwrap();
    assert!(
        matches!(
            out,
            Outcome::Uncertain {
                reason: UncertainReason::Panicked,
                ..
            }
        ),
        "{out:?}"
    );
}

#[test]
fn blocking_two_phase_completes_and_replays() {
    let s = blocking_sentinel();
    let blocking::Begin::Acquired(execution) = s.once("k").begin::<u32, String>().unwrap() else {
        panic!("a fresh key is acquired");
    };
    let token = execution.fencing_token();
    let out = execution.complete(5).unwrap();
    assert!(matches!(
        out,
        Outcome::Completed {
            value: 5,
            replayed: false,
            ..
        }
    ));
    let again = s.once("k").begin::<u32, String>().unwrap();
    assert!(
        matches!(again, blocking::Begin::Settled(Outcome::Completed { value: 5, replayed: true, token: t, .. }) if t == token),
        "{again:?}"
    );
}

#[test]
fn blocking_execution_dropped_on_another_thread_leaves_key_uncertain() {
    let s = blocking_sentinel();
    let begun = s.once("k").begin::<u32, String>().unwrap();
    assert!(matches!(begun, blocking::Begin::Acquired(_)));
    // The handle is Send: a binding may finish (or drop) it on any thread.
    std::thread::spawn(move || drop(begun)).join().unwrap();
    let record = s
        .wait("default", "k", Duration::from_secs(10))
        .unwrap()
        .unwrap();
    assert_eq!(record.state, State::Uncertain);
    assert_eq!(record.reason, Some(UncertainReason::Cancelled));
}
