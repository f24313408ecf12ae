//! The patient portal: signing in at the patient's OpenID Connect provider (the code flow with
//! PKCE, this service as the relying party), then their record, lab trends as charts, who saw
//! their data, and their consents. Every page is the patient service's API called with the
//! patient's own ID token, which that service verifies and audits as for any client.

use std::time::{Duration, Instant};

use axum::Form;
use axum::Router;
use axum::extract::{FromRef, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use maud::{Markup, html};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::cookies;
use crate::i18n::Lang;
use crate::layout::text;
use crate::layout::{self, Viewer};
use crate::security::Visitor;
use crate::session::{PendingLogin, Principal, Session, random_token, same_secret};
use crate::upstream::{Api, CallError};
use crate::{AppState, Oidc};

/// The cookie that carries a sign-in under way to the callback. `SameSite=Lax`, unlike the
/// session cookie: the provider sends the browser back with a cross-site navigation, which a
/// `Strict` cookie would not come with.
const LOGIN_COOKIE: &str = "hixbus-login";
/// How long a sign-in at the provider may take.
const LOGIN_TTL: Duration = Duration::from_secs(600);
/// The longest answer read from a provider.
const MAX_PROVIDER_BYTES: usize = 64 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/patient", get(landing))
        .route("/patient/signin", get(signin))
        .route("/patient/callback", get(callback))
        .route("/me", get(record))
        .route("/me/labs", get(labs))
        .route("/me/access", get(access))
        .route("/me/medications", get(medications))
        .route("/me/checkups", get(checkups))
        .route("/me/expenses", get(expenses))
        .route("/me/export", get(export))
        .route("/me/consents", get(consents).post(grant))
        .route("/me/consents/{id}/revoke", post(revoke))
        .route("/me/research", post(research))
        .route("/me/proxies", get(proxies).post(invite))
        .route("/me/proxies/accept", post(accept))
        .route("/me/proxies/{id}/revoke", post(revoke_proxy))
        .route("/me/act-for", post(act_for))
}

/// A signed-in patient. Pages that need one send everyone else to the portal's start.
#[derive(Debug)]
pub struct PatientMember {
    pub lang: Lang,
    pub session: Session,
    pub patient_ref: String,
    pub token: SecretString,
    /// The patient this person acts for as their proxy (a parent for a child), when they chose
    /// to; the patient service checks the delegation at every call.
    pub acting_for: Option<String>,
}

impl PatientMember {
    /// The patient service as this person, for the record they are looking at: their own, or
    /// the one they act for (`hixbus-act-for`).
    pub fn api<'a>(&self, state: &'a AppState) -> std::borrow::Cow<'a, crate::upstream::Upstream> {
        match &self.acting_for {
            Some(patient) => std::borrow::Cow::Owned(state.upstream.acting_for(patient)),
            None => std::borrow::Cow::Borrowed(&state.upstream),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for PatientMember
where
    AppState: FromRef<S>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Ok(visitor) = Visitor::from_request_parts(parts, state).await;
        let member = visitor.session.and_then(|session| {
            let (patient_ref, token, acting_for) = session.patient()?;
            let (patient_ref, token) = (patient_ref.to_owned(), token.clone());
            let acting_for = acting_for.map(str::to_owned);
            Some(PatientMember {
                lang: visitor.lang,
                session,
                patient_ref,
                token,
                acting_for,
            })
        });
        member.ok_or_else(|| Redirect::to("/patient").into_response())
    }
}

impl<'a> From<&'a PatientMember> for Viewer<'a> {
    fn from(p: &'a PatientMember) -> Self {
        Viewer {
            lang: p.lang,
            member: Some((
                p.acting_for
                    .as_deref()
                    .or((!p.patient_ref.is_empty()).then_some(p.patient_ref.as_str()))
                    .unwrap_or("—"),
                None,
                p.session.csrf.as_str(),
            )),
        }
    }
}

fn refused(lang: Lang, status: StatusCode, why: &str) -> Response {
    layout::refusal(lang, status, why)
}

pub async fn landing(State(state): State<AppState>, visitor: Visitor) -> Response {
    if visitor
        .session
        .as_ref()
        .is_some_and(|s| s.patient().is_some())
    {
        return Redirect::to("/me").into_response();
    }
    let lang = visitor.lang;
    let body = html! {
        p { (lang.t(
            "ご自身の処方・調剤・検査結果・健診・医療費と、誰があなたの情報を見たかを確認できます。",
            "See your prescriptions, dispensings, lab results, checkups and medical expenses, and who saw your data."
        )) }
        @if state.oidc.is_some() {
            p { a.button href="/patient/signin" { (lang.t("サインイン", "Sign in")) } }
            p.hint { (lang.t(
                "お使いの認証サービスの画面に移ります。初めての方は、医療機関で受け取った登録コードで登録してください（docs/patients.md）。",
                "You will sign in at your sign-in provider. The first time, enrol with the code your clinic gave you (docs/patients.md)."
            )) }
        } @else {
            p.problem { (lang.t(
                "この環境では患者さんのサインインが設定されていません。",
                "Patient sign-in is not configured here."
            )) }
        }
    };
    layout::page(
        Viewer::from(&visitor),
        lang.t("わたしの医療情報", "My health record"),
        body,
    )
    .into_response()
}

/// The provider's endpoints, from its discovery document.
#[derive(Debug, Clone, Deserialize)]
pub struct Provider {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
}

/// A JSON answer of the provider's, bounded.
async fn provider_json(response: reqwest::Response) -> Result<Value, String> {
    let status = response.status();
    let mut response = response;
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if bytes.len() + chunk.len() > MAX_PROVIDER_BYTES {
            return Err("its answer is too large".to_owned());
        }
        bytes.extend_from_slice(&chunk);
    }
    let json: Value = serde_json::from_slice(&bytes).map_err(|e| format!("{status}: {e}"))?;
    if !status.is_success() {
        return Err(format!("{status}: {json}"));
    }
    Ok(json)
}

/// The provider's endpoints, from its discovery document: fetched once, then kept (a failed
/// fetch is tried again at the next sign-in).
async fn discover(state: &AppState, oidc: &Oidc) -> Result<Provider, String> {
    oidc.provider
        .get_or_try_init(|| fetch_discovery(state, &oidc.issuer))
        .await
        .cloned()
}

async fn fetch_discovery(state: &AppState, issuer: &str) -> Result<Provider, String> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let response = state
        .upstream
        .client()
        .get(&url)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let json = provider_json(response).await?;
    let provider: Provider = serde_json::from_value(json).map_err(|e| e.to_string())?;
    if provider.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
        return Err(format!("it names itself {}", provider.issuer));
    }
    Ok(provider)
}

