//! A client for Confluent-compatible schema registries (ours, or Confluent's own).
//!
//! Each operation has its own error enum, mapped from the registry's error codes, because callers
//! act on them differently: a codec retries a `Transient` failure but dead-letters a record whose
//! schema id is `NotFound`; the compatibility gate reports `Incompatible` as a failed check, not
//! as a crash.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use url::Url;

/// The media type Confluent's registry speaks.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

#[derive(Debug, Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    base: Url,
    basic_auth: Option<(String, String)>,
}

/// A failed call, before it is interpreted for a particular operation.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("schema registry unreachable: {0}")]
    Transport(#[source] reqwest::Error),
    #[error("schema registry answered HTTP {status}, error {code}: {message}")]
    Registry {
        status: u16,
        code: i64,
        message: String,
    },
    #[error("schema registry answered HTTP {status} with an unexpected body: {detail}")]
    Unexpected { status: u16, detail: String },
}

impl ApiError {
    /// Worth retrying later: the registry was unreachable, overloaded or failing internally.
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Transport(_) => true,
            ApiError::Registry { status, .. } | ApiError::Unexpected { status, .. } => {
                *status >= 500 || *status == 408 || *status == 429
            }
        }
    }

    /// The registry's error code (e.g. 40401), when it sent one.
    pub fn code(&self) -> Option<i64> {
        match self {
            ApiError::Registry { code, .. } => Some(*code),
            _ => None,
        }
    }

    fn message(&self) -> String {
        match self {
            ApiError::Registry { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("schema is incompatible with the subject's history: {0}")]
    Incompatible(String),
    #[error("schema is invalid: {0}")]
    InvalidSchema(String),
    #[error(transparent)]
    Transient(ApiError),
    #[error(transparent)]
    Other(ApiError),
}

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("subject not found")]
    SubjectNotFound,
    #[error("schema is not registered under this subject")]
    SchemaNotFound,
    #[error("schema is invalid: {0}")]
    InvalidSchema(String),
    #[error(transparent)]
    Transient(ApiError),
    #[error(transparent)]
    Other(ApiError),
}

#[derive(Debug, thiserror::Error)]
pub enum GetSchemaError {
    #[error("no schema with id {0}")]
    NotFound(u32),
    #[error(transparent)]
    Transient(ApiError),
    #[error(transparent)]
    Other(ApiError),
}

#[derive(Debug, thiserror::Error)]
pub enum CompatibilityError {
    #[error("subject not found")]
    SubjectNotFound,
    #[error("version not found")]
    VersionNotFound,
    #[error("schema is invalid: {0}")]
    InvalidSchema(String),
    #[error(transparent)]
    Transient(ApiError),
    #[error(transparent)]
    Other(ApiError),
}

/// A schema as registered under a subject.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SubjectVersion {
    pub subject: String,
    pub version: i32,
    pub id: u32,
    pub schema: String,
    /// Confluent leaves it out for Avro.
    #[serde(default, rename = "schemaType")]
    pub schema_type: Option<String>,
    /// Other subjects' schemas this one names (Confluent schema references).
    #[serde(default)]
    pub references: Vec<serde_json::Value>,
}

/// Which version of a subject to address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionRef {
    Latest,
    Number(i32),
}

impl VersionRef {
    fn segment(self) -> String {
        match self {
            VersionRef::Latest => "latest".to_owned(),
            VersionRef::Number(n) => n.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CompatibilityReport {
    pub is_compatible: bool,
    #[serde(default)]
    pub messages: Vec<String>,
}

#[derive(Serialize)]
struct SchemaRequest<'a> {
    schema: &'a str,
    #[serde(rename = "schemaType")]
    schema_type: &'static str,
}

impl<'a> SchemaRequest<'a> {
    fn avro(schema: &'a str) -> Self {
        Self {
            schema,
            schema_type: "AVRO",
        }
    }
}

#[derive(Deserialize)]
struct RegisterResponse {
    id: u32,
}

#[derive(Deserialize)]
struct SchemaResponse {
    schema: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error_code: i64,
    message: String,
}

#[derive(Deserialize)]
struct ConfigResponse {
    #[serde(rename = "compatibilityLevel", alias = "compatibility")]
    compatibility_level: String,
}

/// Makes rustls's ring provider the process default. reqwest is built without one (the default,
/// aws-lc, needs cmake to build), so any other `reqwest::Client` in the process needs this
/// first; a second call does nothing.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The HTTP client for registry calls: bounded waits, TLS through rustls with the ring provider.
fn http_client(
    extra_root: Option<reqwest::Certificate>,
) -> Result<reqwest::Client, reqwest::Error> {
    install_tls_provider();
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30));
    if let Some(root) = extra_root {
        builder = builder.add_root_certificate(root);
    }
    builder.build()
}

