//! # sentinel-chaos
//!
//! A chaos harness for Sentinel's central promise: `once(key, f)` runs `f` at most once per key
//! across processes, a completion a caller was told about is never lost, and a worker that dies
//! mid-execution leaves its key *uncertain*, never re-run (design.md §1–3).
//!
//! ```text
//! sentinel-chaos --store sqlite|postgres [--workers 8] [--calls 100000] [--keys 300]
//!                [--seconds N] [--kill-every-ms 300] [--cut-every-ms 200]
//!                [--restart-postgres] [--ttl-ms 1000] [--max-sleep-ms 20]
//!                [--coalescing] [--seed N] [--keep] [--json]
//! ```
//!
//! ## The run
//!
//! The parent sets up an isolated store — a fresh SQLite file in a temporary directory, or a
//! fresh, migrated schema on the PostgreSQL test server (`SENTINEL_TEST_DATABASE_URL`, else
//! `postgres://postgres@127.0.0.1:5432/test`), dropped at the end — and starts `--workers`
//! copies of its own binary (`sentinel-chaos worker …`, a hidden subcommand). Each worker opens
//! a Sentinel with a short lease (`--ttl-ms`, 1 s), picks random keys `k0…k{keys-1}` and calls
//! `once` with a function that appends `start <key> <token> <pid>` to a shared ledger, sleeps up
//! to `--max-sleep-ms` so that kills land mid-execution, appends `effect <key> <token> <pid>`,
//! and returns `"<key>:<token>:<pid>"`. After each call the worker appends one JSON line to its
//! own report: the key and what it was told (completed with the value, replayed with the value,
//! running, uncertain, not recorded with the function's output, or an error with its text), the
//! token, when the call started (`at_ms`, to line reports up with the store's event times) and
//! how long it took to claim (`claim_ms`) and to store the completion (`finish_ms`). Errors are
//! expected; a worker writes them down and goes on.
//!
//! Meanwhile the parent, with choices drawn from `--seed`:
//! - every `--kill-every-ms` (jittered ±50 %) SIGKILLs a random live worker and starts a
//!   replacement that owes the calls its slot has not reported yet;
//! - for PostgreSQL, runs the workers through a loopback proxy
//!   ([`sentinel_testkit::proxy::Proxy`]) and every `--cut-every-ms` arms
//!   `cut_after_next_statement`: the next statement commits on the server, its reply is lost and
//!   the connection dropped (the before/after-commit ambiguity of §3);
//! - with `--restart-postgres`, restarts the server once halfway (`pg_ctlcluster
//!   --skip-systemctl-redirect <version> main restart -m fast`; needs root or postgres, and
//!   disturbs everyone else on that server — never in the test suite).
//!
//! The run ends when the workers have reported `--calls` calls, or at the `--seconds` cap (the
//! workers then stop after their current call). The parent waits for every lease to expire
//! (ttl + 0.5 s), reads every record, the ledger and all reports.
//!
//! ## The invariants
//!
//! - **0 double executions**: at most one `effect` per key. Nothing in this harness releases or
//!   resets a key, so also at most one `start` per key (a second one is a *double claim*: two
//!   callers were told "you run it"); were there several, their tokens must grow in ledger order.
//! - **0 lost completions**: every value a worker was told completed, fresh or replayed, is the
//!   key's stored value, byte for byte (so all replays of a key agree); a fresh completion has
//!   the matching `effect` line of the process that was told; a stored value is one an execution
//!   with an effect produced, under the record's own token.
//! - **Every key ends completed, uncertain, or absent and never entered**: absent only without a
//!   `start` line (so a key with an `effect` is never absent); none left running or reconciling.
//! - **Uncertain keys are explained** by evidence about the execution that owns the record (its
//!   token), counted by cause: its function was entered by a process the harness SIGKILLed
//!   (`owner_killed`), or its owner was killed between the claim and the function
//!   (`owner_killed_before_f`), or the caller holding that token was told the outcome was not
//!   recorded (`not_recorded`), or the owner's call failed with a store error — a claim that
//!   committed while its reply was lost and could not be settled (`owner_store_error`). Cuts and
//!   restarts may leave keys uncertain on purpose; that is the design, never a re-run. An
//!   uncertain key with none of these is a violation.
//! - Any other outcome (`Failed`, a completion without result), a worker that exits on its own
//!   with an error, or a torn ledger line is a violation too.
//!
//! The summary (calls, processes started, kills, cuts, restarts, double executions, lost
//! completions, keys by state, uncertain keys by cause and by stored reason, outcomes, keys some
//! call saw uncertain that ended completed, the slowest claim and completion, elapsed time,
//! calls per second, seed) is printed as text, or with `--json` as one JSON object on
//! stdout; violations are listed one per line. Exit status: 0 when every invariant held, 1 when
//! one did not (or the harness failed), 69 when the store could not be reached at set-up
//! (nothing ran), 2 for a usage error. The run's directory (ledger, reports, worker logs) is
//! kept when the run fails or with `--keep` (which also keeps the PostgreSQL schema).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod check;
mod harness;
mod report;
mod rng;
mod setup;
mod worker;

