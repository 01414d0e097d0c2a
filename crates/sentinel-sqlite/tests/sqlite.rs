//! SQLite-specific behaviour: several OS processes on one file, a killed process, replays
//! without the write lock, and bad files.

use std::io::{BufRead, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use sentinel_core::{Error, Outcome, Sentinel, StoreErrorKind};
use sentinel_sqlite::SqliteStore;
use sentinel_testkit::race;

type Out = Outcome<u64, String>;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sentinel-sqlite-{name}-{}-{}",
        std::process::id(),
        sentinel_core::Owner::current().attempt
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Spawns this test binary as a child running `test` with `env` set; returns the child with
/// piped stdin/stdout.
fn spawn_self(test: &str, env: &[(&str, &str)]) -> std::process::Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Reads a child's stdout until a line ends with `marker` (libtest may print the test name
/// first on the same line).
fn wait_for(out: &mut impl BufRead, marker: &str) -> String {
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "child exited before `{marker}`:\n{seen}"
        );
        seen.push_str(&line);
        if line.trim_end().ends_with(marker) {
            return seen;
        }
    }
}

/// 8 OS processes × 16 tasks race on 50 keys of one file: one execution per key (counted in an
/// append-only file), contention really happened, and no "database is locked" reached a caller
/// (any error fails a worker). Run with `SENTINEL_SQLITE_RACE_DB` set, this test is one of the
/// racing processes, which open (and create) the file at the same time.
#[test]
fn processes_race_on_one_file() {
    const KEYS: usize = 50;
    if let Ok(db) = std::env::var("SENTINEL_SQLITE_RACE_DB") {
        let log = std::env::var("SENTINEL_SQLITE_RACE_LOG").unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        return rt.block_on(async move {
            let s = Sentinel::builder(SqliteStore::open(db).await.unwrap())
                .build()
                .unwrap();
            race::worker(|| async { race::race(&s, 16, KEYS, log.as_ref()).await }).await;
        });
    }
    let dir = temp_dir("race");
    let (db, log) = (dir.join("race.db"), dir.join("executions.log"));
    let busy = race::race_processes(
        "processes_race_on_one_file",
        8,
        &[
            ("SENTINEL_SQLITE_RACE_DB", db.to_str().unwrap()),
            ("SENTINEL_SQLITE_RACE_LOG", log.to_str().unwrap()),
        ],
    );
    race::assert_each_key_ran_once(&log, KEYS, busy);
    std::fs::remove_dir_all(&dir).ok();
}

/// A process killed with SIGKILL mid-execution leaves its key running until the ttl passes, then
/// uncertain for everyone else; nothing runs it again. Run with `SENTINEL_SQLITE_VICTIM_DB` set,
/// this test is the victim.
#[test]
fn process_killed_mid_execution_leaves_key_uncertain() {
    if let Ok(db) = std::env::var("SENTINEL_SQLITE_VICTIM_DB") {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let s = Sentinel::builder(SqliteStore::open(&db).await.unwrap())
                .build()
                .unwrap();
            let _: Out = s
                .once("victim")
                .ttl(Duration::from_millis(500))
                .run(|_| async {
                    println!("victim-started");
                    std::io::stdout().flush().unwrap();
                    std::future::pending::<()>().await;
                    Ok(1)
                })
                .await
                .unwrap();
        });
        return;
    }
    let dir = temp_dir("victim");
    let db = dir.join("victim.db");
    let mut child = spawn_self(
        "process_killed_mid_execution_leaves_key_uncertain",
        &[("SENTINEL_SQLITE_VICTIM_DB", db.to_str().unwrap())],
    );
    let mut out = BufReader::new(child.stdout.take().unwrap());
    wait_for(&mut out, "victim-started");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let s = Sentinel::builder(SqliteStore::open(&db).await.unwrap())
            .build()
            .unwrap();
        sentinel_testkit::assert_uncertain_after_expiry(&s, "victim").await;
    });
    std::fs::remove_dir_all(&dir).ok();
}

/// A replay reads without the write lock: it answers while another connection holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_takes_no_write_lock() {
    let dir = temp_dir("lock");
    let db = dir.join("lock.db");
    let s = Sentinel::builder(SqliteStore::open(&db).await.unwrap())
        .build()
        .unwrap();
    let _: Out = s.once("k").run(|_| async { Ok(1) }).await.unwrap();
    let locker = rusqlite::Connection::open(&db).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = std::time::Instant::now();
    let out: Out = s.once("k").run(|_| async { Ok(2) }).await.unwrap();
    assert!(matches!(
        out,
        Outcome::Completed {
            value: 1,
            replayed: true,
            ..
        }
    ));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    locker.execute_batch("ROLLBACK").unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

