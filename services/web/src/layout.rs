//! The frame every page shares: language, skip link, the organization's navigation, sign-out,
//! and a live region where the page announces what changed (screen readers read it aloud).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Offset;
use hixbus_access::Role;
use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

use crate::i18n::Lang;
use crate::security::{Member, Visitor};
use crate::upstream::CallError;

/// What the frame needs to know of the viewer.
#[derive(Debug, Clone, Copy)]
pub struct Viewer<'a> {
    pub lang: Lang,
    /// Who is signed in (organization name, or the patient's record), the organization's role
    /// (`None`: a patient), and the session's CSRF token.
    pub member: Option<(&'a str, Option<Role>, &'a str)>,
}

impl<'a> From<&'a Member> for Viewer<'a> {
    fn from(m: &'a Member) -> Self {
        Viewer {
            lang: m.lang,
            member: Some((m.name.as_str(), Some(m.role), m.session.csrf.as_str())),
        }
    }
}

impl<'a> From<&'a Visitor> for Viewer<'a> {
    fn from(v: &'a Visitor) -> Self {
        Viewer {
            lang: v.lang,
            member: None,
        }
    }
}

/// Where each role's console starts.
pub fn home_of(role: Role) -> &'static str {
    match role {
        Role::Pharmacy => "/pharmacy",
        Role::Clinic | Role::Hospital => "/clinic",
        Role::Insurer => "/insurer",
        Role::Operator => "/operator",
        _ => "/unsupported",
    }
}

fn nav(lang: Lang, role: Option<Role>) -> Markup {
    let Some(role) = role else {
        return nav_links(
            lang,
            vec![
                ("/me", lang.t("わたしの記録", "My record")),
                ("/me/medications", lang.t("いまの薬", "Medications")),
                ("/me/labs", lang.t("検査結果の推移", "Lab trends")),
                ("/me/checkups", lang.t("健診", "Checkups")),
                ("/me/expenses", lang.t("医療費", "Expenses")),
                ("/me/access", lang.t("閲覧の記録", "Who saw my data")),
                ("/me/consents", lang.t("同意の設定", "Consent")),
                ("/me/proxies", lang.t("代理人", "Proxies")),
            ],
        );
    };
    let links: Vec<(&str, &str)> = match role {
        Role::Pharmacy => vec![("/pharmacy", lang.t("受付", "Inbox"))],
        Role::Clinic | Role::Hospital => vec![
            ("/clinic", lang.t("発行した処方箋", "Prescriptions")),
            ("/clinic/results", lang.t("検査結果", "Lab results")),
        ],
        Role::Insurer => vec![("/insurer", lang.t("請求と審査", "Claims and decisions"))],
        Role::Operator => vec![
            ("/operator", lang.t("稼働状況", "Overview")),
            (
                "/operator/dead-letters",
                lang.t("デッドレター", "Dead letters"),
            ),
            ("/operator/registry", lang.t("スキーマ", "Schemas")),
        ],
        _ => vec![],
    };
    nav_links(lang, links)
}

fn nav_links(lang: Lang, links: Vec<(&str, &str)>) -> Markup {
    html! {
        nav aria-label=(lang.t("メニュー", "Menu")) {
            ul {
                @for (href, text) in links {
                    li { a href=(href) { (text) } }
                }
            }
        }
    }
}

