//! Calls to the services' APIs, as the signed-in organization.
//!
//! The consoles hold no data of their own: every page is one or a few API calls made with the
//! session's key, so what a console shows is what the service decided this organization may see,
//! and the service's audit log records the read as it does for any client.

use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use url::Url;

use crate::Config;

/// The most an API answer may weigh before the console gives up on it (a page of 100
/// prescriptions is well under 1 MiB).
const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

/// Which service a call goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    ClinicGateway,
    Pharmacy,
    Claims,
    InsurerFeed,
    Insurer,
    Patient,
    Ops,
}

impl Api {
    fn name(self) -> &'static str {
        match self {
            Api::ClinicGateway => "clinic gateway",
            Api::Pharmacy => "pharmacy service",
            Api::Claims => "claims service",
            Api::InsurerFeed => "insurer delivery",
            Api::Insurer => "insurer's adjudication service",
            Api::Patient => "patient record service",
            Api::Ops => "operator service",
        }
    }
}

/// What went wrong with a call, in a form a page can show.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The service answered with a refusal (4xx), and its reason.
    #[error("{reason}")]
    Refused {
        status: StatusCode,
        error: String,
        reason: String,
    },
    /// The service could not be reached or failed (5xx, timeout, unreadable answer).
    #[error("the {service} is unavailable: {detail}")]
    Unavailable {
        service: &'static str,
        detail: String,
    },
}

impl CallError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            CallError::Refused { status, .. } => Some(*status),
            CallError::Unavailable { .. } => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Upstream {
    http: reqwest::Client,
    /// Live streams stay open for hours: no overall timeout on them.
    streaming: reqwest::Client,
    clinic_gateway: Url,
    pharmacy: Url,
    claims: Url,
    insurer_feed: Url,
    insurer: Url,
    patient: Url,
    ops: Url,
    /// Sent as `hixbus-act-for` to the patient service: a proxy looking at the record of the
    /// patient they act for.
    act_for: Option<String>,
}

fn base(url: &str) -> Result<Url, url::ParseError> {
    let mut base = Url::parse(url)?;
    if !base.path().ends_with('/') {
        base.set_path(&format!("{}/", base.path()));
    }
    Ok(base)
}

impl Upstream {
    /// The services `config` names.
    pub fn new(config: &Config) -> Result<Self, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| e.to_string())?;
        let streaming = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| e.to_string())?;
        let parse = |name: &str, url: &str| base(url).map_err(|e| format!("{name} {url:?}: {e}"));
        Ok(Self {
            http,
            streaming,
            clinic_gateway: parse("clinic_gateway_url", &config.clinic_gateway_url)?,
            pharmacy: parse("pharmacy_url", &config.pharmacy_url)?,
            claims: parse("claims_url", &config.claims_url)?,
            insurer_feed: parse("insurer_feed_url", &config.insurer_feed_url)?,
            insurer: parse("insurer_url", &config.insurer_url)?,
            patient: parse("patient_url", &config.patient_url)?,
            ops: parse("ops_url", &config.ops_url)?,
            act_for: None,
        })
    }

    /// These services as a proxy acting for `patient` (the patient service checks the
    /// delegation at every call).
    pub fn acting_for(&self, patient: &str) -> Self {
        Self {
            act_for: Some(patient.to_owned()),
            ..self.clone()
        }
    }

    /// `api`'s URL for `segments` (each escaped as one path segment) and `query`.
    fn url(&self, api: Api, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = match api {
            Api::ClinicGateway => self.clinic_gateway.clone(),
            Api::Pharmacy => self.pharmacy.clone(),
            Api::Claims => self.claims.clone(),
            Api::InsurerFeed => self.insurer_feed.clone(),
            Api::Insurer => self.insurer.clone(),
            Api::Patient => self.patient.clone(),
            Api::Ops => self.ops.clone(),
        };
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    pub async fn get(
        &self,
        key: &SecretString,
        api: Api,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<Value, CallError> {
        self.call(key, Method::GET, api, segments, query, None)
            .await
    }

    pub async fn post(
        &self,
        key: &SecretString,
        api: Api,
        segments: &[&str],
        body: &Value,
    ) -> Result<Value, CallError> {
        self.call(key, Method::POST, api, segments, &[], Some(body))
            .await
    }

    pub async fn put(
        &self,
        key: &SecretString,
        api: Api,
        segments: &[&str],
        body: &Value,
    ) -> Result<Value, CallError> {
        self.call(key, Method::PUT, api, segments, &[], Some(body))
            .await
    }

    pub async fn delete(
        &self,
        key: &SecretString,
        api: Api,
        segments: &[&str],
    ) -> Result<Value, CallError> {
        self.call(key, Method::DELETE, api, segments, &[], None)
            .await
    }

    /// The client for calls to other parties (a patient's sign-in provider): bounded waits.
    pub fn client(&self) -> &reqwest::Client {
        &self.http
    }

    async fn call(
        &self,
        key: &SecretString,
        method: Method,
        api: Api,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, CallError> {
        let unavailable = |detail: String| CallError::Unavailable {
            service: api.name(),
            detail,
        };
        let mut request = self
            .http
            .request(method, self.url(api, segments, query))
            .bearer_auth(key.expose_secret());
        if let (Some(patient), Api::Patient) = (&self.act_for, api) {
            request = request.header("hixbus-act-for", patient);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let status = response.status();
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| unavailable(e.to_string()))?
        {
            if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(unavailable(format!(
                    "its answer exceeds {MAX_ANSWER_BYTES} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(json);
        }
        if status.is_client_error() {
            let text = |field: &str| json.get(field).and_then(Value::as_str).map(str::to_owned);
            return Err(CallError::Refused {
                status,
                error: text("error").unwrap_or_else(|| status.as_str().to_owned()),
                reason: text("reason").unwrap_or_else(|| status.to_string()),
            });
        }
        Err(unavailable(format!("it answered {status}")))
    }

    /// A live stream of `api` (server-sent events), passed through as its bytes.
    pub async fn stream(
        &self,
        key: &SecretString,
        api: Api,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<impl Stream<Item = Result<Bytes, reqwest::Error>> + Send + 'static, CallError> {
        let response = self
            .streaming
            .get(self.url(api, segments, query))
            .bearer_auth(key.expose_secret())
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|e| CallError::Unavailable {
                service: api.name(),
                detail: e.to_string(),
            })?;
        let status = response.status();
        if !status.is_success() {
            return Err(CallError::Refused {
                status,
                error: status.as_str().to_owned(),
                reason: format!("the {} refused the live stream ({status})", api.name()),
            });
        }
        Ok(futures::stream::try_unfold(
            response,
            |mut response| async move { Ok(response.chunk().await?.map(|chunk| (chunk, response))) },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_segment_is_escaped_on_its_own() {
        let config = Config {
            pharmacy_url: "http://127.0.0.1:8091/base".to_owned(),
            ..Config::default()
        };
        let upstream = Upstream::new(&config).unwrap();
        let url = upstream.url(
            Api::Pharmacy,
            &["pharmacy", "prescriptions", "rx/../x y"],
            &[("limit", "50")],
        );
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8091/base/pharmacy/prescriptions/rx%2F..%2Fx%20y?limit=50"
        );
    }
}
