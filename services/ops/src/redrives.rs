//! Which dead letters were put back from the console, by whom, to where. A redrive publishes the
//! letter again; doing it twice would hand the consumers the event twice, so the second is
//! refused with what the first did.

use chrono::Utc;
use hixbus_service::ReadModelError;
use hixbus_storage::Database;
use serde::Serialize;

/// A claim on a redrive older than this, never completed (the service stopped between claiming
/// and publishing), may be taken again.
const ABANDONED_AFTER_MS: i64 = 60_000;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Redrive {
    pub dead_letter: String,
    pub redriven_by: String,
    pub redriven_at_ms: i64,
    /// `topic/partition/offset` it was published to; `None` while under way.
    pub redriven_to: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Redrives {
    db: Database,
}

impl Redrives {
    pub async fn new(db: Database) -> Result<Self, sqlx::Error> {
        db.migrate(&crate::MIGRATIONS).await?;
        Ok(Self { db })
    }

    /// The redrives of any of `dead_letters`, by dead letter: one query for a page of them.
    pub async fn get_all(
        &self,
        dead_letters: &[String],
    ) -> Result<std::collections::HashMap<String, Redrive>, ReadModelError> {
        let mut found = std::collections::HashMap::new();
        for chunk in dead_letters.chunks(500) {
            let sql = format!(
                "SELECT dead_letter, redriven_by, redriven_at, redriven_to FROM ops_redrives
                 WHERE dead_letter IN ({})",
                hixbus_storage::placeholders(1, chunk.len())
            );
            let mut query = sqlx::query_as::<_, (String, String, i64, Option<String>)>(&sql);
            for d in chunk {
                query = query.bind(d);
            }
            for (dead_letter, redriven_by, redriven_at_ms, redriven_to) in
                query.fetch_all(&self.db.pool).await?
            {
                found.insert(
                    dead_letter.clone(),
                    Redrive {
                        dead_letter,
                        redriven_by,
                        redriven_at_ms,
                        redriven_to,
                    },
                );
            }
        }
        Ok(found)
    }

    pub async fn get(&self, dead_letter: &str) -> Result<Option<Redrive>, ReadModelError> {
        let row: Option<(String, String, i64, Option<String>)> = sqlx::query_as(
            "SELECT dead_letter, redriven_by, redriven_at, redriven_to FROM ops_redrives
             WHERE dead_letter = $1",
        )
        .bind(dead_letter)
        .fetch_optional(&self.db.pool)
        .await?;
        Ok(row.map(
            |(dead_letter, redriven_by, redriven_at_ms, redriven_to)| Redrive {
                dead_letter,
                redriven_by,
                redriven_at_ms,
                redriven_to,
            },
        ))
    }

    /// Claims `dead_letter` for `by`'s redrive: `Ok(None)` when the claim is theirs now, else
    /// the redrive that holds it.
    pub async fn claim(
        &self,
        dead_letter: &str,
        by: &str,
    ) -> Result<Option<Redrive>, ReadModelError> {
        let now = Utc::now().timestamp_millis();
        let taken = sqlx::query(
            "INSERT INTO ops_redrives (dead_letter, redriven_by, redriven_at, redriven_to)
             VALUES ($1, $2, $3, NULL)
             ON CONFLICT (dead_letter) DO UPDATE SET redriven_by = excluded.redriven_by,
                 redriven_at = excluded.redriven_at
             WHERE ops_redrives.redriven_to IS NULL AND ops_redrives.redriven_at < $4",
        )
        .bind(dead_letter)
        .bind(by)
        .bind(now)
        .bind(now - ABANDONED_AFTER_MS)
        .execute(&self.db.pool)
        .await?
        .rows_affected();
        if taken == 1 {
            Ok(None)
        } else {
            Ok(self.get(dead_letter).await?)
        }
    }

    /// Completes a claimed redrive with where the letter went.
    pub async fn done(&self, dead_letter: &str, to: &str) -> Result<(), ReadModelError> {
        sqlx::query("UPDATE ops_redrives SET redriven_to = $2 WHERE dead_letter = $1")
            .bind(dead_letter)
            .bind(to)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// Gives a claim up (the publish failed): the letter may be redriven again.
    pub async fn release(&self, dead_letter: &str) -> Result<(), ReadModelError> {
        sqlx::query("DELETE FROM ops_redrives WHERE dead_letter = $1 AND redriven_to IS NULL")
            .bind(dead_letter)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn redrives() -> Redrives {
        Redrives::new(Database::connect("sqlite::memory:").await.unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_letter_is_redriven_once_and_a_failed_publish_frees_it() {
        let store = redrives().await;
        let letter = "prescriptions.dlq/0/7";
        assert_eq!(store.claim(letter, "operator-a").await.unwrap(), None);
        // A second operator while the first publishes: refused, told who holds it.
        let held = store.claim(letter, "operator-b").await.unwrap().unwrap();
        assert_eq!(held.redriven_by, "operator-a");
        assert_eq!(held.redriven_to, None);
        store.release(letter).await.unwrap();
        assert_eq!(store.claim(letter, "operator-b").await.unwrap(), None);
        store.done(letter, "prescriptions/0/42").await.unwrap();
        let done = store.claim(letter, "operator-a").await.unwrap().unwrap();
        assert_eq!(done.redriven_by, "operator-b");
        assert_eq!(done.redriven_to.as_deref(), Some("prescriptions/0/42"));
        // Released only while under way: a completed redrive stays.
        store.release(letter).await.unwrap();
        assert!(store.get(letter).await.unwrap().is_some());
    }
}
