//! The benchmark harness: Sentinel against the database's own floor, measured in one run on one
//! machine, so that ratios mean something on noisy shared hardware.
//!
//! `cargo run --release -p sentinel-bench -- [--database-url URL] [--duration 5s] [--json]`

use std::collections::HashMap;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use sentinel::{Outcome, PgStore, Sentinel, SqliteStore};
use sentinel_testkit::proxy::Proxy;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_postgres::NoTls;

/// Sentinel against the database's own floor, in one run.
#[derive(Debug, Parser)]
#[command(name = "sentinel-bench")]
struct Args {
    /// PostgreSQL to measure against.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    database_url: String,
    /// Length of each measured phase.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    duration: Duration,
    /// Rounds of alternating floor and Sentinel phases.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Length of the heartbeat-cost window (10 000 executions in flight).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    heartbeat_window: Duration,
    /// Executions in flight for the heartbeat-cost measurement.
    #[arg(long, default_value_t = 10_000)]
    heartbeat_in_flight: usize,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
    /// Only these sections (comma-separated: pg, contention, sqlite, heartbeat).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Within the PostgreSQL and SQLite sections, only these phases (e.g. sentinel_replay,
    /// sqlite_fresh), for profiling.
    #[arg(long, value_delimiter = ',')]
    phases: Vec<String>,
    /// Callers of the PostgreSQL phases (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    callers: Vec<usize>,
    /// Run every PostgreSQL and SQLite phase (PostgreSQL's with a warm-up of 100 ops) for exactly this many operations
    /// instead of --duration, and count allocations: for instruction counts under callgrind,
    /// where the difference of two runs with different --ops is the cost of the extra ops.
    #[arg(long)]
    ops: Option<u64>,
}

impl Args {
    /// How long (or how many operations) each PostgreSQL phase runs.
    fn budget(&self) -> Budget {
        self.ops.map_or(Budget::Time(self.duration), Budget::Ops)
    }

    fn warm_up(&self) -> Budget {
        if self.ops.is_some() {
            Budget::Ops(100)
        } else {
            Budget::Time(Duration::from_secs(1))
        }
    }
}

/// What bounds a phase.
#[derive(Debug, Clone, Copy)]
enum Budget {
    /// Run for this long.
    Time(Duration),
    /// Run exactly this many operations, split over the callers.
    Ops(u64),
}

impl From<Duration> for Budget {
    fn from(d: Duration) -> Self {
        Budget::Time(d)
    }
}

/// Counts allocations when [`COUNT_ALLOCS`] is set (with `--ops`), and otherwise only defers
/// to the system allocator (one relaxed load per allocation, the same for floor and Sentinel).
struct Counting;

static COUNT_ALLOCS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

