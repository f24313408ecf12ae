//! Signing in with the organization's API key, signing out, and the language switch.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use crate::AppState;
use crate::cookies;
use crate::i18n::Lang;
use crate::layout::{self, Viewer};
use crate::security::{Member, Visitor};
use crate::session::Principal;

/// API keys are 43 base64url characters; anything much longer is not one.
const MAX_KEY_CHARS: usize = 256;

pub async fn home(visitor: Visitor) -> Response {
    let session = visitor.session.as_ref();
    if session.is_some_and(|s| s.patient().is_some()) {
        return Redirect::to("/me").into_response();
    }
    match session.and_then(|s| s.organization()) {
        Some((_, _, role, _)) => Redirect::to(layout::home_of(role)).into_response(),
        None => Redirect::to("/signin").into_response(),
    }
}

fn busy(lang: Lang) -> Response {
    layout::refusal(
        lang,
        StatusCode::SERVICE_UNAVAILABLE,
        lang.t(
            "混み合っています。少し待ってからもう一度お試しください。",
            "Too many people are signing in right now; try again in a minute.",
        ),
    )
}

/// The sign-in form. A visitor gets an anonymous session first, whose CSRF token the form
/// carries: a sign-in can only be posted from this page, not by another site into an account
/// of its choosing.
pub async fn form(State(state): State<AppState>, visitor: Visitor) -> Response {
    let lang = visitor.lang;
    let (session, new) = match visitor.session {
        Some(session) => {
            if let Some((_, _, role, _)) = session.organization() {
                return Redirect::to(layout::home_of(role)).into_response();
            }
            (session, false)
        }
        None => match state.sessions.start(Principal::Anonymous) {
            Ok(session) => (session, true),
            Err(_) => return busy(lang),
        },
    };
    let mut response = signin_page(lang, &session.csrf, None).into_response();
    if new {
        response.headers_mut().insert(
            header::SET_COOKIE,
            cookies::session(&session.id, state.secure),
        );
    }
    response
}

fn signin_page(lang: Lang, csrf: &str, problem: Option<&str>) -> maud::Markup {
    let body = html! {
        @if let Some(problem) = problem {
            div.problem role="alert" { (problem) }
        }
        form.signin method="post" action="/signin" {
            input type="hidden" name="csrf" value=(csrf);
            label for="api_key" { (lang.t("組織のAPIキー", "Your organization's API key")) }
            input #api_key type="password" name="api_key" autocomplete="off" required
                maxlength=(MAX_KEY_CHARS) autofocus;
            p.hint { (lang.t(
                "薬局・医療機関・保険者の方は、配布されたAPIキーでサインインします。",
                "Pharmacies, clinics and insurers sign in with the API key they were issued."
            )) }
            p.hint { a href="/patient" { (lang.t(
                "患者さんはこちらからサインインします。",
                "Patients sign in here."
            )) } }
            button type="submit" { (lang.t("サインイン", "Sign in")) }
        }
    };
    layout::page(
        Viewer { lang, member: None },
        lang.t("サインイン", "Sign in"),
        body,
    )
}

#[derive(Debug, Deserialize)]
pub struct SigninForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    api_key: String,
}

pub async fn submit(
    State(state): State<AppState>,
    visitor: Visitor,
    Form(form): Form<SigninForm>,
) -> Response {
    let lang = visitor.lang;
    let Some(anonymous) = visitor.session else {
        return layout::refusal(
            lang,
            StatusCode::FORBIDDEN,
            lang.t(
                "サインイン画面を開き直してください（フォームの有効期限切れ）。",
                "Open the sign-in page again: this form expired.",
            ),
        );
    };
    if !form
        .csrf
        .as_deref()
        .is_some_and(|t| anonymous.csrf_matches(t))
    {
        return layout::refusal(
            lang,
            StatusCode::FORBIDDEN,
            lang.t(
                "このフォームは受け付けられません。サインイン画面を開き直してください。",
                "This form was refused: open the sign-in page again.",
            ),
        );
    }
    let key = form.api_key.trim();
    let org = (key.len() <= MAX_KEY_CHARS)
        .then(|| {
            state
                .directory
                .authenticate(Some(&format!("Bearer {key}")))
                .ok()
        })
        .flatten();
    let Some(org) = org else {
        tracing::info!(target: "hixbus_web::signin", "sign-in refused: unknown or expired key");
        return (
            StatusCode::UNAUTHORIZED,
            signin_page(
                lang,
                &anonymous.csrf,
                Some(lang.t(
                    "APIキーが正しくないか、有効期限が切れています。",
                    "That API key is not valid, or it has expired.",
                )),
            ),
        )
            .into_response();
    };
    state.sessions.end(&anonymous.id);
    let session = match state.sessions.start(Principal::Organization {
        id: org.id.clone(),
        name: org.name.clone(),
        role: org.role,
        key: key.to_owned().into(),
    }) {
        Ok(session) => session,
        Err(_) => return busy(lang),
    };
    tracing::info!(target: "hixbus_web::signin", org = %org.id, "signed in");
    let mut response = Redirect::to(layout::home_of(org.role)).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        cookies::session(&session.id, state.secure),
    );
    response
}

#[derive(Debug, Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    pub csrf: Option<String>,
}

/// Ends an organization's or a patient's session.
pub async fn signout(
    State(state): State<AppState>,
    visitor: Visitor,
    Form(form): Form<CsrfOnly>,
) -> Response {
    let lang = visitor.lang;
    let Some(session) = visitor.session else {
        return Redirect::to("/signin").into_response();
    };
    if let Err(refused) = session.check_csrf(form.csrf.as_deref(), lang) {
        return refused.into_response();
    }
    state.sessions.end(&session.id);
    let to = if session.patient().is_some() {
        "/patient"
    } else {
        "/signin"
    };
    let mut response = Redirect::to(to).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookies::session_removal(state.secure));
    response
}

/// Switches the language and goes back to the start of the console.
pub async fn language(State(state): State<AppState>, Path(lang): Path<String>) -> Response {
    let value = match lang.as_str() {
        "en" => "en",
        _ => "ja",
    };
    let mut response = Redirect::to("/").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookies::lang(value, state.secure));
    response
}

/// Organizations whose console is not built yet.
pub async fn unsupported(member: Member) -> Response {
    let lang = member.lang;
    layout::page(
        Viewer::from(&member),
        lang.t("準備中", "Not yet available"),
        html! {
            p { (lang.t(
                "この種類の組織の画面はまだありません。APIをお使いください（docs/consoles.md）。",
                "There is no console for this kind of organization yet; use the API (docs/consoles.md)."
            )) }
        },
    )
    .into_response()
}
