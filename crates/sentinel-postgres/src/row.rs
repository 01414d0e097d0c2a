//! Decoding of result rows: the record columns (`sql::COLS`, after a leading `now()` and
//! optional flags), events, and the flags and positions statements return.

use std::str::FromStr;
use std::time::SystemTime;

use sentinel_core::store::columns::token_from;
use sentinel_core::store::{OperatorResponse, Write};
use sentinel_core::{
    Event, EventKind, Owner, Record, ResultKind, State, StoreError, StoredResult, StoredRow,
    UncertainReason,
};
use tokio_postgres::Row;
use tokio_postgres::types::FromSql;

use crate::error::row_shape;

/// One column, with a row-shape error that names it.
pub(crate) fn get<'a, T: FromSql<'a>>(row: &'a Row, i: usize) -> Result<T, StoreError> {
    row.try_get(i).map_err(row_shape)
}

/// A state as the store spells it.
pub(crate) fn state(s: &str) -> Result<State, StoreError> {
    State::from_str(s).map_err(|_| StoreError::other(format!("unknown state {s} in the store")))
}

/// The record whose columns start at `start`; column 0 is the statement's `now()`.
pub(crate) fn record(row: &Row, start: usize) -> Result<Record, StoreError> {
    let now: SystemTime = get(row, 0)?;
    let at = |i: usize| start + i;
    let state = self::state(&get::<String>(row, at(2))?)?;
    let kind: Option<String> = get(row, at(16))?;
    let result_text: Option<String> = get(row, at(17))?;
    let reason: Option<String> = get(row, at(15))?;
    let result = match (kind.as_deref().and_then(ResultKind::parse), result_text) {
        (Some(kind), Some(json)) => Some(StoredResult::new(kind, json)),
        _ => None,
    };
    Ok(StoredRow {
        namespace: get(row, start)?,
        key: get(row, at(1))?,
        state,
        fencing_token: token_from(get(row, at(3))?)?,
        owner: Owner::from_columns(get(row, at(4))?, get(row, at(5))?, get(row, at(6))?),
        operator: get(row, at(7))?,
        fingerprint: get(row, at(8))?,
        lease_expires_at: get(row, at(9))?,
        hard_expires_at: get(row, at(10))?,
        created_at: get(row, at(11))?,
        updated_at: get(row, at(12))?,
        completed_at: get(row, at(13))?,
        retain_until: get(row, at(14))?,
        reason: reason.as_deref().map(UncertainReason::parse),
        result,
    }
    .into_record(now))
}

/// A fenced write's answer: the record after it (columns from 1), or fenced when no row came.
pub(crate) fn write(rows: &[Row]) -> Result<Write, StoreError> {
    match rows.first() {
        Some(row) => Ok(Write::Applied(Some(record(row, 1)?))),
        None => Ok(Write::Fenced),
    }
}

/// An operator statement's answer: `now(), applied, record…`, or no row when the key is absent.
pub(crate) fn operator_response(rows: &[Row]) -> Result<OperatorResponse, StoreError> {
    let Some(row) = rows.first() else {
        return Ok(OperatorResponse::NotFound);
    };
    let applied: bool = get(row, 1)?;
    let record = record(row, 2)?;
    Ok(if applied {
        OperatorResponse::Applied(Some(record))
    } else {
        OperatorResponse::Refused(record)
    })
}

/// A 1-based input position (`WITH ORDINALITY`) as an index below `len`.
pub(crate) fn position(row: &Row, column: usize, len: usize) -> Result<usize, StoreError> {
    let ord: i64 = get(row, column)?;
    usize::try_from(ord - 1)
        .ok()
        .filter(|i| *i < len)
        .ok_or_else(|| StoreError::other(format!("statement returned input position {ord}")))
}

/// One row of `sql.history`.
pub(crate) fn event(row: &Row) -> Result<Event, StoreError> {
    let kind: String = get(row, 0)?;
    Ok(Event::new(
        EventKind::parse(&kind)
            .ok_or_else(|| StoreError::other(format!("unknown event {kind} in the store")))?,
        token_from(get(row, 1)?)?,
        Owner::from_columns(get(row, 2)?, get(row, 3)?, get(row, 4)?),
        get(row, 5)?,
        get(row, 6)?,
        get(row, 7)?,
    ))
}
