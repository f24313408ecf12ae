//! The pharmacy console: the live inbox, claiming by access code, a prescription with its
//! alerts, dispensing with generic substitution per line, and the claim with its decision.

use axum::Form;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use hixbus_access::Role;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::i18n::Lang;
use crate::layout::{self, Viewer, text};
use crate::live;
use crate::security::Member;
use crate::upstream::{Api, CallError};

/// Prescriptions a page of the inbox shows, newest first. The service audits each one shown,
/// so a page is what a screen holds, not more (docs/performance.md, "Consoles").
pub(crate) const PAGE: &str = "50";
/// Form fields one dispensing may send: a few per line, and a prescription has at most a few
/// dozen lines.
const MAX_FIELDS: usize = 400;
/// JP drug code systems a substitute may be coded in (as the pharmacy API accepts them).
const YJ: &str = "urn:oid:1.2.392.100495.20.1.73";
const HOT9: &str = "urn:oid:1.2.392.200119.4.403.1";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/pharmacy", get(inbox))
        .route("/pharmacy/rows", get(rows))
        .route("/pharmacy/live", get(inbox_live))
        .route("/pharmacy/claim", post(claim))
        .route("/pharmacy/rx/{id}", get(prescription))
        .route("/pharmacy/rx/{id}/dispense", post(dispense))
        .route("/pharmacy/rx/{id}/claim", get(claim_fragment))
        .route("/pharmacy/claims/live", get(claims_live))
}

pub(crate) fn status_label(lang: Lang, status: &str) -> &'static str {
    match status {
        "issued" => lang.t("未受付", "New"),
        "claimed" => lang.t("受付済", "Claimed"),
        "dispensing" => lang.t("調剤中", "Dispensing"),
        "dispensed" => lang.t("調剤済", "Dispensed"),
        "cancelled" => lang.t("取消", "Cancelled"),
        _ => lang.t("不明", "Unknown"),
    }
}

fn quantity(q: &Value) -> String {
    match (q.get("value").and_then(Value::as_f64), q.get("unit")) {
        (Some(v), Some(Value::String(u))) => format!("{v} {u}"),
        (Some(v), _) => v.to_string(),
        _ => String::new(),
    }
}

fn drug_name(d: &Value) -> &str {
    match text(d, &["display"]) {
        "" => text(d, &["code"]),
        name => name,
    }
}

fn inbox_rows(lang: Lang, page: &Value) -> Markup {
    let empty = Vec::new();
    let items = page
        .get("prescriptions")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    html! {
        @if items.is_empty() {
            tr { td colspan="5" { (lang.t("処方箋はまだありません。", "No prescriptions yet.")) } }
        }
        @for p in items {
            @let id = text(p, &["prescription_id"]);
            @let status = text(p, &["status"]);
            @let alerts = p.get("alerts").and_then(Value::as_array).map_or(0, Vec::len);
            tr data-id=(id) data-status=(status) {
                td { a href={ "/pharmacy/rx/" (id) } { (id) } }
                td { (match text(p, &["issuer", "name"]) { "" => text(p, &["issuer_org"]), n => n }) }
                td.nowrap { (text(p, &["issued_on"])) }
                td { span class={ "status status-" (status) } { (status_label(lang, status)) } }
                td {
                    @if alerts > 0 {
                        span.alert-count { (lang.t("警告 ", "Alerts: ")) (alerts) }
                    }
                }
            }
        }
    }
}

async fn inbox_page(
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
        .get(&member.key, Api::Pharmacy, &["pharmacy", "inbox"], &query)
        .await
}

