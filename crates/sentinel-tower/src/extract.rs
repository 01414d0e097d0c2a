//! `Claim` as an axum extractor.

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use http::StatusCode;
use http::request::Parts;

use crate::Claim;

impl<S: Send + Sync> FromRequestParts<S> for Claim {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Claim>().cloned().ok_or((
            StatusCode::INTERNAL_SERVER_ERROR,
            "this request has no idempotency claim: the route is not behind IdempotencyLayer, \
             or its key is optional and the request has none (extract Option<Claim>)",
        ))
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Claim {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Claim>().cloned())
    }
}