/// Bad files get clear errors, never a panic or a corrupted file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_get_clear_errors() {
    let dir = temp_dir("bad");

    // A missing directory is created.
    let nested = dir.join("a/b/c/sentinel.db");
    SqliteStore::open(&nested).await.unwrap();
    assert!(nested.exists());

    // A file that is not a SQLite database is refused and left alone.
    let junk = dir.join("junk.db");
    let text = "this is not a database, it is a shopping list\n".repeat(100);
    std::fs::write(&junk, &text).unwrap();
    match SqliteStore::open(&junk).await {
        Err(e) => assert!(e.to_string().contains("not a SQLite database"), "{e}"),
        Ok(_) => panic!("a text file was accepted as a database"),
    }
    assert_eq!(
        std::fs::read_to_string(&junk).unwrap(),
        text,
        "the file was changed"
    );

    // A database from a newer schema version is refused.
    let newer = dir.join("newer.db");
    SqliteStore::open(&newer).await.unwrap();
    rusqlite::Connection::open(&newer)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    match SqliteStore::open(&newer).await {
        Err(Error::Store(e)) => {
            assert_eq!(e.kind(), StoreErrorKind::Schema);
            assert!(e.to_string().contains("newer"), "{e}");
        }
        other => panic!("unexpected {other:?}"),
    }

    // A directory where the file should be.
    match SqliteStore::open(&dir).await {
        Err(Error::InvalidInput(m)) => assert!(m.contains("directory"), "{m}"),
        other => panic!("unexpected {other:?}"),
    }

    // A database opened read-only (URI mode=ro): writes fail with a clear error.
    let ro = dir.join("ro.db");
    SqliteStore::open(&ro).await.unwrap();
    let uri = format!("file:{}?mode=ro", ro.display());
    match SqliteStore::builder(uri).build().await {
        Err(e) => assert!(e.to_string().contains("read-only"), "{e}"),
        Ok(store) => {
            let s = Sentinel::builder(store).build().unwrap();
            let r = s.once("k").run(|_| async { Ok::<u8, String>(1) }).await;
            let e = r.unwrap_err();
            assert!(e.to_string().contains("read-only"), "{e}");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn sqlite_urls_parse() {
    assert_eq!(
        SqliteStore::path_from_url("sqlite:///abs/x.db").unwrap(),
        "/abs/x.db"
    );
    assert_eq!(
        SqliteStore::path_from_url("sqlite://rel.db").unwrap(),
        "rel.db"
    );
    assert_eq!(
        SqliteStore::path_from_url("sqlite::memory:").unwrap(),
        ":memory:"
    );
    assert!(matches!(
        SqliteStore::path_from_url("sqlite://"),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        SqliteStore::path_from_url("postgres://x"),
        Err(Error::InvalidInput(_))
    ));
}

/// L6: a heartbeat that waited for another process's write lock past the engine's local
/// deadline does not extend the lease when it finally gets the lock: the engine already told
/// the owner its lease was lost, and others must see the key uncertain when it expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn timing_a_given_up_heartbeat_does_not_extend_the_lease_late() {
    let dir = temp_dir("late-heartbeat");
    let db = dir.join("sentinel.db");
    let store = SqliteStore::builder(db.to_string_lossy().into_owned())
        .busy_timeout(Duration::from_secs(5))
        .build()
        .await
        .unwrap();
    let s = Sentinel::builder(store).build().unwrap();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let (finish_tx, finish_rx) = tokio::sync::oneshot::channel::<()>();
    let s2 = s.clone();
    let owner = tokio::spawn(async move {
        s2.once("k")
            .ttl(Duration::from_secs(3))
            .run(|ctx| async move {
                let _ = started_tx.send(());
                let why = ctx.lease_lost().await;
                finish_rx.await.unwrap();
                Ok::<_, String>(format!("{why:?}"))
            })
            .await
    });
    started_rx.await.unwrap();
    // Another process holds the write lock from now until just before the lease expires: the
    // first renewal (due after 1 s) waits for it; the engine gives up on it at 2.4 s.
    let locked = tokio::task::spawn_blocking(move || {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        std::thread::sleep(Duration::from_millis(2700));
        conn.execute_batch("ROLLBACK").unwrap();
    });
    locked.await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await; // past the lease's 3 s
    let record = s.inspect("default", "k").await.unwrap().unwrap();
    assert_eq!(
        record.state,
        sentinel_core::State::Uncertain,
        "a late renewal extended a lease the engine had declared lost"
    );
    finish_tx.send(()).unwrap();
    let out = owner.await.unwrap().unwrap();
    assert!(
        matches!(&out, Outcome::Completed { value, .. } if value == "RenewalsFailing"),
        "{out:?}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
