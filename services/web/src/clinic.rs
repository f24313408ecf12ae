//! The clinic console: the prescriptions it issued with their live status, cancelling one,
//! and the lab results inbox with critical results awaiting acknowledgement on top.

use axum::Form;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use hixbus_access::Role;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::i18n::Lang;
use crate::layout::text;
use crate::layout::{self, Viewer};
use crate::live;
use crate::pharmacy::{Done, PAGE, paging, status_label};
use crate::security::Member;
use crate::upstream::{Api, CallError};

const CLINICS: &[Role] = &[Role::Clinic, Role::Hospital];
/// How often the prescriptions list asks again: the clinic gateway has no live stream of its
/// issued prescriptions (their status changes arrive from the pharmacies' topics).
const POLL_MS: &str = "3000";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/clinic", get(prescriptions))
        .route("/clinic/rows", get(prescription_rows))
        .route("/clinic/rx/{id}", get(prescription))
        .route("/clinic/rx/{id}/cancel", post(cancel))
        .route("/clinic/results", get(results))
        .route("/clinic/results/rows", get(result_rows))
        .route("/clinic/results/live", get(results_live))
        .route("/clinic/results/{lab}/{report}/ack", post(acknowledge))
        .route("/unsupported", get(crate::signin::unsupported))
}

async fn issued_page(
    state: &AppState,
    member: &Member,
    before: Option<&str>,
) -> Result<Value, CallError> {
    let mut query = vec![("limit", PAGE), ("order", "newest")];
    if let Some(before) = before {
        query.push(("after", before));
    }
    state
        .upstream
        .get(
            &member.key,
            Api::ClinicGateway,
            &["clinic", "prescriptions"],
            &query,
        )
        .await
}

fn prescription_rows_markup(lang: Lang, page: &Value) -> Markup {
    let empty = Vec::new();
    let items = page
        .get("prescriptions")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    html! {
        @if items.is_empty() {
            tr { td colspan="4" { (lang.t("発行した処方箋はまだありません。", "No prescriptions issued yet.")) } }
        }
        @for p in items {
            @let id = text(p, &["prescription_id"]);
            @let status = text(p, &["status"]);
            tr data-id=(id) data-status=(status) {
                td { a href={ "/clinic/rx/" (layout::segment(id)) } { (id) } }
                td { (text(p, &["patient_ref"])) }
                td.nowrap { (layout::event_date(&p["prescription"]["issued_on"])) }
                td {
                    span class={ "status status-" (status) } { (status_label(lang, status)) }
                    @if let Some(by) = p.get("claimed_by").and_then(Value::as_str) {
                        " " small { (by) }
                    }
                }
            }
        }
    }
}

pub async fn prescriptions(
    State(state): State<AppState>,
    member: Member,
    Query(query): Query<Done>,
) -> Response {
    if let Err(r) = member.require(CLINICS) {
        return r.into_response();
    }
    let lang = member.lang;
    let before = query.before();
    let page = issued_page(&state, &member, before).await;
    let body = html! {
        p.live-state { (lang.t("状態は自動で更新されます。", "Statuses update by themselves.")) }
        @match &page {
            Err(e) => (layout::problem(lang, e)),
            Ok(page) => table #issued data-rows=[before.is_none().then_some("/clinic/rows")]
                data-poll=[before.is_none().then_some(POLL_MS)]
                data-announce=(lang.t("処方箋の状態が変わりました", "A prescription's status changed")) {
                caption.visually-hidden { (lang.t("発行した処方箋（新しい順）", "Prescriptions issued, newest first")) }
                thead { tr {
                    th scope="col" { (lang.t("処方箋", "Prescription")) }
                    th scope="col" { (lang.t("患者", "Patient")) }
                    th scope="col" { (lang.t("交付日", "Issued on")) }
                    th scope="col" { (lang.t("状態", "Status")) }
                } }
                tbody { (prescription_rows_markup(lang, page)) }
            },
        }
        @if let Ok(page) = &page {
            (paging(lang, "/clinic", page, before))
        }
    };
    layout::page(
        Viewer::from(&member),
        lang.t("発行した処方箋", "Prescriptions issued"),
        body,
    )
    .into_response()
}

