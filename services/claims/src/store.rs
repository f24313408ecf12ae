//! The claims service's tables: prescriptions to price dispensings with, every claim version a
//! provider made, and the insurers' decisions.

use hixbus_contracts::{ClaimAdjudicated, ClaimSubmitted, PrescriptionIssued};
use hixbus_service::ReadModelError;
use hixbus_service::changes::Source;
use hixbus_storage::Database;
use sqlx::Row;
use sqlx::any::AnyRow;

#[derive(Debug, Clone)]
pub struct Store {
    db: Database,
}

/// One version of a claim as the provider sees it.
#[derive(Debug, Clone)]
pub struct ClaimRow {
    pub provider_org: String,
    pub claim_id: String,
    pub version: i32,
    pub event_id: String,
    pub digest: String,
    pub status: String,
    pub patient_ref: String,
    pub insurer_org: Option<String>,
    pub submitted_at: String,
    pub event: Option<ClaimSubmitted>,
    pub problem: Option<String>,
    pub decision: Option<ClaimAdjudicated>,
}

const SELECT: &str = "SELECT c.provider_org, c.claim_id, c.version, c.event_id, c.digest, c.status,
    c.patient_ref, c.insurer_org, c.submitted_at, c.event, c.problem, d.event
    FROM claims c LEFT JOIN claim_decisions d
    ON d.provider_org = c.provider_org AND d.claim_id = c.claim_id AND d.version = c.version";

fn read(r: &AnyRow) -> Result<ClaimRow, ReadModelError> {
    let json = |i: usize| -> Result<Option<String>, ReadModelError> { Ok(r.try_get(i)?) };
    Ok(ClaimRow {
        provider_org: r.try_get(0)?,
        claim_id: r.try_get(1)?,
        version: i32::try_from(r.try_get::<i64, _>(2)?).unwrap_or(i32::MAX),
        event_id: r.try_get(3)?,
        digest: r.try_get(4)?,
        status: r.try_get(5)?,
        patient_ref: r.try_get(6)?,
        insurer_org: r.try_get(7)?,
        submitted_at: r.try_get(8)?,
        event: json(9)?.map(|j| serde_json::from_str(&j)).transpose()?,
        problem: r.try_get(10)?,
        decision: json(11)?.map(|j| serde_json::from_str(&j)).transpose()?,
    })
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339()
}

/// A claim version to record.
#[derive(Debug, Clone)]
pub struct NewClaim<'a> {
    pub provider_org: &'a str,
    pub claim_id: &'a str,
    pub version: i32,
    pub event_id: &'a str,
    pub digest: &'a str,
    pub status: &'a str,
    pub patient_ref: &'a str,
    pub insurer_org: Option<&'a str>,
    pub event: Option<&'a ClaimSubmitted>,
    pub problem: Option<&'a str>,
}

impl Store {
    pub async fn new(db: Database) -> Result<Self, sqlx::Error> {
        db.migrate(&crate::MIGRATIONS).await?;
        Ok(Self { db })
    }

