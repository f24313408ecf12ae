//! Who is calling and what they may do.
//!
//! Every organization on the bus (clinic, hospital, pharmacy, insurer, lab, and the operator
//! running the bus) is declared in a directory file with its role and the SHA-256 digests of its
//! API keys; the keys themselves are shown once, when issued, and never stored. A request
//! authenticates with `Authorization: Bearer <key>`, or with HTTP Basic `<org id>:<key>` (what
//! Confluent's clients send to a schema registry); its role decides what it may do, and handlers
//! decide which records are its own (a pharmacy's inbox, a clinic's prescriptions).
//!
//! API keys are 256-bit random values, so a fast hash is enough: there is no low-entropy secret
//! to stretch, unlike a password. Every key has an expiry date (at most
//! [`MAX_KEY_VALIDITY_DAYS`] away): a key that leaks stops working by itself, and a directory
//! cannot hold a key that is valid forever.

pub mod codes;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{NaiveDate, Utc};
use headers::authorization::{Basic, Bearer};

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What an organization is, which decides what it may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Clinic,
    Hospital,
    Pharmacy,
    Insurer,
    Lab,
    /// Runs the bus: manages the schema registry, watches topics and consumer groups, handles
    /// dead letters. Sees patient data only in a dead letter it opens, and each such read is
    /// audited to the patient's trail.
    Operator,
    /// Receives de-identified research releases for its projects (docs/research.md), on their
    /// own topics; reads no patient's data through any API.
    Researcher,
}

/// Things a caller can ask to do. Ownership (which prescriptions) is checked by the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    IssuePrescription,
    CancelPrescription,
    ViewIssuedPrescriptions,
    ViewPharmacyInbox,
    DispensePrescription,
    /// Send lab results (HL7 v2 or FHIR) as the performing laboratory.
    ReportLabResults,
    /// Read the results of tests the organization ordered, and acknowledge critical ones.
    ViewOrderedResults,
    /// Send health checkup reports as the institution that performed the checkup.
    ReportCheckups,
    /// Read the insurer's own feed (its members' checkups, later its claims).
    ReadInsurerFeed,
    /// Link the organization's own patient ids to the patients' insurance.
    RegisterPatients,
    /// Read a patient's cross-institution summary for treating or dispensing: its own data
    /// always, others' as the patient's consent allows.
    ViewPatientSummary,
    /// Open a patient's summary without consent in an emergency, with a reason.
    BreakGlass,
    /// Hand a patient, whose insurance card it has checked, the one-time code that enrols
    /// their sign-in to their record (docs/patients.md).
    EnrolPatients,
    /// Bill insurers (FHIR Claims; a pharmacy's dispensings are billed for it) and read its
    /// own claims and the insurers' decisions on them.
    SubmitClaims,
    /// Decide on the claims billed to it and manage its member roster.
    AdjudicateClaims,
    /// Read the manifests of its own research projects' releases (docs/research.md).
    ReadResearchReleases,
    /// Read schemas from the registry (every producer and consumer needs to).
    ReadSchemas,
    /// Register schemas, change compatibility, delete subjects.
    ManageSchemas,
    /// See the bus at work: topics, throughput, consumer-group lag, the services' health.
    ObserveBus,
    /// Read dead letters (each read audited) and put them back on their topic.
    HandleDeadLetters,
}

