//! Which patient an organization's own patient ids are: the links a service learned (from a
//! prescription's Patient and Coverage) or took (a registration), by the identity rule — by
//! health insurance only, never by name and birth date (docs/labs.md). Each service keeps the
//! links it publishes, so it publishes each once and resolves local ids without asking another.

use sqlx::Row;

use crate::Database;

#[derive(Debug, Clone)]
pub struct Links {
    db: Database,
}

/// What a registration changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Linked {
    /// The local id was linked to this reference already.
    Unchanged,
    New,
    /// The local id was linked to another reference (the patient's insurance changed).
    Changed {
        previous: String,
    },
}

impl Links {
    pub async fn new(db: Database) -> Result<Self, sqlx::Error> {
        db.migrate(&crate::MIGRATIONS).await?;
        Ok(Self { db })
    }

    /// The reference `org`'s local id `local_id` is linked to, if any.
    pub async fn lookup(&self, org: &str, local_id: &str) -> Result<Option<String>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT patient_ref FROM patient_links WHERE org_id = $1 AND local_id = $2",
        )
        .bind(org)
        .bind(local_id)
        .fetch_optional(&self.db.pool)
        .await?;
        row.map(|r| r.try_get(0)).transpose()
    }

    /// What linking would change, without changing it.
    pub async fn compare(
        &self,
        org: &str,
        local_id: &str,
        patient_ref: &str,
    ) -> Result<Linked, sqlx::Error> {
        Ok(match self.lookup(org, local_id).await? {
            None => Linked::New,
            Some(current) if current == patient_ref => Linked::Unchanged,
            Some(previous) => Linked::Changed { previous },
        })
    }

    /// Records the link made at `at_ms` (unix ms), unless a newer one is kept (links learned
    /// from the bus may arrive out of order: they are keyed by patient).
    pub async fn record(
        &self,
        org: &str,
        local_id: &str,
        patient_ref: &str,
        at_ms: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO patient_links (org_id, local_id, patient_ref, linked_ms)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (org_id, local_id) DO UPDATE SET
                 patient_ref = excluded.patient_ref, linked_ms = excluded.linked_ms
             WHERE patient_links.linked_ms <= excluded.linked_ms",
        )
        .bind(org)
        .bind(local_id)
        .bind(patient_ref)
        .bind(at_ms)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }
}
