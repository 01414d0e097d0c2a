//! The example payments API of the HTTP contract, behind `IdempotencyLayer`.
//!
//! ```text
//! cargo run --release -p sentinel-tower --example server -- \
//!     --listen 127.0.0.1:8080 --database-url sqlite://payments.db
//! ```
//!
//! `SENTINEL_EXAMPLE_LEDGER=FILE` appends one line per real execution of a handler (its side
//! effect) before it answers; `SENTINEL_PG_SCHEMA` puts the records in another PostgreSQL schema.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt as _;
use bytes::Bytes;
use clap::Parser;
use http_body::Frame;
use sentinel::{OpenOptions, SchemaSetup, Sentinel};
use sentinel_tower::{Claim, IdempotencyLayer};
use serde::Deserialize;

/// The example payments API of Sentinel's HTTP contract, behind the Idempotency-Key layer.
#[derive(Parser, Debug)]
#[command(name = "server")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The store: postgres://…, sqlite://FILE or memory:.
    #[arg(long, env = "SENTINEL_DATABASE_URL")]
    database_url: String,
    /// The namespace of the records.
    #[arg(long, default_value = "http")]
    namespace: String,
    /// The lease of a running request (e.g. 10s, 500ms, 2m).
    #[arg(long, default_value = "10s", value_parser = duration)]
    ttl: Duration,
    /// Serve the same routes without the Idempotency-Key layer (the benchmark's baseline: every
    /// request runs its handler, nothing is stored).
    #[arg(long)]
    no_middleware: bool,
}

fn duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit: write 10s, 500ms or 2m"))?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{text:?} is not a duration"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{text:?}: the unit must be ms, s or m")),
    }
}

#[derive(Clone)]
struct App {
    ledger: Option<Arc<Mutex<std::fs::File>>>,
    payments: Arc<Mutex<HashMap<String, serde_json::Value>>>,
    next: Arc<AtomicU64>,
}

impl App {
    /// The side effect: one line per real execution, written before the handler answers.
    fn record(&self, route: &str, headers: &HeaderMap, claim: Option<&Claim>) {
        let Some(ledger) = &self.ledger else { return };
        let key = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        let token = claim.map_or(0, |c| c.fencing_token.get());
        let line = format!(
            "{route} key={key} token={token} pid={}\n",
            std::process::id()
        );
        let mut file = ledger
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // One write of one line (O_APPEND): lines of concurrent servers never interleave.
        if let Err(e) = file.write_all(line.as_bytes()) {
            eprintln!("server: the ledger could not be written: {e}");
        }
    }

    fn fresh_id(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("pay_{t:x}{n:x}{:x}", std::process::id())
    }
}

#[derive(Deserialize)]
struct Sleep {
    sleep_ms: Option<u64>,
}

async fn create_payment(
    State(app): State<App>,
    claim: Option<Claim>,
    Query(q): Query<Sleep>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    app.record("POST /payments", &headers, claim.as_ref());
    if let Some(ms) = q.sleep_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let id = app.fresh_id();
    let payment = serde_json::json!({
        "id": id,
        "status": "succeeded",
        "request": String::from_utf8_lossy(&body),
        "fencing_token": claim.map(|c| c.fencing_token.get()),
    });
    app.payments
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(id.clone(), payment.clone());
    (
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (header::LOCATION, format!("/payments/{id}")),
            (header::ETAG, format!("\"{id}\"")),
            (header::SET_COOKIE, format!("session={id}; HttpOnly")),
        ],
        payment.to_string(),
    )
        .into_response()
}

async fn get_payment(State(app): State<App>, Path(id): Path<String>) -> Response {
    let found = app
        .payments
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&id)
        .cloned();
    match found {
        Some(p) => ([(header::CONTENT_TYPE, "application/json")], p.to_string()).into_response(),
        None => (StatusCode::NOT_FOUND, "no such payment").into_response(),
    }
}

async fn fail(State(app): State<App>, claim: Option<Claim>, headers: HeaderMap) -> Response {
    app.record("POST /fail", &headers, claim.as_ref());
    (StatusCode::INTERNAL_SERVER_ERROR, "the provider failed").into_response()
}

async fn reject(State(app): State<App>, claim: Option<Claim>, headers: HeaderMap) -> Response {
    app.record("POST /reject", &headers, claim.as_ref());
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"error":"card_declined"}"#,
    )
        .into_response()
}

async fn panic(State(app): State<App>, claim: Option<Claim>, headers: HeaderMap) -> Response {
    app.record("POST /panic", &headers, claim.as_ref());
    panic!("the handler panicked (on purpose)");
}

#[derive(Deserialize)]
struct Big {
    bytes: u64,
}

/// `n` bytes of `x`, 64 KiB at a time, never held whole.
struct Stream {
    left: u64,
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
        let n = usize::try_from(n).unwrap_or(CHUNK.len());
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&CHUNK[..n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left)
    }
}

async fn big(
    State(app): State<App>,
    claim: Option<Claim>,
    Query(q): Query<Big>,
    headers: HeaderMap,
) -> Response {
    app.record("POST /big", &headers, claim.as_ref());
    (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::new(Stream { left: q.bytes }),
    )
        .into_response()
}

async fn optional(State(app): State<App>, claim: Option<Claim>, headers: HeaderMap) -> Response {
    app.record("POST /optional", &headers, claim.as_ref());
    let id = app.fresh_id();
    (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "id": id, "claimed": claim.is_some() }).to_string(),
    )
        .into_response()
}

#[tokio::main]
async fn main() {
    // The layer's warnings (a response too large to store, a store that did not answer).
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = serve(Args::parse()).await {
        eprintln!("server: {e}");
        std::process::exit(1);
    }
}

async fn serve(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut options = OpenOptions::new().schema(SchemaSetup::Migrate);
    if let Ok(schema) = std::env::var("SENTINEL_PG_SCHEMA") {
        options = options.pg_schema(schema);
    }
    let store = sentinel::open(&args.database_url, &options).await?;
    // Responses up to the layer's 1 MiB cap, once encoded as JSON, fit the record.
    let sentinel = Sentinel::builder(store).max_result_bytes(8 << 20).build()?;
    let ledger = match std::env::var_os("SENTINEL_EXAMPLE_LEDGER") {
        Some(path) => Some(Arc::new(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| format!("the ledger {}: {e}", path.to_string_lossy()))?,
        ))),
        None => None,
    };
    let app = App {
        ledger,
        payments: Arc::default(),
        next: Arc::default(),
    };
    let idempotency = IdempotencyLayer::new(sentinel)
        .namespace(args.namespace)
        .ttl(args.ttl)
        .optional_paths(["/optional"]);
    let mut router = Router::new()
        .route("/payments", post(create_payment))
        .route("/payments/{id}", get(get_payment))
        .route("/fail", post(fail))
        .route("/reject", post(reject))
        .route("/panic", post(panic))
        .route("/big", post(big))
        .route("/optional", post(optional));
    if !args.no_middleware {
        router = router.layer(idempotency);
    }
    let router = router.with_state(app);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    // As production servers do: a streamed response's frames go out as they come, never held
    // by Nagle's algorithm waiting for the client's delayed ACK.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            eprintln!("server: TCP_NODELAY: {e}");
        }
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
