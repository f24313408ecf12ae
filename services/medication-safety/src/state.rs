//! Each patient's active medication lines, from every institution's prescriptions and
//! dispensing, and what a new prescription conflicts with.

use std::collections::HashMap;

use hixbus_contracts::{
    AlertLine, CodedConcept, Date, PrescriptionCancelled, PrescriptionDispensed, PrescriptionIssued,
};

use crate::rules::{Finding, Recognized, Rules};

/// Lines without a days supply (ointments, eye drops, as-needed doses) count as active for this
/// long: long enough to catch the usual duplications, short enough not to alert for months.
pub const DEFAULT_ACTIVE_DAYS: i32 = 14;

/// A line is forgotten once it ended this long before the latest issue date seen. Without it
/// the state would hold every prescription ever issued. The margin keeps lines a backdated
/// prescription (issued on an earlier day than one already seen) could still overlap.
pub const FORGET_AFTER_DAYS: i32 = 30;

#[derive(Debug, Clone, PartialEq)]
pub struct ActiveLine {
    pub prescription_id: String,
    pub issuer_org: String,
    pub line_no: i32,
    pub drug: CodedConcept,
    pub recognized: Recognized,
    pub from: Date,
    /// Last day taken (inclusive).
    pub until: Date,
    /// Where its prescription is in the patient's stream (the record's offset: one patient's
    /// prescriptions share a partition). A prescription is checked only against those before
    /// it, so reading one again — after a restart rebuilt the state from the topics, or a
    /// redelivery — finds what it found the first time, not the later ones (which raised
    /// their own alerts).
    pub position: i64,
}

impl ActiveLine {
    fn overlaps(&self, other: &ActiveLine) -> bool {
        self.from <= other.until && other.from <= self.until
    }

    pub fn alert_line(&self) -> AlertLine {
        AlertLine {
            prescription_id: self.prescription_id.clone(),
            line_no: self.line_no,
            issuer_org: self.issuer_org.clone(),
            drug: self.drug.clone(),
            active_from: self.from,
            active_until: Some(self.until),
        }
    }
}

/// A problem between the new prescription and the patient's other prescriptions: one per pair
/// of (new ingredient, conflicting ingredient), with every line involved on either side. One
/// alert per pair, not per pair of lines: two prescriptions of one drug with many lines each
/// are one duplication, and per-line alerts grew with the square of the line count.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub finding: Finding,
    /// The new prescription's lines with the ingredient, in line order.
    pub new: Vec<ActiveLine>,
    /// The other prescriptions' active lines it conflicts with, oldest first.
    pub existing: Vec<ActiveLine>,
}

#[derive(Debug, Default)]
pub struct Medications {
    by_patient: HashMap<String, Vec<ActiveLine>>,
    /// Dispensings read before their prescription (they travel on another topic), by
    /// prescription id: applied when it comes, forgotten like ended lines if it never does.
    early: HashMap<String, PrescriptionDispensed>,
    /// The latest issue date the whole state was swept for (see [`FORGET_AFTER_DAYS`]).
    swept_for: Option<Date>,
    /// Positions handed out by [`Medications::issued`] to callers that give none.
    arrivals: i64,
}

/// The day the dispensing happened (in UTC).
fn dispensed_on(e: &PrescriptionDispensed) -> Option<Date> {
    e.envelope
        .occurred_at
        .to_datetime()
        .map(|t| Date::from(t.date_naive()))
}

/// Moves the dispensed lines' active days to start on the dispensing day, and puts in the drug
/// actually handed over when it was substituted.
fn apply_dispensing(rules: &Rules, e: &PrescriptionDispensed, lines: &mut [ActiveLine]) {
    let from = dispensed_on(e);
    for dispensed in &e.lines {
        let Some(line) = lines.iter_mut().find(|l| {
            l.prescription_id == e.prescription_id && l.line_no == dispensed.prescription_line_no
        }) else {
            continue;
        };
        if let Some(from) = from {
            line.from = from;
            line.until = active_until(from, dispensed.days_supply);
        }
        if dispensed.substituted {
            if let Some(recognized) = rules.recognize_codes([&dispensed.drug]) {
                line.recognized = recognized;
            }
            line.drug = dispensed.drug.clone();
        }
    }
}

fn active_until(from: Date, days_supply: Option<i32>) -> Date {
    from.plus_days(
        days_supply
            .filter(|d| *d > 0)
            .unwrap_or(DEFAULT_ACTIVE_DAYS)
            - 1,
    )
}

