//! The audit trail every service keeps: who read or changed which patient's data, and when.
//! One table shape everywhere, so a patient's trail can be gathered from every service the same
//! way.

use sqlx::{AnyConnection, Row};

use crate::Database;

/// One audited access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// RFC 3339.
    pub at: String,
    pub org_id: String,
    /// What was done, e.g. `inbox.read`, `dispense`.
    pub action: String,
    /// What was touched, e.g. a prescription id.
    pub subject_id: String,
}

/// A row of the audit log waiting to be published to the patient's trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shippable {
    /// The row's own id: the trail entry's event id.
    pub event_id: String,
    pub patient_ref: String,
    pub entry: AuditEntry,
}

/// Rows of one multi-row insert.
pub const RECORD_CHUNK: usize = crate::ROWS_PER_STATEMENT;

#[derive(Debug, Clone)]
pub struct AuditLog {
    db: Database,
}

impl AuditLog {
    pub async fn new(db: Database) -> Result<Self, sqlx::Error> {
        db.migrate(&crate::MIGRATIONS).await?;
        Ok(Self { db })
    }

    pub async fn record(
        &self,
        org_id: &str,
        action: &str,
        subject_id: &str,
        patient_ref: &str,
    ) -> Result<(), sqlx::Error> {
        let mut conn = self.db.pool.acquire().await?;
        Self::record_in(&mut conn, org_id, action, subject_id, patient_ref).await
    }

