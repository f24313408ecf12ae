//! What every hixbus service needs that is not Kafka (that is `hixbus-bus`): the running service
//! (HTTP server with health and readiness, consumers, one cancellation to stop it all),
//! configuration, telemetry start-up, one JSON error shape and its FHIR form, bounded and timed
//! request bodies, input hygiene for text, per-organization limits, and the audit of refused
//! requests.

pub mod admission;
pub mod audit;
pub mod body;
pub mod changes;
pub mod config;
pub mod error;
pub mod fhir;
pub mod http;
pub mod identity;
pub mod limits;
pub mod metrics;
pub mod observe;
pub mod read_model;
pub mod run;
pub mod telemetry;
pub mod text;
pub mod trail;

pub use audit::{DenialAudit, audit_denials};
pub use config::BusSettings;
pub use error::ApiError;
pub use fhir::Outcome;
pub use limits::{PerKeyLimit, Permit};
pub use read_model::ReadModelError;
pub use run::{Deps, Service, StartupError, load_directory, shutdown_signal};
pub use tokio_util::sync::CancellationToken;

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

/// How an event names an organization of the directory.
pub fn institution(org: &hixbus_access::Organization) -> hixbus_contracts::InstitutionRef {
    hixbus_contracts::InstitutionRef {
        org_id: org.id.clone(),
        institution_code: org.institution_code.clone(),
        name: Some(org.name.clone()),
    }
}

/// The request's media type without its parameters (`application/fhir+json` of
/// `application/fhir+json; charset=utf-8`), if it has one.
pub fn media_type(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim)
}

/// JSON APIs take JSON (`application/json` or a `+json` type): anything else is refused
/// before the body is read.
pub fn require_json(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    match media_type(headers) {
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

/// `Query<T>` whose rejection is the JSON error every API answers with (axum's own is plain
/// text).
#[derive(Debug, Clone, Copy)]
pub struct JsonQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for JsonQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

/// `Path<T>` whose rejection is the JSON error.
#[derive(Debug, Clone)]
pub struct JsonPath<T>(pub T);

impl<T, S> FromRequestParts<S> for JsonPath<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

/// Finishes a service's API the way every service's is: unknown routes and methods answered in
/// JSON, request bodies bounded to `max_body` bytes, every refusal audited, every request
/// traced.
pub fn api<S: Clone + Send + Sync + 'static>(
    routes: axum::Router<S>,
    directory: std::sync::Arc<hixbus_access::Directory>,
    audit: hixbus_storage::AuditLog,
    max_body: usize,
) -> axum::Router<S> {
    routes
        .fallback(no_such_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            DenialAudit { directory, audit },
            audit_denials,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

/// The answer for a path no route has: JSON like every other error.
pub async fn no_such_route() -> ApiError {
    ApiError::not_found("no such resource")
}

/// The answer for a route called with a method it does not take.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this resource does not take that method",
    )
}

/// The longest id a path may carry.
pub const MAX_ID_CHARS: usize = 128;

/// An id from a path, before it reaches a query: one line of printable text, bounded. (A NUL
/// in one once reached PostgreSQL, which refused it, and the caller was told to retry.)
pub fn check_id(id: &str) -> Result<(), ApiError> {
    text::check_line(id, MAX_ID_CHARS)
        .map_err(|problem| ApiError::bad_request(format!("the id in the path {problem}")))
}

/// The order a list is paged in: `oldest` first (the default: a client catching up in order of
/// issue) or `newest` first (a screen). Ids are UUIDv7, so id order is the order of issue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListOrder {
    #[default]
    Oldest,
    Newest,
}
