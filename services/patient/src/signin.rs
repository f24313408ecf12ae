//! Patients sign in with their OpenID Connect provider: an ID token (`Authorization: Bearer`)
//! whose signature checks against the issuer's published keys (JWKS), with the configured issuer
//! and audience, not expired. The token names a person at that provider (`iss`, `sub`); which
//! patient that is, hixbus learns once, at enrolment (an institution that knows the patient
//! hands them a one-time code; see `routes::enrol`), never from the token's name or birth date.
//!
//! Keys are fetched when a token names one not seen yet, at most once per
//! [`REFETCH_AFTER`] (a flood of tokens with made-up key ids must not become a flood of
//! requests to the provider), and again every [`REFRESH_EVERY`] so a key the provider retired
//! stops being trusted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{FromRef, FromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;
use hixbus_service::ApiError;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::RwLock;

use crate::store::Store;

/// A key id the cached set does not have is looked up again no sooner than this.
pub const REFETCH_AFTER: Duration = Duration::from_secs(30);
/// The cached keys are replaced at least this often.
pub const REFRESH_EVERY: Duration = Duration::from_secs(3600);
/// ID tokens are a few kilobytes; anything much larger is not one.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// A discovery document or key set larger than this is refused.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Clock difference tolerated between the provider and hixbus.
const LEEWAY_SECS: u64 = 60;

/// The signature algorithms accepted: public-key ones only. A symmetric (`HS*`) token would be
/// signed with a secret the provider shares with every client, so anyone holding it could make
/// one.
const ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Who a valid ID token says is calling.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Person {
    pub iss: String,
    pub sub: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("send an OpenID Connect ID token: Authorization: Bearer <token>")]
    Missing,
    #[error("the ID token is not valid: {0}")]
    Invalid(String),
    #[error("the sign-in provider's keys cannot be read now: {0}")]
    Unreachable(String),
    #[error("patient sign-in is not configured on this exchange (oidc_issuer, oidc_audience)")]
    NotConfigured,
}

impl From<SignInError> for ApiError {
    fn from(e: SignInError) -> Self {
        match e {
            SignInError::Missing | SignInError::Invalid(_) => {
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", e.to_string())
            }
            SignInError::Unreachable(_) | SignInError::NotConfigured => {
                ApiError::unavailable(e.to_string())
            }
        }
    }
}

#[derive(Debug)]
struct Keys {
    set: JwkSet,
    fetched: Option<Instant>,
}

/// Checks ID tokens of one issuer for one audience.
#[derive(Debug)]
pub struct Verifier {
    issuer: String,
    audience: String,
    jwks_url: Option<String>,
    http: reqwest::Client,
    keys: RwLock<Keys>,
}