impl RegistryClient {
    /// `base_url` is the registry root, e.g. `http://127.0.0.1:8081`.
    pub fn new(base_url: &str) -> Result<Self, url::ParseError> {
        let mut base = Url::parse(base_url)?;
        // Joining segments onto "http://h/x" would replace "x"; a trailing slash keeps it.
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        Ok(Self {
            http: http_client(None).unwrap_or_default(),
            base,
            basic_auth: None,
        })
    }

    /// Also trusts `pem` (a private CA's or a self-signed certificate) for an `https://`
    /// registry; public CAs are trusted as the platform trusts them.
    pub fn with_root_certificate(mut self, pem: &[u8]) -> Result<Self, reqwest::Error> {
        self.http = http_client(Some(reqwest::Certificate::from_pem(pem)?))?;
        Ok(self)
    }

    /// Credentials for registries behind HTTP basic auth (Confluent Cloud API keys, say).
    pub fn with_basic_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.basic_auth = Some((user.into(), password.into()));
        self
    }

    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// Registers `schema` under `subject`, or returns the id it already has there.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegisterError> {
        let req = self
            .request(Method::POST, &["subjects", subject, "versions"])
            .json(&SchemaRequest::avro(schema));
        match self.call::<RegisterResponse>(req).await {
            Ok(r) => Ok(r.id),
            Err(e) => Err(match e.code() {
                Some(409) => RegisterError::Incompatible(e.message()),
                Some(42201) => RegisterError::InvalidSchema(e.message()),
                _ if e.is_transient() => RegisterError::Transient(e),
                _ => RegisterError::Other(e),
            }),
        }
    }

    /// Finds the version of `subject` whose schema is `schema`.
    pub async fn lookup(&self, subject: &str, schema: &str) -> Result<SubjectVersion, LookupError> {
        let req = self
            .request(Method::POST, &["subjects", subject])
            .json(&SchemaRequest::avro(schema));
        self.call(req).await.map_err(|e| match e.code() {
            Some(40401) => LookupError::SubjectNotFound,
            Some(40403) => LookupError::SchemaNotFound,
            Some(42201) => LookupError::InvalidSchema(e.message()),
            _ if e.is_transient() => LookupError::Transient(e),
            _ => LookupError::Other(e),
        })
    }

    /// The schema text for a global id, including schemas whose versions were soft-deleted
    /// (old records on a topic must stay readable).
    pub async fn schema_by_id(&self, id: u32) -> Result<String, GetSchemaError> {
        let mut req = self.request(Method::GET, &["schemas", "ids", &id.to_string()]);
        req = req.query(&[("deleted", "true")]);
        match self.call::<SchemaResponse>(req).await {
            Ok(r) => Ok(r.schema),
            Err(e) => Err(match e.code() {
                Some(40403) => GetSchemaError::NotFound(id),
                _ if e.is_transient() => GetSchemaError::Transient(e),
                _ => GetSchemaError::Other(e),
            }),
        }
    }

    /// Checks `schema` against one version, or with `None` against the versions the subject's
    /// compatibility level names (the registry's own rule for registration).
    pub async fn check_compatibility(
        &self,
        subject: &str,
        version: Option<VersionRef>,
        schema: &str,
    ) -> Result<CompatibilityReport, CompatibilityError> {
        let version_segment = version.map(VersionRef::segment);
        let mut segments = vec!["compatibility", "subjects", subject, "versions"];
        if let Some(v) = &version_segment {
            segments.push(v);
        }
        let req = self
            .request(Method::POST, &segments)
            .query(&[("verbose", "true")])
            .json(&SchemaRequest::avro(schema));
        self.call(req).await.map_err(|e| match e.code() {
            Some(40401) => CompatibilityError::SubjectNotFound,
            Some(40402) => CompatibilityError::VersionNotFound,
            Some(42201) => CompatibilityError::InvalidSchema(e.message()),
            _ if e.is_transient() => CompatibilityError::Transient(e),
            _ => CompatibilityError::Other(e),
        })
    }

    pub async fn subjects(&self) -> Result<Vec<String>, ApiError> {
        self.call(self.request(Method::GET, &["subjects"])).await
    }

    pub async fn versions(&self, subject: &str) -> Result<Vec<i32>, ApiError> {
        self.call(self.request(Method::GET, &["subjects", subject, "versions"]))
            .await
    }

    pub async fn version(
        &self,
        subject: &str,
        version: VersionRef,
    ) -> Result<SubjectVersion, ApiError> {
        let v = version.segment();
        self.call(self.request(Method::GET, &["subjects", subject, "versions", &v]))
            .await
    }

    /// The compatibility level of `subject`, or the global one with `None`.
    pub async fn compatibility_level(&self, subject: Option<&str>) -> Result<String, ApiError> {
        let mut segments = vec!["config"];
        segments.extend(subject);
        let req = self
            .request(Method::GET, &segments)
            .query(&[("defaultToGlobal", "true")]);
        Ok(self.call::<ConfigResponse>(req).await?.compatibility_level)
    }

    /// Sets the compatibility level (`BACKWARD`, `FULL_TRANSITIVE`, …) of `subject`, or the global
    /// one with `None`.
    pub async fn set_compatibility_level(
        &self,
        subject: Option<&str>,
        level: &str,
    ) -> Result<(), ApiError> {
        let mut segments = vec!["config"];
        segments.extend(subject);
        let req = self
            .request(Method::PUT, &segments)
            .json(&serde_json::json!({ "compatibility": level }));
        self.call::<serde_json::Value>(req).await.map(drop)
    }

    /// The level set on `subject` itself; `None` when it follows the global one.
    pub async fn subject_compatibility_level(
        &self,
        subject: &str,
    ) -> Result<Option<String>, ApiError> {
        let req = self.request(Method::GET, &["config", subject]);
        match self.call::<ConfigResponse>(req).await {
            Ok(config) => Ok(Some(config.compatibility_level)),
            Err(e) if e.code() == Some(40408) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sets the mode (`READWRITE`, `READONLY`, `IMPORT`) of `subject`, or the registry's with
    /// `None`; `force` enters IMPORT over existing schemas.
    pub async fn set_mode(
        &self,
        subject: Option<&str>,
        mode: &str,
        force: bool,
    ) -> Result<(), ApiError> {
        let mut segments = vec!["mode"];
        segments.extend(subject);
        let req = self
            .request(Method::PUT, &segments)
            .query(&[("force", force)])
            .json(&serde_json::json!({ "mode": mode }));
        self.call::<serde_json::Value>(req).await.map(drop)
    }

    /// Registers `schema` under `subject` with the id and version it had in another registry
    /// (the registry must be in IMPORT mode), with the references it had there (each must be
    /// imported first: ids ascending does that, a schema is registered after what it references).
    pub async fn import(
        &self,
        subject: &str,
        schema: &str,
        references: &[serde_json::Value],
        id: u32,
        version: i32,
    ) -> Result<u32, ApiError> {
        let req = self
            .request(Method::POST, &["subjects", subject, "versions"])
            .json(&serde_json::json!({
                "schema": schema,
                "schemaType": "AVRO",
                "references": references,
                "id": id,
                "version": version,
            }));
        Ok(self.call::<RegisterResponse>(req).await?.id)
    }

    /// Deletes a subject (soft, or `permanent` after a soft delete); returns the versions removed.
    pub async fn delete_subject(
        &self,
        subject: &str,
        permanent: bool,
    ) -> Result<Vec<i32>, ApiError> {
        let req = self
            .request(Method::DELETE, &["subjects", subject])
            .query(&[("permanent", permanent)]);
        self.call(req).await
    }

    fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        let req = self
            .http
            .request(method, url)
            .header(reqwest::header::ACCEPT, CONTENT_TYPE)
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE);
        match &self.basic_auth {
            Some((user, password)) => req.basic_auth(user, Some(password)),
            None => req,
        }
    }

    async fn call<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T, ApiError> {
        let response = req.send().await.map_err(ApiError::Transport)?;
        let status = response.status().as_u16();
        let body = read_body(response).await?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&body).map_err(|e| ApiError::Unexpected {
                status,
                detail: format!("{e}: {}", String::from_utf8_lossy(&body)),
            });
        }
        match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(err) => Err(ApiError::Registry {
                status,
                code: err.error_code,
                message: err.message,
            }),
            Err(_) => Err(ApiError::Unexpected {
                status,
                detail: String::from_utf8_lossy(&body).chars().take(500).collect(),
            }),
        }
    }
}