impl Medications {
    /// Records a prescription and returns its conflicts with the patient's other prescriptions.
    /// Applying the same prescription again gives the same conflicts and changes nothing.
    ///
    /// `today` (the date in Japan) caps how far the forgetting horizon moves: an issue date in
    /// the future, however it got onto the bus, must not make the check forget every patient's
    /// current medication.
    pub fn issued(&mut self, rules: &Rules, e: &PrescriptionIssued, today: Date) -> Vec<Conflict> {
        self.arrivals += 1;
        let position = self.arrivals;
        self.issued_at(rules, e, position, today)
    }

    /// [`Medications::issued`] for the prescription at `position` in its patient's stream (its
    /// record's offset). A prescription read again keeps the position it was first read at.
    pub fn issued_at(
        &mut self,
        rules: &Rules,
        e: &PrescriptionIssued,
        position: i64,
        today: Date,
    ) -> Vec<Conflict> {
        self.forget_ended(e.issued_on.min(today));
        let position = self
            .by_patient
            .get(&e.envelope.patient_ref)
            .and_then(|lines| {
                lines
                    .iter()
                    .find(|l| l.prescription_id == e.prescription_id)
                    .map(|l| l.position)
            })
            .unwrap_or(position);
        let mut lines: Vec<ActiveLine> = e
            .lines
            .iter()
            .filter_map(|line| {
                let recognized = rules.recognize(line)?;
                Some(ActiveLine {
                    prescription_id: e.prescription_id.clone(),
                    issuer_org: e.envelope.producer_org.clone(),
                    line_no: line.line_no,
                    drug: line.drug.clone(),
                    recognized,
                    from: e.issued_on,
                    until: active_until(e.issued_on, line.days_supply),
                    position,
                })
            })
            .collect();
        if let Some(dispensing) = self.early.remove(&e.prescription_id) {
            apply_dispensing(rules, &dispensing, &mut lines);
        }
        let active = self
            .by_patient
            .entry(e.envelope.patient_ref.clone())
            .or_default();
        active.retain(|l| l.prescription_id != e.prescription_id);
        let mut conflicts: Vec<Conflict> = Vec::new();
        for new in &lines {
            let earlier = active.iter().filter(|l| l.position < position);
            for existing in earlier.filter(|l| new.overlaps(l)) {
                let name = new.drug.display.as_deref().unwrap_or(&new.drug.code);
                let Some(finding) = rules.check(&new.recognized, &existing.recognized, name) else {
                    continue;
                };
                let same_pair = |c: &&mut Conflict| {
                    c.finding.kind == finding.kind
                        && c.new[0].recognized.ingredient == new.recognized.ingredient
                        && c.existing[0].recognized.ingredient == existing.recognized.ingredient
                };
                match conflicts.iter_mut().find(same_pair) {
                    Some(conflict) => {
                        if !conflict.new.iter().any(|l| l.line_no == new.line_no) {
                            conflict.new.push(new.clone());
                        }
                        if !conflict.existing.contains(existing) {
                            conflict.existing.push(existing.clone());
                        }
                    }
                    None => conflicts.push(Conflict {
                        finding,
                        new: vec![new.clone()],
                        existing: vec![existing.clone()],
                    }),
                }
            }
        }
        active.extend(lines);
        conflicts
    }

    /// Drops every line that ended [`FORGET_AFTER_DAYS`] before `latest`, and patients left
    /// with none: once per new issue date, so the cost is one pass a day.
    fn forget_ended(&mut self, latest: Date) {
        if self.swept_for.is_some_and(|swept| swept >= latest) {
            return;
        }
        self.swept_for = Some(latest);
        let horizon = latest.plus_days(-FORGET_AFTER_DAYS);
        self.by_patient.retain(|_, lines| {
            lines.retain(|l| l.until >= horizon);
            !lines.is_empty()
        });
        self.early
            .retain(|_, d| dispensed_on(d).is_some_and(|day| day >= horizon));
    }

    pub fn cancelled(&mut self, e: &PrescriptionCancelled) {
        if let Some(active) = self.by_patient.get_mut(&e.envelope.patient_ref) {
            active.retain(|l| l.prescription_id != e.prescription_id);
        }
    }

