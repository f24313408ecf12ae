//! Confluent's REST resources. Handlers parse, call [`Registry`], and shape the answer exactly as
//! Confluent does (field names, status codes, `application/vnd.schemaregistry.v1+json`).

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::domain::{
    CompatibilityLevel, Mode, SCHEMA_TYPES, SchemaReference, Subject, VersionSpec,
};
use crate::error::{CONTENT_TYPE, RegistryError};
use crate::service::{Registry, SchemaSubmission, VersionView};

#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub registry: Registry,
    pub max_body_bytes: usize,
}

type Shared = State<Arc<AppState>>;
type Reply = Result<Response, RegistryError>;

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/health", get(health))
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route(
            "/subjects/{subject}/versions",
            get(list_versions).post(register),
        )
        .route(
            "/subjects/{subject}/versions/{version}",
            get(get_version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(get_version_schema),
        )
        .route(
            "/subjects/{subject}/versions/{version}/referencedby",
            get(referenced_by),
        )
        .route("/schemas/types", get(schema_types))
        .route("/schemas/ids/{id}", get(get_schema))
        .route("/schemas/ids/{id}/schema", get(get_schema_text))
        .route("/schemas/ids/{id}/versions", get(get_schema_versions))
        .route("/schemas/ids/{id}/subjects", get(get_schema_subjects))
        .route("/config", get(get_global_config).put(put_global_config))
        .route(
            "/config/{subject}",
            get(get_subject_config)
                .put(put_subject_config)
                .delete(delete_subject_config),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(check_against_history),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(check_against_version),
        )
        .route("/mode", get(get_global_mode).put(put_global_mode))
        .route(
            "/mode/{subject}",
            get(get_subject_mode)
                .put(put_subject_mode)
                .delete(delete_subject_mode),
        )
        .fallback(|| async { RegistryError::NoSuchResource })
        .method_not_allowed_fallback(|| async { RegistryError::MethodNotAllowed })
        .with_state(Arc::new(state))
}

/// A JSON answer with Confluent's content type.
fn reply(status: StatusCode, body: impl Serialize) -> Response {
    let text = serde_json::to_string(&body).unwrap_or_else(|_| "{}".to_owned());
    raw(status, text)
}

fn raw(status: StatusCode, text: String) -> Response {
    let mut response = (status, text).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

fn ok(body: impl Serialize) -> Reply {
    Ok(reply(StatusCode::OK, body))
}

/// Path parameters; a malformed one becomes a JSON error, not axum's plain-text rejection.
struct ApiPath<T>(T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = RegistryError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|e: PathRejection| RegistryError::MalformedRequest(e.body_text()))
    }
}

/// The boolean switches Confluent accepts as query parameters.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Flags {
    deleted: Option<String>,
    permanent: Option<String>,
    verbose: Option<String>,
    default_to_global: Option<String>,
    force: Option<String>,
}

fn flag(value: &Option<String>) -> bool {
    value
        .as_deref()
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

struct ApiQuery(Flags);

impl<S: Send + Sync> FromRequestParts<S> for ApiQuery {
    type Rejection = RegistryError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<Flags>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e: QueryRejection| RegistryError::MalformedRequest(e.body_text()))
    }
}

/// A JSON body, read whatever its content type (Confluent clients send several), bounded in
/// size, with parse errors reported the way Confluent reports them (HTTP 400, error_code 400).
struct ApiJson<T>(T);

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for ApiJson<T> {
    type Rejection = RegistryError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let limit = state.max_body_bytes;
        let bytes = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|_| RegistryError::TooLarge(limit))?;
        serde_json::from_slice(&bytes)
            .map(ApiJson)
            .map_err(|e| RegistryError::MalformedRequest(format!("Invalid JSON body: {e}")))
    }
}

#[derive(Debug, Deserialize)]
struct SchemaRequest {
    schema: Option<String>,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<SchemaReference>,
    /// IMPORT mode: the id and version the schema had in the registry it comes from.
    id: Option<i64>,
    version: Option<i64>,
}

impl From<SchemaRequest> for SchemaSubmission {
    fn from(r: SchemaRequest) -> Self {
        SchemaSubmission {
            schema: r.schema,
            schema_type: r.schema_type,
            references: r.references,
            id: r.id,
            version: r.version,
        }
    }
}

#[derive(Debug, Deserialize)]
struct ModeRequest {
    mode: Option<String>,
}

fn requested_mode(body: &ModeRequest) -> Result<Mode, RegistryError> {
    body.mode
        .as_deref()
        .ok_or_else(|| RegistryError::InvalidMode(String::new()))?
        .parse()
}

#[derive(Debug, Deserialize)]
struct ConfigRequest {
    compatibility: Option<String>,
}

