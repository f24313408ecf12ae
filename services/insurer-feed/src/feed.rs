//! Each insurer's feed: entries numbered 1, 2, 3… per insurer in the order they were recorded.
//! A number is handed out only after every smaller one is committed (appends take the insurer's
//! counter row in turn and hold it to commit), so a reader paging by "after N" never skips an
//! entry that commits late: the cursor is exact.

use hixbus_service::ReadModelError;
use hixbus_service::changes::{self, Source};
use hixbus_storage::Database;
use serde_json::{Value, json};
use sqlx::Row;
use sqlx::any::AnyRow;

/// The PostgreSQL channel new entries are announced on; the payload is `<insurer>/<seq>`.
pub const CHANNEL: &str = "hixbus_insurer_feed";

pub type Changes = changes::Changes<Feed>;

/// One entry of an insurer's feed.
#[derive(Debug, Clone)]
pub struct Entry {
    pub insurer_org: String,
    pub seq: i64,
    pub event_id: String,
    pub kind: String,
    pub subject_id: String,
    pub patient_ref: String,
    pub recorded_at: String,
    pub body: Value,
}

impl Entry {
    /// What the insurer reads: the cursor, and the event under its kind.
    pub fn item(&self) -> Value {
        let mut item = json!({
            "cursor": self.seq,
            "kind": self.kind,
            "event_id": self.event_id,
            "recorded_at": self.recorded_at,
        });
        item[&self.kind] = self.body.clone();
        item
    }

    pub fn key(&self) -> String {
        format!("{}/{}", self.insurer_org, self.seq)
    }
}

#[derive(Debug, Clone)]
pub struct Feed {
    db: Database,
}

const SELECT: &str = "SELECT insurer_org, seq, event_id, kind, subject_id, patient_ref,
    recorded_at, body FROM insurer_feed";

fn read(r: &AnyRow) -> Result<Entry, ReadModelError> {
    Ok(Entry {
        insurer_org: r.try_get(0)?,
        seq: r.try_get(1)?,
        event_id: r.try_get(2)?,
        kind: r.try_get(3)?,
        subject_id: r.try_get(4)?,
        patient_ref: r.try_get(5)?,
        recorded_at: r.try_get(6)?,
        body: serde_json::from_str(&r.try_get::<String, _>(7)?)?,
    })
}

impl Feed {
    pub async fn new(db: Database) -> Result<Self, sqlx::Error> {
        db.migrate(&crate::MIGRATIONS).await?;
        Ok(Self { db })
    }

    /// Appends an event to `insurer`'s feed inside the caller's transaction (what else it
    /// records commits with the entry); the entry, or `None` if it is there already. The
    /// insurer's counter stays taken until that transaction ends.
    pub async fn append_in(
        tx: &mut sqlx::AnyConnection,
        insurer: &str,
        kind: &str,
        event_id: &str,
        subject_id: &str,
        patient_ref: &str,
        body: &Value,
    ) -> Result<Option<Entry>, ReadModelError> {
        // Taking the insurer's counter first makes concurrent appends wait their turn; the
        // check for the event after it sees what the one before committed.
        let seq: i64 = sqlx::query_scalar(
            "INSERT INTO insurer_feed_counters (insurer_org, last_seq) VALUES ($1, 1)
             ON CONFLICT (insurer_org) DO UPDATE
             SET last_seq = insurer_feed_counters.last_seq + 1
             RETURNING last_seq",
        )
        .bind(insurer)
        .fetch_one(&mut *tx)
        .await?;
        let there =
            sqlx::query("SELECT 1 FROM insurer_feed WHERE insurer_org = $1 AND event_id = $2")
                .bind(insurer)
                .bind(event_id)
                .fetch_optional(&mut *tx)
                .await?;
        if there.is_some() {
            // Handing the number back: the counter is decremented, not left with a gap.
            sqlx::query(
                "UPDATE insurer_feed_counters SET last_seq = last_seq - 1 WHERE insurer_org = $1",
            )
            .bind(insurer)
            .execute(&mut *tx)
            .await?;
            return Ok(None);
        }
        let entry = Entry {
            insurer_org: insurer.to_owned(),
            seq,
            event_id: event_id.to_owned(),
            kind: kind.to_owned(),
            subject_id: subject_id.to_owned(),
            patient_ref: patient_ref.to_owned(),
            recorded_at: chrono::Utc::now().to_rfc3339(),
            body: body.clone(),
        };
        sqlx::query(
            "INSERT INTO insurer_feed (insurer_org, seq, event_id, kind, subject_id, patient_ref,
                 recorded_at, body)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&entry.insurer_org)
        .bind(entry.seq)
        .bind(&entry.event_id)
        .bind(&entry.kind)
        .bind(&entry.subject_id)
        .bind(&entry.patient_ref)
        .bind(&entry.recorded_at)
        .bind(body.to_string())
        .execute(&mut *tx)
        .await?;
        Ok(Some(entry))
    }

    /// `insurer`'s entries after the cursor `after`, at most `limit`, in order.
    pub async fn page(
        &self,
        insurer: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Entry>, ReadModelError> {
        let rows = sqlx::query(&format!(
            "{SELECT} WHERE insurer_org = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        ))
        .bind(insurer)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(read).collect()
    }

    /// Up to `limit` entries of `insurer`'s feed before cursor `before` (all: `None`), newest
    /// first: what a screen shows.
    pub async fn latest(
        &self,
        insurer: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Entry>, ReadModelError> {
        let rows = sqlx::query(&format!(
            "{SELECT} WHERE insurer_org = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
        ))
        .bind(insurer)
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(read).collect()
    }
}

impl Source for Feed {
    type Row = Entry;
    type Error = ReadModelError;

    async fn load(&self, key: &str) -> Result<Option<Entry>, ReadModelError> {
        let Some((insurer, seq)) = key.rsplit_once('/') else {
            return Ok(None);
        };
        let Ok(seq) = seq.parse::<i64>() else {
            return Ok(None);
        };
        Ok(self.page(insurer, seq - 1, 1).await?.pop())
    }
}
