//! Helpers every test crate shares: unique names for schemas, files and keys, the test server's
//! URL, a function run that counts its executions outside Sentinel, and outcome assertions.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use sentinel_core::{Begin, Execution, Outcome, Sentinel, State, UncertainReason};

/// A name unique across processes and runs: `<prefix>_<pid>_<counter>_<nanos>`, made of
/// lowercase letters, digits and `_` when the prefix is (so it is a valid schema name).
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The PostgreSQL server tests use: `SENTINEL_TEST_DATABASE_URL`, else the local one
/// (`postgres://postgres@127.0.0.1:5432/test`).
pub fn test_database_url() -> String {
    std::env::var("SENTINEL_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Runs `key` once with a function returning 1, counting its executions in a counter outside
/// Sentinel; returns the outcome and how often the function ran.
pub async fn run_counted(s: &Sentinel, key: &str) -> (Outcome<u64, String>, usize) {
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let out = s
        .once(key)
        .run(|_| async move {
            r.fetch_add(1, Ordering::SeqCst);
            Ok(1)
        })
        .await
        .unwrap();
    (out, runs.load(Ordering::SeqCst))
}

/// Claims `key` (in the Sentinel's default namespace) and holds it: the key stays running until
/// the returned execution is finished (`complete`, `fail`, `release`) or dropped.
pub async fn hold(s: &Sentinel, key: &str) -> Execution<u64, String> {
    match s.once(key).begin().await.unwrap() {
        Begin::Acquired(execution) => execution,
        other => panic!("expected to acquire {key}, found {other:?}"),
    }
}

/// Asserts that a worker's claim of `key` (in `default`) whose owner died reads `Running`, then,
/// once its lease expired, `Uncertain` (owner died) — and that nothing runs it again.
pub async fn assert_uncertain_after_expiry(s: &Sentinel, key: &str) {
    let out: Outcome<u64, String> = s.once(key).run(|_| async { Ok(1) }).await.unwrap();
    assert!(matches!(out, Outcome::Running { .. }), "{out:?}");
    let record = s
        .wait("default", key, Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.state, State::Uncertain);
    let out: Outcome<u64, String> = s
        .once(key)
        .run(|_| async { panic!("an uncertain key must not run") })
        .await
        .unwrap();
    assert!(
        matches!(
            out,
            Outcome::Uncertain {
                reason: UncertainReason::OwnerDied,
                ..
            }
        ),
        "{out:?}"
    );
}

/// Asserts that an outcome is a value this call produced (not a replay).
#[macro_export]
macro_rules! assert_fresh {
    ($out:expr) => {{
        let out = &$out;
        assert!(
            matches!(
                out,
                $crate::__core::Outcome::Completed {
                    replayed: false,
                    ..
                }
            ),
            "expected a fresh completion, got {out:?}"
        );
    }};
}

/// Asserts that an outcome is a replayed value.
#[macro_export]
macro_rules! assert_replayed {
    ($out:expr) => {{
        let out = &$out;
        assert!(
            matches!(
                out,
                $crate::__core::Outcome::Completed { replayed: true, .. }
            ),
            "expected a replay, got {out:?}"
        );
    }};
}
