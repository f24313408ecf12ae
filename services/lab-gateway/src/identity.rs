//! The identity rule: a sender's own patient id is linked to the cross-institution reference
//! only by the patient's health insurance, which the sender registers (`PUT /fhir/Patient/{id}`)
//! — never guessed from a name and a birth date. A link is published as `PatientLinked` (the
//! views keyed by patient catch up on what was published under the local id) and kept
//! (`hixbus_storage::Links`), so every later result for that local id carries the patient's
//! reference from the start.

use hixbus_contracts::identity;
use hixbus_service::fhir::Issue;
use serde_json::Value;

use crate::fhir::{Resources, array_at, str_at};

/// The cross-institution reference of a registered `Patient`: from JP-CLINS' insurance member id
/// among its identifiers, else from a contained JP Core `Coverage` and its payor.
pub fn registered_ref(patient: &Value, path_id: &str) -> Result<String, Vec<Issue>> {
    if str_at(patient, "/resourceType") != Some("Patient") {
        return Err(vec![Issue::new(
            "structure",
            "resourceType",
            "this endpoint takes a Patient",
        )]);
    }
    if let Some(id) = str_at(patient, "/id")
        && id != path_id
    {
        return Err(vec![Issue::new(
            "value",
            "Patient.id",
            format!("the Patient's id {id:?} is not the id in the path {path_id:?}"),
        )]);
    }
    let by_member_id = array_at(patient, "/identifier")
        .iter()
        .filter(|i| str_at(i, "/system") == Some(identity::CLINS_MEMBER_ID))
        .find_map(|i| str_at(i, "/value").and_then(identity::member_id_ref));
    if let Some(reference) = by_member_id {
        return Ok(reference);
    }
    let resources = Resources::of(patient);
    let by_coverage = array_at(patient, "/contained")
        .iter()
        .filter(|r| str_at(r, "/resourceType") == Some("Coverage"))
        .find_map(|coverage| {
            let payer = resources.resolve(coverage.pointer("/payor/0"))?;
            identity::insured(coverage, payer).map(|i| i.patient_ref)
        });
    by_coverage.ok_or_else(|| {
        vec![Issue::new(
            "required",
            "Patient",
            "the patient's health insurance is required: a JP_Insurance_memberID identifier, or a contained Coverage (insured person's symbol, number, branch) with its payor Organization (insurer number). hixbus never links a patient by name and birth date",
        )]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_patient_is_linked_by_insurance_only() {
        let by_member_id = json!({
            "resourceType": "Patient", "id": "0001000052",
            "identifier": [{"system": identity::CLINS_MEMBER_ID, "value": "00012345:あいう:１８７:05"}]
        });
        assert_eq!(
            registered_ref(&by_member_id, "0001000052").unwrap(),
            "jp-insured:00012345:あいう:187:05"
        );
        let by_coverage = json!({
            "resourceType": "Patient", "id": "p1",
            "contained": [
                {"resourceType": "Organization", "id": "payer",
                 "identifier": [{"system": identity::INSURER_NUMBER, "value": "06123456"}]},
                {"resourceType": "Coverage", "id": "cov",
                 "extension": [
                    {"url": "http://jpfhir.jp/fhir/core/Extension/StructureDefinition/JP_Coverage_InsuredPersonSymbol", "valueString": "１２３４５"},
                    {"url": "http://jpfhir.jp/fhir/core/Extension/StructureDefinition/JP_Coverage_InsuredPersonNumber", "valueString": "６７８９０"},
                    {"url": "http://jpfhir.jp/fhir/core/Extension/StructureDefinition/JP_Coverage_InsuredPersonSubNumber", "valueString": "０１"}
                 ],
                 "payor": [{"reference": "#payer"}]}
            ]
        });
        assert_eq!(
            registered_ref(&by_coverage, "p1").unwrap(),
            "jp-insured:06123456:12345:67890:01"
        );
        // Name and birth date alone link nothing.
        let named = json!({
            "resourceType": "Patient", "id": "p1",
            "name": [{"text": "患者 太郎"}], "birthDate": "1970-04-05"
        });
        assert!(
            registered_ref(&named, "p1").unwrap_err()[0]
                .diagnostics
                .contains("never")
        );
        assert!(
            registered_ref(&by_coverage, "p2").is_err(),
            "the path's id only"
        );
    }
}
