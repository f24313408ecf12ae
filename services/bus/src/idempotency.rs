//! Exactly-once effects on at-least-once delivery.
//!
//! Kafka redelivers a record whenever a consumer dies or a rebalance happens between the effect
//! and the offset commit; broker transactions could close that gap only for effects that are
//! themselves Kafka records, and Tansu has none. Instead the handler claims the event id in the
//! same database transaction as its effect: the claim and the effect commit together or not at
//! all, and a redelivered event finds its claim and is skipped. Concurrent claims of one event
//! (two consumers during a rebalance) serialize on the primary key; the loser sees it as done.

use chrono::Utc;
use hixbus_storage::Database;
use sqlx::{Any, AnyConnection, Transaction};

/// The claims table (versions 2000–2999).
static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Claims event ids for one consumer (usually the consumer group name).
#[derive(Debug, Clone)]
pub struct Idempotency {
    db: Database,
    consumer: String,
}

/// An open transaction holding the claim on one event. Do the effect through [`Claim::conn`],
/// then [`Claim::commit`]; dropping it rolls the claim back so the event will be processed again.
#[derive(Debug)]
pub struct Claim {
    tx: Transaction<'static, Any>,
}

impl Claim {
    pub fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl Idempotency {
    /// Uses `db` (creating the claims table if needed) for `consumer`'s claims.
    pub async fn new(db: Database, consumer: impl Into<String>) -> Result<Self, sqlx::Error> {
        db.migrate(&MIGRATIONS).await?;
        Ok(Self {
            db,
            consumer: consumer.into(),
        })
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Starts the effect for `event_id`, or returns `None` when an earlier delivery already
    /// committed it.
    pub async fn claim(&self, event_id: &str) -> Result<Option<Claim>, sqlx::Error> {
        let mut tx = self.db.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO bus_processed_events (consumer, event_id, processed_at)
             VALUES ($1, $2, $3) ON CONFLICT (consumer, event_id) DO NOTHING",
        )
        .bind(&self.consumer)
        .bind(event_id)
        .bind(Utc::now().to_rfc3339())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        Ok(Some(Claim { tx }))
    }

    /// Whether `event_id`'s effect was committed.
    pub async fn is_done(&self, event_id: &str) -> Result<bool, sqlx::Error> {
        let row =
            sqlx::query("SELECT 1 FROM bus_processed_events WHERE consumer = $1 AND event_id = $2")
                .bind(&self.consumer)
                .bind(event_id)
                .fetch_optional(&self.db.pool)
                .await?;
        Ok(row.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn sqlite() -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("claims.db").display());
        (dir, Database::connect(&url).await.unwrap())
    }

    #[tokio::test]
    async fn an_effect_commits_once_and_a_redelivery_is_skipped() {
        let (_dir, db) = sqlite().await;
        sqlx::query("CREATE TABLE effects (event_id TEXT)")
            .execute(&db.pool)
            .await
            .unwrap();
        let idem = Idempotency::new(db.clone(), "pharmacy").await.unwrap();
        for _ in 0..3 {
            if let Some(mut claim) = idem.claim("ev-1").await.unwrap() {
                sqlx::query("INSERT INTO effects VALUES ('ev-1')")
                    .execute(claim.conn())
                    .await
                    .unwrap();
                claim.commit().await.unwrap();
            }
        }
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM effects")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(count, 1);
        assert!(idem.is_done("ev-1").await.unwrap());
    }

    #[tokio::test]
    async fn an_abandoned_claim_leaves_the_event_to_be_processed_again() {
        let (_dir, db) = sqlite().await;
        let idem = Idempotency::new(db, "pharmacy").await.unwrap();
        let claim = idem.claim("ev-2").await.unwrap().expect("first claim");
        drop(claim); // the consumer crashed before committing
        assert!(!idem.is_done("ev-2").await.unwrap());
        assert!(idem.claim("ev-2").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn claims_are_per_consumer() {
        let (_dir, db) = sqlite().await;
        let a = Idempotency::new(db.clone(), "pharmacy").await.unwrap();
        let b = Idempotency::new(db, "safety-check").await.unwrap();
        a.claim("ev-3")
            .await
            .unwrap()
            .unwrap()
            .commit()
            .await
            .unwrap();
        assert!(b.claim("ev-3").await.unwrap().is_some());
    }
}
