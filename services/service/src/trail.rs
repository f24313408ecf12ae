//! Every service's audit log, shipped to the patients' trail: each row that names a patient is
//! published as `PatientDataAccessed` on `audit` under the row's own id, then marked shipped.
//! The log is the outbox — a row commits with the access it records (`AuditLog::record_in`) — so
//! an access is never on the trail without having happened, nor lost from it when the broker is
//! down: it waits, and is shipped when the broker is back (a redelivery is the same event id,
//! which the trail keeps once).
//!
//! Every service started from the service list (`hixbus up`, `hixbus serve`, the tests) ships its
//! log this way (`Service::with_audit_trail`), so no service has to remember to.

use std::sync::Arc;
use std::time::Duration;

use hixbus_access::Directory;
use hixbus_bus::Publisher;
use hixbus_contracts::{Envelope, PatientDataAccessed, Timestamp};
use hixbus_storage::{AuditLog, Shippable};
use tokio_util::sync::CancellationToken;

/// How often the log is looked at for rows to ship.
pub const SHIP_EVERY: Duration = Duration::from_secs(1);
/// The most the last round may take when the service stops.
pub const LAST_ROUND: Duration = Duration::from_secs(2);
/// Rows shipped per round.
const BATCH: i64 = 500;

/// Who the actor is, as the trail names their role.
fn role(directory: &Directory, actor: &str) -> Option<String> {
    if actor.starts_with("patient:") {
        return Some("patient".to_owned());
    }
    if actor.starts_with("proxy:") {
        return Some("proxy".to_owned());
    }
    directory.get(actor).map(|o| o.role.as_str().to_owned())
}

/// The purpose an action serves, as the services name their actions.
pub fn purpose(action: &str, role: Option<&str>) -> Option<&'static str> {
    let (family, _) = action.split_once('.').unwrap_or((action, ""));
    Some(match family {
        // The patient's (or proxy's) own reads; an institution registering or enrolling a
        // patient does so for their care.
        "patient" => match role {
            Some("patient" | "proxy") => "PATIENT_ACCESS",
            _ => "TREATMENT",
        },
        // Another institution's data, shown under the patient's consent (or withheld).
        "summary" | "alert" => match role {
            Some("pharmacy") => "DISPENSING",
            _ => "TREATMENT",
        },
        "insurer" | "claims" | "claim" | "adjudication" => "PAYMENT",
        "inbox" | "dispense" | "claim_rx" | "pharmacy" => "DISPENSING",
        "clinic" | "results" | "prescription" | "lab" => "TREATMENT",
        "tail" | "dlq" => "OPERATIONS",
        "research" => "RESEARCH",
        _ => return None,
    })
}

/// What allowed the access, as far as the log row says: a summary row names its consent or
/// break-glass; a patient reads their own record, a proxy under their delegation; an
/// organization under its role's rules.
fn policy(actor: &str, role: Option<&str>, subject: &str) -> Option<String> {
    if let Some(rest) = subject.strip_prefix("policy=") {
        return Some(format!("policy={rest}"));
    }
    match role {
        Some("patient") => Some("the patient's own record".to_owned()),
        Some("proxy") => actor
            .rsplit_once(':')
            .map(|(_, delegation)| format!("delegation {delegation}")),
        Some(role) => Some(format!("role {role}")),
        None => None,
    }
}

/// A log row as its trail entry.
pub fn entry(service: &str, directory: &Directory, row: &Shippable) -> PatientDataAccessed {
    let role = role(directory, &row.entry.org_id);
    let occurred_at = chrono::DateTime::parse_from_rfc3339(&row.entry.at)
        .map(|t| Timestamp::from(t.with_timezone(&chrono::Utc)))
        .unwrap_or_else(|_| Timestamp::now());
    PatientDataAccessed {
        envelope: Envelope {
            event_id: row.event_id.clone(),
            occurred_at,
            ..Envelope::new(format!("hixbus-{service}"), &row.patient_ref)
        },
        actor: row.entry.org_id.clone(),
        purpose: purpose(&row.entry.action, role.as_deref()).map(str::to_owned),
        policy: policy(&row.entry.org_id, role.as_deref(), &row.entry.subject_id),
        actor_role: role,
        action: row.entry.action.clone(),
        subject: row.entry.subject_id.clone(),
    }
}

