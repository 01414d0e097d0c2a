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
use tokio_postgres::types::{FromSql, Type};

use crate::error::row_shape;

/// One column, with a row-shape error that names it.
pub(crate) fn get<'a, T: FromSql<'a>>(row: &'a Row, i: usize) -> Result<T, StoreError> {
    row.try_get(i).map_err(row_shape)
}

/// A state as the store spells it.
pub(crate) fn state(s: &str) -> Result<State, StoreError> {
    State::from_str(s).map_err(|_| StoreError::other(format!("unknown state {s} in the store")))
}

/// Where a record's columns come from, in the order of `sql::COLS`.
trait Columns {
    /// Column `i` of the record.
    fn get<'a, T: FromSql<'a>>(&'a self, i: usize) -> Result<T, StoreError>;
}

/// A row's columns from `start` on.
struct RowColumns<'r> {
    row: &'r Row,
    start: usize,
}

impl Columns for RowColumns<'_> {
    fn get<'a, T: FromSql<'a>>(&'a self, i: usize) -> Result<T, StoreError> {
        get(self.row, self.start + i)
    }
}

/// The fields of a composite value in its binary form (`record_send`): a field count, then
/// for each field its type's oid and its length (-1 for NULL) and bytes.
struct Fields<'b> {
    fields: Vec<(Type, Option<&'b [u8]>)>,
}

impl<'b> Fields<'b> {
    fn parse(mut raw: &'b [u8]) -> Result<Self, StoreError> {
        let bad = || StoreError::other("unexpected row shape: a truncated composite value");
        let word = |raw: &mut &'b [u8]| -> Result<[u8; 4], StoreError> {
            let (head, rest) = raw.split_first_chunk::<4>().ok_or_else(bad)?;
            *raw = rest;
            Ok(*head)
        };
        let int = |raw: &mut &'b [u8]| word(raw).map(i32::from_be_bytes);
        let count = usize::try_from(int(&mut raw)?).map_err(|_| bad())?;
        let mut fields = Vec::with_capacity(count);
        for _ in 0..count {
            let oid = u32::from_be_bytes(word(&mut raw)?);
            // json's binary form is its text: read it as text.
            let ty = match Type::from_oid(oid) {
                Some(Type::JSON) => Type::TEXT,
                Some(ty) => ty,
                None => {
                    return Err(StoreError::other(format!(
                        "unexpected row shape: a composite field of type oid {oid}"
                    )));
                }
            };
            let value = match usize::try_from(int(&mut raw)?) {
                Err(_) => None, // -1: NULL
                Ok(len) => {
                    let (value, rest) = raw.split_at_checked(len).ok_or_else(bad)?;
                    raw = rest;
                    Some(value)
                }
            };
            fields.push((ty, value));
        }
        Ok(Self { fields })
    }
}

impl Columns for Fields<'_> {
    fn get<'a, T: FromSql<'a>>(&'a self, i: usize) -> Result<T, StoreError> {
        let (ty, value) = self.fields.get(i).ok_or_else(|| {
            StoreError::other(format!("unexpected row shape: no composite field {i}"))
        })?;
        if !T::accepts(ty) {
            return Err(StoreError::other(format!(
                "unexpected row shape: composite field {i} is of type {ty}"
            )));
        }
        T::from_sql_nullable(ty, *value).map_err(|e| {
            StoreError::other(format!("unexpected row shape: composite field {i}: {e}"))
        })
    }
}

/// The record whose columns start at `start`; column 0 is the statement's `now()`.
pub(crate) fn record(row: &Row, start: usize) -> Result<Record, StoreError> {
    build(&RowColumns { row, start }, get(row, 0)?)
}

/// The answer of the claim and the completion: one row of `now()`, then the row as one binary
/// composite of the table's columns (`record_send` of `executions`, whose first columns are
/// those of `sql::COLS`); `None` when the function returned no row.
pub(crate) fn composite(rows: &[Row]) -> Result<Option<Record>, StoreError> {
    let row = rows
        .first()
        .ok_or_else(|| StoreError::other("unexpected row shape: no row"))?;
    composite_at(row, 1)
}

