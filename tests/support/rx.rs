//! The JP e-prescription examples as the tests send them (tests/fixtures/fhir/jp-eprescription,
//! SOURCES.md there), shared by the end-to-end tests and the fault suite.

use serde_json::{Value, json};

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/fhir/jp-eprescription"
);

/// A fixture as a clinic would send it today (the examples were written in 2020, and a
/// prescription is valid for four days).
pub fn fixture(name: &str) -> Value {
    let mut resource = as_written(name);
    let now = chrono::Utc::now().to_rfc3339();
    match resource["resourceType"].as_str() {
        Some("Bundle") => {
            for entry in resource["entry"].as_array_mut().unwrap() {
                match entry["resource"]["resourceType"].as_str() {
                    Some("Composition") => entry["resource"]["date"] = json!(now),
                    Some("MedicationRequest") => entry["resource"]["authoredOn"] = json!(now),
                    _ => {}
                }
            }
        }
        _ => resource["authoredOn"] = json!(now),
    }
    resource
}

pub fn as_written(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap()).unwrap()
}

/// The pharmacist a dispensing names.
pub fn pharmacist() -> Value {
    json!({ "pharmacist": { "id": "ph-007", "name": "薬剤 花子", "department": null } })
}

/// The example bundle as prescription `n` of its own patient.
pub fn numbered_bundle(n: usize) -> Value {
    let mut bundle = fixture("Bundle-Bundle-for-JP-MedReq-ePreBundleExample01.json");
    bundle["identifier"]["value"] = json!(format!("urn:uuid:restart-{n}"));
    for entry in bundle["entry"].as_array_mut().unwrap() {
        if entry["resource"]["resourceType"] == "Coverage" {
            for ext in entry["resource"]["extension"]
                .as_array_mut()
                .into_iter()
                .flatten()
            {
                if ext["url"]
                    .as_str()
                    .is_some_and(|u| u.ends_with("InsuredPersonNumber"))
                {
                    ext["valueString"] = json!(format!("{}", 50_000 + n));
                }
            }
        }
    }
    bundle
}

/// Waits until the pharmacy at `pharmacy_url` serves prescription `id` to the holder of `key`
/// (its read model has it), asking every `every`; panics after `limit`.
pub async fn until_pharmacy_has(
    http: &reqwest::Client,
    (pharmacy_url, key): (&str, &str),
    id: &str,
    limit: std::time::Duration,
    every: std::time::Duration,
) {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let status = http
            .get(format!("{pharmacy_url}/pharmacy/prescriptions/{id}"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .status();
        if status == 200 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pharmacy never had {id}: {status}"
        );
        tokio::time::sleep(every).await;
    }
}
