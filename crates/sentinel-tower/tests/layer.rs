//! What the wire cannot show: a panicking handler, a client that goes away mid-handler, bodies
//! that stream with flat memory, waiting instead of 409, the fencing token in the handler.
//! The service is called in-process (tower's `oneshot`) on the memory store.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::post;
use bytes::Bytes;
use http_body::Frame;
use http_body_util::BodyExt;
use sentinel::{MemoryStore, Sentinel, State, UncertainReason};
use sentinel_tower::{Claim, IdempotencyLayer};
use tokio::sync::{Notify, oneshot};
use tower::ServiceExt;

fn sentinel() -> Sentinel {
    Sentinel::builder(MemoryStore::new())
        .max_result_bytes(8 << 20)
        .build()
        .unwrap()
}

fn post_with_key(path: &str, key: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path)
        .header("idempotency-key", key)
        .body(body.into())
        .unwrap()
}

/// The record of `key` (anonymous principal) in the layer's default namespace.
async fn record(s: &Sentinel, key: &str) -> Option<sentinel::Record> {
    s.inspect("http", &format!("anonymous/{key}"))
        .await
        .unwrap()
}

/// Polls the store until the record is in `state` (the engine writes some marks in the
/// background); fails after 10 s.
async fn until_state(s: &Sentinel, key: &str, state: State) -> sentinel::Record {
    for _ in 0..1000 {
        if let Some(r) = record(s, key).await
            && r.state == state
        {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{key} never reached {state:?}: {:?}", record(s, key).await);
}

async fn panics() -> &'static str {
    panic!("on purpose")
}

#[tokio::test]
async fn a_panicking_handler_leaves_the_key_uncertain_and_the_panic_goes_on() {
    let s = sentinel();
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let app = Router::new()
        .route(
            "/panic",
            post(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                panics()
            }),
        )
        .layer(IdempotencyLayer::new(s.clone()));
    let first = tokio::spawn(app.clone().oneshot(post_with_key("/panic", "p", "")));
    let joined = first.await;
    assert!(
        joined.is_err_and(|e| e.is_panic()),
        "the panic reached the server"
    );
    let r = record(&s, "p").await.expect("a record");
    assert_eq!(
        (r.state, r.reason),
        (State::Uncertain, Some(UncertainReason::Panicked))
    );
    let retry = app.oneshot(post_with_key("/panic", "p", "")).await.unwrap();
    assert_eq!(retry.status(), StatusCode::CONFLICT);
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the handler ran again");
}

#[tokio::test]
async fn a_client_gone_mid_handler_leaves_the_key_uncertain() {
    let s = sentinel();
    let runs = Arc::new(AtomicUsize::new(0));
    let (started_tx, started_rx) = oneshot::channel::<()>();
    let started_tx = Arc::new(std::sync::Mutex::new(Some(started_tx)));
    let counted = runs.clone();
    let app = Router::new()
        .route(
            "/slow",
            post(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                if let Some(tx) = started_tx.lock().unwrap().take() {
                    let _ = tx.send(());
                }
                async { std::future::pending::<&'static str>().await }
            }),
        )
        .layer(IdempotencyLayer::new(s.clone()));
    let request = tokio::spawn(app.clone().oneshot(post_with_key("/slow", "gone", "")));
    started_rx.await.unwrap();
    request.abort(); // the connection closed: the server drops the request's future
    let r = until_state(&s, "gone", State::Uncertain).await;
    assert_eq!(r.reason, Some(UncertainReason::Cancelled));
    let retry = app
        .oneshot(post_with_key("/slow", "gone", ""))
        .await
        .unwrap();
    assert_eq!(retry.status(), StatusCode::CONFLICT);
    let body = retry.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("outcome-unknown"));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// `left` bytes of `x`, 64 KiB a frame, counting what was pulled.
struct Stream {
    left: u64,
    pulled: Arc<AtomicU64>,
}

impl http_body::Body for Stream {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        static CHUNK: [u8; 65536] = [b'x'; 65536];
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(CHUNK.len() as u64);
        self.left -= n;
        self.pulled.fetch_add(n, Ordering::Relaxed);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
            &CHUNK[..usize::try_from(n).unwrap()],
        )))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }
}

/// Resident memory of this process, from /proc.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

const GIB: u64 = 1 << 30;

#[tokio::test]
async fn a_one_gib_response_streams_with_flat_memory_and_is_never_stored_truncated() {
    let s = sentinel();
    let app = Router::new()
        .route(
            "/big",
            post(|| async {
                Body::new(Stream {
                    left: GIB,
                    pulled: Arc::default(),
                })
            }),
        )
        .layer(IdempotencyLayer::new(s.clone()));
    let before = rss_bytes();
    let response = app
        .clone()
        .oneshot(post_with_key("/big", "big", ""))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        received += frame.unwrap().into_data().map_or(0, |d| d.len() as u64);
    }
    let grew = rss_bytes().saturating_sub(before);
    assert_eq!(received, GIB, "the client got the whole body");
    assert!(
        grew < 64 << 20,
        "memory grew by {grew} bytes for a 1 GiB body"
    );
    let r = until_state(&s, "big", State::Uncertain).await;
    assert_eq!(r.reason, Some(UncertainReason::NotRecorded));
    assert!(r.result.is_none());
}