/// Where the provider sends the browser back.
fn redirect_uri(state: &AppState, headers: &HeaderMap) -> Option<String> {
    let base = match &state.public_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let host = headers.get(header::HOST)?.to_str().ok()?;
            let scheme = if state.secure { "https" } else { "http" };
            format!("{scheme}://{host}")
        }
    };
    Some(format!("{base}/patient/callback"))
}

/// Leaves for the provider: a fresh state, nonce and PKCE verifier kept here, in a session the
/// `hixbus-login` cookie names.
pub async fn signin(
    State(state): State<AppState>,
    visitor: Visitor,
    headers: HeaderMap,
) -> Response {
    let lang = visitor.lang;
    let unavailable = |detail: String| {
        tracing::warn!(detail, "the patients' sign-in provider is unavailable");
        refused(
            lang,
            StatusCode::BAD_GATEWAY,
            lang.t(
                "認証サービスに接続できません。しばらくしてからお試しください。",
                "The sign-in provider cannot be reached; try again shortly.",
            ),
        )
    };
    let Some(oidc) = &state.oidc else {
        return refused(
            lang,
            StatusCode::NOT_FOUND,
            lang.t(
                "患者さんのサインインは設定されていません。",
                "Patient sign-in is not configured.",
            ),
        );
    };
    let provider = match discover(&state, oidc).await {
        Ok(p) => p,
        Err(e) => return unavailable(e),
    };
    let Some(redirect_uri) = redirect_uri(&state, &headers) else {
        return refused(
            lang,
            StatusCode::BAD_REQUEST,
            lang.t(
                "このアドレスからはサインインできません（public_url を設定してください）。",
                "Sign-in cannot start from this address (set public_url).",
            ),
        );
    };
    let verifier = random_token();
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let login = PendingLogin {
        state: random_token(),
        nonce: random_token(),
        verifier: verifier.into(),
        redirect_uri: redirect_uri.clone(),
    };
    let Ok(mut authorize) = url::Url::parse(&provider.authorization_endpoint) else {
        return unavailable("its authorization endpoint is no URL".to_owned());
    };
    authorize
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &oidc.audience)
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("scope", "openid")
        .append_pair("state", &login.state)
        .append_pair("nonce", &login.nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let session = match state.sessions.start_with(
        Principal::Anonymous,
        Some(login),
        Some(Instant::now() + LOGIN_TTL),
    ) {
        Ok(s) => s,
        Err(_) => return unavailable("too many sessions".to_owned()),
    };
    let mut response = Redirect::to(authorize.as_str()).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        cookies::login(LOGIN_COOKIE, &session.id, state.secure, LOGIN_TTL),
    );
    response
}

#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// The claims of an ID token, read without checking its signature: the patient service checks
/// that (and issuer, audience, expiry) on every call; here only the nonce ties the token to
/// this sign-in, and the expiry ends the session.
fn unverified_claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

pub async fn callback(
    State(state): State<AppState>,
    visitor: Visitor,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let lang = visitor.lang;
    let failed = |status: StatusCode, why: &str| {
        tracing::info!(why, "a patient sign-in failed");
        refused(
            lang,
            status,
            match status {
                StatusCode::FORBIDDEN => lang.t(
                    "サインインできませんでした。もう一度最初からお試しください。",
                    "The sign-in did not succeed; start again.",
                ),
                _ => lang.t(
                    "認証サービスとのやりとりに失敗しました。しばらくしてからお試しください。",
                    "The exchange with the sign-in provider failed; try again shortly.",
                ),
            },
        )
    };
    let Some(oidc) = &state.oidc else {
        return failed(StatusCode::NOT_FOUND, "not configured");
    };
    let pending = cookies::get(&headers, LOGIN_COOKIE)
        .and_then(|id| state.sessions.get(id))
        .and_then(|s| s.login.clone().map(|login| (s.id.clone(), login)));
    let Some((login_session, login)) = pending else {
        return failed(
            StatusCode::FORBIDDEN,
            "no sign-in under way in this browser",
        );
    };
    // One use: whatever happens next, this sign-in is over.
    state.sessions.end(&login_session);
    if query.error.is_some() {
        return failed(StatusCode::FORBIDDEN, "the provider refused");
    }
    let (Some(code), Some(returned_state)) = (query.code, query.state) else {
        return failed(StatusCode::FORBIDDEN, "no code or state");
    };
    if !same_secret(&login.state, &returned_state) || code.len() > 2048 {
        return failed(StatusCode::FORBIDDEN, "state does not match");
    }
    let provider = match discover(&state, oidc).await {
        Ok(p) => p,
        Err(_) => return failed(StatusCode::BAD_GATEWAY, "discovery"),
    };
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "authorization_code")
        .append_pair("code", &code)
        .append_pair("redirect_uri", &login.redirect_uri)
        .append_pair("client_id", &oidc.audience)
        .append_pair("code_verifier", login.verifier.expose_secret())
        .finish();
    let answer = state
        .upstream
        .client()
        .post(&provider.token_endpoint)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await;
    let token = match answer {
        Ok(response) => match provider_json(response).await {
            Ok(json) => json
                .get("id_token")
                .and_then(Value::as_str)
                .map(str::to_owned),
            Err(_) => None,
        },
        Err(_) => None,
    };
    let Some(token) = token else {
        return failed(StatusCode::BAD_GATEWAY, "no ID token");
    };
    let Some(claims) = unverified_claims(&token) else {
        return failed(StatusCode::FORBIDDEN, "unreadable ID token");
    };
    if claims.get("nonce").and_then(Value::as_str) != Some(login.nonce.as_str()) {
        return failed(StatusCode::FORBIDDEN, "nonce does not match");
    }
    let token = SecretString::from(token);
    // The patient service verifies the token and says whose record it opens.
    let me = match state
        .upstream
        .get(&token, Api::Patient, &["patient", "me"], &[])
        .await
    {
        Ok(me) => me,
        // Someone with no record of their own here (a parent, a carer) who was given, or holds,
        // a proxy's invitation: in, to the proxies page, where they take it up or choose whom
        // they act for. The patient service verified the token to answer.
        Err(CallError::Refused { .. })
            if state
                .upstream
                .get(&token, Api::Patient, &["patient", "acting-for"], &[])
                .await
                .is_ok() =>
        {
            serde_json::json!({ "patient_ref": "" })
        }
        Err(CallError::Refused { status, reason, .. }) => {
            tracing::info!(%status, reason, "the patient service refused a signed-in patient");
            return refused(
                lang,
                StatusCode::FORBIDDEN,
                lang.t(
                    "サインインできましたが、記録が登録されていません。医療機関で受け取った登録コードで登録してください。",
                    "You signed in, but no record is enrolled for you yet: enrol with the code your clinic gave you.",
                ),
            );
        }
        Err(_) => return failed(StatusCode::BAD_GATEWAY, "patient service"),
    };
    let patient_ref = text(&me, &["patient_ref"]).to_owned();
    let own_record = !patient_ref.is_empty();
    let expires_in = claims
        .get("exp")
        .and_then(Value::as_i64)
        .map(|exp| exp - chrono::Utc::now().timestamp())
        .filter(|s| *s > 0)
        .unwrap_or(0);
    if expires_in == 0 {
        return failed(StatusCode::FORBIDDEN, "expired ID token");
    }
    let ends = Instant::now() + Duration::from_secs(expires_in.unsigned_abs());
    let session = match state.sessions.start_with(
        Principal::Patient {
            patient_ref,
            token,
            acting_for: None,
        },
        None,
        Some(ends),
    ) {
        Ok(s) => s,
        Err(_) => return failed(StatusCode::SERVICE_UNAVAILABLE, "sessions full"),
    };
    if let Some(old) = visitor.session {
        state.sessions.end(&old.id);
    }
    let mut response = Redirect::to(if own_record { "/me" } else { "/me/proxies" }).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        cookies::session(&session.id, state.secure),
    );
    response.headers_mut().append(
        header::SET_COOKIE,
        cookies::login(LOGIN_COOKIE, "", state.secure, Duration::ZERO),
    );
    response
}