impl Role {
    pub fn may(self, action: Action) -> bool {
        use Action::*;
        if action == ReadSchemas {
            return true;
        }
        match self {
            Role::Clinic => matches!(
                action,
                IssuePrescription
                    | CancelPrescription
                    | ViewIssuedPrescriptions
                    | ViewOrderedResults
                    | ReportCheckups
                    | RegisterPatients
                    | EnrolPatients
                    | ViewPatientSummary
                    | BreakGlass
                    | SubmitClaims
            ),
            // A hospital's own laboratory reports results too.
            Role::Hospital => matches!(
                action,
                IssuePrescription
                    | CancelPrescription
                    | ViewIssuedPrescriptions
                    | ViewOrderedResults
                    | ReportLabResults
                    | ReportCheckups
                    | RegisterPatients
                    | EnrolPatients
                    | ViewPatientSummary
                    | BreakGlass
                    | SubmitClaims
            ),
            Role::Lab => matches!(action, ReportLabResults | RegisterPatients),
            Role::Pharmacy => matches!(
                action,
                ViewPharmacyInbox
                    | DispensePrescription
                    | SubmitClaims
                    | EnrolPatients
                    | ViewPatientSummary
            ),
            Role::Operator => matches!(action, ManageSchemas | ObserveBus | HandleDeadLetters),
            Role::Researcher => action == ReadResearchReleases,
            Role::Insurer => matches!(action, ReadInsurerFeed | AdjudicateClaims),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Clinic => "clinic",
            Role::Hospital => "hospital",
            Role::Pharmacy => "pharmacy",
            Role::Insurer => "insurer",
            Role::Lab => "lab",
            Role::Operator => "operator",
            Role::Researcher => "researcher",
        }
    }
}

/// A member of the exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Organization {
    /// Stable id, used as `producer_org` on every event it publishes.
    pub id: String,
    pub role: Role,
    pub name: String,
    /// The national medical-institution or pharmacy code, when it has one.
    #[serde(default)]
    pub institution_code: Option<String>,
    /// Its API keys (digests and expiry); several during a key rotation.
    #[serde(default, rename = "api_key")]
    pub api_keys: Vec<KeyEntry>,
}

/// One API key of an organization, as the directory file holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// SHA-256 (hex) of the key; the key itself is never stored.
    pub sha256: String,
    /// The first day (UTC) the key is refused: a TOML date, `expires_on = 2027-04-01`.
    #[serde(deserialize_with = "toml_date")]
    pub expires_on: NaiveDate,
}

/// A TOML date (or a `YYYY-MM-DD` string) as a calendar date.
fn toml_date<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<NaiveDate, D::Error> {
    use serde::de::Error as _;
    let value = toml::Value::deserialize(deserializer)?;
    let text = match &value {
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::String(s) => s.clone(),
        other => return Err(D::Error::custom(format!("expected a date, got {other:?}"))),
    };
    NaiveDate::parse_from_str(&text, "%Y-%m-%d")
        .map_err(|e| D::Error::custom(format!("expires_on {text:?}: {e} (write YYYY-MM-DD)")))
}

/// The longest a key may be valid: a directory with a key that expires later is refused.
pub const MAX_KEY_VALIDITY_DAYS: i64 = 730;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectoryFile {
    #[serde(rename = "organization", default)]
    organizations: Vec<Organization>,
}

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error(
        "organization {0:?}: `api_key_sha256` lists keys without an expiry; write each as [[organization.api_key]] with sha256 and expires_on (see docs/prescriptions.md)"
    )]
    KeysWithoutExpiry(String),
    #[error("organizations file: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("organization {0:?} is declared twice")]
    DuplicateId(String),
    #[error("an API key digest is shared by {0:?} and {1:?}")]
    SharedKey(String, String),
    #[error("organization {0:?}: {1}")]
    Invalid(String, &'static str),
    #[error("no organization {0:?}")]
    Unknown(String),
}

/// Every organization, and which key belongs to whom.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    organizations: HashMap<String, Arc<Organization>>,
    /// Key digest → (owner, first day refused).
    keys: HashMap<String, (String, NaiveDate)>,
}

/// A freshly issued API key: give it to the organization, it is not stored anywhere (and not
/// printed by `Debug`).
#[derive(Debug, Clone)]
pub struct ApiKey(secrecy::SecretString);

impl ApiKey {
    pub fn expose(&self) -> &str {
        secrecy::ExposeSecret::expose_secret(&self.0)
    }
}

/// How long [`Directory::issue_key`] makes a key valid.
pub const DEFAULT_KEY_VALIDITY_DAYS: i64 = 365;

