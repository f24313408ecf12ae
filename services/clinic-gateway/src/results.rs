//! The ordering clinic's results inbox: every report a laboratory sent for the clinic's orders,
//! as its newest version reads, with the versions it superseded, and the critical values the
//! clinic has not acknowledged yet.
//!
//! Versions are applied in the order they were reported, whatever order they are read in: a
//! corrected report replaces the one shown, a cancelled one withdraws it (it stays listed, marked
//! withdrawn, so nobody acts on a result that silently vanished). Every update is idempotent: a
//! version already recorded (by event id) changes nothing.

use std::sync::Arc;

use hixbus_bus::consumer::ConsumerError;
use hixbus_bus::{Consumer, EventContext, HandlerError, KafkaConfig};
use hixbus_contracts::codec::Codec;
use hixbus_contracts::critical::critical;
use hixbus_contracts::{LabResultReported, ReportStatus, Timestamp};
use hixbus_service::ReadModelError;
use hixbus_service::changes::{self, Source};
use hixbus_storage::Database;
use serde_json::{Value, json};
use sqlx::Row;
use sqlx::any::AnyRow;

/// The PostgreSQL channel inbox changes travel on; the payload is the report key.
pub const CHANNEL: &str = "hixbus_clinic_results";

/// At most this many unacknowledged critical reports are listed at once (oldest first).
pub const MAX_CRITICAL_LISTED: i64 = 200;

pub type Changes = changes::Changes<Results>;

/// One report as its ordering clinic sees it.
#[derive(Debug, Clone)]
pub struct ReportRow {
    pub report_key: String,
    pub ordering_org: String,
    pub patient_ref: String,
    pub status: ReportStatus,
    pub reported_at: i64,
    /// The newest version's critical results.
    pub critical: Option<Value>,
    pub acknowledged: Option<Value>,
    pub report: LabResultReported,
}

impl ReportRow {
    /// Critical results nobody acknowledged yet (a withdrawn report has none).
    pub fn awaits_acknowledgement(&self) -> bool {
        self.critical.is_some()
            && self.acknowledged.is_none()
            && self.status != ReportStatus::Cancelled
    }

    /// The JSON a clinic sees for this report.
    pub fn item(&self) -> Value {
        let r = &self.report;
        json!({
            "report": self.report_key,
            "report_id": r.report_id,
            "order_id": r.order_id,
            "patient_ref": self.patient_ref,
            "performing_lab": r.performing_lab,
            "status": status_str(self.status),
            "withdrawn": self.status == ReportStatus::Cancelled,
            "reported_at": time(self.reported_at),
            "event_id": r.envelope.event_id,
            "specimen": {
                "specimen_id": r.specimen.specimen_id,
                "specimen_type": r.specimen.specimen_type,
                "collected_at": time(r.specimen.collected_at.unix_millis()),
            },
            "flagged": r.results.iter()
                .filter(|o| !matches!(o.interpretation,
                    hixbus_contracts::Interpretation::Unknown | hixbus_contracts::Interpretation::Normal))
                .count(),
            "critical": self.critical.clone().unwrap_or_else(|| json!([])),
            "awaiting_acknowledgement": self.awaits_acknowledgement(),
            "acknowledged": self.acknowledged,
            "results": r.results,
        })
    }
}

fn status_str(status: ReportStatus) -> &'static str {
    match status {
        ReportStatus::Preliminary => "preliminary",
        ReportStatus::Final => "final",
        ReportStatus::Corrected => "corrected",
        ReportStatus::Cancelled => "cancelled",
    }
}

fn time(millis: i64) -> Value {
    Timestamp::from_unix_millis(millis)
        .to_datetime()
        .map_or(Value::Null, |t| json!(t.to_rfc3339()))
}

/// A report is the performing laboratory's: two laboratories may use the same report number.
pub fn report_key(lab: &str, report_id: &str) -> String {
    format!("{lab}/{report_id}")
}

