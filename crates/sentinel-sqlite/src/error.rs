//! Mapping of SQLite errors into the core's `StoreError`, in words an operator can act on.

use rusqlite::ErrorCode;
use sentinel_core::{StoreError, StoreErrorKind};

pub(crate) fn map(path: &str, what: &str, e: &rusqlite::Error) -> StoreError {
    let (kind, message) = match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => (
            StoreErrorKind::Busy,
            format!("{path}: {what}: the database stayed locked by another process"),
        ),
        Some(ErrorCode::ReadOnly) => (
            StoreErrorKind::Other,
            format!("{path}: {what}: the database is read-only"),
        ),
        Some(ErrorCode::NotADatabase) => (
            StoreErrorKind::Schema,
            format!("{path}: {what}: the file is not a SQLite database"),
        ),
        Some(ErrorCode::CannotOpen) => (
            StoreErrorKind::Unavailable,
            format!("{path}: {what}: cannot open the database file"),
        ),
        Some(ErrorCode::DiskFull) => (
            StoreErrorKind::Other,
            format!("{path}: {what}: the disk is full"),
        ),
        _ => (StoreErrorKind::Other, format!("{path}: {what}: {e}")),
    };
    StoreError::new(kind, message)
}

pub(crate) fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}
