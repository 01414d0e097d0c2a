//! PostgreSQL-specific behaviour: round trips on the wire, lost replies, the claim race,
//! migrations, durability settings, NOTIFY economy and several OS processes on one database.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sentinel_core::{Error, EventKind, Outcome, Sentinel, State, StoreErrorKind};
use sentinel_postgres::PgStore;
use sentinel_testkit::proxy::Proxy;
use sentinel_testkit::race;
use support::{database_url, fresh_schema, raw_client, store_with, url_via};

type Out = Outcome<u64, String>;

async fn proxied_store(proxy: &Proxy, pool_size: usize) -> PgStore {
    let store = PgStore::builder()
        .url(&url_via(proxy.addr()))
        .schema(fresh_schema())
        .pool_size(pool_size)
        .build()
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store
}

/// Runs 10 fresh calls then 10 replays of them; returns the wire counts before, between and
/// after.
async fn fresh_then_replay(
    s: &Sentinel,
    proxy: &Proxy,
) -> (
    sentinel_testkit::proxy::WireCounts,
    sentinel_testkit::proxy::WireCounts,
    sentinel_testkit::proxy::WireCounts,
) {
    let before = proxy.counts();
    run_fresh(s, 10).await;
    let fresh = proxy.counts();
    run_replays(s, 10).await;
    (before, fresh, proxy.counts())
}

/// Runs keys `k0`..`k{n-1}` for the first time.
async fn run_fresh(s: &Sentinel, n: u64) {
    for i in 0..n {
        let out: Out = s
            .once(format!("k{i}"))
            .run(|_| async move { Ok(i) })
            .await
            .unwrap();
        assert!(out.ran_here());
    }
}

/// Calls keys `k0`..`k{n-1}` again: each must replay.
async fn run_replays(s: &Sentinel, n: u64) {
    for i in 0..n {
        let out: Out = s
            .once(format!("k{i}"))
            .run(|_| async { Ok(99) })
            .await
            .unwrap();
        sentinel_testkit::assert_replayed!(out);
    }
}

/// docs/design.md §4: a fresh `once` is two statements, a replay one, counted on the wire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_is_two_statements_and_replay_is_one() {
    let proxy = Proxy::start(support::server_addr()).await.unwrap();
    let s = Sentinel::builder(proxied_store(&proxy, 1).await)
        .build()
        .unwrap();
    // Warm the connection's statement cache.
    let _: Out = s.once("warm").run(|_| async { Ok(0) }).await.unwrap();
    let _: Out = s.once("warm").run(|_| async { Ok(0) }).await.unwrap();

    let (before, fresh, replay) = fresh_then_replay(&s, &proxy).await;
    assert_eq!(
        fresh.statements() - before.statements(),
        20,
        "fresh: {before:?} → {fresh:?}"
    );
    assert_eq!(fresh.sync - before.sync, 20, "fresh round trips");
    assert_eq!(
        replay.statements() - fresh.statements(),
        10,
        "replay: {fresh:?} → {replay:?}"
    );
    assert_eq!(replay.sync - fresh.sync, 10, "replay round trips");
    assert_eq!(
        replay.parse, fresh.parse,
        "statements are prepared once per connection"
    );
}

/// With unnamed statements nothing is prepared, and the budget holds: 2 round trips fresh, 1
/// replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unnamed_statements_keep_the_round_trip_budget() {
    let proxy = Proxy::start(support::server_addr()).await.unwrap();
    let store = PgStore::builder()
        .url(&url_via(proxy.addr()))
        .schema(fresh_schema())
        .pool_size(1)
        .unnamed_statements(true)
        .build()
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let s = Sentinel::builder(store).build().unwrap();
    let _: Out = s.once("warm").run(|_| async { Ok(0) }).await.unwrap();
    let (before, fresh, replay) = fresh_then_replay(&s, &proxy).await;
    assert_eq!(fresh.sync - before.sync, 20, "fresh round trips");
    assert_eq!(replay.sync - fresh.sync, 10, "replay round trips");
    assert_eq!(fresh.statements() - before.statements(), 20);
    // Every statement was parsed anew, unnamed: nothing is kept between transactions.
    assert_eq!(replay.parse - fresh.parse, 10);
}

