//! The items a research release is made of, taken from the clinical events field by field: a
//! prescribed or dispensed drug, a lab value, a checkup item. What is not copied here cannot
//! reach a project — names, notes, instructions, free-text values, insurance numbers — and a
//! field added to a clinical schema does not either, unless someone adds it here on purpose.

use hixbus_contracts::{
    CheckupCompleted, CodedConcept, Date, InstitutionRef, LabResultReported, Observation,
    PrescriptionDispensed, PrescriptionIssued, Quantity, ResearchItemKind, Timestamp,
};
use serde::{Deserialize, Serialize};

/// One item, as kept until it is released (never published as it is: it still names the
/// patient and the institution).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub kind: ResearchItemKind,
    pub patient_ref: String,
    pub institution_org: String,
    pub institution_code: Option<String>,
    pub day: Date,
    pub code_system: Option<String>,
    pub code: Option<String>,
    pub display: Option<String>,
    pub value: Option<f64>,
    pub unit: Option<String>,
    pub days_supply: Option<i32>,
    pub quantity: Option<f64>,
}

/// An item and its key: the source event's id and the item's place in it, so the same item
/// read again (a redelivery, a replay) is the same row.
pub type Keyed = (String, Item);

fn base(
    kind: ResearchItemKind,
    patient_ref: &str,
    institution: &InstitutionRef,
    day: Date,
    concept: &CodedConcept,
) -> Item {
    Item {
        kind,
        patient_ref: patient_ref.to_owned(),
        institution_org: institution.org_id.clone(),
        institution_code: institution.institution_code.clone(),
        day,
        code_system: Some(concept.system.clone()),
        code: Some(concept.code.clone()),
        display: concept.display.clone(),
        value: None,
        unit: None,
        days_supply: None,
        quantity: None,
    }
}

fn key(event_id: &str, n: usize) -> String {
    format!("{event_id}/{n}")
}

/// A drug as prescribed or dispensed: its code, supply and quantity.
fn drug(
    kind: ResearchItemKind,
    patient_ref: &str,
    institution: &InstitutionRef,
    day: Date,
    (concept, days_supply, quantity): (&CodedConcept, Option<i32>, &Quantity),
) -> Item {
    let mut item = base(kind, patient_ref, institution, day, concept);
    item.days_supply = days_supply;
    item.quantity = Some(quantity.value);
    item.unit = Some(quantity.unit.clone());
    item
}

/// The calendar day (UTC) of a moment, or the epoch for one out of range.
fn day_of(at: Timestamp) -> Date {
    Date::from(at.to_datetime().map(|t| t.date_naive()).unwrap_or_default())
}

pub fn prescribed(e: &PrescriptionIssued) -> Vec<Keyed> {
    e.lines
        .iter()
        .enumerate()
        .map(|(n, line)| {
            let item = drug(
                ResearchItemKind::Prescribed,
                &e.envelope.patient_ref,
                &e.issuer,
                e.issued_on,
                (&line.drug, line.days_supply, &line.quantity),
            );
            (key(&e.envelope.event_id, n), item)
        })
        .collect()
}

pub fn dispensed(e: &PrescriptionDispensed) -> Vec<Keyed> {
    let day = day_of(e.envelope.occurred_at);
    e.lines
        .iter()
        .enumerate()
        .map(|(n, line)| {
            let item = drug(
                ResearchItemKind::Dispensed,
                &e.envelope.patient_ref,
                &e.pharmacy,
                day,
                (&line.drug, line.days_supply, &line.quantity),
            );
            (key(&e.envelope.event_id, n), item)
        })
        .collect()
}

/// A numeric observation as an item; coded and free-text values are not released (free text
/// may name anyone; coded ones would need their own generalization).
fn observed(
    kind: ResearchItemKind,
    patient_ref: &str,
    institution: &InstitutionRef,
    day: Date,
    o: &Observation,
) -> Option<Item> {
    let value = o.value_numeric.filter(|v| v.is_finite())?;
    let mut item = base(kind, patient_ref, institution, day, &o.code);
    item.value = Some(value);
    item.unit = o.unit.clone();
    Some(item)
}

pub fn lab_results(e: &LabResultReported) -> Vec<Keyed> {
    let day = day_of(e.specimen.collected_at);
    // The patient was seen where the test was ordered; the laboratory may be anywhere.
    let institution = e.ordering.as_ref().unwrap_or(&e.performing_lab);
    e.results
        .iter()
        .enumerate()
        .filter_map(|(n, o)| {
            observed(
                ResearchItemKind::LabResult,
                &e.envelope.patient_ref,
                institution,
                day,
                o,
            )
            .map(|item| (key(&e.envelope.event_id, n), item))
        })
        .collect()
}

pub fn checkup_items(e: &CheckupCompleted) -> Vec<Keyed> {
    e.items
        .iter()
        .enumerate()
        .filter_map(|(n, o)| {
            observed(
                ResearchItemKind::CheckupItem,
                &e.envelope.patient_ref,
                &e.performed_by,
                e.performed_on,
                o,
            )
            .map(|item| (key(&e.envelope.event_id, n), item))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hixbus_contracts::samples;

    #[test]
    fn items_carry_codes_and_values_and_no_free_text() {
        let rx = samples::prescription_issued("pt-1", 2);
        let items = prescribed(&rx);
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].0, format!("{}/0", rx.envelope.event_id));
        let text = serde_json::to_string(&items).unwrap();
        for line in &rx.lines {
            if let Some(instructions) = &line.instructions {
                assert!(!text.contains(instructions.as_str()));
            }
            assert!(!text.contains(line.timing_text.as_str()) || line.timing_text.is_empty());
        }
        assert!(!text.contains(rx.prescriber.name.as_deref().unwrap_or("-")));
        let lab = samples::lab_result_reported("pt-1");
        let numeric = lab
            .results
            .iter()
            .filter(|o| o.value_numeric.is_some())
            .count();
        assert_eq!(lab_results(&lab).len(), numeric);
        assert!(
            lab_results(&lab)
                .iter()
                .all(|(_, i)| i.value.is_some() && i.kind == ResearchItemKind::LabResult)
        );
    }
}
