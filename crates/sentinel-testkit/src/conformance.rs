//! The conformance suite: every row of docs/design.md §2's table and every rule of §3, written once
//! and run against every store. A store is done when it passes all of it against a real server.
//!
//! Tests whose name starts with `timing_` depend on real time (ttl of at least 300 ms) and run in
//! a single-threaded nextest group.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sentinel_core::store::{
    ClaimRequest, ClaimResponse, ListCursor, ListOrder, ListQuery, OperatorAction, PruneQuery,
    Resolution, Store,
};
use sentinel_core::{
    Begin, Disposition, Error, EventKind, FailurePolicy, FencingToken, LeaseLost,
    NotRecordedReason, Outcome, Owner, ResultKind, Sentinel, State, StoredResult, UncertainReason,
};
use tokio::sync::oneshot;

use crate::FaultStore;

type Out = Outcome<u64, String>;

fn sentinel(store: Arc<dyn Store>) -> Sentinel {
    Sentinel::builder(store).build().unwrap()
}

fn faulty(store: Arc<dyn Store>) -> (FaultStore, Sentinel) {
    let fault = FaultStore::new(store);
    let s = Sentinel::builder(fault.clone()).build().unwrap();
    (fault, s)
}

fn op(key: &str) -> OperatorAction {
    OperatorAction::new("default", key, "alice", Some("checked the ledger".into()))
}

async fn run_value(s: &Sentinel, key: &str, value: u64) -> Out {
    s.once(key).run(|_| async move { Ok(value) }).await.unwrap()
}