/// Concurrent claims and completions of one process share statements through `Coalescing`; a
/// key asked for twice in one batch is claimed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coalesced_claims_share_statements() {
    const CALLERS: usize = 64;
    let proxy = Proxy::start(support::server_addr()).await.unwrap();
    let store = proxied_store(&proxy, 8).await;
    let s = Sentinel::builder(sentinel_core::Coalescing::new(Arc::new(store), 64))
        .build()
        .unwrap();
    let _: Out = s.once("warm").run(|_| async { Ok(0) }).await.unwrap();
    let before = proxy.counts();
    let barrier = Arc::new(tokio::sync::Barrier::new(CALLERS));
    let runs = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..CALLERS {
        let (s, barrier, runs) = (s.clone(), barrier.clone(), runs.clone());
        // Every key is asked for by two callers.
        let key = format!("k{}", i / 2);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            s.once(key)
                .run(|_| async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok::<u64, String>(1)
                })
                .await
                .unwrap()
        }));
    }
    let mut ran = 0;
    for t in tasks {
        if t.await.unwrap().ran_here() {
            ran += 1;
        }
    }
    let after = proxy.counts();
    assert_eq!(ran, CALLERS / 2, "each key ran exactly once");
    assert_eq!(runs.load(Ordering::SeqCst), CALLERS / 2);
    // 64 claims and 32 completions would be 96 statements one by one.
    let statements = after.statements() - before.statements();
    assert!(
        statements < (CALLERS / 2) as u64,
        "{statements} statements for {CALLERS} claims and {} completions",
        CALLERS / 2
    );
}

/// docs/design.md §4: a replay served from the in-process cache costs no statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_replay_is_zero_statements() {
    let proxy = Proxy::start(support::server_addr()).await.unwrap();
    let s = Sentinel::builder(proxied_store(&proxy, 1).await)
        .result_cache(1000, Duration::from_secs(60))
        .build()
        .unwrap();
    run_fresh(&s, 10).await;
    let before = proxy.counts();
    run_replays(&s, 10).await;
    assert_eq!(proxy.counts(), before);
    assert_eq!(s.stats().cache_hits, 10);
}

/// docs/design.md §4: one heartbeat statement per tick, whatever the number of executions in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heartbeat_is_one_statement_per_tick() {
    const IN_FLIGHT: usize = 50;
    let proxy = Proxy::start(support::server_addr()).await.unwrap();
    let s = Sentinel::builder(proxied_store(&proxy, 16).await)
        .build()
        .unwrap();
    let ttl = Duration::from_millis(600);
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let started = Arc::new(AtomicUsize::new(0));
    let all_started = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for i in 0..IN_FLIGHT {
        let (s, mut rx) = (s.clone(), release_rx.clone());
        let (started, all_started) = (started.clone(), all_started.clone());
        tasks.push(tokio::spawn(async move {
            s.once(format!("k{i}"))
                .ttl(ttl)
                .run(|ctx| async move {
                    if started.fetch_add(1, Ordering::SeqCst) + 1 == IN_FLIGHT {
                        all_started.notify_one();
                    }
                    rx.wait_for(|go| *go).await.unwrap();
                    Ok::<bool, String>(ctx.is_lease_lost())
                })
                .await
        }));
    }
    all_started.notified().await;
    let c0 = proxy.counts();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await; // the measuring window
    let c1 = proxy.counts();
    let elapsed = t0.elapsed();
    release_tx.send(true).unwrap();
    for t in tasks {
        let out = t.await.unwrap().unwrap();
        assert!(
            matches!(out, Outcome::Completed { value: false, .. }),
            "{out:?}"
        );
    }
    let ticks = c1.statements() - c0.statements();
    let period = ttl / 3;
    let expected = u64::try_from(elapsed.as_millis() / period.as_millis()).unwrap();
    assert!(ticks >= 2, "no renewals happened: {ticks}");
    assert!(
        ticks <= 2 * expected + 2,
        "{ticks} heartbeat statements in {elapsed:?} for {IN_FLIGHT} executions (one tick is {period:?})"
    );
}

/// A claim whose reply is lost after the server committed it is settled by re-reading the row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_claim_reply_is_settled_on_the_wire() {
    let proxy = Proxy::start(support::server_addr()).await.unwrap();
    let s = Sentinel::builder(proxied_store(&proxy, 4).await)
        .build()
        .unwrap();
    proxy.cut_after_next_statement();
    let (out, runs) = sentinel_testkit::run_counted(&s, "k").await;
    sentinel_testkit::assert_fresh!(out);
    assert_eq!(runs, 1);
    let kinds: Vec<_> = s
        .history("default", "k", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, [EventKind::Acquired, EventKind::Completed]);
}

