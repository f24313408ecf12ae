//! The operator console: is the exchange healthy (services, topics and their throughput,
//! consumer groups and their lag, refreshed every few seconds), what could it not process (dead
//! letters with their cause), putting a letter back once the cause is fixed, and the registry's
//! subjects. Everything comes from the operator service (`hixbus serve ops`), which audits each
//! dead letter the operator lists or opens: they carry patients' events.

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use hixbus_access::Role;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use crate::AppState;
use crate::i18n::Lang;
use crate::layout::{self, Viewer, text};
use crate::security::Member;
use crate::upstream::{Api, CallError};

const OPERATORS: &[Role] = &[Role::Operator];
/// The overview refreshes itself this often (the service looks at the cluster every few
/// seconds; reading its snapshot costs the cluster nothing).
const POLL_MS: &str = "5000";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/operator", get(overview))
        .route("/operator/rows", get(overview_rows))
        .route("/operator/dead-letters", get(letters))
        .route(
            "/operator/dead-letters/{topic}/{partition}/{offset}",
            get(letter),
        )
        .route(
            "/operator/dead-letters/{topic}/{partition}/{offset}/redrive",
            post(redrive),
        )
        .route("/operator/registry", get(registry))
}

async fn snapshot(state: &AppState, member: &Member) -> Result<Value, CallError> {
    state
        .upstream
        .get(&member.key, Api::Ops, &["ops", "overview"], &[])
        .await
}

fn list(v: &Value, key: &str) -> Vec<Value> {
    v.get(key)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn number(v: &Value, key: &str) -> i64 {
    v.get(key).and_then(Value::as_i64).unwrap_or(0)
}

fn overview_body(lang: Lang, s: &Value) -> Markup {
    let services = list(s, "services");
    let topics = list(s, "topics");
    let groups = list(s, "groups");
    let problems = list(s, "problems");
    html! {
        p.hint { (lang.t("最終確認 ", "Last looked ")) (layout::short_time(text(s, &["taken_at"]))) }
        @for p in &problems {
            p.problem role="alert" { (p.as_str().unwrap_or_default()) }
        }
        section aria-labelledby="health-heading" {
            h2 #health-heading { (lang.t("サービスの状態", "Services")) }
            @if services.is_empty() {
                p { (lang.t("確認するサービスが設定されていません。", "No services are configured to be checked.")) }
            } @else {
                table #services {
                    caption.visually-hidden { (lang.t("各サービスの準備状態", "Each service's readiness")) }
                    thead { tr {
                        th scope="col" { (lang.t("サービス", "Service")) }
                        th scope="col" { (lang.t("状態", "State")) }
                        th scope="col" { (lang.t("応答", "Answer")) }
                    } }
                    tbody { @for h in &services {
                        @let ready = h.get("ready").and_then(Value::as_bool) == Some(true);
                        tr data-id=(text(h, &["name"])) data-status=(ready) {
                            th scope="row" { (text(h, &["name"])) }
                            td { @if ready { span.badge.ok { (lang.t("稼働中", "Ready")) } }
                                 @else { span.badge.critical { (lang.t("応答なし・異常", "Not ready")) } } }
                            td { (text(h, &["detail"])) }
                        }
                    } }
                }
            }
        }
        section aria-labelledby="topics-heading" {
            h2 #topics-heading { (lang.t("トピック", "Topics")) }
            table #topics {
                caption.visually-hidden { (lang.t("トピックごとの件数と流量", "Records and throughput per topic")) }
                thead { tr {
                    th scope="col" { (lang.t("トピック", "Topic")) }
                    th scope="col" { (lang.t("パーティション", "Partitions")) }
                    th scope="col" { (lang.t("保持件数", "Records kept")) }
                    th scope="col" { (lang.t("件/分", "Per minute")) }
                    th scope="col" { (lang.t("デッドレター", "Dead letters")) }
                } }
                tbody { @for t in &topics {
                    @let name = text(t, &["topic"]);
                    @let dead = number(t, "dead_letters");
                    tr data-id=(name) {
                        th scope="row" { (name) }
                        td.num { (number(t, "partitions")) }
                        td.num { (number(t, "records")) }
                        td.num { @match t.get("per_minute").and_then(Value::as_f64) {
                            Some(rate) => (format!("{rate:.1}")),
                            None => "—",
                        } }
                        td.num { @if dead > 0 {
                            a.badge.critical href={ "/operator/dead-letters?topic=" (layout::segment(name)) } { (dead) }
                        } @else { "0" } }
                    }
                } }
            }
        }
        section aria-labelledby="groups-heading" {
            h2 #groups-heading { (lang.t("コンシューマーグループの遅れ", "Consumer group lag")) }
            @if groups.is_empty() {
                p { (lang.t("オフセットを記録したグループはまだありません。", "No group has committed offsets yet.")) }
            } @else {
                table #groups {
                    caption.visually-hidden { (lang.t("グループごとの未処理件数", "Records each group has yet to process")) }
                    thead { tr {
                        th scope="col" { (lang.t("グループ", "Group")) }
                        th scope="col" { (lang.t("遅れ（件）", "Lag (records)")) }
                        th scope="col" { (lang.t("トピック別", "Per topic")) }
                    } }
                    tbody { @for g in &groups {
                        @let lag = number(g, "lag");
                        tr data-id=(text(g, &["group"])) {
                            th scope="row" { (text(g, &["group"])) }
                            td.num { @if lag > 0 { strong { (lag) } } @else { "0" } }
                            td { @for t in list(g, "topics") {
                                span.tag { (text(&t, &["topic"])) " " (number(&t, "lag")) } " "
                            } }
                        }
                    } }
                }
            }
        }
    }
}