impl Verifier {
    /// A verifier that fetches the keys from `jwks_url`, or from the issuer's discovery document
    /// when that is `None`.
    pub fn new(issuer: String, audience: String, jwks_url: Option<String>) -> Self {
        hixbus_contracts::registry::install_tls_provider();
        Self {
            issuer,
            audience,
            jwks_url,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            keys: RwLock::new(Keys {
                set: JwkSet { keys: Vec::new() },
                fetched: None,
            }),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The person a valid token names.
    pub async fn verify(&self, token: &str) -> Result<Person, SignInError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(SignInError::Invalid("longer than any ID token".into()));
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| SignInError::Invalid(e.to_string()))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(SignInError::Invalid(format!(
                "{:?} is not a public-key signature",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| SignInError::Invalid("the header names no key (kid)".into()))?;
        let jwk = match self.key(&kid).await {
            Some(jwk) => jwk,
            None => {
                self.refetch().await?;
                self.key(&kid)
                    .await
                    .ok_or_else(|| SignInError::Invalid(format!("no key {kid:?} at the issuer")))?
            }
        };
        if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
            return Err(SignInError::Invalid(
                "the issuer publishes a symmetric key".into(),
            ));
        }
        if let Some(declared) = jwk.common.key_algorithm
            && format!("{declared:?}") != format!("{:?}", header.alg)
        {
            return Err(SignInError::Invalid(format!(
                "key {kid:?} is for {declared:?}, the token says {:?}",
                header.alg
            )));
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| SignInError::Invalid(e.to_string()))?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECS;
        let data = jsonwebtoken::decode::<Person>(token, &key, &validation)
            .map_err(|e| SignInError::Invalid(e.to_string()))?;
        if data.claims.sub.is_empty() || data.claims.sub.len() > 255 {
            return Err(SignInError::Invalid("sub is empty or too long".into()));
        }
        Ok(data.claims)
    }

    async fn key(&self, kid: &str) -> Option<jsonwebtoken::jwk::Jwk> {
        let keys = self.keys.read().await;
        let stale = keys.fetched.is_none_or(|at| at.elapsed() > REFRESH_EVERY);
        if stale {
            return None;
        }
        keys.set.find(kid).cloned()
    }

    /// Reads the key set again, unless it was read less than [`REFETCH_AFTER`] ago.
    async fn refetch(&self) -> Result<(), SignInError> {
        let mut keys = self.keys.write().await;
        if keys
            .fetched
            .is_some_and(|at| at.elapsed() < REFETCH_AFTER && at.elapsed() < REFRESH_EVERY)
        {
            return Ok(());
        }
        let url = match &self.jwks_url {
            Some(url) => url.clone(),
            None => {
                let discovery = format!(
                    "{}/.well-known/openid-configuration",
                    self.issuer.trim_end_matches('/')
                );
                let document: serde_json::Value = self.get(&discovery).await?;
                document
                    .get("jwks_uri")
                    .and_then(serde_json::Value::as_str)
                    .ok_or_else(|| {
                        SignInError::Unreachable(format!("{discovery} names no jwks_uri"))
                    })?
                    .to_owned()
            }
        };
        let set: JwkSet = self.get(&url).await?;
        tracing::info!(keys = set.keys.len(), %url, "sign-in keys read");
        *keys = Keys {
            set,
            fetched: Some(Instant::now()),
        };
        Ok(())
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, SignInError> {
        let unreachable =
            |e: &dyn std::fmt::Display| SignInError::Unreachable(format!("{url}: {e}"));
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| unreachable(&e))?;
        if !response.status().is_success() {
            return Err(unreachable(&response.status()));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
        {
            return Err(unreachable(&"too large"));
        }
        let bytes = response.bytes().await.map_err(|e| unreachable(&e))?;
        if bytes.len() > MAX_DOCUMENT_BYTES {
            return Err(unreachable(&"too large"));
        }
        serde_json::from_slice(&bytes).map_err(|e| unreachable(&e))
    }
}

/// What the patient routes need to know who is calling.
#[derive(Debug, Clone)]
pub struct SignIn {
    pub verifier: Option<Arc<Verifier>>,
    pub store: Store,
}

fn bearer(parts: &Parts) -> Result<&str, SignInError> {
    parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(SignInError::Missing)
}

/// A proxy acting for the patient `header` names, under a delegation in force.
async fn act_for(
    store: &Store,
    person: Person,
    header: &axum::http::HeaderValue,
) -> Result<Patient, ApiError> {
    let patient_ref = header
        .to_str()
        .ok()
        .filter(|r| hixbus_service::text::check_line(r, hixbus_service::MAX_ID_CHARS).is_ok())
        .ok_or_else(|| ApiError::bad_request(format!("{ACT_FOR} is not a patient reference")))?;
    let held = store.held_by(&person.iss, &person.sub).await.map_err(|e| {
        tracing::error!(error = %e, "reading delegations failed");
        ApiError::unavailable("the patient record is unavailable; try again")
    })?;
    let now = chrono::Utc::now().timestamp_millis();
    // One answer whether the patient exists or not: no delegation of theirs is in force.
    let delegation = held
        .into_iter()
        .find(|d| d.patient_ref == patient_ref && d.active(now))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "no_delegation",
                "no delegation in force lets this sign-in act for that patient",
            )
        })?;
    Ok(Patient {
        person,
        patient_ref: delegation.patient_ref,
        delegation: Some(delegation.id),
    })
}

