//! What a pharmacy is shown of the safety alerts on a prescription it holds: the lines of its
//! own prescriptions always; another institution's lines only under the patient's consent,
//! decided at each read and each live delivery (`hixbus_consent::alerts`). Every decision
//! about another institution's data is audited with the policy version.

use hixbus_access::Organization;
use hixbus_consent::{ConsentBook, alerts};
use hixbus_contracts::AlertLine;
use hixbus_storage::AuditLog;
use serde_json::Value;

use crate::store::{PrescriptionRow, Store, StoreError};

/// What a pharmacy's view of alerts is decided from.
#[derive(Debug, Clone)]
pub struct AlertLens {
    pub store: Store,
    pub consents: ConsentBook,
    pub audit: AuditLog,
}

impl AlertLens {
    /// The alerts of `row` as `org` may see them now, each decision audited.
    pub async fn show(
        &self,
        org: &Organization,
        row: &PrescriptionRow,
    ) -> Result<Vec<Value>, StoreError> {
        if row.alerts.is_empty() {
            return Ok(Vec::new());
        }
        let mut ids: Vec<&str> = row
            .alerts
            .iter()
            .flat_map(|a| a.involved.iter().map(|l| l.prescription_id.as_str()))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let held = self.store.held_by(&org.id, &ids).await?;
        let own = |l: &AlertLine| l.issuer_org == org.id || held.contains(&l.prescription_id);
        Ok(alerts::shown_audited(
            &row.alerts,
            own,
            org,
            &row.patient_ref,
            &self.consents,
            &self.audit,
        )
        .await?)
    }
}
