//! The child side: one worker process, started by the harness as `sentinel-chaos worker …`. It
//! opens a Sentinel over the store and calls `once` on random keys until its quota is done, the
//! stop file appears, or the harness kills it. Every error is written down and the loop goes on:
//! errors are what cuts and restarts are for.

use std::fs::File;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sentinel::{Error, OpenOptions, Outcome, Sentinel};

use crate::report::{
    CallKind, CallReport, LedgerLine, Phase, append_line, execution_value, open_append,
};
use crate::rng::Rng;

/// How long a worker keeps trying to open the store at start (a restart may be in progress).
const OPEN_PATIENCE: Duration = Duration::from_secs(60);

/// The arguments the harness passes to each worker.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct WorkerArgs {
    /// Store URL (for PostgreSQL: through the harness's proxy).
    #[arg(long)]
    pub(crate) url: String,
    /// PostgreSQL schema holding Sentinel's tables.
    #[arg(long)]
    pub(crate) pg_schema: Option<String>,
    /// The shared ledger every function appends `start`/`effect` lines to.
    #[arg(long)]
    pub(crate) ledger: PathBuf,
    /// This process's own report: one JSON line per finished call.
    #[arg(long)]
    pub(crate) report: PathBuf,
    /// When this file exists, stop after the current call.
    #[arg(long)]
    pub(crate) stop_file: PathBuf,
    /// Seed of this process's key choices and sleeps.
    #[arg(long)]
    pub(crate) seed: u64,
    /// Keys to choose from (`k0` … `k{keys-1}`).
    #[arg(long)]
    pub(crate) keys: u64,
    /// Calls to finish before exiting.
    #[arg(long)]
    pub(crate) calls: u64,
    /// Lease of every call, in milliseconds.
    #[arg(long)]
    pub(crate) ttl_ms: u64,
    /// Longest the function sleeps between its start and its effect, in milliseconds.
    #[arg(long)]
    pub(crate) max_sleep_ms: u64,
    /// Batch claims and completions through `Coalescing`, with several calls in flight.
    #[arg(long)]
    pub(crate) coalescing: bool,
}

/// Runs one worker to the end of its quota.
pub(crate) fn run(args: &WorkerArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the worker's runtime")?;
    runtime.block_on(work(args))
}