fn count_alloc() {
    if COUNT_ALLOCS.load(Ordering::Relaxed) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// `GlobalAlloc` is an unsafe trait: this implementation adds a counter and hands every call,
// with its arguments unchanged, to `System`, which upholds the trait's contract.
#[allow(unsafe_code)]
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        count_alloc();
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        count_alloc();
        // SAFETY: as for `alloc`.
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        count_alloc();
        // SAFETY: `ptr` and `layout` come from this allocator, which is `System`'s.
        unsafe { std::alloc::System.realloc(ptr, layout, new) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: as for `realloc`.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().map_err(|_| format!("bad duration {s}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("bad unit in {s}")),
    }
}

/// The small struct every measured function returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Receipt {
    id: u64,
    status: String,
}

const POOL: usize = 8;

/// One measured row of the report.
#[derive(Debug, Clone, Serialize)]
struct Row {
    name: String,
    concurrency: usize,
    ops_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    statements_per_op: Option<f64>,
    /// Bytes client → server and server → client per op, on the wire (the counting pass).
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_sent_per_op: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_received_per_op: Option<f64>,
    /// Heap allocations per op in the whole process (with `--ops`).
    #[serde(skip_serializing_if = "Option::is_none")]
    allocs_per_op: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio_to_floor: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

/// Ops and latencies gathered over all rounds of one phase kind.
#[derive(Default)]
struct Samples {
    ops: u64,
    elapsed: Duration,
    latencies_us: Vec<u32>,
    allocs: u64,
}

impl Samples {
    fn row(&mut self, name: &str, concurrency: usize) -> Row {
        self.latencies_us.sort_unstable();
        // `per_mille`: 500 for the median, 990 for p99.
        let pct = |per_mille: usize| {
            if self.latencies_us.is_empty() {
                return 0.0;
            }
            let n = self.latencies_us.len() - 1;
            let i = (n * per_mille).div_ceil(1000).min(n);
            f64::from(self.latencies_us[i]) / 1000.0
        };
        Row {
            name: name.to_owned(),
            concurrency,
            ops_per_sec: self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9),
            p50_ms: pct(500),
            p99_ms: pct(990),
            statements_per_op: None,
            bytes_sent_per_op: None,
            bytes_received_per_op: None,
            allocs_per_op: COUNT_ALLOCS
                .load(Ordering::Relaxed)
                .then(|| self.allocs as f64 / self.ops.max(1) as f64),
            ratio_to_floor: None,
            note: None,
        }
    }
}

/// Runs `op(worker, i)` from `concurrency` tasks for the budget; returns what was measured.
async fn phase<F, Fut>(concurrency: usize, budget: impl Into<Budget>, op: F) -> Result<Samples>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send,
{
    let op = Arc::new(op);
    let budget = budget.into();
    let allocs_before = ALLOCS.load(Ordering::Relaxed);
    let started = Instant::now();
    let deadline = match budget {
        Budget::Time(d) => Some(started + d),
        Budget::Ops(_) => None,
    };
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let op = op.clone();
        // With an op budget, worker `w` does its share (the first ones one more).
        let share = match budget {
            Budget::Ops(n) => {
                let (c, w64) = (concurrency as u64, w as u64);
                n / c + u64::from(w64 < n % c)
            }
            Budget::Time(_) => u64::MAX,
        };
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(16_384);
            let mut i = 0u64;
            while i < share && deadline.is_none_or(|d| Instant::now() < d) {
                let t = Instant::now();
                op(w, i).await?;
                lat.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                i += 1;
            }
            anyhow::Ok(lat)
        }));
    }
    let mut samples = Samples::default();
    for t in tasks {
        let lat = t.await??;
        samples.ops += lat.len() as u64;
        samples.latencies_us.extend(lat);
    }
    samples.elapsed = started.elapsed();
    samples.allocs = ALLOCS.load(Ordering::Relaxed) - allocs_before;
    Ok(samples)
}

fn merge(into: &mut Samples, from: Samples) {
    into.ops += from.ops;
    into.allocs += from.allocs;
    into.elapsed += from.elapsed;
    into.latencies_us.extend(from.latencies_us);
}

/// Raw SQL on the same table shape: the floor Sentinel is measured against.
struct Floor {
    pool: Pool,
    schema: String,
    token: AtomicU64,
}

impl Floor {
    fn claim_sql(&self) -> String {
        format!(
            "INSERT INTO {}.executions (namespace, key, state, fencing_token, owner_host,
                 owner_pid, owner_attempt, lease_expires_at, hard_expires_at)
             VALUES ($1, $2, 'running', $3, 'bench', 1, 'attempt', now() + interval '10 s',
                 now() + interval '1 hour')
             ON CONFLICT DO NOTHING RETURNING fencing_token",
            self.schema
        )
    }

    fn complete_sql(&self) -> String {
        format!(
            "UPDATE {}.executions SET state = 'completed', result_kind = 'value',
                 result = $3::text::json, completed_at = now(), updated_at = now()
             WHERE namespace = $1 AND key = $2",
            self.schema
        )
    }

    fn replay_sql(&self) -> String {
        format!(
            "SELECT state, result::text FROM {}.executions WHERE namespace = $1 AND key = $2",
            self.schema
        )
    }

    async fn fresh(&self, key: &str) -> Result<()> {
        let c = self.pool.get().await?;
        let claim = c.prepare_cached(&self.claim_sql()).await?;
        let token = i64::try_from(self.token.fetch_add(1, Ordering::Relaxed))?;
        let rows = c.query(&claim, &[&"bench", &key, &token]).await?;
        if rows.is_empty() {
            bail!("floor claim found the key taken");
        }
        let receipt = serde_json::to_string(&Receipt {
            id: 7,
            status: "ok".into(),
        })?;
        let complete = c.prepare_cached(&self.complete_sql()).await?;
        c.execute(&complete, &[&"bench", &key, &receipt]).await?;
        Ok(())
    }

    async fn replay(&self, key: &str) -> Result<()> {
        let c = self.pool.get().await?;
        let select = c.prepare_cached(&self.replay_sql()).await?;
        let row = c.query_one(&select, &[&"bench", &key]).await?;
        let json: String = row.get(1);
        let _: Receipt = serde_json::from_str(&json)?;
        Ok(())
    }
}

