//! The export's tables: items waiting for a release, birth dates, and the releases made.
//!
//! A release claims its items with one conditional update (`pending` → `releasing`, with the
//! release's id), so two replicas never release the same item; a release decides what it
//! publishes before publishing anything and keeps that decision, so one that stopped half way
//! (a crash, the broker away) is taken up again under the same id and publishes the same
//! records with the same ids.

use std::collections::HashMap;

use hixbus_contracts::Date;
use hixbus_service::ReadModelError;
use hixbus_storage::{Database, placeholders};

use crate::items::{Item, Keyed};

/// Rows one statement binds at most (SQLite's limit is far above; PostgreSQL's is 65,535).
const CHUNK: usize = 500;

#[derive(Debug, Clone)]
pub struct Store {
    db: Database,
}

/// What the export knows of a patient (from their prescriptions' insurance data).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Demographics {
    pub birth: Option<Date>,
    pub sex: Option<String>,
}

/// An item a release claimed.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    pub item_key: String,
    pub patient_ref: String,
    pub item: Item,
}

impl Store {
    pub async fn new(db: Database) -> Result<Self, sqlx::Error> {
        db.migrate(&crate::MIGRATIONS).await?;
        Ok(Self { db })
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Keeps `items` for `project` until a release takes them; an item kept already (a
    /// redelivery, a replay — even one released long ago) is left as it is. How many were new.
    pub async fn add(
        &self,
        project: &str,
        items: &[Keyed],
        now_ms: i64,
    ) -> Result<u64, ReadModelError> {
        let mut added = 0;
        // One statement per hundred items: an event's items arrive together.
        for chunk in items.chunks(100) {
            let rows: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let b = 3 + i * 3;
                    format!("($1, ${b}, ${}, $2, 'pending', ${})", b + 1, b + 2)
                })
                .collect();
            let sql = format!(
                "INSERT INTO research_items (project, item_key, patient_ref, received_ms, status, item)
                 VALUES {} ON CONFLICT (project, item_key) DO NOTHING",
                rows.join(", ")
            );
            let mut query = sqlx::query(&sql).bind(project).bind(now_ms);
            for (key, item) in chunk {
                query = query
                    .bind(key)
                    .bind(&item.patient_ref)
                    .bind(serde_json::to_string(item)?);
            }
            added += query.execute(&self.db.pool).await?.rows_affected();
        }
        Ok(added)
    }

    /// Withdraws every waiting item of the patient for `project` (they opted out): none of it
    /// is released, and what it said is cleared. How many.
    pub async fn withdraw(&self, project: &str, patient_ref: &str) -> Result<u64, ReadModelError> {
        Ok(sqlx::query(
            "UPDATE research_items SET status = 'opted_out', item = '{}'
             WHERE project = $1 AND patient_ref = $2 AND status = 'pending'",
        )
        .bind(project)
        .bind(patient_ref)
        .execute(&self.db.pool)
        .await?
        .rows_affected())
    }

