//! Command-line flags, parsed with clap and then validated into settings.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use sentinel::{FailurePolicy, State};

/// Parses the command line; on `--help`, `--version` or a usage error, prints and returns the
/// exit code.
pub(crate) fn parse() -> Result<Cli, std::process::ExitCode> {
    use clap::{CommandFactory, FromArgMatches};
    let default_db = crate::store::default_sqlite_path().map_or_else(
        || "(no state directory: set XDG_STATE_HOME or HOME)".to_owned(),
        |p| p.display().to_string(),
    );
    let after = format!(
        "Database: --database-url, else SENTINEL_DATABASE_URL, else the SQLite file\n  \
         {default_db}\n(created on first use). DATABASE_URL is deliberately not read.\n\n{}",
        crate::exit::Exit::help()
    );
    let usage = |e: clap::Error| {
        let _ = e.print();
        if e.use_stderr() {
            std::process::ExitCode::from(crate::exit::Exit::Usage.code())
        } else {
            std::process::ExitCode::SUCCESS
        }
    };
    let matches = Cli::command()
        .after_help(after)
        .try_get_matches()
        .map_err(usage)?;
    Cli::from_arg_matches(&matches).map_err(usage)
}

/// Runs work at most once per key across a fleet, and lets operators inspect and reconcile keys.
#[derive(Debug, Parser)]
#[command(name = "sentinel", version, about, max_term_width = 100)]
pub(crate) struct Cli {
    /// Database URL: postgres://…, postgresql://…, sqlite:///abs/path.db or sqlite://rel.db.
    #[arg(
        long,
        global = true,
        env = "SENTINEL_DATABASE_URL",
        hide_env_values = true
    )]
    pub(crate) database_url: Option<String>,

    /// Namespace of the keys.
    #[arg(
        long,
        global = true,
        env = "SENTINEL_NAMESPACE",
        default_value = "default"
    )]
    pub(crate) namespace: String,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create or upgrade the schema (idempotent; SQLite also does this on first use).
    Init,
    /// Run a command at most once per key; replay its stored output afterwards.
    Run(RunArgs),
    /// Show one record.
    Inspect {
        /// The key.
        key: String,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Show a key's events, oldest first.
    History {
        /// The key.
        key: String,
        /// Print one JSON array.
        #[arg(long)]
        json: bool,
        /// At most this many events.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// List records.
    List {
        /// Only records in this state.
        #[arg(long, value_enum)]
        state: Option<StateArg>,
        /// Print one JSON array.
        #[arg(long)]
        json: bool,
        /// At most this many records.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Take an uncertain key into reconciliation; prints the new fencing token.
    Reconcile {
        /// The key.
        key: String,
        /// Take over a key another operator is reconciling.
        #[arg(long)]
        force: bool,
        /// Why (recorded in the history).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Settle a key under reconciliation: it did happen (--complete) or did not (--reset).
    Resolve(ResolveArgs),
    /// Remove a completed record so the key can run again.
    Forget {
        /// The key.
        key: String,
        /// Why (recorded in the history).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Serve the operator console (pages, JSON API, /metrics) over every namespace of the store.
    Serve(ServeArgs),
    /// Delete completed records of the namespace whose retention passed (never running or
    /// uncertain ones).
    Prune {
        /// Also delete records that completed more than this long ago (e.g. 30d).
        #[arg(long, value_parser = crate::duration::parse)]
        older_than: Option<Duration>,
        /// Prune every namespace, not only --namespace.
        #[arg(long)]
        all_namespaces: bool,
    },
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The key: the command runs at most once per key.
    #[arg(long)]
    pub(crate) key: String,
    /// Lease, renewed every third of it while the command runs (e.g. 500ms, 10s, 5m).
    #[arg(long, default_value = "10s", value_parser = crate::duration::parse)]
    pub(crate) ttl: Duration,
    /// Absolute limit from the start; the command is stopped when it passes [default: the larger
    /// of --ttl and 1h].
    #[arg(long, value_parser = crate::duration::parse)]
    pub(crate) hard_ttl: Option<Duration>,
    /// When another worker holds the key, wait for its outcome instead of exiting 75.
    #[arg(long)]
    pub(crate) wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "1h", requires = "wait", value_parser = crate::duration::parse)]
    pub(crate) wait_timeout: Duration,
    /// What a failing command (non-zero exit, or killed by a signal) means for the key.
    #[arg(long, value_enum, default_value_t = OnFailure::Uncertain)]
    pub(crate) on_failure: OnFailure,
    /// A fingerprint of the request; a later run with another one exits 65 instead of
    /// replaying.
    #[arg(long)]
    pub(crate) fingerprint: Option<String>,
    /// The command and its arguments (run directly, not through a shell).
    #[arg(last = true, required = true, value_name = "CMD")]
    pub(crate) command: Vec<std::ffi::OsString>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("outcome").required(true).args(["complete", "reset"])))]
pub(crate) struct ResolveArgs {
    /// The key.
    pub(crate) key: String,
    /// The work did happen: mark the key completed (replayed from then on).
    #[arg(long)]
    pub(crate) complete: bool,
    /// The stored result, as JSON (with --complete).
    #[arg(long, requires = "complete", allow_hyphen_values = true)]
    pub(crate) result: Option<String>,
    /// The work did not happen: remove the record so the next run executes.
    #[arg(long)]
    pub(crate) reset: bool,
    /// Refuse when another operator has taken over since this token was handed out.
    #[arg(long)]
    pub(crate) token: Option<u64>,
    /// Why (recorded in the history).
    #[arg(long)]
    pub(crate) reason: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on (port 0 picks a free one; the address is printed).
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub(crate) listen: std::net::SocketAddr,
    /// Users, one per line: `name role secret` (role viewer or operator). Required to listen on
    /// anything but loopback; without it every caller is an operator recorded as
    /// SENTINEL_ACTOR or user@host.
    #[arg(long, env = "SENTINEL_AUTH_FILE")]
    pub(crate) auth_file: Option<std::path::PathBuf>,
    /// Also accept actions from pages served as this origin (e.g. https://ops.example.com),
    /// for a console behind a proxy that rewrites the Host header. Repeatable.
    #[arg(long = "allowed-origin", value_name = "URL")]
    pub(crate) allowed_origins: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum OnFailure {
    /// The key becomes uncertain and waits for an operator.
    Uncertain,
    /// The key is freed; the next run executes again.
    Release,
    /// The failure is stored and replayed.
    Record,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum StateArg {
    Running,
    Uncertain,
    Completed,
    Reconciling,
}

impl From<OnFailure> for FailurePolicy {
    fn from(p: OnFailure) -> Self {
        match p {
            OnFailure::Uncertain => FailurePolicy::Uncertain,
            OnFailure::Release => FailurePolicy::Release,
            OnFailure::Record => FailurePolicy::Record,
        }
    }
}

impl From<StateArg> for State {
    fn from(s: StateArg) -> Self {
        match s {
            StateArg::Running => State::Running,
            StateArg::Uncertain => State::Uncertain,
            StateArg::Completed => State::Completed,
            StateArg::Reconciling => State::Reconciling,
        }
    }
}
