//! Refused requests are audited too: a 401, 403 or 404 is someone trying a key, a role or a
//! record that is not theirs, and the operator (and, for a patient's data, the patient) must be
//! able to see who tried what. The audit row names the caller when the key identifies one.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use hixbus_access::Directory;
use hixbus_storage::AuditLog;

/// What the middleware needs: who a key belongs to, and where to write.
#[derive(Debug, Clone)]
pub struct DenialAudit {
    pub directory: Arc<Directory>,
    pub audit: AuditLog,
}

/// The longest request path kept in an audit row.
const MAX_SUBJECT_CHARS: usize = 256;

/// Records every 401, 403 and 404 as `denied.<status>` with the method and path.
pub async fn audit_denials(
    State(state): State<DenialAudit>,
    request: Request,
    next: Next,
) -> Response {
    let subject: String = format!("{} {}", request.method(), request.uri().path())
        .chars()
        .take(MAX_SUBJECT_CHARS)
        .collect();
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    let response = next.run(request).await;
    let status = response.status();
    if matches!(
        status,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND
    ) {
        let who = state
            .directory
            .authenticate(authorization.as_deref())
            .map_or_else(|_| "anonymous".to_owned(), |org| org.id.clone());
        let action = format!("denied.{}", status.as_u16());
        if let Err(e) = state.audit.record(&who, &action, &subject, "").await {
            tracing::error!(error = %e, %who, %action, "audit of a refused request failed");
        }
    }
    response
}