async fn read_body(response: Response) -> Result<Vec<u8>, ApiError> {
    Ok(response
        .bytes()
        .await
        .map_err(ApiError::Transport)?
        .to_vec())
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::{get, post};

    use super::*;

    async fn fake_registry(router: Router) -> RegistryClient {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        RegistryClient::new(&format!("http://{addr}")).unwrap()
    }

    fn error(status: StatusCode, code: i64, message: &str) -> (StatusCode, String) {
        (
            status,
            serde_json::json!({"error_code": code, "message": message}).to_string(),
        )
    }

    #[tokio::test]
    async fn registry_error_codes_map_to_operation_errors() {
        let client = fake_registry(
            Router::new()
                .route(
                    "/subjects/{s}/versions",
                    post(|| async { error(StatusCode::CONFLICT, 409, "incompatible: field x") }),
                )
                .route(
                    "/subjects/{s}",
                    post(|| async { error(StatusCode::NOT_FOUND, 40403, "Schema not found") }),
                )
                .route(
                    "/schemas/ids/{id}",
                    get(|| async { error(StatusCode::NOT_FOUND, 40403, "Schema 9 not found") }),
                ),
        )
        .await;
        assert!(matches!(
            client.register("s", "\"string\"").await,
            Err(RegisterError::Incompatible(m)) if m.contains("field x")
        ));
        assert!(matches!(
            client.lookup("s", "\"string\"").await,
            Err(LookupError::SchemaNotFound)
        ));
        assert!(matches!(
            client.schema_by_id(9).await,
            Err(GetSchemaError::NotFound(9))
        ));
    }

    #[tokio::test]
    async fn server_failures_and_garbage_are_transient_or_unexpected() {
        let client = fake_registry(
            Router::new()
                .route(
                    "/schemas/ids/{id}",
                    get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "upstream down") }),
                )
                .route("/subjects", get(|| async { "not json" })),
        )
        .await;
        match client.schema_by_id(1).await {
            Err(GetSchemaError::Transient(e)) => assert!(e.is_transient()),
            other => panic!("expected a transient error, got {other:?}"),
        }
        assert!(matches!(
            client.subjects().await,
            Err(ApiError::Unexpected { status: 200, .. })
        ));
    }

    #[tokio::test]
    async fn an_unreachable_registry_is_transient() {
        // Bind then drop, so the port is (almost certainly) closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = RegistryClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
        assert!(matches!(
            client.schema_by_id(1).await,
            Err(GetSchemaError::Transient(ApiError::Transport(_)))
        ));
    }

    #[test]
    fn subjects_are_percent_encoded_as_one_path_segment() {
        let client = RegistryClient::new("http://registry:8081/prefix").unwrap();
        let req = client
            .request(Method::GET, &["subjects", "a/b c", "versions"])
            .build()
            .unwrap();
        assert_eq!(
            req.url().as_str(),
            "http://registry:8081/prefix/subjects/a%2Fb%20c/versions"
        );
    }
}