/// A new 256-bit key: `hxb_` and 64 hex digits from the OS-seeded CSPRNG.
pub fn new_key() -> ApiKey {
    let bytes: [u8; 32] = rand::random();
    ApiKey(format!("hxb_{}", hex::encode(bytes)).into())
}

/// The digest a directory stores for `key`.
pub fn digest(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl Directory {
    pub fn from_toml(text: &str) -> Result<Self, DirectoryError> {
        if let Ok(raw) = toml::from_str::<toml::Table>(text)
            && let Some(toml::Value::Array(orgs)) = raw.get("organization")
            && let Some(org) = orgs.iter().find(|o| o.get("api_key_sha256").is_some())
        {
            let id = org.get("id").and_then(toml::Value::as_str).unwrap_or("?");
            return Err(DirectoryError::KeysWithoutExpiry(id.to_owned()));
        }
        let file: DirectoryFile = toml::from_str(text)?;
        let mut directory = Directory::default();
        for org in file.organizations {
            directory.add(org)?;
        }
        Ok(directory)
    }

    pub fn add(&mut self, org: Organization) -> Result<(), DirectoryError> {
        let valid_id = !org.id.is_empty()
            && org
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid_id {
            return Err(DirectoryError::Invalid(
                org.id,
                "ids are ASCII letters, digits, '-' and '_'",
            ));
        }
        if self.organizations.contains_key(&org.id) {
            return Err(DirectoryError::DuplicateId(org.id));
        }
        let latest = Utc::now().date_naive() + chrono::Duration::days(MAX_KEY_VALIDITY_DAYS);
        for key in &org.api_keys {
            if key.sha256.len() != 64 || !key.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(DirectoryError::Invalid(
                    org.id,
                    "api_key sha256 entries are 64 hex digits",
                ));
            }
            if key.expires_on > latest {
                return Err(DirectoryError::Invalid(
                    org.id,
                    "an API key may be valid for at most 730 days: set an earlier expires_on",
                ));
            }
            if let Some((owner, _)) = self.keys.get(&key.sha256.to_ascii_lowercase()) {
                return Err(DirectoryError::SharedKey(owner.clone(), org.id));
            }
        }
        for key in &org.api_keys {
            self.keys.insert(
                key.sha256.to_ascii_lowercase(),
                (org.id.clone(), key.expires_on),
            );
        }
        self.organizations.insert(org.id.clone(), Arc::new(org));
        Ok(())
    }

    /// Issues a new API key for `org_id`, accepted from now until [`DEFAULT_KEY_VALIDITY_DAYS`]
    /// from today.
    pub fn issue_key(&mut self, org_id: &str) -> Result<ApiKey, DirectoryError> {
        let expires_on =
            Utc::now().date_naive() + chrono::Duration::days(DEFAULT_KEY_VALIDITY_DAYS);
        self.issue_key_until(org_id, expires_on)
    }

    /// Issues a new API key for `org_id`, refused from `expires_on` (UTC) on.
    pub fn issue_key_until(
        &mut self,
        org_id: &str,
        expires_on: NaiveDate,
    ) -> Result<ApiKey, DirectoryError> {
        let org = self
            .organizations
            .get_mut(org_id)
            .ok_or_else(|| DirectoryError::Unknown(org_id.to_owned()))?;
        let key = new_key();
        let hashed = digest(key.expose());
        Arc::make_mut(org).api_keys.push(KeyEntry {
            sha256: hashed.clone(),
            expires_on,
        });
        self.keys.insert(hashed, (org_id.to_owned(), expires_on));
        Ok(key)
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Organization>> {
        self.organizations.get(id)
    }

    /// The organizations with the official code `code` (a medical institution code, an insurer
    /// number): how other systems name them.
    pub fn with_institution_code<'a>(
        &'a self,
        code: &'a str,
    ) -> impl Iterator<Item = &'a Arc<Organization>> {
        self.organizations
            .values()
            .filter(move |o| o.institution_code.as_deref() == Some(code))
    }

    pub fn organizations(&self) -> impl Iterator<Item = &Arc<Organization>> {
        self.organizations.values()
    }

    /// The organization an `Authorization` header value belongs to: `Bearer <key>`, or
    /// `Basic base64(<org id>:<key>)` where the key must be that organization's.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Arc<Organization>, Denied> {
        let value = authorization.ok_or(Denied::Unauthenticated(
            "send Authorization: Bearer <API key>, or Basic <organization id>:<API key>",
        ))?;
        let scheme = value.split(' ').next().unwrap_or("");
        let (claimed, key) = if scheme.eq_ignore_ascii_case("Bearer") {
            let bearer = decode_authorization::<Bearer>(value).ok_or(Denied::Unauthenticated(
                "the Authorization header must be 'Bearer <API key>'",
            ))?;
            (None, bearer.token().to_owned())
        } else if scheme.eq_ignore_ascii_case("Basic") {
            let basic = decode_authorization::<Basic>(value).ok_or(Denied::Unauthenticated(
                "Basic credentials must be base64 of '<organization id>:<API key>'",
            ))?;
            (
                Some(basic.username().to_owned()),
                basic.password().to_owned(),
            )
        } else {
            return Err(Denied::Unauthenticated(
                "the Authorization header must be 'Bearer <API key>' or Basic '<organization id>:<API key>'",
            ));
        };
        if key.is_empty() {
            return Err(Denied::Unauthenticated("the API key is empty"));
        }
        let (owner, expires_on) = self
            .keys
            .get(&digest(&key))
            .ok_or(Denied::Unauthenticated("unknown or revoked API key"))?;
        if Utc::now().date_naive() >= *expires_on {
            return Err(Denied::Unauthenticated(
                "this API key has expired: ask the exchange operator for a new one",
            ));
        }
        if claimed.is_some_and(|org| &org != owner) {
            return Err(Denied::Unauthenticated(
                "the API key does not belong to the organization named",
            ));
        }
        self.organizations
            .get(owner)
            .cloned()
            .ok_or(Denied::Unauthenticated("unknown or revoked API key"))
    }
}