/// The critical results of a report version, as the clinic sees them; `None` when none is.
fn critical_results(e: &LabResultReported) -> Option<Value> {
    let found: Vec<Value> = e
        .results
        .iter()
        .enumerate()
        .filter_map(|(index, o)| {
            critical(o).map(|c| {
                json!({
                    "index": index,
                    "code": o.code,
                    "value_numeric": o.value_numeric,
                    "value_text": o.value_text,
                    "unit": o.unit,
                    "interpretation": o.interpretation,
                    "reason": c.describe(),
                })
            })
        })
        .collect();
    (!found.is_empty()).then(|| Value::Array(found))
}

#[derive(Debug, Clone)]
pub struct Results {
    db: Database,
}

const SELECT: &str = "SELECT report_key, ordering_org, patient_ref, status, reported_at, critical,
    acknowledged, report FROM lab_reports";

fn read(r: &AnyRow) -> Result<ReportRow, ReadModelError> {
    let json = |i: usize| -> Result<Option<Value>, ReadModelError> {
        let text: Option<String> = r.try_get(i)?;
        Ok(text.map(|t| serde_json::from_str(&t)).transpose()?)
    };
    let report: LabResultReported = serde_json::from_str(&r.try_get::<String, _>(7)?)?;
    Ok(ReportRow {
        report_key: r.try_get(0)?,
        ordering_org: r.try_get(1)?,
        patient_ref: r.try_get(2)?,
        status: report.status,
        reported_at: r.try_get(4)?,
        critical: json(5)?,
        acknowledged: json(6)?,
        report,
    })
}

impl Results {
    pub async fn new(db: Database) -> Result<Self, sqlx::Error> {
        db.migrate(&crate::MIGRATIONS).await?;
        Ok(Self { db })
    }

