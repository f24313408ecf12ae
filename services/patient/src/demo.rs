//! A stand-in OpenID Connect provider for `hixbus up` and the tests: it publishes a discovery
//! document and its key set like a real provider, and signs ID tokens for whoever it is asked
//! to. Never for production, where patients sign in at a real provider (docs/patients.md); the
//! patient service verifies its tokens exactly as it verifies a real provider's.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The client id the demo registers hixbus under (the tokens' `aud`).
pub const DEMO_AUDIENCE: &str = "hixbus-demo";

/// An issuer with one P-256 signing key, made at start.
pub struct DemoIssuer {
    issuer: String,
    kid: String,
    key: EncodingKey,
    jwk: Value,
    /// Authorization codes handed out and not yet exchanged (the code flow).
    codes: Mutex<HashMap<String, Pending>>,
}

/// What an authorization code stands for until it is exchanged.
#[derive(Debug, Clone)]
struct Pending {
    subject: String,
    client_id: String,
    redirect_uri: String,
    nonce: Option<String>,
    challenge: String,
    issued: Instant,
}

/// How long an authorization code may wait to be exchanged.
const CODE_TTL: Duration = Duration::from_secs(60);
/// At most this many codes wait at once (the demo provider is reachable by anyone who can
/// reach `hixbus up`).
const MAX_PENDING_CODES: usize = 1000;
/// How long the ID tokens of the code flow are valid.
const CODE_FLOW_TOKEN_TTL: Duration = Duration::from_secs(3600);

impl std::fmt::Debug for DemoIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoIssuer")
            .field("issuer", &self.issuer)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl DemoIssuer {
    /// An issuer that will be served at `issuer` (its URL, as the tokens' `iss` says).
    pub fn new(issuer: &str) -> Result<Self, rcgen::Error> {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        // The public key is the uncompressed point: 0x04, then x and y.
        let public = pair.public_key_raw();
        if public.len() != 65 || public[0] != 4 {
            return Err(rcgen::Error::KeyGenerationUnavailable);
        }
        let kid = uuid::Uuid::new_v4().simple().to_string();
        let jwk = json!({
            "kty": "EC",
            "crv": "P-256",
            "alg": "ES256",
            "use": "sig",
            "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&public[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&public[33..65]),
        });
        Ok(Self {
            issuer: issuer.trim_end_matches('/').to_owned(),
            kid,
            key: EncodingKey::from_ec_der(&pair.serialize_der()),
            jwk,
            codes: Mutex::default(),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The key set, as `jwks_uri` serves it.
    pub fn jwks(&self) -> Value {
        json!({"keys": [self.jwk]})
    }

    /// An ID token for `subject`, for `audience`, valid for `ttl`.
    pub fn id_token(&self, subject: &str, audience: &str, ttl: Duration) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims = json!({
            "iss": self.issuer,
            "sub": subject,
            "aud": audience,
            "iat": now,
            "exp": now + i64::try_from(ttl.as_secs()).unwrap_or(3600),
        });
        self.sign(&claims)
    }

    /// Signs any claims with the issuer's key (the tests make malformed tokens with it).
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key)
            .expect("a P-256 key made here signs any JSON claims")
    }

    /// The provider's two public documents: `/.well-known/openid-configuration` and
    /// `/jwks.json`.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(|State(me): State<Arc<Self>>| async move {
                    Json(json!({
                        "issuer": me.issuer,
                        "jwks_uri": format!("{}/jwks.json", me.issuer),
                        "id_token_signing_alg_values_supported": ["ES256"],
                        "subject_types_supported": ["public"],
                        "response_types_supported": ["code", "id_token"],
                        "authorization_endpoint": format!("{}/authorize", me.issuer),
                        "token_endpoint": format!("{}/token", me.issuer),
                        "code_challenge_methods_supported": ["S256"],
                        "grant_types_supported": ["authorization_code"],
                    }))
                }),
            )
            .route(
                "/jwks.json",
                get(|State(me): State<Arc<Self>>| async move { Json(me.jwks()) }),
            )
            .route("/authorize", get(authorize_page).post(authorize))
            .route("/token", post(token))
            .with_state(self)
    }

    /// Serves [`Self::router`] on `listener` until `stop` fires.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        stop: hixbus_service::CancellationToken,
    ) {
        let router = self.router();
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
    }
}

