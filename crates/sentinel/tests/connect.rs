//! `connect(url)` by scheme.

use sentinel::{Error, Outcome};

fn pg_url() -> String {
    std::env::var("SENTINEL_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

#[tokio::test]
async fn unknown_schemes_are_refused() {
    for url in ["mysql://x", "nonsense", "", "redis://u:secret@h/0"] {
        match sentinel::connect(url).await {
            Err(Error::InvalidInput(m)) => assert!(!m.contains("secret"), "{m}"),
            other => panic!("{url}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn postgres_url_connects_and_migrates() {
    let s = sentinel::connect(&pg_url()).await.unwrap();
    s.migrate().await.unwrap();
    let key = format!("connect-{}", std::process::id());
    let out = s
        .once(&key)
        .namespace("facade-tests")
        .run(|_| async { Ok::<u8, String>(1) })
        .await
        .unwrap();
    assert!(matches!(out, Outcome::Completed { .. }));
}

#[test]
fn blocking_connect_works_without_a_runtime() {
    let s = sentinel::blocking::connect(&pg_url()).unwrap();
    s.migrate().unwrap();
    let key = format!(
        "blocking-connect-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    );
    let out = s
        .once(&key)
        .namespace("facade-tests")
        .run(|_| Ok::<u8, String>(2))
        .unwrap();
    assert!(out.ran_here());
    let out = s
        .once(&key)
        .namespace("facade-tests")
        .run(|_| Ok::<u8, String>(3))
        .unwrap();
    assert!(matches!(
        out,
        Outcome::Completed {
            value: 2,
            replayed: true,
            ..
        }
    ));
}

#[tokio::test]
async fn sqlite_url_opens_a_file() {
    let dir = std::env::temp_dir().join(format!("sentinel-facade-{}", std::process::id()));
    let url = format!("sqlite://{}/x.db", dir.display());
    let s = sentinel::connect(&url).await.unwrap();
    let out = s
        .once("k")
        .run(|_| async { Ok::<u8, String>(1) })
        .await
        .unwrap();
    assert!(out.ran_here());
    drop(s);
    let s = sentinel::connect(&url).await.unwrap();
    let out = s
        .once("k")
        .run(|_| async { Ok::<u8, String>(2) })
        .await
        .unwrap();
    assert!(matches!(
        out,
        Outcome::Completed {
            value: 1,
            replayed: true,
            ..
        }
    ));
    std::fs::remove_dir_all(&dir).ok();
}
