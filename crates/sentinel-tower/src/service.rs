//! [`Idempotency`]: the service, and what it does with one request.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{HeaderMap, Request, Response, header};
use http_body::Body;
use http_body_util::BodyExt;
use sentinel_core::{Begin, Error, Execution, Outcome, UncertainReason};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tower_service::Service;

use crate::body::{Capture, RequestBody, ResponseBody};
use crate::future::{CatchUnwind, ResponseFuture};
use crate::layer::{Config, KeyPolicy, ServerErrors, hex};
use crate::problem::Problem;
use crate::stored::StoredResponse;
use crate::{BoxError, Claim, key};

/// The headers every stored response keeps (when the handler set them).
const STORED_HEADERS: [header::HeaderName; 4] = [
    header::CONTENT_TYPE,
    header::LOCATION,
    header::ETAG,
    header::CONTENT_LOCATION,
];

/// A principal's scope longer than this is hashed, so that scope and key fit the record's key.
const MAX_SCOPE_LEN: usize = 200;

/// Runs each keyed request's handler at most once and replays its response; made by
/// [`IdempotencyLayer`](crate::IdempotencyLayer).
#[derive(Clone)]
pub struct Idempotency<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S: fmt::Debug> fmt::Debug for Idempotency<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Idempotency")
            .field("inner", &self.inner)
            .field("namespace", &self.config.namespace)
            .finish_non_exhaustive()
    }
}

impl<S> Idempotency<S> {
    pub(crate) fn new(inner: S, config: Arc<Config>) -> Self {
        Self { inner, config }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Idempotency<S>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The service that was driven to readiness serves this request; a clone takes its place.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::new(handle(self.config.clone(), inner, request))
    }
}

type Answer<B, E> = Result<Response<ResponseBody<B>>, E>;

fn problem<B>(
    p: Problem,
    detail: Option<&str>,
    retry_after: Option<u64>,
) -> Response<ResponseBody<B>> {
    p.response(detail, retry_after).map(ResponseBody::full)
}

fn replay<B>(value: Option<Value>) -> Response<ResponseBody<B>> {
    StoredResponse::replay(value).map(ResponseBody::full)
}

async fn pass<S, ReqBody, ResBody>(
    mut inner: S,
    request: Request<RequestBody<ReqBody>>,
) -> Answer<ResBody, S::Error>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>,
{
    let response = inner.call(request).await?;
    Ok(response.map(ResponseBody::passthrough))
}

async fn handle<S, ReqBody, ResBody>(
    config: Arc<Config>,
    inner: S,
    request: Request<ReqBody>,
) -> Answer<ResBody, S::Error>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>> + Send,
    S::Future: Send,
    ReqBody: Body<Data = Bytes> + Send,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let (parts, body) = request.into_parts();
    let policy = if config.methods.contains(&parts.method) {
        (config.key_policy)(&parts)
    } else {
        KeyPolicy::Exempt
    };
    let streaming = |parts, inner| Request::from_parts(parts, RequestBody::streaming(inner));
    if policy == KeyPolicy::Exempt {
        return pass(inner, streaming(parts, body)).await;
    }
    let client_key = match key::from_headers(&parts.headers) {
        Ok(Some(k)) => k,
        Ok(None) if policy == KeyPolicy::Optional => {
            return pass(inner, streaming(parts, body)).await;
        }
        Ok(None) => return Ok(problem(Problem::KeyMissing, None, None)),
        Err(e) => return Ok(problem(Problem::KeyInvalid, Some(e.detail()), None)),
    };
    let body = match read_body(body, config.max_request_body).await {
        Ok(b) => b,
        Err(p) => return Ok(problem(p, None, None)),
    };
    let record_key = format!("{}/{client_key}", scope((config.principal)(&parts)));
    let mut once = config
        .sentinel
        .once(record_key)
        .namespace(config.namespace.clone())
        .fingerprint(fingerprint(&parts, &body, &config.fingerprint_headers))
        .retain_for(config.retention);
    if let Some(ttl) = config.ttl {
        once = once.ttl(ttl);
    }
    if let Some(wait) = config.wait {
        once = once.wait(wait);
    }
    match once.begin::<Value, Value>().await {
        Ok(Begin::Acquired(execution)) => run(&config, inner, parts, body, execution).await,
        Ok(Begin::Settled(outcome)) => Ok(settled(outcome)),
        Ok(_) => Ok(problem(Problem::OutcomeUnknown, None, None)),
        Err(Error::FingerprintMismatch { .. }) => {
            Ok(problem(Problem::FingerprintMismatch, None, None))
        }
        Err(Error::InvalidInput(_)) => Ok(problem(Problem::KeyInvalid, None, None)),
        Err(e) if config.fail_open && matches!(e, Error::Store(_)) => {
            tracing::warn!(error = %e, "the idempotency store did not answer; running without a claim (fail open)");
            pass(
                inner,
                Request::from_parts(parts, RequestBody::buffered(body)),
            )
            .await
        }
        Err(e) => {
            tracing::warn!(error = %e, "the idempotency store did not answer; the request was not run");
            Ok(problem(Problem::StoreUnavailable, None, Some(1)))
        }
    }
}

