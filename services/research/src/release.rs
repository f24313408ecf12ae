//! Releases: a batch of a project's waiting items, checked and de-identified as a whole, then
//! published to the project's topic with a manifest — or held, with nothing of it published.
//!
//! In order: the batch is claimed; every item of a patient who opted out (or, for an opt-in
//! project, did not opt in) is withdrawn, as the consents stand at that moment; the project's
//! key must exist; the batch is made k-anonymous (`kanon`) or held; the records are built from
//! the declared fields only; that decision (records, manifest, subjects, item outcomes) is kept;
//! then the records are published, then the manifest, the audit rows that put the release in
//! each patient's access trail, and the items' new status. A failure before the decision is
//! kept leaves the batch claimed and undecided: taken up again, it is decided afresh, nothing of
//! it having been published. A failure after publishes the kept decision again under the same
//! id, the same records with the same ids (consumers deduplicate on them): never a second plan,
//! whose records mixed with the first's under one release could break k, even if consents or
//! demographics changed in between. A patient who opts out after the decision is out of the
//! next release, as of one already published.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Datelike as _;
use futures::TryStreamExt as _;
use hixbus_bus::{PublishError, Publisher};
use hixbus_consent::ConsentBook;
use hixbus_contracts::{
    ConsentChanged, ConsentDecision, Date, Envelope, GroupShare, PurposeOfUse, ReleaseOutcome,
    ResearchMode, ResearchRecord, ResearchReleased, Timestamp, research_topic,
};
use hixbus_service::{CancellationToken, ReadModelError};
use hixbus_storage::AuditLog;
use serde_json::Value;

use crate::deid;
use crate::kanon::{self, Row};
use crate::projects::{Keys, Project, ProjectKey};
use crate::store::{Claimed, Demographics, Store};

/// The version of the release rules, named in every manifest and audit row.
pub const POLICY_VERSION: &str = "hixbus-research-2026-11";
/// Who publishes releases.
pub const PRODUCER: &str = "hixbus-research";
/// Records published at once.
const IN_FLIGHT: usize = 64;

/// When a project's waiting items make a batch.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// A batch as soon as this many items wait…
    pub records: i64,
    /// … or the oldest has waited this long.
    pub wait: Duration,
    /// The most items one release takes.
    pub max_records: i64,
    /// How often the releaser looks.
    pub tick: Duration,
    /// A claimed release untouched this long is taken up again.
    pub stale_after: Duration,
}