    /// Keeps what a prescription's insurance data say of the patient; what it does not say
    /// leaves what was known.
    pub async fn put_patient(
        &self,
        patient_ref: &str,
        birth: Option<Date>,
        sex: Option<&str>,
    ) -> Result<(), ReadModelError> {
        sqlx::query(
            "INSERT INTO research_patients (patient_ref, birth_date, sex) VALUES ($1, $2, $3)
             ON CONFLICT (patient_ref) DO UPDATE SET
                 birth_date = COALESCE(excluded.birth_date, research_patients.birth_date),
                 sex = COALESCE(excluded.sex, research_patients.sex)",
        )
        .bind(patient_ref)
        .bind(birth.map(Date::days_since_epoch))
        .bind(sex)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// What is known of each of `patients`.
    pub async fn demographics(
        &self,
        patients: &[String],
    ) -> Result<HashMap<String, Demographics>, ReadModelError> {
        let mut out = HashMap::new();
        for chunk in patients.chunks(CHUNK) {
            let sql = format!(
                "SELECT patient_ref, birth_date, sex FROM research_patients WHERE patient_ref IN ({})",
                placeholders(1, chunk.len())
            );
            let mut query = sqlx::query_as::<_, (String, Option<i32>, Option<String>)>(&sql);
            for p in chunk {
                query = query.bind(p);
            }
            for (p, days, sex) in query.fetch_all(&self.db.pool).await? {
                let birth = days.map(Date::from_days_since_epoch);
                out.insert(p, Demographics { birth, sex });
            }
        }
        Ok(out)
    }

    /// How many of the project's items wait, and since when the oldest (unix ms).
    pub async fn waiting(&self, project: &str) -> Result<(i64, Option<i64>), ReadModelError> {
        Ok(sqlx::query_as::<_, (i64, Option<i64>)>(
            "SELECT COUNT(*), MIN(received_ms) FROM research_items
             WHERE project = $1 AND status = 'pending'",
        )
        .bind(project)
        .fetch_one(&self.db.pool)
        .await?)
    }

    /// Claims up to `limit` of the project's waiting items, oldest first, for `release_id`.
    pub async fn claim(
        &self,
        project: &str,
        release_id: &str,
        limit: i64,
        now_ms: i64,
    ) -> Result<u64, ReadModelError> {
        Ok(sqlx::query(
            "UPDATE research_items SET status = 'releasing', release_id = $1, claimed_ms = $2
             WHERE project = $3 AND status = 'pending' AND item_key IN (
                 SELECT item_key FROM research_items WHERE project = $3 AND status = 'pending'
                 ORDER BY received_ms, item_key LIMIT $4)",
        )
        .bind(release_id)
        .bind(now_ms)
        .bind(project)
        .bind(limit)
        .execute(&self.db.pool)
        .await?
        .rows_affected())
    }

    /// A release of the project that was claimed before `before_ms` and never finished.
    pub async fn unfinished(
        &self,
        project: &str,
        before_ms: i64,
    ) -> Result<Option<String>, ReadModelError> {
        Ok(sqlx::query_scalar::<_, String>(
            "SELECT release_id FROM research_items
             WHERE project = $1 AND status = 'releasing' AND claimed_ms < $2
             ORDER BY claimed_ms LIMIT 1",
        )
        .bind(project)
        .bind(before_ms)
        .fetch_optional(&self.db.pool)
        .await?)
    }

    /// The items `release_id` claimed.
    pub async fn claimed(&self, release_id: &str) -> Result<Vec<Claimed>, ReadModelError> {
        let rows = sqlx::query_as::<_, (String, String, String)>(
            "SELECT item_key, patient_ref, item FROM research_items
             WHERE release_id = $1 AND status = 'releasing' ORDER BY item_key",
        )
        .bind(release_id)
        .fetch_all(&self.db.pool)
        .await?;
        rows.into_iter()
            .map(|(item_key, patient_ref, item)| {
                Ok(Claimed {
                    item_key,
                    patient_ref,
                    item: serde_json::from_str(&item)?,
                })
            })
            .collect()
    }

    /// Gives a held release's items back to the waiting ones.
    pub async fn unclaim(&self, release_id: &str) -> Result<(), ReadModelError> {
        sqlx::query(
            "UPDATE research_items SET status = 'pending', release_id = NULL, claimed_ms = NULL
             WHERE release_id = $1 AND status = 'releasing'",
        )
        .bind(release_id)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// Records what became of each claimed item (`released`, `suppressed`, `opted_out`) and
    /// clears it: nothing identifying stays once it is decided.
    pub async fn finish(
        &self,
        release_id: &str,
        status: &str,
        item_keys: &[&str],
    ) -> Result<(), ReadModelError> {
        let mut conn = self.db.pool.acquire().await?;
        Self::finish_in(&mut conn, release_id, status, item_keys).await
    }

    /// [`Store::finish`] on `conn`: in a transaction, with what must happen with it.
    pub async fn finish_in(
        conn: &mut sqlx::AnyConnection,
        release_id: &str,
        status: &str,
        item_keys: &[&str],
    ) -> Result<(), ReadModelError> {
        for chunk in item_keys.chunks(CHUNK) {
            let sql = format!(
                "UPDATE research_items SET status = $1, item = '{{}}'
                 WHERE release_id = $2 AND status = 'releasing' AND item_key IN ({})",
                placeholders(3, chunk.len())
            );
            let mut query = sqlx::query(&sql).bind(status).bind(release_id);
            for key in chunk {
                query = query.bind(*key);
            }
            query.execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// Keeps `decision` for `release_id` unless one is kept already, and returns the one kept:
    /// of two replicas deciding the same release at once, both then publish the first decision.
    pub async fn decide<D: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        release_id: &str,
        project: &str,
        now_ms: i64,
        decision: &D,
    ) -> Result<D, ReadModelError> {
        sqlx::query(
            "INSERT INTO research_decisions (release_id, project, decided_ms, decision)
             VALUES ($1, $2, $3, $4) ON CONFLICT (release_id) DO NOTHING",
        )
        .bind(release_id)
        .bind(project)
        .bind(now_ms)
        .bind(serde_json::to_string(decision)?)
        .execute(&self.db.pool)
        .await?;
        self.decision(release_id)
            .await?
            .ok_or_else(|| ReadModelError::from(sqlx::Error::RowNotFound))
    }

    /// The decision kept for `release_id`, if it was decided.
    pub async fn decision<D: serde::de::DeserializeOwned>(
        &self,
        release_id: &str,
    ) -> Result<Option<D>, ReadModelError> {
        let text = sqlx::query_scalar::<_, String>(
            "SELECT decision FROM research_decisions WHERE release_id = $1",
        )
        .bind(release_id)
        .fetch_optional(&self.db.pool)
        .await?;
        Ok(text.map(|t| serde_json::from_str(&t)).transpose()?)
    }

    /// Drops a finished release's decision (on `conn`, in the transaction that finishes the
    /// release): what it published is on the topic, its manifest in `research_releases`.
    pub async fn forget_decision_in(
        conn: &mut sqlx::AnyConnection,
        release_id: &str,
    ) -> Result<(), ReadModelError> {
        sqlx::query("DELETE FROM research_decisions WHERE release_id = $1")
            .bind(release_id)
            .execute(conn)
            .await?;
        Ok(())
    }

    pub async fn save_release(
        &self,
        release_id: &str,
        project: &str,
        at_ms: i64,
        outcome: &str,
        manifest: &serde_json::Value,
    ) -> Result<(), ReadModelError> {
        sqlx::query(
            "INSERT INTO research_releases (release_id, project, at_ms, outcome, manifest)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (release_id) DO UPDATE SET at_ms = excluded.at_ms,
                 outcome = excluded.outcome, manifest = excluded.manifest",
        )
        .bind(release_id)
        .bind(project)
        .bind(at_ms)
        .bind(outcome)
        .bind(manifest.to_string())
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// The project's latest releases, newest first.
    pub async fn releases(
        &self,
        project: &str,
        limit: i64,
    ) -> Result<Vec<serde_json::Value>, ReadModelError> {
        let rows = sqlx::query_scalar::<_, String>(
            "SELECT manifest FROM research_releases WHERE project = $1
             ORDER BY at_ms DESC, release_id LIMIT $2",
        )
        .bind(project)
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|m| serde_json::from_str(m))
            .collect::<Result<_, _>>()?)
    }

    /// How many of the project's items are in each status.
    pub async fn counts(&self, project: &str) -> Result<HashMap<String, i64>, ReadModelError> {
        let rows = sqlx::query_as::<_, (String, i64)>(
            "SELECT status, COUNT(*) FROM research_items WHERE project = $1 GROUP BY status",
        )
        .bind(project)
        .fetch_all(&self.db.pool)
        .await?;
        Ok(rows.into_iter().collect())
    }
}