/// What a key that has a record answers.
fn settled<B>(outcome: Outcome<Value, Value>) -> Response<ResponseBody<B>> {
    match outcome {
        Outcome::Completed { value, .. } => replay(Some(value)),
        Outcome::CompletedWithoutResult { .. } => replay(None),
        Outcome::Failed {
            error,
            replayed: true,
            ..
        } => replay(Some(error)),
        Outcome::Running {
            lease_expires_at, ..
        } => {
            let secs = lease_expires_at
                .and_then(|at| at.duration_since(SystemTime::now()).ok())
                .map_or(1, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
                .max(1);
            problem(Problem::InProgress, None, Some(secs))
        }
        _ => problem(Problem::OutcomeUnknown, None, None),
    }
}

/// The claimed request: the handler runs, and its response is stored as it streams out.
async fn run<S, ReqBody, ResBody>(
    config: &Config,
    mut inner: S,
    mut parts: Parts,
    body: Bytes,
    execution: Execution<Value, Value>,
) -> Answer<ResBody, S::Error>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    parts.extensions.insert(Claim {
        fencing_token: execution.fencing_token(),
        namespace: execution.namespace().to_owned(),
        key: execution.key().to_owned(),
    });
    let request = Request::from_parts(parts, RequestBody::buffered(body));
    // Dropped here (the client went away mid-handler): the execution's drop leaves the key
    // uncertain.
    let response = match CatchUnwind::new(inner.call(request)).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => {
            execution.abandon(UncertainReason::Failed).await;
            return Err(e);
        }
        Err(panic) => {
            execution.abandon(UncertainReason::Panicked).await;
            std::panic::resume_unwind(panic);
        }
    };
    let status = response.status();
    let store = if status.is_server_error() {
        config.server_errors == ServerErrors::Record
    } else {
        (config.stored_status)(status)
    };
    if !store {
        execution.release().await;
        return Ok(response.map(ResponseBody::passthrough));
    }
    let headers = stored_headers(response.headers(), &config.stored_headers);
    let expected = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .or_else(|| response.body().size_hint().exact());
    let (parts, body) = response.into_parts();
    let mut capture = Capture::new(
        execution,
        status,
        headers,
        config.max_response_body,
        expected,
    );
    if body.is_end_stream() {
        // No body to stream: stored before the response goes out.
        if let Some(task) = capture.finish() {
            let _ = task.await;
        }
        return Ok(Response::from_parts(parts, ResponseBody::passthrough(body)));
    }
    if ResponseBody::is_small(&body, config.max_response_body) {
        let body = ResponseBody::stored_first(body, capture).await;
        return Ok(Response::from_parts(parts, body));
    }
    Ok(Response::from_parts(
        parts,
        ResponseBody::capturing(body, capture),
    ))
}

/// The body of a keyed request, whole, refused over `cap` bytes.
async fn read_body<B>(body: B, cap: usize) -> Result<Bytes, Problem>
where
    B: Body<Data = Bytes>,
{
    if body.size_hint().lower() > cap as u64 {
        return Err(Problem::RequestTooLarge);
    }
    let mut body = std::pin::pin!(body);
    let mut first: Option<Bytes> = None;
    let mut rest = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| Problem::BodyUnreadable)?.into_data() else {
            continue; // trailers are not part of the fingerprint
        };
        let have = first.as_ref().map_or(0, Bytes::len) + rest.len();
        if have + data.len() > cap {
            return Err(Problem::RequestTooLarge);
        }
        // One chunk is kept as it came; a second starts a copy.
        match first.take() {
            None if rest.is_empty() => first = Some(data),
            Some(f) => {
                rest.extend_from_slice(&f);
                rest.extend_from_slice(&data);
            }
            None => rest.extend_from_slice(&data),
        }
    }
    Ok(if rest.is_empty() {
        first.unwrap_or_default()
    } else {
        rest.freeze()
    })
}

/// The principal's part of the record key: `/` and `%` escaped, so that scope and key split
/// at the first `/`; a long one hashed.
fn scope(principal: Option<String>) -> String {
    let Some(p) = principal else {
        return "anonymous".into();
    };
    if p.len() > MAX_SCOPE_LEN || p.is_empty() || p.chars().any(char::is_control) {
        return format!("sha256-{}", hex(&Sha256::digest(p.as_bytes())[..16]));
    }
    p.replace('%', "%25").replace('/', "%2F")
}

/// Method, path, query, the body's SHA-256 and the configured headers, each length-prefixed.
fn fingerprint(parts: &Parts, body: &[u8], headers: &[header::HeaderName]) -> Vec<u8> {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    field(parts.method.as_str().as_bytes());
    field(parts.uri.path().as_bytes());
    field(parts.uri.query().unwrap_or("").as_bytes());
    field(&Sha256::digest(body));
    for name in headers {
        field(name.as_str().as_bytes());
        for value in parts.headers.get_all(name) {
            field(value.as_bytes());
        }
    }
    h.finalize().to_vec()
}

/// The response headers a replay carries: the standard four and the configured ones, never
/// `Set-Cookie` (one client's session must not reach another retry).
fn stored_headers(headers: &HeaderMap, extra: &[header::HeaderName]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, name) in STORED_HEADERS.iter().chain(extra).enumerate() {
        let repeated = STORED_HEADERS
            .iter()
            .chain(extra)
            .take(i)
            .any(|n| n == name);
        if name == header::SET_COOKIE || repeated {
            continue;
        }
        for value in headers.get_all(name) {
            if let Ok(v) = value.to_str() {
                out.push((name.as_str().to_owned(), v.to_owned()));
            }
        }
    }
    out
}