fn page(member: &PatientMember, title: &str, body: Markup) -> Response {
    framed(member, title, body).into_response()
}

/// A page in the frame, with the proxy's banner when acting for someone.
fn framed(member: &PatientMember, title: &str, body: Markup) -> Markup {
    layout::page(
        Viewer::from(member),
        title,
        html! { (acting_banner(member)) (body) },
    )
}

/// Says, on every page a proxy opens, whose record it is, with the way back to their own.
fn acting_banner(member: &PatientMember) -> Markup {
    let lang = member.lang;
    html! {
        @if let Some(patient) = &member.acting_for {
            div.done #acting-for role="status" {
                (lang.t("代理で閲覧しています：", "You are acting as a proxy for: ")) strong { (patient) } " "
                form.inline method="post" action="/me/act-for" {
                    input type="hidden" name="csrf" value=(member.session.csrf);
                    input type="hidden" name="patient" value="";
                    button type="submit" { (lang.t("自分の記録に戻る", "Back to my own record")) }
                }
            }
        }
    }
}

fn kind_label(lang: Lang, kind: &str) -> &'static str {
    match kind {
        "prescription" => lang.t("処方", "Prescription"),
        "dispensing" => lang.t("調剤", "Dispensing"),
        "lab_result" => lang.t("検査結果", "Lab result"),
        "checkup" => lang.t("健診", "Checkup"),
        "claim" => lang.t("医療費", "Medical expense"),
        "alert" => lang.t("安全性の警告", "Safety alert"),
        _ => lang.t("記録", "Record"),
    }
}

/// One line saying what a timeline entry is.
fn summary(kind: &str, d: &Value) -> String {
    let drugs = |lines: &Value| {
        lines
            .as_array()
            .map(|ls| {
                ls.iter()
                    .map(|l| text(&l["drug"], &["name"]).to_owned())
                    .filter(|n| !n.is_empty())
                    .collect::<Vec<_>>()
                    .join("、")
            })
            .unwrap_or_default()
    };
    match kind {
        "prescription" => format!("{} — {}", text(d, &["institution"]), drugs(&d["lines"])),
        "dispensing" => format!("{} — {}", text(d, &["pharmacy"]), drugs(&d["lines"])),
        "lab_result" => text(d, &["lab"]).to_owned(),
        "claim" => format!(
            "{} — {} 円",
            text(d, &["provider"]),
            d.get("patient_jpy")
                .or_else(|| d.get("total_jpy"))
                .and_then(Value::as_i64)
                .unwrap_or_default()
        ),
        _ => text(d, &["message"]).to_owned(),
    }
}

pub async fn record(State(state): State<AppState>, member: PatientMember) -> Response {
    let lang = member.lang;
    let answer = member
        .api(&state)
        .get(
            &member.token,
            Api::Patient,
            &["patient", "timeline"],
            &[("limit", "50")],
        )
        .await;
    let empty = Vec::new();
    let body = html! {
        p { a href="/me/export" download { (lang.t(
            "記録をすべてダウンロード（FHIR R4 形式）", "Download your whole record (FHIR R4)"
        )) } }
        @match &answer {
            Err(e) => (layout::problem(lang, e)),
            Ok(t) => table #timeline {
                caption { (lang.t("あなたの記録（新しい順）", "Your record, newest first")) }
                thead { tr {
                    th scope="col" { (lang.t("日時", "When")) }
                    th scope="col" { (lang.t("種類", "What")) }
                    th scope="col" { (lang.t("内容", "Details")) }
                } }
                tbody {
                    @let entries = t.get("entries").and_then(Value::as_array).unwrap_or(&empty);
                    @if entries.is_empty() {
                        tr { td colspan="3" { (lang.t("記録はまだありません。", "Nothing in your record yet.")) } }
                    }
                    @for e in entries {
                        @let kind = text(e, &["kind"]);
                        tr data-kind=(kind) {
                            td.nowrap { (text(e, &["at"]).chars().take(16).collect::<String>().replace('T', " ")) }
                            td { (kind_label(lang, kind)) }
                            td { (summary(kind, &e["detail"])) }
                        }
                    }
                }
            },
        }
    };
    page(&member, lang.t("わたしの記録", "My record"), body)
}