impl Default for Batching {
    fn default() -> Self {
        Self {
            records: 1000,
            wait: Duration::from_secs(5),
            max_records: 20_000,
            tick: Duration::from_millis(250),
            stale_after: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("store: {0}")]
    Store(#[from] ReadModelError),
    #[error("audit: {0}")]
    Audit(#[from] sqlx::Error),
    #[error("publishing: {0}")]
    Publish(#[from] PublishError),
}

/// What made the releases: the projects, their keys, and where things go.
#[derive(Debug, Clone)]
pub struct Releaser {
    pub store: Store,
    pub consents: ConsentBook,
    pub publisher: Publisher,
    pub audit: AuditLog,
    pub projects: Arc<Vec<Project>>,
    pub keys: Arc<Keys>,
    pub batching: Batching,
}

/// Whether the patient's consents let their data go to `project`: not opted out of research
/// use (their latest research decision), and, where the project requires it, opted in.
pub fn may_release(consents: &[ConsentChanged], project: &Project) -> bool {
    let latest = consents
        .iter()
        .filter(|c| {
            c.purpose == PurposeOfUse::Research
                && c.grantee_org
                    .as_deref()
                    .is_none_or(|g| g == project.researcher)
        })
        .max_by_key(|c| c.envelope.occurred_at);
    match latest {
        Some(c) => c.decision == ConsentDecision::Granted,
        None => !project.opt_in,
    }
}

/// What a release publishes, decided once and kept before any of it is published (see
/// [`Releaser::release`]).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Decision {
    project: String,
    researcher: String,
    records: Vec<ResearchRecord>,
    manifest: ResearchReleased,
    /// The patients whose data it releases: each one's trail gets a row.
    subjects: Vec<String>,
    /// Item keys released, and suppressed to reach k.
    kept: Vec<String>,
    suppressed: Vec<String>,
}

/// A finished release, for logs and tests.
#[derive(Debug, Clone, PartialEq)]
pub struct Released {
    pub manifest: ResearchReleased,
}

impl Releaser {
    /// Looks for batches every tick until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let mut ticker = tokio::time::interval(self.batching.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut held_until: HashMap<String, i64> = HashMap::new();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            for project in self.projects.iter() {
                match self.round(project, &mut held_until).await {
                    Ok(Some(r)) => tracing::info!(
                        project = %project.id,
                        release = %r.manifest.envelope.event_id,
                        outcome = ?r.manifest.outcome,
                        records = r.manifest.records,
                        k = ?r.manifest.k_achieved,
                        "research release"
                    ),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(project = %project.id, error = %e, "release not finished; it is taken up again")
                    }
                }
            }
        }
    }

    /// One look at `project`: an unfinished release first, else a new batch if one is due.
    pub async fn round(
        &self,
        project: &Project,
        held_until: &mut HashMap<String, i64>,
    ) -> Result<Option<Released>, ReleaseError> {
        let now = chrono::Utc::now().timestamp_millis();
        let stale_before = now - self.batching.stale_after.as_millis() as i64;
        if let Some(release_id) = self.store.unfinished(&project.id, stale_before).await? {
            return self.release(project, &release_id).await.map(Some);
        }
        if held_until.get(&project.id).is_some_and(|t| *t > now) {
            return Ok(None);
        }
        let (count, oldest) = self.store.waiting(&project.id).await?;
        let due = count >= self.batching.records
            || oldest.is_some_and(|t| now - t >= self.batching.wait.as_millis() as i64);
        if count == 0 || !due {
            return Ok(None);
        }
        let release_id = uuid::Uuid::now_v7().to_string();
        self.store
            .claim(&project.id, &release_id, self.batching.max_records, now)
            .await?;
        let released = self.release(project, &release_id).await?;
        if released.manifest.outcome == ReleaseOutcome::Held {
            // Held batches wait for more items before the next try, not a tick.
            held_until.insert(
                project.id.clone(),
                now + self.batching.wait.as_millis() as i64,
            );
        } else {
            held_until.remove(&project.id);
        }
        Ok(Some(released))
    }

    /// Releases (or holds) what `release_id` claimed: decides it, unless it was decided before
    /// a failure, then publishes the decision.
    pub async fn release(
        &self,
        project: &Project,
        release_id: &str,
    ) -> Result<Released, ReleaseError> {
        if let Some(decision) = self.store.decision::<Decision>(release_id).await? {
            return self.publish(release_id, decision).await;
        }
        let claimed = self.store.claimed(release_id).await?;
        let patients: Vec<String> = claimed
            .iter()
            .map(|c| c.patient_ref.clone())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let mut consents: HashMap<String, Vec<ConsentChanged>> = HashMap::new();
        for chunk in patients.chunks(500) {
            for c in self.consents.consents(chunk).await? {
                consents
                    .entry(c.envelope.patient_ref.clone())
                    .or_default()
                    .push(c);
            }
        }
        let (eligible, withdrawn): (Vec<&Claimed>, Vec<&Claimed>) = claimed.iter().partition(|c| {
            may_release(
                consents.get(&c.patient_ref).map_or(&[][..], Vec::as_slice),
                project,
            )
        });
        let withdrawn_keys: Vec<&str> = withdrawn.iter().map(|c| c.item_key.as_str()).collect();
        self.store
            .finish(release_id, "opted_out", &withdrawn_keys)
            .await?;

        let Some(key) = self.keys.of(&project.id) else {
            return self
                .hold(
                    project,
                    release_id,
                    "",
                    withdrawn.len(),
                    "the project has no pseudonymization key",
                )
                .await;
        };
        let known = self.store.demographics(&patients).await?;
        let (rows, prepared) = prepare(project, key, release_id, &eligible, &known);
        let Some((plan, records)) = prepared else {
            let reason = if rows.is_empty() {
                "nothing left to release after consents".to_owned()
            } else {
                format!(
                    "cannot be made {}-anonymous over {:?} suppressing at most {}%",
                    project.k, project.quasi_identifiers, project.max_suppressed_percent
                )
            };
            return self
                .hold(project, release_id, &key.id, withdrawn.len(), &reason)
                .await;
        };

        let subjects: BTreeSet<&str> = rows
            .iter()
            .zip(&plan.kept)
            .filter(|(_, k)| **k)
            .map(|(r, _)| r.subject.as_str())
            .collect();
        let manifest = ResearchReleased {
            records: count(records.len()),
            subjects: count(subjects.len()),
            k_achieved: plan.k_achieved.map(count),
            generalized: project
                .quasi_identifiers
                .iter()
                .zip(&plan.levels)
                .map(|(q, l)| deid::describe_level(q, *l))
                .collect(),
            suppressed: count(plan.suppressed),
            fairness: fairness(&rows, &plan.kept),
            ..manifest(
                project,
                release_id,
                &key.id,
                ReleaseOutcome::Released,
                withdrawn.len(),
            )
        };
        let (mut kept, mut suppressed) = (Vec::new(), Vec::new());
        for (c, k) in eligible.iter().zip(&plan.kept) {
            if *k { &mut kept } else { &mut suppressed }.push(c.item_key.clone());
        }
        let decision = Decision {
            project: project.id.clone(),
            researcher: project.researcher.clone(),
            records,
            manifest,
            subjects: subjects.into_iter().map(str::to_owned).collect(),
            kept,
            suppressed,
        };
        let now = chrono::Utc::now().timestamp_millis();
        let decision = self
            .store
            .decide(release_id, &project.id, now, &decision)
            .await?;
        self.publish(release_id, decision).await
    }

    /// Publishes a decided release: its records, its manifest, then in one transaction the
    /// patients' trail and the items' outcomes. Publishing may run again after a failure: records
    /// and the manifest keep their ids (consumers deduplicate on them).
    async fn publish(&self, release_id: &str, d: Decision) -> Result<Released, ReleaseError> {
        let topic = research_topic(&d.project);
        futures::stream::iter(d.records.iter().map(Ok::<_, PublishError>))
            .try_for_each_concurrent(IN_FLIGHT, |r| {
                let (publisher, topic) = (&self.publisher, &topic);
                async move { publisher.publish_to(topic, r).await.map(drop) }
            })
            .await?;
        self.announce(&d.manifest).await?;
        // Each patient's trail shows that their data went to the project — not as what.
        let subject = format!(
            "policy={POLICY_VERSION}; project={}; release={release_id}",
            d.project
        );
        // One transaction: the trail rows, the items' outcomes and the end of the decision
        // happen together or not at all, so a retake never writes a patient's row twice.
        let mut tx = self.store.database().pool.begin().await?;
        for patient in &d.subjects {
            AuditLog::record_in(
                &mut tx,
                &d.researcher,
                "research.release",
                &subject,
                patient,
            )
            .await?;
        }
        Store::finish_in(&mut tx, release_id, "released", &as_strs(&d.kept)).await?;
        Store::finish_in(&mut tx, release_id, "suppressed", &as_strs(&d.suppressed)).await?;
        Store::forget_decision_in(&mut tx, release_id).await?;
        tx.commit().await?;
        Ok(Released {
            manifest: d.manifest,
        })
    }

    /// Publishes a release's manifest and keeps it for the researchers' API.
    async fn announce(&self, manifest: &ResearchReleased) -> Result<(), ReleaseError> {
        self.publisher.publish(manifest).await?;
        let outcome = match manifest.outcome {
            ReleaseOutcome::Released => "RELEASED",
            ReleaseOutcome::Held => "HELD",
        };
        self.store
            .save_release(
                &manifest.envelope.event_id,
                &manifest.project,
                manifest.envelope.occurred_at.unix_millis(),
                outcome,
                &serde_json::to_value(manifest).unwrap_or(Value::Null),
            )
            .await?;
        Ok(())
    }

    /// Holds the batch: its items wait again (for more that may make it safe), and the
    /// manifest says why.
    async fn hold(
        &self,
        project: &Project,
        release_id: &str,
        key_id: &str,
        opted_out: usize,
        reason: &str,
    ) -> Result<Released, ReleaseError> {
        self.store.unclaim(release_id).await?;
        let manifest = ResearchReleased {
            reason: Some(reason.to_owned()),
            ..manifest(project, release_id, key_id, ReleaseOutcome::Held, opted_out)
        };
        self.announce(&manifest).await?;
        tracing::warn!(project = %project.id, release = %release_id, %reason, "research batch held");
        Ok(Released { manifest })
    }
}

