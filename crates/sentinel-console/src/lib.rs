//! # Sentinel's operator console
//!
//! When a worker dies mid-execution its key waits, uncertain, for a person. This crate is where
//! that person looks and acts: server-rendered pages (an overview, a filterable list, each
//! record with its history, and the reconcile / resolve / reset / forget actions behind a
//! confirmation that says what will happen), the same reads and actions as a JSON API under
//! `/api/v1` (described by `/api/v1/openapi.json`), and `/metrics` in Prometheus text format.
//!
//! It is an [axum] [`Router`]: `sentinel serve` runs it on its own, and an application mounts it
//! under any prefix.
//!
//! ```no_run
//! # async fn demo(sentinel: sentinel_core::Sentinel) -> Result<(), Box<dyn std::error::Error>> {
//! use sentinel_console::{Auth, Console};
//!
//! let console = Console::new(sentinel).auth(Auth::from_file("/etc/sentinel/console.auth")?);
//! let app = axum::Router::new().nest("/ops/sentinel", console.router());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! ## Security
//!
//! With an [`Auth`] every request must authenticate (Basic or Bearer, see [`auth`]); viewers
//! read, operators also act. Without one every caller is an operator recorded under
//! [`Console::anonymous_actor`]: mount it only behind the application's own access control, or
//! on loopback (`sentinel serve` refuses any other address without an auth file). Every
//! state-changing request must come from the console's own pages (a per-user CSRF token in each
//! form, checked with the `Origin` header) or be JSON (`application/json`, which a foreign page
//! cannot send without a CORS permission the console never grants). Stored text is always
//! escaped, and the pages are served with a content security policy that runs only the
//! console's own script.
#![forbid(unsafe_code)]

use std::sync::Arc;

use axum::Router;
use axum::extract::{OriginalUri, Request, State};
use axum::http::header::{self, HeaderValue};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sentinel_core::Sentinel;

mod api;
mod assets;
pub mod auth;
mod html;
mod metrics;
mod pages;
mod view;

pub use auth::{Auth, AuthFileError, Principal, Role};

/// The console's settings; [`Console::router`] builds the routes.
#[derive(Debug, Clone)]
pub struct Console {
    sentinel: Sentinel,
    auth: Option<Auth>,
    anonymous: String,
    any_host: bool,
    origins: Vec<String>,
    #[cfg(feature = "metrics")]
    prometheus: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

/// The console over `sentinel` with no authentication (see [`Console`] for the settings).
pub fn router(sentinel: Sentinel) -> Router {
    Console::new(sentinel).router()
}

impl Console {
    /// A console over `sentinel`: no authentication, actions recorded as `console`.
    pub fn new(sentinel: Sentinel) -> Self {
        Self {
            sentinel,
            auth: None,
            anonymous: "console".to_owned(),
            any_host: false,
            origins: Vec::new(),
            #[cfg(feature = "metrics")]
            prometheus: None,
        }
    }

    /// Require every request to authenticate as a user of `auth`; actions are recorded under
    /// the user's name.
    #[must_use]
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Without [`Console::auth`]: the name actions are recorded under (`console` unless set).
    #[must_use]
    pub fn anonymous_actor(mut self, name: impl Into<String>) -> Self {
        self.anonymous = name.into();
        self
    }

    /// Without [`Console::auth`]: answer requests for any host name, not only `localhost`,
    /// `127.0.0.0/8` and `[::1]`. Only for a console mounted behind the application's own
    /// access control: on its own, a loopback console that answered any `Host` could be driven
    /// by a web page through DNS rebinding.
    #[must_use]
    pub fn allow_any_host(mut self) -> Self {
        self.any_host = true;
        self
    }

    /// Accept writes whose `Origin` is this one (e.g. `https://ops.example.com`), besides the
    /// request's own host: for a console behind a proxy that rewrites `Host`.
    #[must_use]
    pub fn allowed_origin(mut self, origin: impl Into<String>) -> Self {
        self.origins
            .push(origin.into().trim_end_matches('/').to_owned());
        self
    }

    /// Also serve what this recorder has counted (the engine's counters and histograms of this
    /// process) on `/metrics`. Install it as the `metrics` recorder first, e.g. with
    /// `PrometheusBuilder::new().install_recorder()`.
    #[cfg(feature = "metrics")]
    #[must_use]
    pub fn prometheus(mut self, handle: metrics_exporter_prometheus::PrometheusHandle) -> Self {
        self.prometheus = Some(handle);
        self
    }