pub async fn overview(State(state): State<AppState>, member: Member) -> Response {
    if let Err(r) = member.require(OPERATORS) {
        return r.into_response();
    }
    let lang = member.lang;
    let answer = snapshot(&state, &member).await;
    let body = html! {
        @match &answer {
            Ok(s) => div #overview data-rows="/operator/rows" data-poll=(POLL_MS) { (overview_body(lang, s)) },
            Err(e) => (layout::problem(lang, e)),
        }
    };
    layout::answered(
        answer.as_ref().err(),
        layout::page(
            Viewer::from(&member),
            lang.t("交換基盤の稼働状況", "The exchange at work"),
            body,
        ),
    )
}

pub async fn overview_rows(State(state): State<AppState>, member: Member) -> Response {
    if let Err(r) = member.require(OPERATORS) {
        return r.into_response();
    }
    let lang = member.lang;
    layout::fragment(snapshot(&state, &member).await, |s| overview_body(lang, s))
}

fn cause_label(lang: Lang, kind: &str) -> &'static str {
    match kind {
        "undecodable" => lang.t("復号できない", "Undecodable"),
        "unknown_schema" => lang.t("未知のスキーマ", "Unknown schema"),
        "rejected" => lang.t("処理を拒否", "Rejected"),
        "retries_exhausted" => lang.t("再試行の上限", "Retries exhausted"),
        "dependency_missing" => lang.t("前提のイベントがない", "Earlier event missing"),
        _ => lang.t("不明", "Unknown"),
    }
}

