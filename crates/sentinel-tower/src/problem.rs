//! The responses the middleware itself produces: `application/problem+json` (RFC 9457) with a
//! stable `type` per outcome, `Cache-Control: no-store`, never echoing the key or anyone's data,
//! never stored.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

/// Where the problem types are documented; each type's last path segment names the outcome.
pub const PROBLEM_BASE: &str = "https://example.invalid/sentinel/problems/";

/// An outcome the middleware answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Problem {
    /// 400: the route requires an `Idempotency-Key` and the request has none.
    KeyMissing,
    /// 400: the `Idempotency-Key` is not one valid key.
    KeyInvalid,
    /// 400: the request body could not be read.
    BodyUnreadable,
    /// 413: the request body is over the configured cap.
    RequestTooLarge,
    /// 422: the key was used with another request (method, path, query, body or headers).
    FingerprintMismatch,
    /// 409: the first request with this key is still running.
    InProgress,
    /// 409: an earlier request's outcome is unknown; an operator must resolve the key.
    OutcomeUnknown,
    /// 503: the store did not answer; nothing ran.
    StoreUnavailable,
}

impl Problem {
    /// The last path segment of the type URI.
    pub const fn name(self) -> &'static str {
        match self {
            Problem::KeyMissing => "key-missing",
            Problem::KeyInvalid => "key-invalid",
            Problem::BodyUnreadable => "body-unreadable",
            Problem::RequestTooLarge => "request-too-large",
            Problem::FingerprintMismatch => "fingerprint-mismatch",
            Problem::InProgress => "in-progress",
            Problem::OutcomeUnknown => "outcome-unknown",
            Problem::StoreUnavailable => "store-unavailable",
        }
    }

    /// The status it is answered with.
    pub const fn status(self) -> StatusCode {
        match self {
            Problem::KeyMissing | Problem::KeyInvalid | Problem::BodyUnreadable => {
                StatusCode::BAD_REQUEST
            }
            Problem::RequestTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Problem::FingerprintMismatch => StatusCode::UNPROCESSABLE_ENTITY,
            Problem::InProgress | Problem::OutcomeUnknown => StatusCode::CONFLICT,
            Problem::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    const fn title(self) -> &'static str {
        match self {
            Problem::KeyMissing => "Idempotency-Key required",
            Problem::KeyInvalid => "Invalid Idempotency-Key",
            Problem::BodyUnreadable => "Request body unreadable",
            Problem::RequestTooLarge => "Request body too large",
            Problem::FingerprintMismatch => "Idempotency-Key reused with another request",
            Problem::InProgress => "Request in progress",
            Problem::OutcomeUnknown => "Outcome unknown",
            Problem::StoreUnavailable => "Idempotency store unavailable",
        }
    }

    const fn default_detail(self) -> &'static str {
        match self {
            Problem::KeyMissing => "this endpoint requires an Idempotency-Key header",
            Problem::KeyInvalid => "the Idempotency-Key header is not a valid key",
            Problem::BodyUnreadable => "the request body could not be read",
            Problem::RequestTooLarge => "the request body is larger than this endpoint accepts",
            Problem::FingerprintMismatch => {
                "this Idempotency-Key was used with a different request; use a new key"
            }
            Problem::InProgress => {
                "a request with this Idempotency-Key is still being processed; retry later"
            }
            Problem::OutcomeUnknown => {
                "an earlier request with this Idempotency-Key stopped before its outcome was \
                 known; it will not be run again until an operator resolves it"
            }
            Problem::StoreUnavailable => {
                "the request was not processed because its idempotency could not be checked; \
                 retry later"
            }
        }
    }

    /// The response: `detail` (or the default sentence), and `Retry-After` seconds when given.
    pub(crate) fn response(
        self,
        detail: Option<&str>,
        retry_after: Option<u64>,
    ) -> Response<Bytes> {
        let body = serde_json::json!({
            "type": format!("{PROBLEM_BASE}{}", self.name()),
            "title": self.title(),
            "status": self.status().as_u16(),
            "detail": detail.unwrap_or(self.default_detail()),
        });
        let mut response = Response::new(Bytes::from(body.to_string()));
        *response.status_mut() = self.status();
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(secs) = retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