    pub async fn keep_prescription(
        &self,
        issued: &PrescriptionIssued,
    ) -> Result<(), ReadModelError> {
        sqlx::query(
            "INSERT INTO claim_prescriptions (prescription_id, event) VALUES ($1, $2)
             ON CONFLICT (prescription_id) DO NOTHING",
        )
        .bind(&issued.prescription_id)
        .bind(serde_json::to_string(issued)?)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    pub async fn prescription(
        &self,
        prescription_id: &str,
    ) -> Result<Option<PrescriptionIssued>, ReadModelError> {
        let row: Option<String> =
            sqlx::query_scalar("SELECT event FROM claim_prescriptions WHERE prescription_id = $1")
                .bind(prescription_id)
                .fetch_optional(&self.db.pool)
                .await?;
        Ok(row.map(|j| serde_json::from_str(&j)).transpose()?)
    }

    /// Records a claim version; `false` if that version is recorded already.
    pub async fn insert(&self, claim: &NewClaim<'_>) -> Result<bool, ReadModelError> {
        let event = claim.event.map(serde_json::to_string).transpose()?;
        let done = sqlx::query(
            "INSERT INTO claims (provider_org, claim_id, version, event_id, digest, status,
                 patient_ref, insurer_org, submitted_at, event, problem)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT DO NOTHING",
        )
        .bind(claim.provider_org)
        .bind(claim.claim_id)
        .bind(i64::from(claim.version))
        .bind(claim.event_id)
        .bind(claim.digest)
        .bind(claim.status)
        .bind(claim.patient_ref)
        .bind(claim.insurer_org)
        .bind(now())
        .bind(event)
        .bind(claim.problem)
        .execute(&self.db.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn set_status(&self, event_id: &str, status: &str) -> Result<(), ReadModelError> {
        sqlx::query("UPDATE claims SET status = $1 WHERE event_id = $2")
            .bind(status)
            .bind(event_id)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// Forgets a version whose publication failed, so the provider may send it again.
    pub async fn forget_pending(&self, event_id: &str) -> Result<(), ReadModelError> {
        sqlx::query("DELETE FROM claims WHERE event_id = $1 AND status = 'pending'")
            .bind(event_id)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// Every version of `claim_id` of `provider`, oldest first.
    pub async fn versions(
        &self,
        provider: &str,
        claim_id: &str,
    ) -> Result<Vec<ClaimRow>, ReadModelError> {
        let rows = sqlx::query(&format!(
            "{SELECT} WHERE c.provider_org = $1 AND c.claim_id = $2 ORDER BY c.version"
        ))
        .bind(provider)
        .bind(claim_id)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(read).collect()
    }

    /// `provider`'s claims, latest version each, newest first, after `(submitted_at, claim_id)`.
    pub async fn page(
        &self,
        provider: &str,
        before: Option<(&str, &str)>,
        limit: u32,
    ) -> Result<Vec<ClaimRow>, ReadModelError> {
        let latest = "c.version = (SELECT MAX(v.version) FROM claims v
             WHERE v.provider_org = c.provider_org AND v.claim_id = c.claim_id)";
        let query = match before {
            None => format!(
                "{SELECT} WHERE c.provider_org = $1 AND {latest}
                 ORDER BY c.submitted_at DESC, c.claim_id DESC LIMIT $2"
            ),
            Some(_) => format!(
                "{SELECT} WHERE c.provider_org = $1 AND {latest}
                 AND (c.submitted_at < $3 OR (c.submitted_at = $3 AND c.claim_id < $4))
                 ORDER BY c.submitted_at DESC, c.claim_id DESC LIMIT $2"
            ),
        };
        let mut q = sqlx::query(&query).bind(provider).bind(i64::from(limit));
        if let Some((at, id)) = before {
            q = q.bind(at).bind(id);
        }
        let rows = q.fetch_all(&self.db.pool).await?;
        rows.iter().map(read).collect()
    }

    /// Records an insurer's decision; `false` if that version was decided already.
    pub async fn decided(&self, decision: &ClaimAdjudicated) -> Result<bool, ReadModelError> {
        let done = sqlx::query(
            "INSERT INTO claim_decisions (provider_org, claim_id, version, event_id, outcome,
                 decided_at, event)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT DO NOTHING",
        )
        .bind(&decision.provider_org)
        .bind(&decision.claim_id)
        .bind(i64::from(decision.claim_version))
        .bind(&decision.envelope.event_id)
        .bind(decision.outcome.as_str())
        .bind(now())
        .bind(serde_json::to_string(decision)?)
        .execute(&self.db.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// The key a change to one claim version is announced under.
pub fn change_key(provider: &str, claim_id: &str, version: i32) -> String {
    format!("{provider}\t{version}\t{claim_id}")
}

impl Source for Store {
    type Row = ClaimRow;
    type Error = ReadModelError;

    async fn load(&self, key: &str) -> Result<Option<ClaimRow>, ReadModelError> {
        let mut parts = key.splitn(3, '\t');
        let (Some(provider), Some(version), Some(claim_id)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Ok(None);
        };
        let Ok(version) = version.parse::<i32>() else {
            return Ok(None);
        };
        Ok(self
            .versions(provider, claim_id)
            .await?
            .into_iter()
            .find(|r| r.version == version))
    }
}
