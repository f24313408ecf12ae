//! The insurer console: returned claims first, then decisions with their reasons, the claims
//! arriving on the insurer's own feed (live), and its members' checkups. What it shows is what
//! the insurer's feed carries: the allow-listed claim fields, never clinical notes.

use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hixbus_access::Role;
use maud::{Markup, html};
use serde_json::Value;

use crate::AppState;
use crate::i18n::Lang;
use crate::layout::text;
use crate::layout::{self, Viewer};
use crate::live;
use crate::security::Member;
use crate::upstream::{Api, CallError};

const INSURERS: &[Role] = &[Role::Insurer];
/// Feed entries and decisions the page shows, newest first: 50, as the other consoles (each
/// entry shown is an audited read; a page of 100 took about twice as long).
const PAGE: &str = "50";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/insurer", get(page))
        .route("/insurer/rows", get(rows))
        .route("/insurer/live", get(feed_live))
}

fn yen(v: &Value) -> String {
    v.as_i64().map(|n| format!("{n} 円")).unwrap_or_default()
}

fn outcome_label(lang: Lang, outcome: &str) -> &'static str {
    match outcome {
        "accepted" => lang.t("支払決定", "Accepted"),
        "reduced" => lang.t("査定（減額）", "Reduced"),
        "returned" => lang.t("返戻", "Returned"),
        _ => lang.t("不明", "Unknown"),
    }
}

fn reasons(r: &Value) -> Markup {
    let empty = Vec::new();
    let list = r.get("reasons").and_then(Value::as_array).unwrap_or(&empty);
    html! {
        @if !list.is_empty() {
            ul.reasons { @for reason in list {
                li { (text(reason, &["reason"])) " (" (text(reason, &["code"])) ")" }
            } }
        }
    }
}

async fn feed(state: &AppState, member: &Member) -> Result<Value, CallError> {
    state
        .upstream
        .get(
            &member.key,
            Api::InsurerFeed,
            &["insurer", "feed"],
            &[("order", "newest"), ("limit", PAGE)],
        )
        .await
}

fn entries<'a>(feed: &'a Value, kind: &'a str) -> impl Iterator<Item = &'a Value> {
    feed.get("entries")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(move |e| e.get("kind").and_then(Value::as_str) == Some(kind))
}

fn claim_rows(lang: Lang, feed: &Value) -> Markup {
    let claims: Vec<&Value> = entries(feed, "claim").collect();
    html! {
        @if claims.is_empty() {
            tr { td colspan="7" { (lang.t("請求はまだありません。", "No claims yet.")) } }
        }
        @for e in claims {
            @let c = &e["claim"];
            @let id = text(c, &["claim_id"]);
            tr data-id=(id) data-status=(c["version"]) {
                td.nowrap { (layout::short_time(text(e, &["recorded_at"]))) }
                td { (id) @if c.get("version").and_then(Value::as_i64).unwrap_or(1) > 1 {
                    " " span.badge { (lang.t("再請求", "resubmitted")) " v" (c["version"]) }
                } }
                td { (match text(c, &["provider", "name"]) { "" => text(c, &["provider", "org_id"]), n => n }) }
                td.nowrap { (layout::event_date(&c["service_start"])) }
                td { (text(c, &["member_id"])) }
                td.nowrap { (yen(&c["total_amount_jpy"])) }
                td.nowrap { (yen(&c["insurer_share_jpy"])) }
            }
        }
    }
}