#[derive(Serialize)]
struct VersionBody {
    subject: String,
    version: i64,
    id: i64,
    schema: String,
    /// Confluent leaves it out when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    references: Vec<SchemaReference>,
}

impl From<VersionView> for VersionBody {
    fn from(v: VersionView) -> Self {
        VersionBody {
            subject: v.subject,
            version: v.version,
            id: v.id,
            schema: v.schema,
            references: v.references,
        }
    }
}

fn subject(raw: &str) -> Result<Subject, RegistryError> {
    Subject::parse(raw)
}

fn schema_id(raw: &str) -> Result<i64, RegistryError> {
    raw.parse::<i64>()
        .map_err(|_| RegistryError::NoSuchResource)
}

async fn root() -> Reply {
    ok(json!({}))
}

async fn health(State(state): Shared) -> Reply {
    match state.registry.store().ping().await {
        Ok(()) => ok(json!({"status": "ok"})),
        Err(e) => Err(RegistryError::Store(e.to_string())),
    }
}

async fn list_subjects(State(state): Shared, ApiQuery(q): ApiQuery) -> Reply {
    ok(state.registry.subjects(flag(&q.deleted)).await?)
}

async fn list_versions(
    State(state): Shared,
    ApiPath(s): ApiPath<String>,
    ApiQuery(q): ApiQuery,
) -> Reply {
    ok(state
        .registry
        .versions(&subject(&s)?, flag(&q.deleted))
        .await?)
}

async fn register(
    State(state): Shared,
    ApiPath(s): ApiPath<String>,
    ApiJson(body): ApiJson<SchemaRequest>,
) -> Reply {
    let id = state.registry.register(&subject(&s)?, &body.into()).await?;
    ok(json!({ "id": id }))
}

async fn lookup(
    State(state): Shared,
    ApiPath(s): ApiPath<String>,
    ApiQuery(q): ApiQuery,
    ApiJson(body): ApiJson<SchemaRequest>,
) -> Reply {
    let found = state
        .registry
        .lookup(&subject(&s)?, &body.into(), flag(&q.deleted))
        .await?;
    ok(VersionBody::from(found))
}