/// A lab test's values over time as an SVG line, with its reference range as a band: drawn
/// here, so the page needs no script and the chart reads the same on every screen.
fn chart(test: &Value) -> Markup {
    const W: f64 = 640.0;
    const H: f64 = 200.0;
    const PAD: f64 = 36.0;
    let empty = Vec::new();
    let values: Vec<(&Value, f64)> = test
        .get("values")
        .and_then(Value::as_array)
        .unwrap_or(&empty)
        .iter()
        .filter_map(|v| v.get("value").and_then(Value::as_f64).map(|n| (v, n)))
        .collect();
    let name = match text(&test["test"], &["name"]) {
        "" => text(&test["test"], &["code"]),
        n => n,
    };
    let unit = values
        .first()
        .map(|(v, _)| text(v, &["unit"]))
        .unwrap_or("");
    let range = values.last().map(|(v, _)| &v["reference_range"]);
    let low = range.and_then(|r| r.get("low")).and_then(Value::as_f64);
    let high = range.and_then(|r| r.get("high")).and_then(Value::as_f64);
    let mut lo = values
        .iter()
        .map(|(_, n)| *n)
        .chain(low)
        .fold(f64::INFINITY, f64::min);
    let mut hi = values
        .iter()
        .map(|(_, n)| *n)
        .chain(high)
        .fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        return html! {};
    }
    if (hi - lo).abs() < f64::EPSILON {
        lo -= 1.0;
        hi += 1.0;
    }
    let margin = (hi - lo) * 0.1;
    let (lo, hi) = (lo - margin, hi + margin);
    let y = |v: f64| PAD + (H - 2.0 * PAD) * (1.0 - (v - lo) / (hi - lo));
    let n = values.len();
    let x = |i: usize| {
        if n <= 1 {
            W / 2.0
        } else {
            PAD + (W - 2.0 * PAD) * i as f64 / (n - 1) as f64
        }
    };
    let points: String = values
        .iter()
        .enumerate()
        .map(|(i, (_, v))| format!("{:.1},{:.1}", x(i), y(*v)))
        .collect::<Vec<_>>()
        .join(" ");
    let label = format!(
        "{name}: {}",
        values
            .iter()
            .map(|(v, n)| format!(
                "{} {n} {unit}",
                text(v, &["at"]).chars().take(10).collect::<String>()
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    html! {
        figure.chart data-test=(text(&test["test"], &["code"])) {
            figcaption { (name) @if !unit.is_empty() { " (" (unit) ")" } }
            svg xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (W) " " (H) } role="img" aria-label=(label) {
                @if let (Some(l), Some(h)) = (low, high) {
                    rect.band x=(PAD) y=(format!("{:.1}", y(h))) width=(W - 2.0 * PAD)
                        height=(format!("{:.1}", (y(l) - y(h)).max(0.0))) fill="#e6f4ea" {}
                    text x="2" y=(format!("{:.1}", y(h) + 4.0)) font-size="11" fill="#1e6b30" { (h) }
                    text x="2" y=(format!("{:.1}", y(l) + 4.0)) font-size="11" fill="#1e6b30" { (l) }
                }
                polyline points=(points) fill="none" stroke="#0b5394" stroke-width="2" {}
                @for (i, (v, value)) in values.iter().enumerate() {
                    @let out = !matches!(text(v, &["interpretation"]), "NORMAL" | "UNKNOWN" | "");
                    circle cx=(format!("{:.1}", x(i))) cy=(format!("{:.1}", y(*value))) r="4"
                        fill=(if out { "#a50e0e" } else { "#0b5394" }) {}
                }
            }
        }
    }
}

pub async fn labs(State(state): State<AppState>, member: PatientMember) -> Response {
    let lang = member.lang;
    let answer = member
        .api(&state)
        .get(&member.token, Api::Patient, &["patient", "lab-trends"], &[])
        .await;
    let empty = Vec::new();
    let body = html! {
        @match &answer {
            Err(e) => (layout::problem(lang, e)),
            Ok(t) => {
                @let tests = t.get("tests").and_then(Value::as_array).unwrap_or(&empty);
                @if tests.is_empty() {
                    p { (lang.t("検査結果はまだありません。", "No lab results yet.")) }
                } @else {
                    p.hint { (lang.t("緑の帯は基準範囲、赤い点は基準範囲外の値です。", "The green band is the reference range; red points are outside it.")) }
                }
                @for test in tests { (chart(test)) }
            },
        }
    };
    page(&member, lang.t("検査結果の推移", "Lab trends"), body)
}

pub async fn access(State(state): State<AppState>, member: PatientMember) -> Response {
    let lang = member.lang;
    let answer = member
        .api(&state)
        .get(&member.token, Api::Patient, &["patient", "access"], &[])
        .await;
    let empty = Vec::new();
    let body = html! {
        p { (lang.t(
            "あなたの情報を、いつ、どの機関が、何のために見たかの記録です。",
            "When which institution saw your data, and why."
        )) }
        @match &answer {
            Err(e) => (layout::problem(lang, e)),
            Ok(a) => table #trail {
                caption.visually-hidden { (lang.t("閲覧の記録", "Who saw my data")) }
                thead { tr {
                    th scope="col" { (lang.t("日時", "When")) }
                    th scope="col" { (lang.t("機関", "Who")) }
                    th scope="col" { (lang.t("操作", "What")) }
                    th scope="col" { (lang.t("目的", "Purpose")) }
                } }
                tbody {
                    @for e in a.get("entries").and_then(Value::as_array).unwrap_or(&empty).iter().rev() {
                        tr data-who=(text(e, &["who"])) data-action=(text(e, &["action"])) {
                            td.nowrap { (text(e, &["at"]).chars().take(16).collect::<String>().replace('T', " ")) }
                            td { (match text(e, &["institution"]) { "" => text(e, &["who"]), n => n }) }
                            td { (text(e, &["action"])) }
                            td { (text(e, &["purpose"])) }
                        }
                    }
                }
            },
        }
    };
    page(&member, lang.t("閲覧の記録", "Who saw my data"), body)
}

#[derive(Debug, Deserialize)]
pub struct Done {
    #[serde(default)]
    done: Option<String>,
}

pub async fn consents(
    State(state): State<AppState>,
    member: PatientMember,
    Query(done): Query<Done>,
) -> Response {
    render_consents(&state, &member, done.done.as_deref(), None).await
}

