//! A stand-in OpenID Connect provider for `hixbus up` and the tests: it publishes a discovery
//! document and its key set like a real provider, and signs ID tokens for whoever it is asked
//! to. Never for production, where patients sign in at a real provider (docs/patients.md); the
//! patient service verifies its tokens exactly as it verifies a real provider's.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// The client id the demo registers hixbus under (the tokens' `aud`).
pub const DEMO_AUDIENCE: &str = "hixbus-demo";

/// An issuer with one P-256 signing key, made at start.
pub struct DemoIssuer {
    issuer: String,
    kid: String,
    key: EncodingKey,
    jwk: Value,
}

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
                        "response_types_supported": ["id_token"],
                    }))
                }),
            )
            .route(
                "/jwks.json",
                get(|State(me): State<Arc<Self>>| async move { Json(me.jwks()) }),
            )
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
