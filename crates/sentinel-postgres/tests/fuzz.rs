//! Property-based fuzzing of database URLs as `PgStoreBuilder` and the URL registry parse them:
//! any text is a store or a typed error, and no error message shows the password it was given.
//! Only URLs that fail to parse are built, so nothing connects. `PROPTEST_CASES` runs more.

use sentinel_core::Error;
use sentinel_postgres::PgStore;
use sentinel_testkit::proptest::prelude::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_url_that_does_not_parse_is_bad_input_without_its_password(
        password in "[A-Za-z0-9!$*+,;~._-]{6,16}",
        form in 0usize..7,
        junk in "[ -~]{0,12}",
    ) {
        let url = match form {
            0 => format!("postgres://u:{password}@h:99999{junk}/db"),
            1 => format!("postgres://u@h/db?password={password}&port=x{junk}"),
            2 => format!("host=h password={password} port=nope{junk}"),
            3 => format!("postgresql://u:{password}@h/db?sslmode=sometimes{junk}"),
            // The password itself is what fails to parse.
            4 => format!("postgres://u:{password}%zz@h/db{junk}"),
            // An unencoded '@' in it: the driver would take the rest for the host.
            5 => format!("postgres://u:{password}@{password}@db/app{junk}"),
            _ => format!("host=h password='{password} port=5432{junk}"),
        };
        if form != 5 && url.parse::<tokio_postgres::Config>().is_ok() {
            return Ok(()); // it would connect; what parses is not this test's concern
        }
        let built = runtime().block_on(PgStore::builder().url(&url).build());
        match built {
            Err(Error::InvalidInput(message)) => {
                prop_assert!(!message.contains(&password), "{} shows the password", message);
            }
            other => prop_assert!(false, "{url}: {other:?}"),
        }
    }

    #[test]
    fn any_text_parses_as_a_config_or_fails(url in "\\PC{0,60}|postgres(ql)?://[ -~]{0,60}|[a-z_]{1,8}=[ -~]{0,20}") {
        // Whatever the driver's parser makes of it, the builder stores a value or an error.
        if url.parse::<tokio_postgres::Config>().is_err() {
            let built = runtime().block_on(PgStore::builder().url(&url).build());
            prop_assert!(matches!(built, Err(Error::InvalidInput(_))), "{:?}", built.map(drop));
        }
    }
}
