//! The real `sentinel` binary, driven in temp dirs against SQLite and PostgreSQL.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_sentinel");

/// A temp dir and a database (a SQLite file in it, or a fresh PostgreSQL schema).
struct Env {
    dir: PathBuf,
    url: String,
    schema: Option<String>,
}

use sentinel_testkit::{test_database_url as pg_url, unique_name as unique};

impl Env {
    fn sqlite() -> Self {
        let dir = std::env::temp_dir().join(unique("sentinel_cli"));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}/sentinel.db", dir.display());
        Self {
            dir,
            url,
            schema: None,
        }
    }

    fn postgres() -> Self {
        let dir = std::env::temp_dir().join(unique("sentinel_cli"));
        std::fs::create_dir_all(&dir).unwrap();
        let env = Self {
            dir,
            url: pg_url(),
            schema: Some(unique("sentinel_cli_t").to_lowercase()),
        };
        let out = env.cmd(&["init"]).output().unwrap();
        assert!(out.status.success(), "init failed: {}", text(&out.stderr));
        env
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(["--database-url", &self.url])
            .args(args)
            .current_dir(&self.dir)
            .env_remove("SENTINEL_NAMESPACE")
            .stdin(Stdio::null());
        if let Some(s) = &self.schema {
            c.env("SENTINEL_PG_SCHEMA", s);
        }
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn inspect(&self, key: &str) -> Value {
        let out = self.run(&["inspect", key, "--json"]);
        assert!(
            out.status.success(),
            "inspect failed: {}",
            text(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
        // Best effort: the test database should not collect a schema per test run.
        if let Some(schema) = &self.schema {
            let _ = Command::new("psql")
                .args([
                    &self.url,
                    "-qc",
                    &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn sh(script: &str) -> Vec<String> {
    vec!["--".into(), "sh".into(), "-c".into(), script.into()]
}

fn run_args<'a>(key: &'a str, extra: &'a [&'a str], script: &'a [String]) -> Vec<&'a str> {
    let mut v = vec!["run", "--key", key];
    v.extend_from_slice(extra);
    v.extend(script.iter().map(String::as_str));
    v
}

/// Whether a process is gone (or a zombie waiting for its reaper).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn wait_for_file(path: &Path, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if s.ends_with('\n') {
                return s;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---- the scenarios, each run against both stores --------------------------------------------

/// The first run executes, the second replays the output and exit code.
fn run_then_replay(env: &Env) {
    let script = sh("echo hello; echo oops >&2; echo ran >> runs.log");
    let first = env.run(&run_args("k", &[], &script));
    assert_eq!(code(&first), 0, "{}", text(&first.stderr));
    let second = env.run(&run_args("k", &[], &script));
    assert_eq!(code(&second), 0);
    assert_eq!(text(&second.stdout), "hello\n");
    assert_eq!(text(&second.stderr), "oops\n");
    assert_eq!(
        std::fs::read_to_string(env.path("runs.log")).unwrap(),
        "ran\n"
    );
    let record = env.inspect("k");
    assert_eq!(record["state"], "completed");
    assert_eq!(record["result"]["exit_code"], 0);
    assert_eq!(record["result"]["stdout"], "hello\n");
    assert!(record["fencing_token"].as_u64().unwrap() > 0);
}

/// 16 processes behind a start barrier race on one key: the command runs exactly once; every
/// other runner exits 75 (the command holds the key until all of them have answered).
fn processes_race_on_one_key(env: &Env) {
    let mut children = Vec::new();
    for _ in 0..16 {
        let runner = format!(
            "while [ ! -e go ]; do sleep 0.005; done; exec {BIN} --database-url '{}' run --key race -- sh -c 'echo $$ >> count.log; while [ ! -e release ]; do sleep 0.01; done'",
            env.url
        );
        let mut c = Command::new("sh");
        c.args(["-c", &runner])
            .current_dir(&env.dir)
            .stdin(Stdio::null());
        if let Some(s) = &env.schema {
            c.env("SENTINEL_PG_SCHEMA", s);
        }
        children.push(
            c.stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    std::thread::sleep(Duration::from_millis(300)); // let the shells reach the barrier
    std::fs::write(env.path("go"), "").unwrap();
    // The winner's command waits for `release`; the 15 others must answer meanwhile.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut codes = Vec::new();
    while codes.len() < 15 {
        // One look per child: a child that exits between two looks must not be dropped
        // uncounted.
        children.retain_mut(|c| match c.try_wait().unwrap() {
            Some(status) => {
                codes.push(status.code().unwrap_or(-1));
                false
            }
            None => true,
        });
        assert!(
            Instant::now() < deadline,
            "runners did not answer: {codes:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(env.path("release"), "").unwrap();
    for mut c in children {
        codes.push(c.wait().unwrap().code().unwrap_or(-1));
    }
    let count = std::fs::read_to_string(env.path("count.log")).unwrap();
    assert_eq!(
        count.lines().count(),
        1,
        "the command ran more than once: {codes:?}"
    );
    codes.sort_unstable();
    assert_eq!(codes[0], 0, "{codes:?}");
    assert!(codes[1..].iter().all(|c| *c == 75), "{codes:?}");
}

/// A runner killed with SIGKILL takes its command with it; the key turns uncertain after the
/// ttl; an operator's reconcile + reset lets it run again with a larger token.
fn killed_runner_leaves_key_uncertain(env: &Env) {
    // The shell starts a grandchild: the whole tree must go with the runner.
    let script =
        sh("sleep 30 & echo $! > gpid; echo $SENTINEL_FENCING_TOKEN > token1; echo $$ > pid; wait");
    let mut runner = env
        .cmd(&run_args("victim", &["--ttl", "1s"], &script))
        .spawn()
        .unwrap();
    let pid: i32 = wait_for_file(&env.path("pid"), Duration::from_secs(10))
        .trim()
        .parse()
        .unwrap();
    let killed_at = Instant::now();
    runner.kill().unwrap(); // SIGKILL
    runner.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gone(pid) {
        assert!(
            Instant::now() < deadline,
            "the command {pid} outlived its runner"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Others see it running until the ttl passes, then uncertain (76).
    let marker = sh("echo must-not-run > second");
    let code76 = loop {
        let out = env.run(&run_args("victim", &[], &marker));
        match code(&out) {
            75 => std::thread::sleep(Duration::from_millis(100)),
            c => break c,
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(10),
            "still running"
        );
    };
    assert_eq!(code76, 76);
    assert!(
        killed_at.elapsed() < Duration::from_millis(1000 + 2500),
        "{:?}",
        killed_at.elapsed()
    );
    assert!(!env.path("second").exists());
    let record = env.inspect("victim");
    assert_eq!(record["state"], "uncertain");

    // Reconcile, reset: it runs again, with a larger token.
    let out = env.run(&["reconcile", "victim", "--reason", "the host died mid-run"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let token: u64 = text(&out.stdout).trim().parse().unwrap();
    let out = env.run(&[
        "resolve",
        "victim",
        "--reset",
        "--token",
        &token.to_string(),
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let out = env.run(&run_args(
        "victim",
        &[],
        &sh("echo $SENTINEL_FENCING_TOKEN > token2"),
    ));
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let t1: u64 = std::fs::read_to_string(env.path("token1"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let t2: u64 = std::fs::read_to_string(env.path("token2"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(t2 > token && token > t1, "{t1} {token} {t2}");
    let history = env.run(&["history", "victim", "--json"]);
    let events: Value = serde_json::from_slice(&history.stdout).unwrap();
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["acquired", "reconciling", "reset", "acquired", "completed"]
    );
    assert_eq!(events[1]["reason"], "the host died mid-run");
}

/// A command running several ttls keeps its lease; the lease expiry moves forward meanwhile.
fn heartbeat_keeps_a_long_command_alive(env: &Env) {
    let mut runner = env
        .cmd(&run_args(
            "long",
            &["--ttl", "1500ms"],
            &sh("echo > started; while [ ! -e release ]; do sleep 0.05; done"),
        ))
        .spawn()
        .unwrap();
    wait_for_file(&env.path("started"), Duration::from_secs(10));
    let mut leases = Vec::new();
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(1000));
        let r = env.inspect("long");
        assert_eq!(r["state"], "running", "the lease was lost: {r}");
        leases.push(r["lease_expires_at"].as_str().unwrap().to_owned());
    }
    std::fs::write(env.path("release"), "").unwrap();
    assert!(runner.wait().unwrap().success());
    assert!(leases.windows(2).all(|w| w[0] < w[1]), "{leases:?}");
    assert_eq!(env.inspect("long")["state"], "completed");
}

/// A runner paused past its ttl, reconciled by an operator, then resumed, does not complete the
/// key.
fn paused_runner_cannot_complete(env: &Env) {
    let mut runner = env
        .cmd(&run_args(
            "paused",
            &["--ttl", "1s"],
            &sh("echo > started; sleep 2; echo done > finished"),
        ))
        .spawn()
        .unwrap();
    wait_for_file(&env.path("started"), Duration::from_secs(10));
    let pid = nix::unistd::Pid::from_raw(i32::try_from(runner.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    // Wait for the lease to expire, then reconcile.
    let deadline = Instant::now() + Duration::from_secs(10);
    let token = loop {
        let out = env.run(&["reconcile", "paused"]);
        if code(&out) == 0 {
            break text(&out.stdout).trim().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "never reconcilable: {}",
            text(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // Let the command finish while the runner is still stopped.
    wait_for_file(&env.path("finished"), Duration::from_secs(10));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let status = runner.wait().unwrap();
    assert_ne!(
        status.code(),
        Some(0),
        "a fenced completion was reported as success"
    );
    let record = env.inspect("paused");
    assert_eq!(record["state"], "reconciling");
    assert_eq!(record["fencing_token"].to_string(), token);
}

/// --wait returns the replay of the run it waited for.
fn wait_returns_the_replay(env: &Env) {
    let mut first = env
        .cmd(&run_args(
            "waited",
            &[],
            &sh("echo > started; while [ ! -e release ]; do sleep 0.02; done; echo from-first"),
        ))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_file(&env.path("started"), Duration::from_secs(10));
    let busy = env.run(&run_args("waited", &[], &sh("echo second")));
    assert_eq!(code(&busy), 75);
    let mut waiter = env
        .cmd(&run_args(
            "waited",
            &["--wait", "--wait-timeout", "60s"],
            &sh("echo second"),
        ))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        waiter.try_wait().unwrap().is_none(),
        "the waiter did not wait"
    );
    std::fs::write(env.path("release"), "").unwrap();
    let waited = waiter.wait_with_output().unwrap();
    assert_eq!(code(&waited), 0);
    assert_eq!(text(&waited.stdout), "from-first\n");
    assert!(first.wait().unwrap().success());
}

/// `--namespace a prune --older-than …` deletes only namespace a's records: b's key still
/// replays instead of running again (H2). `--all-namespaces` is the explicit way to prune all.
fn prune_is_scoped_to_the_namespace(env: &Env) {
    let script = sh("echo ran >> runs.log");
    for ns in ["a", "b"] {
        let out = env.run(
            &[
                &["--namespace", ns][..],
                &run_args("charge-42", &[], &script),
            ]
            .concat(),
        );
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    }
    let pruned = env.run(&["--namespace", "a", "prune", "--older-than", "1ms"]);
    assert_eq!(code(&pruned), 0, "{}", text(&pruned.stderr));
    assert_eq!(text(&pruned.stdout), "1\n");
    let again = env.run(
        &[
            &["--namespace", "b"][..],
            &run_args("charge-42", &[], &script),
        ]
        .concat(),
    );
    assert_eq!(code(&again), 0);
    assert_eq!(
        std::fs::read_to_string(env.path("runs.log")).unwrap(),
        "ran\nran\n",
        "namespace b's completed key ran again after pruning namespace a"
    );
    let all = env.run(&["prune", "--older-than", "1ms", "--all-namespaces"]);
    assert_eq!(text(&all.stdout), "1\n", "{}", text(&all.stderr));
}

/// L13: a token no store can hand out is bad input (2), not an unreachable database (69).
fn oversized_token_is_bad_input(env: &Env) {
    let out = env.run(&["resolve", "k", "--reset", "--token", &u64::MAX.to_string()]);
    assert_eq!(code(&out), 2, "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("token"), "{}", text(&out.stderr));
}

/// Whether a process has a handler for `signal` installed (its `SigCgt` mask in /proc).
fn catches(pid: u32, signal: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (signal - 1)) != 0)
}

/// M4: a runner waiting (`--wait`) for another worker's key exits promptly on SIGTERM, with
/// 128 + 15, and never starts its command, even when the key frees up afterwards.
fn termination_while_waiting_runs_nothing(env: &Env) {
    let mut holder = env
        .cmd(&run_args(
            "k",
            &["--on-failure", "release"],
            &sh("echo > started; while [ ! -e release ]; do sleep 0.02; done; exit 1"),
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_file(&env.path("started"), Duration::from_secs(10));
    let mut waiter = env
        .cmd(&run_args(
            "k",
            &["--wait", "--wait-timeout", "1h"],
            &sh("echo ran >> waiter.log"),
        ))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !catches(waiter.id(), 15) {
        assert!(Instant::now() < deadline, "the runner never caught SIGTERM");
        std::thread::sleep(Duration::from_millis(5));
    }
    let sent = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &waiter.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let answered = loop {
        if let Some(s) = waiter.try_wait().unwrap() {
            break s;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(5),
            "SIGTERM was swallowed while the runner waited"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(answered.code(), Some(143));
    std::fs::write(env.path("release"), "").unwrap();
    assert_eq!(holder.wait().unwrap().code(), Some(1));
    assert!(
        !env.path("waiter.log").exists(),
        "the runner started its command after SIGTERM"
    );
}

/// Namespaces isolate keys.
/// L11: a command that exits while something it started still holds its output stays a zombie
/// (unreaped) until that output is drained, so its process group id cannot be reused by an
/// unrelated process that signals forwarded meanwhile would reach.
fn the_leader_stays_unreaped_while_output_drains(env: &Env) {
    let script = sh("sleep 1 & echo $$ > pid; exit 0");
    let mut runner = env
        .cmd(&run_args("drain", &[], &script))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid: i32 = wait_for_file(&env.path("pid"), Duration::from_secs(10))
        .trim()
        .parse()
        .unwrap();
    let stat = || std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
    let state = |s: &str| {
        s.rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().chars().next())
    };
    // The leader exits at once; `sleep` holds stdout for about a second.
    let deadline = Instant::now() + Duration::from_secs(5);
    let exited_at = loop {
        match stat() {
            Some(s) if state(&s) == Some(Some('Z')) => break Instant::now(),
            Some(_) => {}
            None => panic!("the leader {pid} was reaped before its output drained"),
        }
        assert!(Instant::now() < deadline, "the leader {pid} never exited");
        std::thread::sleep(Duration::from_millis(2));
    };
    // Measured, not synchronised: still a zombie well after it exited, while output drains.
    std::thread::sleep(Duration::from_millis(300));
    if exited_at.elapsed() < Duration::from_millis(800) {
        let s = stat().unwrap_or_default();
        assert_eq!(state(&s), Some(Some('Z')), "reaped during the drain: {s}");
    }
    assert!(runner.wait().unwrap().success());
}

fn namespaces_isolate(env: &Env) {
    let a = env.run(&[
        "--namespace",
        "a",
        "run",
        "--key",
        "k",
        "--",
        "echo",
        "in-a",
    ]);
    let b = env.run(&[
        "--namespace",
        "b",
        "run",
        "--key",
        "k",
        "--",
        "echo",
        "in-b",
    ]);
    assert_eq!(text(&a.stdout), "in-a\n");
    assert_eq!(text(&b.stdout), "in-b\n");
    let listed = env.run(&["--namespace", "a", "list", "--json"]);
    let all: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 1);
    assert_eq!(all[0]["namespace"], "a");
}

macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $name() { super::$name(&super::Env::sqlite()); })*
        }
        mod postgres {
            $(#[test] fn $name() { super::$name(&super::Env::postgres()); })*
        }
    };
}

both_stores!(
    run_then_replay,
    processes_race_on_one_key,
    killed_runner_leaves_key_uncertain,
    heartbeat_keeps_a_long_command_alive,
    paused_runner_cannot_complete,
    wait_returns_the_replay,
    namespaces_isolate,
    prune_is_scoped_to_the_namespace,
    oversized_token_is_bad_input,
    termination_while_waiting_runs_nothing,
);

// ---- policies, output and bad input (SQLite) --------------------------------------------------

#[test]
fn leader_stays_unreaped_while_output_drains() {
    the_leader_stays_unreaped_while_output_drains(&Env::sqlite());
}

#[test]
fn failure_policies_decide_the_key() {
    let env = Env::sqlite();
    let fail = sh("echo attempt >> attempts; exit 3");
    let out = env.run(&run_args("u", &[], &fail));
    assert_eq!(code(&out), 3);
    assert_eq!(code(&env.run(&run_args("u", &[], &fail))), 76);

    let out = env.run(&run_args("r", &["--on-failure", "release"], &fail));
    assert_eq!(code(&out), 3);
    assert_eq!(code(&env.run(&run_args("r", &[], &sh("true")))), 0);

    let out = env.run(&run_args(
        "rec",
        &["--on-failure", "record"],
        &sh("echo no; exit 4"),
    ));
    assert_eq!(code(&out), 4);
    let again = env.run(&run_args("rec", &[], &sh("echo yes")));
    assert_eq!((code(&again), text(&again.stdout)), (4, "no\n".to_owned()));

    // Killed by a signal: 128 + N.
    let out = env.run(&run_args(
        "sig",
        &["--on-failure", "record"],
        &sh("kill -9 $$"),
    ));
    assert_eq!(code(&out), 137);
    assert_eq!(env.inspect("sig")["result"]["signal"], 9);
}

#[test]
fn output_is_stored_exactly_and_cut_only_in_storage() {
    let env = Env::sqlite();
    // Not UTF-8: stored base64, replayed byte for byte.
    let out = env.run(&run_args("bin", &[], &sh("printf '\\377\\000\\001'")));
    assert_eq!(out.stdout, [0xff, 0, 1]);
    assert_eq!(env.inspect("bin")["result"]["encoding"], "base64");
    let again = env.run(&run_args("bin", &[], &sh("true")));
    assert_eq!(again.stdout, [0xff, 0, 1]);

    // Beyond the limit: the live stream is whole, the stored copy cut and marked.
    let big = sh("head -c 600000 /dev/zero | tr '\\0' x");
    let out = env.run(&run_args("big", &[], &big));
    assert_eq!(out.stdout.len(), 600_000);
    let r = env.inspect("big");
    assert_eq!(r["result"]["truncated"], true);
    assert_eq!(r["result"]["bytes_total"], 600_000);
}

#[test]
fn commands_get_their_key_and_token() {
    let env = Env::sqlite();
    let out = env.run(&[
        "--namespace",
        "ns1",
        "run",
        "--key",
        "env",
        "--",
        "sh",
        "-c",
        "echo $SENTINEL_KEY $SENTINEL_NAMESPACE $SENTINEL_FENCING_TOKEN",
    ]);
    let words: Vec<String> = text(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(words[..2], ["env".to_owned(), "ns1".to_owned()]);
    assert!(words[2].parse::<u64>().unwrap() > 0);
}

#[test]
fn fingerprints_must_match() {
    let env = Env::sqlite();
    let a = env.run(&run_args("fp", &["--fingerprint", "v1"], &sh("echo one")));
    assert_eq!(code(&a), 0);
    let b = env.run(&run_args("fp", &["--fingerprint", "v2"], &sh("echo two")));
    assert_eq!(code(&b), 65, "{}", text(&b.stderr));
    let c = env.run(&run_args("fp", &["--fingerprint", "v1"], &sh("echo two")));
    assert_eq!(text(&c.stdout), "one\n");
}

#[test]
fn hard_ceiling_stops_the_command() {
    let env = Env::sqlite();
    let started = Instant::now();
    let out = env.run(&run_args(
        "ceiling",
        &["--ttl", "1s", "--hard-ttl", "1500ms"],
        &sh("sleep 30; echo finished > finished"),
    ));
    assert_eq!(code(&out), 124, "{}", text(&out.stderr));
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert!(!env.path("finished").exists());
    assert_eq!(env.inspect("ceiling")["state"], "uncertain");
}

#[test]
fn missing_commands_release_the_key() {
    let env = Env::sqlite();
    assert_eq!(
        code(&env.run(&["run", "--key", "m", "--", "no-such-command-xyz"])),
        127
    );
    assert_eq!(
        code(&env.run(&["run", "--key", "m", "--", "/etc/passwd"])),
        126
    );
    // Nothing ran: the key is free.
    let out = env.run(&["inspect", "m"]);
    assert_ne!(code(&out), 0);
    assert_eq!(code(&env.run(&["run", "--key", "m", "--", "true"])), 0);
}

#[test]
fn bad_input_is_one_clear_line_and_a_nonzero_exit() {
    let env = Env::sqlite();
    let cases: &[(&[&str], i32)] = &[
        (&["run", "--key", "", "--", "true"], 2),
        (&["run", "--key", "k", "--ttl", "0s", "--", "true"], 2),
        (&["run", "--key", "k", "--ttl", "soon", "--", "true"], 2),
        (
            &[
                "run",
                "--key",
                "k",
                "--ttl",
                "10s",
                "--hard-ttl",
                "5s",
                "--",
                "true",
            ],
            2,
        ),
        (&["run", "--key", "k"], 2),
        (&["resolve", "k", "--complete", "--result", "{nope"], 2),
        (&["resolve", "k"], 2),
        (&["inspect", "never-ran"], 1),
        (&["forget", "never-ran"], 1),
        (&["reconcile", "never-ran"], 1),
    ];
    for (args, expected) in cases {
        let out = env.run(args);
        assert_eq!(code(&out), *expected, "{args:?}: {}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(
            !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
            "{args:?}: {err}"
        );
    }
    for (url, expected) in [
        ("sqlite::memory:", 2),
        ("mysql://u:pw@h/db", 2),
        ("postgres://u:secret@127.0.0.1:1/db", 69),
    ] {
        let out = Command::new(BIN)
            .args(["--database-url", url, "list"])
            .output()
            .unwrap();
        assert_eq!(code(&out), expected, "{url}: {}", text(&out.stderr));
        assert!(
            !text(&out.stderr).contains("secret"),
            "{}",
            text(&out.stderr)
        );
    }
    // PostgreSQL without `sentinel init` says to run it.
    let out = Command::new(BIN)
        .args(["--database-url", &pg_url(), "list"])
        .env(
            "SENTINEL_PG_SCHEMA",
            unique("never_initialised").to_lowercase(),
        )
        .output()
        .unwrap();
    assert_ne!(code(&out), 0);
    assert!(
        text(&out.stderr).contains("sentinel init"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn reconcile_refuses_live_and_completed_keys() {
    let env = Env::sqlite();
    assert_eq!(code(&env.run(&["run", "--key", "done", "--", "true"])), 0);
    let out = env.run(&["reconcile", "done"]);
    assert_eq!(code(&out), 1);
    assert!(
        text(&out.stderr).contains("completed"),
        "{}",
        text(&out.stderr)
    );
    // forget makes it runnable; prune with --older-than removes completed records.
    assert_eq!(code(&env.run(&["forget", "done", "--reason", "rerun"])), 0);
    assert_eq!(code(&env.run(&["run", "--key", "done", "--", "true"])), 0);
    std::thread::sleep(Duration::from_millis(5));
    let out = env.run(&["prune", "--older-than", "1ms"]);
    assert_eq!((code(&out), text(&out.stdout)), (0, "1\n".to_owned()));
    assert_ne!(
        code(&env.run(&["inspect", "done"])),
        0,
        "prune left the record"
    );
}

#[test]
fn default_database_is_a_sqlite_file_in_the_state_directory() {
    let dir = std::env::temp_dir().join(unique("sentinel_state"));
    let out = Command::new(BIN)
        .args(["run", "--key", "hello", "--", "echo", "hello, once"])
        .env_remove("SENTINEL_DATABASE_URL")
        .env("XDG_STATE_HOME", &dir)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(dir.join("sentinel/sentinel.db").exists());
    let help = Command::new(BIN)
        .arg("--help")
        .env("XDG_STATE_HOME", &dir)
        .output()
        .unwrap();
    assert!(text(&help.stdout).contains(&dir.join("sentinel/sentinel.db").display().to_string()));
    std::fs::remove_dir_all(&dir).ok();
}

// ---- fuzzing the operator's `--result` and what replays decode --------------------------------

mod result_fuzz {
    use super::*;
    use sentinel_testkit::proptest::prelude::*;

    /// JSON an operator might type, and run-result shapes with wrong or hostile fields.
    fn result_text() -> impl Strategy<Value = String> {
        let scalar = prop_oneof![
            Just("null".to_owned()),
            any::<i64>().prop_map(|n| n.to_string()),
            Just("1e999".to_owned()),
            Just("-0.5".to_owned()),
            "\\PC{0,12}".prop_map(|s| serde_json::Value::from(s).to_string()),
            Just("\"!!!not base64\"".to_owned()),
            Just("\"aGVsbG8=\"".to_owned()),
            Just("true".to_owned()),
        ];
        prop_oneof![
            // Not JSON at all.
            "\\PC{0,16}",
            scalar.clone(),
            // A run result, field by field right or wrong.
            (
                scalar.clone(),
                scalar.clone(),
                scalar.clone(),
                prop_oneof![
                    Just("\"utf8\""),
                    Just("\"base64\""),
                    Just("\"rot13\""),
                    Just("7")
                ],
                scalar,
            )
                .prop_map(|(code, out, err, encoding, signal)| format!(
                    "{{\"exit_code\":{code},\"signal\":{signal},\"stdout\":{out},\"stderr\":{err},\
                     \"encoding\":{encoding},\"truncated\":false,\"bytes_total\":3}}"
                )),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, failure_persistence: None, ..ProptestConfig::default() })]

        /// `resolve --complete --result JSON` accepts JSON and refuses anything else (exit 2);
        /// replaying whatever was stored exits with a code of its own, never a crash (70, 101)
        /// nor a signal.
        #[test]
        fn any_result_resolves_or_is_refused_and_replays_without_crashing(text in result_text()) {
            let env = Env::sqlite();
            prop_assert_eq!(code(&env.run(&run_args("k", &[], &sh("exit 3")))), 3);
            let reconciled = env.run(&["reconcile", "k"]);
            prop_assert!(reconciled.status.success(), "{}", text_of(&reconciled.stderr));
            let resolved = env.run(&["resolve", "k", "--complete", "--result", &text]);
            // JSON's grammar bounds no number (`1e999` is JSON), which `Value` cannot hold.
            let is_json = serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok();
            if !is_json {
                prop_assert_eq!(code(&resolved), 2, "{}", text_of(&resolved.stderr));
                return Ok(());
            }
            prop_assert!(resolved.status.success(), "{}: {}", text, text_of(&resolved.stderr));
            let replay = env.run(&run_args("k", &[], &sh("echo must-not-run")));
            let c = replay.status.code();
            prop_assert!(c.is_some(), "the replay died of a signal");
            prop_assert!(!matches!(c, Some(70 | 101)), "{}: exit {:?}: {}", text, c, text_of(&replay.stderr));
            prop_assert!(!text_of(&replay.stdout).contains("must-not-run"));
        }
    }

    fn text_of(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }
}