use setup::StoreKind;

/// Chaos harness: Sentinel under SIGKILLed workers, cut connections and restarts, checked for
/// double executions and lost completions.
#[derive(Debug, Parser)]
#[command(
    name = "sentinel-chaos",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    /// The hidden worker mode the harness starts its children in.
    #[command(subcommand)]
    command: Option<Mode>,
    /// The harness's options.
    #[command(flatten)]
    run: RunArgs,
}

/// The subcommands: only the hidden worker.
#[derive(Debug, Subcommand)]
enum Mode {
    /// One worker process (started by the harness).
    #[command(hide = true)]
    Worker(worker::WorkerArgs),
}

/// The harness's options.
#[derive(Debug, clap::Args)]
#[allow(clippy::struct_excessive_bools)] // flags of a command line
pub(crate) struct RunArgs {
    /// The store to torture.
    #[arg(long, value_enum, required = true)]
    pub(crate) store: Option<StoreKind>,
    /// Worker processes running at once.
    #[arg(long, default_value_t = 8)]
    pub(crate) workers: usize,
    /// Calls to finish, over all workers.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) calls: u64,
    /// Keys the workers choose from at random (`k0` …).
    #[arg(long, default_value_t = 300)]
    pub(crate) keys: u64,
    /// Stop after this many seconds even if the calls are not done.
    #[arg(long)]
    pub(crate) seconds: Option<u64>,
    /// Mean time between two SIGKILLs of a random worker, in ms (0: never).
    #[arg(long, default_value_t = 300)]
    pub(crate) kill_every_ms: u64,
    /// Mean time between two connection cuts after commit, in ms (PostgreSQL; 0: never).
    #[arg(long, default_value_t = 200)]
    pub(crate) cut_every_ms: u64,
    /// Restart the PostgreSQL server once, halfway (disturbs every other user of it).
    #[arg(long)]
    pub(crate) restart_postgres: bool,
    /// Lease of every call, in ms; short, so that killed owners' keys turn uncertain quickly.
    #[arg(long, default_value_t = 1000)]
    pub(crate) ttl_ms: u64,
    /// Longest the function sleeps between its start and its effect, in ms.
    #[arg(long, default_value_t = 20)]
    pub(crate) max_sleep_ms: u64,
    /// Workers batch their claims and completions through `Coalescing`.
    #[arg(long)]
    pub(crate) coalescing: bool,
    /// Seed of every random choice (default: from the clock; printed in the summary).
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Keep the run's directory and PostgreSQL schema.
    #[arg(long)]
    pub(crate) keep: bool,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub(crate) json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Mode::Worker(args)) => match worker::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sentinel-chaos worker {}: {e:#}", std::process::id());
                ExitCode::from(70)
            }
        },
        None => harness::main(&cli.run),
    }
}