#[tokio::test]
async fn a_one_gib_request_body_is_refused_after_the_cap_not_read_whole() {
    let s = sentinel();
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let app = Router::new()
        .route(
            "/upload",
            post(move |_: Bytes| {
                counted.fetch_add(1, Ordering::SeqCst);
                async { "stored" }
            }),
        )
        .layer(IdempotencyLayer::new(s.clone()).max_request_body(1 << 20));
    let pulled = Arc::new(AtomicU64::new(0));
    let body = Body::new(Stream {
        left: GIB,
        pulled: pulled.clone(),
    });
    let response = app
        .clone()
        .oneshot(post_with_key("/upload", "up", body))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(pulled.load(Ordering::Relaxed) <= (1 << 20) + 65536);
    assert!(record(&s, "up").await.is_none(), "nothing was claimed");
    // Exactly the cap is accepted.
    let exact = vec![b'y'; 1 << 20];
    let ok = app
        .oneshot(post_with_key("/upload", "up", exact))
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_waiting_layer_replays_the_first_response_instead_of_409() {
    let s = sentinel();
    let runs = Arc::new(AtomicUsize::new(0));
    let go = Arc::new(Notify::new());
    let (started_tx, started_rx) = oneshot::channel::<()>();
    let started_tx = Arc::new(std::sync::Mutex::new(Some(started_tx)));
    let (counted, gate) = (runs.clone(), go.clone());
    let app = Router::new()
        .route(
            "/pay",
            post(move || {
                let n = counted.fetch_add(1, Ordering::SeqCst);
                if let Some(tx) = started_tx.lock().unwrap().take() {
                    let _ = tx.send(());
                }
                let gate = gate.clone();
                async move {
                    gate.notified().await;
                    (StatusCode::CREATED, format!("payment {n}"))
                }
            }),
        )
        .layer(IdempotencyLayer::new(s.clone()).wait(Duration::from_secs(20)));
    let first = tokio::spawn(app.clone().oneshot(post_with_key("/pay", "w", "{}")));
    started_rx.await.unwrap();
    let second = tokio::spawn(app.clone().oneshot(post_with_key("/pay", "w", "{}")));
    go.notify_one();
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    // The outcome is written when the first response's body ends (as it reaches its client).
    let a = first.into_body().collect().await.unwrap().to_bytes();
    let second = second.await.unwrap().unwrap();
    assert_eq!(second.status(), StatusCode::CREATED);
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    let b = second.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(a, b);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_handler_gets_its_claim_and_a_replay_carries_the_first_token() {
    let s = sentinel();
    let app =
        Router::new()
            .route(
                "/pay",
                post(|claim: Claim| async move {
                    format!("{} {}", claim.key, claim.fencing_token.get())
                }),
            )
            .route(
                "/open",
                post(|claim: Option<Claim>| async move { format!("{}", claim.is_some()) }),
            )
            .layer(IdempotencyLayer::new(s.clone()).optional_paths(["/open"]));
    let text = |r: axum::response::Response| async move {
        String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    };
    let first = text(
        app.clone()
            .oneshot(post_with_key("/pay", "t", ""))
            .await
            .unwrap(),
    )
    .await;
    let again = text(
        app.clone()
            .oneshot(post_with_key("/pay", "t", ""))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(first, "anonymous/t 1");
    assert_eq!(again, first);
    let open = app
        .oneshot(Request::post("/open").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(text(open).await, "false");
}

#[tokio::test]
async fn an_empty_response_is_stored_before_it_goes_out() {
    let s = sentinel();
    let app = Router::new()
        .route("/noop", post(|| async { StatusCode::NO_CONTENT }))
        .layer(IdempotencyLayer::new(s.clone()));
    let first = app
        .clone()
        .oneshot(post_with_key("/noop", "e", ""))
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::NO_CONTENT);
    // Not a background write: the record is completed as the response is handed out.
    assert_eq!(record(&s, "e").await.unwrap().state, State::Completed);
    let again = app.oneshot(post_with_key("/noop", "e", "")).await.unwrap();
    assert_eq!(again.status(), StatusCode::NO_CONTENT);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
}

async fn body_text(r: axum::response::Response) -> String {
    String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

#[tokio::test]
async fn a_small_response_is_stored_before_its_head_goes_out() {
    let s = sentinel();
    let app = Router::new()
        .route("/pay", post(|| async { (StatusCode::CREATED, "paid") }))
        .layer(IdempotencyLayer::new(s.clone()));
    let first = app
        .clone()
        .oneshot(post_with_key("/pay", "small", "x"))
        .await
        .unwrap();
    // The body has not been polled yet and the record is completed: the server can write the
    // head and the body in one go.
    assert_eq!(record(&s, "small").await.unwrap().state, State::Completed);
    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(body_text(first).await, "paid");
    let again = app
        .oneshot(post_with_key("/pay", "small", "x"))
        .await
        .unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(body_text(again).await, "paid");
}

/// Eight bytes declared; four sent, then an error.
struct Broken {
    sent: bool,
}

impl http_body::Body for Broken {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.sent {
            return Poll::Ready(Some(Err(std::io::Error::other("the upstream went away"))));
        }
        self.sent = true;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"half")))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(8)
    }
}

#[tokio::test]
async fn a_small_body_that_breaks_leaves_the_key_uncertain_and_the_client_sees_the_error() {
    let s = sentinel();
    let app = Router::new()
        .route(
            "/broken",
            post(|| async { Body::new(Broken { sent: false }) }),
        )
        .layer(IdempotencyLayer::new(s.clone()));
    let response = app
        .oneshot(post_with_key("/broken", "broken", "x"))
        .await
        .unwrap();
    let r = until_state(&s, "broken", State::Uncertain).await;
    assert_eq!(r.reason, Some(UncertainReason::Failed));
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "half");
    assert!(
        body.frame().await.unwrap().is_err(),
        "the break reached the client"
    );
}
