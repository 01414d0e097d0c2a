//! Mapping of driver errors into the core's `StoreError`, saying whether a commit may have
//! happened.

use sentinel_core::{StoreError, StoreErrorKind};
use tokio_postgres::error::SqlState;

/// Where the error happened: before the statement could have reached the server (getting a
/// connection, preparing) nothing can have committed; after it was sent, a lost connection
/// leaves the outcome unknown.
#[derive(Clone, Copy)]
pub(crate) enum Phase {
    Connect,
    Execute,
}

pub(crate) fn map(phase: Phase, what: &str, e: tokio_postgres::Error) -> StoreError {
    let kind = match e.code() {
        Some(code) => db_kind(code),
        None => match phase {
            Phase::Connect => StoreErrorKind::Unavailable,
            Phase::Execute => StoreErrorKind::Ambiguous,
        },
    };
    let message = match kind {
        StoreErrorKind::Schema => format!(
            "{what}: the Sentinel schema is missing or outdated; run `sentinel init` or `Sentinel::migrate()` ({})",
            describe(&e)
        ),
        _ if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => format!(
            "{what}: {}; this role lacks a privilege: creating or upgrading the schema (`sentinel \
             init`, `migrate`) needs its owner, everything else the GRANTs of docs/postgres.md",
            describe(&e)
        ),
        _ => format!("{what}: {}", describe(&e)),
    };
    StoreError::new(kind, message).with_source(e)
}

/// The driver's error in words: the server's message (with its detail) for a database error,
/// else the error and its cause (the driver's own text alone says only "db error").
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return match db.detail() {
            Some(detail) => format!("{} ({detail})", db.message()),
            None => db.message().to_owned(),
        };
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

fn db_kind(code: &SqlState) -> StoreErrorKind {
    if *code == SqlState::UNDEFINED_TABLE
        || *code == SqlState::INVALID_SCHEMA_NAME
        || *code == SqlState::UNDEFINED_FUNCTION
        || *code == SqlState::UNDEFINED_COLUMN
        || *code == SqlState::UNDEFINED_OBJECT
    {
        StoreErrorKind::Schema
    } else if *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
        || *code == SqlState::LOCK_NOT_AVAILABLE
        || *code == SqlState::QUERY_CANCELED
    {
        StoreErrorKind::Busy
    } else if code.code().starts_with("08") || code.code().starts_with("57P") {
        // connection exceptions, admin shutdown: the server went away mid-statement
        StoreErrorKind::Ambiguous
    } else {
        StoreErrorKind::Other
    }
}

/// Where connections go, in words: `host:port` (several for a multi-host URL).
pub(crate) fn target(config: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                // Never what a mis-split userinfo left before an '@'.
                Host::Tcp(h) => format!("{}:{port}", h.rsplit('@').next().unwrap_or(h)),
                Host::Unix(dir) => format!("{}/.s.PGSQL.{port}", dir.display()),
            }
        })
        .collect();
    if hosts.is_empty() {
        "localhost:5432".to_owned()
    } else {
        hosts.join(", ")
    }
}

/// Why a connection could not be made, in a person's words: `connection refused`, `timed out`,
/// `authentication failed (…)`, a name that does not resolve, or the server's own message.
pub(crate) fn connect_reason(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        return if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        {
            format!("authentication failed ({})", db.message())
        } else {
            db.message().to_owned()
        };
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
                std::io::ErrorKind::TimedOut => "timed out".to_owned(),
                _ => io.to_string(),
            };
        }
        source = s.source();
    }
    let text = e.to_string();
    if text.contains("timeout") || text.contains("timed out") {
        "timed out".to_owned()
    } else {
        text
    }
}

/// A connection that could not be opened: nothing was sent, so nothing can have committed.
pub(crate) fn connect(target: &str, e: tokio_postgres::Error) -> StoreError {
    let kind = match e.code() {
        Some(code) if db_kind(code) == StoreErrorKind::Schema => StoreErrorKind::Schema,
        _ => StoreErrorKind::Unavailable,
    };
    StoreError::new(
        kind,
        format!(
            "cannot connect to PostgreSQL at {target}: {}",
            connect_reason(&e)
        ),
    )
    .with_source(e)
}

pub(crate) fn pool(target: &str, e: deadpool_postgres::PoolError) -> StoreError {
    use deadpool_postgres::{PoolError, TimeoutType};
    match e {
        PoolError::Backend(e) => connect(target, e),
        PoolError::Timeout(TimeoutType::Wait) => StoreError::unavailable(format!(
            "no free connection to PostgreSQL at {target}: every pooled connection stayed busy"
        )),
        PoolError::Timeout(_) => StoreError::unavailable(format!(
            "cannot connect to PostgreSQL at {target}: timed out"
        )),
        other => {
            StoreError::unavailable(format!("cannot connect to PostgreSQL at {target}: {other}"))
                .with_source(other)
        }
    }
}

pub(crate) fn timeout(what: &str) -> StoreError {
    StoreError::ambiguous(format!("{what}: no reply within the statement timeout"))
}

/// A column that is not where, or not what, the statement promises.
pub(crate) fn row_shape(e: tokio_postgres::Error) -> StoreError {
    StoreError::other(format!("unexpected row shape: {e}")).with_source(e)
}
