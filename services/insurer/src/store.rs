//! The reference insurer's tables: the evidence the exchange delivered, and its decisions.

use hixbus_contracts::{ClaimAdjudicated, ClaimEvidence, ClaimOutcome, EvidenceStage};
use hixbus_service::ReadModelError;
use hixbus_storage::Database;

#[derive(Debug, Clone)]
pub struct Store {
    db: Database,
}

fn stage(stage: EvidenceStage) -> &'static str {
    match stage {
        EvidenceStage::Issued => "issued",
        EvidenceStage::Dispensed => "dispensed",
        EvidenceStage::Cancelled => "cancelled",
    }
}

/// What makes two claims bill the same thing.
#[derive(Debug, Clone, Copy)]
pub enum Same<'a> {
    /// The same prescription (a dispensing billed twice).
    Prescription(&'a str),
    /// The same provider, member, dates and lines ([`crate::adjudicator`]'s fingerprint).
    Content(&'a str),
}

/// The facts of a claim version a decision is filed under (for the duplicate checks).
#[derive(Debug, Clone)]
pub struct Filing<'a> {
    pub claim_event_id: &'a str,
    pub provider_org: &'a str,
    pub claim_id: &'a str,
    pub version: i32,
    pub prescription_id: Option<&'a str>,
    pub fingerprint: &'a str,
    pub patient_ref: &'a str,
}

impl Store {
    pub async fn new(db: Database) -> Result<Self, sqlx::Error> {
        db.migrate(&crate::MIGRATIONS).await?;
        Ok(Self { db })
    }

    /// Keeps the furthest stage of a prescription's evidence (issued, then dispensed or
    /// cancelled; a late "issued" never overwrites them).
    pub async fn keep_evidence(&self, e: &ClaimEvidence) -> Result<(), ReadModelError> {
        let json = serde_json::to_string(e)?;
        let mut tx = self.db.pool.begin().await?;
        let current: Option<String> = sqlx::query_scalar(
            "SELECT stage FROM adjudication_evidence WHERE prescription_id = $1",
        )
        .bind(&e.prescription_id)
        .fetch_optional(&mut *tx)
        .await?;
        match current.as_deref() {
            None => {
                sqlx::query(
                    "INSERT INTO adjudication_evidence (prescription_id, stage, patient_ref, evidence)
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(&e.prescription_id)
                .bind(stage(e.stage))
                .bind(&e.envelope.patient_ref)
                .bind(json)
                .execute(&mut *tx)
                .await?;
            }
            Some("issued") if e.stage != EvidenceStage::Issued => {
                sqlx::query(
                    "UPDATE adjudication_evidence SET stage = $1, evidence = $2
                     WHERE prescription_id = $3",
                )
                .bind(stage(e.stage))
                .bind(json)
                .bind(&e.prescription_id)
                .execute(&mut *tx)
                .await?;
            }
            Some(_) => {}
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn evidence(
        &self,
        prescription_id: &str,
    ) -> Result<Option<ClaimEvidence>, ReadModelError> {
        let json: Option<String> = sqlx::query_scalar(
            "SELECT evidence FROM adjudication_evidence WHERE prescription_id = $1",
        )
        .bind(prescription_id)
        .fetch_optional(&self.db.pool)
        .await?;
        Ok(json.map(|j| serde_json::from_str(&j)).transpose()?)
    }

    /// The decision on the claim event `claim_event_id`, if there is one.
    pub async fn decision(
        &self,
        claim_event_id: &str,
    ) -> Result<Option<ClaimAdjudicated>, ReadModelError> {
        let json: Option<String> =
            sqlx::query_scalar("SELECT decision FROM adjudications WHERE claim_event_id = $1")
                .bind(claim_event_id)
                .fetch_optional(&self.db.pool)
                .await?;
        Ok(json.map(|j| serde_json::from_str(&j)).transpose()?)
    }

    /// Another claim (not `claim_id` of `provider`), not returned, that bills the same thing.
    pub async fn other_claim(
        &self,
        same: Same<'_>,
        provider: &str,
        claim_id: &str,
    ) -> Result<Option<String>, ReadModelError> {
        let (column, value) = match same {
            Same::Prescription(id) => ("prescription_id", id),
            Same::Content(fingerprint) => ("fingerprint", fingerprint),
        };
        Ok(sqlx::query_scalar(&format!(
            "SELECT claim_id FROM adjudications WHERE {column} = $1 AND outcome <> 'returned'
             AND NOT (provider_org = $2 AND claim_id = $3) LIMIT 1"
        ))
        .bind(value)
        .bind(provider)
        .bind(claim_id)
        .fetch_optional(&self.db.pool)
        .await?)
    }

    /// The outcome of `version` of the claim, and whether that version has a decision under an
    /// event other than `except_event`.
    pub async fn version_outcome(
        &self,
        provider: &str,
        claim_id: &str,
        version: i32,
        except_event: &str,
    ) -> Result<Option<ClaimOutcome>, ReadModelError> {
        let json: Option<String> = sqlx::query_scalar(
            "SELECT decision FROM adjudications WHERE provider_org = $1 AND claim_id = $2
             AND version = $3 AND claim_event_id <> $4 ORDER BY decided_at LIMIT 1",
        )
        .bind(provider)
        .bind(claim_id)
        .bind(i64::from(version))
        .bind(except_event)
        .fetch_optional(&self.db.pool)
        .await?;
        Ok(json
            .map(|j| serde_json::from_str::<ClaimAdjudicated>(&j))
            .transpose()?
            .map(|d| d.outcome))
    }

    /// Files a decision before it is sent; `false` if one was filed for the claim already.
    pub async fn file(
        &self,
        filing: &Filing<'_>,
        decision: &ClaimAdjudicated,
    ) -> Result<bool, ReadModelError> {
        let done = sqlx::query(
            "INSERT INTO adjudications (claim_event_id, provider_org, claim_id, version,
                 prescription_id, fingerprint, outcome, patient_ref, decided_at, decision)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (claim_event_id) DO NOTHING",
        )
        .bind(filing.claim_event_id)
        .bind(filing.provider_org)
        .bind(filing.claim_id)
        .bind(i64::from(filing.version))
        .bind(filing.prescription_id)
        .bind(filing.fingerprint)
        .bind(decision.outcome.as_str())
        .bind(filing.patient_ref)
        .bind(chrono::Utc::now().to_rfc3339())
        .bind(serde_json::to_string(decision)?)
        .execute(&self.db.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The latest decisions, newest first.
    pub async fn recent(
        &self,
        limit: u32,
    ) -> Result<Vec<(String, ClaimAdjudicated)>, ReadModelError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT patient_ref, decision FROM adjudications ORDER BY decided_at DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.db.pool)
        .await?;
        rows.into_iter()
            .map(|(p, j)| Ok((p, serde_json::from_str(&j)?)))
            .collect()
    }
}
