//! Which database the CLI talks to, and how its errors become exit codes.

use std::path::PathBuf;
use std::sync::Arc;

use sentinel::{Error, PgStore, Sentinel, SqliteStore, Store, StoreErrorKind};

/// An error with the exit code it maps to.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self::new(2, message)
    }
}

pub(crate) const EXIT_REFUSED: u8 = 1;
pub(crate) const EXIT_FINGERPRINT: u8 = 65;
pub(crate) const EXIT_STORE: u8 = 69;
pub(crate) const EXIT_NOT_RECORDED: u8 = 74;
pub(crate) const EXIT_BUSY: u8 = 75;
pub(crate) const EXIT_UNCERTAIN: u8 = 76;
pub(crate) const EXIT_STOPPED: u8 = 124;

/// Maps a library error to an exit code and one line of text.
pub(crate) fn fail(e: Error, url: &str) -> Failure {
    let shown = sentinel::postgres::redact_url(url);
    match e {
        Error::InvalidInput(m) => Failure::usage(m),
        Error::Store(s) => {
            let hint = match s.kind() {
                StoreErrorKind::Unavailable => format!(" (database: {shown})"),
                _ => String::new(),
            };
            Failure::new(EXIT_STORE, format!("{s}{hint}"))
        }
        Error::FingerprintMismatch { namespace, key } => Failure::new(
            EXIT_FINGERPRINT,
            format!("key {key} (namespace {namespace}) was used with another --fingerprint"),
        ),
        Error::NotRecorded(nr) => Failure::new(
            EXIT_NOT_RECORDED,
            format!(
                "the command ran (fencing token {}) but its outcome could not be recorded: {}; the key is left uncertain",
                nr.token, nr.detail
            ),
        ),
        Error::NotFound { namespace, key } => Failure::new(
            EXIT_REFUSED,
            format!("no record for key {key} in namespace {namespace}"),
        ),
        Error::Refused {
            key,
            state,
            token,
            why,
            ..
        } => Failure::new(
            EXIT_REFUSED,
            format!("refused: key {key} is {state} (fencing token {token}); {why}"),
        ),
        other => Failure::new(EXIT_REFUSED, other.to_string()),
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

/// The URL from the flag or environment, else the embedded default.
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
    if url == "sqlite::memory:" || url == "sqlite://:memory:" {
        return Err(Failure::usage(
            "sqlite::memory: is refused: nothing would be shared between runs; use a file, \
             e.g. sqlite:///var/lib/sentinel/sentinel.db",
        ));
    }
    let scheme = url.split_once(':').map_or("", |(s, _)| s);
    if !matches!(scheme, "postgres" | "postgresql" | "sqlite") {
        return Err(Failure::usage(format!(
            "unknown database URL `{}`: use postgres://…, postgresql://…, sqlite:///abs/path.db or sqlite://rel.db",
            sentinel::postgres::redact_url(&url)
        )));
    }
    Ok(url)
}

/// Opens the store; `init` creates or upgrades the schema, otherwise PostgreSQL must have one.
pub(crate) async fn open(url: &str, init: bool) -> Result<Sentinel, Failure> {
    let store: Arc<dyn Store> = if url.starts_with("sqlite:") {
        let path = SqliteStore::path_from_url(url).map_err(|e| fail(e, url))?;
        Arc::new(
            SqliteStore::builder(path)
                .open()
                .await
                .map_err(|e| fail(e, url))?,
        )
    } else {
        let schema = std::env::var("SENTINEL_PG_SCHEMA").unwrap_or_else(|_| "sentinel".into());
        let store = PgStore::builder()
            .url(url)
            .schema(schema)
            .pool_size(4)
            .build()
            .await
            .map_err(|e| fail(e, url))?;
        if init {
            store.migrate().await.map_err(|e| fail(e, url))?;
        } else {
            store.check_schema().await.map_err(|e| fail(e, url))?;
        }
        Arc::new(store)
    };
    // A run stores up to 256 KiB per stream, which JSON escaping can grow several times.
    Sentinel::builder(store)
        .max_result_bytes(4 << 20)
        .build()
        .map_err(|e| fail(e, url))
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