/// A completion whose reply is lost after the server committed it is confirmed by re-reading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_completion_reply_is_settled_on_the_wire() {
    let proxy = Arc::new(Proxy::start(support::server_addr()).await.unwrap());
    let s = Sentinel::builder(proxied_store(&proxy, 4).await)
        .build()
        .unwrap();
    let p = proxy.clone();
    let out: Out = s
        .once("k")
        .run(|_| async move {
            p.cut_after_next_statement(); // the completion is the next statement
            Ok(7)
        })
        .await
        .unwrap();
    assert!(
        matches!(
            out,
            Outcome::Completed {
                value: 7,
                replayed: false,
                ..
            }
        ),
        "{out:?}"
    );
    let out: Out = s.once("k").run(|_| async { Ok(8) }).await.unwrap();
    assert!(matches!(
        out,
        Outcome::Completed {
            value: 7,
            replayed: true,
            ..
        }
    ));
}

/// A claim whose insert loses the conflict check to a concurrent insert reads the winner's row
/// in the same statement (its function's next read has a fresh snapshot): the caller learns
/// who owns the key without claiming again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_that_loses_to_a_concurrent_insert_answers_with_the_winner() {
    let store = store_with(4).await;
    let schema = store.schema().to_owned();
    let s = Sentinel::builder(store).build().unwrap();
    let mut raw = raw_client().await;
    let tx = raw.transaction().await.unwrap();
    tx.execute(
        &format!(
            "INSERT INTO {schema}.executions (namespace, key, state, fencing_token, owner_host,
                 owner_pid, owner_attempt, lease_expires_at, hard_expires_at)
             VALUES ('default', 'k', 'running', nextval('{schema}.fencing_tokens'), 'rival', 1,
                 'rival-attempt', now() + interval '1 hour', now() + interval '2 hours')"
        ),
        &[],
    )
    .await
    .unwrap();
    let s2 = s.clone();
    let claim =
        tokio::spawn(async move { s2.once("k").run(|_| async { Ok::<u64, String>(1) }).await });
    // Wait until the claim blocks on the uncommitted insert's conflict check.
    let observer = raw_client().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = observer
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '.executions%'",
                &[&schema],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the claim never blocked on the rival insert"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tx.commit().await.unwrap();
    let out = claim.await.unwrap().unwrap();
    match out {
        Outcome::Running { owner, .. } => assert_eq!(owner.unwrap().host, "rival"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(s.stats().claim_retries, 0);
}

/// Migrations are idempotent and safe to run from many processes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_migrations_apply_once() {
    let schema = fresh_schema();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let schema = schema.clone();
        tasks.push(tokio::spawn(async move {
            let store = PgStore::builder()
                .url(&database_url())
                .schema(schema)
                .pool_size(1)
                .build()
                .await
                .unwrap();
            store.migrate().await.unwrap();
            store.migrate().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let raw = raw_client().await;
    let n: i64 = raw
        .query_one(&format!("SELECT count(*) FROM {schema}.migrations"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, i64::from(sentinel_postgres::SCHEMA_VERSION));
}

/// A schema at version 1 (before the claim function) upgrades in place: keys completed before
/// the upgrade replay after it, and new keys run once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_at_version_one_upgrades_in_place() {
    let store = store_with(2).await;
    let schema = store.schema().to_owned();
    let s = Sentinel::builder(store.clone()).build().unwrap();
    let runs = std::sync::atomic::AtomicU32::new(0);
    let run = || async {
        runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok::<u64, String>(7)
    };
    let _ = s.once("before").run(|_| run()).await.unwrap();
    // Back to version 1, as a database migrated by an earlier build is.
    let raw = raw_client().await;
    raw.batch_execute(&format!(
        "DROP FUNCTION {schema}.claim_new, {schema}.complete, {schema}.notify;
         DELETE FROM {schema}.migrations WHERE version = 2"
    ))
    .await
    .unwrap();
    let e = store.check_schema().await.unwrap_err();
    assert!(e.to_string().contains("not up to date"), "{e}");
    store.migrate().await.unwrap();
    store.check_schema().await.unwrap();
    let fresh = Sentinel::builder(store).build().unwrap();
    let replayed = fresh.once("before").run(|_| run()).await.unwrap();
    assert!(
        matches!(replayed, Outcome::Completed { value: 7, .. }),
        "{replayed:?}"
    );
    let _ = fresh.once("after").run(|_| run()).await.unwrap();
    let _ = fresh.once("after").run(|_| run()).await.unwrap();
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// A schema from a newer version, or with an edited migration, is refused with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_schema_versions_are_refused() {
    let store = store_with(2).await;
    let schema = store.schema().to_owned();
    let raw = raw_client().await;
    raw.batch_execute(&format!(
        "UPDATE {schema}.migrations SET checksum = 'edited' WHERE version = 1"
    ))
    .await
    .unwrap();
    let e = store.migrate().await.unwrap_err();
    assert!(
        matches!(&e, Error::Store(se) if se.kind() == StoreErrorKind::Schema),
        "{e}"
    );
    raw.batch_execute(&format!(
        "INSERT INTO {schema}.migrations (version, name, checksum) VALUES (99, 'future', 'x')"
    ))
    .await
    .unwrap();
    let e = store.check_schema().await.unwrap_err();
    assert!(e.to_string().contains("newer"), "{e}");
}

/// Without `migrate`, operations fail with a schema error that says what to run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_schema_is_a_clear_error() {
    let store = PgStore::builder()
        .url(&database_url())
        .schema(fresh_schema())
        .build()
        .await
        .unwrap();
    let e = store.check_schema().await.unwrap_err();
    assert!(e.to_string().contains("sentinel init"), "{e}");
    let s = Sentinel::builder(store).build().unwrap();
    let r = s.once("k").run(|_| async { Ok::<u64, String>(1) }).await;
    match r {
        Err(Error::Store(e)) => {
            assert_eq!(e.kind(), StoreErrorKind::Schema);
            assert!(e.to_string().contains("migrate"), "{e}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// Bad settings are refused before anything is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_refused() {
    for schema in ["", "Bad", "a-b", "x;drop table y"] {
        let r = PgStore::builder()
            .url(&database_url())
            .schema(schema)
            .build()
            .await;
        assert!(matches!(r, Err(Error::InvalidInput(_))), "{schema:?}");
    }
    let r = PgStore::builder()
        .url("postgres://u:secret@127.0.0.1:1/db")
        .build()
        .await;
    match r {
        Err(Error::Store(e)) => {
            assert_eq!(e.kind(), StoreErrorKind::Unavailable);
            assert!(!e.to_string().contains("secret"), "{e}");
        }
        other => panic!("unexpected {other:?}"),
    }
    let r = PgStore::builder()
        .url("postgres://u:secret@host:notaport/db")
        .build()
        .await;
    match r {
        Err(Error::InvalidInput(e)) => assert!(!e.contains("secret"), "{e}"),
        other => panic!("unexpected {other:?}"),
    }
}

/// A pool whose sessions run with `synchronous_commit = off` is refused unless allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynchronous_commit_pool_is_refused() {
    use deadpool_postgres::{Manager, Pool};
    let mut config: tokio_postgres::Config = database_url().parse().unwrap();
    config.options("-c synchronous_commit=off");
    let pool = Pool::builder(Manager::new(config, tokio_postgres::NoTls))
        .max_size(2)
        .build()
        .unwrap();
    let r = PgStore::builder().pool(pool.clone()).build().await;
    assert!(
        matches!(r, Err(Error::InvalidInput(ref m)) if m.contains("synchronous_commit")),
        "{r:?}"
    );
    let store = PgStore::builder()
        .pool(pool)
        .schema(fresh_schema())
        .allow_async_commit(true)
        .build()
        .await
        .unwrap();
    store.migrate().await.unwrap();
    // Built on the application's pool alone, it still works (heartbeat on a reserved pooled
    // connection, waiters polling).
    let s = Sentinel::builder(store).build().unwrap();
    let out: Out = s.once("k").run(|_| async { Ok(1) }).await.unwrap();
    assert!(out.ran_here());
}

/// A completion notifies only when someone waits on the key (NOTIFY serialises commits).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn completion_notifies_only_when_someone_waits() {
    let store = store_with(8).await;
    let channel = format!("sentinel_{}", store.schema());
    let s = Sentinel::builder(store.clone()).build().unwrap();
    let (listener, mut notes) = support::listening_client().await;
    listener
        .batch_execute(&format!("LISTEN {channel}"))
        .await
        .unwrap();

    let _: Out = s.once("quiet").run(|_| async { Ok(1) }).await.unwrap();
    // A marker after the completion: notifications arrive in commit order.
    listener
        .batch_execute(&format!("NOTIFY {channel}, 'marker'"))
        .await
        .unwrap();
    let first = notes.recv().await.unwrap();
    assert_eq!(
        first.payload(),
        "marker",
        "a completion without waiters notified"
    );

    let worker = sentinel_testkit::hold(&s, "watched").await;
    let s3 = s.clone();
    let waiter = tokio::spawn(async move {
        s3.once("watched")
            .wait(Duration::from_secs(30))
            .run(|_| async { Ok::<u64, String>(0) })
            .await
    });
    // Wait until the waiter registered on the row.
    let raw = raw_client().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiters: i32 = raw
            .query_one(
                &format!(
                    "SELECT waiters FROM {}.executions WHERE key = 'watched'",
                    store.schema()
                ),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiters > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the waiter never registered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let waited_from = Instant::now();
    assert!(worker.complete(2).await.unwrap().ran_here());
    let out = waiter.await.unwrap().unwrap();
    assert!(
        matches!(
            out,
            Outcome::Completed {
                value: 2,
                replayed: true,
                ..
            }
        ),
        "{out:?}"
    );
    // Woken by the notification, not by the 1 s poll.
    assert!(
        waited_from.elapsed() < Duration::from_millis(900),
        "{:?}",
        waited_from.elapsed()
    );
    let note = notes.recv().await.unwrap();
    assert_eq!(note.payload(), "7:defaultwatched");
}

/// 8 OS processes × 16 tasks race on 50 keys of one database: exactly one execution per key,
/// counted in an append-only file outside Sentinel. Run with `SENTINEL_RACE_SCHEMA` set, this
/// test is one of the racing processes instead.
#[test]
fn processes_race_on_one_database() {
    const KEYS: usize = 50;
    if let Ok(schema) = std::env::var("SENTINEL_RACE_SCHEMA") {
        let log = std::env::var("SENTINEL_RACE_LOG").unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        return rt.block_on(async move {
            let store = PgStore::builder()
                .url(&database_url())
                .schema(schema)
                .pool_size(8)
                .build()
                .await
                .unwrap();
            let s = Sentinel::builder(store).build().unwrap();
            let _ = s.inspect("default", "warm-up").await.unwrap();
            race::worker(|| async { race::race(&s, 16, KEYS, log.as_ref()).await }).await;
        });
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let schema = rt.block_on(async { store_with(1).await.schema().to_owned() });
    let dir = std::env::temp_dir().join(format!("sentinel-pg-race-{schema}"));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("executions.log");
    let busy = race::race_processes(
        "processes_race_on_one_database",
        8,
        &[
            ("SENTINEL_RACE_SCHEMA", &schema),
            ("SENTINEL_RACE_LOG", log.to_str().unwrap()),
        ],
    );
    race::assert_each_key_ran_once(&log, KEYS, busy);
    std::fs::remove_dir_all(&dir).ok();
}

/// Records list by state with the server's clock, and stats count uncertain ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciling_records_list_and_count() {
    let s = Sentinel::builder(store_with(2).await).build().unwrap();
    let _: Out = s
        .once("k")
        .run(|_| async { Err("x".into()) })
        .await
        .unwrap();
    let op = sentinel_core::store::OperatorAction::new("default", "k", "ops", None);
    s.reconcile(&op, false).await.unwrap();
    let mut q = sentinel_core::store::ListQuery::new(10);
    q.state = Some(State::Reconciling);
    assert_eq!(s.list(&q).await.unwrap().len(), 1);
    let stats = s.store().stats().await.unwrap();
    assert_eq!(stats.uncertain, 1);
}

/// A heartbeat statement stuck on a row lock is given up at the local deadline, cancelled on the
/// server, and does not hold back the renewals of other executions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn timing_stuck_heartbeat_does_not_block_later_renewals() {
    let store = store_with(4).await;
    let schema = store.schema().to_owned();
    let s = Sentinel::builder(store).build().unwrap();
    let ttl = Duration::from_millis(600);
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let (lost_tx, lost_rx) = tokio::sync::oneshot::channel();
    let s2 = s.clone();
    let stuck = tokio::spawn(async move {
        s2.once("a")
            .ttl(ttl)
            .run(|ctx| async move {
                let _ = started_tx.send(());
                let _ = lost_tx.send(ctx.lease_lost().await);
                Ok::<u8, String>(1)
            })
            .await
    });
    started_rx.await.unwrap();
    let mut raw = raw_client().await;
    let tx = raw.transaction().await.unwrap();
    tx.execute(
        &format!("SELECT 1 FROM {schema}.executions WHERE key = 'a' FOR UPDATE"),
        &[],
    )
    .await
    .unwrap();
    let why = tokio::time::timeout(Duration::from_secs(10), lost_rx)
        .await
        .expect("the stuck heartbeat held back the lease-lost signal")
        .unwrap();
    assert_eq!(why, sentinel_core::LeaseLost::RenewalsFailing);
    // The row is still locked; another execution must keep its lease all the same.
    let out = s
        .once("b")
        .ttl(ttl)
        .run(|ctx| async move {
            tokio::time::sleep(ttl * 3).await;
            Ok::<bool, String>(ctx.is_lease_lost())
        })
        .await
        .unwrap();
    assert!(
        matches!(out, Outcome::Completed { value: false, .. }),
        "{out:?}"
    );
    tx.rollback().await.unwrap();
    // A finished after losing its lease; its completion (after the lock) is still accepted.
    let out = stuck.await.unwrap().unwrap();
    assert!(out.ran_here(), "{out:?}");
}

/// One multi-row claim cannot claim a key twice: repeated keys are refused before anything is
/// written (the decorator merges them itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_many_refuses_repeated_keys() {
    use sentinel_core::store::{ClaimRequest, Store};
    let store = store_with(2).await;
    let request = || {
        ClaimRequest::new(
            "default",
            "k",
            sentinel_core::Owner::current(),
            Duration::from_secs(10),
            Duration::from_secs(60),
            None,
        )
    };
    let r = store.claim_many(&[request(), request()]).await;
    assert!(r.is_err(), "{r:?}");
    assert!(store.load("default", "k").await.unwrap().is_none());
    let both = store
        .claim_many(&[
            request(),
            ClaimRequest::new(
                "default",
                "k2",
                sentinel_core::Owner::current(),
                Duration::from_secs(10),
                Duration::from_secs(60),
                None,
            ),
        ])
        .await
        .unwrap();
    assert!(
        both.iter()
            .all(|r| matches!(r, sentinel_core::store::ClaimResponse::Acquired(_)))
    );
}

/// L1: a release that waited on a row lock until after the lease expired does not apply: the
/// key others already saw uncertain stays uncertain (compared with `clock_timestamp()`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timing_release_after_a_lock_wait_past_expiry_is_fenced() {
    use sentinel_core::store::{ClaimRequest, ClaimResponse, Store, Write};
    let store = store_with(4).await;
    let schema = store.schema().to_owned();
    let request = ClaimRequest::new(
        "default",
        "locked",
        sentinel_core::Owner::current(),
        Duration::from_millis(400),
        Duration::from_secs(60),
        None,
    );
    let ClaimResponse::Acquired(record) = store.claim(&request).await.unwrap() else {
        panic!("expected to acquire");
    };
    let mut holder = raw_client().await;
    let tx = holder.transaction().await.unwrap();
    // As another host's waiter registration does during a slow commit.
    tx.execute(
        &format!("UPDATE {schema}.executions SET waiters = waiters + 1 WHERE key = 'locked'"),
        &[],
    )
    .await
    .unwrap();
    let releasing = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .release("default", "locked", record.fencing_token)
                .await
        })
    };
    // The lease expires while the release waits for the lock.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !releasing.is_finished(),
        "the release did not wait for the lock"
    );
    tx.commit().await.unwrap();
    let write = releasing.await.unwrap().unwrap();
    assert_eq!(write, Write::Fenced);
    let after = store.load("default", "locked").await.unwrap().unwrap();
    assert_eq!(after.state, State::Uncertain);
}