pub async fn prescription_rows(State(state): State<AppState>, member: Member) -> Response {
    if let Err(r) = member.require(CLINICS) {
        return r.into_response();
    }
    layout::fragment(issued_page(&state, &member, None).await, |page| {
        prescription_rows_markup(member.lang, page)
    })
}

pub async fn prescription(
    State(state): State<AppState>,
    member: Member,
    Path(id): Path<String>,
    Query(done): Query<Done>,
) -> Response {
    if let Err(r) = member.require(CLINICS) {
        return r.into_response();
    }
    render_prescription(&state, &member, &id, done_text(&member, &done), None).await
}

fn done_text(member: &Member, done: &Done) -> Option<&'static str> {
    match done.done() {
        Some("cancelled") => Some(member.lang.t("取り消しました。", "Cancelled.")),
        Some("acknowledged") => Some(member.lang.t("確認を記録しました。", "Acknowledged.")),
        _ => None,
    }
}

async fn render_prescription(
    state: &AppState,
    member: &Member,
    id: &str,
    done: Option<&str>,
    problem: Option<&CallError>,
) -> Response {
    let lang = member.lang;
    let title = lang.t("処方箋", "Prescription");
    let p = match state
        .upstream
        .get(
            &member.key,
            Api::ClinicGateway,
            &["clinic", "prescriptions", id],
            &[],
        )
        .await
    {
        Ok(p) => p,
        Err(e) => {
            let body = html! {
                (layout::problem(lang, &e))
                p { a href="/clinic" { (lang.t("一覧に戻る", "Back to the list")) } }
            };
            return (
                layout::status_of(&e),
                layout::page(Viewer::from(member), title, body),
            )
                .into_response();
        }
    };
    let status = text(&p, &["status"]);
    let empty = Vec::new();
    let lines = p["prescription"]
        .get("lines")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let body = html! {
        p { a href="/clinic" { (lang.t("← 一覧に戻る", "← Back to the list")) } }
        @if let Some(done) = done { (layout::done(done)) }
        @if let Some(problem) = problem { (layout::problem(lang, problem)) }
        dl.summary {
            dt { (lang.t("処方箋", "Prescription")) } dd { (id) }
            dt { (lang.t("状態", "Status")) }
            dd { span class={ "status status-" (status) } #status { (status_label(lang, status)) } }
            dt { (lang.t("患者", "Patient")) } dd { (text(&p, &["patient_ref"])) }
            dt { (lang.t("受付薬局", "Pharmacy")) } dd { (text(&p, &["claimed_by"])) }
        }
        ul.lines-short {
            @for l in lines {
                li { (match text(&l["drug"], &["display"]) { "" => text(&l["drug"], &["code"]), d => d }) " — " (text(l, &["timing_text"])) }
            }
        }
        @if matches!(status, "issued" | "claimed") {
            section aria-labelledby="cancel-heading" {
                h2 #cancel-heading { (lang.t("取り消す", "Cancel")) }
                form method="post" action={ "/clinic/rx/" (layout::segment(id)) "/cancel" } {
                    input type="hidden" name="csrf" value=(member.session.csrf);
                    div.field {
                        label for="reason" { (lang.t("取消の理由", "Why it is cancelled")) }
                        input #reason name="reason" required maxlength="1000";
                    }
                    div.field {
                        label for="clinician_id" { (lang.t("取り消す医師のID", "Cancelling clinician's ID")) }
                        input #clinician_id name="clinician_id" required maxlength="256" autocomplete="off";
                    }
                    button.danger type="submit" { (lang.t("処方箋を取り消す", "Cancel the prescription")) }
                }
            }
        }
    };
    layout::answered(problem, layout::page(Viewer::from(member), title, body))
}

#[derive(Debug, Deserialize)]
pub struct CancelForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    clinician_id: String,
}