fn redrive_state(lang: Lang, letter: &Value) -> Markup {
    let r = &letter["redrive"];
    html! {
        @if r.is_null() {
            span.badge.critical { (lang.t("未処理", "Waiting")) }
        } @else if r["redriven_to"].is_null() {
            span.badge { (lang.t("再投入中", "Being redriven")) }
        } @else {
            span.badge.ok { (lang.t("再投入済 → ", "Redriven → ")) (text(r, &["redriven_to"])) }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct LettersQuery {
    #[serde(default)]
    topic: Option<String>,
}

pub async fn letters(
    State(state): State<AppState>,
    member: Member,
    Query(q): Query<LettersQuery>,
) -> Response {
    if let Err(r) = member.require(OPERATORS) {
        return r.into_response();
    }
    let lang = member.lang;
    let title = lang.t("デッドレター", "Dead letters");
    let Some(topic) = q.topic.filter(|t| !t.is_empty()) else {
        // Which topics have any: from the overview, which reads no letter (and audits none).
        let answer = snapshot(&state, &member).await;
        let body = html! {
            p { (lang.t("処理できなかったレコードは、原因とともに各トピックの .dlq に残ります。原因を直してから再投入します。",
                "Records that could not be processed stay on each topic's .dlq with their cause. Fix the cause, then redrive them.")) }
            @match &answer {
                Err(e) => (layout::problem(lang, e)),
                Ok(s) => ul.topics { @for t in list(s, "topics") {
                    @let name = text(&t, &["topic"]).to_owned();
                    li { a href={ "/operator/dead-letters?topic=" (layout::segment(&name)) } { (name) }
                         " — " (number(&t, "dead_letters")) (lang.t(" 件", "")) }
                } },
            }
        };
        return layout::page(Viewer::from(&member), title, body).into_response();
    };
    let answer = state
        .upstream
        .get(
            &member.key,
            Api::Ops,
            &["ops", "dead-letters"],
            &[("topic", topic.as_str())],
        )
        .await;
    let body = html! {
        p { a href="/operator/dead-letters" { (lang.t("トピックの一覧へ", "All topics")) } }
        @match &answer {
            Err(e) => (layout::problem(lang, e)),
            Ok(page) => {
                @let letters = list(page, "dead_letters");
                @if letters.is_empty() {
                    p { (lang.t("このトピックにデッドレターはありません。", "This topic has no dead letters.")) }
                } @else {
                    table #letters {
                        caption { (topic) ".dlq" }
                        thead { tr {
                            th scope="col" { (lang.t("失敗した時刻", "Failed at")) }
                            th scope="col" { (lang.t("原因", "Cause")) }
                            th scope="col" { (lang.t("イベント", "Event")) }
                            th scope="col" { (lang.t("元の位置", "From")) }
                            th scope="col" { (lang.t("状態", "State")) }
                        } }
                        tbody { @for l in &letters {
                            @let href = format!("/operator/dead-letters/{}/{}/{}", layout::segment(&topic), number(l, "dlq_partition"), number(l, "dlq_offset"));
                            tr data-id=(text(l, &["position"])) {
                                td.nowrap { a href=(href) { (layout::short_time(text(l, &["failed_at"]))) } }
                                td { strong { (cause_label(lang, text(l, &["cause_kind"]))) } br; span.hint { (text(l, &["cause"])) } }
                                td { (text(l, &["event_type"])) }
                                td.nowrap { (text(l, &["source_topic"])) "/" (number(l, "source_partition")) "/" (number(l, "source_offset")) }
                                td { (redrive_state(lang, l)) }
                            }
                        } }
                    }
                }
            },
        }
    };
    layout::answered(
        answer.as_ref().err(),
        layout::page(Viewer::from(&member), title, body),
    )
}

#[derive(Debug, Deserialize)]
pub struct Done {
    #[serde(default)]
    done: Option<String>,
}

pub async fn letter(
    State(state): State<AppState>,
    member: Member,
    Path((topic, partition, offset)): Path<(String, String, String)>,
    Query(done): Query<Done>,
) -> Response {
    if let Err(r) = member.require(OPERATORS) {
        return r.into_response();
    }
    let done = (done.done.as_deref() == Some("redriven"))
        .then(|| member.lang.t("再投入しました。", "Redriven."));
    render_letter(&state, &member, (&topic, &partition, &offset), done, None).await
}

async fn render_letter(
    state: &AppState,
    member: &Member,
    (topic, partition, offset): (&str, &str, &str),
    done: Option<&str>,
    problem: Option<&CallError>,
) -> Response {
    let lang = member.lang;
    let title = lang.t("デッドレター", "Dead letter");
    let answer = state
        .upstream
        .get(
            &member.key,
            Api::Ops,
            &["ops", "dead-letters", topic, partition, offset],
            &[],
        )
        .await;
    let back = html! {
        p { a href={ "/operator/dead-letters?topic=" (layout::segment(topic)) } { (lang.t("一覧に戻る", "Back to the list")) } }
    };
    let l = match answer {
        Ok(l) => l,
        Err(e) => {
            let body = html! { (layout::problem(lang, &e)) (back) };
            return (
                layout::status_of(&e),
                layout::page(Viewer::from(member), title, body),
            )
                .into_response();
        }
    };
    let csrf = member.session.csrf.as_str();
    let headers = list(&l, "original_headers");
    let decoded = serde_json::to_string_pretty(&l["decoded"]).unwrap_or_default();
    let body = html! {
        @if let Some(done) = done { (layout::done(done)) }
        @if let Some(e) = problem { (layout::problem(lang, e)) }
        dl.summary #letter {
            dt { (lang.t("位置", "Position")) } dd { (text(&l, &["position"])) }
            dt { (lang.t("原因", "Cause")) } dd.cause { strong { (cause_label(lang, text(&l, &["cause_kind"]))) } " — " (text(&l, &["cause"])) }
            dt { (lang.t("失敗した時刻", "Failed at")) } dd { (layout::short_time(text(&l, &["failed_at"]))) }
            dt { (lang.t("元の位置", "From")) } dd { (text(&l, &["source_topic"])) "/" (number(&l, "source_partition")) "/" (number(&l, "source_offset")) }
            dt { (lang.t("グループ", "Group")) } dd { (text(&l, &["consumer_group"])) }
            dt { (lang.t("イベント", "Event")) } dd { (text(&l, &["event_type"])) }
            dt { (lang.t("キー（患者）", "Key (patient)")) } dd { (text(&l, &["key"])) }
            dt { (lang.t("状態", "State")) } dd #redrive-state { (redrive_state(lang, &l)) }
        }
        p.hint { (lang.t("この閲覧は患者の閲覧記録に残ります。", "This read is recorded in the patient's access trail.")) }
        @if l["redrive"].is_null() {
            form.redrive method="post" action={ "/operator/dead-letters/" (layout::segment(topic)) "/" (partition) "/" (offset) "/redrive" } {
                input type="hidden" name="csrf" value=(csrf);
                p { (lang.t("原因を直してから再投入してください。元のトピックに同じバイト列で戻り、もう一度処理されます。",
                    "Fix the cause first. The record goes back to its topic with the same bytes and is processed again.")) }
                button type="submit" { (lang.t("元のトピックへ再投入", "Redrive to its topic")) }
            }
        }
        h2 { (lang.t("ヘッダー", "Headers")) }
        @if headers.is_empty() {
            p { (lang.t("ヘッダーはありません。", "No headers.")) }
        } @else {
            table #headers {
                thead { tr { th scope="col" { (lang.t("名前", "Name")) } th scope="col" { (lang.t("値", "Value")) } } }
                tbody { @for h in &headers {
                    tr { td { (h.get(0).and_then(Value::as_str).unwrap_or_default()) } td { (h.get(1).and_then(Value::as_str).unwrap_or_default()) } }
                } }
            }
        }
        h2 { (lang.t("内容", "Content")) }
        pre.record { (decoded) }
        (back)
    };
    layout::page(Viewer::from(member), title, body).into_response()
}

