//! Property-based fuzzing of the parsers that see untrusted input: keys and namespaces, database
//! URLs in messages (`redact_url`), and stored results being decoded. No input may panic; bad
//! input is a typed error. `PROPTEST_CASES` raises the number of cases (RELIABILITY.md records
//! the long runs).

use std::sync::Arc;

use sentinel_core::store::{OperatorAction, Resolution};
use sentinel_core::{
    Error, MemoryStore, Outcome, ResultKind, Sentinel, StoredResult, redact_url, validate_key,
    validate_namespace,
};
use sentinel_testkit::proptest::prelude::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// What the rules say about a key or namespace, written independently of the code.
fn acceptable(value: &str, max: usize) -> bool {
    !value.is_empty() && value.len() <= max && !value.chars().any(char::is_control)
}

/// No regression files: a failure prints its minimal input, which a test then pins.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// One of `names`, in a random mix of ASCII upper and lower case (PostgreSQL's own keys are
/// ASCII; `(?i)` in a regex would also produce Unicode case folds such as `ſ`).
fn any_case(names: &'static [&'static str]) -> impl Strategy<Value = String> {
    (prop::sample::select(names), any::<u32>()).prop_map(|(name, mask)| {
        name.chars()
            .enumerate()
            .map(|(i, c)| {
                if mask >> (i % 32) & 1 == 1 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn keys_and_namespaces_are_accepted_exactly_by_the_rules(value in "\\PC{0,3}[\\x00-\\x1f\\x7f\u{85}\u{a0}\u{2028}é😀a-z]{0,4}\\PC{0,600}") {
        prop_assert_eq!(validate_key(&value).is_ok(), acceptable(&value, 512), "key {:?}", value);
        prop_assert_eq!(validate_namespace(&value).is_ok(), acceptable(&value, 128), "namespace {:?}", value);
        if let Err(e) = validate_key(&value) {
            prop_assert!(matches!(e, Error::InvalidInput(_)));
        }
    }

    #[test]
    fn any_url_text_is_redacted_without_panicking(url in "\\PC{0,80}|[a-z]{1,8}://[ -~]{0,60}|[a-z =']{0,60}") {
        let _ = redact_url(&url);
    }

    #[test]
    fn a_userinfo_password_never_shows(
        user in "[a-z][a-z0-9_]{0,8}",
        password in "[!-~]{4,16}",
        host in "[a-z][a-z0-9.-]{0,12}(:[0-9]{1,5})?",
        tail in "(/[a-z]{1,8})?(\\?[a-z_]{1,8}=[a-z0-9@:]{0,8})?",
    ) {
        let url = format!("postgres://{user}:{password}@{host}{tail}");
        let shown = redact_url(&url);
        let without = format!("postgres://{user}:@{host}{tail}");
        prop_assume!(!without.contains(&password));
        prop_assert!(!shown.contains(&password), "{} shows {}", shown, password);
    }

    #[test]
    fn a_query_password_never_shows(
        key in any_case(&["password", "pass", "pwd", "passwd", "sslpassword", "secret"]),
        encode in any::<bool>(),
        password in "[^&#\\s]{4,16}",
        before in "(sslmode=require&)?",
        after in "(&application_name=[a-z]{1,8})?(#[a-z]{0,4})?",
    ) {
        // Percent-encoding the key's first letter must not hide it from the redactor.
        let key = if encode {
            let first = key.as_bytes()[0];
            format!("%{first:02X}{}", &key[1..])
        } else {
            key
        };
        let url = format!("postgres://u@h/db?{before}{key}={password}{after}");
        let shown = redact_url(&url);
        let without = format!("postgres://u@h/db?{before}{key}={after}");
        prop_assume!(!without.contains(&password));
        prop_assert!(!shown.contains(&password), "{} shows {}", shown, password);
    }

    #[test]
    fn a_key_value_password_never_shows(
        key in any_case(&["password", "pwd", "sslpassword"]),
        quoted in any::<bool>(),
        raw in "[!-~]{4,16}",
        spaced in "[a-z]{2,6} [a-z]{2,6}",
    ) {
        let (value, secret) = if quoted {
            let escaped = spaced.replace('\\', "\\\\").replace('\'', "\\'");
            (format!("'{escaped}'"), spaced)
        } else {
            let plain: String = raw.chars().filter(|c| *c != '\'' && *c != '\\').collect();
            (plain.clone(), plain)
        };
        prop_assume!(secret.len() >= 4);
        let conninfo = format!("host=db user=app {key}={value} dbname=test");
        let shown = redact_url(&conninfo);
        let without = format!("host=db user=app {key}= dbname=test");
        prop_assume!(!without.contains(&secret));
        prop_assert!(!shown.contains(&secret), "{} shows {}", shown, secret);
    }
}

/// Typed shapes a caller may ask a replay to decode into.
#[derive(Debug, serde::Deserialize, serde::Serialize, PartialEq)]
struct Receipt {
    id: u64,
    amount: i64,
    note: Option<String>,
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        "\\PC{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(config(64))]

    /// Whatever JSON an operator stores as a key's result (`resolve --complete --result`), or
    /// any text at all, replaying it into a typed result is that value or a typed error; the
    /// JSON an operator gave is stored and replayed byte for byte.
    #[test]
    fn stored_results_decode_or_fail_typed(value in json_value(), text in "\\PC{0,40}", kind_error in any::<bool>()) {
        let json = if text.len() % 3 == 0 { text.clone() } else { value.to_string() };
        runtime().block_on(async {
            let s = Sentinel::builder(Arc::new(MemoryStore::new())).build().unwrap();
            let action = OperatorAction::new("default", "k", "fuzz", None);
            let out: Outcome<u64, String> = s.once("k").run(|_| async { Err("boom".to_owned()) }).await.unwrap();
            prop_assert!(matches!(out, Outcome::Failed { .. }), "{:?}", out);
            s.reconcile(&action, false).await.unwrap();
            let kind = if kind_error { ResultKind::Error } else { ResultKind::Value };
            let resolved = s
                .resolve(&action, &Resolution::Complete(Some(StoredResult::new(kind, json.clone()))), None)
                .await;
            let valid = serde_json::from_str::<serde_json::Value>(&json).is_ok();
            prop_assert_eq!(resolved.is_ok(), valid, "{:?}: {:?}", json, resolved);
            if !valid {
                prop_assert!(matches!(resolved, Err(Error::InvalidInput(_))));
                return Ok(());
            }
            let stored = s.inspect("default", "k").await.unwrap().unwrap();
            prop_assert_eq!(stored.result.map(|r| r.json), Some(json.clone()));
            // Every typed view either decodes or is a codec error, never a panic.
            let as_u64 = s.once("k").run(|_| async { Ok::<u64, String>(0) }).await;
            let as_receipt = s.once("k").run(|_| async { Ok::<Receipt, Receipt>(Receipt { id: 0, amount: 0, note: None }) }).await;
            let as_value = s.once("k").run(|_| async { Ok::<serde_json::Value, serde_json::Value>(serde_json::Value::Null) }).await;
            for r in [as_u64.map(drop), as_receipt.map(drop)] {
                prop_assert!(matches!(r, Ok(()) | Err(Error::Codec(_))), "{:?}", r);
            }
            match as_value {
                Ok(Outcome::Completed { value: v, .. }) if !kind_error => {
                    prop_assert_eq!(v, serde_json::from_str::<serde_json::Value>(&json).unwrap());
                }
                Ok(Outcome::Failed { .. }) if kind_error => {}
                other => prop_assert!(false, "a JSON value did not replay: {:?}", other),
            }
            Ok(())
        })?;
    }
}
