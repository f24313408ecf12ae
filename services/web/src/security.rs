//! Who is asking (the session behind the cookie), what every answer carries (the security
//! headers), and the two static files the pages use.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use hixbus_access::Role;
use secrecy::SecretString;

use crate::AppState;
use crate::cookies;
use crate::i18n::Lang;
use crate::layout;
use crate::session::Session;

/// Scripts and styles from this origin only, no inline script, no framing, forms posted only
/// here: an injected tag can neither run nor send a form elsewhere.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
    connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The headers every answer carries. Pages are never cached (they show patient data); the
/// two static files may be, briefly.
pub fn headers(mut response: Response, secure: bool) -> Response {
    let h = response.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=(), payment=()"),
    );
    if secure {
        h.insert(
            "strict-transport-security",
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

pub async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", include_str!("assets/app.css"))
}

pub async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/live.js"),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// Anyone: the language they chose, and their session if they have one.
#[derive(Debug)]
pub struct Visitor {
    pub lang: Lang,
    pub session: Option<Session>,
}

impl<S: Send + Sync> FromRequestParts<S> for Visitor
where
    AppState: FromRef<S>,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let lang = Lang::from_headers(&parts.headers);
        // The live lists' own requests (`…/rows`, `…/live`) do not count as use.
        let background = parts.uri.path().ends_with("/rows") || parts.uri.path().ends_with("/live");
        let session =
            cookies::get(&parts.headers, cookies::session_name(state.secure)).and_then(|id| {
                if background {
                    state.sessions.peek(id)
                } else {
                    state.sessions.get(id)
                }
            });
        Ok(Visitor { lang, session })
    }
}

/// A signed-in organization. Pages that need one send everyone else to the sign-in form.
#[derive(Debug)]
pub struct Member {
    pub lang: Lang,
    pub session: Session,
    pub org_id: String,
    pub name: String,
    pub role: Role,
    pub key: SecretString,
}

impl<S: Send + Sync> FromRequestParts<S> for Member
where
    AppState: FromRef<S>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Ok(visitor) = Visitor::from_request_parts(parts, state).await;
        let signed_in = visitor.session.and_then(|session| {
            let (id, name, role, key) = session.organization()?;
            let (id, name, key) = (id.to_owned(), name.to_owned(), key.clone());
            Some(Member {
                lang: visitor.lang,
                session,
                org_id: id,
                name,
                role,
                key,
            })
        });
        signed_in.ok_or_else(|| Redirect::to("/signin").into_response())
    }
}

/// A page refusing the request, boxed (a response is large, and most calls pass).
#[derive(Debug)]
pub struct Refusal(Box<Response>);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        *self.0
    }
}

impl Session {
    /// Refuses a form whose CSRF token is not this session's: a page on another site can make
    /// the browser post here, but cannot read the token from our pages.
    pub fn check_csrf(&self, token: Option<&str>, lang: Lang) -> Result<(), Refusal> {
        match token {
            Some(token) if self.csrf_matches(token) => Ok(()),
            _ => Err(Refusal(Box::new(layout::stale_form(lang)))),
        }
    }
}

impl Member {
    pub fn check_csrf(&self, token: Option<&str>) -> Result<(), Refusal> {
        self.session.check_csrf(token, self.lang)
    }

    /// Refuses a console that is not for this organization's role.
    pub fn require(&self, roles: &[Role]) -> Result<(), Refusal> {
        if roles.contains(&self.role) {
            return Ok(());
        }
        Err(Refusal(Box::new(layout::refusal(
            self.lang,
            StatusCode::FORBIDDEN,
            self.lang.t(
                "この画面はあなたの組織の種類では使えません。",
                "This console is not for your kind of organization.",
            ),
        ))))
    }
}
