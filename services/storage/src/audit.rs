//! The audit trail every service keeps: who read or changed which patient's data, and when.
//! One table shape everywhere, so a patient's trail can be gathered from every service the same
//! way.

use sqlx::{AnyConnection, Row};

use crate::Database;
use crate::group::{GroupWrite, Grouped};

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
    /// Commits the entries [`AuditLog::record`] is given at the same moment together.
    writer: Grouped<Writer>,
}

struct Writer(Database);

impl GroupWrite for Writer {
    type Item = NewRow;
    async fn write_all(&self, rows: &[NewRow]) -> Result<(), sqlx::Error> {
        insert_rows(&self.0.pool, rows).await
    }
}

/// One `audit_log` row as inserted.
struct NewRow {
    at: String,
    org_id: String,
    action: String,
    subject_id: String,
    patient_ref: String,
}

impl NewRow {
    fn new(at: String, org_id: &str, action: &str, subject_id: &str, patient_ref: &str) -> Self {
        Self {
            at,
            org_id: org_id.to_owned(),
            action: action.to_owned(),
            subject_id: subject_id.to_owned(),
            patient_ref: patient_ref.to_owned(),
        }
    }
}

impl AuditLog {
    pub async fn new(db: Database) -> Result<Self, sqlx::Error> {
        db.migrate(&crate::MIGRATIONS).await?;
        let writer = Grouped::spawn(Writer(db.clone()), RECORD_CHUNK);
        Ok(Self { db, writer })
    }

    /// Records one entry, committed before this returns. Entries recorded at the same moment
    /// (concurrent requests) are committed together ([`crate::group`]): on the clinic
    /// gateway's request path the audit row was one statement of five per prescription.
    pub async fn record(
        &self,
        org_id: &str,
        action: &str,
        subject_id: &str,
        patient_ref: &str,
    ) -> Result<(), sqlx::Error> {
        let row = NewRow::new(now(), org_id, action, subject_id, patient_ref);
        self.writer.write(row).await
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
        let row = NewRow::new(now(), org_id, action, subject_id, patient_ref);
        insert_rows(conn, &[row]).await
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
        let at = now();
        let rows: Vec<NewRow> = accesses
            .iter()
            .map(|(subject_id, patient_ref)| {
                NewRow::new(at.clone(), org_id, action, subject_id, patient_ref)
            })
            .collect();
        insert_rows(conn, &rows).await
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

/// An entry's time: RFC 3339 with microseconds, so a trail sorts by it.
fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// One multi-row insert: a row about a patient waits to be shipped to their trail; a refused
/// request that named no patient stays local.
async fn insert_rows(
    executor: impl sqlx::Executor<'_, Database = sqlx::Any>,
    rows: &[NewRow],
) -> Result<(), sqlx::Error> {
    const COLUMNS: usize = 7;
    let values = crate::value_rows(rows.len(), COLUMNS);
    let sql = format!(
        "INSERT INTO audit_log (at, org_id, action, subject_id, patient_ref, event_id, shipped)
         VALUES {values}"
    );
    let mut query = sqlx::query(&sql);
    for row in rows {
        query = query
            .bind(row.at.as_str())
            .bind(row.org_id.as_str())
            .bind(row.action.as_str())
            .bind(row.subject_id.as_str())
            .bind(row.patient_ref.as_str())
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(i64::from(row.patient_ref.is_empty()));
    }
    query.execute(executor).await.map(drop)
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

    /// Concurrent requests' entries are committed together, and one entry the database refuses
    /// fails only its own caller: its neighbours in the group are written and told so.
    #[tokio::test]
    async fn entries_recorded_together_are_committed_together_and_a_refused_one_fails_alone() {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        let log = AuditLog::new(db.clone()).await.unwrap();
        // A database that refuses one entry (as a constraint would).
        sqlx::query(
            "CREATE TRIGGER refuse BEFORE INSERT ON audit_log WHEN NEW.subject_id = 'rx-refused'
             BEGIN SELECT RAISE(ABORT, 'refused'); END",
        )
        .execute(&db.pool)
        .await
        .unwrap();
        let subjects: Vec<String> = (0..120)
            .map(|i| match i {
                60 => "rx-refused".to_owned(),
                i => format!("rx-{i}"),
            })
            .collect();
        let outcomes = futures::future::join_all(
            subjects
                .iter()
                .map(|subject| log.record("pharmacy-a", "inbox.read", subject, "patient-1")),
        )
        .await;
        for (subject, outcome) in subjects.iter().zip(&outcomes) {
            assert_eq!(
                outcome.is_err(),
                subject == "rx-refused",
                "{subject}: {outcome:?}"
            );
        }
        let trail = log.for_patient("patient-1").await.unwrap();
        assert_eq!(trail.len(), 119);
        assert!(trail.iter().all(|e| e.subject_id != "rx-refused"));
        let written: std::collections::BTreeSet<&str> =
            trail.iter().map(|e| e.subject_id.as_str()).collect();
        assert_eq!(written.len(), 119, "each entry once");
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
