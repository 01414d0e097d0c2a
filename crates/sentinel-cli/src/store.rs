//! Which database the CLI talks to: the URL (flag, environment or the embedded default), the
//! store opened through the facade's scheme registry, and who operator actions are recorded as.

use std::path::PathBuf;

use sentinel::{OpenOptions, SchemaSetup, Scheme, Sentinel};

use crate::cli::Command;
use crate::exit::{Failure, fail};

/// What every subcommand works on.
pub(crate) struct Target {
    pub(crate) sentinel: Sentinel,
    pub(crate) namespace: String,
    pub(crate) url: String,
}

impl Target {
    /// Opens the store; `init` creates or upgrades the schema, every other command requires one
    /// (a PostgreSQL schema that is missing is reported with what to run).
    pub(crate) async fn open(
        url: String,
        namespace: String,
        command: &Command,
    ) -> Result<Self, Failure> {
        let setup = if matches!(command, Command::Init) {
            SchemaSetup::Migrate
        } else {
            SchemaSetup::Check
        };
        let mut options = OpenOptions::new().pool_size(4).schema(setup);
        if let Ok(schema) = std::env::var("SENTINEL_PG_SCHEMA") {
            options = options.pg_schema(schema);
        }
        let store = sentinel::open(&url, &options)
            .await
            .map_err(|e| fail(e, &url))?;
        // A run stores up to 256 KiB per stream, which JSON escaping can grow several times.
        let sentinel = Sentinel::builder(store)
            .max_result_bytes(4 << 20)
            .build()
            .map_err(|e| fail(e, &url))?;
        Ok(Self {
            sentinel,
            namespace,
            url,
        })
    }
}

/// `$XDG_STATE_HOME/sentinel/sentinel.db`, else `~/.local/state/sentinel/sentinel.db`.
pub(crate) fn default_sqlite_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".local/state"))
        })?;
    Some(base.join("sentinel").join("sentinel.db"))
}

/// The URL from the flag or environment, else the embedded default; refuses what the registry
/// does not know and what would not be shared between processes.
pub(crate) fn resolve_url(flag: Option<String>) -> Result<String, Failure> {
    let url = match flag.filter(|u| !u.trim().is_empty()) {
        Some(u) => u,
        None => {
            let path = default_sqlite_path().ok_or_else(|| {
                Failure::usage(
                    "no database given and no state directory found: set --database-url, \
                     SENTINEL_DATABASE_URL, XDG_STATE_HOME or HOME",
                )
            })?;
            format!("sqlite://{}", path.display())
        }
    };
    let scheme = Scheme::parse(&url).map_err(|e| fail(e, &url))?;
    if scheme.is_process_local(&url) {
        return Err(Failure::usage(format!(
            "{} is refused: nothing would be shared between runs; use a file, e.g. \
             sqlite:///var/lib/sentinel/sentinel.db, or PostgreSQL",
            sentinel::redact_url(&url)
        )));
    }
    Ok(url)
}

/// Who an operator action is recorded as: `SENTINEL_ACTOR`, else `user@host`.
pub(crate) fn actor() -> String {
    if let Ok(a) = std::env::var("SENTINEL_ACTOR") {
        if !a.trim().is_empty() {
            return a;
        }
    }
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    format!("{user}@{host}")
}
