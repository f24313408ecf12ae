//! What every hixbus service needs that is not Kafka (that is `hixbus-bus`): one JSON error
//! shape, bounded and timed request bodies, input hygiene for text, per-organization limits,
//! and the audit of refused requests.

pub mod audit;
pub mod body;
pub mod error;
pub mod limits;
pub mod text;

pub use audit::{DenialAudit, audit_denials};
pub use error::ApiError;
pub use limits::{PerKeyLimit, Permit};

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

/// The address the request came from, when the server records it (it does in every service;
/// a router called in-process has none).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

/// JSON APIs take JSON (`application/json` or a `+json` type): anything else is refused
/// before the body is read.
pub fn require_json(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let media = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    match media {
        Some(m)
            if m == "application/json"
                || (m.starts_with("application/") && m.ends_with("+json")) =>
        {
            Ok(())
        }
        _ => Err(ApiError::new(
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send Content-Type: application/json",
        )),
    }
}