fn pool(url: &str, size: usize) -> Result<Pool> {
    let mut config = tokio_postgres::Config::from_str(url)?;
    config.options("-c synchronous_commit=on");
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Ok(Pool::builder(manager).max_size(size).build()?)
}

async fn fresh_schema(url: &str, schema: &str) -> Result<PgStore> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(conn);
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await?;
    let store = PgStore::builder()
        .url(url)
        .schema(schema)
        .pool_size(POOL)
        .build()
        .await?;
    store.migrate().await?;
    Ok(store)
}

async fn sentinel_fresh(s: &Sentinel, key: String) -> Result<()> {
    let out: Outcome<Receipt, String> = s
        .once(key)
        .run(|_| async {
            Ok(Receipt {
                id: 7,
                status: "ok".into(),
            })
        })
        .await?;
    if !out.ran_here() {
        bail!("a fresh key was not run: {out:?}");
    }
    Ok(())
}

async fn sentinel_replay(s: &Sentinel, key: String) -> Result<()> {
    let out: Outcome<Receipt, String> = s
        .once(key)
        .run(|_| async { Err("must not run".to_owned()) })
        .await?;
    if !matches!(out, Outcome::Completed { replayed: true, .. }) {
        bail!("a completed key was not replayed: {out:?}");
    }
    Ok(())
}

const REPLAY_KEYS: u64 = 1000;

/// Statements per operation, counted on the wire by the testkit proxy in a separate pass (the
/// timed phases run without the proxy's extra hop).
/// Statements and bytes per op of one phase, on the wire.
#[derive(Debug, Clone, Copy)]
struct Wire {
    statements: f64,
    bytes_sent: f64,
    bytes_received: f64,
}

async fn statements_per_op(args: &Args) -> Result<HashMap<&'static str, Wire>> {
    let upstream = {
        let c = tokio_postgres::Config::from_str(&args.database_url)?;
        let host = match c.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) if h != "localhost" => h.clone(),
            _ => "127.0.0.1".into(),
        };
        format!("{host}:{}", c.get_ports().first().copied().unwrap_or(5432)).parse()?
    };
    let proxy = Proxy::start(upstream).await?;
    let c = tokio_postgres::Config::from_str(&args.database_url)?;
    let url = format!(
        "postgres://{}@{}/{}",
        c.get_user().unwrap_or("postgres"),
        proxy.addr(),
        c.get_dbname().unwrap_or("test")
    );
    let store = fresh_schema(&url, "sentinel_bench_count").await?;
    let floor = Floor {
        pool: pool(&url, 1)?,
        schema: "sentinel_bench_count".into(),
        token: AtomicU64::new(1_000_000),
    };
    let plain = Sentinel::builder(store.clone()).build()?;
    let cached = Sentinel::builder(store)
        .result_cache(10_000, Duration::from_secs(600))
        .build()?;
    const N: u64 = 200;
    // Warm every statement cache first.
    floor.fresh("warm-floor").await?;
    floor.replay("warm-floor").await?;
    sentinel_fresh(&plain, "warm".into()).await?;
    sentinel_replay(&plain, "warm".into()).await?;
    let mut out = HashMap::new();
    let count = |before: sentinel_testkit::proxy::WireCounts| {
        let now = proxy.counts();
        let per = |a: u64, b: u64| (a - b) as f64 / N as f64;
        Wire {
            statements: per(now.statements(), before.statements()),
            bytes_sent: per(now.bytes_sent, before.bytes_sent),
            bytes_received: per(now.bytes_received, before.bytes_received),
        }
    };
    let b = proxy.counts();
    for i in 0..N {
        floor.fresh(&format!("f{i}")).await?;
    }
    out.insert("floor_fresh", count(b));
    let b = proxy.counts();
    for i in 0..N {
        floor.replay(&format!("f{i}")).await?;
    }
    out.insert("floor_replay", count(b));
    let b = proxy.counts();
    for i in 0..N {
        sentinel_fresh(&plain, format!("s{i}")).await?;
    }
    out.insert("sentinel_fresh", count(b));
    let b = proxy.counts();
    for i in 0..N {
        sentinel_replay(&plain, format!("s{i}")).await?;
    }
    out.insert("sentinel_replay", count(b));
    for i in 0..N {
        sentinel_replay(&cached, format!("s{i}")).await?;
    }
    let b = proxy.counts();
    for i in 0..N {
        sentinel_replay(&cached, format!("s{i}")).await?;
    }
    out.insert("sentinel_replay_cached", count(b));
    plain.shutdown().await;
    cached.shutdown().await;
    Ok(out)
}