/// An `Authorization` value in scheme `C`, parsed as the `headers` crate parses it.
fn decode_authorization<C: headers::authorization::Credentials>(
    value: &str,
) -> Option<headers::Authorization<C>> {
    let value = HeaderValue::from_str(value).ok()?;
    <headers::Authorization<C> as headers::Header>::decode(&mut std::iter::once(&value)).ok()
}

/// Why a request is refused, as the caller sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// 401: we do not know who is calling.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// 403: we know who is calling, and they may not do this.
    #[error("{0}")]
    Forbidden(String),
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        let (status, error) = match &self {
            Denied::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            Denied::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
        };
        let body = serde_json::json!({ "error": error, "reason": self.to_string() });
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"hixbus\""),
            );
        }
        response
    }
}

/// The authenticated organization behind a request. Handlers take it as an extractor; a
/// request without a valid key never reaches them.
#[derive(Debug, Clone)]
pub struct Caller(pub Arc<Organization>);

impl Caller {
    /// Refuses unless the caller's role allows `action`.
    pub fn require(&self, action: Action) -> Result<&Organization, Denied> {
        if self.0.role.may(action) {
            Ok(&self.0)
        } else {
            Err(Denied::Forbidden(format!(
                "{} is a {}, which may not {}",
                self.0.id,
                self.0.role.as_str(),
                describe(action)
            )))
        }
    }
}