/// A caller with a valid ID token, enrolled or not (what enrolment itself needs).
#[derive(Debug, Clone)]
pub struct SignedIn(pub Person);

impl<S> FromRequestParts<S> for SignedIn
where
    SignIn: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let signin = SignIn::from_ref(state);
        let verifier = signin.verifier.ok_or(SignInError::NotConfigured)?;
        Ok(Self(verifier.verify(bearer(parts)?).await?))
    }
}

/// A signed-in, enrolled patient, or their proxy: whose record this caller may read. The
/// reference comes from the caller's enrolment, or from a delegation the patient granted the
/// caller when the request names the patient in [`ACT_FOR`]; nothing else can name a patient.
#[derive(Debug, Clone)]
pub struct Patient {
    pub person: Person,
    pub patient_ref: String,
    /// The delegation a proxy acts under; `None` for the patient themself.
    pub delegation: Option<String>,
}

/// The header a proxy names the patient they act for in.
pub const ACT_FOR: &str = "hixbus-act-for";

impl Patient {
    /// How the audit log names who acted: the patient's sign-in, or the proxy's and the
    /// delegation it used.
    pub fn audit_name(&self) -> String {
        match &self.delegation {
            None => self.person.audit_name(),
            Some(id) => format!("proxy:{}:{id}", self.person.sub),
        }
    }

    /// Refuses a proxy: what only the patient may do (grant or revoke proxies).
    pub fn require_self(&self) -> Result<(), ApiError> {
        match self.delegation {
            None => Ok(()),
            Some(_) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "patient_only",
                "only the patient may do this, not a proxy",
            )),
        }
    }
}

impl Person {
    /// How the audit log names the person as the one acting: their sign-in, not an
    /// organization.
    pub fn audit_name(&self) -> String {
        format!("patient:{}", self.sub)
    }
}