async fn bench_postgres(args: &Args, rows: &mut Vec<Row>) -> Result<()> {
    let counts = statements_per_op(args).await?;
    let store = fresh_schema(&args.database_url, "sentinel_bench").await?;
    fresh_schema(&args.database_url, "sentinel_bench_floor").await?;
    let floor = Arc::new(Floor {
        pool: pool(&args.database_url, POOL)?,
        schema: "sentinel_bench_floor".into(),
        token: AtomicU64::new(1),
    });
    let plain = Sentinel::builder(store.clone()).build()?;
    let cached = Sentinel::builder(store)
        .result_cache(100_000, Duration::from_secs(3600))
        .build()?;

    // Completed keys to replay, and a warm-up of every path.
    for i in 0..REPLAY_KEYS {
        floor.fresh(&format!("replay-{i}")).await?;
        sentinel_fresh(&plain, format!("replay-{i}")).await?;
    }
    let warm = args.warm_up();
    let f = floor.clone();
    phase(8, warm, move |w, i| {
        let f = f.clone();
        async move { f.fresh(&format!("warm-{w}-{i}")).await }
    })
    .await?;
    let s = plain.clone();
    phase(8, warm, move |w, i| {
        let s = s.clone();
        async move { sentinel_fresh(&s, format!("warm-{w}-{i}")).await }
    })
    .await?;
    let s = cached.clone();
    phase(8, warm, move |w, i| {
        let s = s.clone();
        async move {
            sentinel_replay(&s, format!("replay-{}", (w as u64 * 131 + i) % REPLAY_KEYS)).await
        }
    })
    .await?;

    let names = [
        "floor_fresh",
        "sentinel_fresh",
        "floor_replay",
        "sentinel_replay",
        "sentinel_replay_cached",
    ];
    let mut key_round = 0u64;
    for &c in &args.callers {
        let mut samples: HashMap<&str, Samples> = HashMap::new();
        let run = |name: &str| args.phases.is_empty() || args.phases.iter().any(|p| p == name);
        for round in 0..args.rounds {
            key_round += 1;
            let tag = format!("r{key_round}-{round}");
            let d = args.budget();
            if run("floor_fresh") {
                let (f, t) = (floor.clone(), tag.clone());
                let m = phase(c, d, move |w, i| {
                    let (f, t) = (f.clone(), t.clone());
                    async move { f.fresh(&format!("{t}-{w}-{i}")).await }
                })
                .await?;
                merge(samples.entry("floor_fresh").or_default(), m);
            }
            if run("sentinel_fresh") {
                let (s, t) = (plain.clone(), tag.clone());
                let m = phase(c, d, move |w, i| {
                    let (s, t) = (s.clone(), t.clone());
                    async move { sentinel_fresh(&s, format!("{t}-{w}-{i}")).await }
                })
                .await?;
                merge(samples.entry("sentinel_fresh").or_default(), m);
            }
            if run("floor_replay") {
                let f = floor.clone();
                let m = phase(c, d, move |w, i| {
                    let f = f.clone();
                    async move {
                        f.replay(&format!("replay-{}", (w as u64 * 131 + i) % REPLAY_KEYS))
                            .await
                    }
                })
                .await?;
                merge(samples.entry("floor_replay").or_default(), m);
            }
            if run("sentinel_replay") {
                let s = plain.clone();
                let m = phase(c, d, move |w, i| {
                    let s = s.clone();
                    async move {
                        sentinel_replay(
                            &s,
                            format!("replay-{}", (w as u64 * 131 + i) % REPLAY_KEYS),
                        )
                        .await
                    }
                })
                .await?;
                merge(samples.entry("sentinel_replay").or_default(), m);
            }
            if run("sentinel_replay_cached") {
                let s = cached.clone();
                let m = phase(c, d, move |w, i| {
                    let s = s.clone();
                    async move {
                        sentinel_replay(
                            &s,
                            format!("replay-{}", (w as u64 * 131 + i) % REPLAY_KEYS),
                        )
                        .await
                    }
                })
                .await?;
                merge(samples.entry("sentinel_replay_cached").or_default(), m);
            }
        }
        // Only what was measured (see --phases); ratios only where the floor was measured too.
        let mut made: HashMap<&str, Row> = HashMap::new();
        for name in names {
            if let Some(m) = samples.get_mut(name) {
                let mut row = m.row(name, c);
                if let Some(w) = counts.get(name) {
                    row.statements_per_op = Some(w.statements);
                    row.bytes_sent_per_op = Some(w.bytes_sent);
                    row.bytes_received_per_op = Some(w.bytes_received);
                }
                made.insert(name, row);
            }
        }
        let fresh_floor = made.get("floor_fresh").map(|r| r.ops_per_sec);
        let replay_floor = made.get("floor_replay").map(|r| r.ops_per_sec);
        for name in names {
            let Some(mut row) = made.remove(name) else {
                continue;
            };
            row.ratio_to_floor = match name {
                "sentinel_fresh" => fresh_floor.map(|f| row.ops_per_sec / f),
                "sentinel_replay" | "sentinel_replay_cached" => {
                    replay_floor.map(|f| row.ops_per_sec / f)
                }
                _ => None,
            };
            rows.push(row);
        }
    }
    // The stretch goal: at 64 callers, claims coalesced into multi-row statements, against the
    // same one-statement-per-op floor and plain Sentinel.
    if args.phases.is_empty() || args.phases.iter().any(|p| p == "coalesced") {
        const MANY: usize = 64;
        let store = fresh_schema(&args.database_url, "sentinel_bench_coalesced").await?;
        let coalesced =
            Sentinel::builder(sentinel::Coalescing::new(Arc::new(store), 64)).build()?;
        let mut floor_s = Samples::default();
        let mut plain_s = Samples::default();
        let mut coal_s = Samples::default();
        for round in 0..args.rounds {
            let d = args.duration;
            let f = floor.clone();
            merge(
                &mut floor_s,
                phase(MANY, d, move |w, i| {
                    let f = f.clone();
                    async move { f.fresh(&format!("many-{round}-{w}-{i}")).await }
                })
                .await?,
            );
            let s = plain.clone();
            merge(
                &mut plain_s,
                phase(MANY, d, move |w, i| {
                    let s = s.clone();
                    async move { sentinel_fresh(&s, format!("many-{round}-{w}-{i}")).await }
                })
                .await?,
            );
            let s = coalesced.clone();
            merge(
                &mut coal_s,
                phase(MANY, d, move |w, i| {
                    let s = s.clone();
                    async move { sentinel_fresh(&s, format!("many-{round}-{w}-{i}")).await }
                })
                .await?,
            );
        }
        let floor_row = floor_s.row("floor_fresh", MANY);
        let mut plain_row = plain_s.row("sentinel_fresh", MANY);
        let mut coal_row = coal_s.row("sentinel_fresh_coalesced", MANY);
        plain_row.ratio_to_floor = Some(plain_row.ops_per_sec / floor_row.ops_per_sec);
        coal_row.ratio_to_floor = Some(coal_row.ops_per_sec / floor_row.ops_per_sec);
        coal_row.note = Some(
            "claims and completions merged into multi-row statements (Coalescing: batches of \
             up to 64, 2 in flight each)"
                .into(),
        );
        rows.extend([floor_row, plain_row, coal_row]);
        coalesced.shutdown().await;
    }
    plain.shutdown().await;
    cached.shutdown().await;
    Ok(())
}

