//! The consumer: takes the items of each clinical event for every project that declared the
//! event type, for patients whose consents allow it, and keeps them until a release; keeps the
//! consent book; withdraws a patient's waiting items the moment they opt out.
//!
//! Fail closed: an event that cannot be pseudonymized for a project (no patient reference, no
//! key for the project) is dead-lettered with the cause, after the projects that could take it
//! did; nothing of it waits for the project without a key.

use std::sync::Arc;

use hixbus_bus::consumer::ConsumerError;
use hixbus_bus::{Consumer, EventContext, HandlerError, KafkaConfig};
use hixbus_consent::ConsentBook;
use hixbus_contracts::codec::Codec;
use hixbus_contracts::{
    CheckupCompleted, ConsentChanged, EventRecord, LabResultReported, PrescriptionDispensed,
    PrescriptionIssued, PurposeOfUse,
};

use crate::items::{self, Keyed};
use crate::projects::{Keys, Project};
use crate::release::may_release;
use crate::store::Store;

/// The consumer's state.
#[derive(Debug, Clone)]
pub struct Export {
    pub store: Store,
    pub consents: ConsentBook,
    pub projects: Arc<Vec<Project>>,
    pub keys: Arc<Keys>,
}

impl Export {
    /// Keeps `items` of event `E` for every project that takes it and may have this patient's.
    async fn keep<E: EventRecord>(&self, event: &E, items: Vec<Keyed>) -> Result<(), HandlerError> {
        let patient = &event.envelope().patient_ref;
        if patient.trim().is_empty() {
            return Err(HandlerError::reject(
                "no patient reference: the event cannot be pseudonymized, so no project gets it",
            ));
        }
        let takers: Vec<&Project> = self.projects.iter().filter(|p| p.takes(E::NAME)).collect();
        if takers.is_empty() || items.is_empty() {
            return Ok(());
        }
        let consents = self
            .consents
            .consents(std::slice::from_ref(patient))
            .await?;
        let now = chrono::Utc::now().timestamp_millis();
        let mut keyless = Vec::new();
        for project in takers {
            if !may_release(&consents, project) {
                continue;
            }
            if self.keys.of(&project.id).is_none() {
                keyless.push(project.id.as_str());
                continue;
            }
            self.store.add(&project.id, &items, now).await?;
        }
        if !keyless.is_empty() {
            return Err(HandlerError::reject(format!(
                "research projects {keyless:?} have no pseudonymization key: nothing of this event is kept for them; add the key and redrive"
            )));
        }
        Ok(())
    }

    pub async fn issued(self, e: PrescriptionIssued, _: EventContext) -> Result<(), HandlerError> {
        if let Some(c) = &e.coverage
            && (c.birth_date.is_some() || c.sex.is_some())
        {
            let sex = c.sex.map(|s| s.as_str());
            self.store
                .put_patient(&e.envelope.patient_ref, c.birth_date, sex)
                .await?;
        }
        let items = items::prescribed(&e);
        self.keep(&e, items).await
    }

    pub async fn dispensed(
        self,
        e: PrescriptionDispensed,
        _: EventContext,
    ) -> Result<(), HandlerError> {
        let items = items::dispensed(&e);
        self.keep(&e, items).await
    }

    pub async fn lab_result(
        self,
        e: LabResultReported,
        _: EventContext,
    ) -> Result<(), HandlerError> {
        let items = items::lab_results(&e);
        self.keep(&e, items).await
    }

    pub async fn checkup(self, e: CheckupCompleted, _: EventContext) -> Result<(), HandlerError> {
        let items = items::checkup_items(&e);
        self.keep(&e, items).await
    }

    /// Keeps the decision; a research decision that closes a project to the patient withdraws
    /// their waiting items of it at once (a release also checks again as it is made).
    pub async fn consent(self, e: ConsentChanged, _: EventContext) -> Result<(), HandlerError> {
        self.consents.put(&e).await?;
        if e.purpose != PurposeOfUse::Research {
            return Ok(());
        }
        let patient = &e.envelope.patient_ref;
        let consents = self
            .consents
            .consents(std::slice::from_ref(patient))
            .await?;
        for project in self.projects.iter() {
            if !may_release(&consents, project) {
                let n = self.store.withdraw(&project.id, patient).await?;
                if n > 0 {
                    tracing::info!(project = %project.id, items = n, "research items withdrawn: the patient opted out");
                }
            }
        }
        Ok(())
    }
}

/// The consumer that feeds the export.
pub fn consumer(
    kafka: &KafkaConfig,
    codec: Arc<Codec>,
    group: &str,
    export: Export,
) -> Result<Consumer, ConsumerError> {
    Consumer::builder(kafka, codec, group)
        .with_state(export)
        .on(Export::issued)?
        .on(Export::dispensed)?
        .on(Export::lab_result)?
        .on(Export::checkup)?
        .on(Export::consent)?
        .build()
}
