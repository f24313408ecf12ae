//! The clinic view: what became of each prescription a clinic issued (claimed, dispensed with
//! what, cancelled, alerts), built from the events alone — no calls between services.
//!
//! Every update is idempotent (inserts ignore duplicates, updates are conditional or
//! overwrite with the same value), so redelivery changes nothing.

use std::sync::Arc;

use hixbus_access::Organization;
use hixbus_bus::consumer::ConsumerError;
use hixbus_bus::{Consumer, EventContext, HandlerError, KafkaConfig};
use hixbus_consent::ConsentBook;
use hixbus_contracts::codec::Codec;
use hixbus_contracts::lifecycle::{Status, Transition, UnknownStatus};
use hixbus_contracts::{
    AlertLine, ConsentChanged, MedicationAlert, PrescriptionCancelled, PrescriptionClaimed,
    PrescriptionDispensed, PrescriptionIssued,
};
use hixbus_storage::{AuditLog, Database};
use serde_json::{Value, json};
use sqlx::Row;

#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("stored JSON is unreadable: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Status(#[from] UnknownStatus),
    #[error("consent book: {0}")]
    Consent(#[from] hixbus_service::ReadModelError),
    /// An event about a prescription whose `PrescriptionIssued` has not been applied yet (it
    /// travels on another topic): retried for a while, then dead-lettered (see
    /// `HandlerError::NotYet`).
    #[error("prescription {0} has not arrived yet")]
    NotYet(String),
}

/// A prescription as its issuing clinic sees it.
#[derive(Debug, Clone)]
pub struct ClinicPrescription {
    pub prescription_id: String,
    pub issuer_org: String,
    pub patient_ref: String,
    pub status: Status,
    pub claimed_by: Option<String>,
    pub cancelled: Option<Value>,
    pub dispensed: Option<Value>,
    pub issued: Value,
}

#[derive(Debug, Clone)]
pub struct ClinicView {
    db: Database,
    /// The patients' consents: what a clinic sees of another institution's side of an alert.
    consents: ConsentBook,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339()
}

impl ClinicView {
    pub async fn new(db: Database) -> Result<Self, sqlx::Error> {
        db.migrate(&crate::MIGRATIONS).await?;
        let consents = ConsentBook::new(db.clone()).await?;
        Ok(Self { db, consents })
    }

    /// A patient's consent decision, kept for the reads that follow it.
    pub async fn consent(self, e: ConsentChanged, _: EventContext) -> Result<(), HandlerError> {
        self.consents.put(&e).await?;
        Ok(())
    }

    pub async fn issued(self, e: PrescriptionIssued, _: EventContext) -> Result<(), HandlerError> {
        self.issued_run(vec![e]).await
    }

    /// Prescriptions that queued up behind each other (a lane catching up): one statement.
    pub async fn issued_run(self, run: Vec<PrescriptionIssued>) -> Result<(), HandlerError> {
        const COLUMNS: usize = 5;
        let at = now();
        // A run from the bus is at most 65; a longer one takes several statements, which is
        // safe since each insert ignores what is already there.
        for chunk in run.chunks(hixbus_storage::ROWS_PER_STATEMENT) {
            let rows = hixbus_storage::repeat_row(
                chunk.len(),
                COLUMNS,
                &format!("($1, $2, $3, '{}', $4, $5)", Status::Issued),
            );
            let sql = format!(
                "INSERT INTO clinic_prescriptions
                     (prescription_id, issuer_org, patient_ref, status, issued, updated_at)
                 VALUES {rows}
                 ON CONFLICT (prescription_id) DO NOTHING"
            );
            let mut query = sqlx::query(&sql);
            for e in chunk {
                query = query
                    .bind(&e.prescription_id)
                    .bind(&e.envelope.producer_org)
                    .bind(&e.envelope.patient_ref)
                    .bind(serde_json::to_string(e).map_err(ViewError::from)?)
                    .bind(at.clone());
            }
            query
                .execute(&self.db.pool)
                .await
                .map_err(ViewError::from)?;
        }
        Ok(())
    }

    pub async fn claimed(
        self,
        e: PrescriptionClaimed,
        _: EventContext,
    ) -> Result<(), HandlerError> {
        let sql = format!(
            "UPDATE clinic_prescriptions SET claimed_by = $2, status = {}, updated_at = $3
             WHERE prescription_id = $1",
            Transition::Claim.sql_case()
        );
        sqlx::query(&sql)
            .bind(&e.prescription_id)
            .bind(&e.pharmacy.org_id)
            .bind(now())
            .execute(&self.db.pool)
            .await
            .map_err(ViewError::from)?;
        Ok(())
    }