/// Ships what is waiting once; how many rows were shipped.
pub async fn ship_once(
    service: &str,
    log: &AuditLog,
    publisher: &Publisher,
    directory: &Directory,
) -> Result<usize, String> {
    let rows = log.unshipped(BATCH).await.map_err(|e| e.to_string())?;
    if rows.is_empty() {
        return Ok(0);
    }
    // All at once: the producer batches them, and keeps each patient's entries in order.
    let events: Vec<PatientDataAccessed> = rows
        .iter()
        .map(|row| entry(service, directory, row))
        .collect();
    let results =
        futures::future::join_all(events.iter().map(|event| publisher.publish(event))).await;
    let mut shipped = Vec::with_capacity(rows.len());
    let mut failed = None;
    for (row, result) in rows.iter().zip(results) {
        match result {
            Ok(_) => shipped.push(row.event_id.clone()),
            Err(e) => failed = Some(e),
        }
    }
    // What went out is marked either way; the rest waits for the next round.
    log.mark_shipped(&shipped)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(e) = failed {
        return Err(format!("publishing the trail: {e}"));
    }
    Ok(shipped.len())
}

/// Ships the log every [`SHIP_EVERY`] until `stopping`, then once more (what the last requests
/// recorded), for at most [`LAST_ROUND`]: a broker that is down must not hold the service's stop
/// for the producer's whole delivery timeout. What is left is shipped at the next start.
pub async fn ship(
    service: &'static str,
    log: AuditLog,
    publisher: Publisher,
    directory: Arc<Directory>,
    stopping: CancellationToken,
) {
    let mut failing = false;
    loop {
        let stop = tokio::select! {
            () = stopping.cancelled() => true,
            () = tokio::time::sleep(SHIP_EVERY) => false,
        };
        let round = ship_once(service, &log, &publisher, &directory);
        let result = if stop {
            tokio::time::timeout(LAST_ROUND, round)
                .await
                .unwrap_or_else(|_| Err("the last round did not finish in time".to_owned()))
        } else {
            tokio::select! {
                result = round => result,
                // Cut short: published rows not marked yet are shipped again, and kept once.
                () = stopping.cancelled() => continue,
            }
        };
        match result {
            Ok(_) if failing => {
                tracing::info!(service, "the access trail is shipping again");
                failing = false;
            }
            Ok(_) => {}
            Err(e) if !failing || stop => {
                tracing::warn!(service, error = %e, "the access trail waits (rows are kept)");
                failing = true;
            }
            Err(_) => {}
        }
        if stop {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_entry_names_its_purpose_and_what_allowed_it() {
        let directory = Directory::from_toml(
            "[[organization]]\nid = \"pharmacy-a\"\nrole = \"pharmacy\"\nname = \"A\"\n",
        )
        .unwrap();
        let row = |actor: &str, action: &str, subject: &str| Shippable {
            event_id: "e-1".into(),
            patient_ref: "pt-1".into(),
            entry: hixbus_storage::AuditEntry {
                at: "2026-11-30T01:02:03.000004Z".into(),
                org_id: actor.into(),
                action: action.into(),
                subject_id: subject.into(),
            },
        };
        let e = entry(
            "pharmacy",
            &directory,
            &row("pharmacy-a", "inbox.read", "rx-1"),
        );
        assert_eq!(e.envelope.event_id, "e-1");
        assert_eq!(e.envelope.producer_org, "hixbus-pharmacy");
        assert_eq!(e.envelope.patient_ref, "pt-1");
        assert_eq!(e.envelope.occurred_at.unix_millis(), 1_796_000_523_000);
        assert_eq!(e.actor_role.as_deref(), Some("pharmacy"));
        assert_eq!(e.purpose.as_deref(), Some("DISPENSING"));
        assert_eq!(e.policy.as_deref(), Some("role pharmacy"));
        let e = entry(
            "patient",
            &directory,
            &row("pharmacy-a", "summary.read", "policy=v1; shown=consent:c-1"),
        );
        assert_eq!(e.policy.as_deref(), Some("policy=v1; shown=consent:c-1"));
        let e = entry(
            "patient",
            &directory,
            &row("proxy:mother:d-9", "patient.timeline", "all"),
        );
        assert_eq!(e.actor_role.as_deref(), Some("proxy"));
        assert_eq!(e.purpose.as_deref(), Some("PATIENT_ACCESS"));
        assert_eq!(e.policy.as_deref(), Some("delegation d-9"));
    }
}