async fn render_consents(
    state: &AppState,
    member: &PatientMember,
    done: Option<&str>,
    problem: Option<&CallError>,
) -> Response {
    let lang = member.lang;
    let answer = member
        .api(state)
        .get(&member.token, Api::Patient, &["patient", "consents"], &[])
        .await;
    let empty = Vec::new();
    let body = html! {
        @match done {
            Some("revoked") => (layout::done(lang.t("同意を取り消しました。", "The consent is revoked."))),
            Some("granted") => (layout::done(lang.t("同意しました。", "The consent is given."))),
            Some("research-off") => (layout::done(lang.t("研究には使われなくなりました。", "Your data is no longer used for research."))),
            Some("research-on") => (layout::done(lang.t("研究への利用を再開しました。", "Your data may be used for research again."))),
            _ => {},
        }
        @if let Some(p) = problem { (layout::problem(lang, p)) }
        p { (lang.t(
            "同意すると、その医療機関・薬局は、ほかの機関があなたに出した処方や検査結果も見られるようになります。いつでも取り消せます。",
            "A consent lets that institution see what other institutions prescribed or measured for you. You can revoke it at any time."
        )) }
        @match &answer {
            Err(e) => (layout::problem(lang, e)),
            Ok(c) => {
                @let list = c.get("consents").and_then(Value::as_array).unwrap_or(&empty);
                @if list.is_empty() {
                    p { (lang.t("同意はありません。", "You have given no consent.")) }
                }
                ul.consents { @for consent in list {
                    @let id = text(consent, &["consent_id"]);
                    @let in_force = consent.get("in_force").and_then(Value::as_bool) == Some(true);
                    li data-consent=(id) data-in-force=(in_force) {
                        strong { (text(consent, &["grantee_org"])) }
                        " — " (match (text(consent, &["decision"]), in_force) {
                            ("GRANTED", true) => lang.t("同意しています", "in force"),
                            ("GRANTED", false) => lang.t("期限切れ", "expired"),
                            _ => lang.t("取り消し済み", "revoked"),
                        })
                        " · " (match text(consent, &["kind"]) {
                            "visit" => lang.t("今回の受診のみ", "this visit only"),
                            _ => lang.t("継続", "standing"),
                        })
                        @if let Some(until) = consent.get("valid_until").and_then(Value::as_str) {
                            " · " (lang.t("期限 ", "until ")) (until.chars().take(16).collect::<String>().replace('T', " "))
                        }
                        @if in_force && text(consent, &["decision"]) == "GRANTED" {
                            form.inline method="post" action={ "/me/consents/" (layout::segment(id)) "/revoke" } {
                                input type="hidden" name="csrf" value=(member.session.csrf);
                                button.danger type="submit" { (lang.t("この同意を取り消す", "Revoke this consent")) }
                            }
                        }
                    }
                } }
            },
        }
        @if let Ok(c) = &answer {
            @let opted_out = c["research"]["opted_out"].as_bool() == Some(true);
            section #research aria-labelledby="research-heading" data-opted-out=(opted_out) {
                h2 #research-heading { (lang.t("研究への利用", "Use for research")) }
                p { (lang.t(
                    "あなたのデータは、名前や番号を取り除き、だれのものか分からない形に加工したうえで、承認された医学研究に使われることがあります。望まない場合は、いつでも止められます（また再開できます）。診療や調剤には影響しません。",
                    "Your data may be used for approved medical research after your name and numbers are removed and it is altered so that no one can tell it is yours. You can stop this at any time (and allow it again). It does not affect your care."
                )) }
                p.status { @if opted_out {
                    strong { (lang.t("いまは研究に使われません。", "Your data is not used for research now.")) }
                } @else {
                    strong { (lang.t("いまは研究に使われることがあります。", "Your data may be used for research now.")) }
                } }
                form.inline method="post" action="/me/research" {
                    input type="hidden" name="csrf" value=(member.session.csrf);
                    input type="hidden" name="opted_out" value=(if opted_out { "false" } else { "true" });
                    button type="submit" { @if opted_out {
                        (lang.t("研究への利用を再開する", "Allow use for research again"))
                    } @else {
                        (lang.t("研究に使わないでほしい", "Do not use my data for research"))
                    } }
                }
            }
        }
        section aria-labelledby="grant-heading" {
            h2 #grant-heading { (lang.t("同意する", "Give a consent")) }
            form.grant method="post" action="/me/consents" {
                input type="hidden" name="csrf" value=(member.session.csrf);
                div.field {
                    label for="grantee_org" { (lang.t("医療機関・薬局", "Clinic, hospital or pharmacy")) }
                    select #grantee_org name="grantee_org" required {
                        @for org in institutions(state) {
                            option value=(org.0) { (org.1) }
                        }
                    }
                }
                fieldset {
                    legend { (lang.t("期間", "For how long")) }
                    div.field.check {
                        input #kind-visit type="radio" name="kind" value="visit" checked;
                        label for="kind-visit" { (lang.t("今回の受診のみ（24時間）", "This visit only (24 hours)")) }
                    }
                    div.field.check {
                        input #kind-standing type="radio" name="kind" value="standing";
                        label for="kind-standing" { (lang.t("取り消すまで", "Until I revoke it")) }
                    }
                }
                button type="submit" { (lang.t("同意する", "Give consent")) }
            }
        }
    };
    layout::answered(
        problem,
        framed(member, lang.t("同意の設定", "Consent"), body),
    )
}

/// The institutions a patient may consent to: those that treat or dispense, by name.
fn institutions(state: &AppState) -> Vec<(String, String)> {
    let mut list: Vec<(String, String)> = state
        .directory
        .organizations()
        .filter(|o| {
            matches!(
                o.role,
                hixbus_access::Role::Clinic
                    | hixbus_access::Role::Hospital
                    | hixbus_access::Role::Pharmacy
            )
        })
        .map(|o| (o.id.clone(), o.name.clone()))
        .collect();
    list.sort_by(|a, b| a.1.cmp(&b.1));
    list
}

pub async fn revoke(
    State(state): State<AppState>,
    member: PatientMember,
    Path(id): Path<String>,
    Form(form): Form<layout::CsrfForm>,
) -> Response {
    let lang = member.lang;
    if let Err(refused) = member.session.check_csrf(form.csrf.as_deref(), lang) {
        return refused.into_response();
    }
    match member
        .api(&state)
        .delete(&member.token, Api::Patient, &["patient", "consents", &id])
        .await
    {
        Ok(_) => Redirect::to("/me/consents?done=revoked").into_response(),
        Err(e) => render_consents(&state, &member, None, Some(&e)).await,
    }
}

#[derive(Debug, Deserialize)]
pub struct ResearchForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    opted_out: Option<String>,
}

/// Opting out of research use (or back in): one choice per patient, which the research export
/// honours from its next release on (docs/research.md).
pub async fn research(
    State(state): State<AppState>,
    member: PatientMember,
    Form(form): Form<ResearchForm>,
) -> Response {
    let lang = member.lang;
    if let Err(refused) = member.session.check_csrf(form.csrf.as_deref(), lang) {
        return refused.into_response();
    }
    let opted_out = match form.opted_out.as_deref() {
        Some("true") => true,
        Some("false") => false,
        _ => {
            return refused(
                lang,
                StatusCode::BAD_REQUEST,
                lang.t(
                    "選択が読み取れませんでした。",
                    "The choice could not be read.",
                ),
            );
        }
    };
    match member
        .api(&state)
        .put(
            &member.token,
            Api::Patient,
            &["patient", "research"],
            &serde_json::json!({ "opted_out": opted_out }),
        )
        .await
    {
        Ok(_) => Redirect::to(if opted_out {
            "/me/consents?done=research-off"
        } else {
            "/me/consents?done=research-on"
        })
        .into_response(),
        Err(e) => render_consents(&state, &member, None, Some(&e)).await,
    }
}

