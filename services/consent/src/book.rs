//! The consent book: the latest decision on each of a patient's consents, kept in the service's
//! own database from the `consents` topic.
//!
//! Each service that shows one institution another's data keeps its own book and asks it at
//! every read, so a revocation takes effect on every replica as soon as the service has
//! consumed it (well under a second on a healthy bus), for lists, single reads and live streams
//! alike, and a replay of old events never brings a revoked consent back: the book keeps the
//! newest decision per consent, whatever order decisions arrive in.

use hixbus_access::Organization;
use hixbus_contracts::{ConsentChanged, DataCategory};
use hixbus_service::ReadModelError;
use hixbus_storage::{Database, placeholders};

use crate::policy::{self, Basis, BreakGlass};

#[derive(Debug, Clone)]
pub struct ConsentBook {
    db: Database,
}

impl ConsentBook {
    /// Migrates the book's table in `db`.
    pub async fn new(db: Database) -> Result<Self, sqlx::Error> {
        db.migrate(&crate::MIGRATIONS).await?;
        Ok(Self { db })
    }

    /// Keeps a consent decision, unless a later decision on the same consent is kept already.
    pub async fn put(&self, c: &ConsentChanged) -> Result<(), ReadModelError> {
        sqlx::query(
            "INSERT INTO consent_decisions (consent_id, patient_ref, at, event)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (consent_id) DO UPDATE SET patient_ref = excluded.patient_ref,
                 at = excluded.at, event = excluded.event
             WHERE consent_decisions.at <= excluded.at",
        )
        .bind(&c.consent_id)
        .bind(&c.envelope.patient_ref)
        .bind(c.envelope.occurred_at.unix_millis())
        .bind(serde_json::to_string(c)?)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// Every consent decision about the patient under `refs` (their references) as it stands,
    /// oldest first.
    pub async fn consents(&self, refs: &[String]) -> Result<Vec<ConsentChanged>, ReadModelError> {
        if refs.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT event FROM consent_decisions WHERE patient_ref IN ({})
             ORDER BY at, consent_id",
            placeholders(1, refs.len())
        );
        let mut query = sqlx::query_scalar::<_, String>(&sql);
        for r in refs {
            query = query.bind(r);
        }
        let rows = query.fetch_all(&self.db.pool).await?;
        Ok(rows
            .iter()
            .map(|j| serde_json::from_str(j))
            .collect::<Result<_, _>>()?)
    }

    /// What `org` may see of other institutions' data about the patient under `refs` at
    /// `now_ms`, for the purpose its role reads for (none for a role that reads no one else's
    /// data), with break-glass accesses where the caller keeps them.
    pub async fn allowed(
        &self,
        refs: &[String],
        org: &Organization,
        breaks: &[BreakGlass],
        now_ms: i64,
    ) -> Result<Vec<(DataCategory, Basis)>, ReadModelError> {
        let Some(purpose) = policy::purpose_of(org.role) else {
            return Ok(Vec::new());
        };
        let consents = self.consents(refs).await?;
        Ok(policy::allowed(&consents, breaks, &org.id, purpose, now_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hixbus_access::Role;
    use hixbus_contracts::{ConsentDecision, PurposeOfUse, Timestamp, samples};

    async fn book() -> (ConsentBook, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("book.db").display());
        let db = Database::connect(&url).await.unwrap();
        (ConsentBook::new(db).await.unwrap(), dir)
    }

    fn pharmacy() -> Organization {
        Organization {
            id: "pharmacy-a".into(),
            role: Role::Pharmacy,
            name: "Pharmacy A".into(),
            institution_code: None,
            api_keys: Vec::new(),
        }
    }

    fn decision(at: i64, decision: ConsentDecision) -> ConsentChanged {
        let mut c = samples::consent_changed("pt-1");
        c.grantee_org = Some("pharmacy-a".into());
        c.purpose = PurposeOfUse::Dispensing;
        c.scope = vec![DataCategory::Prescriptions];
        c.decision = decision;
        c.valid_until = None;
        c.envelope.occurred_at = Timestamp::from_unix_millis(at);
        c
    }

    #[tokio::test]
    async fn the_newest_decision_stands_whatever_order_decisions_arrive_in() {
        let (book, _dir) = book().await;
        let refs = vec!["pt-1".to_owned()];
        let now = 1_800_000_000_000;
        let granted = decision(now - 2_000, ConsentDecision::Granted);
        let revoked = decision(now - 1_000, ConsentDecision::Revoked);
        book.put(&granted).await.unwrap();
        let open = book.allowed(&refs, &pharmacy(), &[], now).await.unwrap();
        assert_eq!(
            policy::basis_for(&open, DataCategory::Prescriptions),
            Some(&Basis::Consent(granted.consent_id.clone()))
        );
        book.put(&revoked).await.unwrap();
        // A replay of the grant after the revocation changes nothing.
        book.put(&granted).await.unwrap();
        assert_eq!(book.consents(&refs).await.unwrap(), [revoked]);
        assert!(
            book.allowed(&refs, &pharmacy(), &[], now)
                .await
                .unwrap()
                .is_empty()
        );
        // Another patient's book entry is not this one's.
        assert!(book.consents(&["pt-2".into()]).await.unwrap().is_empty());
    }
}