/// The pure part of a release: each eligible item's quasi-identifiers, and the plan and the
/// de-identified records — or `None` when the batch must be held.
pub fn prepare(
    project: &Project,
    key: &ProjectKey,
    release_id: &str,
    eligible: &[&Claimed],
    known: &HashMap<String, Demographics>,
) -> (Vec<Row>, Option<(kanon::Plan, Vec<ResearchRecord>)>) {
    let rows: Vec<Row> = eligible
        .iter()
        .map(|c| Row {
            subject: c.patient_ref.clone(),
            age: known
                .get(&c.patient_ref)
                .and_then(|d| d.birth)
                .and_then(|b| deid::age(b, c.item.day)),
            sex: known.get(&c.patient_ref).and_then(|d| d.sex.clone()),
            prefecture: deid::prefecture_of(c.item.institution_code.as_deref()),
            institution: deid::pseudonym(key, "org", &c.item.institution_org),
        })
        .collect();
    let Some(plan) = kanon::plan(
        &rows,
        &project.quasi_identifiers,
        project.k as usize,
        project.max_suppressed_percent,
    ) else {
        return (rows, None);
    };
    let records = eligible
        .iter()
        .zip(&rows)
        .zip(&plan.kept)
        .filter(|(_, kept)| **kept)
        .map(|((c, row), _)| record(project, key, release_id, c, row, &plan.levels))
        .collect();
    (rows, Some((plan, records)))
}

