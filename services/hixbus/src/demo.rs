//! `hixbus demo`: inputs for trying the flow by hand.

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{Value, json};

/// A real example from the Japanese e-prescription implementation guide (two lines: an oral
/// drug for 7 days and eye drops).
const EXAMPLE_BUNDLE: &str = include_str!(
    "../../../tests/fixtures/fhir/jp-eprescription/Bundle-Bundle-for-JP-MedReq-ePreBundleExample01.json"
);

/// The official 特定健診 (specific health checkup) report example: 44 observations, for a member
/// of insurer 06123456 (the demo's insurer-kenpo).
const EXAMPLE_CHECKUP: &str = include_str!(
    "../../../tests/fixtures/fhir/jp-echeckup/Bundle-Bundle-eCheckupReport-Sample-01.json"
);

/// A Japanese SS-MIX2 lab message (OUL^R22: A/G ratio, total protein, albumin), UTF-8.
const EXAMPLE_LAB: &str = include_str!("../../../tests/fixtures/hl7v2/SSMIX2-OUL-R22-utf8.hl7");

#[derive(Debug, Subcommand)]
pub enum DemoCommand {
    /// Print the SS-MIX2 lab message example with a fresh message id, addressed to the demo
    /// hospital, ready to POST to the lab gateway (Content-Type: application/hl7-v2).
    Hl7Lab,
    /// Print the JP e-prescription example Bundle, dated today and with a fresh identifier, ready
    /// to POST to the clinic gateway (the example itself is from 2020 and long expired).
    FhirBundle,
    /// Print the 特定健診 checkup report example with a fresh identifier, ready to POST to the lab
    /// gateway's /fhir/Bundle as a clinic or hospital.
    Checkup,
}

pub fn run(cmd: DemoCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DemoCommand::Hl7Lab => {
            use std::io::Write as _;
            std::io::stdout().write_all(fresh_lab_message(false).as_bytes())?;
        }
        DemoCommand::FhirBundle => {
            let bundle = fresh_bundle()?;
            println!("{}", serde_json::to_string_pretty(&bundle)?);
        }
        DemoCommand::Checkup => {
            let mut checkup: Value = serde_json::from_str(EXAMPLE_CHECKUP)?;
            checkup["identifier"]["value"] = json!(uuid::Uuid::now_v7().to_string());
            println!("{}", serde_json::to_string_pretty(&checkup)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn fresh_bundle() -> anyhow::Result<Value> {
    let mut bundle: Value = serde_json::from_str(EXAMPLE_BUNDLE)?;
    let now = chrono::Utc::now().to_rfc3339();
    bundle["identifier"]["value"] = json!(format!("urn:uuid:{}", uuid::Uuid::new_v4()));
    bundle["timestamp"] = json!(now);
    for entry in bundle["entry"].as_array_mut().into_iter().flatten() {
        match entry["resource"]["resourceType"].as_str() {
            Some("Composition") => entry["resource"]["date"] = json!(now),
            Some("MedicationRequest") => entry["resource"]["authoredOn"] = json!(now),
            _ => {}
        }
    }
    Ok(bundle)
}

/// The example with a new MSH-10 and filler order number (so each is a new report, not a new
/// version of the last) and MSH-6 naming the demo hospital (the ordering institution);
/// `critical`: total protein 12.5 g/dl, flagged HH.
pub fn fresh_lab_message(critical: bool) -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    let report = format!("{:015}", uuid::Uuid::now_v7().as_u128() % 10u128.pow(15));
    let message = EXAMPLE_LAB
        .replacen("|GW|RCV|", "|GW|hospital-daiichi|", 1)
        .replacen("|20111220131032|", &format!("|{id}|"), 1)
        .replace("000000001219001", &report);
    if critical {
        message.replacen(
            "|7.2|g/dl^g/dl^99XYZ|6.70-8.3||",
            "|12.5|g/dl^g/dl^99XYZ|6.70-8.3|HH|",
            1,
        )
    } else {
        message
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn each_demo_lab_message_is_new_and_a_critical_one_says_so() {
        let a = super::fresh_lab_message(false);
        let b = super::fresh_lab_message(true);
        assert_ne!(a.split('|').nth(9), b.split('|').nth(9), "MSH-10 differs");
        let filler = |m: &str| {
            m.split('\r')
                .find(|s| s.starts_with("OBR"))
                .map(|s| s.split('|').nth(3).unwrap().to_owned())
        };
        assert_ne!(
            filler(&a),
            filler(&b),
            "a new report, not a new version of the last"
        );
        assert!(a.contains("|GW|hospital-daiichi|"));
        assert!(!a.contains("|HH|"));
        assert!(b.contains("|12.5|g/dl^g/dl^99XYZ|6.70-8.3|HH|"));
    }

    #[test]
    fn each_demo_bundle_is_new_and_dated_today() {
        let a = super::fresh_bundle().unwrap();
        let b = super::fresh_bundle().unwrap();
        assert_ne!(a["identifier"]["value"], b["identifier"]["value"]);
        let today = chrono::Utc::now().date_naive().to_string();
        assert!(a["timestamp"].as_str().unwrap().starts_with(&today));
    }
}
