//! The record's consumer: each event about a patient becomes one entry of their record (or
//! changes one), keyed so that replaying the topics gives the same record. A new event type is
//! one more handler here and one more [`Fact`].

use std::sync::Arc;

use hixbus_bus::consumer::ConsumerError;
use hixbus_bus::{Consumer, EventContext, HandlerError, KafkaConfig};
use hixbus_contracts::codec::Codec;
use hixbus_contracts::time::Date;
use hixbus_contracts::{
    CheckupCompleted, ClaimAdjudicated, ClaimSubmitted, ConsentChanged, LabResultReported,
    MedicationAlert, PatientDataAccessed, PatientLinked, PrescriptionCancelled,
    PrescriptionDispensed, PrescriptionIssued, lifecycle,
};

#[cfg(test)]
use crate::store::Enrolled;
use crate::store::{CANCELLED, Change, Entry, Fact, Kind, Store, decision_key};

/// Midnight in Japan of `date`, in ms since the epoch: when a dated event happened.
pub fn date_ms(date: Date) -> i64 {
    date.to_naive_date()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .and_then(|t| t.and_local_timezone(lifecycle::japan()).single())
        .map_or(0, |t| t.timestamp_millis())
}

/// The key of a claim's entry: claim ids are the provider's own.
pub fn claim_key(provider: &str, claim_id: &str) -> String {
    format!("{provider}/{claim_id}")
}

#[derive(Debug, Clone)]
pub struct Projector {
    pub store: Store,
}

impl Projector {
    async fn put(
        &self,
        fact: Fact,
        key: String,
        envelope: &hixbus_contracts::Envelope,
        at: i64,
        org_id: &str,
        rank: i64,
    ) -> Result<(), HandlerError> {
        self.store
            .put(&Entry {
                key,
                patient_ref: envelope.patient_ref.clone(),
                event_id: envelope.event_id.clone(),
                at,
                org_id: org_id.to_owned(),
                rank,
                fact,
                changes: Vec::new(),
            })
            .await?;
        Ok(())
    }

    pub async fn issued(self, e: PrescriptionIssued, _: EventContext) -> Result<(), HandlerError> {
        let (key, at, org) = (
            e.prescription_id.clone(),
            e.envelope.occurred_at.unix_millis(),
            e.issuer.org_id.clone(),
        );
        let envelope = e.envelope.clone();
        self.put(Fact::Prescription(e), key, &envelope, at, &org, 0)
            .await
    }

    pub async fn cancelled(
        self,
        e: PrescriptionCancelled,
        _: EventContext,
    ) -> Result<(), HandlerError> {
        let (key, event_id) = (e.prescription_id.clone(), e.envelope.event_id.clone());
        self.store
            .change(
                Kind::Prescription,
                &key,
                CANCELLED,
                &event_id,
                0,
                &Change::Cancelled(e),
            )
            .await?;
        Ok(())
    }

    pub async fn dispensed(
        self,
        e: PrescriptionDispensed,
        _: EventContext,
    ) -> Result<(), HandlerError> {
        // Partial dispensings of one prescription are entries of their own.
        let (key, at, org) = (
            e.envelope.event_id.clone(),
            e.envelope.occurred_at.unix_millis(),
            e.pharmacy.org_id.clone(),
        );
        let envelope = e.envelope.clone();
        self.put(Fact::Dispensing(e), key, &envelope, at, &org, 0)
            .await
    }

    pub async fn alert(self, e: MedicationAlert, _: EventContext) -> Result<(), HandlerError> {
        let (key, at, org) = (
            e.alert_id.clone(),
            e.envelope.occurred_at.unix_millis(),
            e.envelope.producer_org.clone(),
        );
        let envelope = e.envelope.clone();
        self.put(Fact::Alert(e), key, &envelope, at, &org, 0).await
    }