/// 64 callers on each of 100 keys at once: one execution per key, and what the others got.
async fn bench_contention(args: &Args, rows: &mut Vec<Row>) -> Result<()> {
    const KEYS: usize = 100;
    const CALLERS: usize = 64;
    let store = fresh_schema(&args.database_url, "sentinel_bench_contention").await?;
    let s = Sentinel::builder(store).build()?;
    let executions: Arc<Vec<AtomicUsize>> =
        Arc::new((0..KEYS).map(|_| AtomicUsize::new(0)).collect());
    let barrier = Arc::new(tokio::sync::Barrier::new(KEYS * CALLERS));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..KEYS {
        for _ in 0..CALLERS {
            let (s, e, b) = (s.clone(), executions.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                b.wait().await;
                let t = Instant::now();
                let out: Outcome<Receipt, String> = s
                    .once(format!("contended-{k}"))
                    .run(|_| async move {
                        e[k].fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok(Receipt {
                            id: k as u64,
                            status: "ok".into(),
                        })
                    })
                    .await?;
                let kind = match out {
                    Outcome::Completed {
                        replayed: false, ..
                    } => "ran",
                    Outcome::Completed { replayed: true, .. } => "replayed",
                    Outcome::Running { .. } => "running",
                    _ => "other",
                };
                anyhow::Ok((kind, t.elapsed()))
            }));
        }
    }
    let mut tally: HashMap<&str, usize> = HashMap::new();
    let mut samples = Samples::default();
    for t in tasks {
        let (kind, d) = t.await??;
        *tally.entry(kind).or_default() += 1;
        samples.ops += 1;
        samples
            .latencies_us
            .push(u32::try_from(d.as_micros()).unwrap_or(u32::MAX));
    }
    samples.elapsed = started.elapsed();
    let per_key: Vec<usize> = executions
        .iter()
        .map(|e| e.load(Ordering::SeqCst))
        .collect();
    let max = per_key.iter().copied().max().unwrap_or(0);
    let min = per_key.iter().copied().min().unwrap_or(0);
    let mut row = samples.row("contention_64x100", CALLERS * KEYS);
    row.note = Some(format!(
        "executions per key min {min} max {max}; outcomes: ran {}, running {}, replayed {}, other {}",
        tally.get("ran").unwrap_or(&0),
        tally.get("running").unwrap_or(&0),
        tally.get("replayed").unwrap_or(&0),
        tally.get("other").unwrap_or(&0),
    ));
    rows.push(row);
    s.shutdown().await;
    if max != 1 || min != 1 {
        bail!("a key did not run exactly once: {per_key:?}");
    }
    Ok(())
}

