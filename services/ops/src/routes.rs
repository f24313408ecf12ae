//! `GET /ops/overview` (the latest look at topics, groups, registry and services),
//! `GET /ops/dead-letters?topic=T`, `GET /ops/dead-letters/{topic}/{partition}/{offset}` and
//! `POST …/redrive`. Operators only. A dead letter carries a patient's event: every one listed,
//! opened or redriven is audited under the operator's id, as any service's read is.

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRef, State};
use hixbus_access::{Action, Caller, Directory, Organization};
use hixbus_bus::dlq::{self, DeadLetter, DlqError};
use hixbus_bus::{KafkaConfig, Publisher};
use hixbus_contracts::codec::Codec;
use hixbus_service::{ApiError, JsonPath, JsonQuery, ReadModelError};
use hixbus_storage::AuditLog;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::redrives::Redrives;
use crate::watch::Watch;

/// Requests carry no body but a redrive's empty one.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Dead letters listed per partition of a `.dlq` topic, by default and at most.
const DEFAULT_LETTERS: i64 = 50;
const MAX_LETTERS: i64 = 500;

#[derive(Debug, Clone)]
pub struct AppState {
    pub directory: Arc<Directory>,
    pub audit: AuditLog,
    pub watch: Watch,
    pub kafka: KafkaConfig,
    pub codec: Arc<Codec>,
    pub publisher: Publisher,
    pub redrives: Redrives,
    /// The exchange's topics: the only ones whose dead letters these routes touch.
    pub topics: Arc<Vec<String>>,
}

impl FromRef<AppState> for Arc<Directory> {
    fn from_ref(state: &AppState) -> Self {
        state.directory.clone()
    }
}

fn store_failed(e: ReadModelError) -> ApiError {
    tracing::error!(error = %e, "ops store failed");
    ApiError::unavailable("the operator service's database is unavailable; retry")
}

fn broker_failed(e: DlqError) -> ApiError {
    match e {
        DlqError::NotFound { .. } => ApiError::not_found(e.to_string()),
        DlqError::NoSource { .. } => ApiError::conflict("no_source", e.to_string()),
        e => {
            tracing::warn!(error = %e, "dead letters unavailable");
            ApiError::unavailable(format!("the cluster did not answer: {e}"))
        }
    }
}

pub async fn overview(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(Action::ObserveBus)?;
    Ok(Json(json!(*state.watch.latest())))
}

fn known_topic<'a>(state: &'a AppState, topic: &str) -> Result<&'a str, ApiError> {
    state
        .topics
        .iter()
        .find(|t| *t == topic)
        .map(String::as_str)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "{topic:?} is not one of the exchange's topics (infra/topics.toml)"
            ))
        })
}

/// `topic.dlq/partition/offset`: how a dead letter is named in the audit log and redrives.
fn position(topic: &str, partition: i32, offset: i64) -> String {
    format!("{}/{partition}/{offset}", hixbus_bus::dlq_topic(topic))
}

async fn audit(
    state: &AppState,
    org: &Organization,
    action: &str,
    position: &str,
    patient: Option<&str>,
) -> Result<(), ApiError> {
    state
        .audit
        .record(&org.id, action, position, patient.unwrap_or_default())
        .await
        .map_err(audit_failed)
}

