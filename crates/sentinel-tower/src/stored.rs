//! A response as the record stores it, and the replay built from it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode, header};
use serde::{Deserialize, Serialize};

/// The header a replay carries.
pub const REPLAYED: &str = "idempotent-replayed";

/// What is kept of a response: its status, the headers chosen to be stored, and its body —
/// as text when it is UTF-8, else in base64 — byte for byte.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredResponse {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) body_base64: Option<String>,
}

impl StoredResponse {
    pub(crate) fn new(status: StatusCode, headers: Vec<(String, String)>, body: Vec<u8>) -> Self {
        let (body, body_base64) = match String::from_utf8(body) {
            Ok(text) => (Some(text), None),
            Err(e) => (None, Some(STANDARD.encode(e.into_bytes()))),
        };
        Self {
            status: status.as_u16(),
            headers,
            body,
            body_base64,
        }
    }

    /// The replay of a stored value. A value an operator stored by hand that is not a stored
    /// response goes out as JSON with 200.
    pub(crate) fn replay(value: Option<serde_json::Value>) -> Response<Bytes> {
        let mut response = match value {
            None => {
                // Resolved as done by an operator, without a result.
                let mut r = Response::new(Bytes::new());
                *r.status_mut() = StatusCode::NO_CONTENT;
                r
            }
            Some(value) => match serde_json::from_value::<StoredResponse>(value.clone()) {
                Ok(stored) => stored.into_response(),
                Err(_) => {
                    let mut r = Response::new(Bytes::from(value.to_string()));
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    r
                }
            },
        };
        response
            .headers_mut()
            .insert(REPLAYED, HeaderValue::from_static("true"));
        response
    }

    fn into_response(self) -> Response<Bytes> {
        let body = match (self.body, self.body_base64) {
            (Some(text), _) => Bytes::from(text),
            (None, Some(b64)) => STANDARD.decode(b64).map(Bytes::from).unwrap_or_default(),
            (None, None) => Bytes::new(),
        };
        let mut response = Response::new(body);
        *response.status_mut() = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        for (name, value) in self.headers {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                response.headers_mut().append(n, v);
            }
        }
        response
    }
}
