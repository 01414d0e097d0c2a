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
            "{what}: the Sentinel schema is missing or outdated; run `sentinel init` or `Sentinel::migrate()` ({e})"
        ),
        _ => format!("{what}: {e}"),
    };
    StoreError::new(kind, message).with_source(e)
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

pub(crate) fn pool(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::unavailable(format!("could not get a database connection: {e}")).with_source(e)
}

pub(crate) fn timeout(what: &str) -> StoreError {
    StoreError::ambiguous(format!("{what}: no reply within the statement timeout"))
}

/// A column that is not where, or not what, the statement promises.
pub(crate) fn row_shape(e: tokio_postgres::Error) -> StoreError {
    StoreError::other(format!("unexpected row shape: {e}")).with_source(e)
}