pub async fn medications(State(state): State<AppState>, member: PatientMember) -> Response {
    let lang = member.lang;
    let answer = member
        .api(&state)
        .get(
            &member.token,
            Api::Patient,
            &["patient", "medications"],
            &[],
        )
        .await;
    let empty = Vec::new();
    let body = html! {
        @match &answer {
            Err(e) => (layout::problem(lang, e)),
            Ok(m) => {
                @let list = m.get("medications").and_then(Value::as_array).unwrap_or(&empty);
                @if list.is_empty() {
                    p { (lang.t("いま飲んでいる薬・受け取る薬はありません。", "Nothing to take or collect now.")) }
                }
                ul.medications { @for line in list {
                    li data-prescription=(text(line, &["prescription_id"])) {
                        strong { (text(&line["drug"], &["name"])) }
                        @if line.get("substituted").and_then(Value::as_bool) == Some(true) {
                            " " span.badge { (lang.t("後発品", "generic")) }
                        }
                        br;
                        (text(line, &["timing"])) " · " (text(line, &["prescribed_by"]))
                        " · " (lang.t("まで ", "until ")) (text(line, &["until"]))
                        @for alert in line.get("alerts").and_then(Value::as_array).unwrap_or(&empty) {
                            p.alert role="note" { strong { (lang.t("注意：", "Caution: ")) } (text(alert, &["message"])) }
                        }
                    }
                } }
            },
        }
    };
    page(&member, lang.t("いまの薬", "My medications"), body)
}

/// The years checkups were done in, oldest first, once each.
fn years_of(checkups: &[Value]) -> Vec<String> {
    let mut years: Vec<String> = checkups
        .iter()
        .map(|c| text(c, &["year"]).to_owned())
        .collect();
    years.sort();
    years.dedup();
    years
}

pub async fn checkups(State(state): State<AppState>, member: PatientMember) -> Response {
    let lang = member.lang;
    let answer = member
        .api(&state)
        .get(&member.token, Api::Patient, &["patient", "checkups"], &[])
        .await;
    let empty = Vec::new();
    let body = html! {
        @match &answer {
            Err(e) => (layout::problem(lang, e)),
            Ok(c) => {
                @let list = c.get("checkups").and_then(Value::as_array).unwrap_or(&empty);
                @let items = c.get("items").and_then(Value::as_array).unwrap_or(&empty);
                @let years = years_of(list);
                @if list.is_empty() {
                    p { (lang.t("健診の記録はまだありません。", "No checkups yet.")) }
                } @else {
                    ul { @for c in list {
                        li { (text(c, &["performed_on"])) " · " (text(c, &["institution"]))
                            @if let Some(m) = c.get("metabolic_syndrome").filter(|m| !m.is_null()) {
                                " · " (lang.t("メタボ判定 ", "metabolic syndrome: ")) (text(m, &["name"]))
                            }
                        }
                    } }
                    table #checkup-items {
                        caption { (lang.t("項目ごとの年次比較", "Each item, year by year")) }
                        thead { tr {
                            th scope="col" { (lang.t("項目", "Item")) }
                            @for y in &years { th scope="col" { (y) } }
                        } }
                        tbody { @for item in items {
                            tr {
                                th scope="row" { (text(&item["item"], &["name"])) }
                                @for y in &years {
                                    td.nowrap { @if let Some(v) = item["by_year"].get(y.as_str()) {
                                        (match &v["value"] { Value::String(s) => s.clone(), Value::Null => String::new(), other => other.to_string() })
                                        " " (text(v, &["unit"]))
                                    } }
                                }
                            }
                        } }
                    }
                }
            },
        }
    };
    page(&member, lang.t("健診", "Checkups"), body)
}

pub async fn expenses(State(state): State<AppState>, member: PatientMember) -> Response {
    let lang = member.lang;
    let answer = member
        .api(&state)
        .get(&member.token, Api::Patient, &["patient", "expenses"], &[])
        .await;
    let empty = Vec::new();
    let yen = |v: &Value| format!("{} 円", v.as_i64().unwrap_or_default());
    let body = html! {
        p { (lang.t(
            "保険者に請求された医療費と、あなたの負担額です（医療費通知）。",
            "What was billed to your insurer for your care, and your share (医療費通知)."
        )) }
        @match &answer {
            Err(e) => (layout::problem(lang, e)),
            Ok(x) => {
                table #expense-years {
                    caption { (lang.t("年ごとの合計", "Totals by year")) }
                    thead { tr {
                        th scope="col" { (lang.t("年", "Year")) }
                        th scope="col" { (lang.t("医療費の総額", "Total")) }
                        th scope="col" { (lang.t("あなたの負担", "Your share")) }
                        th scope="col" { (lang.t("保険者の負担", "Insurer's share")) }
                    } }
                    tbody { @for y in x.get("years").and_then(Value::as_array).unwrap_or(&empty) {
                        tr {
                            td { (y["year"]) }
                            td.nowrap { (yen(&y["total_jpy"])) }
                            td.nowrap { (yen(&y["patient_jpy"])) }
                            td.nowrap { (yen(&y["insurer_jpy"])) }
                        }
                    } }
                }
                table #expenses {
                    caption { (lang.t("明細", "Each claim")) }
                    thead { tr {
                        th scope="col" { (lang.t("月", "Month")) }
                        th scope="col" { (lang.t("医療機関・薬局", "Provider")) }
                        th scope="col" { (lang.t("総額", "Total")) }
                        th scope="col" { (lang.t("あなたの負担", "Your share")) }
                        th scope="col" { (lang.t("審査", "Decision")) }
                    } }
                    tbody { @for c in x.get("claims").and_then(Value::as_array).unwrap_or(&empty) {
                        tr {
                            td.nowrap { (text(c, &["month"])) }
                            td { (text(c, &["provider"])) }
                            td.nowrap { (yen(&c["total_jpy"])) }
                            td.nowrap { (yen(&c["patient_jpy"])) }
                            td { (text(c, &["status"])) }
                        }
                    } }
                }
            },
        }
    };
    page(&member, lang.t("医療費", "Medical expenses"), body)
}