fn audit_failed(e: sqlx::Error) -> ApiError {
    tracing::error!(error = %e, "audit write failed; nothing shown");
    ApiError::unavailable("the read could not be audited, so nothing is shown; retry")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LettersParams {
    topic: String,
    /// Per partition of the `.dlq` topic, newest first (1–500, default 50).
    #[serde(default)]
    limit: Option<i64>,
}

fn shown(letter: &DeadLetter, topic: &str, redrive: Option<crate::redrives::Redrive>) -> Value {
    let mut v = json!(letter);
    if let Some(map) = v.as_object_mut() {
        // The raw bytes are for the detail view; a list carries what a row shows.
        map.remove("payload_base64");
        map.insert(
            "position".into(),
            json!(position(topic, letter.dlq_partition, letter.dlq_offset)),
        );
        map.insert("redrive".into(), json!(redrive));
    }
    v
}

pub async fn letters(
    State(state): State<AppState>,
    caller: Caller,
    JsonQuery(params): JsonQuery<LettersParams>,
) -> Result<Json<Value>, ApiError> {
    let org = caller.require(Action::HandleDeadLetters)?;
    let topic = known_topic(&state, &params.topic)?;
    let limit = params.limit.unwrap_or(DEFAULT_LETTERS);
    if !(1..=MAX_LETTERS).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be from 1 to {MAX_LETTERS}"
        )));
    }
    let letters = dlq::latest(&state.kafka, topic, limit)
        .await
        .map_err(broker_failed)?;
    let positions: Vec<String> = letters
        .iter()
        .map(|l| position(topic, l.dlq_partition, l.dlq_offset))
        .collect();
    let accesses = positions
        .iter()
        .zip(&letters)
        .map(|(at, l)| (at.as_str(), l.key.as_deref().unwrap_or_default()));
    state
        .audit
        .record_all(&org.id, "ops.dlq.list", accesses)
        .await
        .map_err(audit_failed)?;
    let mut redrives = state
        .redrives
        .get_all(&positions)
        .await
        .map_err(store_failed)?;
    let items: Vec<Value> = letters
        .iter()
        .zip(&positions)
        .map(|(letter, at)| shown(letter, topic, redrives.remove(at)))
        .collect();
    Ok(Json(json!({ "topic": topic, "dead_letters": items })))
}

fn check_position(partition: i32, offset: i64) -> Result<(), ApiError> {
    if partition < 0 || offset < 0 {
        return Err(ApiError::bad_request("partition and offset are 0 or more"));
    }
    Ok(())
}

pub async fn letter(
    State(state): State<AppState>,
    caller: Caller,
    JsonPath((topic, partition, offset)): JsonPath<(String, i32, i64)>,
) -> Result<Json<Value>, ApiError> {
    let org = caller.require(Action::HandleDeadLetters)?;
    let topic = known_topic(&state, &topic)?;
    check_position(partition, offset)?;
    let record = dlq::find(&state.kafka, topic, partition, offset)
        .await
        .map_err(broker_failed)?;
    let at = position(topic, partition, offset);
    let letter = DeadLetter::from_record(&record);
    audit(&state, org, "ops.dlq.show", &at, letter.key.as_deref()).await?;
    let redrive = state.redrives.get(&at).await.map_err(store_failed)?;
    let mut v = shown(&letter, topic, redrive);
    v["payload_base64"] = json!(letter.payload_base64);
    v["decoded"] = dlq::describe_payload(&state.codec, &record).await;
    Ok(Json(v))
}

pub async fn redrive(
    State(state): State<AppState>,
    caller: Caller,
    JsonPath((topic, partition, offset)): JsonPath<(String, i32, i64)>,
) -> Result<Json<Value>, ApiError> {
    let org = caller.require(Action::HandleDeadLetters)?;
    let topic = known_topic(&state, &topic)?;
    check_position(partition, offset)?;
    let at = position(topic, partition, offset);
    if let Some(held) = state
        .redrives
        .claim(&at, &org.id)
        .await
        .map_err(store_failed)?
    {
        let reason = match &held.redriven_to {
            Some(to) => format!("{at} was redriven to {to} by {} already", held.redriven_by),
            None => format!("{at} is being redriven by {}", held.redriven_by),
        };
        return Err(ApiError::conflict("already_redriven", reason));
    }
    let outcome: Result<dlq::Redriven, ApiError> = async {
        let record = dlq::find(&state.kafka, topic, partition, offset)
            .await
            .map_err(broker_failed)?;
        let key = record.key.as_deref().map(String::from_utf8_lossy);
        audit(&state, org, "ops.dlq.redrive", &at, key.as_deref()).await?;
        dlq::republish(&state.publisher, &record)
            .await
            .map_err(broker_failed)
    }
    .await;
    let redriven = match outcome {
        Ok(redriven) => redriven,
        Err(refused) => {
            if let Err(e) = state.redrives.release(&at).await {
                tracing::error!(error = %e, dead_letter = %at, "a failed redrive's claim was kept; it frees itself in a minute");
            }
            return Err(refused);
        }
    };
    let to = format!(
        "{}/{}/{}",
        redriven.to_topic, redriven.to_partition, redriven.to_offset
    );
    state.redrives.done(&at, &to).await.map_err(store_failed)?;
    tracing::info!(dead_letter = %at, to = %to, operator = %org.id, "dead letter redriven");
    Ok(Json(json!({
        "dead_letter": at,
        "redriven_to": to,
        "redriven_by": org.id,
    })))
}
