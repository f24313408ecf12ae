//! What the gateway remembers: one row per (organization, prescription identifier), so the same
//! submission sent twice yields one prescription with the same ids, access code and event.
//!
//! The row is written before publishing and marked published after the broker acknowledged.
//! A crash or broker outage in between leaves it pending; the clinic's retry republishes the
//! same event id, which every consumer deduplicates.

use hixbus_storage::Database;
use sqlx::Row;

const MIGRATION: &[&str] = &["CREATE TABLE IF NOT EXISTS gateway_submissions (
        org_id TEXT NOT NULL,
        identifier TEXT NOT NULL,
        prescription_id TEXT NOT NULL UNIQUE,
        event_id TEXT NOT NULL,
        access_code TEXT NOT NULL,
        published BIGINT NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        PRIMARY KEY (org_id, identifier)
    )"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmissionRow {
    pub prescription_id: String,
    pub event_id: String,
    pub access_code: String,
    pub published: bool,
}

#[derive(Debug, Clone)]
pub struct Submissions {
    db: Database,
}

impl Submissions {
    pub async fn new(db: Database) -> Result<Self, sqlx::Error> {
        db.migrate(726_144, MIGRATION).await?;
        Ok(Self { db })
    }

    /// The row for `(org_id, identifier)`: `fresh` if this is the first submission, else the
    /// one stored by the first.
    pub async fn claim(
        &self,
        org_id: &str,
        identifier: &str,
        fresh: &SubmissionRow,
    ) -> Result<SubmissionRow, sqlx::Error> {
        sqlx::query(
            "INSERT INTO gateway_submissions
                 (org_id, identifier, prescription_id, event_id, access_code, published, created_at)
             VALUES ($1, $2, $3, $4, $5, 0, $6)
             ON CONFLICT (org_id, identifier) DO NOTHING",
        )
        .bind(org_id)
        .bind(identifier)
        .bind(&fresh.prescription_id)
        .bind(&fresh.event_id)
        .bind(&fresh.access_code)
        .bind(chrono::Utc::now().to_rfc3339())
        .execute(&self.db.pool)
        .await?;
        let row = sqlx::query(
            "SELECT prescription_id, event_id, access_code, published
             FROM gateway_submissions WHERE org_id = $1 AND identifier = $2",
        )
        .bind(org_id)
        .bind(identifier)
        .fetch_one(&self.db.pool)
        .await?;
        Ok(SubmissionRow {
            prescription_id: row.try_get(0)?,
            event_id: row.try_get(1)?,
            access_code: row.try_get(2)?,
            published: row.try_get::<i64, _>(3)? != 0,
        })
    }

    pub async fn mark_published(&self, prescription_id: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE gateway_submissions SET published = 1 WHERE prescription_id = $1")
            .bind(prescription_id)
            .execute(&self.db.pool)
            .await
            .map(drop)
    }
}
