//! The patients' access trail, kept hash-chained: every `PatientDataAccessed` on `audit` (what
//! every service's audit log ships, `hixbus_service::trail`) appended to the chain of its
//! partition. Entry `n` stores the hash of entry `n-1` and its own,
//! `SHA-256(prev_hash ‖ n ‖ entry)`, over the entry's canonical JSON; [`verify`] walks each
//! chain and names the first entry that was altered, removed or reordered.
//!
//! What the chain proves: that the stored trail is the one that was appended, in that order,
//! unless whoever changed it also recomputed every hash after the change. Publishing the chain
//! heads elsewhere (`hixbus audit verify` prints them) anchors them against that too.

use hixbus_contracts::PatientDataAccessed;
use hixbus_service::ReadModelError;
use hixbus_storage::Database;
use sha2::{Digest, Sha256};
use sqlx::Row;

/// The hash before the first entry of every chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hash of entry `seq` with `entry` after `prev_hash`.
pub fn link_hash(prev_hash: &str, seq: i64, entry: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(seq.to_string().as_bytes());
    h.update(b"\n");
    h.update(entry.as_bytes());
    hex::encode(h.finalize())
}

/// Appends `e` to chain `chain`, once: an entry already in the trail (a redelivery, a second
/// shipping) is not appended again. `true` if it was appended.
pub async fn append(
    db: &Database,
    chain: i32,
    e: &PatientDataAccessed,
) -> Result<bool, ReadModelError> {
    let entry = serde_json::to_string(e)?;
    let mut tx = db.pool.begin().await?;
    let known: Option<i64> = sqlx::query_scalar("SELECT seq FROM audit_trail WHERE event_id = $1")
        .bind(&e.envelope.event_id)
        .fetch_optional(&mut *tx)
        .await?;
    if known.is_some() {
        return Ok(false);
    }
    let last =
        sqlx::query("SELECT seq, hash FROM audit_trail WHERE chain = $1 ORDER BY seq DESC LIMIT 1")
            .bind(chain)
            .fetch_optional(&mut *tx)
            .await?;
    let (seq, prev_hash) = match last {
        Some(r) => (r.try_get::<i64, _>(0)? + 1, r.try_get::<String, _>(1)?),
        None => (0, GENESIS.to_owned()),
    };
    let hash = link_hash(&prev_hash, seq, &entry);
    // The key (chain, seq) refuses a second writer appending the same number: its transaction
    // fails and the record is retried against the new end of the chain.
    sqlx::query(
        "INSERT INTO audit_trail (chain, seq, event_id, patient_ref, at, entry, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(chain)
    .bind(seq)
    .bind(&e.envelope.event_id)
    .bind(&e.envelope.patient_ref)
    .bind(e.envelope.occurred_at.unix_millis())
    .bind(&entry)
    .bind(&prev_hash)
    .bind(&hash)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Every trail entry about the patient under `refs`, newest first, with its place and hash.
pub async fn for_patient(
    db: &Database,
    refs: &[String],
) -> Result<Vec<(i32, i64, String, PatientDataAccessed)>, ReadModelError> {
    let sql = format!(
        "SELECT chain, seq, hash, entry FROM audit_trail WHERE patient_ref IN ({})
         ORDER BY at DESC, chain, seq DESC",
        hixbus_storage::placeholders(1, refs.len())
    );
    let mut query = sqlx::query(&sql);
    for r in refs {
        query = query.bind(r);
    }
    let rows = query.fetch_all(&db.pool).await?;
    rows.iter()
        .map(|r| {
            let entry: String = r.try_get(3)?;
            Ok((
                r.try_get::<i32, _>(0)?,
                r.try_get::<i64, _>(1)?,
                r.try_get::<String, _>(2)?,
                serde_json::from_str(&entry)?,
            ))
        })
        .collect()
}

/// What verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every chain is whole: (chain, entries, head hash) of each.
    Intact(Vec<(i32, i64, String)>),
    /// The first entry found wrong, and how.
    Broken {
        chain: i32,
        seq: i64,
        event_id: Option<String>,
        problem: String,
    },
}

/// Walks every chain from its start and checks each entry against the one before it.
pub async fn verify(db: &Database) -> Result<Verdict, ReadModelError> {
    let chains: Vec<i32> =
        sqlx::query_scalar("SELECT DISTINCT chain FROM audit_trail ORDER BY chain")
            .fetch_all(&db.pool)
            .await?;
    let mut heads = Vec::new();
    for chain in chains {
        let rows = sqlx::query(
            "SELECT seq, event_id, entry, prev_hash, hash FROM audit_trail WHERE chain = $1
             ORDER BY seq",
        )
        .bind(chain)
        .fetch_all(&db.pool)
        .await?;
        let mut expected_prev = GENESIS.to_owned();
        let mut expected_seq = 0i64;
        for r in &rows {
            let seq: i64 = r.try_get(0)?;
            let event_id: String = r.try_get(1)?;
            let entry: String = r.try_get(2)?;
            let prev_hash: String = r.try_get(3)?;
            let hash: String = r.try_get(4)?;
            let broken = |seq: i64, problem: String| Verdict::Broken {
                chain,
                seq,
                event_id: Some(event_id.clone()),
                problem,
            };
            if seq != expected_seq {
                return Ok(Verdict::Broken {
                    chain,
                    seq: expected_seq,
                    event_id: None,
                    problem: format!(
                        "entry {chain}/{expected_seq} was removed (the next is {seq})"
                    ),
                });
            }
            if prev_hash != expected_prev {
                return Ok(broken(
                    seq,
                    format!(
                        "entry {chain}/{seq} does not follow the entry before it: entries were reordered or one before it was replaced"
                    ),
                ));
            }
            if link_hash(&prev_hash, seq, &entry) != hash {
                return Ok(broken(
                    seq,
                    format!("entry {chain}/{seq} was altered: its content does not match its hash"),
                ));
            }
            expected_prev = hash;
            expected_seq += 1;
        }
        heads.push((chain, expected_seq, expected_prev));
    }
    Ok(Verdict::Intact(heads))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hixbus_contracts::samples;

    async fn trail_of(n: usize) -> (Database, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("trail.db").display());
        let db = Database::connect(&url).await.unwrap();
        crate::store::Store::new(db.clone()).await.unwrap();
        for i in 0..n {
            let mut e = samples::patient_data_accessed("pt-1");
            e.envelope.event_id = format!("e-{i}");
            e.subject = format!("rx-{i}");
            assert!(append(&db, 0, &e).await.unwrap());
            // Shipped twice: kept once.
            assert!(!append(&db, 0, &e).await.unwrap());
        }
        (db, dir)
    }

    async fn exec(db: &Database, sql: &str) {
        sqlx::query(sql).execute(&db.pool).await.unwrap();
    }

    fn broken_at(v: Verdict) -> (i64, String) {
        match v {
            Verdict::Broken { seq, problem, .. } => (seq, problem),
            Verdict::Intact(heads) => panic!("intact: {heads:?}"),
        }
    }

    #[tokio::test]
    async fn an_intact_trail_verifies_and_names_its_head() {
        let (db, _dir) = trail_of(5).await;
        match verify(&db).await.unwrap() {
            Verdict::Intact(heads) => {
                assert_eq!(heads.len(), 1);
                assert_eq!(heads[0].1, 5);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(for_patient(&db, &["pt-1".into()]).await.unwrap().len(), 5);
    }

    #[tokio::test]
    async fn an_altered_entry_is_named() {
        let (db, _dir) = trail_of(5).await;
        exec(
            &db,
            "UPDATE audit_trail SET entry = replace(entry, 'rx-2', 'rx-9') WHERE seq = 2",
        )
        .await;
        let (seq, problem) = broken_at(verify(&db).await.unwrap());
        assert_eq!(seq, 2);
        assert!(problem.contains("altered"), "{problem}");
    }

    #[tokio::test]
    async fn a_removed_entry_is_named() {
        let (db, _dir) = trail_of(5).await;
        exec(&db, "DELETE FROM audit_trail WHERE seq = 3").await;
        let (seq, problem) = broken_at(verify(&db).await.unwrap());
        assert_eq!(seq, 3);
        assert!(problem.contains("removed"), "{problem}");
        // Removed and the rest renumbered to hide the gap: the next entry no longer follows.
        let (db, _dir) = trail_of(5).await;
        exec(&db, "DELETE FROM audit_trail WHERE seq = 1").await;
        exec(&db, "UPDATE audit_trail SET seq = seq - 1 WHERE seq > 1").await;
        let (seq, problem) = broken_at(verify(&db).await.unwrap());
        assert_eq!(seq, 1);
        assert!(problem.contains("reordered"), "{problem}");
    }

    #[tokio::test]
    async fn reordered_entries_are_named() {
        let (db, _dir) = trail_of(5).await;
        exec(&db, "UPDATE audit_trail SET seq = 100 WHERE seq = 1").await;
        exec(&db, "UPDATE audit_trail SET seq = 1 WHERE seq = 2").await;
        exec(&db, "UPDATE audit_trail SET seq = 2 WHERE seq = 100").await;
        let (seq, problem) = broken_at(verify(&db).await.unwrap());
        assert_eq!(seq, 1);
        assert!(problem.contains("reordered"), "{problem}");
    }
}