/// The newest cursor of a feed page: the live stream starts after it (from 0 it would send
/// the whole feed again at every page view).
fn newest_cursor(feed: &Value) -> i64 {
    feed.get("entries")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
        .and_then(|e| e.get("cursor"))
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

pub async fn page(State(state): State<AppState>, member: Member) -> Response {
    if let Err(r) = member.require(INSURERS) {
        return r.into_response();
    }
    let lang = member.lang;
    let (feed, decided) = tokio::join!(
        feed(&state, &member),
        state.upstream.get(
            &member.key,
            Api::Insurer,
            &["insurer", "decisions"],
            &[("limit", PAGE)],
        )
    );
    let empty = Vec::new();
    let body = html! {
        @match &decided {
            Err(e) => section aria-labelledby="decisions-heading" {
                h2 #decisions-heading { (lang.t("審査結果", "Decisions")) }
                (layout::problem(lang, e))
            },
            Ok(d) => {
                @let decisions = d.get("decisions").and_then(Value::as_array).unwrap_or(&empty);
                @let returned: Vec<&Value> = decisions.iter().filter(|d| text(d, &["outcome"]) == "returned").collect();
                section #returned aria-labelledby="returned-heading" {
                    h2 #returned-heading { (lang.t("返戻した請求", "Returned claims")) }
                    @if returned.is_empty() {
                        p { (lang.t("返戻した請求はありません。", "No claims were returned.")) }
                    } @else {
                        ul.returned { @for r in &returned {
                            li data-claim=(text(r, &["claim_id"])) {
                                strong { (text(r, &["claim_id"])) }
                                " — " (text(r, &["provider"]))
                                (reasons(r))
                            }
                        } }
                    }
                }
                section aria-labelledby="decisions-heading" {
                    h2 #decisions-heading { (lang.t("審査結果", "Decisions")) }
                    table #decisions {
                        caption.visually-hidden { (lang.t("審査結果（新しい順）", "Decisions, newest first")) }
                        thead { tr {
                            th scope="col" { (lang.t("請求", "Claim")) }
                            th scope="col" { (lang.t("医療機関・薬局", "Provider")) }
                            th scope="col" { (lang.t("結果", "Outcome")) }
                            th scope="col" { (lang.t("支払額", "Paid")) }
                            th scope="col" { (lang.t("理由", "Reasons")) }
                        } }
                        tbody {
                            @if decisions.is_empty() {
                                tr { td colspan="5" { (lang.t("審査結果はまだありません。", "No decisions yet.")) } }
                            }
                            @for d in decisions {
                                tr data-claim=(text(d, &["claim_id"])) data-outcome=(text(d, &["outcome"])) {
                                    td { (text(d, &["claim_id"])) " v" (d["version"]) }
                                    td { (text(d, &["provider"])) }
                                    td.nowrap { span class={ "outcome outcome-" (text(d, &["outcome"])) } { (outcome_label(lang, text(d, &["outcome"]))) } }
                                    td.nowrap { (yen(&d["paid_jpy"])) }
                                    td { (reasons(d)) }
                                }
                            }
                        }
                    }
                }
            },
        }
        section aria-labelledby="claims-heading" {
            h2 #claims-heading { (lang.t("届いた請求", "Claims received")) }
            p.live-state { (lang.t("新しい請求は自動で表示されます。", "New claims appear here by themselves.")) }
            @match &feed {
                Err(e) => (layout::problem(lang, e)),
                Ok(feed) => table #claims data-live={ "/insurer/live?after=" (newest_cursor(feed)) } data-rows="/insurer/rows"
                    data-announce=(lang.t("新しい請求が届きました", "A new claim arrived")) {
                    caption.visually-hidden { (lang.t("届いた請求（新しい順）", "Claims received, newest first")) }
                    thead { tr {
                        th scope="col" { (lang.t("受信", "Received")) }
                        th scope="col" { (lang.t("請求", "Claim")) }
                        th scope="col" { (lang.t("医療機関・薬局", "Provider")) }
                        th scope="col" { (lang.t("診療日", "Service date")) }
                        th scope="col" { (lang.t("被保険者", "Member")) }
                        th scope="col" { (lang.t("総額", "Total")) }
                        th scope="col" { (lang.t("保険者負担", "Insurer's share")) }
                    } }
                    tbody { (claim_rows(lang, feed)) }
                },
            }
        }
        section aria-labelledby="checkups-heading" {
            h2 #checkups-heading { (lang.t("加入者の健診", "Members' checkups")) }
            @if let Ok(feed) = &feed {
                @let checkups: Vec<&Value> = entries(feed, "checkup").collect();
                @if checkups.is_empty() {
                    p { (lang.t("健診結果はまだありません。", "No checkups yet.")) }
                } @else {
                    table #checkups {
                        thead { tr {
                            th scope="col" { (lang.t("実施日", "Performed on")) }
                            th scope="col" { (lang.t("実施機関", "Performed by")) }
                            th scope="col" { (lang.t("メタボリックシンドローム判定", "Metabolic syndrome")) }
                            th scope="col" { (lang.t("保健指導レベル", "Guidance level")) }
                            th scope="col" { (lang.t("項目数", "Items")) }
                        } }
                        tbody { @for e in checkups {
                            @let c = &e["checkup"];
                            tr data-id=(text(c, &["checkup_id"])) {
                                td.nowrap { (layout::event_date(&c["performed_on"])) }
                                td { (text(c, &["performed_by", "name"])) }
                                td { (text(c, &["metabolic_syndrome", "display"])) }
                                td { (text(c, &["guidance_level", "display"])) }
                                td { (c.get("items").and_then(Value::as_array).map_or(0, Vec::len)) }
                            }
                        } }
                    }
                }
            }
        }
    };
    layout::page(
        Viewer::from(&member),
        lang.t("請求と審査", "Claims and decisions"),
        body,
    )
    .into_response()
}

pub async fn rows(State(state): State<AppState>, member: Member) -> Response {
    if let Err(r) = member.require(INSURERS) {
        return r.into_response();
    }
    layout::fragment(feed(&state, &member).await, |feed| {
        claim_rows(member.lang, feed)
    })
}

#[derive(Debug, serde::Deserialize)]
pub struct LiveParams {
    #[serde(default)]
    after: i64,
}

pub async fn feed_live(
    State(state): State<AppState>,
    member: Member,
    Query(params): Query<LiveParams>,
) -> Response {
    if let Err(r) = member.require(INSURERS) {
        return r.into_response();
    }
    let after = params.after.max(0).to_string();
    live::pass_through(
        &state,
        &member,
        Api::InsurerFeed,
        &["insurer", "feed", "stream"],
        &[("after", &after)],
    )
    .await
}