fn describe(action: Action) -> &'static str {
    match action {
        Action::IssuePrescription => "issue prescriptions",
        Action::CancelPrescription => "cancel prescriptions",
        Action::ViewIssuedPrescriptions => "view issued prescriptions",
        Action::ViewPharmacyInbox => "view a pharmacy inbox",
        Action::DispensePrescription => "dispense prescriptions",
        Action::ReportLabResults => "report lab results",
        Action::ViewOrderedResults => "view the results of tests it ordered",
        Action::ReportCheckups => "report health checkups",
        Action::ReadInsurerFeed => "read an insurer's feed",
        Action::RegisterPatients => "register its patients' ids",
        Action::EnrolPatients => "enrol patients to their records",
        Action::ViewPatientSummary => "read a patient's cross-institution summary",
        Action::BreakGlass => "open a patient's record in an emergency",
        Action::SubmitClaims => "submit claims and read its own",
        Action::AdjudicateClaims => "adjudicate claims",
        Action::ReadResearchReleases => "read its research projects' releases",
        Action::ReadSchemas => "read schemas",
        Action::ManageSchemas => "register or change schemas",
        Action::ObserveBus => "watch the bus's topics and services",
        Action::HandleDeadLetters => "read or redrive dead letters",
    }
}

impl<S> FromRequestParts<S> for Caller
where
    Arc<Directory>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Denied;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let directory = Arc::<Directory>::from_ref(state);
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or_default());
        directory.authenticate(header).map(Caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::get;
    use tower::ServiceExt;

    const FILE: &str = r#"
        [[organization]]
        id = "clinic-sakura"
        role = "clinic"
        name = "さくら内科クリニック"
        institution_code = "1310000001"

        [[organization]]
        id = "pharmacy-aozora"
        role = "pharmacy"
        name = "あおぞら薬局"
    "#;

    fn directory() -> (Directory, ApiKey, ApiKey) {
        let mut d = Directory::from_toml(FILE).unwrap();
        let clinic = d.issue_key("clinic-sakura").unwrap();
        let pharmacy = d.issue_key("pharmacy-aozora").unwrap();
        (d, clinic, pharmacy)
    }

    #[test]
    fn a_key_identifies_its_organization_and_only_its_digest_is_kept() {
        let (d, clinic, _) = directory();
        let org = d
            .authenticate(Some(&format!("Bearer {}", clinic.expose())))
            .unwrap();
        assert_eq!(org.id, "clinic-sakura");
        assert_eq!(org.api_keys[0].sha256, digest(clinic.expose()));
        assert!(!format!("{clinic:?}").contains(clinic.expose()));
    }

    #[test]
    fn basic_credentials_work_only_under_the_keys_own_organization() {
        use base64::Engine as _;
        let (d, clinic, _) = directory();
        let basic = |user: &str| {
            let pair = format!("{user}:{}", clinic.expose());
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        };
        assert_eq!(
            d.authenticate(Some(&basic("clinic-sakura"))).unwrap().id,
            "clinic-sakura"
        );
        let refused = d.authenticate(Some(&basic("pharmacy-aozora"))).unwrap_err();
        assert!(refused.to_string().contains("does not belong"), "{refused}");
    }

    #[test]
    fn missing_malformed_and_unknown_keys_are_told_apart() {
        let (d, _, _) = directory();
        let reason = |h: Option<&str>| d.authenticate(h).unwrap_err().to_string();
        assert!(reason(None).contains("send Authorization"));
        assert!(reason(Some("Token abc")).contains("must be 'Bearer"));
        assert!(reason(Some("Basic !!!")).contains("base64"));
        assert!(reason(Some("Bearer hxb_nope")).contains("unknown or revoked"));
    }

    #[test]
    fn an_expired_key_is_refused_and_keys_without_an_expiry_are_not_loaded() {
        let mut d = Directory::from_toml(FILE).unwrap();
        let today = Utc::now().date_naive();
        let expired = d.issue_key_until("clinic-sakura", today).unwrap();
        let valid = d
            .issue_key_until("clinic-sakura", today + chrono::Duration::days(1))
            .unwrap();
        let refused = d
            .authenticate(Some(&format!("Bearer {}", expired.expose())))
            .unwrap_err();
        assert!(refused.to_string().contains("expired"), "{refused}");
        assert!(
            d.authenticate(Some(&format!("Bearer {}", valid.expose())))
                .is_ok()
        );

        let legacy = format!("{FILE}api_key_sha256 = [\"{}\"]\n", "a".repeat(64));
        assert!(matches!(
            Directory::from_toml(&legacy),
            Err(DirectoryError::KeysWithoutExpiry(id)) if id == "pharmacy-aozora"
        ));
        let forever = format!(
            "{FILE}[[organization.api_key]]\nsha256 = \"{}\"\nexpires_on = 2999-01-01\n",
            "b".repeat(64)
        );
        assert!(matches!(
            Directory::from_toml(&forever),
            Err(DirectoryError::Invalid(..))
        ));
        let fine = format!(
            "{FILE}[[organization.api_key]]\nsha256 = \"{}\"\nexpires_on = {}\n",
            "b".repeat(64),
            today + chrono::Duration::days(30)
        );
        let loaded = Directory::from_toml(&fine).unwrap();
        assert_eq!(loaded.get("pharmacy-aozora").unwrap().api_keys.len(), 1);
    }

    #[test]
    fn roles_decide_actions() {
        assert!(Role::Clinic.may(Action::IssuePrescription));
        assert!(!Role::Clinic.may(Action::DispensePrescription));
        assert!(Role::Pharmacy.may(Action::DispensePrescription));
        assert!(!Role::Pharmacy.may(Action::IssuePrescription));
        assert!(!Role::Insurer.may(Action::ViewPharmacyInbox));
        assert!(Role::Pharmacy.may(Action::ReadSchemas));
        assert!(!Role::Pharmacy.may(Action::ManageSchemas));
        assert!(Role::Operator.may(Action::ManageSchemas));
        assert!(!Role::Operator.may(Action::ViewPharmacyInbox));
    }

    #[test]
    fn bad_directories_are_refused() {
        let twice = format!(
            "{FILE}\n[[organization]]\nid = \"clinic-sakura\"\nrole = \"lab\"\nname = \"x\"\n"
        );
        assert!(matches!(
            Directory::from_toml(&twice),
            Err(DirectoryError::DuplicateId(_))
        ));
        let typo = FILE.replace("role = \"clinic\"", "role = \"clinik\"");
        assert!(matches!(
            Directory::from_toml(&typo),
            Err(DirectoryError::Parse(_))
        ));
        let bad_id = FILE.replace("clinic-sakura", "clinic sakura");
        assert!(matches!(
            Directory::from_toml(&bad_id),
            Err(DirectoryError::Invalid(..))
        ));
    }

    async fn only_clinics(caller: Caller) -> Result<String, Denied> {
        Ok(caller.require(Action::IssuePrescription)?.id.clone())
    }

    #[tokio::test]
    async fn http_answers_401_and_403_with_a_json_reason() {
        let (d, clinic, pharmacy) = directory();
        let app = Router::new()
            .route("/", get(only_clinics))
            .with_state(Arc::new(d));
        let call = |key: Option<String>| {
            let app = app.clone();
            async move {
                let mut request = Request::get("/");
                if let Some(key) = key {
                    request = request.header("authorization", format!("Bearer {key}"));
                }
                let response = app
                    .oneshot(request.body(Body::empty()).unwrap())
                    .await
                    .unwrap();
                let status = response.status();
                let challenge = response.headers().get("www-authenticate").is_some();
                let body = axum::body::to_bytes(response.into_body(), 4096)
                    .await
                    .unwrap();
                (status, challenge, String::from_utf8(body.to_vec()).unwrap())
            }
        };
        let (status, challenge, body) = call(None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(challenge);
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["error"], "unauthenticated");
        let (status, _, body) = call(Some(pharmacy.expose().to_owned())).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(body.contains("pharmacy-aozora is a pharmacy, which may not issue prescriptions"));
        let (status, _, body) = call(Some(clinic.expose().to_owned())).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "clinic-sakura");
    }
}