pub async fn cancel(
    State(state): State<AppState>,
    member: Member,
    Path(id): Path<String>,
    Form(form): Form<CancelForm>,
) -> Response {
    if let Err(r) = member
        .require(CLINICS)
        .and_then(|()| member.check_csrf(form.csrf.as_deref()))
    {
        return r.into_response();
    }
    let request = json!({
        "reason": form.reason.trim(),
        "cancelled_by": { "id": form.clinician_id.trim(), "name": null, "department": null },
    });
    match state
        .upstream
        .post(
            &member.key,
            Api::ClinicGateway,
            &["clinic", "prescriptions", &id, "cancel"],
            &request,
        )
        .await
    {
        Ok(_) => Redirect::to(&format!(
            "/clinic/rx/{}?done=cancelled",
            layout::segment(&id)
        ))
        .into_response(),
        Err(e) => render_prescription(&state, &member, &id, None, Some(&e)).await,
    }
}

async fn results_page(
    state: &AppState,
    member: &Member,
    before: Option<&str>,
) -> Result<Value, CallError> {
    let mut query = vec![("limit", PAGE)];
    if let Some(before) = before {
        query.push(("before", before));
    }
    state
        .upstream
        .get(
            &member.key,
            Api::ClinicGateway,
            &["clinic", "results"],
            &query,
        )
        .await
}

fn report_row(lang: Lang, csrf: &str, r: &Value) -> Markup {
    let lab = text(r, &["performing_lab", "org_id"]);
    let report_id = text(r, &["report_id"]);
    let awaiting = r.get("awaiting_acknowledgement").and_then(Value::as_bool) == Some(true);
    let empty = Vec::new();
    let critical = r
        .get("critical")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let flagged = r.get("flagged").and_then(Value::as_u64).unwrap_or_default();
    html! {
        tr data-report=(text(r, &["report"])) class=[awaiting.then_some("awaiting")] {
            td.nowrap { (layout::short_time(text(r, &["reported_at"]))) }
            td { (text(r, &["patient_ref"])) }
            td { (match text(r, &["performing_lab", "name"]) { "" => lab, n => n }) }
            td {
                @if !critical.is_empty() {
                    ul.critical { @for c in critical {
                        li { strong { (lang.t("至急 ", "Critical: ")) }
                            (match text(&c["code"], &["display"]) { "" => text(&c["code"], &["code"]), d => d })
                            " " (c.get("value_numeric").and_then(Value::as_f64).map(|v| v.to_string()).unwrap_or_else(|| text(c, &["value_text"]).to_owned()))
                            " " (text(c, &["unit"]))
                            " — " (text(c, &["reason"]))
                        }
                    } }
                } @else if flagged > 0 {
                    (lang.t("基準値外 ", "Out of range: ")) (flagged)
                } @else {
                    (lang.t("異常なし", "Normal"))
                }
            }
            td {
                @if awaiting {
                    form.ack method="post" action={ "/clinic/results/" (layout::segment(lab)) "/" (layout::segment(report_id)) "/ack" } {
                        input type="hidden" name="csrf" value=(csrf);
                        input type="hidden" name="event_id" value=(text(r, &["event_id"]));
                        label for={ "by_" (report_id) } { (lang.t("確認した医師のID", "Clinician ID")) }
                        input id={ "by_" (report_id) } name="clinician_id" required maxlength="256" autocomplete="off";
                        button type="submit" { (lang.t("確認した", "Acknowledge")) }
                    }
                } @else if !critical.is_empty() {
                    span.acknowledged { (lang.t("確認済 ", "Acknowledged by ")) (text(r, &["acknowledged", "by", "id"])) }
                }
            }
        }
    }
}

fn result_rows_markup(lang: Lang, csrf: &str, page: &Value) -> Markup {
    let empty = Vec::new();
    let awaiting = page
        .get("awaiting_acknowledgement")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let reports = page
        .get("reports")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let awaiting_keys: Vec<&str> = awaiting.iter().map(|r| text(r, &["report"])).collect();
    html! {
        @if awaiting.is_empty() && reports.is_empty() {
            tr { td colspan="5" { (lang.t("検査結果はまだありません。", "No results yet.")) } }
        }
        // Unacknowledged critical results first, then the rest, newest first.
        @for r in awaiting { (report_row(lang, csrf, r)) }
        @for r in reports.iter().filter(|r| !awaiting_keys.contains(&text(r, &["report"]))) {
            (report_row(lang, csrf, r))
        }
    }
}