async fn events(s: &Sentinel, key: &str) -> Vec<EventKind> {
    s.history("default", key, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

/// Claims a key directly through the store, as a worker that then dies would.
async fn claim_and_die(store: &Arc<dyn Store>, key: &str, ttl: Duration) -> FencingToken {
    let request = ClaimRequest::new("default", key, Owner::current(), ttl, ttl * 10, None);
    match store.claim(&request).await.unwrap() {
        ClaimResponse::Acquired(r) => r.fencing_token,
        other => panic!("expected to acquire, got {other:?}"),
    }
}

/// absent → running → completed; every later caller gets the stored value, and `f` runs once.
pub async fn fresh_run_then_replay(store: Arc<dyn Store>) {
    let s = sentinel(store);
    let runs = Arc::new(AtomicUsize::new(0));
    let mut tokens = Vec::new();
    for _ in 0..3 {
        let runs = runs.clone();
        let out: Out = s
            .once("k")
            .run(|ctx| async move {
                runs.fetch_add(1, Ordering::SeqCst);
                assert_eq!(ctx.key(), "k");
                assert_eq!(ctx.namespace(), "default");
                Ok(42)
            })
            .await
            .unwrap();
        tokens.push(out.token());
        match out {
            Outcome::Completed {
                value, replayed, ..
            } => {
                assert_eq!(value, 42);
                assert_eq!(replayed, tokens.len() > 1);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(tokens.windows(2).all(|w| w[0] == w[1]));
    let record = s.inspect("default", "k").await.unwrap().unwrap();
    assert_eq!(record.state, State::Completed);
    assert!(record.completed_at.is_some());
}

/// `()` and `None` are stored results, distinct from "no result" (an operator's resolve).
pub async fn unit_and_none_are_results(store: Arc<dyn Store>) {
    let s = sentinel(store.clone());
    let out = s
        .once("unit")
        .run(|_| async { Ok::<(), String>(()) })
        .await
        .unwrap();
    assert!(matches!(
        out,
        Outcome::Completed {
            replayed: false,
            ..
        }
    ));
    let out = s
        .once("unit")
        .run(|_| async { Ok::<(), String>(()) })
        .await
        .unwrap();
    assert!(matches!(out, Outcome::Completed { replayed: true, .. }));

    let out = s
        .once("none")
        .run(|_| async { Ok::<Option<u8>, String>(None) })
        .await
        .unwrap();
    assert!(matches!(
        out,
        Outcome::Completed {
            value: None,
            replayed: false,
            ..
        }
    ));
    let out = s
        .once("none")
        .run(|_| async { Ok::<Option<u8>, String>(Some(1)) })
        .await
        .unwrap();
    assert!(matches!(
        out,
        Outcome::Completed {
            value: None,
            replayed: true,
            ..
        }
    ));

    claim_and_die(&store, "empty", Duration::from_secs(60)).await;
    // An operator resolves a key whose owner is (made) uncertain, without a result.
    let token = {
        let r = s.inspect("default", "empty").await.unwrap().unwrap();
        store
            .mark_uncertain(
                "default",
                "empty",
                r.fencing_token,
                UncertainReason::OwnerDied,
            )
            .await
            .unwrap();
        s.reconcile(&op("empty"), false).await.unwrap()
    };
    s.resolve(&op("empty"), &Resolution::Complete(None), Some(token))
        .await
        .unwrap();
    let out = s
        .once("empty")
        .run(|_| async { Ok::<(), String>(()) })
        .await
        .unwrap();
    assert!(
        matches!(out, Outcome::CompletedWithoutResult { .. }),
        "{out:?}"
    );
}

/// Default policy: a failing function leaves the key uncertain, and the caller gets the error.
pub async fn failure_under_default_policy_is_uncertain(store: Arc<dyn Store>) {
    let s = sentinel(store);
    let out: Out = s
        .once("k")
        .run(|_| async { Err("card declined".to_string()) })
        .await
        .unwrap();
    match out {
        Outcome::Failed {
            error,
            replayed,
            disposition,
            ..
        } => {
            assert_eq!(error, "card declined");
            assert!(!replayed);
            assert_eq!(disposition, Disposition::Uncertain);
        }
        other => panic!("unexpected {other:?}"),
    }
    let out: Out = s.once("k").run(|_| async { Ok(1) }).await.unwrap();
    assert!(
        matches!(
            out,
            Outcome::Uncertain {
                reason: UncertainReason::Failed,
                ..
            }
        ),
        "{out:?}"
    );
    assert_eq!(
        events(&s, "k").await,
        [EventKind::Acquired, EventKind::Uncertain]
    );
}

/// Policy `release`: the record is removed; the next caller runs with a larger token.
pub async fn failure_under_release_policy_lets_next_caller_run(store: Arc<dyn Store>) {
    let s = sentinel(store);
    let first: Out = s
        .once("k")
        .on_failure(FailurePolicy::Release)
        .run(|_| async { Err("upstream 503".to_string()) })
        .await
        .unwrap();
    assert!(matches!(
        first,
        Outcome::Failed {
            disposition: Disposition::Released,
            replayed: false,
            ..
        }
    ));
    assert!(s.inspect("default", "k").await.unwrap().is_none());
    let second = run_value(&s, "k", 7).await;
    assert!(matches!(
        second,
        Outcome::Completed {
            value: 7,
            replayed: false,
            ..
        }
    ));
    assert!(second.token() > first.token());
    assert_eq!(
        events(&s, "k").await,
        [
            EventKind::Acquired,
            EventKind::Released,
            EventKind::Acquired,
            EventKind::Completed
        ]
    );
}

/// Policy `record`: the error is stored and replayed as `Failed`.
pub async fn failure_under_record_policy_is_replayed(store: Arc<dyn Store>) {
    let s = sentinel(store);
    let first: Out = s
        .once("k")
        .on_failure(FailurePolicy::Record)
        .run(|_| async { Err("insufficient funds".to_string()) })
        .await
        .unwrap();
    assert!(matches!(
        first,
        Outcome::Failed {
            disposition: Disposition::Recorded,
            replayed: false,
            ..
        }
    ));
    let again: Out = s.once("k").run(|_| async { Ok(1) }).await.unwrap();
    match again {
        Outcome::Failed {
            error,
            replayed: true,
            disposition: Disposition::Recorded,
            ..
        } => {
            assert_eq!(error, "insufficient funds");
        }
        other => panic!("unexpected {other:?}"),
    }
    let record = s.inspect("default", "k").await.unwrap().unwrap();
    assert_eq!(record.result.unwrap().kind, ResultKind::Error);
    assert_eq!(
        events(&s, "k").await,
        [EventKind::Acquired, EventKind::Failed]
    );
}

/// A function that declares it did not start releases the key on failure, whatever the policy.
pub async fn failure_before_start_releases_the_key(store: Arc<dyn Store>) {
    let s = sentinel(store);
    let out: Out = s
        .once("k")
        .on_failure(FailurePolicy::Record)
        .run(|ctx| async move {
            ctx.mark_not_started();
            Err("no such program".to_string())
        })
        .await
        .unwrap();
    assert!(
        matches!(
            out,
            Outcome::Failed {
                disposition: Disposition::Released,
                ..
            }
        ),
        "{out:?}"
    );
    assert!(s.inspect("default", "k").await.unwrap().is_none());
}

/// A panic inside the function leaves the key uncertain (reason `panicked`).
pub async fn panic_leaves_key_uncertain(store: Arc<dyn Store>) {
    let s = sentinel(store);
    let s2 = s.clone();
    let joined = tokio::spawn(async move {
        let _: Out = s2
            .once("k")
            .run(|_| async { panic!("boom") })
            .await
            .unwrap();
    })
    .await;
    assert!(joined.unwrap_err().is_panic());
    let out: Out = s.once("k").run(|_| async { Ok(1) }).await.unwrap();
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

/// Dropping the `once` future mid-function marks the key uncertain (reason `cancelled`).
pub async fn cancellation_leaves_key_uncertain(store: Arc<dyn Store>) {
    let s = sentinel(store);
    let (started_tx, started_rx) = oneshot::channel();
    let s2 = s.clone();
    let task = tokio::spawn(async move {
        let _: Result<Out, _> = s2
            .once("k")
            .ttl(Duration::from_secs(30))
            .run(|_| async move {
                let _ = started_tx.send(());
                std::future::pending::<()>().await;
                Ok(1)
            })
            .await;
    });
    started_rx.await.unwrap();
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    // The mark is written in the background; wait() returns once the key left `running`.
    let record = s
        .wait("default", "k", Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.state, State::Uncertain);
    assert_eq!(record.reason, Some(UncertainReason::Cancelled));
}

/// The two-phase form: `begin` hands out the execution, `complete` stores its value, and later
/// calls (in either form) replay it; the handle carries the key, namespace and token.
pub async fn two_phase_complete_then_replay(store: Arc<dyn Store>) {
    let s = sentinel(store);
    let Begin::Acquired(execution) = s
        .once("k")
        .namespace("two-phase")
        .begin::<u64, String>()
        .await
        .unwrap()
    else {
        panic!("a fresh key is acquired");
    };
    assert_eq!((execution.key(), execution.namespace()), ("k", "two-phase"));
    assert!(!execution.is_lease_lost());
    let token = execution.fencing_token();
    // While the handle is unfinished, the key is running under its token.
    let busy: Out = s
        .once("k")
        .namespace("two-phase")
        .run(|_| async { Ok(2) })
        .await
        .unwrap();
    assert!(
        matches!(busy, Outcome::Running { token: t, .. } if t == token),
        "{busy:?}"
    );
    let done = execution.complete(7).await.unwrap();
    assert!(
        matches!(done, Outcome::Completed { value: 7, replayed: false, token: t, .. } if t == token),
        "{done:?}"
    );
    let again = s
        .once("k")
        .namespace("two-phase")
        .begin::<u64, String>()
        .await
        .unwrap();
    assert!(
        matches!(
            again,
            Begin::Settled(Outcome::Completed {
                value: 7,
                replayed: true,
                ..
            })
        ),
        "{again:?}"
    );
}

/// `fail` applies the failure policy (here `record`: replayed as `Failed`); `release` frees the
/// key whatever the policy, and the next caller runs under a larger token.
pub async fn two_phase_fail_and_release(store: Arc<dyn Store>) {
    let s = sentinel(store);
    let Begin::Acquired(execution) = s
        .once("recorded")
        .on_failure(FailurePolicy::Record)
        .begin::<u64, String>()
        .await
        .unwrap()
    else {
        panic!("a fresh key is acquired");
    };
    let failed = execution.fail("card declined".into()).await.unwrap();
    assert!(
        matches!(&failed, Outcome::Failed { error, replayed: false, disposition: Disposition::Recorded, .. } if error == "card declined"),
        "{failed:?}"
    );
    let replayed: Out = s.once("recorded").run(|_| async { Ok(1) }).await.unwrap();
    assert!(
        matches!(&replayed, Outcome::Failed { replayed: true, .. }),
        "{replayed:?}"
    );

    let Begin::Acquired(execution) = s.once("freed").begin::<u64, String>().await.unwrap() else {
        panic!("a fresh key is acquired");
    };
    let first = execution.fencing_token();
    assert_eq!(execution.release().await, Disposition::Released);
    assert!(s.inspect("default", "freed").await.unwrap().is_none());
    let out = run_value(&s, "freed", 3).await;
    assert!(out.ran_here() && out.token() > first, "{out:?}");
    assert_eq!(
        events(&s, "freed").await,
        [
            EventKind::Acquired,
            EventKind::Released,
            EventKind::Acquired,
            EventKind::Completed
        ]
    );
}

/// `release` after the lease was lost decides nothing: the key stays uncertain for an operator.
pub async fn timing_release_after_lease_loss_is_uncertain(store: Arc<dyn Store>) {
    let s = sentinel(store.clone());
    let Begin::Acquired(execution) = s
        .once("k")
        .ttl(Duration::from_millis(300))
        .begin::<u64, String>()
        .await
        .unwrap()
    else {
        panic!("a fresh key is acquired");
    };
    // Someone else moves the record on under the owner's feet; the next renewal is fenced.
    store
        .mark_uncertain(
            "default",
            "k",
            execution.fencing_token(),
            UncertainReason::OwnerDied,
        )
        .await
        .unwrap();
    let why = tokio::time::timeout(Duration::from_secs(5), execution.lease_lost())
        .await
        .expect("lease-lost signal never fired");
    assert_eq!(why, LeaseLost::Fenced);
    assert_eq!(execution.release().await, Disposition::Uncertain);
    let record = s.inspect("default", "k").await.unwrap().unwrap();
    assert_eq!(record.state, State::Uncertain);
}

/// A recorded failure needs a live lease: an owner whose lease expired in the store without it
/// noticing (its renewals answered, but never reached the store) cannot turn the key, which
/// others already see uncertain, into a recorded failure (L2).
pub async fn timing_recorded_failure_needs_a_live_lease(store: Arc<dyn Store>) {
    let (fault, s) = faulty(store);
    fault.arm(|f| f.heartbeat_lies = true);
    let out: Out = s
        .once("k")
        .ttl(Duration::from_millis(300))
        .on_failure(FailurePolicy::Record)
        .run(|_| async {
            tokio::time::sleep(Duration::from_millis(600)).await;
            Err("declined".to_string())
        })
        .await
        .unwrap();
    assert!(
        matches!(
            out,
            Outcome::Failed {
                disposition: Disposition::Uncertain,
                replayed: false,
                ..
            }
        ),
        "{out:?}"
    );
    let record = s.inspect("default", "k").await.unwrap().unwrap();
    assert_eq!(record.state, State::Uncertain);
    assert!(record.result.is_none());
}

/// A release that never reached the store (unreachable) is tried again, not turned into an
/// uncertain key that needs an operator (L3).
pub async fn unreachable_release_is_tried_again(store: Arc<dyn Store>) {
    let (fault, s) = faulty(store);
    fault.arm(|f| f.release_unavailable = 1);
    let out: Out = s
        .once("k")
        .on_failure(FailurePolicy::Release)
        .run(|_| async { Err("upstream 503".to_string()) })
        .await
        .unwrap();
    assert!(
        matches!(
            out,
            Outcome::Failed {
                disposition: Disposition::Released,
                ..
            }
        ),
        "{out:?}"
    );
    assert!(s.inspect("default", "k").await.unwrap().is_none());
}

/// A release whose reply was lost, read back as an operator's later token, was not ours: the
/// operator took the key over, so the caller is not told "released" (L3).
pub async fn release_superseded_by_an_operator_is_not_reported_released(store: Arc<dyn Store>) {
    let (fault, s) = faulty(store);
    fault.arm(|f| f.release_lost_to_an_operator = 1);
    let out: Out = s
        .once("k")
        .on_failure(FailurePolicy::Release)
        .run(|_| async { Err("upstream 503".to_string()) })
        .await
        .unwrap();
    assert!(
        matches!(
            out,
            Outcome::Failed {
                disposition: Disposition::Uncertain,
                ..
            }
        ),
        "{out:?}"
    );
    let record = s.inspect("default", "k").await.unwrap().unwrap();
    assert_eq!(
        record.state,
        State::Completed,
        "the operator's resolution stands"
    );
}

/// Dropping an unfinished execution handle leaves the key uncertain (reason `cancelled`), as
/// dropping `run`'s future does.
pub async fn dropped_execution_leaves_key_uncertain(store: Arc<dyn Store>) {
    let s = sentinel(store);
    let begun = s
        .once("k")
        .ttl(Duration::from_secs(30))
        .begin::<u64, String>()
        .await
        .unwrap();
    assert!(matches!(begun, Begin::Acquired(_)), "{begun:?}");
    drop(begun);
    let record = s
        .wait("default", "k", Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.state, State::Uncertain);
    assert_eq!(record.reason, Some(UncertainReason::Cancelled));
    let out: Out = s.once("k").run(|_| async { Ok(1) }).await.unwrap();
    assert!(
        matches!(
            out,
            Outcome::Uncertain {
                reason: UncertainReason::Cancelled,
                ..
            }
        ),
        "{out:?}"
    );
}

/// A worker that dies leaves its key running until the lease expires, then uncertain; nothing
/// re-runs it.
pub async fn timing_expired_lease_makes_key_uncertain(store: Arc<dyn Store>) {
    let s = sentinel(store.clone());
    let ttl = Duration::from_millis(300);
    claim_and_die(&store, "k", ttl).await;
    crate::assert_uncertain_after_expiry(&s, "k").await;
    // Expiry is derived at read time: no event is written for it.
    assert_eq!(events(&s, "k").await, [EventKind::Acquired]);
}

/// The heartbeat keeps a lease alive well past its ttl; others see `Running` throughout and the
/// lease expiry moves forward.
pub async fn timing_heartbeat_keeps_lease_alive(store: Arc<dyn Store>) {
    let s = sentinel(store);
    let ttl = Duration::from_millis(300);
    let (started_tx, started_rx) = oneshot::channel();
    let (finish_tx, finish_rx) = oneshot::channel::<()>();
    let s2 = s.clone();
    let worker = tokio::spawn(async move {
        s2.once("k")
            .ttl(ttl)
            .run(|ctx| async move {
                let _ = started_tx.send(());
                finish_rx.await.unwrap();
                assert!(!ctx.is_lease_lost(), "{:?}", ctx.lease_lost_reason());
                Ok::<u64, String>(5)
            })
            .await
    });
    started_rx.await.unwrap();
    let mut leases = Vec::new();
    for _ in 0..5 {
        tokio::time::sleep(ttl / 2).await;
        let out: Out = s.once("k").run(|_| async { Ok(0) }).await.unwrap();
        match out {
            Outcome::Running {
                lease_expires_at, ..
            } => leases.push(lease_expires_at.unwrap()),
            other => panic!("lease lost after {} checks: {other:?}", leases.len()),
        }
    }
    assert!(
        leases.first() < leases.last(),
        "lease never moved: {leases:?}"
    );
    finish_tx.send(()).unwrap();
    let out = worker.await.unwrap().unwrap();
    assert!(matches!(
        out,
        Outcome::Completed {
            value: 5,
            replayed: false,
            ..
        }
    ));
}

/// The hard ceiling fires the lease-lost signal; the heartbeat never extends past it.
pub async fn timing_hard_ceiling_fires_lease_lost(store: Arc<dyn Store>) {
    let s = sentinel(store);
    let started = std::time::Instant::now();
    let out = s
        .once("k")
        .ttl(Duration::from_millis(300))
        .hard_ttl(Duration::from_millis(700))
        .run(|ctx| async move {
            let why = tokio::time::timeout(Duration::from_secs(5), ctx.lease_lost())
                .await
                .expect("lease-lost signal never fired");
            Ok::<_, String>(format!("{why:?}"))
        })
        .await
        .unwrap();
    let elapsed = started.elapsed();
    let Outcome::Completed { value, .. } = out else {
        panic!("a completion by the current token is accepted after expiry: {out:?}");
    };
    assert_eq!(value, format!("{:?}", LeaseLost::CeilingPassed));
    assert!(elapsed >= Duration::from_millis(600), "{elapsed:?}");
    // Renewals never extended the lease past the ceiling.
    let record = s.inspect("default", "k").await.unwrap().unwrap();
    assert!(record.lease_expires_at.unwrap() <= record.hard_expires_at.unwrap());
}

/// A renewal that is fenced fires the lease-lost signal; the late completion is fenced too and
/// reported as not recorded, never as success.
pub async fn timing_fenced_renewal_fires_lease_lost(store: Arc<dyn Store>) {
    let s = sentinel(store.clone());
    let result: Result<Out, Error> = s
        .once("k")
        .ttl(Duration::from_millis(300))
        .run(|ctx| async move {
            // Someone else moves the record on under our feet.
            store
                .mark_uncertain(
                    "default",
                    "k",
                    ctx.fencing_token(),
                    UncertainReason::OwnerDied,
                )
                .await
                .unwrap();
            let why = tokio::time::timeout(Duration::from_secs(5), ctx.lease_lost())
                .await
                .expect("lease-lost signal never fired");
            assert_eq!(why, LeaseLost::Fenced);
            Ok(1)
        })
        .await;
    match result {
        Err(Error::NotRecorded(nr)) => assert_eq!(nr.reason, NotRecordedReason::Fenced),
        other => panic!("unexpected {other:?}"),
    }
}

/// A partitioned worker gets only errors from the store, never "fenced": its signal fires locally
/// before others can see the key uncertain.
pub async fn timing_local_lease_loss_without_store_answer(store: Arc<dyn Store>) {
    let (fault, s) = faulty(store);
    fault.arm(|f| f.heartbeat_unavailable = true);
    let ttl = Duration::from_millis(400);
    let s2 = s.clone();
    let out = s
        .once("k")
        .ttl(ttl)
        .run(|ctx| async move {
            let why = tokio::time::timeout(Duration::from_secs(5), ctx.lease_lost())
                .await
                .expect("lease-lost signal never fired");
            // Fired before the store's lease expired: others still see it running.
            let seen: Out = s2.once("k").run(|_| async { Ok(0) }).await.unwrap();
            Ok::<_, String>((format!("{why:?}"), matches!(seen, Outcome::Running { .. })))
        })
        .await
        .unwrap();
    let Outcome::Completed {
        value: (why, still_running),
        ..
    } = out
    else {
        panic!("unexpected {out:?}");
    };
    assert_eq!(why, format!("{:?}", LeaseLost::RenewalsFailing));
    assert!(
        still_running,
        "the local signal must fire before the store's lease expires"
    );
    // Failed renewals are retried with a growing pause, not in a tight loop.
    let calls = fault.heartbeat_calls();
    assert!(
        (1..=10).contains(&calls),
        "{calls} heartbeat attempts in one ttl"
    );
}

/// A heartbeat statement that never answers (a half-open connection) does not hold back the
/// local lease-lost signal.
pub async fn timing_local_lease_loss_when_the_store_hangs(store: Arc<dyn Store>) {
    let (fault, s) = faulty(store);
    fault.arm(|f| f.heartbeat_hangs = true);
    let started = std::time::Instant::now();
    let out = s
        .once("k")
        .ttl(Duration::from_millis(400))
        .run(|ctx| async move {
            let why = tokio::time::timeout(Duration::from_secs(5), ctx.lease_lost())
                .await
                .expect("lease-lost signal never fired");
            Ok::<_, String>(format!("{why:?}"))
        })
        .await
        .unwrap();
    let Outcome::Completed { value, .. } = out else {
        panic!("unexpected {out:?}");
    };
    assert_eq!(value, format!("{:?}", LeaseLost::RenewalsFailing));
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
}

/// After the lease is lost, a failure is no decision: policies `release` and `record` do not
/// apply and the key turns uncertain (the function may have been stopped half-way).
pub async fn timing_failure_after_lease_loss_is_uncertain(store: Arc<dyn Store>) {
    let s = sentinel(store);
    for (key, policy) in [
        ("release", FailurePolicy::Release),
        ("record", FailurePolicy::Record),
    ] {
        let out: Out = s
            .once(key)
            .ttl(Duration::from_millis(300))
            .hard_ttl(Duration::from_millis(400))
            .on_failure(policy)
            .run(|ctx| async move {
                ctx.lease_lost().await;
                Err("stopped when the ceiling passed".to_string())
            })
            .await
            .unwrap();
        assert!(
            matches!(
                out,
                Outcome::Failed {
                    disposition: Disposition::Uncertain,
                    ..
                }
            ),
            "{key}: {out:?}"
        );
        let record = s.inspect("default", key).await.unwrap().unwrap();
        assert_eq!(record.state, State::Uncertain, "{key}");
        assert_eq!(record.reason, Some(UncertainReason::CeilingPassed), "{key}");
        assert!(
            record.result.is_none(),
            "{key}: a failure after lease loss was recorded"
        );
    }
}

/// A worker whose lease expired, whose key was reconciled and run again, cannot complete it.
pub async fn timing_late_completion_is_fenced(store: Arc<dyn Store>) {
    let (fault, s) = faulty(store);
    let (started_tx, started_rx) = oneshot::channel();
    let (finish_tx, finish_rx) = oneshot::channel::<()>();
    let s2 = s.clone();
    let stale = tokio::spawn(async move {
        s2.once("k")
            .ttl(Duration::from_millis(300))
            .run(|_| async move {
                let _ = started_tx.send(());
                finish_rx.await.unwrap();
                Ok::<u64, String>(1)
            })
            .await
    });
    started_rx.await.unwrap();
    fault.arm(|f| f.heartbeat_unavailable = true); // the worker is partitioned away
    let record = s
        .wait("default", "k", Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.state, State::Uncertain);
    let token = s.reconcile(&op("k"), false).await.unwrap();
    s.resolve(&op("k"), &Resolution::Reset, Some(token))
        .await
        .unwrap();
    let fresh = run_value(&s, "k", 2).await;
    assert!(fresh.token() > token);
    finish_tx.send(()).unwrap();
    match stale.await.unwrap() {
        Err(Error::NotRecorded(nr)) => assert_eq!(nr.reason, NotRecordedReason::Fenced),
        other => panic!("a fenced completion was reported as {other:?}"),
    }
    let out = run_value(&s, "k", 3).await;
    assert!(matches!(
        out,
        Outcome::Completed {
            value: 2,
            replayed: true,
            ..
        }
    ));
}

/// Reconcile takes uncertain keys only (force re-takes reconciling ones), each time with a larger
/// token; resolve checks the operator's token; every action records who and why.
pub async fn reconcile_and_resolve_follow_the_state_table(store: Arc<dyn Store>) {
    let s = sentinel(store.clone());
    // Live record: refused.
    let live = claim_and_die(&store, "live", Duration::from_secs(60)).await;
    assert!(matches!(
        s.reconcile(&op("live"), false).await,
        Err(Error::Refused {
            state: State::Running,
            ..
        })
    ));
    assert!(matches!(
        s.reconcile(&op("live"), true).await,
        Err(Error::Refused {
            state: State::Running,
            ..
        })
    ));
    // Completed record: refused.
    assert!(run_value(&s, "done", 1).await.ran_here());
    assert!(matches!(
        s.reconcile(&op("done"), false).await,
        Err(Error::Refused {
            state: State::Completed,
            ..
        })
    ));
    // Absent: not found.
    assert!(matches!(
        s.reconcile(&op("nothing"), false).await,
        Err(Error::NotFound { .. })
    ));

    store
        .mark_uncertain("default", "live", live, UncertainReason::OwnerDied)
        .await
        .unwrap();
    let t1 = s.reconcile(&op("live"), false).await.unwrap();
    assert!(t1 > live);
    let record = s.inspect("default", "live").await.unwrap().unwrap();
    assert_eq!(record.state, State::Reconciling);
    assert_eq!(record.operator.as_deref(), Some("alice"));
    // Reconciling: plain reconcile refused, force re-takes with a larger token.
    assert!(matches!(
        s.reconcile(&op("live"), false).await,
        Err(Error::Refused {
            state: State::Reconciling,
            ..
        })
    ));
    let bob = OperatorAction::new("default", "live", "bob", Some("alice went home".into()));
    let t2 = s.reconcile(&bob, true).await.unwrap();
    assert!(t2 > t1);
    // A caller sees it uncertain (being reconciled) and does not run.
    let out: Out = s.once("live").run(|_| async { Ok(0) }).await.unwrap();
    assert!(matches!(
        out,
        Outcome::Uncertain {
            reason: UncertainReason::Reconciling,
            ..
        }
    ));
    // Alice's stale token is refused; Bob's resolves.
    let result = StoredResult::new(ResultKind::Value, "9");
    assert!(matches!(
        s.resolve(
            &op("live"),
            &Resolution::Complete(Some(result.clone())),
            Some(t1)
        )
        .await,
        Err(Error::Refused { .. })
    ));
    s.resolve(&bob, &Resolution::Complete(Some(result)), Some(t2))
        .await
        .unwrap();
    let out: Out = s.once("live").run(|_| async { Ok(0) }).await.unwrap();
    assert!(
        matches!(
            out,
            Outcome::Completed {
                value: 9,
                replayed: true,
                ..
            }
        ),
        "{out:?}"
    );
    // Resolving a completed key is refused.
    assert!(matches!(
        s.resolve(&bob, &Resolution::Reset, None).await,
        Err(Error::Refused {
            state: State::Completed,
            ..
        })
    ));

    let history = s.history("default", "live", 100).await.unwrap();
    let kinds: Vec<_> = history.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Acquired,
            EventKind::Uncertain,
            EventKind::Reconciling,
            EventKind::Reconciling,
            EventKind::Resolved
        ]
    );
    let last = history.last().unwrap();
    assert_eq!(last.actor.as_deref(), Some("bob"));
    assert_eq!(last.reason.as_deref(), Some("alice went home"));
    assert_eq!(last.fencing_token, t2);
}

/// resolve reset makes the key run again, with a larger token than any before.
pub async fn reset_runs_again_with_larger_token(store: Arc<dyn Store>) {
    let s = sentinel(store.clone());
    let out: Out = s
        .once("k")
        .run(|_| async { Err("timeout".into()) })
        .await
        .unwrap();
    let t0 = out.token();
    let t1 = s.reconcile(&op("k"), false).await.unwrap();
    s.resolve(&op("k"), &Resolution::Reset, None).await.unwrap();
    assert!(s.inspect("default", "k").await.unwrap().is_none());
    let out = run_value(&s, "k", 4).await;
    assert!(matches!(
        out,
        Outcome::Completed {
            value: 4,
            replayed: false,
            ..
        }
    ));
    assert!(out.token() > t1 && t1 > t0);
}

/// forget turns a completed key absent (so it runs again); it refuses anything else.
pub async fn forget_makes_completed_key_runnable(store: Arc<dyn Store>) {
    let s = sentinel(store.clone());
    let first = run_value(&s, "k", 1).await;
    claim_and_die(&store, "live", Duration::from_secs(60)).await;
    assert!(matches!(
        s.forget(&op("live")).await,
        Err(Error::Refused {
            state: State::Running,
            ..
        })
    ));
    assert!(matches!(
        s.forget(&op("absent")).await,
        Err(Error::NotFound { .. })
    ));
    s.forget(&op("k")).await.unwrap();
    let second = run_value(&s, "k", 2).await;
    assert!(matches!(
        second,
        Outcome::Completed {
            value: 2,
            replayed: false,
            ..
        }
    ));
    // Tokens keep increasing across the deletion.
    assert!(second.token() > first.token());
    let history = s.history("default", "k", 100).await.unwrap();
    let forgotten = history
        .iter()
        .find(|e| e.kind == EventKind::Forgotten)
        .unwrap();
    assert_eq!(forgotten.actor.as_deref(), Some("alice"));
    assert_eq!(forgotten.reason.as_deref(), Some("checked the ledger"));
}

/// prune deletes completed records whose retention passed (or older than asked), never running,
/// uncertain or reconciling ones; until then a record replays.
pub async fn prune_respects_retention_and_state(store: Arc<dyn Store>) {
    let s = sentinel(store.clone());
    let _ = s
        .once("expired")
        .retain_for(Duration::ZERO)
        .run(|_| async { Ok::<u64, String>(1) })
        .await
        .unwrap();
    let _ = s
        .once("kept")
        .retain_for(Duration::from_secs(3600))
        .run(|_| async { Ok::<u64, String>(1) })
        .await
        .unwrap();
    assert!(run_value(&s, "forever", 1).await.ran_here());
    claim_and_die(&store, "running", Duration::from_secs(60)).await;
    let _: Out = s
        .once("uncertain")
        .run(|_| async { Err("x".into()) })
        .await
        .unwrap();

    assert_eq!(s.prune(&PruneQuery::default()).await.unwrap(), 1);
    assert!(s.inspect("default", "expired").await.unwrap().is_none());
    assert_eq!(events(&s, "expired").await, [EventKind::Pruned]);
    let out = run_value(&s, "kept", 2).await;
    assert!(matches!(
        out,
        Outcome::Completed {
            value: 1,
            replayed: true,
            ..
        }
    ));

    let mut older = PruneQuery::default();
    older.older_than = Some(Duration::ZERO);
    assert_eq!(s.prune(&older).await.unwrap(), 2); // kept and forever
    for key in ["running", "uncertain"] {
        assert!(
            s.inspect("default", key).await.unwrap().is_some(),
            "{key} was pruned"
        );
    }
}

/// prune with a namespace never touches another namespace, even with `older_than`: its keys stay
/// completed and keep replaying (H2).
pub async fn prune_never_touches_another_namespace(store: Arc<dyn Store>) {
    let s = sentinel(store);
    for ns in ["tenant-a", "tenant-b"] {
        let out = s
            .once("charge-42")
            .namespace(ns)
            .run(|_| async { Ok::<u64, String>(1) })
            .await
            .unwrap();
        assert!(out.ran_here());
    }
    let mut q = PruneQuery::in_namespace("tenant-a");
    q.older_than = Some(Duration::ZERO);
    assert_eq!(s.prune(&q).await.unwrap(), 1);
    assert!(s.inspect("tenant-a", "charge-42").await.unwrap().is_none());
    let kept = s.inspect("tenant-b", "charge-42").await.unwrap().unwrap();
    assert_eq!(kept.state, State::Completed);
    let again: Out = s
        .once("charge-42")
        .namespace("tenant-b")
        .run(|_| async { panic!("a completed key of another namespace ran again") })
        .await
        .unwrap();
    crate::assert_replayed!(again);
    // Without a namespace, prune covers every namespace.
    assert_eq!(s.prune(&older_than_zero()).await.unwrap(), 1);
}

fn older_than_zero() -> PruneQuery {
    let mut q = PruneQuery::default();
    q.older_than = Some(Duration::ZERO);
    q
}

/// A fingerprint is compared in every state: another one, or one where none was stored, is an
/// error, not a replay. A call without fingerprint skips the check.
pub async fn fingerprint_mismatch_is_an_error(store: Arc<dyn Store>) {
    let s = sentinel(store.clone());
    let out: Out = s
        .once("k")
        .fingerprint("a")
        .run(|_| async { Ok(1) })
        .await
        .unwrap();
    assert!(out.ran_here());
    let again: Out = s
        .once("k")
        .fingerprint("a")
        .run(|_| async { Ok(2) })
        .await
        .unwrap();
    assert!(matches!(
        again,
        Outcome::Completed {
            value: 1,
            replayed: true,
            ..
        }
    ));
    let other = s
        .once("k")
        .fingerprint("b")
        .run(|_| async { Ok::<u64, String>(2) })
        .await;
    assert!(
        matches!(other, Err(Error::FingerprintMismatch { .. })),
        "{other:?}"
    );
    let none: Out = s.once("k").run(|_| async { Ok(2) }).await.unwrap();
    assert!(matches!(none, Outcome::Completed { value: 1, .. }));

    assert!(run_value(&s, "plain", 1).await.ran_here());
    let fp = s
        .once("plain")
        .fingerprint("a")
        .run(|_| async { Ok::<u64, String>(2) })
        .await;
    assert!(matches!(fp, Err(Error::FingerprintMismatch { .. })));

    claim_and_die(&store, "live", Duration::from_secs(60)).await;
    let fp = s
        .once("live")
        .fingerprint("a")
        .run(|_| async { Ok::<u64, String>(2) })
        .await;
    assert!(matches!(fp, Err(Error::FingerprintMismatch { .. })));

    let _: Out = s
        .once("failed")
        .fingerprint("a")
        .run(|_| async { Err("x".into()) })
        .await
        .unwrap();
    let fp = s
        .once("failed")
        .fingerprint("b")
        .run(|_| async { Ok::<u64, String>(2) })
        .await;
    assert!(matches!(fp, Err(Error::FingerprintMismatch { .. })));
}

/// The namespace is a real column of the key, never a prefix.
pub async fn namespaces_are_part_of_the_key(store: Arc<dyn Store>) {
    let s = sentinel(store);
    let a: Out = s
        .once("b:c")
        .namespace("a")
        .run(|_| async { Ok(1) })
        .await
        .unwrap();
    let b: Out = s
        .once("c")
        .namespace("a:b")
        .run(|_| async { Ok(2) })
        .await
        .unwrap();
    assert!(a.ran_here() && b.ran_here());
    assert_ne!(a.token(), b.token());
    let a = s.inspect("a", "b:c").await.unwrap().unwrap();
    let b = s.inspect("a:b", "c").await.unwrap().unwrap();
    assert_eq!((a.namespace.as_str(), a.key.as_str()), ("a", "b:c"));
    assert_eq!((b.namespace.as_str(), b.key.as_str()), ("a:b", "c"));
    assert!(s.inspect("default", "b:c").await.unwrap().is_none());
}

/// Bad input is a typed error, never a panic; a result that cannot be stored leaves the key
/// uncertain with the value handed back.
pub async fn bad_input_is_rejected(store: Arc<dyn Store>) {
    let s = sentinel(store);
    let ok = |_| async { Ok::<u64, String>(1) };
    for key in ["", "nul\0byte", &"x".repeat(sentinel_core::MAX_KEY_LEN + 1)] {
        let r = s.once(key).run(ok).await;
        assert!(matches!(r, Err(Error::InvalidInput(_))), "{key:?}: {r:?}");
    }
    let r = s.once("k").namespace("").run(ok).await;
    assert!(matches!(r, Err(Error::InvalidInput(_))));
    for (ttl, hard) in [
        (Duration::ZERO, None),
        (Duration::from_secs(400 * 24 * 3600), None),
        (Duration::from_secs(10), Some(Duration::from_secs(5))),
    ] {
        let mut once = s.once("k").ttl(ttl);
        if let Some(h) = hard {
            once = once.hard_ttl(h);
        }
        assert!(matches!(once.run(ok).await, Err(Error::InvalidInput(_))));
    }
    // Durations that cannot be added to a clock reading.
    let r = s.once("k").wait(Duration::MAX).run(ok).await;
    assert!(matches!(r, Err(Error::InvalidInput(_))), "{r:?}");
    let r = s.once("k").retain_for(Duration::MAX).run(ok).await;
    assert!(matches!(r, Err(Error::InvalidInput(_))), "{r:?}");
    let mut prune = PruneQuery::default();
    prune.older_than = Some(Duration::MAX);
    assert!(matches!(s.prune(&prune).await, Err(Error::InvalidInput(_))));
    assert!(matches!(
        s.wait("default", "k", Duration::MAX).await,
        Err(Error::InvalidInput(_))
    ));
    assert!(
        Sentinel::builder(s.store().clone())
            .result_cache(10, Duration::MAX)
            .build()
            .is_err()
    );
    assert!(
        s.inspect("default", "k").await.unwrap().is_none(),
        "bad input wrote a record"
    );

    // A result over the limit: not recorded, key uncertain, value handed back.
    let small = Sentinel::builder(s.store().clone())
        .max_result_bytes(16)
        .build()
        .unwrap();
    let r = small
        .once("big")
        .run(|_| async { Ok::<String, String>("x".repeat(100)) })
        .await;
    let Err(Error::NotRecorded(mut nr)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(nr.reason, NotRecordedReason::TooLarge);
    assert_eq!(
        nr.take_output::<Result<String, String>>(),
        Some(Ok("x".repeat(100)))
    );
    let rec = s.inspect("default", "big").await.unwrap().unwrap();
    assert_eq!(
        (rec.state, rec.reason),
        (State::Uncertain, Some(UncertainReason::NotRecorded))
    );

    // A result that does not serialize: same.
    let r = s
        .once("codec")
        .run(|_| async { Ok::<_, String>(HashMap::from([((1, 2), 3)])) })
        .await;
    assert!(
        matches!(&r, Err(Error::NotRecorded(nr)) if nr.reason == NotRecordedReason::Codec),
        "{r:?}"
    );
    let rec = s.inspect("default", "codec").await.unwrap().unwrap();
    assert_eq!(rec.state, State::Uncertain);

    // A stored result that no longer deserializes into T.
    assert!(run_value(&s, "typed", 5).await.ran_here());
    let r = s
        .once("typed")
        .run(|_| async { Ok::<String, String>("x".into()) })
        .await;
    assert!(matches!(r, Err(Error::Codec(_))), "{r:?}");

    // Operator input.
    let r = s
        .resolve(
            &op("typed"),
            &Resolution::Complete(Some(StoredResult::new(ResultKind::Value, "{nope"))),
            None,
        )
        .await;
    assert!(matches!(r, Err(Error::InvalidInput(_))));
    let r = s
        .forget(&OperatorAction::new("default", "typed", " ", None))
        .await;
    assert!(matches!(r, Err(Error::InvalidInput(_))));
}

/// A caller that goes away while its claim is in flight (a timeout, an HTTP client that
/// disconnects) leaves no orphan: the claim that committed for nobody is released, so the key
/// neither runs for nobody nor turns uncertain (M3).
pub async fn cancelled_claim_is_released(store: Arc<dyn Store>) {
    let (fault, s) = faulty(store);
    fault.arm(|f| f.claim_reply_delay = Duration::from_millis(300));
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let call = s.once("k").run(|_| async move {
        r.fetch_add(1, Ordering::SeqCst);
        Ok::<u64, String>(1)
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(50), call)
            .await
            .is_err()
    );
    fault.arm(|f| f.claim_reply_delay = Duration::ZERO);
    let record = s
        .wait("default", "k", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        record.is_none(),
        "the abandoned claim was left behind: {record:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    let history = events(&s, "k").await;
    assert_eq!(history.last(), Some(&EventKind::Released), "{history:?}");
    let out = run_value(&s, "k", 2).await;
    assert!(out.ran_here(), "{out:?}");
}

/// A claim whose reply was lost after it committed is settled by re-reading the row: the
/// function runs once, as the owner.
pub async fn ambiguous_claim_is_settled_by_rereading(store: Arc<dyn Store>) {
    let (fault, s) = faulty(store);
    fault.arm(|f| f.claim_reply_lost = 1);
    let (out, runs) = crate::run_counted(&s, "k").await;
    crate::assert_fresh!(out);
    assert_eq!(runs, 1);
    assert_eq!(
        events(&s, "k").await,
        [EventKind::Acquired, EventKind::Completed]
    );
}

/// A claim that commits only after the re-read found nothing is recognised by its attempt id
/// when the engine claims again: the caller runs the function, once, as the owner.
pub async fn late_claim_commit_is_recognised_as_ours(store: Arc<dyn Store>) {
    let (fault, s) = faulty(store);
    fault.arm(|f| f.claim_commits_late = 1);
    let (out, runs) = crate::run_counted(&s, "k").await;
    crate::assert_fresh!(out);
    assert_eq!(runs, 1);
}

/// A completion whose reply was lost after it committed is confirmed by re-reading the row.
pub async fn ambiguous_completion_is_settled_by_rereading(store: Arc<dyn Store>) {
    let (fault, s) = faulty(store);
    fault.arm(|f| f.complete_reply_lost = 1);
    let out = run_value(&s, "k", 3).await;
    assert!(
        matches!(
            out,
            Outcome::Completed {
                value: 3,
                replayed: false,
                ..
            }
        ),
        "{out:?}"
    );
    let out = run_value(&s, "k", 4).await;
    assert!(matches!(
        out,
        Outcome::Completed {
            value: 3,
            replayed: true,
            ..
        }
    ));
}

/// A completion that cannot be stored or confirmed is `NotRecorded` with the value, and the key
/// turns uncertain; never a silent success.
pub async fn unconfirmed_completion_is_not_recorded(store: Arc<dyn Store>) {
    let (fault, s) = faulty(store);
    fault.arm(|f| {
        f.complete_unavailable = 10;
        f.load_unavailable = 10;
    });
    let r = s.once("k").run(|_| async { Ok::<u64, String>(8) }).await;
    let Err(Error::NotRecorded(mut nr)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(nr.reason, NotRecordedReason::Unconfirmed);
    assert_eq!(nr.take_output::<Result<u64, String>>(), Some(Ok(8)));
    fault.arm(|f| *f = Default::default());
    let rec = s.inspect("default", "k").await.unwrap().unwrap();
    assert_eq!(
        (rec.state, rec.reason),
        (State::Uncertain, Some(UncertainReason::NotRecorded))
    );
}

/// 64 tasks race on 50 keys behind a barrier: exactly one execution per key, counted outside
/// Sentinel (an append-only file), and the losers really saw the key running.
pub async fn concurrent_callers_run_each_key_once(store: Arc<dyn Store>) {
    const TASKS: usize = 64;
    const KEYS: usize = 50;
    let s = sentinel(store);
    let dir = std::env::temp_dir().join(format!(
        "sentinel-race-{}-{}",
        std::process::id(),
        Owner::current().attempt
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("executions.log");
    let busy = crate::race::race(&s, TASKS, KEYS, &log).await;
    crate::race::assert_each_key_ran_once(&log, KEYS, busy);
    std::fs::remove_dir_all(&dir).ok();
}

/// `wait` blocks while another worker runs the key and returns its replay.
pub async fn waiting_caller_gets_the_replay(store: Arc<dyn Store>) {
    let s = sentinel(store);
    let worker = crate::hold(&s, "k").await;
    let s3 = s.clone();
    let waiter = tokio::spawn(async move {
        s3.once("k")
            .wait(Duration::from_secs(10))
            .run(|_| async { Ok::<u64, String>(0) })
            .await
    });
    // Without a timeout the waiter sees Running immediately.
    let busy: Out = s.once("k").run(|_| async { Ok(0) }).await.unwrap();
    assert!(matches!(busy, Outcome::Running { .. }));
    // The waiter is still waiting (the work cannot finish before `finish_tx`): it was not
    // answered `Running` and it did not run the function.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !waiter.is_finished(),
        "the waiter returned while the key was running"
    );
    assert!(worker.complete(11).await.unwrap().ran_here());
    let out = waiter.await.unwrap().unwrap();
    assert!(
        matches!(
            out,
            Outcome::Completed {
                value: 11,
                replayed: true,
                ..
            }
        ),
        "{out:?}"
    );
    // A wait that times out returns Running.
    claim_and_die(s.store(), "stuck", Duration::from_secs(60)).await;
    let out: Out = s
        .once("stuck")
        .wait(Duration::from_millis(200))
        .run(|_| async { Ok(0) })
        .await
        .unwrap();
    assert!(matches!(out, Outcome::Running { .. }));
}

/// list pages through records by `(namespace, key)`, filtering by state per the store's clock.
pub async fn list_filters_by_state_and_pages(store: Arc<dyn Store>) {
    let s = sentinel(store.clone());
    for i in 0..5 {
        assert!(run_value(&s, &format!("done-{i}"), i).await.ran_here());
    }
    claim_and_die(&store, "live", Duration::from_secs(60)).await;
    let _: Out = s
        .once("bad")
        .run(|_| async { Err("x".into()) })
        .await
        .unwrap();

    let mut q = ListQuery::new(2);
    q.state = Some(State::Completed);
    let mut seen = Vec::new();
    loop {
        let page = s.list(&q).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        assert!(page.iter().all(|r| r.state == State::Completed));
        let last = page.last().unwrap();
        q.after = Some(ListCursor::of(last));
        seen.extend(page.into_iter().map(|r| r.key));
    }
    assert_eq!(seen, ["done-0", "done-1", "done-2", "done-3", "done-4"]);

    let mut q = ListQuery::new(100);
    q.state = Some(State::Uncertain);
    let keys: Vec<_> = s
        .list(&q)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.key)
        .collect();
    assert_eq!(keys, ["bad"]);
    q.state = Some(State::Running);
    let keys: Vec<_> = s
        .list(&q)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.key)
        .collect();
    assert_eq!(keys, ["live"]);
    q.state = None;
    q.namespace = Some("other".into());
    assert!(s.list(&q).await.unwrap().is_empty());

    let stats = store.stats().await.unwrap();
    assert_eq!(stats.uncertain, 1);
    assert!(stats.oldest_uncertain_since.is_some());
    assert_eq!(
        stats.oldest_uncertain,
        Some(("default".into(), "bad".into()))
    );
}

/// Keys of `query`, through every page of `page` records.
async fn all_pages(s: &Sentinel, mut query: ListQuery, page: usize) -> Vec<String> {
    query.limit = page;
    let mut keys = Vec::new();
    loop {
        let records = s.list(&query).await.unwrap();
        assert!(records.len() <= page);
        let Some(last) = records.last() else {
            return keys;
        };
        query.after = Some(ListCursor::of(last));
        keys.extend(records.into_iter().map(|r| r.key));
    }
}

/// list orders by age both ways with keyset pages, and a key prefix is matched literally.
pub async fn list_by_age_pages_both_ways_with_a_key_prefix(store: Arc<dyn Store>) {
    let s = sentinel(store);
    // Created in this order; ties on created_at fall back to the key, which also ascends.
    for key in ["k_0", "k_1", "kx2", "k_3", "other", "k_4"] {
        assert!(run_value(&s, key, 1).await.ran_here());
    }
    let mut q = ListQuery::new(0);
    q.key_prefix = Some("k_".into());
    q.order = ListOrder::Oldest;
    assert_eq!(
        all_pages(&s, q.clone(), 2).await,
        ["k_0", "k_1", "k_3", "k_4"]
    );
    q.order = ListOrder::Newest;
    assert_eq!(
        all_pages(&s, q.clone(), 3).await,
        ["k_4", "k_3", "k_1", "k_0"]
    );
    q.order = ListOrder::Key;
    q.key_prefix = Some("k".into());
    assert_eq!(
        all_pages(&s, q.clone(), 4).await,
        ["k_0", "k_1", "k_3", "k_4", "kx2"]
    );
    q.key_prefix = Some("%".into());
    assert!(all_pages(&s, q, 4).await.is_empty());
}

/// counts groups records by namespace and by state as the store's clock sees it.
pub async fn counts_group_by_namespace_and_state(store: Arc<dyn Store>) {
    let s = sentinel(store.clone());
    assert!(s.counts().await.unwrap().is_empty());
    for i in 0..3 {
        assert!(run_value(&s, &format!("done-{i}"), i).await.ran_here());
    }
    let _: Out = s
        .once("bad")
        .run(|_| async { Err("x".into()) })
        .await
        .unwrap();
    claim_and_die(&store, "live", Duration::from_secs(60)).await;
    let other: Out = s
        .once("k")
        .namespace("other")
        .run(|_| async { Ok(1) })
        .await
        .unwrap();
    assert!(other.ran_here());
    let counts: Vec<(String, State, u64)> = s
        .counts()
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.namespace, c.state, c.count))
        .collect();
    let mut expected = vec![
        ("default".to_owned(), State::Completed, 3),
        ("default".to_owned(), State::Running, 1),
        ("default".to_owned(), State::Uncertain, 1),
        ("other".to_owned(), State::Completed, 1),
    ];
    expected.sort_by(|a, b| (&a.0, a.1.as_str()).cmp(&(&b.0, b.1.as_str())));
    assert_eq!(counts, expected);
}

/// recent_events lists the log across keys, newest first, with the key of each event.
pub async fn recent_events_are_newest_first_across_keys(store: Arc<dyn Store>) {
    let s = sentinel(store);
    assert!(s.recent_events(10).await.unwrap().is_empty());
    assert!(run_value(&s, "a", 1).await.ran_here());
    assert!(run_value(&s, "b", 2).await.ran_here());
    let recent: Vec<(String, EventKind)> = s
        .recent_events(3)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.key, e.event.kind))
        .collect();
    assert_eq!(
        recent,
        [
            ("b".to_owned(), EventKind::Completed),
            ("b".to_owned(), EventKind::Acquired),
            ("a".to_owned(), EventKind::Completed),
        ]
    );
}

/// A key whose expired lease was derived uncertain can be reconciled.
pub async fn timing_expired_lease_can_be_reconciled(store: Arc<dyn Store>) {
    let s = sentinel(store.clone());
    let t0 = claim_and_die(&store, "k", Duration::from_millis(300)).await;
    assert!(matches!(
        s.reconcile(&op("k"), false).await,
        Err(Error::Refused {
            state: State::Running,
            ..
        })
    ));
    s.wait("default", "k", Duration::from_secs(5))
        .await
        .unwrap();
    let t1 = s.reconcile(&op("k"), false).await.unwrap();
    assert!(t1 > t0);
    // The dead owner's late writes are fenced.
    let w = store
        .mark_uncertain("default", "k", t0, UncertainReason::Failed)
        .await
        .unwrap();
    assert_eq!(w, sentinel_core::store::Write::Fenced);
}

/// shutdown waits for in-flight executions, then refuses new work.
pub async fn shutdown_waits_then_refuses(store: Arc<dyn Store>) {
    let s = sentinel(store);
    let (started_tx, started_rx) = oneshot::channel();
    let s2 = s.clone();
    let worker = tokio::spawn(async move {
        s2.once("k")
            .run(|_| async move {
                let _ = started_tx.send(());
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok::<u64, String>(1)
            })
            .await
    });
    started_rx.await.unwrap();
    s.shutdown().await;
    // The execution's completion was written before shutdown returned.
    let record = s.inspect("default", "k").await.unwrap().unwrap();
    assert_eq!(
        record.state,
        State::Completed,
        "shutdown returned before the execution finished"
    );
    assert!(worker.await.unwrap().unwrap().ran_here());
    let r = s
        .once("other")
        .run(|_| async { Ok::<u64, String>(1) })
        .await;
    assert!(matches!(r, Err(Error::ShuttingDown)));
}

/// Generates one `#[tokio::test]` per conformance case for a store factory: an async function
/// (path) returning `Arc<dyn Store>`, called once per test. The calling crate needs `tokio`
/// (features `macros`, `rt-multi-thread`) as a dev-dependency.
///
/// Adding a case is a `pub async fn` in this module plus one line in the list below.
#[macro_export]
macro_rules! conformance_tests {
    ($make:path) => {
        $crate::conformance_tests!(@each $make;
            fresh_run_then_replay,
            unit_and_none_are_results,
            failure_under_default_policy_is_uncertain,
            failure_under_release_policy_lets_next_caller_run,
            failure_under_record_policy_is_replayed,
            panic_leaves_key_uncertain,
            failure_before_start_releases_the_key,
            cancellation_leaves_key_uncertain,
            two_phase_complete_then_replay,
            two_phase_fail_and_release,
            dropped_execution_leaves_key_uncertain,
            timing_release_after_lease_loss_is_uncertain,
            timing_recorded_failure_needs_a_live_lease,
            unreachable_release_is_tried_again,
            release_superseded_by_an_operator_is_not_reported_released,
            timing_expired_lease_makes_key_uncertain,
            timing_heartbeat_keeps_lease_alive,
            timing_hard_ceiling_fires_lease_lost,
            timing_fenced_renewal_fires_lease_lost,
            timing_local_lease_loss_without_store_answer,
            timing_local_lease_loss_when_the_store_hangs,
            timing_late_completion_is_fenced,
            timing_failure_after_lease_loss_is_uncertain,
            timing_expired_lease_can_be_reconciled,
            reconcile_and_resolve_follow_the_state_table,
            reset_runs_again_with_larger_token,
            forget_makes_completed_key_runnable,
            prune_respects_retention_and_state,
            prune_never_touches_another_namespace,
            fingerprint_mismatch_is_an_error,
            namespaces_are_part_of_the_key,
            bad_input_is_rejected,
            ambiguous_claim_is_settled_by_rereading,
            cancelled_claim_is_released,
            ambiguous_completion_is_settled_by_rereading,
            late_claim_commit_is_recognised_as_ours,
            unconfirmed_completion_is_not_recorded,
            concurrent_callers_run_each_key_once,
            waiting_caller_gets_the_replay,
            list_filters_by_state_and_pages,
            list_by_age_pages_both_ways_with_a_key_prefix,
            counts_group_by_namespace_and_state,
            recent_events_are_newest_first_across_keys,
            shutdown_waits_then_refuses,
        );
    };
    (@each $make:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let store = $make().await;
                $crate::conformance::$name(store).await;
            }
        )*
    };
}