    /// The routes, to serve or to [`Router::nest`] under a prefix. Links in the pages follow the
    /// prefix the router is mounted under.
    pub fn router(self) -> Router {
        let app = App(Arc::new(Inner {
            csrf: auth::CsrfKey::random(),
            console: self,
            namespaces: std::sync::Mutex::new(None),
        }));
        Router::new()
            .route("/", get(pages::overview))
            .route("/records", get(pages::records))
            .route("/record", get(pages::record))
            .route("/confirm", get(pages::confirm))
            .route("/action", post(pages::action))
            .route("/assets/{name}", get(assets::serve))
            .route("/api/v1/openapi.json", get(api::openapi))
            .route("/api/v1/me", get(api::me))
            .route("/api/v1/overview", get(api::overview))
            .route("/api/v1/records", get(api::records))
            .route("/api/v1/record", get(api::record))
            .route("/api/v1/reconcile", post(api::reconcile))
            .route("/api/v1/resolve", post(api::resolve))
            .route("/api/v1/forget", post(api::forget))
            .route("/metrics", get(metrics::serve))
            .fallback(not_found)
            .layer(axum::middleware::from_fn_with_state(app.clone(), guard))
            .with_state(app)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct App(Arc<Inner>);

#[derive(Debug)]
pub(crate) struct Inner {
    console: Console,
    csrf: auth::CsrfKey,
    /// The namespaces for the list's filter, read with the counts (a scan) at most every
    /// [`NAMESPACES_FOR`].
    namespaces: std::sync::Mutex<Option<(std::time::Instant, Vec<String>)>>,
}

/// How long the list page reuses the namespaces it read.
const NAMESPACES_FOR: std::time::Duration = std::time::Duration::from_secs(10);

impl App {
    pub(crate) fn sentinel(&self) -> &Sentinel {
        &self.0.console.sentinel
    }

    pub(crate) fn csrf(&self) -> &auth::CsrfKey {
        &self.0.csrf
    }

    /// The store's namespaces, sorted; read again when the last read is older than
    /// [`NAMESPACES_FOR`]. Empty when the store cannot say (the filter then offers none).
    pub(crate) async fn namespaces(&self) -> Vec<String> {
        let cached = self
            .0
            .namespaces
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some((_, names)) = cached.filter(|(at, _)| at.elapsed() < NAMESPACES_FOR) {
            return names;
        }
        let Ok(counts) = self.sentinel().counts().await else {
            return Vec::new();
        };
        let mut names: Vec<String> = counts.into_iter().map(|c| c.namespace).collect();
        names.sort();
        names.dedup();
        *self
            .0
            .namespaces
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((std::time::Instant::now(), names.clone()));
        names
    }

    #[cfg(feature = "metrics")]
    pub(crate) fn prometheus(&self) -> Option<&metrics_exporter_prometheus::PrometheusHandle> {
        self.0.console.prometheus.as_ref()
    }
}

/// What every handler knows about its request: who asks, and where the console is mounted.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub(crate) principal: Principal,
    /// The path prefix the router is mounted under (`""` at the root), escaped for HTML: what
    /// links start with.
    pub(crate) base: String,
    /// The same prefix as it came, for a `Location` header.
    pub(crate) raw_base: String,
}

impl Ctx {
    /// The overview's address: the mount point itself (axum's `nest` does not route a trailing
    /// slash), `/` at the root.
    pub(crate) fn home(&self) -> &str {
        if self.base.is_empty() {
            "/"
        } else {
            &self.base
        }
    }
}

/// The prefix the router is mounted under: the original path minus the path the router sees.
fn mount_base(original: &str, inner: &str) -> String {
    if let Some(base) = original.strip_suffix(inner) {
        return base.to_owned();
    }
    // `nest("/ops", …)` hands `/ops` to the router as `/`.
    if inner == "/" {
        return original.trim_end_matches('/').to_owned();
    }
    String::new()
}

fn is_api(path: &str) -> bool {
    path.starts_with("/api/") || path == "/metrics"
}

/// Authentication, authorization, the cross-site check of writes, and the security headers of
/// every response.
async fn guard(State(app): State<App>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let original = req
        .extensions()
        .get::<OriginalUri>()
        .map_or_else(|| path.clone(), |o| o.0.path().to_owned());
    let base = mount_base(&original, &path);
    let principal = match &app.0.console.auth {
        None => Ok(Principal {
            name: app.0.console.anonymous.clone(),
            role: Role::Operator,
        }),
        Some(auth) => auth.authenticate(req.headers()),
    };
    let console = &app.0.console;
    let host_refused = console.auth.is_none() && !console.any_host && !loopback_host(&req);
    let mut response = match principal {
        _ if host_refused => (
            StatusCode::MISDIRECTED_REQUEST,
            "this console has no sign-in and answers only for localhost, 127.0.0.1 and [::1]",
        )
            .into_response(),
        Err(denied) => refuse_unauthenticated(&path, denied),
        Ok(principal) => {
            let writes = !matches!(*req.method(), Method::GET | Method::HEAD);
            let ctx = Ctx {
                principal,
                base: html::esc(&base).to_string(),
                raw_base: base,
            };
            if writes && ctx.principal.role < Role::Operator {
                deny(
                    &ctx,
                    &path,
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    &format!(
                        "{} is a viewer: only operators may change keys",
                        ctx.principal.name
                    ),
                )
            } else if writes && cross_site(req.headers(), req.uri(), &console.origins) {
                deny(
                    &ctx,
                    &path,
                    StatusCode::FORBIDDEN,
                    "cross_site",
                    "refused: this request comes from another site",
                )
            } else {
                req.extensions_mut().insert(ctx);
                next.run(req).await
            }
        }
    };
    secure_headers(response.headers_mut());
    response
}

fn refuse_unauthenticated(path: &str, denied: auth::Denied) -> Response {
    let message = match denied {
        auth::Denied::Missing => "sign in: this console requires credentials",
        auth::Denied::Invalid => "these credentials are not valid for this console",
    };
    let mut response = if is_api(path) {
        api::error_response(StatusCode::UNAUTHORIZED, "unauthorized", message)
    } else {
        (StatusCode::UNAUTHORIZED, message).into_response()
    };
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"Sentinel console\", charset=\"UTF-8\""),
    );
    response
}