    /// What was handed over replaces what was prescribed, from the day it was handed over.
    pub fn dispensed(&mut self, rules: &Rules, e: &PrescriptionDispensed) {
        // Handed over before the forgetting horizon: whatever it was for has ended, or will be
        // forgotten at the next sweep. Kept, such dispensings grew the state with the topic: a
        // rebuild reads every prescription first (moving the horizon to the latest issue date)
        // and then every dispensing, and no sweep comes after the last prescription.
        if let Some(swept) = self.swept_for
            && dispensed_on(e).is_none_or(|day| day < swept.plus_days(-FORGET_AFTER_DAYS))
        {
            return;
        }
        match self.by_patient.get_mut(&e.envelope.patient_ref) {
            Some(active)
                if active
                    .iter()
                    .any(|l| l.prescription_id == e.prescription_id) =>
            {
                apply_dispensing(rules, e, active);
            }
            // Not read yet, or nothing in it the rules know: keep only what could matter.
            _ if e
                .lines
                .iter()
                .any(|l| rules.recognize_codes([&l.drug]).is_some()) =>
            {
                self.early.insert(e.prescription_id.clone(), e.clone());
            }
            _ => {}
        }
    }

    pub fn active(&self, patient_ref: &str) -> &[ActiveLine] {
        self.by_patient.get(patient_ref).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hixbus_contracts::{AlertKind, samples};

    fn rx(
        patient: &str,
        id: &str,
        org: &str,
        issued_on: Date,
        codes: &[(&str, &str)],
    ) -> PrescriptionIssued {
        let mut e = samples::prescription_issued(patient, codes.len());
        e.prescription_id = id.to_owned();
        e.envelope.producer_org = org.to_owned();
        e.issued_on = issued_on;
        for (line, (code, name)) in e.lines.iter_mut().zip(codes) {
            line.drug = CodedConcept::new(samples::HOT9, *code, Some(name));
            line.other_codes.clear();
            line.days_supply = Some(7);
        }
        e
    }

    const LOXONIN: (&str, &str) = ("107602401", "ロキソニン錠６０ｍｇ");
    const VOLTAREN: (&str, &str) = ("100795402", "ボルタレン錠２５ｍｇ");
    const GASTER: (&str, &str) = ("106238001", "ガスター錠２０ｍｇ");

    fn day(n: i32) -> Date {
        Date::from_ymd(2026, 11, 1).unwrap().plus_days(n)
    }

    /// Later than every test date, so only the tests about the clock see it.
    const TODAY: Date = Date::from_days_since_epoch(30_000);

    #[test]
    fn a_prescription_dated_far_in_the_future_does_not_switch_the_check_off() {
        let rules = Rules::embedded().unwrap();
        let mut meds = Medications::default();
        let today = day(1);
        meds.issued(
            &rules,
            &rx("p", "rx-1", "clinic-a", day(0), &[LOXONIN]),
            today,
        );
        let far = Date::from_ymd(9999, 12, 31).unwrap();
        meds.issued(&rules, &rx("q", "rx-2", "clinic-x", far, &[GASTER]), today);
        let conflicts = meds.issued(
            &rules,
            &rx("p", "rx-3", "clinic-b", day(1), &[LOXONIN]),
            today,
        );
        assert_eq!(
            conflicts.len(),
            1,
            "the duplicate is still found after a 9999-12-31 prescription"
        );
    }

    #[test]
    fn a_prescription_read_again_after_a_later_one_finds_only_what_it_found_first() {
        let rules = Rules::embedded().unwrap();
        let first = rx("p", "rx-1", "clinic-a", day(0), &[LOXONIN]);
        let second = rx("p", "rx-2", "clinic-b", day(1), &[LOXONIN]);
        // A rebuild read both; the live consumer then reads the first again (its offset was
        // not committed before the restart).
        let mut meds = Medications::default();
        assert!(meds.issued_at(&rules, &first, 10, TODAY).is_empty());
        assert_eq!(meds.issued_at(&rules, &second, 11, TODAY).len(), 1);
        assert!(
            meds.issued_at(&rules, &first, 10, TODAY).is_empty(),
            "no second alert from the first prescription's side"
        );
        // The same event again at a later offset (published twice) keeps its first position.
        assert!(meds.issued_at(&rules, &first, 12, TODAY).is_empty());
        assert_eq!(meds.issued_at(&rules, &second, 11, TODAY).len(), 1);
    }

    #[test]
    fn two_long_prescriptions_of_one_drug_are_one_conflict_listing_every_line() {
        let rules = Rules::embedded().unwrap();
        let mut meds = Medications::default();
        let many = [LOXONIN; 60];
        meds.issued(&rules, &rx("p", "rx-1", "clinic-a", day(0), &many), TODAY);
        let conflicts = meds.issued(&rules, &rx("p", "rx-2", "clinic-b", day(1), &many), TODAY);
        assert_eq!(conflicts.len(), 1, "not 60 × 60");
        assert_eq!(conflicts[0].new.len(), 60);
        assert_eq!(conflicts[0].existing.len(), 60);
        assert!(conflicts[0].new.iter().all(|l| l.prescription_id == "rx-2"));
    }

    #[test]
    fn the_same_drug_from_a_second_clinic_while_the_first_is_taken_is_a_duplicate() {
        let rules = Rules::embedded().unwrap();
        let mut meds = Medications::default();
        assert!(
            meds.issued(
                &rules,
                &rx("p", "rx-1", "clinic-a", day(0), &[LOXONIN, GASTER]),
                TODAY,
            )
            .is_empty()
        );
        let conflicts = meds.issued(
            &rules,
            &rx("p", "rx-2", "clinic-b", day(3), &[LOXONIN]),
            TODAY,
        );
        assert_eq!(conflicts.len(), 1);
        let c = &conflicts[0];
        assert_eq!(c.finding.kind, AlertKind::DuplicateIngredient);
        assert_eq!(
            (
                c.new[0].prescription_id.as_str(),
                c.existing[0].prescription_id.as_str()
            ),
            ("rx-2", "rx-1")
        );
        assert_eq!(c.existing[0].issuer_org, "clinic-a");
        // Applying the same prescription again (a redelivery) finds the same, stores nothing new.
        let again = meds.issued(
            &rules,
            &rx("p", "rx-2", "clinic-b", day(3), &[LOXONIN]),
            TODAY,
        );
        assert_eq!(again, conflicts);
        assert_eq!(meds.active("p").len(), 3);
    }

    #[test]
    fn no_overlap_no_other_patient_and_cancelled_prescriptions_raise_nothing() {
        let rules = Rules::embedded().unwrap();
        let mut meds = Medications::default();
        meds.issued(
            &rules,
            &rx("p", "rx-1", "clinic-a", day(0), &[LOXONIN]),
            TODAY,
        );
        // Seven days from day 0 end on day 6; day 7 does not overlap.
        assert!(
            meds.issued(
                &rules,
                &rx("p", "rx-2", "clinic-b", day(7), &[LOXONIN]),
                TODAY
            )
            .is_empty()
        );
        assert!(
            meds.issued(
                &rules,
                &rx("q", "rx-3", "clinic-b", day(1), &[LOXONIN]),
                TODAY
            )
            .is_empty()
        );
        let mut cancel = samples::prescription_cancelled("p");
        cancel.prescription_id = "rx-2".to_owned();
        meds.cancelled(&cancel);
        assert!(
            meds.issued(
                &rules,
                &rx("p", "rx-4", "clinic-c", day(8), &[LOXONIN]),
                TODAY
            )
            .is_empty()
        );
    }

    #[test]
    fn lines_that_ended_long_before_a_new_prescription_are_forgotten() {
        let rules = Rules::embedded().unwrap();
        let mut meds = Medications::default();
        meds.issued(
            &rules,
            &rx("p", "rx-1", "clinic-a", day(0), &[LOXONIN]),
            TODAY,
        );
        meds.issued(
            &rules,
            &rx("q", "rx-2", "clinic-a", day(0), &[LOXONIN]),
            TODAY,
        );
        // rx-1 ended on day 6: still kept 30 days later, for a backdated prescription.
        meds.issued(
            &rules,
            &rx("p", "rx-3", "clinic-b", day(36), &[GASTER]),
            TODAY,
        );
        assert_eq!(meds.active("p").len(), 2);
        // A backdated one still meets it.
        let backdated = meds.issued(
            &rules,
            &rx("p", "rx-4", "clinic-c", day(2), &[LOXONIN]),
            TODAY,
        );
        assert_eq!(backdated.len(), 1, "{backdated:?}");
        meds.issued(
            &rules,
            &rx("p", "rx-5", "clinic-b", day(39), &[GASTER]),
            TODAY,
        );
        let ids: Vec<_> = meds
            .active("p")
            .iter()
            .map(|l| l.prescription_id.as_str())
            .collect();
        assert_eq!(
            ids,
            ["rx-3", "rx-5"],
            "rx-1 and rx-4 ended more than 30 days before"
        );
        // Another patient's ended lines go in the same sweep, and the patient with them.
        assert!(meds.active("q").is_empty());
        assert!(!meds.by_patient.contains_key("q"));
    }

    /// The dispensing of `rx-1` (one LOXONIN line, 7 days) at noon on `on`.
    fn dispensing(patient: &str, on: Date) -> PrescriptionDispensed {
        let mut d = samples::prescription_dispensed(patient);
        d.prescription_id = "rx-1".to_owned();
        d.lines.truncate(1);
        d.lines[0].drug = CodedConcept::new(samples::HOT9, LOXONIN.0, Some(LOXONIN.1));
        d.lines[0].days_supply = Some(7);
        let noon = on.to_naive_date().unwrap().and_hms_opt(12, 0, 0).unwrap();
        d.envelope.occurred_at = hixbus_contracts::Timestamp::from(noon.and_utc());
        d
    }

    #[test]
    fn a_dispensing_read_before_its_prescription_counts_once_the_prescription_comes() {
        let rules = Rules::embedded().unwrap();
        let in_order = {
            let mut meds = Medications::default();
            meds.issued(
                &rules,
                &rx("p", "rx-1", "clinic-a", day(0), &[LOXONIN]),
                TODAY,
            );
            meds.dispensed(&rules, &dispensing("p", day(10)));
            meds.active("p").to_vec()
        };
        assert_eq!((in_order[0].from, in_order[0].until), (day(10), day(16)));

        let mut meds = Medications::default();
        meds.dispensed(&rules, &dispensing("p", day(10)));
        meds.issued(
            &rules,
            &rx("p", "rx-1", "clinic-a", day(0), &[LOXONIN]),
            TODAY,
        );
        assert_eq!(meds.active("p"), in_order.as_slice());
        assert!(meds.early.is_empty());
    }

    #[test]
    fn a_dispensing_whose_prescription_never_comes_is_forgotten_with_the_ended_lines() {
        let rules = Rules::embedded().unwrap();
        let mut meds = Medications::default();
        meds.dispensed(&rules, &dispensing("p", day(0)));
        assert_eq!(meds.early.len(), 1);
        meds.issued(
            &rules,
            &rx("q", "rx-9", "clinic-a", day(29), &[GASTER]),
            TODAY,
        );
        assert_eq!(meds.early.len(), 1, "kept within 30 days");
        meds.issued(
            &rules,
            &rx("q", "rx-10", "clinic-a", day(31), &[GASTER]),
            TODAY,
        );
        assert!(meds.early.is_empty());
    }

    #[test]
    fn dispensings_from_before_the_horizon_are_not_kept_whatever_order_they_come_in() {
        let rules = Rules::embedded().unwrap();
        let mut meds = Medications::default();
        // As a rebuild reads them: every prescription first, then every dispensing.
        meds.issued(
            &rules,
            &rx("p", "rx-1", "clinic-a", day(0), &[LOXONIN]),
            TODAY,
        );
        meds.issued(
            &rules,
            &rx("q", "rx-9", "clinic-a", day(100), &[GASTER]),
            TODAY,
        );
        assert!(
            meds.active("p").is_empty(),
            "rx-1 ended long before day 100"
        );
        for n in 0..1_000 {
            let mut old = dispensing(&format!("p{n}"), day(10));
            old.prescription_id = format!("rx-old-{n}");
            meds.dispensed(&rules, &old);
        }
        assert!(meds.early.is_empty(), "{} kept", meds.early.len());
        // One within the horizon still waits for its prescription.
        meds.dispensed(&rules, &dispensing("r", day(80)));
        assert_eq!(meds.early.len(), 1);
    }

    #[test]
    fn two_nsaids_from_two_clinics_are_a_class_duplicate() {
        let rules = Rules::embedded().unwrap();
        let mut meds = Medications::default();
        meds.issued(
            &rules,
            &rx("p", "rx-1", "clinic-a", day(0), &[VOLTAREN]),
            TODAY,
        );
        let conflicts = meds.issued(
            &rules,
            &rx("p", "rx-2", "clinic-b", day(1), &[LOXONIN]),
            TODAY,
        );
        assert_eq!(
            conflicts[0].finding.kind,
            AlertKind::DuplicateTherapeuticClass
        );
    }
}