    /// Records an entry on `conn`: inside a transaction, the entry commits with the change it
    /// describes or not at all.
    pub async fn record_in(
        conn: &mut AnyConnection,
        org_id: &str,
        action: &str,
        subject_id: &str,
        patient_ref: &str,
    ) -> Result<(), sqlx::Error> {
        // A row about a patient waits to be shipped to their trail; a refused request that
        // named no patient stays local.
        sqlx::query(
            "INSERT INTO audit_log (at, org_id, action, subject_id, patient_ref, event_id, shipped)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .bind(org_id)
        .bind(action)
        .bind(subject_id)
        .bind(patient_ref)
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(i64::from(patient_ref.is_empty()))
        .execute(conn)
        .await
        .map(drop)
    }

    /// Records that `org_id` did `action` to each `(subject_id, patient_ref)` of a page it is
    /// shown, in one statement per [`RECORD_CHUNK`] rows: a page of 50 rows cost 50 round trips,
    /// most of a console page's time (docs/performance.md). Every row is written or none is.
    pub async fn record_all<'a>(
        &self,
        org_id: &str,
        action: &str,
        accesses: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<(), sqlx::Error> {
        let accesses: Vec<(&str, &str)> = accesses.into_iter().collect();
        match accesses.as_slice() {
            [] => Ok(()),
            [(subject_id, patient_ref)] => {
                self.record(org_id, action, subject_id, patient_ref).await
            }
            _ if accesses.len() <= RECORD_CHUNK => {
                let mut conn = self.db.pool.acquire().await?;
                Self::insert_all(&mut conn, org_id, action, &accesses).await
            }
            _ => {
                let mut tx = self.db.pool.begin().await?;
                for chunk in accesses.chunks(RECORD_CHUNK) {
                    Self::insert_all(&mut tx, org_id, action, chunk).await?;
                }
                tx.commit().await
            }
        }
    }

    async fn insert_all(
        conn: &mut AnyConnection,
        org_id: &str,
        action: &str,
        accesses: &[(&str, &str)],
    ) -> Result<(), sqlx::Error> {
        const COLUMNS: usize = 7;
        let values = crate::value_rows(accesses.len(), COLUMNS);
        let sql = format!(
            "INSERT INTO audit_log (at, org_id, action, subject_id, patient_ref, event_id, shipped)
             VALUES {values}"
        );
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let mut query = sqlx::query(&sql);
        for (subject_id, patient_ref) in accesses {
            query = query
                .bind(at.clone())
                .bind(org_id)
                .bind(action)
                .bind(*subject_id)
                .bind(*patient_ref)
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(i64::from(patient_ref.is_empty()));
        }
        query.execute(conn).await.map(drop)
    }

    /// Up to `limit` rows not shipped to the trail yet, oldest first.
    pub async fn unshipped(&self, limit: i64) -> Result<Vec<Shippable>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT event_id, at, org_id, action, subject_id, patient_ref FROM audit_log
             WHERE shipped = 0 AND event_id IS NOT NULL ORDER BY at, event_id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Shippable {
                    event_id: r.try_get(0)?,
                    patient_ref: r.try_get(5)?,
                    entry: AuditEntry {
                        at: r.try_get(1)?,
                        org_id: r.try_get(2)?,
                        action: r.try_get(3)?,
                        subject_id: r.try_get(4)?,
                    },
                })
            })
            .collect()
    }

    /// Marks rows as shipped (published and acknowledged).
    pub async fn mark_shipped(&self, event_ids: &[String]) -> Result<(), sqlx::Error> {
        for chunk in event_ids.chunks(500) {
            let sql = format!(
                "UPDATE audit_log SET shipped = 1 WHERE event_id IN ({})",
                crate::placeholders(1, chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(id);
            }
            query.execute(&self.db.pool).await?;
        }
        Ok(())
    }

    /// Everything recorded about one patient, oldest first.
    pub async fn for_patient(&self, patient_ref: &str) -> Result<Vec<AuditEntry>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT at, org_id, action, subject_id FROM audit_log
             WHERE patient_ref = $1 ORDER BY at",
        )
        .bind(patient_ref)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    at: r.try_get(0)?,
                    org_id: r.try_get(1)?,
                    action: r.try_get(2)?,
                    subject_id: r.try_get(3)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each batch shipped to the trails is marked by its rows' ids; a scan of the whole log
    /// there made shipping slower with every row the log ever took.
    #[tokio::test]
    async fn shipped_rows_are_found_by_index_not_by_scanning_the_log() {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        AuditLog::new(db.clone()).await.unwrap();
        let plan = crate::sqlite_plan(
            &db,
            "UPDATE audit_log SET shipped = 1 WHERE event_id IN ('a', 'b')",
        )
        .await
        .unwrap();
        assert!(
            plan.iter()
                .any(|step| step.contains("USING INDEX audit_log_by_event")),
            "{plan:?}"
        );
    }

    #[tokio::test]
    async fn a_patients_trail_lists_who_did_what_in_order() {
        let dir = std::env::temp_dir().join(format!("hixbus-audit-{}.db", std::process::id()));
        let db = Database::connect(&format!("sqlite://{}", dir.display()))
            .await
            .unwrap();
        let log = AuditLog::new(db).await.unwrap();
        log.record("pharmacy-a", "inbox.read", "rx-1", "patient-1")
            .await
            .unwrap();
        log.record("pharmacy-a", "dispense", "rx-1", "patient-1")
            .await
            .unwrap();
        log.record("clinic-b", "clinic.read", "rx-2", "patient-2")
            .await
            .unwrap();
        let trail = log.for_patient("patient-1").await.unwrap();
        let actions: Vec<(&str, &str)> = trail
            .iter()
            .map(|e| (e.org_id.as_str(), e.action.as_str()))
            .collect();
        assert_eq!(
            actions,
            [("pharmacy-a", "inbox.read"), ("pharmacy-a", "dispense")]
        );
        assert!(trail[0].at <= trail[1].at);
        let _ = std::fs::remove_file(dir);
    }

    #[tokio::test]
    async fn a_page_is_recorded_row_by_row_in_one_go_and_chunks_commit_together() {
        let dir = std::env::temp_dir().join(format!("hixbus-audit-all-{}.db", std::process::id()));
        let db = Database::connect(&format!("sqlite://{}", dir.display()))
            .await
            .unwrap();
        let log = AuditLog::new(db.clone()).await.unwrap();
        log.record_all("pharmacy-a", "inbox.read", std::iter::empty())
            .await
            .unwrap();
        let page: Vec<(String, String)> = (0..RECORD_CHUNK + 3)
            .map(|i| (format!("rx-{i}"), format!("patient-{}", i % 2)))
            .collect();
        let shown = page.iter().map(|(s, p)| (s.as_str(), p.as_str()));
        log.record_all("pharmacy-a", "inbox.read", shown)
            .await
            .unwrap();
        log.record_all("pharmacy-a", "refused.read", [("rx-x", "")])
            .await
            .unwrap();
        let trail = log.for_patient("patient-1").await.unwrap();
        assert_eq!(trail.len(), (RECORD_CHUNK + 3) / 2);
        assert!(trail.iter().all(|e| e.action == "inbox.read"));
        assert!(
            trail
                .iter()
                .any(|e| e.subject_id == format!("rx-{}", RECORD_CHUNK + 1))
        );
        // Rows about a patient wait for the trail; one that named no patient does not.
        let waiting = log.unshipped(10_000).await.unwrap();
        assert_eq!(waiting.len(), RECORD_CHUNK + 3);
        let ids: std::collections::BTreeSet<&str> =
            waiting.iter().map(|w| w.event_id.as_str()).collect();
        assert_eq!(ids.len(), waiting.len(), "each row has its own event id");
        let _ = std::fs::remove_file(dir);
    }
}