    /// Records the cancellation. It takes effect only if no pharmacy had begun dispensing: the
    /// pharmacy service decides, and a dispensing that arrives later wins (see
    /// [`ClinicView::dispensed`]); the request is kept either way so the clinic sees the outcome.
    pub async fn cancelled(
        self,
        e: PrescriptionCancelled,
        _: EventContext,
    ) -> Result<(), HandlerError> {
        let sql = format!(
            "UPDATE clinic_prescriptions SET cancelled = $2, updated_at = $3, status = {}
             WHERE prescription_id = $1 AND cancelled IS NULL",
            Transition::Cancel.sql_case()
        );
        sqlx::query(&sql)
            .bind(&e.prescription_id)
            .bind(serde_json::to_string(&e).map_err(ViewError::from)?)
            .bind(now())
            .execute(&self.db.pool)
            .await
            .map_err(ViewError::from)?;
        Ok(())
    }

    /// Records the dispensing; the first one recorded stands (a prescription is dispensed once,
    /// and a redelivered or resent dispensing must not replace it). It wins over a cancellation
    /// the view saw first: the pharmacy decided.
    pub async fn dispensed(
        self,
        e: PrescriptionDispensed,
        _: EventContext,
    ) -> Result<(), HandlerError> {
        let sql = format!(
            "UPDATE clinic_prescriptions SET status = {}, dispensed = $2, updated_at = $3
             WHERE prescription_id = $1 AND dispensed IS NULL",
            Transition::RecordDispensing.sql_target()
        );
        let changed = sqlx::query(&sql)
            .bind(&e.prescription_id)
            .bind(serde_json::to_string(&e).map_err(ViewError::from)?)
            .bind(now())
            .execute(&self.db.pool)
            .await
            .map_err(ViewError::from)?
            .rows_affected();
        // Nothing changed: already dispensed (done), or the prescription is not here yet — or
        // it was inserted just after the update looked (the two events travel on different
        // topics and are applied concurrently): then applying again will work.
        if changed == 0 && !self.is_dispensed(&e.prescription_id).await? {
            return Err(ViewError::NotYet(e.prescription_id.clone()).into());
        }
        Ok(())
    }

    async fn is_dispensed(&self, prescription_id: &str) -> Result<bool, ViewError> {
        let row = sqlx::query(
            "SELECT 1 FROM clinic_prescriptions WHERE prescription_id = $1 AND dispensed IS NOT NULL",
        )
        .bind(prescription_id)
        .fetch_optional(&self.db.pool)
        .await?;
        Ok(row.is_some())
    }

    /// Attaches an alert to every prescription it involves: the clinic that prescribed the
    /// earlier drug learns of the duplication too.
    pub async fn alert(self, e: MedicationAlert, _: EventContext) -> Result<(), HandlerError> {
        let body = serde_json::to_string(&e).map_err(ViewError::from)?;
        let mut ids = vec![e.prescription_id.as_str()];
        ids.extend(e.involved.iter().map(|l| l.prescription_id.as_str()));
        ids.sort_unstable();
        ids.dedup();
        for prescription_id in ids {
            sqlx::query(
                "INSERT INTO clinic_alerts (alert_event_id, prescription_id, alert)
                 VALUES ($1, $2, $3) ON CONFLICT (alert_event_id, prescription_id) DO NOTHING",
            )
            .bind(&e.envelope.event_id)
            .bind(prescription_id)
            .bind(&body)
            .execute(&self.db.pool)
            .await
            .map_err(ViewError::from)?;
        }
        Ok(())
    }

    /// The issuer's prescription `id`, or `None` (also when another clinic issued it).
    pub async fn get(
        &self,
        issuer: &str,
        id: &str,
    ) -> Result<Option<ClinicPrescription>, ViewError> {
        let row = sqlx::query(&format!(
            "{SELECT} WHERE prescription_id = $1 AND issuer_org = $2"
        ))
        .bind(id)
        .bind(issuer)
        .fetch_optional(&self.db.pool)
        .await?;
        row.map(|r| read(&r)).transpose()
    }

    /// One page of the issuer's prescriptions, oldest first (ids are time-ordered): at most
    /// `limit`, after the id `after`.
    pub async fn list(
        &self,
        issuer: &str,
        after: &str,
        limit: u32,
        newest_first: bool,
    ) -> Result<Vec<ClinicPrescription>, ViewError> {
        // Ids are UUIDv7, ordered by time of issue; `after` is the previous page's last id.
        let sql = if newest_first {
            format!(
                "{SELECT} WHERE issuer_org = $1 AND ($2 = '' OR prescription_id < $2)
                 ORDER BY prescription_id DESC LIMIT $3"
            )
        } else {
            format!(
                "{SELECT} WHERE issuer_org = $1 AND prescription_id > $2
                 ORDER BY prescription_id LIMIT $3"
            )
        };
        let rows = sqlx::query(&sql)
            .bind(issuer)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter().map(read).collect()
    }