/// The whole record as a FHIR R4 Bundle, downloaded.
pub async fn export(State(state): State<AppState>, member: PatientMember) -> Response {
    match member
        .api(&state)
        .get(&member.token, Api::Patient, &["patient", "export"], &[])
        .await
    {
        Ok(bundle) => (
            [
                (header::CONTENT_TYPE, "application/fhir+json"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"my-health-record.json\"",
                ),
            ],
            bundle.to_string(),
        )
            .into_response(),
        Err(e) => {
            let lang = member.lang;
            (
                layout::status_of(&e),
                page(
                    &member,
                    lang.t("記録の書き出し", "Export"),
                    layout::problem(lang, &e),
                ),
            )
                .into_response()
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct GrantForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    grantee_org: String,
    #[serde(default)]
    kind: String,
}

/// Grants an institution a consent to see what others recorded for the patient.
pub async fn grant(
    State(state): State<AppState>,
    member: PatientMember,
    Form(form): Form<GrantForm>,
) -> Response {
    if let Err(refused) = member.session.check_csrf(form.csrf.as_deref(), member.lang) {
        return refused.into_response();
    }
    let kind = if form.kind == "visit" {
        "visit"
    } else {
        "standing"
    };
    let request = serde_json::json!({
        "grantee_org": form.grantee_org,
        "scope": ["ALL"],
        "kind": kind,
    });
    match member
        .api(&state)
        .post(
            &member.token,
            Api::Patient,
            &["patient", "consents"],
            &request,
        )
        .await
    {
        Ok(_) => Redirect::to("/me/consents?done=granted").into_response(),
        Err(e) => render_consents(&state, &member, None, Some(&e)).await,
    }
}

fn relationship_label(lang: Lang, relationship: &str) -> &'static str {
    match relationship {
        "parent" => lang.t("親", "Parent"),
        "guardian" => lang.t("後見人", "Guardian"),
        "carer" => lang.t("介護者", "Carer"),
        "family" => lang.t("家族", "Family"),
        _ => lang.t("その他", "Other"),
    }
}

fn delegation_status(lang: Lang, status: &str) -> &'static str {
    match status {
        "active" => lang.t("有効", "Active"),
        "invited" => lang.t("招待中（未受諾）", "Invited (not accepted yet)"),
        "revoked" => lang.t("取り消し済み", "Revoked"),
        "expired" => lang.t("期限切れ", "Expired"),
        _ => lang.t("不明", "Unknown"),
    }
}

/// Proxies: the people a patient lets act for them (a parent, a carer), invited with a code the
/// patient hands over, revoked at any time; and, for someone who was given such a code, taking
/// it up and switching to the record of the person they act for.
pub async fn proxies(
    State(state): State<AppState>,
    member: PatientMember,
    Query(done): Query<Done>,
) -> Response {
    render_proxies(&state, &member, done.done.as_deref(), None, None).await
}

/// A code just made: shown once, on the page that made it, never in a URL.
struct NewCode {
    code: String,
    until: String,
}

async fn render_proxies(
    state: &AppState,
    member: &PatientMember,
    done: Option<&str>,
    problem: Option<&CallError>,
    new_code: Option<NewCode>,
) -> Response {
    let lang = member.lang;
    let csrf = member.session.csrf.as_str();
    // The person's own proxies only while they look at their own record (and have one): the
    // patient service lets only the patient manage them.
    let own = if member.acting_for.is_none() && !member.patient_ref.is_empty() {
        Some(
            member
                .api(state)
                .get(
                    &member.token,
                    Api::Patient,
                    &["patient", "delegations"],
                    &[],
                )
                .await,
        )
    } else {
        None
    };
    let held = state
        .upstream
        .get(&member.token, Api::Patient, &["patient", "acting-for"], &[])
        .await;
    let body = html! {
        @match done {
            Some("revoked") => (layout::done(lang.t("代理を取り消しました。", "The proxy can no longer act for you."))),
            Some("accepted") => (layout::done(lang.t("代理を引き受けました。下の一覧から記録を開けます。", "You accepted. Open the record from the list below."))),
            _ => {},
        }
        @if let Some(p) = problem { (layout::problem(lang, p)) }
        @if let Some(c) = &new_code {
            div.done #new-code role="status" {
                p { (lang.t("代理人にこのコードを渡してください（一度だけ表示されます）：", "Give this code to your proxy (it is shown only once):")) }
                p { strong.code { (c.code) } }
                p { (lang.t("代理の期限：", "They may act for you until: ")) (layout::short_time(&c.until)) }
            }
        }
        @if let Some(own) = &own {
            section #own-proxies aria-labelledby="own-heading" {
                h2 #own-heading { (lang.t("わたしの代理人", "My proxies")) }
                p { (lang.t(
                    "代理人（お子さんの親、後見人、介護する家族など）は、あなたの記録を見て、同意の設定をあなたに代わって行えます。いつでも取り消せます。代理人の閲覧も閲覧の記録に残ります。",
                    "A proxy (a child's parent, a guardian, a carer) can see your record and manage your consents for you. You can revoke them at any time. Their reads appear in your access trail too."
                )) }
                @match own {
                    Err(e) => (layout::problem(lang, e)),
                    Ok(list) => {
                        @let delegations = list.get("delegations").and_then(Value::as_array).cloned().unwrap_or_default();
                        @if delegations.is_empty() {
                            p { (lang.t("代理人はいません。", "You have no proxies.")) }
                        } @else {
                            ul.consents { @for d in &delegations {
                                @let id = text(d, &["id"]);
                                @let status = text(d, &["status"]);
                                li data-delegation=(id) data-status=(status) {
                                    strong { (relationship_label(lang, text(d, &["relationship"]))) }
                                    " — " (delegation_status(lang, status))
                                    " · " (lang.t("期限 ", "until ")) (layout::short_time(text(d, &["until"])))
                                    @if matches!(status, "active" | "invited") {
                                        form.inline method="post" action={ "/me/proxies/" (layout::segment(id)) "/revoke" } {
                                            input type="hidden" name="csrf" value=(csrf);
                                            button.danger type="submit" { (lang.t("取り消す", "Revoke")) }
                                        }
                                    }
                                }
                            } }
                        }
                    },
                }
                form.grant #invite method="post" action="/me/proxies" {
                    input type="hidden" name="csrf" value=(csrf);
                    div.field {
                        label for="relationship" { (lang.t("代理人との関係", "Who they are to you")) }
                        select #relationship name="relationship" required {
                            @for r in ["parent", "guardian", "carer", "family"] {
                                option value=(r) { (relationship_label(lang, r)) }
                            }
                        }
                    }
                    div.field {
                        label for="days" { (lang.t("期間", "For how long")) }
                        select #days name="days" required {
                            option value="30" { (lang.t("30日", "30 days")) }
                            option value="365" selected { (lang.t("1年", "1 year")) }
                            option value="3650" { (lang.t("10年", "10 years")) }
                        }
                    }
                    button type="submit" { (lang.t("招待コードを作る", "Make an invitation code")) }
                }
            }
        }
        section #acting aria-labelledby="acting-heading" {
            h2 #acting-heading { (lang.t("代理で見る", "Acting for someone")) }
            @match &held {
                Err(e) => (layout::problem(lang, e)),
                Ok(h) => {
                    @let patients = h.get("patients").and_then(Value::as_array).cloned().unwrap_or_default();
                    @if patients.is_empty() {
                        p { (lang.t("代理を引き受けている人はいません。", "You act for no one.")) }
                    }
                    ul.consents { @for p in &patients {
                        @let whom = text(p, &["act_for"]);
                        li data-act-for=(whom) {
                            strong { (whom) } " — " (relationship_label(lang, text(p, &["relationship"])))
                            " · " (lang.t("期限 ", "until ")) (layout::short_time(text(p, &["until"])))
                            form.inline method="post" action="/me/act-for" {
                                input type="hidden" name="csrf" value=(csrf);
                                input type="hidden" name="patient" value=(whom);
                                button type="submit" { (lang.t("この人の記録を見る", "Open their record")) }
                            }
                        }
                    } }
                },
            }
            form.grant #accept method="post" action="/me/proxies/accept" {
                input type="hidden" name="csrf" value=(csrf);
                div.field {
                    label for="code" { (lang.t("受け取った招待コード", "The invitation code you were given")) }
                    input #code name="code" required maxlength="64" autocomplete="off";
                }
                button type="submit" { (lang.t("代理を引き受ける", "Accept")) }
            }
        }
    };
    layout::answered(problem, framed(member, lang.t("代理人", "Proxies"), body))
}