    /// A report's later version (a correction, a cancellation) replaces the earlier one, in the
    /// order the laboratory reported them.
    pub async fn lab_result(
        self,
        e: LabResultReported,
        _: EventContext,
    ) -> Result<(), HandlerError> {
        let org = e.performing_lab.org_id.clone();
        let key = claim_key(&org, &e.report_id);
        let at = e.specimen.collected_at.unix_millis();
        let rank = e.envelope.occurred_at.unix_millis();
        let envelope = e.envelope.clone();
        self.put(Fact::LabResult(e), key, &envelope, at, &org, rank)
            .await
    }

    pub async fn checkup(self, e: CheckupCompleted, _: EventContext) -> Result<(), HandlerError> {
        let org = e.performed_by.org_id.clone();
        let key = claim_key(&org, &e.checkup_id);
        let at = date_ms(e.performed_on);
        let rank = e.envelope.occurred_at.unix_millis();
        let envelope = e.envelope.clone();
        self.put(Fact::Checkup(e), key, &envelope, at, &org, rank)
            .await
    }

    /// A claim's later version (resubmitted after a return) replaces the earlier one; the
    /// decisions on every version are kept.
    pub async fn claim(self, e: ClaimSubmitted, _: EventContext) -> Result<(), HandlerError> {
        let org = e.provider.org_id.clone();
        let key = claim_key(&org, &e.claim_id);
        let at = e.envelope.occurred_at.unix_millis();
        let rank = i64::from(e.version);
        let envelope = e.envelope.clone();
        self.put(Fact::Claim(e), key, &envelope, at, &org, rank)
            .await
    }

    pub async fn decision(self, e: ClaimAdjudicated, _: EventContext) -> Result<(), HandlerError> {
        let key = claim_key(&e.provider_org, &e.claim_id);
        let (update, event_id, rank) = (
            decision_key(e.claim_version),
            e.envelope.event_id.clone(),
            e.envelope.occurred_at.unix_millis(),
        );
        self.store
            .change(
                Kind::Claim,
                &key,
                &update,
                &event_id,
                rank,
                &Change::Decision(e),
            )
            .await?;
        Ok(())
    }

    /// A consent decision, from the patient's API (already applied there) or recorded on their
    /// behalf by an institution.
    pub async fn consent(self, e: ConsentChanged, _: EventContext) -> Result<(), HandlerError> {
        self.store.book.put(&e).await?;
        Ok(())
    }

    /// One access to a patient's data, from any service: appended to its partition's chain.
    pub async fn accessed(
        self,
        e: PatientDataAccessed,
        ctx: EventContext,
    ) -> Result<(), HandlerError> {
        crate::trail::append(self.store.database(), ctx.partition, &e).await?;
        Ok(())
    }

    /// Events an institution published under its own id of the patient are the patient's too,
    /// and so is what was published under the reference their earlier insurance gave.
    pub async fn linked(self, e: PatientLinked, _: EventContext) -> Result<(), HandlerError> {
        let at = e.envelope.occurred_at.unix_millis();
        self.store
            .link(&e.local_ref, "local", &e.envelope.patient_ref, at)
            .await?;
        if let Some(previous) = e.previous_ref.as_deref()
            && previous != e.envelope.patient_ref
        {
            self.store
                .link(previous, "previous", &e.envelope.patient_ref, at)
                .await?;
        }
        Ok(())
    }
}