/// A TCP port that accepts connections and never says a word, like a stalled server or a
/// saturated pooler; connections stay open while the returned task runs.
async fn silent_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    (addr, task)
}

async fn connect_error(url: &str) -> (String, Duration) {
    let started = Instant::now();
    let err = PgStore::builder()
        .url(url)
        .schema(fresh_schema())
        .build()
        .await
        .expect_err("the connection must fail");
    (err.to_string(), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_name_the_server_and_the_cause() {
    // Refused: a port nobody listens on any more.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let (refused, _) = connect_error(&format!("postgres://postgres@127.0.0.1:{port}/test")).await;
    assert!(
        refused.contains(&format!("127.0.0.1:{port}")) && refused.contains("connection refused"),
        "{refused}"
    );

    // Authentication: a role the server does not know; the password never shows.
    let addr = support::server_addr();
    let (auth, _) = connect_error(&format!("postgres://nobody_here:s3cret@{addr}/test")).await;
    assert!(
        auth.contains(&addr.to_string()) && auth.contains("authentication failed"),
        "{auth}"
    );
    assert!(!auth.contains("s3cret"), "{auth}");

    // A server that accepts and never answers: timed out, after the connect timeout, although
    // TCP itself connected.
    let (silent, _server) = silent_server().await;
    let (timed_out, took) = connect_error(&format!(
        "postgres://postgres@{silent}/test?connect_timeout=1"
    ))
    .await;
    assert!(
        timed_out.contains(&silent.to_string()) && timed_out.contains("timed out"),
        "{timed_out}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    for message in [&refused, &auth, &timed_out] {
        assert!(
            !message.contains("creating a new object") && !message.contains("db error"),
            "pool internals leak into: {message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_ends_on_time_when_the_listen_connection_stalls() {
    let store = store_with(4).await;
    let s = Sentinel::builder(store.clone()).build().unwrap();
    let _worker = sentinel_testkit::hold(&s, "busy").await;
    // Claims and reads on a working pool; the LISTEN connection goes to a server that never
    // answers.
    let (silent, _server) = silent_server().await;
    let stalled: tokio_postgres::Config = format!("postgres://postgres@{silent}/test")
        .parse()
        .unwrap();
    let waiting = PgStore::builder()
        .pool(store.pool().clone())
        .config(stalled)
        .schema(store.schema())
        .build()
        .await
        .unwrap();
    let w = Sentinel::builder(waiting).build().unwrap();
    for budget in [Duration::from_millis(200), Duration::from_millis(300)] {
        let started = Instant::now();
        let record = w.wait("default", "busy", budget).await.unwrap().unwrap();
        assert_eq!(record.state, State::Running);
        let took = started.elapsed();
        assert!(
            took < budget + Duration::from_millis(250),
            "a {budget:?} wait took {took:?}"
        );
    }
}

/// Counts the engine's reads of a store (wait steps, and the uncertain-records gauge's stats
/// when the `metrics` feature is on), so a test knows how many statements they cost.
#[derive(Debug)]
struct CountingLoads {
    inner: Arc<dyn sentinel_core::store::Store>,
    loads: AtomicUsize,
}

#[async_trait::async_trait]
#[deny(clippy::missing_trait_methods)]
impl sentinel_core::store::Store for CountingLoads {
    async fn load(
        &self,
        namespace: &str,
        key: &str,
    ) -> Result<Option<sentinel_core::Record>, sentinel_core::StoreError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        self.inner.load(namespace, key).await
    }
    async fn stats(&self) -> Result<sentinel_core::store::StoreStats, sentinel_core::StoreError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        self.inner.stats().await
    }
    sentinel_core::forward_store!([inner] claim, claim_many, heartbeat, complete, complete_many,
        release, mark_uncertain, list, counts, recent_events, history, reconcile, resolve, forget, prune,
        wait_for_change, migrate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_wait_registers_on_the_row_once() {
    let owner = store_with(2).await;
    let s = Sentinel::builder(owner.clone()).build().unwrap();
    let worker = sentinel_testkit::hold(&s, "long").await;
    let proxy = Proxy::start(support::server_addr()).await.unwrap();
    let waiting = PgStore::builder()
        .url(&url_via(proxy.addr()))
        .schema(owner.schema())
        .pool_size(1)
        .build()
        .await
        .unwrap();
    let counted = Arc::new(CountingLoads {
        inner: Arc::new(waiting),
        loads: AtomicUsize::new(0),
    });
    let w = Sentinel::builder(counted.clone()).build().unwrap();
    let before = proxy.counts();
    // Steps of 50 ms doubling to 1 s: about seven of them.
    let record = w
        .wait("default", "long", Duration::from_secs(3))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.state, State::Running);
    let statements = proxy.counts().statements() - before.statements();
    let loads = counted.loads.load(Ordering::SeqCst) as u64;
    assert!(loads >= 5, "{loads} reads");
    // One read per step (and per gauge tick), plus LISTEN and one registration for the whole
    // wait (its removal lingers past it).
    assert!(
        statements <= loads + 2,
        "{statements} statements for {loads} steps"
    );
    drop(worker);
}

/// The GRANTs of docs/least-privilege.sql, applied to a fresh role that has no CREATE anywhere:
/// it runs `once` (fresh, replayed, waited for, heartbeated), and every operator command; only
/// creating or upgrading the schema is refused, in words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_without_create_runs_everything_but_init() {
    use sentinel_core::FailurePolicy;
    use sentinel_core::store::{ListQuery, OperatorAction, PruneQuery, Resolution, Store};

    let owner = store_with(2).await;
    let schema = owner.schema().to_owned();
    let role = sentinel_testkit::unique_name("sentinel_app").to_lowercase();
    let admin = raw_client().await;
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN NOCREATEDB NOCREATEROLE; \
             REVOKE CREATE ON DATABASE test FROM {role}; {}",
            include_str!("../../../docs/least-privilege.sql")
                .replace("{schema}", &schema)
                .replace("{role}", &role)
        ))
        .await
        .unwrap();
    let config: tokio_postgres::Config = database_url().parse().unwrap();
    let mut config = config;
    config.user(&role);
    let app = PgStore::builder()
        .config(config)
        .schema(&schema)
        .pool_size(4)
        .build()
        .await
        .unwrap();
    app.check_schema().await.unwrap();
    let s = Sentinel::builder(app.clone()).build().unwrap();

    // once: fresh, then replayed.
    let (out, runs) = sentinel_testkit::run_counted(&s, "paid").await;
    sentinel_testkit::assert_fresh!(out);
    assert_eq!(runs, 1);
    let (out, runs) = sentinel_testkit::run_counted(&s, "paid").await;
    sentinel_testkit::assert_replayed!(out);
    assert_eq!(runs, 0);

    // The heartbeat renews a short lease past its ttl, and a waiter (LISTEN, registration) is
    // woken by the completion.
    let long = s
        .once("long")
        .ttl(Duration::from_millis(300))
        .run(|_| async {
            tokio::time::sleep(Duration::from_millis(900)).await;
            Ok::<u64, String>(5)
        });
    let waiter = {
        let s = s.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            s.once("long")
                .wait(Duration::from_secs(10))
                .run(|_| async { Ok::<u64, String>(0) })
                .await
        }
    };
    let (out, waited) = tokio::join!(long, waiter);
    assert!(out.unwrap().ran_here());
    let waited = waited.unwrap();
    assert!(
        matches!(waited, Outcome::Completed { value: 5, .. }),
        "{waited:?}"
    );

    // A failure under the default policy leaves the key uncertain; the operator settles it.
    let failed: Out = s
        .once("broken")
        .on_failure(FailurePolicy::Uncertain)
        .run(|_| async { Err("boom".to_owned()) })
        .await
        .unwrap();
    assert!(matches!(failed, Outcome::Failed { .. }), "{failed:?}");
    let act = |key: &str| OperatorAction::new("default", key, "ops@test", Some("checked".into()));
    let token = s.reconcile(&act("broken"), false).await.unwrap();
    s.resolve(&act("broken"), &Resolution::Reset, Some(token))
        .await
        .unwrap();
    assert!(s.inspect("default", "broken").await.unwrap().is_none());
    s.forget(&act("paid")).await.unwrap();
    assert!(!s.list(&ListQuery::new(100)).await.unwrap().is_empty());
    assert!(
        !s.history("default", "broken", 100)
            .await
            .unwrap()
            .is_empty()
    );
    let mut prune = PruneQuery::in_namespace("default");
    prune.older_than = Some(Duration::ZERO);
    assert!(s.prune(&prune).await.unwrap() >= 1);
    app.stats().await.unwrap();

    // Creating or upgrading the schema is refused, clearly.
    let err = app
        .migrate()
        .await
        .expect_err("a role without CREATE migrated");
    let message = err.to_string();
    assert!(
        message.contains("permission denied") && message.contains("owner"),
        "{message}"
    );
    drop(s);
    drop(app);
    let _ = admin
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; DROP OWNED BY {role}; DROP ROLE {role}"
        ))
        .await;
}

/// The heartbeat's own connection goes to a server that accepts and never finishes the start-up
/// (a saturated pooler): renewals go through the working pool meanwhile, so a call longer than
/// its ttl keeps its lease and completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timing_heartbeat_renews_through_the_pool_when_its_own_connection_stalls() {
    let store = store_with(4).await;
    let (silent, _server) = silent_server().await;
    let stalled: tokio_postgres::Config =
        format!("postgres://postgres@{silent}/test?connect_timeout=1")
            .parse()
            .unwrap();
    let renewing = PgStore::builder()
        .pool(store.pool().clone())
        .config(stalled)
        .schema(store.schema())
        .build()
        .await
        .unwrap();
    let s = Sentinel::builder(renewing).build().unwrap();
    let out: Out = s
        .once("long")
        .ttl(Duration::from_secs(3))
        .run(|ctx| async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            assert!(!ctx.is_lease_lost(), "the lease was lost");
            Ok(1)
        })
        .await
        .unwrap();
    sentinel_testkit::assert_fresh!(out);
}