    /// Records one version of a report; `Some(key)` when the inbox changed. A report for no
    /// clinic on the exchange has no inbox to go to.
    pub async fn apply(&self, e: &LabResultReported) -> Result<Option<String>, ReadModelError> {
        let Some(ordering) = &e.ordering else {
            return Ok(None);
        };
        let key = report_key(&e.performing_lab.org_id, &e.report_id);
        let at = e.envelope.occurred_at.unix_millis();
        let body = serde_json::to_string(e)?;
        let status = status_str(e.status);
        let mut tx = self.db.pool.begin().await?;
        let recorded = sqlx::query(
            "INSERT INTO lab_report_versions (event_id, report_key, reported_at, status, report)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(&e.envelope.event_id)
        .bind(&key)
        .bind(at)
        .bind(status)
        .bind(&body)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if recorded == 0 {
            return Ok(None);
        }
        // The newest version is shown; a version reported earlier that arrives later is only
        // kept in the history. A new version's critical values need acknowledging again.
        let shown = sqlx::query(
            "INSERT INTO lab_reports (report_key, ordering_org, patient_ref, status,
                 current_event_id, reported_at, critical, acknowledged, report)
             VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8)
             ON CONFLICT (report_key) DO UPDATE SET
                 patient_ref = excluded.patient_ref, status = excluded.status,
                 current_event_id = excluded.current_event_id,
                 reported_at = excluded.reported_at, critical = excluded.critical,
                 acknowledged = NULL, report = excluded.report
             WHERE lab_reports.reported_at <= excluded.reported_at",
        )
        .bind(&key)
        .bind(&ordering.org_id)
        .bind(&e.envelope.patient_ref)
        .bind(status)
        .bind(&e.envelope.event_id)
        .bind(at)
        .bind(critical_results(e).map(|c| c.to_string()))
        .bind(&body)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok((shown > 0).then_some(key))
    }

    pub async fn get(&self, key: &str) -> Result<Option<ReportRow>, ReadModelError> {
        let row = sqlx::query(&format!("{SELECT} WHERE report_key = $1"))
            .bind(key)
            .fetch_optional(&self.db.pool)
            .await?;
        row.as_ref().map(read).transpose()
    }

    /// The report `key` if `org` ordered it (`None` also when another clinic did).
    pub async fn get_for(&self, org: &str, key: &str) -> Result<Option<ReportRow>, ReadModelError> {
        Ok(self.get(key).await?.filter(|r| r.ordering_org == org))
    }

    /// `org`'s critical reports nobody acknowledged, the longest waiting first.
    pub async fn awaiting(&self, org: &str) -> Result<Vec<ReportRow>, ReadModelError> {
        let rows = sqlx::query(&format!(
            "{SELECT} WHERE ordering_org = $1 AND critical IS NOT NULL AND acknowledged IS NULL
                 AND status <> 'cancelled'
             ORDER BY reported_at, report_key LIMIT {MAX_CRITICAL_LISTED}"
        ))
        .bind(org)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(read).collect()
    }

    /// One page of `org`'s reports, the most recently reported first: at most `limit`, after
    /// the position `before` (`(reported_at, report_key)` of the last one seen).
    pub async fn page(
        &self,
        org: &str,
        before: Option<(i64, &str)>,
        limit: u32,
    ) -> Result<Vec<ReportRow>, ReadModelError> {
        let (at, key) = before.unwrap_or((i64::MAX, ""));
        let rows = sqlx::query(&format!(
            "{SELECT} WHERE ordering_org = $1
                 AND (reported_at < $2 OR (reported_at = $2 AND report_key < $3))
             ORDER BY reported_at DESC, report_key DESC LIMIT $4"
        ))
        .bind(org)
        .bind(at)
        .bind(key)
        .bind(i64::from(limit))
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(read).collect()
    }

    /// Every version of `key`, oldest first.
    pub async fn versions(&self, key: &str) -> Result<Vec<Value>, ReadModelError> {
        let rows = sqlx::query(
            "SELECT event_id, reported_at, status, report FROM lab_report_versions
             WHERE report_key = $1 ORDER BY reported_at, event_id",
        )
        .bind(key)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(json!({
                    "event_id": r.try_get::<String, _>(0)?,
                    "reported_at": time(r.try_get(1)?),
                    "status": r.try_get::<String, _>(2)?,
                    "report": serde_json::from_str::<Value>(&r.try_get::<String, _>(3)?)?,
                }))
            })
            .collect()
    }

    /// Records that `org` acknowledged the critical results of `key`'s newest version (the
    /// version it saw: `event_id`). `Ok(false)` when there is nothing of that version to
    /// acknowledge any more.
    pub async fn acknowledge(
        &self,
        key: &str,
        event_id: &str,
        acknowledgement: &Value,
    ) -> Result<bool, ReadModelError> {
        let changed = sqlx::query(
            "UPDATE lab_reports SET acknowledged = $3
             WHERE report_key = $1 AND current_event_id = $2 AND critical IS NOT NULL
                 AND acknowledged IS NULL",
        )
        .bind(key)
        .bind(event_id)
        .bind(acknowledgement.to_string())
        .execute(&self.db.pool)
        .await?
        .rows_affected();
        Ok(changed > 0)
    }
}

impl Source for Results {
    type Row = ReportRow;
    type Error = ReadModelError;

    async fn load(&self, key: &str) -> Result<Option<ReportRow>, ReadModelError> {
        self.get(key).await
    }
}

/// The consumer's state: the inbox and the screens that hear of its changes.
#[derive(Debug, Clone)]
pub struct Projector {
    pub results: Results,
    pub changes: Changes,
}

impl Projector {
    pub async fn reported(self, e: LabResultReported, _: EventContext) -> Result<(), HandlerError> {
        if let Some(key) = self.results.apply(&e).await? {
            self.changes.announce(&key).await;
        }
        Ok(())
    }
}

/// The consumer that feeds the inbox (its own group: the inbox and the prescriptions view
/// are rebuilt, retried and dead-lettered independently).
pub fn consumer(
    kafka: &KafkaConfig,
    codec: Arc<Codec>,
    group: &str,
    projector: Projector,
) -> Result<Consumer, ConsumerError> {
    Consumer::builder(kafka, codec, group)
        .with_state(projector)
        .on(Projector::reported)?
        .build()
}
