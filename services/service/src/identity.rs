//! Linking an organization's own patient id to the cross-institution reference (the identity
//! rule, docs/labs.md): published as `PatientLinked`, then kept, so each link is announced once
//! and a changed one names the reference it replaces.

use hixbus_bus::Publisher;
use hixbus_contracts::identity::local_ref;
use hixbus_contracts::{Envelope, LinkSource, PatientLinked, Timestamp};
use hixbus_storage::{Linked, Links};

/// Namespace of link event ids: one link (organization, local id, reference) is one event.
const LINK_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6869_7862_7573_2d6c_696e_6b00_0000_0001);

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("the links are unavailable: {0}")]
    Store(#[from] sqlx::Error),
    #[error("the link was not published: {0}")]
    Publish(String),
}

/// Links `org`'s `local_id` to `patient_ref`. Published first and recorded after: a link
/// recorded but never announced would leave the views behind for good, and one announced twice
/// is the same event (its id derives from the link).
pub async fn link_patient(
    publisher: &Publisher,
    links: &Links,
    org: &str,
    local_id: &str,
    patient_ref: &str,
    source: LinkSource,
) -> Result<Linked, LinkError> {
    let linked = links.compare(org, local_id, patient_ref).await?;
    if linked == Linked::Unchanged {
        return Ok(linked);
    }
    let event = PatientLinked {
        envelope: Envelope {
            event_id: uuid::Uuid::new_v5(
                &LINK_NAMESPACE,
                format!("{org}/{local_id}/{patient_ref}").as_bytes(),
            )
            .to_string(),
            occurred_at: Timestamp::now(),
            producer_org: org.to_owned(),
            patient_ref: patient_ref.to_owned(),
            correlation_id: None,
            causation_id: None,
        },
        org_id: org.to_owned(),
        local_id: local_id.to_owned(),
        local_ref: local_ref(org, local_id),
        source,
        previous_ref: match &linked {
            Linked::Changed { previous } => Some(previous.clone()),
            _ => None,
        },
    };
    publisher
        .publish(&event)
        .await
        .map_err(|e| LinkError::Publish(e.to_string()))?;
    links
        .record(
            org,
            local_id,
            patient_ref,
            event.envelope.occurred_at.unix_millis(),
        )
        .await?;
    Ok(linked)
}

/// Keeps a link another service published (a lab gateway learns the links the clinic gateway
/// took from prescriptions, and each replica those the others took).
pub async fn keep_link(links: &Links, e: &PatientLinked) -> Result<(), sqlx::Error> {
    links
        .record(
            &e.org_id,
            &e.local_id,
            &e.envelope.patient_ref,
            e.envelope.occurred_at.unix_millis(),
        )
        .await
}