/// Raw rusqlite on the same schema, file settings and transaction shape as the store (WAL,
/// `synchronous=FULL`, `BEGIN IMMEDIATE`), called inline: the SQLite floor.
struct SqliteFloor {
    conn: std::sync::Mutex<rusqlite::Connection>,
}

impl SqliteFloor {
    async fn open(path: &std::path::Path) -> Result<Self> {
        // The store creates the schema; the floor then writes the same tables directly.
        drop(SqliteStore::open(path).await?);
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        Ok(Self {
            conn: std::sync::Mutex::new(conn),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, rusqlite::Connection> {
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn fresh(&self, key: &str) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let inserted = tx
            .prepare_cached(
                "INSERT INTO executions (namespace, key, state, fencing_token, owner_host,
                     owner_pid, owner_attempt, lease_expires_at, hard_expires_at, created_at,
                     updated_at)
                 VALUES ('bench', ?1, 'running', 1, 'bench', 1, 'attempt', 0, 0, 0, 0)
                 ON CONFLICT DO NOTHING",
            )?
            .execute([key])?;
        tx.commit()?;
        if inserted == 0 {
            bail!("floor claim found the key taken");
        }
        let receipt = serde_json::to_string(&Receipt {
            id: 7,
            status: "ok".into(),
        })?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.prepare_cached(
            "UPDATE executions SET state = 'completed', result_kind = 'value', result = ?2,
                 completed_at = 0, updated_at = 0
             WHERE namespace = 'bench' AND key = ?1",
        )?
        .execute([key, receipt.as_str()])?;
        tx.commit()?;
        Ok(())
    }

    fn replay(&self, key: &str) -> Result<()> {
        let conn = self.lock();
        let json: String = conn
            .prepare_cached("SELECT result FROM executions WHERE namespace = 'bench' AND key = ?1")?
            .query_row([key], |r| r.get(0))?;
        let _: Receipt = serde_json::from_str(&json)?;
        Ok(())
    }
}

async fn bench_sqlite(args: &Args, rows: &mut Vec<Row>) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("sentinel-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let floor = Arc::new(SqliteFloor::open(&dir.join("floor.db")).await?);
    let store = SqliteStore::open(dir.join("bench.db")).await?;
    let s = Sentinel::builder(store).build()?;
    for i in 0..REPLAY_KEYS {
        sentinel_fresh(&s, format!("replay-{i}")).await?;
        floor.fresh(&format!("replay-{i}"))?;
    }
    let run = |name: &str| args.phases.is_empty() || args.phases.iter().any(|p| p == name);
    let replay_key = |w: usize, i: u64| format!("replay-{}", (w as u64 * 131 + i) % REPLAY_KEYS);
    for &c in &args.callers {
        let mut samples: HashMap<&str, Samples> = HashMap::new();
        for round in 0..args.rounds {
            let d = args.budget();
            if run("sqlite_floor_fresh") {
                let f = floor.clone();
                let m = phase(c, d, move |w, i| {
                    let f = f.clone();
                    async move { f.fresh(&format!("c{c}-r{round}-{w}-{i}")) }
                })
                .await?;
                merge(samples.entry("sqlite_floor_fresh").or_default(), m);
            }
            if run("sqlite_fresh") {
                let s2 = s.clone();
                let m = phase(c, d, move |w, i| {
                    let s = s2.clone();
                    async move { sentinel_fresh(&s, format!("c{c}-r{round}-{w}-{i}")).await }
                })
                .await?;
                merge(samples.entry("sqlite_fresh").or_default(), m);
            }
            if run("sqlite_floor_replay") {
                let f = floor.clone();
                let m = phase(c, d, move |w, i| {
                    let f = f.clone();
                    async move { f.replay(&replay_key(w, i)) }
                })
                .await?;
                merge(samples.entry("sqlite_floor_replay").or_default(), m);
            }
            if run("sqlite_replay") {
                let s2 = s.clone();
                let m = phase(c, d, move |w, i| {
                    let s = s2.clone();
                    async move { sentinel_replay(&s, replay_key(w, i)).await }
                })
                .await?;
                merge(samples.entry("sqlite_replay").or_default(), m);
            }
        }
        let mut made: HashMap<&str, Row> = HashMap::new();
        for (name, m) in &mut samples {
            made.insert(name, m.row(name, c));
        }
        let rate = |name: &str| made.get(name).map(|r| r.ops_per_sec);
        let (fresh_floor, replay_floor) = (rate("sqlite_floor_fresh"), rate("sqlite_floor_replay"));
        for (name, floor) in [
            ("sqlite_floor_fresh", None),
            ("sqlite_fresh", fresh_floor),
            ("sqlite_floor_replay", None),
            ("sqlite_replay", replay_floor),
        ] {
            let Some(mut row) = made.remove(name) else {
                continue;
            };
            row.ratio_to_floor = floor.map(|f| row.ops_per_sec / f);
            rows.push(row);
        }
    }
    s.shutdown().await;
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

/// User + system CPU time of this process, from /proc (USER_HZ = 100 on Linux).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the ")": state is field 0, utime 11, stime 12.
    (ticks(11) + ticks(12)) / 100.0
}

/// 10 000 executions in flight at ttl 3 s: statements per second and this process's CPU.
async fn bench_heartbeat(args: &Args, rows: &mut Vec<Row>) -> Result<()> {
    let upstream = "127.0.0.1:5432".parse()?;
    let proxy = Proxy::start(upstream).await?;
    let c = tokio_postgres::Config::from_str(&args.database_url)?;
    let url = format!(
        "postgres://{}@{}/{}",
        c.get_user().unwrap_or("postgres"),
        proxy.addr(),
        c.get_dbname().unwrap_or("test")
    );
    let store = fresh_schema(&url, "sentinel_bench_heartbeat").await?;
    let s = Sentinel::builder(store).build()?;
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let started = Arc::new(AtomicUsize::new(0));
    let n = args.heartbeat_in_flight;
    let mut tasks = Vec::new();
    for i in 0..n {
        let (s, mut rx, started) = (s.clone(), release_rx.clone(), started.clone());
        tasks.push(tokio::spawn(async move {
            let out: Outcome<bool, String> = s
                .once(format!("inflight-{i}"))
                .ttl(Duration::from_secs(3))
                .run(|ctx| async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    let _ = rx.wait_for(|go| *go).await;
                    Ok(ctx.is_lease_lost())
                })
                .await?;
            anyhow::Ok(out)
        }));
    }
    while started.load(Ordering::SeqCst) < n {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let claim traffic drain, then measure only the heartbeat.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (c0, cpu0, t0) = (proxy.counts(), cpu_seconds(), Instant::now());
    tokio::time::sleep(args.heartbeat_window).await;
    let (c1, cpu1, elapsed) = (proxy.counts(), cpu_seconds(), t0.elapsed());
    release_tx.send(true)?;
    let mut lost = 0;
    for t in tasks {
        if let Outcome::Completed { value: true, .. } = t.await?? {
            lost += 1;
        }
    }
    s.shutdown().await;
    let statements = (c1.statements() - c0.statements()) as f64;
    let secs = elapsed.as_secs_f64();
    rows.push(Row {
        name: "heartbeat_10k_in_flight".into(),
        concurrency: n,
        ops_per_sec: statements / secs,
        p50_ms: 0.0,
        p99_ms: 0.0,
        statements_per_op: None,
        bytes_sent_per_op: None,
        bytes_received_per_op: None,
        allocs_per_op: None,
        ratio_to_floor: None,
        note: Some(format!(
            "{statements} heartbeat statements in {secs:.1} s ({:.2}/s at ttl 3 s); process CPU {:.2} s = {:.2} % of a core; leases lost: {lost}",
            statements / secs,
            cpu1 - cpu0,
            (cpu1 - cpu0) / secs * 100.0
        )),
    });
    Ok(())
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<26} {:>6} {:>11} {:>9} {:>9} {:>8} {:>10}",
        "name", "conc", "ops/s", "p50 ms", "p99 ms", "stmt/op", "vs floor"
    );
    for r in rows {
        println!(
            "{:<26} {:>6} {:>11.1} {:>9.3} {:>9.3} {:>8} {:>10}",
            r.name,
            r.concurrency,
            r.ops_per_sec,
            r.p50_ms,
            r.p99_ms,
            r.statements_per_op
                .map_or_else(|| "-".into(), |s| format!("{s:.2}")),
            r.ratio_to_floor
                .map_or_else(|| "-".into(), |x| format!("{x:.2}x")),
        );
        if let Some(n) = &r.note {
            println!("    {n}");
        }
    }
}

async fn main_async(args: Args) -> Result<()> {
    let want = |s: &str| args.only.is_empty() || args.only.iter().any(|o| o == s);
    let mut rows = Vec::new();
    if want("pg") {
        bench_postgres(&args, &mut rows)
            .await
            .context("postgres phases")?;
    }
    if want("contention") {
        bench_contention(&args, &mut rows)
            .await
            .context("contention")?;
    }
    if want("sqlite") {
        bench_sqlite(&args, &mut rows)
            .await
            .context("sqlite phases")?;
    }
    if want("heartbeat") {
        bench_heartbeat(&args, &mut rows)
            .await
            .context("heartbeat cost")?;
    }
    if args.json {
        println!("{}", json!({ "results": rows }));
    } else {
        print_table(&rows);
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.callers.contains(&0) {
        bail!("--callers must be at least 1");
    }
    COUNT_ALLOCS.store(args.ops.is_some(), Ordering::Relaxed);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(main_async(args))
}
