//! The researchers' API: the manifests of their own projects' releases. The records travel on
//! each project's topic; nothing here returns patient data.

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRef, State};
use hixbus_access::{Action, Caller, Directory};
use hixbus_service::ApiError;
use serde_json::{Value, json};

use crate::projects::Project;
use crate::store::Store;

/// Manifests per project one answer lists.
const LATEST: i64 = 50;

#[derive(Debug, Clone)]
pub struct AppState {
    pub directory: Arc<Directory>,
    pub store: Store,
    pub projects: Arc<Vec<Project>>,
}

impl FromRef<AppState> for Arc<Directory> {
    fn from_ref(state: &AppState) -> Self {
        state.directory.clone()
    }
}

/// `GET /research/releases`: each of the caller's projects, what it receives, and its latest
/// releases (newest first).
pub async fn releases(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let org = caller.require(Action::ReadResearchReleases)?;
    let mut projects = Vec::new();
    for p in state.projects.iter().filter(|p| p.researcher == org.id) {
        let releases = state.store.releases(&p.id, LATEST).await.map_err(|e| {
            tracing::error!(error = %e, "research store failed");
            ApiError::unavailable("the research store is unavailable; retry")
        })?;
        projects.push(json!({
            "project": p.id,
            "topic": hixbus_contracts::research_topic(&p.id),
            "purpose": p.purpose,
            "mode": p.mode,
            "k": p.k,
            "events": p.events,
            "fields": p.fields,
            "quasi_identifiers": p.quasi_identifiers,
            "opt_in": p.opt_in,
            "releases": releases,
        }));
    }
    Ok(Json(json!({ "researcher": org.id, "projects": projects })))
}