async fn get_version(
    State(state): Shared,
    ApiPath((s, v)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery,
) -> Reply {
    let found = state
        .registry
        .version(&subject(&s)?, VersionSpec::parse(&v)?, flag(&q.deleted))
        .await?;
    ok(VersionBody::from(found))
}

async fn get_version_schema(
    State(state): Shared,
    ApiPath((s, v)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery,
) -> Reply {
    let found = state
        .registry
        .version(&subject(&s)?, VersionSpec::parse(&v)?, flag(&q.deleted))
        .await?;
    Ok(raw(StatusCode::OK, found.schema))
}

/// The ids of schemas in use that reference this version (what blocks deleting it).
async fn referenced_by(State(state): Shared, ApiPath((s, v)): ApiPath<(String, String)>) -> Reply {
    ok(state
        .registry
        .referenced_by(&subject(&s)?, VersionSpec::parse(&v)?)
        .await?)
}

async fn delete_subject(
    State(state): Shared,
    ApiPath(s): ApiPath<String>,
    ApiQuery(q): ApiQuery,
) -> Reply {
    ok(state
        .registry
        .delete_subject(&subject(&s)?, flag(&q.permanent))
        .await?)
}

async fn delete_version(
    State(state): Shared,
    ApiPath((s, v)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery,
) -> Reply {
    let version = state
        .registry
        .delete_version(&subject(&s)?, VersionSpec::parse(&v)?, flag(&q.permanent))
        .await?;
    ok(version)
}

async fn schema_types() -> Reply {
    ok(SCHEMA_TYPES)
}

async fn get_schema(State(state): Shared, ApiPath(id): ApiPath<String>) -> Reply {
    let found = state.registry.schema_by_id(schema_id(&id)?).await?;
    if found.references.is_empty() {
        ok(json!({ "schema": found.schema }))
    } else {
        ok(json!({ "schema": found.schema, "references": found.references }))
    }
}

async fn get_schema_text(State(state): Shared, ApiPath(id): ApiPath<String>) -> Reply {
    let found = state.registry.schema_by_id(schema_id(&id)?).await?;
    Ok(raw(StatusCode::OK, found.schema))
}

async fn get_schema_versions(
    State(state): Shared,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery,
) -> Reply {
    let usages = state
        .registry
        .schema_usages(schema_id(&id)?, flag(&q.deleted))
        .await?;
    let body: Vec<Value> = usages
        .into_iter()
        .map(|(subject, version)| json!({ "subject": subject, "version": version }))
        .collect();
    ok(body)
}

async fn get_schema_subjects(
    State(state): Shared,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery,
) -> Reply {
    let usages = state
        .registry
        .schema_usages(schema_id(&id)?, flag(&q.deleted))
        .await?;
    let mut subjects: Vec<String> = usages.into_iter().map(|(subject, _)| subject).collect();
    subjects.dedup();
    ok(subjects)
}

async fn get_global_config(State(state): Shared) -> Reply {
    let level = state.registry.global_level().await?;
    ok(json!({ "compatibilityLevel": level.as_str() }))
}

fn requested_level(body: &ConfigRequest) -> Result<CompatibilityLevel, RegistryError> {
    body.compatibility
        .as_deref()
        .ok_or(RegistryError::InvalidCompatibilityLevel)?
        .parse()
}

async fn put_global_config(State(state): Shared, ApiJson(body): ApiJson<ConfigRequest>) -> Reply {
    let level = requested_level(&body)?;
    state.registry.set_level(None, level).await?;
    ok(json!({ "compatibility": level.as_str() }))
}

async fn get_subject_config(
    State(state): Shared,
    ApiPath(s): ApiPath<String>,
    ApiQuery(q): ApiQuery,
) -> Reply {
    let subject = subject(&s)?;
    let level = match state.registry.subject_level(&subject).await? {
        Some(level) => level,
        None if flag(&q.default_to_global) => state.registry.global_level().await?,
        None => return Err(RegistryError::SubjectConfigNotFound(subject.to_string())),
    };
    ok(json!({ "compatibilityLevel": level.as_str() }))
}

async fn put_subject_config(
    State(state): Shared,
    ApiPath(s): ApiPath<String>,
    ApiJson(body): ApiJson<ConfigRequest>,
) -> Reply {
    let subject = subject(&s)?;
    let level = requested_level(&body)?;
    state.registry.set_level(Some(&subject), level).await?;
    ok(json!({ "compatibility": level.as_str() }))
}

async fn delete_subject_config(State(state): Shared, ApiPath(s): ApiPath<String>) -> Reply {
    let previous = state.registry.delete_subject_level(&subject(&s)?).await?;
    ok(json!({ "compatibilityLevel": previous.as_str() }))
}

fn compatibility_body(messages: Vec<String>, verbose: bool) -> Value {
    if verbose {
        json!({ "is_compatible": messages.is_empty(), "messages": messages })
    } else {
        json!({ "is_compatible": messages.is_empty() })
    }
}

async fn check_against_history(
    State(state): Shared,
    ApiPath(s): ApiPath<String>,
    ApiQuery(q): ApiQuery,
    ApiJson(body): ApiJson<SchemaRequest>,
) -> Reply {
    let messages = state
        .registry
        .check_compatibility(&subject(&s)?, None, &body.into())
        .await?;
    ok(compatibility_body(messages, flag(&q.verbose)))
}

async fn check_against_version(
    State(state): Shared,
    ApiPath((s, v)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery,
    ApiJson(body): ApiJson<SchemaRequest>,
) -> Reply {
    let spec = VersionSpec::parse(&v)?;
    let messages = state
        .registry
        .check_compatibility(&subject(&s)?, Some(spec), &body.into())
        .await?;
    ok(compatibility_body(messages, flag(&q.verbose)))
}

async fn get_global_mode(State(state): Shared) -> Reply {
    ok(json!({ "mode": state.registry.global_mode().await?.as_str() }))
}

async fn put_global_mode(
    State(state): Shared,
    ApiQuery(q): ApiQuery,
    ApiJson(body): ApiJson<ModeRequest>,
) -> Reply {
    let mode = requested_mode(&body)?;
    state.registry.set_mode(None, mode, flag(&q.force)).await?;
    ok(json!({ "mode": mode.as_str() }))
}

async fn get_subject_mode(
    State(state): Shared,
    ApiPath(s): ApiPath<String>,
    ApiQuery(q): ApiQuery,
) -> Reply {
    let subject = subject(&s)?;
    let mode = match state.registry.subject_mode(&subject).await? {
        Some(mode) => mode,
        None if flag(&q.default_to_global) => state.registry.global_mode().await?,
        None => return Err(RegistryError::SubjectModeNotFound(subject.to_string())),
    };
    ok(json!({ "mode": mode.as_str() }))
}

async fn put_subject_mode(
    State(state): Shared,
    ApiPath(s): ApiPath<String>,
    ApiQuery(q): ApiQuery,
    ApiJson(body): ApiJson<ModeRequest>,
) -> Reply {
    let subject = subject(&s)?;
    let mode = requested_mode(&body)?;
    state
        .registry
        .set_mode(Some(&subject), mode, flag(&q.force))
        .await?;
    ok(json!({ "mode": mode.as_str() }))
}

async fn delete_subject_mode(State(state): Shared, ApiPath(s): ApiPath<String>) -> Reply {
    let previous = state.registry.delete_subject_mode(&subject(&s)?).await?;
    ok(json!({ "mode": previous.as_str() }))
}
