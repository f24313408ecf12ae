//! The pharmacy read model: every prescription a pharmacy may act on, its status and its alerts.
//!
//! Rows are written by the projector from the topics (so the model can be rebuilt by replaying
//! them) and by the dispense and claim requests, whose conditional updates are what make a
//! prescription dispensable exactly once across any number of service replicas.

use hixbus_access::codes::CodeKeys;
use hixbus_contracts::{MedicationAlert, PrescriptionDispensed, PrescriptionIssued};
use hixbus_storage::{AuditLog, Database, placeholders};
use sqlx::Row;
use sqlx::any::AnyRow;

pub use hixbus_contracts::lifecycle::Status;
use hixbus_contracts::lifecycle::Transition;

/// `UPDATE … SET status = <where the move leads>, <set> WHERE prescription_id = $1 AND
/// <the move's condition> <extra>`: the state machine is `lifecycle`'s, the rest this store's.
fn update(transition: Transition, set: &str, extra: &str) -> String {
    format!(
        "UPDATE pharmacy_prescriptions SET status = {}, {set}
         WHERE prescription_id = $1 AND {} {extra}",
        transition.sql_target(),
        transition.sql_condition()
    )
}

/// One prescription in the read model.
#[derive(Debug, Clone)]
pub struct PrescriptionRow {
    pub prescription_id: String,
    pub issuer_org: String,
    pub patient_ref: String,
    pub target_pharmacy: Option<String>,
    pub holder: Option<String>,
    pub status: Status,
    pub dispensed_by: Option<String>,
    pub issued: PrescriptionIssued,
    pub dispensed: Option<PrescriptionDispensed>,
    /// The `MedicationAlert`s involving it, oldest first, as stored: what a pharmacy is shown
    /// of each is decided at each read (`crate::alerts`).
    pub alerts: Vec<MedicationAlert>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("stored JSON is unreadable: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    UnknownStatus(#[from] hixbus_contracts::lifecycle::UnknownStatus),
    #[error("consent book: {0}")]
    Consent(#[from] hixbus_service::ReadModelError),
    #[error("a run of {0} prescriptions is more than one statement takes ({MAX_RUN_ROWS})")]
    RunTooLong(usize),
}

/// The most prescriptions one statement records. A longer run is refused, not split: its answer
/// (which ids were new, to announce) would be lost for the statements before a failing one.
pub const MAX_RUN_ROWS: usize = hixbus_storage::ROWS_PER_STATEMENT;

#[derive(Debug, Clone)]
pub struct Store {
    db: Database,
    codes: std::sync::Arc<CodeKeys>,
}

/// The access-code digest to store for `issued`: the one it carries, or (an event from before
/// digests) one made here from the code it carried in the clear.
fn code_digest(issued: &PrescriptionIssued, codes: &CodeKeys) -> Option<String> {
    issued
        .access_code_digest
        .clone()
        .or_else(|| (!issued.access_code.is_empty()).then(|| codes.digest(&issued.access_code)))
}

/// The event as stored: never with an access code in the clear.
fn without_code(issued: &PrescriptionIssued) -> PrescriptionIssued {
    PrescriptionIssued {
        access_code: String::new(),
        ..issued.clone()
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339()
}

impl Store {
    pub async fn new(db: Database, codes: std::sync::Arc<CodeKeys>) -> Result<Self, sqlx::Error> {
        db.migrate(&crate::MIGRATIONS).await?;
        let store = Self { db, codes };
        store.scrub_clear_codes().await.map_err(|e| match e {
            StoreError::Database(e) => e,
            other => sqlx::Error::Decode(Box::new(other)),
        })?;
        Ok(store)
    }

    /// Rows stored before events carried digests hold the access code in the clear (in
    /// `issued`) and an unkeyed digest: replaces both with the keyed digest. A no-op once done.
    async fn scrub_clear_codes(&self) -> Result<(), StoreError> {
        let rows = sqlx::query(
            "SELECT prescription_id, issued FROM pharmacy_prescriptions
             WHERE access_code_digest IS NULL",
        )
        .fetch_all(&self.db.pool)
        .await?;
        for row in &rows {
            let id: String = row.try_get(0)?;
            let issued: PrescriptionIssued = serde_json::from_str(&row.try_get::<String, _>(1)?)?;
            sqlx::query(
                "UPDATE pharmacy_prescriptions SET access_code_digest = $2, issued = $3,
                     access_code_sha256 = ''
                 WHERE prescription_id = $1",
            )
            .bind(&id)
            .bind(code_digest(&issued, &self.codes).unwrap_or_default())
            .bind(serde_json::to_string(&without_code(&issued))?)
            .execute(&self.db.pool)
            .await?;
        }
        if !rows.is_empty() {
            tracing::info!(
                rows = rows.len(),
                "access codes in the clear replaced by keyed digests"
            );
        }
        Ok(())
    }

    /// Records an issued prescription; a redelivery changes nothing. With `notify` (a
    /// PostgreSQL channel), the change notification goes out in the same statement and is
    /// delivered when it commits: one round trip fewer on the path every prescription takes.
    pub async fn insert_issued(
        &self,
        issued: &PrescriptionIssued,
        notify: Option<&str>,
    ) -> Result<bool, StoreError> {
        let inserted = self
            .insert_issued_all(std::slice::from_ref(issued), notify)
            .await?;
        Ok(!inserted.is_empty())
    }

    /// Records a run of issued prescriptions in one statement (all or none); the ids of those
    /// that were new. A lane that fell behind catches up a run per round trip instead of a
    /// prescription per round trip. A run longer than [`MAX_RUN_ROWS`] is refused rather than
    /// split (it would no longer be one statement): the bus hands over at most 65.
    pub async fn insert_issued_all(
        &self,
        run: &[PrescriptionIssued],
        notify: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        /// Per row: id, issuer, patient, pharmacy, digest, expiry, event, time.
        const COLUMNS: usize = 8;
        if run.is_empty() {
            return Ok(Vec::new());
        }
        if run.len() > MAX_RUN_ROWS {
            return Err(StoreError::RunTooLong(run.len()));
        }
        // The pharmacy it is for ($4) also holds it until one claims it.
        let rows = hixbus_storage::repeat_row(
            run.len(),
            COLUMNS,
            &format!(
                "($1, $2, $3, $4, $4, '', $5, '{}', $6, $7, $8)",
                Status::Issued
            ),
        );
        let insert = format!(
            "INSERT INTO pharmacy_prescriptions (prescription_id, issuer_org,
                 patient_ref, target_pharmacy, holder, access_code_sha256, access_code_digest,
                 status, expires_on, issued, updated_at)
             VALUES {rows}
             ON CONFLICT (prescription_id) DO NOTHING"
        );
        let channel = run.len() * COLUMNS + 1;
        let sql = match notify {
            Some(_) => format!(
                "WITH inserted AS ({insert} RETURNING prescription_id)
                 SELECT prescription_id, pg_notify(${channel}, prescription_id) FROM inserted"
            ),
            None => format!("{insert} RETURNING prescription_id"),
        };
        let mut query = sqlx::query(&sql);
        let at = now();
        for issued in run {
            query = query
                .bind(&issued.prescription_id)
                .bind(&issued.envelope.producer_org)
                .bind(&issued.envelope.patient_ref)
                .bind(issued.target_pharmacy_org.as_deref())
                .bind(code_digest(issued, &self.codes).unwrap_or_default())
                .bind(issued.expires_on.map(|d| i64::from(d.days_since_epoch())))
                .bind(serde_json::to_string(&without_code(issued))?)
                .bind(at.clone());
        }
        if let Some(channel) = notify {
            query = query.bind(channel);
        }
        let rows = query.fetch_all(&self.db.pool).await?;
        Ok(rows
            .iter()
            .map(|row| row.try_get::<String, _>(0))
            .collect::<Result<_, _>>()?)
    }

    /// One conditional status change: `sql` takes the prescription id as `$1`, the pharmacy as
    /// `$2` when given, and the time last. The conditions in its `WHERE` are the state machine;
    /// true if this call made the change (a concurrent or repeated one finds nothing to do).
    async fn transition(
        &self,
        sql: &str,
        prescription_id: &str,
        pharmacy: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut query = sqlx::query(sql).bind(prescription_id);
        if let Some(pharmacy) = pharmacy {
            query = query.bind(pharmacy);
        }
        let changed = query
            .bind(now())
            .execute(&self.db.pool)
            .await?
            .rows_affected();
        Ok(changed == 1)
    }

    /// Marks a prescription cancelled unless it is already being or was dispensed.
    pub async fn cancel(&self, prescription_id: &str) -> Result<bool, StoreError> {
        let sql = update(Transition::Cancel, "updated_at = $2", "");
        self.transition(&sql, prescription_id, None).await
    }

    /// Gives an open, undispensed prescription to `pharmacy`; false if someone else has it.
    pub async fn claim(&self, prescription_id: &str, pharmacy: &str) -> Result<bool, StoreError> {
        self.transition(&claim_sql(), prescription_id, Some(pharmacy))
            .await
    }

    /// [`Store::claim`] and its audit row in one transaction: a claim that took effect is
    /// always audited, and an audit that cannot be written leaves nothing claimed.
    pub async fn claim_audited(
        &self,
        prescription_id: &str,
        pharmacy: &str,
        patient_ref: &str,
    ) -> Result<bool, StoreError> {
        self.transition_audited(
            &claim_sql(),
            prescription_id,
            pharmacy,
            "claim",
            patient_ref,
        )
        .await
    }

    /// A conditional status change (as [`Store::transition`], with the pharmacy) and, if it
    /// changed something, `pharmacy`'s audit row for `action`, committed together.
    async fn transition_audited(
        &self,
        sql: &str,
        prescription_id: &str,
        pharmacy: &str,
        action: &str,
        patient_ref: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.db.pool.begin().await?;
        let changed = sqlx::query(sql)
            .bind(prescription_id)
            .bind(pharmacy)
            .bind(now())
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if changed {
            AuditLog::record_in(&mut tx, pharmacy, action, prescription_id, patient_ref).await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// Undoes a claim whose event could not be published.
    pub async fn unclaim(&self, prescription_id: &str, pharmacy: &str) -> Result<(), StoreError> {
        let sql = update(
            Transition::Unclaim,
            "holder = NULL, updated_at = $3",
            "AND holder = $2 AND target_pharmacy IS NULL",
        );
        self.transition(&sql, prescription_id, Some(pharmacy))
            .await
            .map(drop)
    }

    /// Takes the right to dispense, with its audit row in the same transaction: at most one
    /// caller ever gets `true` for a prescription, and a dispensing is never unaudited. The
    /// event about to be published is kept with it, so a crash before it is published does not
    /// hold the prescription in `dispensing` forever ([`Store::pending_dispensings`]).
    pub async fn begin_dispensing(
        &self,
        event: &PrescriptionDispensed,
        patient_ref: &str,
    ) -> Result<bool, StoreError> {
        let sql = update(
            Transition::BeginDispensing,
            "dispensed_by = $2, updated_at = $3, dispensing_event = $4",
            "AND holder = $2",
        );
        let mut tx = self.db.pool.begin().await?;
        let changed = sqlx::query(&sql)
            .bind(&event.prescription_id)
            .bind(&event.pharmacy.org_id)
            .bind(now())
            .bind(serde_json::to_string(event)?)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if changed {
            AuditLog::record_in(
                &mut tx,
                &event.pharmacy.org_id,
                "dispense",
                &event.prescription_id,
                patient_ref,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// The dispensing `pharmacy` began for `prescription_id` and that is not recorded yet: its
    /// publication may have been cut short (a crash, a lost answer).
    pub async fn begun_dispensing(
        &self,
        prescription_id: &str,
        pharmacy: &str,
    ) -> Result<Option<PrescriptionDispensed>, StoreError> {
        let row = sqlx::query(
            "SELECT dispensing_event FROM pharmacy_prescriptions
             WHERE prescription_id = $1 AND dispensed_by = $2 AND dispensed IS NULL
               AND dispensing_event IS NOT NULL",
        )
        .bind(prescription_id)
        .bind(pharmacy)
        .fetch_optional(&self.db.pool)
        .await?;
        match row {
            Some(row) => Ok(Some(serde_json::from_str(&row.try_get::<String, _>(0)?)?)),
            None => Ok(None),
        }
    }

    /// Every dispensing begun and not recorded (what a crash may have left unpublished).
    pub async fn pending_dispensings(&self) -> Result<Vec<PrescriptionDispensed>, StoreError> {
        let rows = sqlx::query(
            "SELECT dispensing_event FROM pharmacy_prescriptions
             WHERE dispensed IS NULL AND dispensing_event IS NOT NULL",
        )
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter()
            .map(|row| Ok(serde_json::from_str(&row.try_get::<String, _>(0)?)?))
            .collect()
    }

    /// Gives the right back when the dispensing event could not be published.
    pub async fn abort_dispensing(&self, prescription_id: &str) -> Result<(), StoreError> {
        let sql = update(
            Transition::AbortDispensing,
            "dispensed_by = NULL, dispensing_event = NULL, updated_at = $2",
            "",
        );
        self.transition(&sql, prescription_id, None).await.map(drop)
    }

    /// Records a dispensing (from this service's request or from the topic).
    pub async fn record_dispensed(
        &self,
        dispensed: &PrescriptionDispensed,
    ) -> Result<bool, StoreError> {
        let recorded = self
            .record_dispensed_all(std::slice::from_ref(dispensed), None)
            .await?;
        Ok(!recorded.is_empty())
    }

    /// Records a run of dispensings in one statement (all or none); the ids of the
    /// prescriptions it marked dispensed. An id missing from the answer was dispensed already or
    /// is not here yet ([`Store::dispensed_among`] tells which). On PostgreSQL,
    /// with `notify`, each recorded id is announced on that channel by the same statement.
    pub async fn record_dispensed_all(
        &self,
        run: &[PrescriptionDispensed],
        notify: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        /// Per row: prescription id, pharmacy, event.
        const COLUMNS: usize = 3;
        if run.is_empty() {
            return Ok(Vec::new());
        }
        if run.len() > MAX_RUN_ROWS {
            return Err(StoreError::RunTooLong(run.len()));
        }
        // A prescription's first dispensing in the run is the one kept, as one at a time: an
        // UPDATE joined to two rows for it would take either.
        let mut seen = std::collections::HashSet::with_capacity(run.len());
        let run: Vec<&PrescriptionDispensed> = run
            .iter()
            .filter(|d| seen.insert(d.prescription_id.as_str()))
            .collect();
        let at = run.len() * COLUMNS + 1;
        // The run's columns are named apart from the table's, so the lifecycle's condition
        // (`Transition::sql_condition`) reads the table's own.
        let update = format!(
            "UPDATE pharmacy_prescriptions SET status = {}, dispensed_by = run.run_by,
                 dispensed = run.run_event, updated_at = ${at}, dispensing_event = NULL
             FROM run
             WHERE prescription_id = run.run_id AND {} AND dispensed IS NULL
             RETURNING prescription_id",
            Transition::RecordDispensing.sql_target(),
            Transition::RecordDispensing.sql_condition()
        );
        let run_cte = format!(
            "run (run_id, run_by, run_event) AS (VALUES {})",
            hixbus_storage::value_rows(run.len(), COLUMNS)
        );
        let sql = match notify {
            Some(_) => format!(
                "WITH {run_cte}, updated AS ({update})
                 SELECT prescription_id, pg_notify(${}, prescription_id) FROM updated",
                at + 1
            ),
            None => format!("WITH {run_cte} {update}"),
        };
        let mut query = sqlx::query(&sql);
        for dispensed in run {
            query = query
                .bind(&dispensed.prescription_id)
                .bind(&dispensed.pharmacy.org_id)
                .bind(serde_json::to_string(dispensed)?);
        }
        query = query.bind(now());
        if let Some(channel) = notify {
            query = query.bind(channel);
        }
        let rows = query.fetch_all(&self.db.pool).await?;
        Ok(rows
            .iter()
            .map(|row| row.try_get::<String, _>(0))
            .collect::<Result<_, _>>()?)
    }

    /// Attaches an alert to every prescription it involves; returns those newly attached.
    pub async fn add_alert(&self, alert: &MedicationAlert) -> Result<Vec<String>, StoreError> {
        let body = serde_json::to_string(alert)?;
        let mut attached = Vec::new();
        for prescription_id in involved(alert) {
            let inserted = sqlx::query(
                "INSERT INTO pharmacy_alerts (alert_event_id, prescription_id, alert)
                 VALUES ($1, $2, $3) ON CONFLICT (alert_event_id, prescription_id) DO NOTHING",
            )
            .bind(&alert.envelope.event_id)
            .bind(&prescription_id)
            .bind(&body)
            .execute(&self.db.pool)
            .await?
            .rows_affected();
            if inserted == 1 {
                attached.push(prescription_id);
            }
        }
        Ok(attached)
    }

    /// Whether a dispensing of the prescription has been recorded.
    pub async fn is_dispensed(&self, prescription_id: &str) -> Result<bool, StoreError> {
        Ok(!self.dispensed_among(&[prescription_id]).await?.is_empty())
    }

    /// Which of `prescription_ids` are recorded as dispensed: what tells, for a run of
    /// dispensings, one that was done already from one whose prescription is not here yet.
    pub async fn dispensed_among(
        &self,
        prescription_ids: &[&str],
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        if prescription_ids.is_empty() {
            return Ok(std::collections::HashSet::new());
        }
        if prescription_ids.len() > MAX_RUN_ROWS {
            return Err(StoreError::RunTooLong(prescription_ids.len()));
        }
        let sql = format!(
            "SELECT prescription_id FROM pharmacy_prescriptions
             WHERE prescription_id IN ({}) AND dispensed IS NOT NULL",
            placeholders(1, prescription_ids.len())
        );
        let mut query = sqlx::query(&sql);
        for id in prescription_ids {
            query = query.bind(*id);
        }
        let rows = query.fetch_all(&self.db.pool).await?;
        Ok(rows
            .iter()
            .map(|row| row.try_get::<String, _>(0))
            .collect::<Result<_, _>>()?)
    }

    pub async fn get(&self, prescription_id: &str) -> Result<Option<PrescriptionRow>, StoreError> {
        let rows = sqlx::query(&format!("{SELECT} WHERE p.prescription_id = $1 {ORDER}"))
            .bind(prescription_id)
            .fetch_all(&self.db.pool)
            .await?;
        Ok(read_rows(&rows)?.pop())
    }

    /// Open prescriptions (no pharmacy yet) with this access code, under any accepted key.
    pub async fn find_open_by_code(&self, code: &str) -> Result<Vec<PrescriptionRow>, StoreError> {
        let mut found = Vec::new();
        for digest in self.codes.candidates(code) {
            let rows = sqlx::query(&format!(
                "{SELECT} WHERE p.access_code_digest = $1 AND p.target_pharmacy IS NULL {ORDER}"
            ))
            .bind(digest)
            .fetch_all(&self.db.pool)
            .await?;
            found.extend(read_rows(&rows)?);
        }
        Ok(found)
    }

    /// One page of what `pharmacy` may see (prescriptions addressed to it or claimed by it),
    /// oldest first: at most `limit`, after the prescription id `after`.
    pub async fn inbox(
        &self,
        pharmacy: &str,
        after: &str,
        limit: u32,
        newest_first: bool,
    ) -> Result<Vec<PrescriptionRow>, StoreError> {
        // The page is chosen first, then joined with its alerts, so `limit` counts
        // prescriptions, not alert rows.
        let sql = if newest_first {
            format!("{SELECT_FROM_NEWEST} ORDER BY p.prescription_id DESC, a.alert_event_id")
        } else {
            format!("{SELECT_FROM_PAGE} ORDER BY p.prescription_id, a.alert_event_id")
        };
        let rows = sqlx::query(&sql)
            .bind(pharmacy)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.db.pool)
            .await?;
        read_rows(&rows)
    }
}

impl Store {
    /// Which of `ids` `pharmacy` holds: its own prescriptions, whose alert lines it always sees.
    pub async fn held_by(&self, pharmacy: &str, ids: &[&str]) -> Result<Vec<String>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT prescription_id FROM pharmacy_prescriptions
             WHERE holder = $1 AND prescription_id IN ({})",
            placeholders(2, ids.len())
        );
        let mut query = sqlx::query_scalar::<_, String>(&sql).bind(pharmacy);
        for id in ids {
            query = query.bind(*id);
        }
        Ok(query.fetch_all(&self.db.pool).await?)
    }

    /// The patient's prescriptions that have alerts: what a change of their consent changes on
    /// the screens showing them.
    pub async fn alerted(&self, patient_ref: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar::<_, String>(
            "SELECT DISTINCT p.prescription_id FROM pharmacy_prescriptions p
             JOIN pharmacy_alerts a ON a.prescription_id = p.prescription_id
             WHERE p.patient_ref = $1 ORDER BY p.prescription_id",
        )
        .bind(patient_ref)
        .fetch_all(&self.db.pool)
        .await?)
    }
}

/// The prescriptions an alert is about, each once.
pub fn involved(alert: &MedicationAlert) -> Vec<String> {
    let mut ids = vec![alert.prescription_id.clone()];
    for line in &alert.involved {
        if !ids.contains(&line.prescription_id) {
            ids.push(line.prescription_id.clone());
        }
    }
    ids
}

/// A prescription with its alerts in one round trip: one result row per alert (or one with a
/// NULL alert), ordered so that a prescription's rows are adjacent.
const SELECT: &str = "SELECT p.prescription_id, p.issuer_org, p.patient_ref, p.target_pharmacy,
    p.holder, p.status, p.dispensed_by, p.issued, p.dispensed, a.alert
    FROM pharmacy_prescriptions p
    LEFT JOIN pharmacy_alerts a ON a.prescription_id = p.prescription_id";
/// The same page from the newest prescription down (the gateway's ids are UUIDv7, ordered by
/// time of issue): `$2` is the last id of the previous page, or empty for the first.
const SELECT_FROM_NEWEST: &str = "SELECT p.prescription_id, p.issuer_org, p.patient_ref,
    p.target_pharmacy, p.holder, p.status, p.dispensed_by, p.issued, p.dispensed, a.alert
    FROM (SELECT * FROM pharmacy_prescriptions
          WHERE holder = $1 AND ($2 = '' OR prescription_id < $2)
          ORDER BY prescription_id DESC LIMIT $3) p
    LEFT JOIN pharmacy_alerts a ON a.prescription_id = p.prescription_id";
const ORDER: &str = "ORDER BY p.prescription_id, a.alert_event_id";
/// [`SELECT`] over one inbox page: `$1` the holder, `$2` the id to start after, `$3` the size.
const SELECT_FROM_PAGE: &str = "SELECT p.prescription_id, p.issuer_org, p.patient_ref,
    p.target_pharmacy, p.holder, p.status, p.dispensed_by, p.issued, p.dispensed, a.alert
    FROM (SELECT * FROM pharmacy_prescriptions
          WHERE holder = $1 AND prescription_id > $2
          ORDER BY prescription_id LIMIT $3) p
    LEFT JOIN pharmacy_alerts a ON a.prescription_id = p.prescription_id";
/// A claim: an open prescription, not yet taken by another pharmacy. `$1` id, `$2` pharmacy.
fn claim_sql() -> String {
    update(
        Transition::Claim,
        "holder = $2, updated_at = $3",
        "AND (holder IS NULL OR holder = $2) AND target_pharmacy IS NULL",
    )
}

fn read_rows(rows: &[AnyRow]) -> Result<Vec<PrescriptionRow>, StoreError> {
    let mut prescriptions: Vec<PrescriptionRow> = Vec::new();
    for r in rows {
        let id: String = r.try_get(0)?;
        let alert = r
            .try_get::<Option<String>, _>(9)?
            .map(|a| serde_json::from_str(&a))
            .transpose()?;
        match prescriptions.last_mut() {
            Some(last) if last.prescription_id == id => last.alerts.extend(alert),
            _ => {
                let dispensed: Option<String> = r.try_get(8)?;
                prescriptions.push(PrescriptionRow {
                    prescription_id: id,
                    issuer_org: r.try_get(1)?,
                    patient_ref: r.try_get(2)?,
                    target_pharmacy: r.try_get(3)?,
                    holder: r.try_get(4)?,
                    status: Status::parse(&r.try_get::<String, _>(5)?)?,
                    dispensed_by: r.try_get(6)?,
                    issued: serde_json::from_str(&r.try_get::<String, _>(7)?)?,
                    dispensed: dispensed.map(|d| serde_json::from_str(&d)).transpose()?,
                    alerts: alert.into_iter().collect(),
                });
            }
        }
    }
    Ok(prescriptions)
}
