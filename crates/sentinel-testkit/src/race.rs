//! Races on many keys, in one process or several, with executions counted outside Sentinel: in an
//! append-only file, one `write(2)` per line (`O_APPEND` keeps lines whole across processes).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use sentinel_core::{Outcome, Sentinel};
use tokio::sync::Barrier;

/// `tasks` tasks, released together, each call `once` on all `keys` keys (each task in its own
/// order); the function appends the key to `log` and takes 20 ms. Returns how many calls found
/// the key running (the proof that contention happened). Any other outcome or error panics.
pub async fn race(s: &Sentinel, tasks: usize, keys: usize, log: &Path) -> usize {
    let barrier = Arc::new(Barrier::new(tasks));
    let log = Arc::new(log.to_path_buf());
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (s, barrier, log) = (s.clone(), barrier.clone(), log.clone());
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut busy = 0usize;
            for i in 0..keys {
                let key = format!("key-{}", (i * 7 + t) % keys);
                let (k, log) = (key.clone(), log.clone());
                let out: Outcome<u8, String> = s
                    .once(&key)
                    .run(|_| async move {
                        let mut f = std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(&*log)
                            .unwrap();
                        f.write_all(format!("{k}\n").as_bytes()).unwrap();
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok(1)
                    })
                    .await
                    .unwrap();
                match out {
                    Outcome::Running { .. } => busy += 1,
                    Outcome::Completed { .. } => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
            busy
        }));
    }
    let mut busy = 0;
    for h in handles {
        busy += h.await.unwrap();
    }
    busy
}

/// Asserts that each of `keys` keys ran exactly once according to `log`, and that some calls
/// met a running key.
pub fn assert_each_key_ran_once(log: &Path, keys: usize, busy: usize) {
    let text = std::fs::read_to_string(log).unwrap();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for line in text.lines() {
        *counts.entry(line).or_default() += 1;
    }
    assert_eq!(counts.len(), keys, "every key ran");
    assert!(
        counts.values().all(|c| *c == 1),
        "a key ran twice: {counts:?}"
    );
    assert!(busy > 0, "no contention happened: the test proved nothing");
}

const READY: &str = "race-worker-ready";
const BUSY: &str = "race-worker-busy=";

/// Runs `processes` copies of the current test binary as `test` (with `--exact`), each with
/// `env` set so that it plays a racer ([`worker`]); releases them together once all are ready
/// and returns the sum of what they report.
pub fn race_processes(test: &str, processes: usize, env: &[(&str, &str)]) -> usize {
    let exe = std::env::current_exe().unwrap();
    let mut children: Vec<_> = (0..processes)
        .map(|_| {
            let mut c = Command::new(&exe);
            c.args([test, "--exact", "--nocapture", "--test-threads=1"]);
            for (k, v) in env {
                c.env(k, v);
            }
            c.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut outputs: Vec<_> = children
        .iter_mut()
        .map(|c| BufReader::new(c.stdout.take().unwrap()))
        .collect();
    for out in &mut outputs {
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "a worker died before it was ready:\n{seen}"
            );
            seen.push_str(&line);
            // libtest may print "test name ... " on the same line first.
            if line.trim_end().ends_with(READY) {
                break;
            }
        }
    }
    for c in &mut children {
        c.stdin.take().unwrap().write_all(b"go\n").unwrap();
    }
    let mut total = 0;
    for (mut c, mut out) in children.into_iter().zip(outputs) {
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        assert!(c.wait().unwrap().success(), "a worker failed:\n{rest}");
        total += rest
            .lines()
            .find_map(|l| l.split_once(BUSY).map(|(_, n)| n))
            .and_then(|n| n.trim().parse::<usize>().ok())
            .expect("a worker printed no count");
    }
    total
}

/// The child side of [`race_processes`]: says it is ready, waits for the start, runs `work` and
/// reports its count.
pub async fn worker<F: std::future::Future<Output = usize>>(work: impl FnOnce() -> F) {
    println!("{READY}");
    std::io::stdout().flush().unwrap();
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    let busy = work().await;
    println!("{BUSY}{busy}");
    std::io::stdout().flush().unwrap();
}