/// Links to the older page and back to the newest, under a list paged newest first.
pub(crate) fn paging(lang: Lang, base: &str, page: &Value, before: Option<&str>) -> Markup {
    let next = page.get("next").and_then(Value::as_str);
    html! {
        nav.paging aria-label=(lang.t("ページ", "Pages")) {
            @if before.is_some() {
                a href=(base) { (lang.t("← 最新に戻る", "← Back to the newest")) }
            }
            @if let Some(next) = next {
                a href={ (base) "?before=" (layout::segment(next)) } {
                    (lang.t("さらに古いもの →", "Older →"))
                }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct Done {
    #[serde(default)]
    done: Option<String>,
    /// An older page: the `next` of the page before it.
    #[serde(default)]
    before: Option<String>,
}

impl Done {
    /// What the page that redirected here did (`?done=claimed`): a fixed word, never shown
    /// as it came, so a link cannot put its own words on the page.
    pub fn done(&self) -> Option<&str> {
        self.done.as_deref()
    }

    pub fn before(&self) -> Option<&str> {
        self.before.as_deref().filter(|b| !b.is_empty())
    }
}

pub async fn inbox(
    State(state): State<AppState>,
    member: Member,
    Query(done): Query<Done>,
) -> Response {
    if let Err(r) = member.require(&[Role::Pharmacy]) {
        return r.into_response();
    }
    let page = inbox_page(&state, &member, done.before()).await;
    render_inbox(&member, page, done.done(), done.before(), None).into_response()
}

fn render_inbox(
    member: &Member,
    page: Result<Value, CallError>,
    done: Option<&str>,
    before: Option<&str>,
    claim_problem: Option<&CallError>,
) -> Markup {
    let lang = member.lang;
    let body = html! {
        @if done == Some("claimed") {
            (layout::done(lang.t("受け付けました。", "Claimed.")))
        }
        section aria-labelledby="claim-heading" {
            h2 #claim-heading { (lang.t("引換番号で受け付ける", "Claim with an access code")) }
            @if let Some(problem) = claim_problem {
                (layout::problem(lang, problem))
            }
            form.inline method="post" action="/pharmacy/claim" {
                input type="hidden" name="csrf" value=(member.session.csrf);
                label for="access_code" { (lang.t("患者さんの引換番号", "The patient's access code")) }
                input #access_code name="access_code" required maxlength="64" autocomplete="off"
                    inputmode="latin";
                button type="submit" { (lang.t("受け付ける", "Claim")) }
            }
        }
        section aria-labelledby="inbox-heading" {
            h2 #inbox-heading { (lang.t("届いた処方箋", "Prescriptions received")) }
            p.live-state data-live-state {
                (lang.t("新しい処方箋は自動で表示されます。", "New prescriptions appear here by themselves."))
            }
            @match &page {
                Err(e) => (layout::problem(lang, e)),
                // Only the newest page is live; an older one stays as it was read.
                Ok(page) => table #inbox data-live=[before.is_none().then_some("/pharmacy/live")]
                    data-rows=[before.is_none().then_some("/pharmacy/rows")]
                    data-announce=(lang.t("新しい処方箋が届きました", "A new prescription arrived")) {
                    caption.visually-hidden { (lang.t("届いた処方箋（新しい順）", "Prescriptions received, newest first")) }
                    thead { tr {
                        th scope="col" { (lang.t("処方箋", "Prescription")) }
                        th scope="col" { (lang.t("発行元", "Issued by")) }
                        th scope="col" { (lang.t("交付日", "Issued on")) }
                        th scope="col" { (lang.t("状態", "Status")) }
                        th scope="col" { (lang.t("警告", "Alerts")) }
                    } }
                    tbody { (inbox_rows(lang, page)) }
                },
            }
            @if let Ok(page) = &page {
                (paging(lang, "/pharmacy", page, before))
            }
        }
    };
    layout::page(Viewer::from(member), lang.t("受付", "Inbox"), body)
}

/// The inbox's rows alone, for the live script to swap in.
pub async fn rows(State(state): State<AppState>, member: Member) -> Response {
    if let Err(r) = member.require(&[Role::Pharmacy]) {
        return r.into_response();
    }
    layout::fragment(inbox_page(&state, &member, None).await, |page| {
        inbox_rows(member.lang, page)
    })
}

pub async fn inbox_live(State(state): State<AppState>, member: Member) -> Response {
    if let Err(r) = member.require(&[Role::Pharmacy]) {
        return r.into_response();
    }
    live::pass_through(
        &state,
        &member,
        Api::Pharmacy,
        &["pharmacy", "inbox", "stream"],
        &[],
    )
    .await
}

pub async fn claims_live(State(state): State<AppState>, member: Member) -> Response {
    if let Err(r) = member.require(&[Role::Pharmacy]) {
        return r.into_response();
    }
    live::pass_through(&state, &member, Api::Claims, &["claims", "stream"], &[]).await
}

#[derive(Debug, Deserialize)]
pub struct ClaimForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    access_code: String,
}

pub async fn claim(
    State(state): State<AppState>,
    member: Member,
    Form(form): Form<ClaimForm>,
) -> Response {
    if let Err(r) = member
        .require(&[Role::Pharmacy])
        .and_then(|()| member.check_csrf(form.csrf.as_deref()))
    {
        return r.into_response();
    }
    let answer = state
        .upstream
        .post(
            &member.key,
            Api::Pharmacy,
            &["pharmacy", "claims"],
            &json!({ "access_code": form.access_code.trim() }),
        )
        .await;
    match answer {
        Ok(claimed) => {
            let first = claimed
                .get("claimed")
                .and_then(Value::as_array)
                .and_then(|c| c.first())
                .and_then(Value::as_str);
            match first {
                Some(id) => Redirect::to(&format!(
                    "/pharmacy/rx/{}?done=claimed",
                    layout::segment(id)
                ))
                .into_response(),
                None => Redirect::to("/pharmacy?done=claimed").into_response(),
            }
        }
        Err(e) => {
            let status = layout::status_of(&e);
            let page = inbox_page(&state, &member, None).await;
            (status, render_inbox(&member, page, None, None, Some(&e))).into_response()
        }
    }
}

fn alerts_section(lang: Lang, p: &Value) -> Markup {
    let empty = Vec::new();
    let alerts = p.get("alerts").and_then(Value::as_array).unwrap_or(&empty);
    html! {
        section aria-labelledby="alerts-heading" {
            h2 #alerts-heading { (lang.t("安全性の警告", "Safety alerts")) }
            @if alerts.is_empty() {
                p { (lang.t("警告はありません。", "No alerts.")) }
            }
            ul.alerts {
                @for a in alerts {
                    li class={ "alert severity-" (text(a, &["severity"]).to_lowercase()) } {
                        strong { (text(a, &["severity"])) " · " (text(a, &["kind"])) }
                        p { (text(a, &["message"])) }
                        @if let Some(lines) = a.get("involved").and_then(Value::as_array) {
                            ul { @for l in lines {
                                li { (drug_name(&l["drug"])) " — " (text(l, &["issuer_org"])) }
                            } }
                        }
                        @if let Some(w) = a.get("withheld") {
                            p.withheld { (text(w, &["reason"])) }
                        }
                    }
                }
            }
        }
    }
}

fn lines_table(lang: Lang, p: &Value) -> Markup {
    let empty = Vec::new();
    let lines = p.get("lines").and_then(Value::as_array).unwrap_or(&empty);
    html! {
        table.lines {
            caption { (lang.t("処方内容", "What was prescribed")) }
            thead { tr {
                th scope="col" { "Rp" }
                th scope="col" { (lang.t("薬剤", "Drug")) }
                th scope="col" { (lang.t("用法", "Directions")) }
                th scope="col" { (lang.t("日数", "Days")) }
                th scope="col" { (lang.t("数量", "Quantity")) }
                th scope="col" { (lang.t("後発品への変更", "Generic substitution")) }
            } }
            tbody {
                @for l in lines {
                    tr {
                        td { (l.get("rp_group").and_then(Value::as_i64).map(|g| g.to_string()).unwrap_or_default()) }
                        td { (drug_name(&l["drug"])) br; small { (text(l, &["drug", "code"])) } }
                        td { (text(l, &["timing_text"])) }
                        td { (l.get("days_supply").and_then(Value::as_i64).map(|d| d.to_string()).unwrap_or_default()) }
                        td { (quantity(&l["quantity"])) }
                        td { @if l.get("generic_substitution_allowed").and_then(Value::as_bool) == Some(true) {
                            (lang.t("可", "Allowed"))
                        } @else { (lang.t("変更不可", "Not allowed")) } }
                    }
                }
            }
        }
    }
}

fn dispense_form(lang: Lang, csrf: &str, p: &Value) -> Markup {
    let id = text(p, &["prescription_id"]);
    let empty = Vec::new();
    let lines = p.get("lines").and_then(Value::as_array).unwrap_or(&empty);
    html! {
        section aria-labelledby="dispense-heading" {
            h2 #dispense-heading { (lang.t("調剤する", "Dispense")) }
            form.dispense method="post" action={ "/pharmacy/rx/" (id) "/dispense" } {
                input type="hidden" name="csrf" value=(csrf);
                div.field {
                    label for="pharmacist_id" { (lang.t("薬剤師ID", "Pharmacist ID")) }
                    input #pharmacist_id name="pharmacist_id" required maxlength="256" autocomplete="off";
                }
                div.field {
                    label for="pharmacist_name" { (lang.t("薬剤師名", "Pharmacist name")) }
                    input #pharmacist_name name="pharmacist_name" maxlength="256";
                }
                @for l in lines {
                    @let n = l.get("line_no").and_then(Value::as_i64).unwrap_or_default();
                    @let allowed = l.get("generic_substitution_allowed").and_then(Value::as_bool) == Some(true);
                    fieldset.line {
                        legend { (lang.t("明細 ", "Line ")) (n) ": " (drug_name(&l["drug"])) }
                        div.field.check {
                            input id={ "give_" (n) } type="checkbox" name={ "give_" (n) } value="1" checked;
                            label for={ "give_" (n) } { (lang.t("この明細を調剤する", "Dispense this line")) }
                        }
                        div.field {
                            label for={ "qty_" (n) } {
                                (lang.t("数量", "Quantity")) " (" (text(l, &["quantity", "unit"])) ")"
                            }
                            input id={ "qty_" (n) } name={ "qty_" (n) } type="number" step="any" min="0"
                                value=(l.get("quantity").and_then(|q| q.get("value")).and_then(Value::as_f64).unwrap_or_default());
                        }
                        @if allowed {
                            div.field {
                                label for={ "sub_system_" (n) } { (lang.t("変更後の薬剤のコード体系", "Substitute's code system")) }
                                select id={ "sub_system_" (n) } name={ "sub_system_" (n) } {
                                    option value=(YJ) { (lang.t("YJコード", "YJ code")) }
                                    option value=(HOT9) { (lang.t("HOT9コード", "HOT9 code")) }
                                }
                            }
                            div.field {
                                label for={ "sub_code_" (n) } { (lang.t("変更後の薬剤コード（後発品に変更する場合）", "Substitute's code (when substituting a generic)")) }
                                input id={ "sub_code_" (n) } name={ "sub_code_" (n) } maxlength="64" autocomplete="off";
                            }
                            div.field {
                                label for={ "sub_name_" (n) } { (lang.t("変更後の薬剤名", "Substitute's name")) }
                                input id={ "sub_name_" (n) } name={ "sub_name_" (n) } maxlength="256";
                            }
                        } @else {
                            p.hint { (lang.t("処方医が変更不可としています。", "The prescriber did not allow substitution.")) }
                        }
                        div.field {
                            label for={ "reason_" (n) } { (lang.t("処方と異なる理由（ある場合）", "Why it differs from the prescription (if it does)")) }
                            input id={ "reason_" (n) } name={ "reason_" (n) } maxlength="1000";
                        }
                    }
                }
                button type="submit" { (lang.t("調剤を記録する", "Record the dispensing")) }
            }
        }
    }
}

fn dispensed_section(lang: Lang, p: &Value) -> Markup {
    let d = &p["dispensed"];
    let empty = Vec::new();
    let lines = d.get("lines").and_then(Value::as_array).unwrap_or(&empty);
    html! {
        section aria-labelledby="dispensed-heading" {
            h2 #dispensed-heading { (lang.t("調剤した内容", "What was dispensed")) }
            ul.dispensed {
                @for l in lines {
                    li {
                        (lang.t("明細 ", "Line ")) (l.get("prescription_line_no").and_then(Value::as_i64).unwrap_or_default()) ": "
                        (drug_name(&l["drug"])) " — " (quantity(&l["quantity"]))
                        @if l.get("substituted").and_then(Value::as_bool) == Some(true) {
                            " " span.badge { (lang.t("後発品に変更", "generic substituted")) }
                        }
                    }
                }
            }
        }
    }
}

pub async fn prescription(
    State(state): State<AppState>,
    member: Member,
    Path(id): Path<String>,
    Query(done): Query<Done>,
) -> Response {
    if let Err(r) = member.require(&[Role::Pharmacy]) {
        return r.into_response();
    }
    render_prescription(&state, &member, &id, done.done(), None).await
}

async fn render_prescription(
    state: &AppState,
    member: &Member,
    id: &str,
    done: Option<&str>,
    problem: Option<&CallError>,
) -> Response {
    let lang = member.lang;
    let answer = state
        .upstream
        .get(
            &member.key,
            Api::Pharmacy,
            &["pharmacy", "prescriptions", id],
            &[],
        )
        .await;
    let p = match answer {
        Ok(p) => p,
        Err(e) => {
            let body = html! {
                (layout::problem(lang, &e))
                p { a href="/pharmacy" { (lang.t("受付に戻る", "Back to the inbox")) } }
            };
            return (
                layout::status_of(&e),
                layout::page(Viewer::from(member), lang.t("処方箋", "Prescription"), body),
            )
                .into_response();
        }
    };
    let status = text(&p, &["status"]);
    let claim = if status == "dispensed" {
        Some(claim_markup(state, member, id).await)
    } else {
        None
    };
    let body = html! {
        p { a href="/pharmacy" { (lang.t("← 受付に戻る", "← Back to the inbox")) } }
        @match done {
            Some("claimed") => (layout::done(lang.t("受け付けました。", "Claimed."))),
            Some("dispensed") => (layout::done(lang.t("調剤を記録しました。", "The dispensing is recorded."))),
            _ => {},
        }
        @if let Some(problem) = problem {
            (layout::problem(lang, problem))
        }
        dl.summary {
            dt { (lang.t("処方箋", "Prescription")) } dd { (id) }
            dt { (lang.t("状態", "Status")) }
            dd { span class={ "status status-" (status) } #status { (status_label(lang, status)) } }
            dt { (lang.t("発行元", "Issued by")) } dd { (text(&p, &["issuer", "name"])) }
            dt { (lang.t("処方医", "Prescriber")) } dd { (text(&p, &["prescriber", "name"])) }
            dt { (lang.t("交付日", "Issued on")) } dd { (text(&p, &["issued_on"])) }
            dt { (lang.t("使用期限", "Valid until")) } dd { (text(&p, &["expires_on"])) }
            dt { (lang.t("患者", "Patient")) } dd { (text(&p, &["patient_ref"])) }
        }
        (alerts_section(lang, &p))
        (lines_table(lang, &p))
        @if matches!(status, "issued" | "claimed") {
            (dispense_form(lang, &member.session.csrf, &p))
        }
        @if status == "dispensed" {
            (dispensed_section(lang, &p))
            section aria-labelledby="claim-heading" {
                h2 #claim-heading { (lang.t("調剤報酬の請求と審査結果", "The claim and the insurer's decision")) }
                div #claim data-live="/pharmacy/claims/live" data-rows={ "/pharmacy/rx/" (id) "/claim" }
                    data-announce=(lang.t("請求の状態が変わりました", "The claim changed")) {
                    @if let Some(claim) = claim { (claim) }
                }
            }
        }
    };
    layout::answered(
        problem,
        layout::page(Viewer::from(member), lang.t("処方箋", "Prescription"), body),
    )
}

fn outcome_label(lang: Lang, status: &str) -> &'static str {
    match status {
        "accepted" => lang.t("支払決定", "Accepted"),
        "reduced" => lang.t("査定（減額）", "Reduced"),
        "returned" => lang.t("返戻", "Returned"),
        "awaiting decision" => lang.t("審査待ち", "Awaiting decision"),
        _ => lang.t("処理中", "In progress"),
    }
}

/// The claim a dispensing produced, and the insurer's decision on it.
async fn claim_markup(state: &AppState, member: &Member, id: &str) -> Markup {
    let lang = member.lang;
    let claim_id = format!("dispensing:{id}");
    let answer = state
        .upstream
        .get(&member.key, Api::Claims, &["claims", &claim_id], &[])
        .await;
    match answer {
        Err(CallError::Refused { status, .. }) if status == StatusCode::NOT_FOUND => html! {
            p { (lang.t("請求を作成しています…", "The claim is being prepared…")) }
        },
        Err(e) => layout::problem(lang, &e),
        Ok(claim) => {
            let latest = claim
                .get("versions")
                .and_then(Value::as_array)
                .and_then(|v| v.last())
                .cloned()
                .unwrap_or(Value::Null);
            let status = text(&latest, &["status"]);
            let amount = |k: &str| {
                latest["claim"]
                    .get(k)
                    .and_then(Value::as_i64)
                    .map(|v| format!("{v} 円"))
                    .unwrap_or_default()
            };
            let empty = Vec::new();
            let reasons = latest["decision"]
                .get("reasons")
                .and_then(Value::as_array)
                .unwrap_or(&empty);
            html! {
                dl.summary {
                    dt { (lang.t("請求", "Claim")) } dd { (claim_id) }
                    dt { (lang.t("審査結果", "Decision")) }
                    dd { span class={ "outcome outcome-" (status.replace(' ', "-")) } data-outcome=(status) { (outcome_label(lang, status)) } }
                    dt { (lang.t("保険者", "Insurer")) } dd { (text(&latest, &["insurer"])) }
                    dt { (lang.t("総額", "Total")) } dd { (amount("total_jpy")) }
                    dt { (lang.t("患者負担", "Patient's share")) } dd { (amount("patient_jpy")) }
                    dt { (lang.t("保険者負担", "Insurer's share")) } dd { (amount("insurer_jpy")) }
                }
                @if !reasons.is_empty() {
                    h3 { (lang.t("理由", "Reasons")) }
                    ul.reasons { @for r in reasons {
                        li { (text(r, &["reason"])) " (" (text(r, &["code"])) ")" }
                    } }
                }
            }
        }
    }
}

pub async fn claim_fragment(
    State(state): State<AppState>,
    member: Member,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = member.require(&[Role::Pharmacy]) {
        return r.into_response();
    }
    claim_markup(&state, &member, &id).await.into_response()
}

pub async fn dispense(
    State(state): State<AppState>,
    member: Member,
    Path(id): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
    };
    if let Err(r) = member
        .require(&[Role::Pharmacy])
        .and_then(|()| member.check_csrf(field("csrf")))
    {
        return r.into_response();
    }
    let lang = member.lang;
    if fields.len() > MAX_FIELDS {
        return layout::refusal(
            lang,
            StatusCode::PAYLOAD_TOO_LARGE,
            lang.t("入力項目が多すぎます。", "This form has too many fields."),
        );
    }
    let prescribed = match state
        .upstream
        .get(
            &member.key,
            Api::Pharmacy,
            &["pharmacy", "prescriptions", &id],
            &[],
        )
        .await
    {
        Ok(p) => p,
        Err(e) => return render_prescription(&state, &member, &id, None, Some(&e)).await,
    };
    let request = match dispense_request(&prescribed, &field) {
        Ok(request) => request,
        Err(why) => {
            let e = CallError::Refused {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                error: "invalid".to_owned(),
                reason: why,
            };
            return render_prescription(&state, &member, &id, None, Some(&e)).await;
        }
    };
    match state
        .upstream
        .post(
            &member.key,
            Api::Pharmacy,
            &["pharmacy", "prescriptions", &id, "dispense"],
            &request,
        )
        .await
    {
        Ok(_) => Redirect::to(&format!(
            "/pharmacy/rx/{}?done=dispensed",
            layout::segment(&id)
        ))
        .into_response(),
        Err(e) => render_prescription(&state, &member, &id, None, Some(&e)).await,
    }
}

/// The pharmacy API's dispensing request from the form: the lines ticked, each with its
/// quantity in the prescribed unit and the substitute when one was entered. The API checks
/// everything again (quantities, substitution allowed, code systems); this only translates.
fn dispense_request<'a>(
    prescribed: &Value,
    field: &impl Fn(&str) -> Option<&'a str>,
) -> Result<Value, String> {
    let empty = Vec::new();
    let lines = prescribed
        .get("lines")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let mut out = Vec::new();
    for l in lines {
        let Some(n) = l.get("line_no").and_then(Value::as_i64) else {
            continue;
        };
        if field(&format!("give_{n}")).is_none() {
            continue;
        }
        let mut line = json!({ "line_no": n });
        if let Some(qty) = field(&format!("qty_{n}")).filter(|q| !q.is_empty()) {
            let value: f64 = qty
                .parse()
                .map_err(|_| format!("line {n}: the quantity {qty:?} is not a number"))?;
            line["quantity"] = json!({
                "value": value,
                "unit": l["quantity"]["unit"],
                "unit_system": l["quantity"]["unit_system"],
                "unit_code": l["quantity"]["unit_code"],
            });
        }
        if let Some(code) = field(&format!("sub_code_{n}")).filter(|c| !c.is_empty()) {
            let system = field(&format!("sub_system_{n}")).unwrap_or(YJ);
            let name = field(&format!("sub_name_{n}")).filter(|s| !s.is_empty());
            line["substitute"] = json!({ "system": system, "code": code, "display": name });
        }
        if let Some(reason) = field(&format!("reason_{n}")).filter(|r| !r.is_empty()) {
            line["reason"] = json!(reason);
        }
        out.push(line);
    }
    if out.is_empty() {
        return Err("tick at least one line to dispense".to_owned());
    }
    let pharmacist_id = field("pharmacist_id").unwrap_or_default();
    if pharmacist_id.is_empty() {
        return Err("the pharmacist's ID is required".to_owned());
    }
    Ok(json!({
        "pharmacist": {
            "id": pharmacist_id,
            "name": field("pharmacist_name").filter(|s| !s.is_empty()),
            "department": null,
        },
        "lines": out,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prescribed() -> Value {
        json!({ "lines": [
            { "line_no": 1, "quantity": { "value": 14.0, "unit": "錠", "unit_system": null, "unit_code": null },
              "generic_substitution_allowed": true, "drug": { "code": "A" } },
            { "line_no": 2, "quantity": { "value": 7.0, "unit": "包", "unit_system": null, "unit_code": null },
              "generic_substitution_allowed": false, "drug": { "code": "B" } },
        ] })
    }

    #[test]
    fn the_form_becomes_the_apis_request_with_the_substitute_and_the_unticked_line_left_out() {
        let fields = [
            ("pharmacist_id", "ph-1"),
            ("give_1", "1"),
            ("qty_1", "14"),
            ("sub_system_1", YJ),
            ("sub_code_1", "2149039F1020"),
            ("sub_name_1", "後発品"),
            ("qty_2", "7"),
        ];
        let field = |name: &str| fields.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        let request = dispense_request(&prescribed(), &field).unwrap();
        assert_eq!(request["pharmacist"]["id"], "ph-1");
        let lines = request["lines"].as_array().unwrap();
        assert_eq!(lines.len(), 1, "line 2 was not ticked");
        assert_eq!(lines[0]["line_no"], 1);
        assert_eq!(lines[0]["quantity"]["unit"], "錠");
        assert_eq!(lines[0]["substitute"]["code"], "2149039F1020");
        assert_eq!(lines[0]["substitute"]["system"], YJ);
    }

    #[test]
    fn a_full_page_links_to_the_older_one_and_an_older_page_back_to_the_newest() {
        let full = json!({ "next": "rx-01a2/x y" });
        let first = paging(Lang::Ja, "/pharmacy", &full, None).into_string();
        assert!(
            first.contains(r#"href="/pharmacy?before=rx-01a2%2Fx+y""#),
            "{first}"
        );
        assert!(!first.contains("最新に戻る"));
        let last = json!({ "next": null });
        let older = paging(Lang::En, "/pharmacy", &last, Some("rx-9")).into_string();
        assert!(older.contains(r#"href="/pharmacy""#) && older.contains("Back to the newest"));
        assert!(!older.contains("Older"), "{older}");
    }

    #[test]
    fn a_form_without_a_pharmacist_a_line_or_a_number_is_refused_with_why() {
        let none = |_: &str| None::<&str>;
        assert!(
            dispense_request(&prescribed(), &none)
                .unwrap_err()
                .contains("at least one line")
        );
        let fields = [("give_1", "1"), ("qty_1", "lots")];
        let field = |name: &str| fields.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        assert!(
            dispense_request(&prescribed(), &field)
                .unwrap_err()
                .contains("not a number")
        );
        let fields = [("give_1", "1")];
        let field = |name: &str| fields.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        assert!(
            dispense_request(&prescribed(), &field)
                .unwrap_err()
                .contains("pharmacist")
        );
    }
}