impl<S> FromRequestParts<S> for Patient
where
    SignIn: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let SignedIn(person) = SignedIn::from_request_parts(parts, state).await?;
        let store = SignIn::from_ref(state).store;
        if let Some(header) = parts.headers.get(ACT_FOR) {
            return act_for(&store, person, header).await;
        }
        match store.account(&person.iss, &person.sub).await {
            Ok(Some(patient_ref)) => Ok(Self {
                person,
                patient_ref,
                delegation: None,
            }),
            Ok(None) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "not_enrolled",
                "this sign-in is not enrolled yet: redeem the code your clinic or pharmacy gave you at POST /patient/enrol",
            )),
            Err(e) => {
                tracing::error!(error = %e, "reading an account failed");
                Err(ApiError::unavailable(
                    "the patient record is unavailable; try again",
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::{DEMO_AUDIENCE, DemoIssuer};
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    /// A demo issuer served on a free port, and a verifier that trusts it.
    async fn issuer() -> (Arc<DemoIssuer>, Verifier, hixbus_service::CancellationToken) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let issuer = Arc::new(DemoIssuer::new(&url).unwrap());
        let stop = hixbus_service::CancellationToken::new();
        tokio::spawn(issuer.clone().serve(listener, stop.clone()));
        // Through the discovery document, as against a real provider.
        let verifier = Verifier::new(url, DEMO_AUDIENCE.into(), None);
        (issuer, verifier, stop)
    }

    fn claims_of(token: &str) -> serde_json::Value {
        let payload = token.split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
    }

    /// `token` with its payload replaced (the signature no longer matches).
    fn with_claims(token: &str, claims: &serde_json::Value) -> String {
        let parts: Vec<&str> = token.split('.').collect();
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        format!("{}.{payload}.{}", parts[0], parts[2])
    }

    #[tokio::test]
    async fn a_token_from_the_issuer_names_the_person() {
        let (issuer, verifier, _stop) = issuer().await;
        let token = issuer.id_token("alice", DEMO_AUDIENCE, Duration::from_secs(600));
        let person = verifier.verify(&token).await.unwrap();
        assert_eq!(person.sub, "alice");
        assert_eq!(person.iss, issuer.issuer());
    }

    #[tokio::test]
    async fn forged_expired_and_misaddressed_tokens_are_refused() {
        let (issuer, verifier, _stop) = issuer().await;
        let good = issuer.id_token("alice", DEMO_AUDIENCE, Duration::from_secs(600));
        let refused = async |token: &str| match verifier.verify(token).await {
            Err(SignInError::Invalid(why)) => why,
            other => panic!("{token:.40}… was not refused as invalid: {other:?}"),
        };
        // Someone else's name in a genuine token: the signature no longer matches.
        let mut claims = claims_of(&good);
        claims["sub"] = serde_json::json!("mallory");
        refused(&with_claims(&good, &claims)).await;
        // For another application.
        refused(&issuer.id_token("alice", "another-app", Duration::from_secs(600))).await;
        // Expired (beyond the leeway).
        let mut claims = claims_of(&good);
        claims["exp"] = serde_json::json!(chrono::Utc::now().timestamp() - 3600);
        let expired = issuer.sign(&claims);
        assert!(refused(&expired).await.to_lowercase().contains("expired"));
        // From another issuer, signed with its own key.
        let (other, _, _stop2) = self::issuer().await;
        refused(&other.id_token("alice", DEMO_AUDIENCE, Duration::from_secs(600))).await;
        // Claims of the wrong type.
        let mut claims = claims_of(&good);
        claims["exp"] = serde_json::json!("tomorrow");
        refused(&issuer.sign(&claims)).await;
        // Unsigned (`alg: none`) and symmetric (`HS256`, signed with a guessable secret).
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(claims_of(&good).to_string());
        refused(&format!("{header}.{body}.")).await;
        let hs = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &claims_of(&good),
            &jsonwebtoken::EncodingKey::from_secret(b"secret").unwrap(),
        )
        .unwrap();
        assert!(refused(&hs).await.contains("public-key"));
        refused("not a token").await;
        refused(&"a".repeat(MAX_TOKEN_BYTES + 1)).await;
        // And the genuine one still works.
        assert_eq!(verifier.verify(&good).await.unwrap().sub, "alice");
    }

    #[tokio::test]
    async fn unknown_key_ids_do_not_make_a_request_each() {
        let (issuer, verifier, stop) = issuer().await;
        let good = issuer.id_token("alice", DEMO_AUDIENCE, Duration::from_secs(600));
        verifier.verify(&good).await.unwrap();
        // The provider goes away; tokens naming made-up keys are refused from the cache, not
        // by asking it again (which would fail as unreachable).
        stop.cancel();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut header: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(good.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        for n in 0..20 {
            header["kid"] = serde_json::json!(format!("made-up-{n}"));
            let parts: Vec<&str> = good.split('.').collect();
            let token = format!(
                "{}.{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                parts[1],
                parts[2]
            );
            match verifier.verify(&token).await {
                Err(SignInError::Invalid(why)) => assert!(why.contains("no key"), "{why}"),
                other => panic!("{other:?}"),
            }
        }
        // The known key is still trusted without the provider.
        assert_eq!(verifier.verify(&good).await.unwrap().sub, "alice");
    }

    #[tokio::test]
    async fn an_unreachable_provider_is_unavailable_not_unauthenticated() {
        let verifier = Verifier::new("http://127.0.0.1:9".into(), DEMO_AUDIENCE.into(), None);
        let issuer = DemoIssuer::new("http://127.0.0.1:9").unwrap();
        let token = issuer.id_token("alice", DEMO_AUDIENCE, Duration::from_secs(600));
        assert!(matches!(
            verifier.verify(&token).await,
            Err(SignInError::Unreachable(_))
        ));
    }
}
