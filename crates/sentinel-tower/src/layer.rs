//! [`IdempotencyLayer`]: the layer and its options.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use http::{HeaderName, Method, StatusCode, header};
use sentinel_core::Sentinel;
use sha2::{Digest, Sha256};
use tower_layer::Layer;

use crate::service::Idempotency;

/// Whether a route needs an `Idempotency-Key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyPolicy {
    /// A request without a key is refused (400 `key-missing`).
    Required,
    /// A request without a key runs every time, as if the layer were not there.
    Optional,
    /// The layer does not apply, even with a key.
    Exempt,
}

/// What becomes of a key whose handler answered 5xx.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerErrors {
    /// Released: the response passes through and the next retry runs the handler (default).
    Release,
    /// Stored and replayed like any other response.
    Record,
}

type KeyPolicyFn = dyn Fn(&Parts) -> KeyPolicy + Send + Sync;
type PrincipalFn = dyn Fn(&Parts) -> Option<String> + Send + Sync;
type StatusFn = dyn Fn(StatusCode) -> bool + Send + Sync;

/// The options one layer's services share.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) sentinel: Sentinel,
    pub(crate) namespace: String,
    pub(crate) methods: Vec<Method>,
    pub(crate) key_policy: Arc<KeyPolicyFn>,
    pub(crate) principal: Arc<PrincipalFn>,
    pub(crate) fingerprint_headers: Vec<HeaderName>,
    pub(crate) stored_headers: Vec<HeaderName>,
    pub(crate) stored_status: Arc<StatusFn>,
    pub(crate) server_errors: ServerErrors,
    pub(crate) max_request_body: usize,
    pub(crate) max_response_body: usize,
    pub(crate) ttl: Option<Duration>,
    pub(crate) wait: Option<Duration>,
    pub(crate) retention: Duration,
    pub(crate) fail_open: bool,
}

/// The `Idempotency-Key` layer: wraps a service in [`Idempotency`].
///
/// Defaults: POST and PATCH, key required on every route, the principal a hash of the
/// `Authorization` header, namespace `http`, 2xx–4xx stored, 5xx released, 1 MiB request and
/// response caps, 24 h retention, fail closed (503 when the store does not answer).
#[derive(Clone)]
#[must_use]
pub struct IdempotencyLayer {
    config: Arc<Config>,
}

impl fmt::Debug for IdempotencyLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        f.debug_struct("IdempotencyLayer")
            .field("namespace", &c.namespace)
            .field("methods", &c.methods)
            .field("server_errors", &c.server_errors)
            .field("max_request_body", &c.max_request_body)
            .field("max_response_body", &c.max_response_body)
            .field("wait", &c.wait)
            .field("retention", &c.retention)
            .field("fail_open", &c.fail_open)
            .finish_non_exhaustive()
    }
}