pub async fn results(
    State(state): State<AppState>,
    member: Member,
    Query(done): Query<Done>,
) -> Response {
    if let Err(r) = member.require(CLINICS) {
        return r.into_response();
    }
    render_results(
        &state,
        &member,
        done_text(&member, &done),
        done.before(),
        None,
    )
    .await
}

async fn render_results(
    state: &AppState,
    member: &Member,
    done: Option<&str>,
    before: Option<&str>,
    problem: Option<&CallError>,
) -> Response {
    let lang = member.lang;
    let page = results_page(state, member, before).await;
    let body = html! {
        @if let Some(done) = done { (layout::done(done)) }
        @if let Some(problem) = problem { (layout::problem(lang, problem)) }
        p.live-state { (lang.t("新しい結果は自動で表示されます。至急値の未確認分が先頭です。",
            "New results appear by themselves; unacknowledged critical results come first.")) }
        @match &page {
            Err(e) => (layout::problem(lang, e)),
            Ok(page) => table #results data-live=[before.is_none().then_some("/clinic/results/live")]
                data-rows=[before.is_none().then_some("/clinic/results/rows")]
                data-announce=(lang.t("新しい検査結果が届きました", "A new lab result arrived")) {
                caption.visually-hidden { (lang.t("検査結果", "Lab results")) }
                thead { tr {
                    th scope="col" { (lang.t("報告日時", "Reported")) }
                    th scope="col" { (lang.t("患者", "Patient")) }
                    th scope="col" { (lang.t("検査施設", "Laboratory")) }
                    th scope="col" { (lang.t("結果", "Result")) }
                    th scope="col" { (lang.t("確認", "Acknowledgement")) }
                } }
                tbody { (result_rows_markup(lang, &member.session.csrf, page)) }
            },
        }
        @if let Ok(page) = &page {
            (paging(lang, "/clinic/results", page, before))
        }
    };
    layout::answered(
        problem,
        layout::page(
            Viewer::from(member),
            lang.t("検査結果", "Lab results"),
            body,
        ),
    )
}

pub async fn result_rows(State(state): State<AppState>, member: Member) -> Response {
    if let Err(r) = member.require(CLINICS) {
        return r.into_response();
    }
    layout::fragment(results_page(&state, &member, None).await, |page| {
        result_rows_markup(member.lang, &member.session.csrf, page)
    })
}

pub async fn results_live(State(state): State<AppState>, member: Member) -> Response {
    if let Err(r) = member.require(CLINICS) {
        return r.into_response();
    }
    live::pass_through(
        &state,
        &member,
        Api::ClinicGateway,
        &["clinic", "results", "stream"],
        &[],
    )
    .await
}

#[derive(Debug, Deserialize)]
pub struct AckForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    event_id: String,
    #[serde(default)]
    clinician_id: String,
}

pub async fn acknowledge(
    State(state): State<AppState>,
    member: Member,
    Path((lab, report)): Path<(String, String)>,
    Form(form): Form<AckForm>,
) -> Response {
    if let Err(r) = member
        .require(CLINICS)
        .and_then(|()| member.check_csrf(form.csrf.as_deref()))
    {
        return r.into_response();
    }
    let request = json!({
        "event_id": form.event_id,
        "acknowledged_by": { "id": form.clinician_id.trim(), "name": null, "department": null },
    });
    match state
        .upstream
        .post(
            &member.key,
            Api::ClinicGateway,
            &["clinic", "results", &lab, &report, "acknowledge"],
            &request,
        )
        .await
    {
        Ok(_) => Redirect::to("/clinic/results?done=acknowledged").into_response(),
        Err(e) => render_results(&state, &member, None, None, Some(&e)).await,
    }
}