/// A manifest of `project`'s release with nothing released yet: what every manifest says.
fn manifest(
    project: &Project,
    release_id: &str,
    key_id: &str,
    outcome: ReleaseOutcome,
    opted_out: usize,
) -> ResearchReleased {
    ResearchReleased {
        envelope: envelope(release_id),
        project: project.id.clone(),
        researcher_org: project.researcher.clone(),
        mode: project.mode,
        key_id: key_id.to_owned(),
        outcome,
        records: 0,
        subjects: 0,
        k_required: count(project.k as usize),
        k_achieved: None,
        quasi_identifiers: project.quasi_identifiers.clone(),
        generalized: Vec::new(),
        suppressed: 0,
        opted_out: count(opted_out),
        reason: None,
        policy_version: POLICY_VERSION.to_owned(),
        fairness: Vec::new(),
    }
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn envelope(release_id: &str) -> Envelope {
    Envelope {
        event_id: release_id.to_owned(),
        correlation_id: None,
        ..Envelope::new(PRODUCER, "")
    }
}

/// One released record: the declared fields only, each de-identified.
fn record(
    project: &Project,
    key: &ProjectKey,
    release_id: &str,
    c: &Claimed,
    row: &Row,
    levels: &[usize],
) -> ResearchRecord {
    let item = &c.item;
    let linked = project.mode == ResearchMode::Pseudonymized && project.has("subject");
    let subject = if linked {
        deid::pseudonym(key, "patient", &c.patient_ref)
    } else {
        // Links the items of one release only.
        deid::pseudonym(key, "patient", &format!("{release_id}/{}", c.patient_ref))
    };
    let level_of = |q: &str| {
        project
            .quasi_identifiers
            .iter()
            .position(|p| p == q)
            .map(|i| levels[i])
    };
    let field = |name: &str| project.has(name);
    let shifted = item.day.plus_days(deid::shift_days(key, &c.patient_ref));
    let day = match project.mode {
        ResearchMode::Pseudonymized => shifted,
        // Anonymized: the month only.
        ResearchMode::Anonymized => shifted
            .to_naive_date()
            .and_then(|d| chrono::NaiveDate::from_ymd_opt(d.year(), d.month(), 1))
            .map(Date::from)
            .unwrap_or(shifted),
    };
    // Every quasi-identifier among the fields is one the check covered (projects.rs), so its
    // level is known.
    let qi = |name: &str| -> Option<String> {
        let level = level_of(name)?;
        field(name).then(|| kanon::value(row, name, level))
    };
    ResearchRecord {
        envelope: Envelope {
            event_id: deid::pseudonym(key, "item", &c.item_key),
            occurred_at: Timestamp::now(),
            producer_org: PRODUCER.to_owned(),
            patient_ref: subject,
            correlation_id: Some(release_id.to_owned()),
            causation_id: None,
        },
        project: project.id.clone(),
        kind: item.kind,
        institution: qi("institution").filter(|v| v != "*"),
        day: field("day").then_some(day),
        age_band: qi("age_band"),
        region: qi("region"),
        code_system: item.code_system.clone().filter(|_| field("code_system")),
        code: item.code.clone().filter(|_| field("code")),
        display: item.display.clone().filter(|_| field("display")),
        value: item.value.filter(|_| field("value")),
        unit: item.unit.clone().filter(|_| field("unit")),
        days_supply: item.days_supply.filter(|_| field("days_supply")),
        quantity: item.quantity.filter(|_| field("quantity")),
        sex: qi("sex"),
    }
}

/// Per age band (ten years), sex and region (地方): each group's share of the subjects before
/// suppression and of those released.
fn fairness(rows: &[Row], kept: &[bool]) -> Vec<GroupShare> {
    let mut out = Vec::new();
    for (dimension, group_of) in [
        (
            "age_band",
            (|r: &Row| deid::age_band(r.age, 1)) as fn(&Row) -> String,
        ),
        ("region", |r: &Row| deid::region(r.prefecture, 1)),
    ] {
        let mut source: BTreeMap<String, HashSet<&str>> = BTreeMap::new();
        let mut released: BTreeMap<String, HashSet<&str>> = BTreeMap::new();
        for (r, k) in rows.iter().zip(kept) {
            source.entry(group_of(r)).or_default().insert(&r.subject);
            if *k {
                released.entry(group_of(r)).or_default().insert(&r.subject);
            }
        }
        let total = |m: &BTreeMap<String, HashSet<&str>>| {
            m.values().map(HashSet::len).sum::<usize>().max(1) as f64
        };
        let (all, out_of) = (total(&source), total(&released));
        for (group, subjects) in &source {
            out.push(GroupShare {
                dimension: dimension.to_owned(),
                group: group.clone(),
                source_share: subjects.len() as f64 / all,
                released_share: released.get(group).map_or(0, HashSet::len) as f64 / out_of,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hixbus_contracts::samples;

    fn project(opt_in: bool) -> Project {
        Project {
            id: "p".into(),
            researcher: "univ".into(),
            purpose: "x".into(),
            mode: ResearchMode::Pseudonymized,
            k: 5,
            events: Default::default(),
            fields: Default::default(),
            quasi_identifiers: vec![],
            opt_in,
            max_suppressed_percent: 10,
        }
    }

    fn research(decision: ConsentDecision, at: i64, grantee: Option<&str>) -> ConsentChanged {
        let mut c = samples::consent_changed("pt");
        c.purpose = PurposeOfUse::Research;
        c.grantee_org = grantee.map(str::to_owned);
        c.decision = decision;
        c.envelope.occurred_at = Timestamp::from_unix_millis(at);
        c
    }

    #[test]
    fn the_latest_research_decision_decides_and_opt_in_projects_need_a_grant() {
        assert!(may_release(&[], &project(false)));
        assert!(!may_release(&[], &project(true)));
        let out = research(ConsentDecision::Revoked, 2, None);
        let back = research(ConsentDecision::Granted, 3, None);
        assert!(!may_release(std::slice::from_ref(&out), &project(false)));
        assert!(may_release(&[out.clone(), back.clone()], &project(false)));
        assert!(may_release(&[out, back], &project(true)));
        // Another researcher's grant is not this project's.
        let elsewhere = research(ConsentDecision::Granted, 4, Some("other-univ"));
        assert!(!may_release(&[elsewhere], &project(true)));
        // A treatment consent says nothing about research.
        assert!(may_release(
            &[samples::consent_changed("pt")],
            &project(false)
        ));
    }

    #[test]
    fn fairness_compares_who_was_released_with_who_was_in_the_batch() {
        let row = |s: &str, age: u32| Row {
            subject: s.into(),
            age: Some(age),
            sex: Some("female".into()),
            prefecture: Some(13),
            institution: "i".into(),
        };
        let rows = [row("a", 41), row("b", 42), row("c", 85), row("d", 43)];
        let kept = [true, true, false, true];
        let shares = fairness(&rows, &kept);
        let old = shares
            .iter()
            .find(|s| s.dimension == "age_band" && s.group == "80-89")
            .unwrap();
        assert_eq!((old.source_share, old.released_share), (0.25, 0.0));
        let region = shares.iter().find(|s| s.dimension == "region").unwrap();
        assert_eq!((region.source_share, region.released_share), (1.0, 1.0));
    }
}