    /// The alerts involving prescription `id`, oldest first, as stored.
    pub async fn alerts(&self, id: &str) -> Result<Vec<MedicationAlert>, ViewError> {
        let rows = sqlx::query(
            "SELECT alert FROM clinic_alerts WHERE prescription_id = $1 ORDER BY alert_event_id",
        )
        .bind(id)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter()
            .map(|r| Ok(serde_json::from_str(&r.try_get::<String, _>(0)?)?))
            .collect()
    }

    /// The alerts of `p` as `org` (its issuer) may see them now: the lines of its own
    /// prescriptions always, another institution's only under the patient's consent
    /// (`hixbus_consent::alerts`); each decision about another institution's data audited.
    async fn shown_alerts(
        &self,
        org: &Organization,
        p: &ClinicPrescription,
        audit: &AuditLog,
    ) -> Result<Vec<Value>, ViewError> {
        let alerts = self.alerts(&p.prescription_id).await?;
        let own = |l: &AlertLine| l.issuer_org == org.id;
        Ok(hixbus_consent::alerts::shown_audited(
            &alerts,
            own,
            org,
            &p.patient_ref,
            &self.consents,
            audit,
        )
        .await?)
    }

    /// The JSON the issuing clinic `org` sees for one prescription (its reads audited by the
    /// caller, the alert decisions in it here).
    pub async fn describe(
        &self,
        org: &Organization,
        p: &ClinicPrescription,
        audit: &AuditLog,
    ) -> Result<Value, ViewError> {
        let cancellation = p.cancelled.as_ref().map(|requested| {
            let (outcome, explanation) = match p.status {
                Status::Cancelled => ("cancelled", "the prescription was withdrawn"),
                _ => (
                    "too_late",
                    "a pharmacy had already begun dispensing it; it stays dispensed",
                ),
            };
            json!({ "outcome": outcome, "explanation": explanation, "request": requested })
        });
        Ok(json!({
            "prescription_id": p.prescription_id,
            "status": p.status.as_str(),
            "patient_ref": p.patient_ref,
            "claimed_by": p.claimed_by,
            "dispensed": p.dispensed,
            "cancelled": p.cancelled,
            "cancellation": cancellation,
            "alerts": self.shown_alerts(org, p, audit).await?,
            "prescription": p.issued,
        }))
    }
}

const SELECT: &str = "SELECT prescription_id, issuer_org, patient_ref, status, claimed_by,
    cancelled, dispensed, issued FROM clinic_prescriptions";

fn read(r: &sqlx::any::AnyRow) -> Result<ClinicPrescription, ViewError> {
    let json = |i: usize| -> Result<Option<Value>, ViewError> {
        let text: Option<String> = r.try_get(i)?;
        Ok(text.map(|t| serde_json::from_str(&t)).transpose()?)
    };
    Ok(ClinicPrescription {
        prescription_id: r.try_get(0)?,
        issuer_org: r.try_get(1)?,
        patient_ref: r.try_get(2)?,
        status: Status::parse(&r.try_get::<String, _>(3)?)?,
        claimed_by: r.try_get(4)?,
        cancelled: json(5)?,
        dispensed: json(6)?,
        issued: json(7)?.unwrap_or(Value::Null),
    })
}

impl From<ViewError> for HandlerError {
    /// The view is a database: what fails there may work on a retry; an event whose
    /// prescription has not been applied yet waits for it (bounded, then dead-lettered).
    fn from(e: ViewError) -> Self {
        match e {
            ViewError::NotYet(prescription_id) => {
                HandlerError::not_yet(format!("prescription {prescription_id}"))
            }
            other => HandlerError::transient(other),
        }
    }
}

/// The consumer that feeds the clinic view.
pub fn consumer(
    kafka: &KafkaConfig,
    codec: Arc<Codec>,
    group: &str,
    view: &ClinicView,
) -> Result<Consumer, ConsumerError> {
    Consumer::builder(kafka, codec, group)
        .with_state(view.clone())
        .on(ClinicView::issued)?
        .batch(ClinicView::issued_run)?
        .on(ClinicView::claimed)?
        .on(ClinicView::cancelled)?
        .on(ClinicView::dispensed)?
        .on(ClinicView::alert)?
        .on(ClinicView::consent)?
        .build()
}
