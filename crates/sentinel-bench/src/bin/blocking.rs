//! The Rust blocking facade measured the way `bench/python/bench.py` measures a Python package:
//! the same thread counts, key scheme, value and phases, so that the Python package's own
//! overhead is the ratio of the two.
//!
//! `cargo run --release -p sentinel-bench --bin blocking -- --database-url URL --duration 3s`

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use sentinel::{OpenOptions, Outcome, Sentinel, blocking};
use serde_json::{Value, json};

/// The blocking facade's fresh and replayed calls, as one JSON document.
#[derive(Debug, Parser)]
#[command(name = "blocking")]
struct Args {
    /// The store to measure against.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    database_url: String,
    /// Length of each measured phase, in seconds.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Thread counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    threads: Vec<usize>,
    /// Keys written before the replay phases and cycled through by them.
    #[arg(long, default_value_t = 1000)]
    replay_keys: usize,
}

fn receipt(n: usize) -> Value {
    json!({"id": n, "status": "ok"})
}

fn call(sentinel: &blocking::Sentinel, key: String, n: usize) -> Result<bool> {
    let outcome = sentinel
        .once(key)
        .ttl(Duration::from_millis(3000))
        .run(|_| Ok::<_, Value>(receipt(n)))?;
    match outcome {
        Outcome::Completed { replayed, .. } => Ok(replayed),
        other => bail!("unexpected outcome {other:?}"),
    }
}

/// Runs `op(thread, i)` on `threads` threads for `duration`; returns (ops/s, p50 µs, p99 µs).
fn measure<F>(threads: usize, duration: Duration, op: F) -> Result<(f64, f64, f64)>
where
    F: Fn(usize, usize) -> Result<()> + Send + Sync + 'static,
{
    let op = Arc::new(op);
    let barrier = Arc::new(Barrier::new(threads + 1));
    let start = Arc::new(std::sync::OnceLock::<Instant>::new());
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (op, barrier, start) = (op.clone(), barrier.clone(), start.clone());
            thread::spawn(move || -> Result<Vec<Duration>> {
                barrier.wait();
                let deadline = *start.get().context("start not set")? + duration;
                let mut latencies = Vec::new();
                for i in 0.. {
                    let began = Instant::now();
                    if began >= deadline {
                        break;
                    }
                    op(t, i)?;
                    latencies.push(began.elapsed());
                }
                Ok(latencies)
            })
        })
        .collect();
    let began = Instant::now();
    start.set(began).ok();
    barrier.wait();
    let mut all = Vec::new();
    for w in workers {
        all.extend(
            w.join()
                .map_err(|_| anyhow::anyhow!("a worker panicked"))??,
        );
    }
    let elapsed = began.elapsed().as_secs_f64();
    all.sort_unstable();
    // The sample at `per_mille`/1000 of the sorted latencies, in µs.
    let pct = |per_mille: usize| {
        all.get((all.len() * per_mille / 1000).min(all.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    Ok((all.len() as f64 / elapsed, pct(500), pct(990)))
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.duration <= 0.0 || args.threads.contains(&0) || args.replay_keys == 0 {
        bail!("--duration, --threads and --replay-keys must be positive");
    }
    let duration = Duration::from_secs_f64(args.duration);
    // Opened on a runtime that lives as long as the process, as the Python package does.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let store = runtime
        .block_on(sentinel::open(&args.database_url, &OpenOptions::new()))
        .context("open the store")?;
    runtime.block_on(store.migrate())?;
    let sentinel = blocking::Sentinel::new(Sentinel::builder(store).build()?);
    let run = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos()
    );

    let replay_keys: Arc<Vec<String>> = Arc::new(
        (0..args.replay_keys)
            .map(|j| format!("rust-{run}-r-{j}"))
            .collect(),
    );
    for (j, key) in replay_keys.iter().enumerate() {
        call(&sentinel, key.clone(), j)?;
    }

    let mut results = Vec::new();
    for &threads in &args.threads {
        let (s, r) = (sentinel.clone(), run.clone());
        let fresh = measure(threads, duration, move |t, i| {
            if call(&s, format!("rust-{r}-f{threads}-{t}-{i}"), i)? {
                bail!("a fresh key was replayed");
            }
            Ok(())
        })?;
        let (s, keys) = (sentinel.clone(), replay_keys.clone());
        let replay = measure(threads, duration, move |t, i| {
            let key = keys[(t * 7919 + i) % keys.len()].clone();
            if !call(&s, key, i)? {
                bail!("a replayed key ran again");
            }
            Ok(())
        })?;
        for (phase, (ops, p50, p99)) in [("fresh", fresh), ("replay", replay)] {
            results.push(json!({
                "name": format!("rust_blocking_{phase}"),
                "concurrency": threads,
                "ops_per_sec": ops,
                "p50_us": p50,
                "p99_us": p99,
            }));
        }
    }
    sentinel.shutdown();
    println!("{}", json!({ "results": results }));
    Ok(())
}