#[derive(Debug, Deserialize)]
pub struct InviteForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    relationship: String,
    #[serde(default)]
    days: String,
}

pub async fn invite(
    State(state): State<AppState>,
    member: PatientMember,
    Form(form): Form<InviteForm>,
) -> Response {
    let lang = member.lang;
    if let Err(refused) = member.session.check_csrf(form.csrf.as_deref(), lang) {
        return refused.into_response();
    }
    // The service checks both (relationships it knows, 1 to 3650 days); a number that is not
    // one is refused here with the same words.
    let Ok(days) = form.days.trim().parse::<i64>() else {
        return refused(
            lang,
            StatusCode::BAD_REQUEST,
            lang.t(
                "期間が読み取れませんでした。",
                "The period could not be read.",
            ),
        );
    };
    let request = serde_json::json!({ "relationship": form.relationship, "days": days });
    match member
        .api(&state)
        .post(
            &member.token,
            Api::Patient,
            &["patient", "delegations"],
            &request,
        )
        .await
    {
        Ok(made) => {
            let new_code = NewCode {
                code: text(&made, &["code"]).to_owned(),
                until: text(&made, &["until"]).to_owned(),
            };
            render_proxies(&state, &member, None, None, Some(new_code)).await
        }
        Err(e) => render_proxies(&state, &member, None, Some(&e), None).await,
    }
}

pub async fn revoke_proxy(
    State(state): State<AppState>,
    member: PatientMember,
    Path(id): Path<String>,
    Form(form): Form<layout::CsrfForm>,
) -> Response {
    if let Err(refused) = member.session.check_csrf(form.csrf.as_deref(), member.lang) {
        return refused.into_response();
    }
    match member
        .api(&state)
        .delete(
            &member.token,
            Api::Patient,
            &["patient", "delegations", &id],
        )
        .await
    {
        Ok(_) => Redirect::to("/me/proxies?done=revoked").into_response(),
        Err(e) => render_proxies(&state, &member, None, Some(&e), None).await,
    }
}

#[derive(Debug, Deserialize)]
pub struct AcceptForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    code: String,
}

pub async fn accept(
    State(state): State<AppState>,
    member: PatientMember,
    Form(form): Form<AcceptForm>,
) -> Response {
    if let Err(refused) = member.session.check_csrf(form.csrf.as_deref(), member.lang) {
        return refused.into_response();
    }
    // Accepted as the person signed in, whoever's record they are looking at.
    match state
        .upstream
        .post(
            &member.token,
            Api::Patient,
            &["patient", "delegations", "accept"],
            &serde_json::json!({ "code": form.code.trim() }),
        )
        .await
    {
        Ok(_) => Redirect::to("/me/proxies?done=accepted").into_response(),
        Err(e) => render_proxies(&state, &member, None, Some(&e), None).await,
    }
}

#[derive(Debug, Deserialize)]
pub struct ActForForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    patient: String,
}

/// Switches to the record of someone this person acts for (or back to their own, with an empty
/// `patient`). Only records the patient service lists for them now are offered, and it checks
/// the delegation again at every call, so a revoked proxy sees nothing from that moment on.
pub async fn act_for(
    State(state): State<AppState>,
    member: PatientMember,
    Form(form): Form<ActForForm>,
) -> Response {
    let lang = member.lang;
    if let Err(refused) = member.session.check_csrf(form.csrf.as_deref(), lang) {
        return refused.into_response();
    }
    let patient = form.patient.trim();
    if patient.is_empty() {
        state.sessions.act_for(&member.session.id, None);
        return Redirect::to("/me").into_response();
    }
    let held = match state
        .upstream
        .get(&member.token, Api::Patient, &["patient", "acting-for"], &[])
        .await
    {
        Ok(held) => held,
        Err(e) => return render_proxies(&state, &member, None, Some(&e), None).await,
    };
    let may = held
        .get("patients")
        .and_then(Value::as_array)
        .is_some_and(|list| list.iter().any(|p| text(p, &["act_for"]) == patient));
    if !may {
        return refused(
            lang,
            StatusCode::FORBIDDEN,
            lang.t(
                "この人の代理として記録を見ることはできません。",
                "You may not act for this person.",
            ),
        );
    }
    state
        .sessions
        .act_for(&member.session.id, Some(patient.to_owned()));
    Redirect::to("/me").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_chart_draws_the_values_over_their_reference_band_and_marks_those_outside() {
        let test = json!({
            "test": { "code": "2823-3", "name": "カリウム" },
            "values": [
                { "at": "2026-10-01T09:00:00+09:00", "value": 4.1, "unit": "mmol/L",
                  "reference_range": { "low": 3.6, "high": 4.8 }, "interpretation": "NORMAL" },
                { "at": "2026-11-01T09:00:00+09:00", "value": 6.2, "unit": "mmol/L",
                  "reference_range": { "low": 3.6, "high": 4.8 }, "interpretation": "CRITICALLY_HIGH" },
            ],
        });
        let svg = chart(&test).into_string();
        assert!(svg.contains("カリウム (mmol/L)"), "{svg}");
        assert!(svg.contains("<rect class=\"band\""), "the reference band");
        let points = svg
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(points.split(' ').count(), 2, "{points}");
        assert_eq!(
            svg.matches("fill=\"#a50e0e\"").count(),
            1,
            "one point outside"
        );
        assert!(
            svg.contains("2026-11-01 6.2 mmol/L"),
            "the values are read out: {svg}"
        );
        // A test without numbers draws nothing.
        let coded = json!({ "test": { "code": "x" }, "values": [{ "value": "陰性" }] });
        assert_eq!(chart(&coded).into_string(), "");
    }

    #[test]
    fn an_id_tokens_claims_are_read_and_garbage_is_not() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"nonce":"n-1","exp":1}"#);
        let claims = unverified_claims(&format!("h.{payload}.s")).unwrap();
        assert_eq!(claims["nonce"], "n-1");
        assert!(unverified_claims("no-dots").is_none());
        assert!(unverified_claims("a.!!!.c").is_none());
    }
}