/// The composite record in column `column` (column 0 is `now()`).
pub(crate) fn composite_at(row: &Row, column: usize) -> Result<Option<Record>, StoreError> {
    let Some(raw) = get::<Option<&[u8]>>(row, column)? else {
        return Ok(None);
    };
    build(&Fields::parse(raw)?, get(row, 0)?).map(Some)
}

/// A record from its columns, observed at `now` (the server's clock).
fn build(c: &impl Columns, now: SystemTime) -> Result<Record, StoreError> {
    let state = self::state(c.get::<&str>(2)?)?;
    let kind: Option<&str> = c.get(16)?;
    let result_text: Option<String> = c.get(17)?;
    let reason: Option<&str> = c.get(15)?;
    let result = match (kind.and_then(ResultKind::parse), result_text) {
        (Some(kind), Some(json)) => Some(StoredResult::new(kind, json)),
        _ => None,
    };
    Ok(StoredRow {
        namespace: c.get(0)?,
        key: c.get(1)?,
        state,
        fencing_token: token_from(c.get(3)?)?,
        owner: Owner::from_columns(c.get(4)?, c.get(5)?, c.get(6)?),
        operator: c.get(7)?,
        fingerprint: c.get(8)?,
        lease_expires_at: c.get(9)?,
        hard_expires_at: c.get(10)?,
        created_at: c.get(11)?,
        updated_at: c.get(12)?,
        completed_at: c.get(13)?,
        retain_until: c.get(14)?,
        reason: reason.map(UncertainReason::parse),
        result,
    }
    .into_record(now))
}

/// The completion's answer: the record after it, or fenced when the function returned none.
pub(crate) fn completed(rows: &[Row]) -> Result<Write, StoreError> {
    Ok(match composite(rows)? {
        Some(record) => Write::Applied(Some(record)),
        None => Write::Fenced,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A composite's binary form: fields of (oid, value or NULL).
    fn composite(fields: &[(u32, Option<&[u8]>)]) -> Vec<u8> {
        let mut out = i32::try_from(fields.len()).unwrap().to_be_bytes().to_vec();
        for (oid, value) in fields {
            out.extend(oid.to_be_bytes());
            match value {
                Some(v) => {
                    out.extend(i32::try_from(v.len()).unwrap().to_be_bytes());
                    out.extend(*v);
                }
                None => out.extend((-1i32).to_be_bytes()),
            }
        }
        out
    }

    #[test]
    fn composite_fields_decode_by_their_types_with_json_as_text() {
        let raw = composite(&[
            (Type::TEXT.oid(), Some(b"key")),
            (Type::INT8.oid(), Some(&7i64.to_be_bytes())),
            (Type::JSON.oid(), Some(br#"{"a":1}"#)),
            (Type::TEXT.oid(), None),
        ]);
        let f = Fields::parse(&raw).unwrap();
        assert_eq!(f.get::<String>(0).unwrap(), "key");
        assert_eq!(f.get::<i64>(1).unwrap(), 7);
        assert_eq!(f.get::<String>(2).unwrap(), r#"{"a":1}"#);
        assert_eq!(f.get::<Option<String>>(3).unwrap(), None);
        assert!(
            f.get::<i64>(0).is_err(),
            "a text field is not read as a number"
        );
        assert!(f.get::<String>(4).is_err(), "past the last field");
    }

    #[test]
    fn malformed_composites_are_errors_not_panics() {
        let whole = composite(&[(Type::TEXT.oid(), Some(b"key"))]);
        for cut in 0..whole.len() {
            assert!(Fields::parse(&whole[..cut]).is_err(), "cut at {cut}");
        }
        let unknown = composite(&[(999_999, Some(b"x"))]);
        assert!(Fields::parse(&unknown).is_err());
        let negative = (-5i32).to_be_bytes();
        assert!(Fields::parse(&negative).is_err());
    }
}