async fn work(args: &WorkerArgs) -> Result<()> {
    let ttl = Duration::from_millis(args.ttl_ms);
    let sentinel = open(args, ttl).await?;
    let ledger = open_append(&args.ledger).context("opening the ledger")?;
    let report = open_append(&args.report).context("opening the report")?;
    // Through `Coalescing`, several calls are in flight at once so that batches form.
    let lanes: u64 = if args.coalescing { 4 } else { 1 };
    let claimed = std::cell::Cell::new(0u64);
    let lane = |n: u64| {
        let (sentinel, ledger, report, claimed) = (&sentinel, &ledger, &report, &claimed);
        async move {
            let mut rng = Rng::new(args.seed.wrapping_add(n));
            while claimed.get() < args.calls && !args.stop_file.exists() {
                claimed.set(claimed.get() + 1);
                one_call(args, sentinel, ttl, &mut rng, ledger, report).await?;
            }
            Ok::<(), anyhow::Error>(())
        }
    };
    let mut lanes: Vec<_> = (0..lanes).map(|n| Box::pin(lane(n))).collect();
    // Poll every lane until all are done, on this one thread.
    let mut first_error = None;
    while !lanes.is_empty() {
        let (result, i) = std::future::poll_fn(|cx| {
            for (i, l) in lanes.iter_mut().enumerate() {
                if let std::task::Poll::Ready(r) = l.as_mut().poll(cx) {
                    return std::task::Poll::Ready((r, i));
                }
            }
            std::task::Poll::Pending
        })
        .await;
        drop(lanes.swap_remove(i));
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    sentinel.shutdown().await;
    first_error.map_or(Ok(()), Err)
}

/// One call and its report line.
async fn one_call(
    args: &WorkerArgs,
    sentinel: &Sentinel,
    ttl: Duration,
    rng: &mut Rng,
    ledger: &File,
    report: &File,
) -> Result<()> {
    let pid = std::process::id();
    let key = format!("k{}", rng.below(args.keys));
    let sleep = Duration::from_millis(rng.below(args.max_sleep_ms + 1));
    let started = Instant::now();
    let at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let (result, timing) = call(sentinel, &key, ttl, sleep, ledger, pid).await;
    let returned = Instant::now();
    let mut entry = describe(&key, result);
    entry.at_ms = Some(at_ms);
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    match timing {
        Some((entered, left)) => {
            entry.claim_ms = Some(ms(entered - started));
            entry.finish_ms = Some(ms(returned - left));
        }
        None => entry.claim_ms = Some(ms(returned - started)),
    }
    if matches!(
        entry.kind,
        CallKind::Error | CallKind::Other | CallKind::Failed
    ) {
        eprintln!(
            "worker {pid}: {key}: {} {}",
            entry.kind.as_str(),
            entry.detail.as_deref().unwrap_or("")
        );
    }
    let mut line = serde_json::to_string(&entry).context("encoding a report line")?;
    line.push('\n');
    append_line(report, &line).context("writing the report")?;
    Ok(())
}

/// Opens the store and a Sentinel over it, trying again while the store is unreachable.
async fn open(args: &WorkerArgs, ttl: Duration) -> Result<Sentinel> {
    let mut options = OpenOptions::new().pool_size(2);
    if let Some(schema) = &args.pg_schema {
        options = options.pg_schema(schema);
    }
    let deadline = Instant::now() + OPEN_PATIENCE;
    let store = loop {
        match sentinel::open(&args.url, &options).await {
            Ok(store) => break store,
            Err(e) if Instant::now() < deadline => {
                eprintln!("worker {}: opening the store: {e}", std::process::id());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e).context("opening the store"),
        }
    };
    let store = if args.coalescing {
        std::sync::Arc::new(sentinel::Coalescing::new(store, 64))
    } else {
        store
    };
    Sentinel::builder(store)
        .ttl(ttl)
        .shutdown_timeout(Duration::from_secs(2))
        .build()
        .context("starting Sentinel")
}

/// When the function was entered and when it returned.
type Timing = Option<(Instant, Instant)>;

/// One call of `once`: the function writes `start`, sleeps, writes `effect`, and returns a value
/// naming its key, token and process. Also returns when the function ran, if it did.
async fn call(
    sentinel: &Sentinel,
    key: &str,
    ttl: Duration,
    sleep: Duration,
    ledger: &File,
    pid: u32,
) -> (Result<Outcome<String, String>, Error>, Timing) {
    let timing = std::cell::Cell::new(None);
    let timing_ref = &timing;
    let result = sentinel
        .once(key)
        .ttl(ttl)
        .run(|ctx| async move {
            let entered = Instant::now();
            let token = ctx.fencing_token().get();
            let io = |e: std::io::Error| format!("ledger: {e}");
            append_line(ledger, &LedgerLine::render(Phase::Start, key, token, pid)).map_err(io)?;
            tokio::time::sleep(sleep).await;
            append_line(ledger, &LedgerLine::render(Phase::Effect, key, token, pid)).map_err(io)?;
            timing_ref.set(Some((entered, Instant::now())));
            Ok(execution_value(key, token, pid))
        })
        .await;
    (result, timing.get())
}

/// The report line for one call's result.
fn describe(key: &str, result: Result<Outcome<String, String>, Error>) -> CallReport {
    let mut entry = CallReport {
        key: key.to_owned(),
        kind: CallKind::Other,
        value: None,
        token: None,
        detail: None,
        claim_ms: None,
        finish_ms: None,
        at_ms: None,
    };
    match result {
        Ok(Outcome::Completed {
            value,
            replayed,
            token,
            ..
        }) => {
            entry.kind = if replayed {
                CallKind::Replayed
            } else {
                CallKind::Completed
            };
            entry.value = Some(value);
            entry.token = Some(token.get());
        }
        Ok(Outcome::Running { token, .. }) => {
            entry.kind = CallKind::Running;
            entry.token = Some(token.get());
        }
        Ok(Outcome::Uncertain { reason, token, .. }) => {
            entry.kind = CallKind::Uncertain;
            entry.token = Some(token.get());
            entry.detail = Some(reason.as_str().to_owned());
        }
        Ok(Outcome::Failed {
            error,
            disposition,
            token,
            ..
        }) => {
            entry.kind = CallKind::Failed;
            entry.token = Some(token.get());
            entry.detail = Some(format!("{error} ({disposition:?})"));
        }
        Ok(other) => entry.detail = Some(format!("{other:?}")),
        Err(Error::NotRecorded(mut not_recorded)) => {
            entry.kind = CallKind::NotRecorded;
            entry.token = Some(not_recorded.token.get());
            entry.detail = Some(format!(
                "{:?}: {}",
                not_recorded.reason, not_recorded.detail
            ));
            entry.value = not_recorded
                .take_output::<Result<String, String>>()
                .and_then(Result::ok);
        }
        Err(e) => {
            entry.kind = CallKind::Error;
            entry.detail = Some(e.to_string());
        }
    }
    entry
}
