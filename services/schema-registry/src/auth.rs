//! Who may use the registry, when it is given an organizations directory.
//!
//! A registry that anyone on the network can write to can break every consumer: one permanent
//! delete, or compatibility set to NONE before an incompatible schema. With a directory, every
//! request except `/` and `/health` authenticates like the rest of hixbus (Bearer key, or HTTP
//! Basic `<organization id>:<key>`, which is what Confluent's clients send). Every organization
//! may read schemas, since every producer and consumer needs them; only the operator role may
//! register, change compatibility or delete. Without a directory the registry is open, as in
//! the in-memory dev stack.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hixbus_access::{Action, Caller, Denied, Directory};

use crate::error::RegistryError;

/// Who may do what.
#[derive(Debug, Clone)]
pub struct Guard {
    pub directory: Arc<Directory>,
    /// Reads without credentials are allowed (the dev stack); changes never are.
    pub anonymous_reads: bool,
}

/// Refuses requests the caller may not make.
pub(crate) async fn require(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path == "/" || path == "/health" {
        return next.run(request).await;
    }
    let action = if changes_state(request.method(), path) {
        Action::ManageSchemas
    } else {
        Action::ReadSchemas
    };
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or_default());
    if guard.anonymous_reads && header.is_none() && action == Action::ReadSchemas {
        return next.run(request).await;
    }
    let allowed = guard
        .directory
        .authenticate(header)
        .and_then(|org| Caller(org).require(action).map(drop));
    match allowed {
        Ok(()) => next.run(request).await,
        Err(Denied::Unauthenticated(reason)) => {
            RegistryError::Unauthenticated(reason.to_owned()).into_response()
        }
        Err(Denied::Forbidden(reason)) => RegistryError::Forbidden(reason).into_response(),
    }
}

/// Registering, configuring and deleting change the registry; lookups (`POST /subjects/{s}`)
/// and compatibility checks are POSTs that only read.
fn changes_state(method: &Method, path: &str) -> bool {
    match *method {
        Method::PUT | Method::DELETE => true,
        Method::POST => path.starts_with("/subjects/") && path.ends_with("/versions"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_registering_configuring_and_deleting_change_state() {
        assert!(changes_state(
            &Method::POST,
            "/subjects/prescriptions-value/versions"
        ));
        assert!(changes_state(&Method::PUT, "/config"));
        assert!(changes_state(
            &Method::DELETE,
            "/subjects/prescriptions-value"
        ));
        assert!(!changes_state(
            &Method::POST,
            "/subjects/prescriptions-value"
        ));
        assert!(!changes_state(
            &Method::POST,
            "/compatibility/subjects/prescriptions-value/versions/latest"
        ));
        assert!(!changes_state(
            &Method::POST,
            "/compatibility/subjects/prescriptions-value/versions"
        ));
        assert!(!changes_state(&Method::GET, "/subjects"));
    }
}
