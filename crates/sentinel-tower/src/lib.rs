//! # sentinel-tower
//!
//! `Idempotency-Key` for HTTP on Sentinel: a tower layer that runs each keyed request's
//! handler **at most once** and replays its stored response to every retry — across any number
//! of server processes sharing a store. Two concurrent duplicates never both run, a handler
//! that died mid-request is never re-run on its own (the key is *uncertain* until an operator
//! resolves it), one principal never sees another's response, and a response too large to
//! store is never stored truncated.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{Router, routing::post};
//! use sentinel_tower::IdempotencyLayer;
//!
//! let sentinel = sentinel::connect("postgres://postgres@127.0.0.1/test").await?;
//! let app: Router = Router::new()
//!     .route("/payments", post(|| async { "charged" }))
//!     .layer(IdempotencyLayer::new(sentinel).namespace("payments"));
//! # Ok(()) }
//! ```
//!
//! The wire behaviour — statuses, problem types, stored headers — is the project's HTTP
//! contract (`docs/design.md` §8). In short: POST and PATCH with a key are claimed; a retry
//! after completion gets the stored status, headers and body with `Idempotent-Replayed: true`;
//! a retry while the first runs gets 409 `in-progress` (or waits, when configured); after a
//! crash, a panic or a client that went away mid-handler, 409 `outcome-unknown`; a 5xx
//! releases the key; another request under the same key is 422; a store outage is 503 and
//! nothing runs.
//!
//! A stored response of up to 64 KiB is read whole and stored before its head is handed to the
//! server, so head and body leave in one write; larger ones stream, their last frame held until
//! the completion is written. Serve with `TCP_NODELAY` (axum: `listener.tap_io(|tcp| { let _ =
//! tcp.set_nodelay(true); })`) so that such a held frame is not delayed by Nagle's algorithm.
#![forbid(unsafe_code)]

mod body;
pub mod error;
pub mod future;
mod key;
mod layer;
mod problem;
mod service;
mod stored;

#[cfg(feature = "axum")]
mod extract;

pub use body::{RequestBody, ResponseBody};
pub use key::{IDEMPOTENCY_KEY, MAX_KEY_LEN};
pub use layer::{IdempotencyLayer, KeyPolicy, ServerErrors};
pub use problem::{PROBLEM_BASE, Problem};
pub use service::Idempotency;
pub use stored::REPLAYED;

pub use error::BoxError;

/// What a claimed request's handler learns about its claim, in the request's extensions (and,
/// with the `axum` feature, as an extractor): pass [`Claim::fencing_token`] to downstream
/// systems so that they can refuse a stale writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The execution's fencing token.
    pub fencing_token: sentinel_core::FencingToken,
    /// The record's namespace.
    pub namespace: String,
    /// The record's key: the principal's scope, `/`, the client's `Idempotency-Key`.
    pub key: String,
}