/// The default principal: a hash of the `Authorization` header (never the credential itself),
/// or `anonymous`.
fn authorization_scope(parts: &Parts) -> Option<String> {
    parts.headers.get(header::AUTHORIZATION).map(|v| {
        let digest = Sha256::digest(v.as_bytes());
        format!("auth-{}", hex(&digest[..16]))
    })
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

impl IdempotencyLayer {
    /// A layer on `sentinel`'s store, with the defaults above.
    pub fn new(sentinel: Sentinel) -> Self {
        Self {
            config: Arc::new(Config {
                sentinel,
                namespace: "http".into(),
                methods: vec![Method::POST, Method::PATCH],
                key_policy: Arc::new(|_| KeyPolicy::Required),
                principal: Arc::new(authorization_scope),
                fingerprint_headers: Vec::new(),
                stored_headers: Vec::new(),
                stored_status: Arc::new(|s| (200..500).contains(&s.as_u16())),
                server_errors: ServerErrors::Release,
                max_request_body: 1 << 20,
                max_response_body: 1 << 20,
                ttl: None,
                wait: None,
                retention: Duration::from_secs(24 * 3600),
                fail_open: false,
            }),
        }
    }

    fn with(mut self, f: impl FnOnce(&mut Config)) -> Self {
        // A layer that was cloned shares its options: change a copy of its own.
        f(Arc::make_mut(&mut self.config));
        self
    }

    /// The namespace the records go in (default `http`).
    pub fn namespace(self, namespace: impl Into<String>) -> Self {
        let namespace = namespace.into();
        self.with(|c| c.namespace = namespace)
    }

    /// The methods the layer applies to (default POST and PATCH); others pass through, even
    /// with a key.
    pub fn methods(self, methods: impl IntoIterator<Item = Method>) -> Self {
        let methods = methods.into_iter().collect();
        self.with(|c| c.methods = methods)
    }

    /// Decides per request whether a key is required, optional, or the layer stays out.
    pub fn key_policy(self, policy: impl Fn(&Parts) -> KeyPolicy + Send + Sync + 'static) -> Self {
        self.with(|c| c.key_policy = Arc::new(policy))
    }

    /// Paths (exact) where a key is optional; elsewhere it stays required.
    pub fn optional_paths<I, P>(self, paths: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        let paths: Vec<String> = paths.into_iter().map(Into::into).collect();
        self.key_policy(move |parts| {
            if paths.iter().any(|p| p == parts.uri.path()) {
                KeyPolicy::Optional
            } else {
                KeyPolicy::Required
            }
        })
    }

    /// Who a request is from: keys are scoped per principal, so one never sees another's
    /// response, running request or mismatch. `None` is the anonymous principal. The default
    /// hashes the `Authorization` header.
    pub fn principal(
        self,
        principal: impl Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.with(|c| c.principal = Arc::new(principal))
    }

    /// Request headers that are part of the fingerprint (beside method, path, query and body).
    pub fn fingerprint_headers(self, headers: impl IntoIterator<Item = HeaderName>) -> Self {
        let headers = headers.into_iter().collect();
        self.with(|c| c.fingerprint_headers = headers)
    }

    /// Response headers stored and replayed beside `Content-Type`, `Location`, `ETag` and
    /// `Content-Location` (`Set-Cookie` never is).
    pub fn stored_headers(self, headers: impl IntoIterator<Item = HeaderName>) -> Self {
        let headers = headers.into_iter().collect();
        self.with(|c| c.stored_headers = headers)
    }

    /// Which statuses are stored and replayed (default 200–499); any other releases the key.
    pub fn stored_statuses(
        self,
        stored: impl Fn(StatusCode) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.with(|c| c.stored_status = Arc::new(stored))
    }

    /// What a 5xx does to the key (default: released).
    pub fn server_errors(self, policy: ServerErrors) -> Self {
        self.with(|c| c.server_errors = policy)
    }

    /// The largest request body accepted, in bytes, inclusive (default 1 MiB); over it, 413
    /// before anything is claimed.
    pub fn max_request_body(self, bytes: usize) -> Self {
        self.with(|c| c.max_request_body = bytes)
    }

    /// The largest response body stored (default 1 MiB); a larger one streams to the client
    /// whole and leaves the key uncertain. The store's own `max_result_bytes` must hold it
    /// once encoded.
    pub fn max_response_body(self, bytes: usize) -> Self {
        self.with(|c| c.max_response_body = bytes)
    }

    /// The lease of a running request (default: the Sentinel's default ttl), renewed by the
    /// heartbeat while the handler runs.
    pub fn ttl(self, ttl: Duration) -> Self {
        self.with(|c| c.ttl = Some(ttl))
    }

    /// A retry while the first request runs waits up to `timeout` for it, then replays,
    /// instead of 409 `in-progress` at once.
    pub fn wait(self, timeout: Duration) -> Self {
        self.with(|c| c.wait = Some(timeout))
    }

    /// How long a stored response is kept (default 24 h); `prune` deletes it after that.
    pub fn retention(self, retention: Duration) -> Self {
        self.with(|c| c.retention = retention)
    }

    /// When the store does not answer, run the handler without a claim (no at-most-once
    /// guarantee for that request) instead of 503 `store-unavailable`.
    pub fn fail_open(self, fail_open: bool) -> Self {
        self.with(|c| c.fail_open = fail_open)
    }
}

impl<S> Layer<S> for IdempotencyLayer {
    type Service = Idempotency<S>;

    fn layer(&self, inner: S) -> Idempotency<S> {
        Idempotency::new(inner, self.config.clone())
    }
}