pub async fn redrive(
    State(state): State<AppState>,
    member: Member,
    Path((topic, partition, offset)): Path<(String, String, String)>,
    Form(form): Form<layout::CsrfForm>,
) -> Response {
    if let Err(r) = member
        .require(OPERATORS)
        .and_then(|()| member.check_csrf(form.csrf.as_deref()))
    {
        return r.into_response();
    }
    match state
        .upstream
        .post(
            &member.key,
            Api::Ops,
            &[
                "ops",
                "dead-letters",
                &topic,
                &partition,
                &offset,
                "redrive",
            ],
            &serde_json::json!({}),
        )
        .await
    {
        Ok(_) => Redirect::to(&format!(
            "/operator/dead-letters/{}/{}/{}?done=redriven",
            layout::segment(&topic),
            layout::segment(&partition),
            layout::segment(&offset)
        ))
        .into_response(),
        Err(e) => {
            render_letter(
                &state,
                &member,
                (&topic, &partition, &offset),
                None,
                Some(&e),
            )
            .await
        }
    }
}

pub async fn registry(State(state): State<AppState>, member: Member) -> Response {
    if let Err(r) = member.require(OPERATORS) {
        return r.into_response();
    }
    let lang = member.lang;
    let answer = snapshot(&state, &member).await;
    let body = html! {
        @match &answer {
            Err(e) => (layout::problem(lang, e)),
            Ok(s) => {
                @let subjects = list(s, "subjects");
                p { (lang.t("スキーマレジストリに登録されたサブジェクトとバージョン。変更は互換性チェックを通ったものだけが登録されます。",
                    "The schema registry's subjects and versions. Only changes that pass the compatibility check are registered.")) }
                table #subjects {
                    caption.visually-hidden { (lang.t("サブジェクト", "Subjects")) }
                    thead { tr {
                        th scope="col" { (lang.t("サブジェクト", "Subject")) }
                        th scope="col" { (lang.t("バージョン", "Versions")) }
                        th scope="col" { (lang.t("最新のスキーマID", "Latest schema id")) }
                    } }
                    tbody { @for sub in &subjects {
                        tr data-id=(text(sub, &["subject"])) {
                            th scope="row" { (text(sub, &["subject"])) }
                            td { (list(sub, "versions").iter().filter_map(Value::as_i64).map(|v| v.to_string()).collect::<Vec<_>>().join(", ")) }
                            td.num { (sub.get("latest_id").and_then(Value::as_i64).map(|i| i.to_string()).unwrap_or_default()) }
                        }
                    } }
                }
            },
        }
    };
    layout::page(
        Viewer::from(&member),
        lang.t("スキーマレジストリ", "Schema registry"),
        body,
    )
    .into_response()
}