/// A whole page.
pub fn page(viewer: Viewer<'_>, title: &str, body: Markup) -> Markup {
    let lang = viewer.lang;
    let other = lang.other();
    html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — hixbus" }
                link rel="stylesheet" href="/static/app.css";
                script src="/static/live.js" defer {}
            }
            body {
                a.skip href="#main" { (lang.t("本文へ移動", "Skip to content")) }
                header.top {
                    span.brand { "hixbus" }
                    @if let Some((name, role, _)) = viewer.member {
                        (nav(lang, role))
                        span.who { (name) }
                    }
                    a.lang href={ "/lang/" (other.code()) } lang=(other.code()) { (other.own_name()) }
                    @if let Some((_, _, csrf)) = viewer.member {
                        form.signout method="post" action="/signout" {
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { (lang.t("サインアウト", "Sign out")) }
                        }
                    }
                }
                div #announce .visually-hidden role="status" aria-live="polite" {}
                main #main tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A message box: what went wrong, in words the user can act on.
pub fn problem(lang: Lang, error: &CallError) -> Markup {
    html! {
        div.problem role="alert" {
            strong { (lang.t("できませんでした：", "Not done: ")) }
            (error.to_string())
        }
    }
}

/// A message box saying something was done.
pub fn done(text: &str) -> Markup {
    html! { div.done role="status" { (text) } }
}

/// A page that says no, with its status.
pub fn refusal(lang: Lang, status: StatusCode, why: &str) -> Response {
    let viewer = Viewer { lang, member: None };
    let body = html! {
        p.problem role="alert" { (why) }
        p { a href="/" { (lang.t("最初の画面へ", "Back to the start")) } }
    };
    let title = match status {
        StatusCode::FORBIDDEN => lang.t("許可されていません", "Not allowed"),
        StatusCode::NOT_FOUND => lang.t("見つかりません", "Not found"),
        _ => lang.t("できませんでした", "Not done"),
    };
    (status, page(viewer, title, body)).into_response()
}

/// A form without this session's CSRF token: expired, or not posted from this console.
pub fn stale_form(lang: Lang) -> Response {
    refusal(
        lang,
        StatusCode::FORBIDDEN,
        lang.t(
            "このフォームは受け付けられません（有効期限切れか、別の画面から送られました）。画面を開き直してください。",
            "This form was refused: it expired or did not come from this console. Open the page again.",
        ),
    )
}

/// The status a page answers with when an API call failed: the API's refusal as it was, or 502
/// when the service behind could not answer.
pub fn status_of(error: &CallError) -> StatusCode {
    error.status().unwrap_or(StatusCode::BAD_GATEWAY)
}

/// A page answers with the status of the API call it could not make (the API's refusal, or 502),
/// so a monitor or a script sees the failure without reading the text; otherwise 200.
pub fn answered(problem: Option<&CallError>, page: Markup) -> Response {
    (problem.map_or(StatusCode::OK, status_of), page).into_response()
}

/// `segment` encoded for one path segment or query value of a link the page builds (ids come
/// from the services and may hold `/`, `?` or `#`).
pub fn segment(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}

/// A form that carries nothing but the session's CSRF token (revoke, redrive, sign-out…).
#[derive(Debug, serde::Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: Option<String>,
}

/// A live list's rows as the script swaps them in, or the failure as plain text with its status
/// (the script then keeps the rows it has).
pub fn fragment(answer: Result<Value, CallError>, rows: impl FnOnce(&Value) -> Markup) -> Response {
    match answer {
        Ok(page) => rows(&page).into_response(),
        Err(e) => (status_of(&e), e.to_string()).into_response(),
    }
}

pub async fn not_found(visitor: Visitor) -> Response {
    refusal(
        visitor.lang,
        StatusCode::NOT_FOUND,
        visitor
            .lang
            .t("そのページはありません。", "There is no such page."),
    )
}

/// The text at `path` in an API answer, or "" (a page shows what is there and nothing else).
pub fn text<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// A date as the events carry it: `YYYY-MM-DD`, or days since 1970-01-01 (Avro's `date`).
pub fn event_date(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n
            .as_i64()
            .and_then(|days| {
                chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?
                    .checked_add_signed(chrono::Duration::days(days))
            })
            .map(|d| d.to_string())
            .unwrap_or_default(),
        _ => String::new(),
    }
}

/// An RFC 3339 time as `YYYY-MM-DD HH:MM` in Japan, where the people reading it are (the
/// services answer in UTC); a text that is not one is shown as it came.
pub fn short_time(text: &str) -> String {
    let japan = chrono::FixedOffset::east_opt(9 * 3600).unwrap_or_else(|| chrono::Utc.fix());
    match chrono::DateTime::parse_from_rfc3339(text) {
        Ok(t) => t.with_timezone(&japan).format("%Y-%m-%d %H:%M").to_string(),
        Err(_) => text.chars().take(32).collect(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_shown_in_japan() {
        assert_eq!(
            super::short_time("2024-04-01T19:33:20Z"),
            "2024-04-02 04:33"
        );
        assert_eq!(super::short_time("not a time"), "not a time");
    }
}