pub fn consumer(
    kafka: &KafkaConfig,
    codec: Arc<Codec>,
    group: &str,
    projector: Projector,
) -> Result<Consumer, ConsumerError> {
    Consumer::builder(kafka, codec, group)
        .with_state(projector)
        .on(Projector::issued)?
        .on(Projector::cancelled)?
        .on(Projector::dispensed)?
        .on(Projector::alert)?
        .on(Projector::lab_result)?
        .on(Projector::checkup)?
        .on(Projector::claim)?
        .on(Projector::decision)?
        .on(Projector::linked)?
        .on(Projector::consent)?
        .on(Projector::accessed)?
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record;
    use hixbus_contracts::{ReportStatus, Timestamp, samples};

    fn ctx() -> EventContext {
        EventContext {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            schema_id: 1,
            group: "g".into(),
            trace_id: None,
            attempt: 1,
            headers: Vec::new(),
        }
    }

    async fn projector() -> (Projector, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("record.db").display());
        let db = hixbus_storage::Database::connect(&url).await.unwrap();
        (
            Projector {
                store: Store::new(db).await.unwrap(),
            },
            dir,
        )
    }

    async fn whole(p: &Projector, patient: &str) -> Vec<Entry> {
        let refs = p.store.refs(patient).await.unwrap();
        p.store.record(&refs).await.unwrap()
    }

    #[tokio::test]
    async fn a_later_version_replaces_an_earlier_one_whatever_order_they_are_read_in() {
        let (p, _dir) = projector().await;
        let first = samples::lab_result_reported("pt-1");
        let mut corrected = first.clone();
        corrected.status = ReportStatus::Corrected;
        corrected.results[0].value_numeric = Some(6.9);
        corrected.envelope.event_id = "corrected".into();
        corrected.envelope.occurred_at =
            Timestamp::from_unix_millis(first.envelope.occurred_at.unix_millis() + 60_000);
        // Replayed: the correction, then the original again (a redelivery) — the correction stays.
        p.clone().lab_result(first.clone(), ctx()).await.unwrap();
        p.clone()
            .lab_result(corrected.clone(), ctx())
            .await
            .unwrap();
        p.clone().lab_result(first.clone(), ctx()).await.unwrap();
        let record = whole(&p, "pt-1").await;
        assert_eq!(record.len(), 1);
        assert_eq!(record[0].fact, Fact::LabResult(corrected));

        // A claim's decision may arrive before the claim; version 2 replaces version 1, and each
        // version keeps its own decision.
        let mut v1 = samples::claim_submitted("pt-1");
        v1.version = 1;
        let mut v2 = v1.clone();
        v2.version = 2;
        v2.total_amount_jpy += 100;
        let mut decided = samples::claim_adjudicated("pt-1");
        decided.claim_id = v1.claim_id.clone();
        decided.provider_org = v1.provider.org_id.clone();
        decided.claim_version = 2;
        p.clone().decision(decided.clone(), ctx()).await.unwrap();
        p.clone().claim(v2.clone(), ctx()).await.unwrap();
        p.clone().claim(v1.clone(), ctx()).await.unwrap();
        let record = whole(&p, "pt-1").await;
        let claim = record.iter().find(|e| e.kind() == Kind::Claim).unwrap();
        assert_eq!(claim.fact, Fact::Claim(v2.clone()));
        assert_eq!(claim.decision(2), Some(&decided));
        assert_eq!(claim.decision(1), None);
        let expenses = record::expenses(&record, None);
        assert_eq!(expenses["claims"][0]["total_jpy"], v2.total_amount_jpy);
        assert_eq!(
            expenses["claims"][0]["insurer_jpy"],
            decided.paid_amount_jpy
        );
    }

    #[tokio::test]
    async fn a_patients_record_gathers_linked_local_ids_and_earlier_insurance_and_nothing_else() {
        let (p, _dir) = projector().await;
        let lab = samples::lab_result_reported("local:lab-minato:0042");
        p.clone().lab_result(lab, ctx()).await.unwrap();
        let old_card = samples::checkup_completed("jp-insured:1:old");
        p.clone().checkup(old_card, ctx()).await.unwrap();
        let mine = samples::prescription_issued("jp-insured:1:new", 2);
        p.clone().issued(mine, ctx()).await.unwrap();
        let someone_else = samples::prescription_issued("jp-insured:2:other", 1);
        let mut someone_else = someone_else;
        someone_else.prescription_id = "rx-other".into();
        p.clone().issued(someone_else, ctx()).await.unwrap();
        assert_eq!(whole(&p, "jp-insured:1:new").await.len(), 1);

        let mut link = samples::patient_linked("jp-insured:1:new");
        link.local_ref = "local:lab-minato:0042".into();
        link.previous_ref = Some("jp-insured:1:old".into());
        p.clone().linked(link.clone(), ctx()).await.unwrap();
        let kinds: Vec<Kind> = whole(&p, "jp-insured:1:new")
            .await
            .iter()
            .map(Entry::kind)
            .collect();
        assert_eq!(kinds.len(), 3, "{kinds:?}");
        assert!(kinds.contains(&Kind::LabResult) && kinds.contains(&Kind::Checkup));

        // The local id is linked to another patient later: it leaves this record.
        let mut relinked = link.clone();
        relinked.envelope.patient_ref = "jp-insured:2:other".into();
        relinked.previous_ref = None;
        relinked.envelope.occurred_at =
            Timestamp::from_unix_millis(link.envelope.occurred_at.unix_millis() + 1);
        p.clone().linked(relinked, ctx()).await.unwrap();
        // An older link read again (a replay) does not undo it.
        p.clone().linked(link, ctx()).await.unwrap();
        let mine: Vec<Kind> = whole(&p, "jp-insured:1:new")
            .await
            .iter()
            .map(Entry::kind)
            .collect();
        assert!(!mine.contains(&Kind::LabResult), "{mine:?}");
        assert!(
            whole(&p, "jp-insured:2:other")
                .await
                .iter()
                .any(|e| e.kind() == Kind::LabResult)
        );
    }

    #[tokio::test]
    async fn current_medications_follow_dispensing_cancellation_and_days_of_supply() {
        let (p, _dir) = projector().await;
        let mut rx = samples::prescription_issued("pt-1", 2);
        rx.lines[0].days_supply = Some(7);
        rx.lines[1].days_supply = None;
        let mut dispensed = samples::prescription_dispensed("pt-1");
        dispensed.prescription_id = rx.prescription_id.clone();
        dispensed.lines.truncate(1);
        dispensed.lines[0].prescription_line_no = rx.lines[0].line_no;
        dispensed.lines[0].days_supply = Some(7);
        p.clone().issued(rx.clone(), ctx()).await.unwrap();
        p.clone().dispensed(dispensed.clone(), ctx()).await.unwrap();
        let mut alert = samples::medication_alert("pt-1");
        alert.prescription_id = rx.prescription_id.clone();
        p.clone().alert(alert.clone(), ctx()).await.unwrap();
        let handed = lifecycle::date_in_japan(dispensed.envelope.occurred_at).unwrap();

        let record = whole(&p, "pt-1").await;
        let on = |day: Date| record::medications(&record, day)["medications"].clone();
        let taking = on(handed.plus_days(6));
        assert_eq!(taking.as_array().unwrap().len(), 2, "{taking}");
        assert_eq!(taking[0]["status"], "taking");
        assert_eq!(taking[0]["until"], handed.plus_days(6).to_string());
        assert_eq!(taking[0]["alerts"][0]["alert_id"], alert.alert_id);
        // Day 8: the 7-day line is over; the line without days of supply counts 30 days.
        let later = on(handed.plus_days(7));
        assert_eq!(later.as_array().unwrap().len(), 1, "{later}");
        assert_eq!(later[0]["line_no"], rx.lines[1].line_no);
        assert!(on(handed.plus_days(30)).as_array().unwrap().is_empty());

        // Cancelled: gone at once.
        let mut cancelled = samples::prescription_cancelled("pt-1");
        cancelled.prescription_id = rx.prescription_id.clone();
        p.clone().cancelled(cancelled, ctx()).await.unwrap();
        let record = whole(&p, "pt-1").await;
        assert!(
            record::medications(&record, handed)["medications"]
                .as_array()
                .unwrap()
                .is_empty()
        );
        assert_eq!(record::item(&record[0])["detail"]["status"], "cancelled");
    }

    #[tokio::test]
    async fn a_replayed_grant_does_not_undo_its_revocation() {
        let (p, _dir) = projector().await;
        let granted = samples::consent_changed("pt-1");
        let mut revoked = granted.clone();
        revoked.decision = hixbus_contracts::ConsentDecision::Revoked;
        revoked.envelope.occurred_at =
            Timestamp::from_unix_millis(granted.envelope.occurred_at.unix_millis() + 1);
        for c in [&granted, &revoked, &granted] {
            p.clone().consent(c.clone(), ctx()).await.unwrap();
        }
        let refs = p.store.refs("pt-1").await.unwrap();
        assert_eq!(p.store.book.consents(&refs).await.unwrap(), [revoked]);
    }

    #[tokio::test]
    async fn a_delegation_is_accepted_once_by_someone_else_and_ends_when_revoked() {
        let (p, _dir) = projector().await;
        let store = &p.store;
        let now = 1_800_000_000_000;
        store
            .enrol("iss", "child", None, Some(("pt-child", "clinic")), now)
            .await
            .unwrap();
        let invite = |id: &'static str, code: &'static str| crate::store::NewDelegation {
            id,
            patient_ref: "pt-child",
            relationship: "parent",
            code_sha256: code,
            code_expires_at: now + 1000,
            created_at: now,
            until_ms: now + 10_000,
        };
        store
            .create_delegation(&invite("d-1", "code-1"))
            .await
            .unwrap();
        store
            .create_delegation(&invite("d-2", "code-2"))
            .await
            .unwrap();
        // The patient cannot be their own proxy; the code stays usable.
        assert_eq!(
            store
                .accept_delegation("code-1", "iss", "child", now)
                .await
                .unwrap(),
            None
        );
        let accepted = store
            .accept_delegation("code-1", "iss", "mother", now)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(accepted.patient_ref, "pt-child");
        assert!(accepted.active(now));
        assert!(!accepted.active(now + 10_000));
        assert_eq!(
            store
                .accept_delegation("code-1", "iss", "father", now)
                .await
                .unwrap(),
            None,
            "a code works once"
        );
        // Expired invitations cannot be accepted.
        assert_eq!(
            store
                .accept_delegation("code-2", "iss", "father", now + 1000)
                .await
                .unwrap(),
            None
        );
        // Only the patient's own delegation can be revoked by them.
        assert!(
            !store
                .revoke_delegation("d-1", "pt-other", now)
                .await
                .unwrap()
        );
        assert!(
            store
                .revoke_delegation("d-1", "pt-child", now)
                .await
                .unwrap()
        );
        let held = store.held_by("iss", "mother").await.unwrap();
        assert!(held.iter().all(|d| !d.active(now)), "{held:?}");
        let all = store.delegations("pt-child").await.unwrap();
        let statuses: Vec<&str> = all.iter().map(|d| d.status(now + 1000)).collect();
        assert_eq!(statuses, ["revoked", "expired"]);
    }

    #[tokio::test]
    async fn an_enrolment_code_binds_one_sign_in_once() {
        let (p, _dir) = projector().await;
        let store = &p.store;
        let now = 1_800_000_000_000;
        store
            .issue_code("digest-1", "pt-1", "clinic-sakura", now + 1000)
            .await
            .unwrap();
        store
            .issue_code("digest-2", "pt-2", "clinic-sakura", now + 1000)
            .await
            .unwrap();
        store
            .issue_code("expired", "pt-1", "clinic-sakura", now - 1)
            .await
            .unwrap();
        let enrol = async |sub: &str, code: &str| {
            store
                .enrol("iss", sub, Some(code), None, now)
                .await
                .unwrap()
        };
        assert_eq!(enrol("taro", "expired").await, Enrolled::BadCode);
        assert_eq!(enrol("taro", "unknown").await, Enrolled::BadCode);
        assert_eq!(
            enrol("taro", "digest-1").await,
            Enrolled::Now("pt-1".into())
        );
        assert_eq!(enrol("hanako", "digest-1").await, Enrolled::BadCode);
        // Taro cannot take pt-2's code; the code stays usable by its owner.
        assert_eq!(enrol("taro", "digest-2").await, Enrolled::Taken);
        assert_eq!(
            enrol("hanako", "digest-2").await,
            Enrolled::Now("pt-2".into())
        );
        assert_eq!(
            store.account("iss", "taro").await.unwrap().as_deref(),
            Some("pt-1")
        );
        assert_eq!(store.account("other-iss", "taro").await.unwrap(), None);
    }
}
