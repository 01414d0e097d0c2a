//! The parent: sets up the store, keeps `--workers` worker processes running until the calls are
//! done, SIGKILLs one now and then and starts its replacement, cuts PostgreSQL connections after
//! commit, restarts the server once if asked; then reads everything back and checks it.

use std::collections::{HashMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sentinel::store::ListQuery;
use serde::Serialize;

use crate::RunArgs;
use crate::check::{Evidence, Findings, KeyRecord, check};
use crate::report::{CallReport, LedgerLine, count_new_lines, read_lines};
use crate::rng::Rng;
use crate::setup::{Prepared, StoreKind, Unreachable, restart_postgres};

/// The main loop's period: how often it counts progress, reaps workers and fires faults.
const TICK: Duration = Duration::from_millis(10);
/// How long the workers get to finish their current call after a stop (the time cap).
const STOP_GRACE: Duration = Duration::from_secs(30);
/// Added to the lease before the records are read, so that every lease of a dead owner expired.
const EXPIRY_MARGIN: Duration = Duration::from_millis(500);
/// How often progress is printed on stderr.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Exit status when the store cannot be reached at set-up (nothing ran).
const EXIT_UNREACHABLE: u8 = 69;

/// The summary of one run, printed as text or (with `--json`) as one JSON object.
#[derive(Debug, Serialize)]
pub(crate) struct Summary {
    /// True when every invariant held.
    ok: bool,
    /// `sqlite` or `postgres`.
    store: &'static str,
    /// The seed of every choice the harness made (pass `--seed` to repeat them).
    seed: u64,
    /// Worker slots.
    workers: usize,
    /// Keys the workers chose from.
    keys: u64,
    /// Calls asked for.
    calls_target: u64,
    /// Calls finished (reported by a worker).
    calls: u64,
    /// Worker processes started, replacements included.
    processes_started: u64,
    /// Workers SIGKILLed by the harness.
    kills: u64,
    /// Connection cuts armed on the proxy (each swallows the reply of the next statement).
    cuts: u64,
    /// PostgreSQL restarts.
    restarts: u64,
    /// The checks' findings (double executions, lost completions, states, causes, outcomes).
    #[serde(flatten)]
    findings: Findings,
    /// Seconds from the first worker's start to the last one's exit.
    elapsed_s: f64,
    /// Calls finished per second over that time.
    calls_per_s: f64,
    /// The run's directory (ledger, reports, worker logs), when kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    run_dir: Option<String>,
}

/// Runs the harness and prints its summary; returns the exit status.
pub(crate) fn main(args: &RunArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sentinel-chaos: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(summary) => {
            if args.json {
                match serde_json::to_string(&summary) {
                    Ok(json) => println!("{json}"),
                    Err(e) => {
                        eprintln!("sentinel-chaos: cannot encode the summary: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print_text(&summary);
            }
            if summary.ok {
                ExitCode::SUCCESS
            } else {
                if args.json {
                    for v in &summary.findings.violations {
                        eprintln!("VIOLATION: {v}");
                    }
                }
                ExitCode::FAILURE
            }
        }
        Err(e) if e.downcast_ref::<Unreachable>().is_some() => {
            eprintln!("sentinel-chaos: the store is unreachable: {e:#}");
            ExitCode::from(EXIT_UNREACHABLE)
        }
        Err(e) => {
            eprintln!("sentinel-chaos: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &RunArgs) -> Result<Summary> {
    let kind = args.store.context("--store is required")?;
    if args.restart_postgres && kind != StoreKind::Postgres {
        bail!("--restart-postgres needs --store postgres");
    }
    if args.workers == 0 || args.keys == 0 {
        bail!("--workers and --keys must be positive");
    }
    if args.ttl_ms < 100 {
        bail!("--ttl-ms must be at least 100 (Sentinel's smallest lease)");
    }
    let seed = args.seed.unwrap_or_else(fresh_seed);
    let dir = std::env::temp_dir().join(sentinel_testkit::unique_name("sentinel_chaos"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let store = Prepared::create(kind, &dir).await;
    let store = match store {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    let result = Chaos::new(args, seed, &dir, &store)?.run().await;
    // The schema goes unless asked to keep it; the files stay when the run failed.
    if !args.keep {
        store.drop_schema().await;
    }
    match result {
        Ok(mut summary) => {
            if args.keep || !summary.ok {
                summary.run_dir = Some(dir.display().to_string());
            } else {
                let _ = std::fs::remove_dir_all(&dir);
            }
            Ok(summary)
        }
        Err(e) => {
            eprintln!("sentinel-chaos: files kept in {}", dir.display());
            Err(e)
        }
    }
}

/// A seed from the clock and the pid, when none is given.
fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// Every worker process ever started, for the final reading.
#[derive(Debug)]
struct ProcessInfo {
    pid: u32,
    report: PathBuf,
}

/// A worker process alive in its slot.
#[derive(Debug)]
struct Live {
    child: Child,
    pid: u32,
    report: PathBuf,
    log: PathBuf,
    /// Calls it was asked to finish.
    quota: u64,
    /// Calls it reported so far.
    seen: u64,
    /// How far its report has been read.
    offset: u64,
}

/// One of the `--workers` places a worker process runs in; a killed worker's replacement takes
/// over its slot and its remaining calls.
#[derive(Debug)]
struct Slot {
    /// Calls this slot owes.
    share: u64,
    /// Calls finished by its processes that have ended.
    done: u64,
    live: Option<Live>,
    /// A worker failed on its own: the slot is not refilled.
    dead: bool,
}

/// The state of one run.
struct Chaos<'a> {
    args: &'a RunArgs,
    seed: u64,
    rng: Rng,
    exe: PathBuf,
    dir: &'a Path,
    store: &'a Prepared,
    ledger: PathBuf,
    stop_file: PathBuf,
    slots: Vec<Slot>,
    processes: Vec<ProcessInfo>,
    killed: HashSet<u32>,
    kills: u64,
    cuts: u64,
    restarts: u64,
    stopping: bool,
    violations: Vec<String>,
}

impl<'a> Chaos<'a> {
    fn new(args: &'a RunArgs, seed: u64, dir: &'a Path, store: &'a Prepared) -> Result<Self> {
        let exe = std::env::current_exe().context("finding this binary")?;
        let workers = u64::try_from(args.workers).context("too many workers")?;
        let slots = (0..workers)
            .map(|i| Slot {
                share: args.calls / workers + u64::from(i < args.calls % workers),
                done: 0,
                live: None,
                dead: false,
            })
            .collect();
        Ok(Self {
            args,
            seed,
            rng: Rng::new(seed),
            exe,
            dir,
            store,
            ledger: dir.join("ledger.txt"),
            stop_file: dir.join("stop"),
            slots,
            processes: Vec::new(),
            killed: HashSet::new(),
            kills: 0,
            cuts: 0,
            restarts: 0,
            stopping: false,
            violations: Vec::new(),
        })
    }

    /// Calls finished so far, over every process.
    fn calls(&self) -> u64 {
        self.slots
            .iter()
            .map(|s| s.done + s.live.as_ref().map_or(0, |l| l.seen))
            .sum()
    }

    async fn run(mut self) -> Result<Summary> {
        let started = Instant::now();
        for slot in 0..self.slots.len() {
            self.spawn(slot)?;
        }
        let elapsed = self.drive(started).await?;
        let final_calls = self.calls();
        tokio::time::sleep(Duration::from_millis(self.args.ttl_ms) + EXPIRY_MARGIN).await;
        let mut findings = self.verdict().await?;
        let mut violations = std::mem::take(&mut self.violations);
        violations.append(&mut findings.violations);
        findings.violations = violations;
        let secs = elapsed.as_secs_f64();
        Ok(Summary {
            ok: findings.ok(),
            store: self.store.kind.as_str(),
            seed: self.seed,
            workers: self.args.workers,
            keys: self.args.keys,
            calls_target: self.args.calls,
            calls: final_calls,
            processes_started: u64::try_from(self.processes.len()).unwrap_or(u64::MAX),
            kills: self.kills,
            cuts: self.cuts,
            restarts: self.restarts,
            findings,
            elapsed_s: secs,
            calls_per_s: if secs > 0.0 {
                final_calls as f64 / secs
            } else {
                0.0
            },
            run_dir: None,
        })
    }

    /// The main loop, until every slot has finished its calls (or the time cap stopped them).
    /// Returns how long the workers ran.
    async fn drive(&mut self, started: Instant) -> Result<Duration> {
        let args = self.args;
        let kill_every = Duration::from_millis(args.kill_every_ms);
        let cut_every = Duration::from_millis(args.cut_every_ms);
        let cap = args.seconds.map(Duration::from_secs);
        let mut next_kill = started + self.rng.jitter(kill_every);
        let mut next_cut = started + self.rng.jitter(cut_every);
        let mut next_progress = started + PROGRESS_EVERY;
        let mut restart: Option<tokio::task::JoinHandle<Result<()>>> = None;
        let mut restart_done = !args.restart_postgres;
        let mut stop_deadline = None;
        loop {
            tokio::time::sleep(TICK).await;
            let now = Instant::now();
            self.reap()?;
            let calls = self.calls();
            if !self.stopping && cap.is_some_and(|c| now - started >= c) {
                self.stop()?;
                stop_deadline = Some(now + STOP_GRACE);
            }
            if self.slots.iter().all(|s| s.live.is_none()) {
                if let Some(r) = restart.take() {
                    self.finish_restart(r).await;
                }
                return Ok(started.elapsed());
            }
            if stop_deadline.is_some_and(|d| now >= d) {
                eprintln!("sentinel-chaos: workers did not stop in time; killing them");
                for slot in 0..self.slots.len() {
                    self.kill(slot)?;
                }
                continue;
            }
            if self.stopping {
                continue;
            }
            if args.kill_every_ms > 0 && now >= next_kill {
                next_kill = now + self.rng.jitter(kill_every);
                let live: Vec<usize> = (0..self.slots.len())
                    .filter(|s| self.slots[*s].live.is_some())
                    .collect();
                if !live.is_empty() {
                    let slot = live[self.rng.index(live.len())];
                    self.kill(slot)?;
                }
            }
            if let Some(proxy) = &self.store.proxy {
                if args.cut_every_ms > 0 && now >= next_cut {
                    next_cut = now + self.rng.jitter(cut_every);
                    proxy.cut_after_next_statement();
                    self.cuts += 1;
                }
            }
            let halfway = calls >= args.calls / 2 || cap.is_some_and(|c| now - started >= c / 2);
            if !restart_done && halfway {
                restart_done = true;
                eprintln!("sentinel-chaos: restarting PostgreSQL");
                restart = Some(tokio::task::spawn_blocking(restart_postgres));
            }
            if restart
                .as_ref()
                .is_some_and(tokio::task::JoinHandle::is_finished)
            {
                if let Some(r) = restart.take() {
                    self.finish_restart(r).await;
                }
            }
            if now >= next_progress {
                next_progress = now + PROGRESS_EVERY;
                eprintln!(
                    "sentinel-chaos: {calls}/{} calls, {} processes, {} kills, {} cuts, {} \
                     restarts, {:.0} s",
                    args.calls,
                    self.processes.len(),
                    self.kills,
                    self.cuts,
                    self.restarts,
                    (now - started).as_secs_f64()
                );
            }
        }
    }

    async fn finish_restart(&mut self, handle: tokio::task::JoinHandle<Result<()>>) {
        match handle.await {
            Ok(Ok(())) => {
                self.restarts += 1;
                eprintln!("sentinel-chaos: PostgreSQL restarted");
            }
            Ok(Err(e)) => self
                .violations
                .push(format!("HARNESS: restarting PostgreSQL failed: {e:#}")),
            Err(e) => self
                .violations
                .push(format!("HARNESS: the restart task failed: {e}")),
        }
    }

    /// Tells every worker to stop after its current call.
    fn stop(&mut self) -> Result<()> {
        self.stopping = true;
        std::fs::write(&self.stop_file, b"stop").context("writing the stop file")
    }

    /// Starts a worker in `slot` for the calls the slot still owes.
    fn spawn(&mut self, slot: usize) -> Result<()> {
        let s = &self.slots[slot];
        let quota = s.share - s.done;
        if quota == 0 || s.dead || self.stopping {
            return Ok(());
        }
        let n = self.processes.len();
        let report = self.dir.join(format!("report-{slot}-{n}.jsonl"));
        let log = self.dir.join(format!("worker-{slot}-{n}.log"));
        let log_file = std::fs::File::create(&log).context("creating a worker log")?;
        let args = self.args;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("worker")
            .arg("--url")
            .arg(&self.store.worker_url)
            .arg("--ledger")
            .arg(&self.ledger)
            .arg("--report")
            .arg(&report)
            .arg("--stop-file")
            .arg(&self.stop_file)
            .arg("--seed")
            .arg(self.rng.next_u64().to_string())
            .arg("--keys")
            .arg(args.keys.to_string())
            .arg("--calls")
            .arg(quota.to_string())
            .arg("--ttl-ms")
            .arg(args.ttl_ms.to_string())
            .arg("--max-sleep-ms")
            .arg(args.max_sleep_ms.to_string());
        if let Some(schema) = &self.store.pg_schema {
            cmd.arg("--pg-schema").arg(schema);
        }
        if args.coalescing {
            cmd.arg("--coalescing");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().context("sharing a worker log")?)
            .stderr(log_file)
            .spawn()
            .context("starting a worker")?;
        let pid = child.id();
        self.processes.push(ProcessInfo {
            pid,
            report: report.clone(),
        });
        self.slots[slot].live = Some(Live {
            child,
            pid,
            report,
            log,
            quota,
            seen: 0,
            offset: 0,
        });
        Ok(())
    }

    /// Counts what the live workers reported and handles those that exited.
    fn reap(&mut self) -> Result<()> {
        for slot in 0..self.slots.len() {
            let Some(live) = self.slots[slot].live.as_mut() else {
                continue;
            };
            live.seen += count_new_lines(&live.report, &mut live.offset)?;
            if let Some(status) = live.child.try_wait().context("waiting for a worker")? {
                self.ended(slot, status, false)?;
            }
        }
        Ok(())
    }

    /// SIGKILLs the worker in `slot` (unless it already exited) and starts its replacement.
    fn kill(&mut self, slot: usize) -> Result<()> {
        let Some(live) = self.slots[slot].live.as_mut() else {
            return Ok(());
        };
        if let Some(status) = live.child.try_wait().context("waiting for a worker")? {
            return self.ended(slot, status, false);
        }
        let pid = Pid::from_raw(i32::try_from(live.pid).context("pid out of range")?);
        // The child is not reaped before the wait below, so its pid cannot have been reused.
        if let Err(e) = kill(pid, Signal::SIGKILL) {
            eprintln!("sentinel-chaos: kill {pid}: {e}");
        }
        let status = live.child.wait().context("waiting for a killed worker")?;
        self.ended(slot, status, true)
    }

    /// A worker exited: count its last reports, judge its exit, refill its slot.
    fn ended(&mut self, slot: usize, status: ExitStatus, we_killed: bool) -> Result<()> {
        let Some(mut live) = self.slots[slot].live.take() else {
            return Ok(());
        };
        live.seen += count_new_lines(&live.report, &mut live.offset)?;
        self.slots[slot].done += live.seen;
        if we_killed && status.signal() == Some(Signal::SIGKILL as i32) {
            self.killed.insert(live.pid);
            self.kills += 1;
        } else if status.success() {
            if live.seen < live.quota && !self.stopping {
                self.violations.push(format!(
                    "HARNESS: worker {} (slot {slot}) exited after {} of {} calls",
                    live.pid, live.seen, live.quota
                ));
                self.slots[slot].dead = true;
            }
        } else {
            self.violations.push(format!(
                "WORKER FAILED: worker {} (slot {slot}) exited with {status} after {} calls: {}",
                live.pid,
                live.seen,
                log_tail(&live.log)
            ));
            self.slots[slot].dead = true;
        }
        self.spawn(slot)
    }

    /// Reads the records, the ledger and the reports, and checks them.
    async fn verdict(&self) -> Result<Findings> {
        let sentinel = self.store.open_direct().await?;
        let records = read_records(&sentinel, Duration::from_millis(self.args.ttl_ms)).await;
        sentinel.shutdown().await;
        let records = records?;
        let (lines, torn) = read_lines(&self.ledger).context("reading the ledger")?;
        let mut malformed = u64::from(torn);
        let mut ledger = Vec::with_capacity(lines.len());
        for line in &lines {
            match LedgerLine::parse(line) {
                Some(l) => ledger.push(l),
                None => malformed += 1,
            }
        }
        let mut reports = Vec::new();
        let mut bad_reports = Vec::new();
        for p in &self.processes {
            let (lines, _) = read_lines(&p.report).context("reading a report")?;
            for line in lines {
                match serde_json::from_str::<CallReport>(&line) {
                    Ok(r) => reports.push((p.pid, r)),
                    Err(e) => bad_reports.push(format!("{}: {e}: {line}", p.report.display())),
                }
            }
        }
        let mut findings = check(&Evidence {
            records: &records,
            ledger: &ledger,
            malformed_ledger_lines: malformed,
            reports: &reports,
            killed: &self.killed,
        });
        for bad in bad_reports {
            findings
                .violations
                .push(format!("HARNESS: unreadable report line {bad}"));
        }
        Ok(findings)
    }
}

/// Every record of the run's namespace; while some are still running (a lease not yet expired
/// by the store's clock), read again for up to three leases.
async fn read_records(
    sentinel: &sentinel::Sentinel,
    ttl: Duration,
) -> Result<HashMap<String, KeyRecord>> {
    let deadline = Instant::now() + 3 * ttl;
    loop {
        let mut records = HashMap::new();
        let mut query = ListQuery::new(1000);
        query.namespace = Some(sentinel::DEFAULT_NAMESPACE.to_owned());
        loop {
            let page = sentinel.list(&query).await.context("listing the records")?;
            let Some(last) = page.last() else { break };
            query.after = Some(sentinel::store::ListCursor::of(last));
            for r in &page {
                records.insert(r.key.clone(), KeyRecord::from_record(r));
            }
        }
        let running = records
            .values()
            .any(|r| r.state == sentinel::State::Running);
        if !running || Instant::now() >= deadline {
            return Ok(records);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The last lines of a worker's log, for a failure message.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

fn print_text(s: &Summary) {
    let f = &s.findings;
    println!(
        "sentinel-chaos {} (seed {}): {}",
        s.store,
        s.seed,
        if s.ok { "PASS" } else { "FAIL" }
    );
    println!(
        "  calls            {} of {} in {:.1} s ({:.0} calls/s), {} workers, {} keys",
        s.calls, s.calls_target, s.elapsed_s, s.calls_per_s, s.workers, s.keys
    );
    println!(
        "  faults           {} processes started, {} kills, {} cuts, {} restarts",
        s.processes_started, s.kills, s.cuts, s.restarts
    );
    println!(
        "  invariants       {} double executions, {} double claims, {} lost completions",
        f.double_executions, f.double_claims, f.lost_completions
    );
    println!(
        "  keys             {} completed, {} uncertain, {} absent, {} unsettled",
        f.completed_keys, f.uncertain_keys, f.absent_keys, f.unsettled_keys
    );
    println!(
        "  slowest          claim {} ms, storing a completion {} ms",
        f.max_claim_ms, f.max_finish_ms
    );
    println!("  uncertain cause  {}", map_text(&f.uncertain_by_cause));
    println!("  uncertain reason {}", map_text(&f.uncertain_by_reason));
    println!(
        "  outcomes         {} (ledger: {} starts, {} effects; {} keys seen uncertain then \
         completed)",
        map_text(&f.outcomes),
        f.starts,
        f.effects,
        f.uncertain_then_completed_keys
    );
    for v in &f.violations {
        println!("  VIOLATION: {v}");
    }
    if f.violations_not_listed > 0 {
        println!("  … and {} more violations", f.violations_not_listed);
    }
    if let Some(dir) = &s.run_dir {
        println!("  files in {dir}");
    }
}

fn map_text(m: &std::collections::BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "-".to_owned();
    }
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}