fn deny(ctx: &Ctx, path: &str, status: StatusCode, code: &str, message: &str) -> Response {
    if is_api(path) {
        api::error_response(status, code, message)
    } else {
        html::error_page(ctx, status, message)
    }
}

/// The host a request names: its `Host` header, else the authority of its URI (HTTP/2).
fn request_host<'a>(headers: &'a HeaderMap, uri: &'a axum::http::Uri) -> Option<&'a str> {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(axum::http::uri::Authority::as_str))
}

/// Whether the request names a loopback host (any port): `localhost`, `127.0.0.0/8`, `[::1]`.
fn loopback_host(req: &Request) -> bool {
    let Some(host) = request_host(req.headers(), req.uri()) else {
        return false;
    };
    let name = match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    };
    if name.eq_ignore_ascii_case("localhost") || name == "[::1]" {
        return true;
    }
    name.parse::<std::net::Ipv4Addr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// A write whose `Origin` is neither this host nor an allowed origin, or that the browser
/// marks as cross-site.
fn cross_site(headers: &HeaderMap, uri: &axum::http::Uri, allowed: &[String]) -> bool {
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site")
    {
        return true;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let origin = origin.to_str().unwrap_or("");
    if allowed.iter().any(|a| a == origin) {
        return false;
    }
    let Some(host) = request_host(headers, uri) else {
        return true;
    };
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    authority != Some(host)
}

fn secure_headers(h: &mut HeaderMap) {
    let csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
               connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

async fn not_found(ctx: axum::Extension<Ctx>, uri: axum::http::Uri) -> Response {
    if is_api(uri.path()) {
        api::error_response(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
    } else {
        html::error_page(&ctx, StatusCode::NOT_FOUND, "There is no such page.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mount_prefix_is_what_nesting_stripped() {
        assert_eq!(mount_base("/records", "/records"), "");
        assert_eq!(mount_base("/ops/records", "/records"), "/ops");
        assert_eq!(mount_base("/ops/", "/"), "/ops");
        assert_eq!(mount_base("/ops", "/"), "/ops");
        assert_eq!(mount_base("/", "/"), "");
    }

    #[test]
    fn writes_from_other_origins_are_cross_site() {
        let uri = axum::http::Uri::from_static("/action");
        let cross = |h: &HeaderMap| cross_site(h, &uri, &[]);
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(!cross(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(!cross(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("http://evil.test"));
        assert!(cross(&h));
        let allowed = ["http://evil.test".to_owned()];
        assert!(!cross_site(&h, &uri, &allowed), "an allowed origin");
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(cross(&h));
        h.remove(header::ORIGIN);
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(cross(&h));
        // HTTP/2: no Host header, the authority is in the URI.
        let mut h2 = HeaderMap::new();
        h2.insert(header::ORIGIN, HeaderValue::from_static("https://ops.test"));
        let abs = axum::http::Uri::from_static("https://ops.test/action");
        assert!(!cross_site(&h2, &abs, &[]));
    }

    #[test]
    fn only_loopback_names_are_loopback_hosts() {
        let with_host = |host: &'static str| {
            let req = Request::builder()
                .uri("/")
                .header(header::HOST, host)
                .body(axum::body::Body::empty())
                .unwrap();
            loopback_host(&req)
        };
        for ok in [
            "127.0.0.1:7878",
            "localhost",
            "LOCALHOST:80",
            "[::1]:7878",
            "127.1.2.3",
        ] {
            assert!(with_host(ok), "{ok}");
        }
        for bad in [
            "attacker.example:7878",
            "127.0.0.1.evil.test",
            "10.0.0.1:7878",
            "[::2]",
        ] {
            assert!(!with_host(bad), "{bad}");
        }
    }
}