/// The authorization request of the code flow (OpenID Connect Core 3.1.2.1, with PKCE), as a
/// relying party sends the browser here, and as the chooser page posts it back.
#[derive(Debug, serde::Deserialize)]
pub struct AuthorizeRequest {
    #[serde(default)]
    response_type: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    redirect_uri: String,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    code_challenge: String,
    #[serde(default)]
    code_challenge_method: String,
    /// Who signs in (posted by the chooser page).
    #[serde(default)]
    subject: Option<String>,
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl AuthorizeRequest {
    fn check(&self) -> Result<(), String> {
        if self.response_type != "code" {
            return Err("response_type must be code".into());
        }
        if self.code_challenge_method != "S256" || self.code_challenge.len() != 43 {
            return Err("PKCE is required: code_challenge (43 characters) with S256".into());
        }
        let uri = url::Url::parse(&self.redirect_uri).map_err(|_| "redirect_uri is no URL")?;
        if !matches!(uri.scheme(), "http" | "https") || self.redirect_uri.len() > 2048 {
            return Err("redirect_uri must be an http(s) URL".into());
        }
        let long = |v: &Option<String>| v.as_ref().is_some_and(|v| v.len() > 512);
        if self.client_id.is_empty()
            || self.client_id.len() > 256
            || long(&self.state)
            || long(&self.nonce)
        {
            return Err("client_id, state or nonce missing or too long".into());
        }
        Ok(())
    }
}

/// The demo sign-in page: who to sign in as (a real provider asks for a password here).
async fn authorize_page(Query(request): Query<AuthorizeRequest>) -> Response {
    if let Err(why) = request.check() {
        return (StatusCode::BAD_REQUEST, why).into_response();
    }
    let hidden = |name: &str, value: &str| {
        format!(
            r#"<input type="hidden" name="{name}" value="{}">"#,
            escape(value)
        )
    };
    let fields = [
        hidden("response_type", &request.response_type),
        hidden("client_id", &request.client_id),
        hidden("redirect_uri", &request.redirect_uri),
        hidden("state", request.state.as_deref().unwrap_or("")),
        hidden("nonce", request.nonce.as_deref().unwrap_or("")),
        hidden("code_challenge", &request.code_challenge),
        hidden("code_challenge_method", &request.code_challenge_method),
    ]
    .concat();
    Html(format!(
        r#"<!DOCTYPE html><html lang="ja"><head><meta charset="utf-8"><title>デモ認証</title></head>
<body><h1>デモ用サインイン (demo sign-in provider)</h1>
<p>hixbus up のデモ用です。本番では患者さんが利用する認証事業者の画面になります。</p>
<form method="post" action="/authorize">{fields}
<label for="subject">サインインする人 (subject)</label>
<input id="subject" name="subject" required maxlength="128" value="demo-taro">
<button type="submit">サインイン</button></form></body></html>"#
    ))
    .into_response()
}

async fn authorize(
    State(me): State<Arc<DemoIssuer>>,
    Form(request): Form<AuthorizeRequest>,
) -> Response {
    if let Err(why) = request.check() {
        return (StatusCode::BAD_REQUEST, why).into_response();
    }
    let subject = request.subject.clone().unwrap_or_default();
    if subject.is_empty() || subject.len() > 128 || subject.chars().any(char::is_control) {
        return (StatusCode::BAD_REQUEST, "subject is required").into_response();
    }
    let code = uuid::Uuid::new_v4().simple().to_string();
    {
        let mut codes = me.codes.lock().unwrap_or_else(PoisonError::into_inner);
        codes.retain(|_, p| p.issued.elapsed() < CODE_TTL);
        if codes.len() >= MAX_PENDING_CODES {
            return (StatusCode::SERVICE_UNAVAILABLE, "too many sign-ins at once").into_response();
        }
        codes.insert(
            code.clone(),
            Pending {
                subject,
                client_id: request.client_id.clone(),
                redirect_uri: request.redirect_uri.clone(),
                nonce: request.nonce.clone().filter(|n| !n.is_empty()),
                challenge: request.code_challenge.clone(),
                issued: Instant::now(),
            },
        );
    }
    let mut back = match url::Url::parse(&request.redirect_uri) {
        Ok(url) => url,
        Err(_) => return (StatusCode::BAD_REQUEST, "redirect_uri is no URL").into_response(),
    };
    back.query_pairs_mut().append_pair("code", &code);
    if let Some(state) = request.state.as_deref().filter(|s| !s.is_empty()) {
        back.query_pairs_mut().append_pair("state", state);
    }
    Redirect::to(back.as_str()).into_response()
}

#[derive(Debug, serde::Deserialize)]
pub struct TokenRequest {
    #[serde(default)]
    grant_type: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    redirect_uri: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    code_verifier: String,
}

/// Exchanges a code for an ID token, once, for the client and redirect it was issued to, with
/// the PKCE verifier whose SHA-256 is the challenge.
async fn token(State(me): State<Arc<DemoIssuer>>, Form(request): Form<TokenRequest>) -> Response {
    let refuse =
        |error: &str| (StatusCode::BAD_REQUEST, Json(json!({ "error": error }))).into_response();
    if request.grant_type != "authorization_code" {
        return refuse("unsupported_grant_type");
    }
    let pending = me
        .codes
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&request.code);
    let Some(pending) = pending else {
        return refuse("invalid_grant");
    };
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(request.code_verifier.as_bytes()));
    if pending.issued.elapsed() >= CODE_TTL
        || pending.client_id != request.client_id
        || pending.redirect_uri != request.redirect_uri
        || challenge != pending.challenge
    {
        return refuse("invalid_grant");
    }
    let now = chrono::Utc::now().timestamp();
    let mut claims = json!({
        "iss": me.issuer,
        "sub": pending.subject,
        "aud": pending.client_id,
        "iat": now,
        "exp": now + CODE_FLOW_TOKEN_TTL.as_secs() as i64,
    });
    if let Some(nonce) = pending.nonce {
        claims["nonce"] = json!(nonce);
    }
    Json(json!({
        "token_type": "Bearer",
        "id_token": me.sign(&claims),
        "expires_in": CODE_FLOW_TOKEN_TTL.as_secs(),
    }))
    .into_response()
}
