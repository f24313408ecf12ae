//! What the gateway remembers: one row per (organization, prescription identifier), so the same
//! submission sent twice yields one prescription with the same ids, access code and event.
//!
//! The row is written before publishing and marked published after the broker acknowledged.
//! A crash or broker outage in between leaves it pending; the clinic's retry republishes the
//! same event id, which every consumer deduplicates.
//!
//! A resubmission must be the *same* request: the row keeps a digest of the normalized
//! submission, and other content under a used identifier is refused (it would otherwise be
//! answered with the first prescription's ids while the clinic believes it issued the second).

use hixbus_storage::Database;
use hixbus_storage::group::{GroupWrite, Grouped};
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmissionRow {
    pub prescription_id: String,
    pub event_id: String,
    pub access_code: String,
    pub published: bool,
    /// SHA-256 of the normalized submission; `None` for rows from before digests were kept.
    pub request_sha256: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Submissions {
    db: Database,
    /// Marks the prescriptions published at the same moment together (one statement).
    published: Grouped<MarkPublished>,
}

impl Submissions {
    pub async fn new(db: Database) -> Result<Self, sqlx::Error> {
        db.migrate(&crate::MIGRATIONS).await?;
        let published = Grouped::spawn(
            MarkPublished(db.clone()),
            hixbus_storage::ROWS_PER_STATEMENT,
        );
        Ok(Self { db, published })
    }

    /// The row for `(org_id, identifier)`: `fresh` if this is the first submission, else the
    /// one stored by the first. One statement: the no-op update on conflict makes `RETURNING`
    /// give the stored row, so a resubmission costs no second round trip and two racing ones
    /// get the same answer.
    pub async fn claim(
        &self,
        org_id: &str,
        identifier: &str,
        fresh: &SubmissionRow,
    ) -> Result<SubmissionRow, sqlx::Error> {
        let row = sqlx::query(
            "INSERT INTO gateway_submissions (org_id, identifier, prescription_id, event_id,
                 access_code, published, created_at, request_sha256)
             VALUES ($1, $2, $3, $4, $5, 0, $6, $7)
             ON CONFLICT (org_id, identifier) DO UPDATE SET org_id = excluded.org_id
             RETURNING prescription_id, event_id, access_code, published, request_sha256",
        )
        .bind(org_id)
        .bind(identifier)
        .bind(&fresh.prescription_id)
        .bind(&fresh.event_id)
        .bind(&fresh.access_code)
        .bind(chrono::Utc::now().to_rfc3339())
        .bind(fresh.request_sha256.as_deref())
        .fetch_one(&self.db.pool)
        .await?;
        Ok(SubmissionRow {
            prescription_id: row.try_get(0)?,
            event_id: row.try_get(1)?,
            access_code: row.try_get(2)?,
            published: row.try_get::<i64, _>(3)? != 0,
            request_sha256: row.try_get(4)?,
        })
    }

    /// Once the broker acknowledged: a resubmission then answers without publishing again.
    /// Requests at the same moment are marked in one statement ([`hixbus_storage::group`]).
    pub async fn mark_published(&self, prescription_id: &str) -> Result<(), sqlx::Error> {
        self.published.write(prescription_id.to_owned()).await
    }
}

/// Prescription ids to mark published.
struct MarkPublished(Database);

impl GroupWrite for MarkPublished {
    type Item = String;
    async fn write_all(&self, ids: &[String]) -> Result<(), sqlx::Error> {
        let sql = format!(
            "UPDATE gateway_submissions SET published = 1 WHERE prescription_id IN ({})",
            hixbus_storage::placeholders(1, ids.len())
        );
        let mut query = sqlx::query(&sql);
        for id in ids {
            query = query.bind(id.as_str());
        }
        query.execute(&self.0.pool).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(n: u32) -> SubmissionRow {
        SubmissionRow {
            prescription_id: format!("rx-{n}"),
            event_id: format!("ev-{n}"),
            access_code: format!("CODE{n}"),
            published: false,
            request_sha256: Some(format!("digest-{n}")),
        }
    }

    #[tokio::test]
    async fn a_resubmission_gets_the_first_rows_ids_and_sees_it_published() {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        let submissions = Submissions::new(db).await.unwrap();

        let first = submissions
            .claim("clinic-a", "bundle-1", &fresh(1))
            .await
            .unwrap();
        assert_eq!(first, fresh(1));
        let again = submissions
            .claim("clinic-a", "bundle-1", &fresh(2))
            .await
            .unwrap();
        assert_eq!(
            again,
            fresh(1),
            "the same ids, access code and event, and the first request's digest to compare"
        );

        submissions.mark_published("rx-1").await.unwrap();
        let after = submissions
            .claim("clinic-a", "bundle-1", &fresh(3))
            .await
            .unwrap();
        assert!(
            after.published,
            "a resubmission after publishing publishes nothing"
        );

        // The identifier is the clinic's own: another clinic's same identifier is another
        // prescription.
        let other = submissions
            .claim("clinic-b", "bundle-1", &fresh(4))
            .await
            .unwrap();
        assert_eq!(other, fresh(4));
    }

    /// Every issued prescription is marked published by its id; a scan of the whole table
    /// there made each request slower than the one before.
    #[tokio::test]
    async fn marking_published_finds_the_submission_by_index_not_by_scanning_them_all() {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        Submissions::new(db.clone()).await.unwrap();
        let plan = hixbus_storage::sqlite_plan(
            &db,
            "UPDATE gateway_submissions SET published = 1 WHERE prescription_id IN ('rx-1', 'rx-2')",
        )
        .await
        .unwrap();
        assert!(
            plan.iter()
                .any(|step| step.contains("USING INDEX gateway_submissions_by_prescription")),
            "{plan:?}"
        );
    }
}
