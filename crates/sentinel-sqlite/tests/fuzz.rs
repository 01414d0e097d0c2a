//! Property-based fuzzing of what the SQLite store decodes: rows whose columns hold whatever
//! another program (or a damaged file) left there, and database URLs. Reading them is a value or
//! a typed error, never a panic. `PROPTEST_CASES` raises the number of cases.

use std::sync::Arc;

use rusqlite::types::Value;
use sentinel_core::store::Store;
use sentinel_core::{Error, Outcome, Sentinel};
use sentinel_sqlite::SqliteStore;
use sentinel_testkit::proptest::prelude::*;

fn sql_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::Integer),
        prop_oneof![
            Just(-1i64),
            Just(0),
            Just(1),
            Just(i64::MAX),
            Just(i64::MIN)
        ]
        .prop_map(Value::Integer),
        any::<f64>().prop_map(Value::Real),
        "\\PC{0,12}".prop_map(Value::Text),
        prop_oneof![
            Just("running"),
            Just("uncertain"),
            Just("completed"),
            Just("reconciling"),
            Just("value"),
            Just("error"),
            Just("owner_died"),
            Just("{\"a\":1}"),
            Just("not json"),
        ]
        .prop_map(|s| Value::Text(s.to_owned())),
        prop::collection::vec(any::<u8>(), 0..8).prop_map(Value::Blob),
    ]
}

const COLUMNS: &[&str] = &[
    "state",
    "fencing_token",
    "owner_host",
    "owner_pid",
    "owner_attempt",
    "operator",
    "fingerprint",
    "lease_expires_at",
    "hard_expires_at",
    "created_at",
    "updated_at",
    "completed_at",
    "retain_until",
    "reason",
    "result_kind",
    "result",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn damaged_rows_read_as_values_or_typed_errors(
        damage in prop::collection::vec((prop::sample::select(COLUMNS), sql_value()), 1..4),
    ) {
        let dir = std::env::temp_dir().join(sentinel_testkit::unique_name("sentinel-sqlite-fuzz"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sentinel.db");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let result = runtime.block_on(async {
            let store = Arc::new(SqliteStore::open(&path).await.unwrap());
            let s = Sentinel::builder(store.clone()).build().unwrap();
            let out: Outcome<u64, String> = s.once("k").run(|_| async { Ok(7) }).await.unwrap();
            prop_assert!(out.ran_here());
            // Another program writes into the row; constraints the file enforces still hold.
            let conn = rusqlite::Connection::open(&path).unwrap();
            for (column, value) in &damage {
                let _ = conn.execute(
                    &format!("UPDATE executions SET {column} = ?1 WHERE key = 'k'"),
                    [value],
                );
            }
            drop(conn);
            // Reading must not panic; an error must say something.
            if let Err(e) = store.load("default", "k").await {
                prop_assert!(!e.to_string().is_empty());
            }
            if let Err(e) = store.list(&sentinel_core::store::ListQuery::new(10)).await {
                prop_assert!(!e.to_string().is_empty());
            }
            let replay: Result<Outcome<u64, String>, Error> =
                s.once("k").run(|_| async { Ok(8) }).await;
            // Any answer but a panic: a value, an outcome, or a typed error.
            prop_assert!(matches!(
                replay,
                Ok(_) | Err(Error::Store(_) | Error::Codec(_) | Error::Internal(_))
            ), "{:?}", replay);
            Ok(())
        });
        std::fs::remove_dir_all(&dir).ok();
        result?;
    }

    #[test]
    fn any_sqlite_url_parses_or_is_refused(url in "(sqlite:(//)?)?\\PC{0,40}") {
        let _ = SqliteStore::path_from_url(&url);
    }
}
