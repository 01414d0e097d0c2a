//! A short chaos run per store: worker processes SIGKILLed mid-execution (and, on PostgreSQL,
//! connections cut after commit), then every key checked. The names contain `process`, so the
//! repository's nextest configuration runs them one at a time.

use std::process::Command;

use serde_json::Value;

/// The harness's exit status when the store is unreachable at set-up.
const UNREACHABLE: i32 = 69;

/// Runs the built harness with the short settings and returns its JSON summary, or `None` when
/// PostgreSQL is unreachable outside CI (in CI that fails the test).
fn short_run(store: &str, extra: &[&str]) -> Option<Value> {
    let output = Command::new(env!("CARGO_BIN_EXE_sentinel-chaos"))
        .args(extra)
        .args([
            "--store",
            store,
            "--workers",
            "8",
            "--calls",
            "10000",
            "--keys",
            "1500",
            "--kill-every-ms",
            "150",
            "--cut-every-ms",
            "100",
            "--seconds",
            "40",
            "--json",
        ])
        .output()
        .expect("the harness runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.code() == Some(UNREACHABLE) {
        assert!(
            !sentinel_testkit::in_ci(),
            "{store} is unreachable in CI (start it with scripts/services):\n{stderr}"
        );
        eprintln!("skipped: {store} is unreachable (start it with scripts/services):\n{stderr}");
        return None;
    }
    assert!(
        output.status.success(),
        "the chaos run failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    let summary: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("the summary is not JSON ({e}):\n{stdout}"));
    eprintln!("{summary}");
    Some(summary)
}

fn count(summary: &Value, field: &str) -> u64 {
    summary[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no count `{field}` in {summary}"))
}

/// What every run must show: the invariants held, and the faults really happened.
fn assert_contract(summary: &Value) {
    assert_eq!(summary["ok"], Value::Bool(true), "{summary}");
    assert_eq!(count(summary, "double_executions"), 0, "{summary}");
    assert_eq!(count(summary, "double_claims"), 0, "{summary}");
    assert_eq!(count(summary, "lost_completions"), 0, "{summary}");
    assert_eq!(count(summary, "unsettled_keys"), 0, "{summary}");
    assert!(count(summary, "calls") > 0, "{summary}");
    assert!(
        count(summary, "kills") > 0,
        "no worker was killed: the run proved nothing: {summary}"
    );
    assert!(
        count(summary, "processes_started") > count(summary, "workers"),
        "no replacement was started: {summary}"
    );
    assert!(count(summary, "completed_keys") > 0, "{summary}");
}

#[test]
fn chaos_sqlite_never_runs_twice_nor_loses_a_completion_across_killed_processes() {
    let summary = short_run("sqlite", &[]).expect("SQLite is always reachable");
    assert_contract(&summary);
}

#[test]
fn chaos_postgres_never_runs_twice_nor_loses_a_completion_across_killed_processes_and_cut_connections()
 {
    // Through Coalescing, with four calls in flight per worker: batched claims and completions.
    let Some(summary) = short_run("postgres", &["--coalescing"]) else {
        return;
    };
    assert_contract(&summary);
    assert!(
        count(&summary, "cuts") > 0,
        "no connection was cut: {summary}"
    );
}
