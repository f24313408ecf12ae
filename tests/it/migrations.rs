//! A database the release before versioned migrations created (commit 5521538's tables,
//! tests/fixtures/schema/release-5521538.sql) is upgraded in place when the services start
//! on it: every row stays, and reads as the current code expects. On SQLite and PostgreSQL.

use std::sync::Arc;

use hixbus_access::codes::{self, CodeKeys};
use hixbus_clinic_gateway::store::{SubmissionRow, Submissions};
use hixbus_clinic_gateway::view::ClinicView;
use hixbus_contracts::lifecycle::Status;
use hixbus_contracts::samples;
use hixbus_pharmacy::store::Store;
use hixbus_storage::{AuditLog, Database};
use hixbus_tests::{Backend, fresh_database};
use sha2::{Digest, Sha256};

const OLD_SCHEMA: &str = include_str!("../fixtures/schema/release-5521538.sql");

/// (table, rows) in the database.
async fn counts(db: &Database) -> Vec<(&'static str, i64)> {
    let mut counts = Vec::new();
    for table in [
        "audit_log",
        "gateway_submissions",
        "clinic_prescriptions",
        "clinic_alerts",
        "pharmacy_prescriptions",
        "pharmacy_alerts",
    ] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&db.pool)
            .await
            .unwrap();
        counts.push((table, n));
    }
    counts
}

async fn exec(db: &Database, sql: &str, binds: &[&str]) {
    let mut query = sqlx::query(sql);
    for b in binds {
        query = query.bind(*b);
    }
    query.execute(&db.pool).await.unwrap();
}

async fn upgrade_keeps_every_row(backend: Backend) {
    let url = fresh_database(backend).await;
    let db = Database::connect(&url).await.unwrap();
    for statement in OLD_SCHEMA.split(';') {
        let statement: String = statement
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        if !statement.trim().is_empty() {
            sqlx::query(&statement).execute(&db.pool).await.unwrap();
        }
    }

    // What that release wrote: the event JSON without the fields added since (an access code
    // in the clear, no digest), an unkeyed SHA-256 of the code.
    let code = codes::new_code();
    let mut issued = samples::prescription_issued("patient:old-0001", 2);
    issued.prescription_id = "rx-old-1".to_owned();
    issued.target_pharmacy_org = None;
    issued.access_code = code.clone();
    issued.access_code_digest = None;
    let mut old_json = serde_json::to_value(&issued).unwrap();
    old_json
        .as_object_mut()
        .unwrap()
        .remove("access_code_digest");
    let old_json = old_json.to_string();
    // An alert as the services stored it then: the event's JSON.
    let alert_json = serde_json::to_string(&samples::medication_alert("pt-old")).unwrap();
    let now = "2026-11-01T09:00:00+00:00";
    let issuer = issued.envelope.producer_org.clone();
    let patient = issued.envelope.patient_ref.clone();
    exec(
        &db,
        "INSERT INTO audit_log (at, org_id, action, subject_id, patient_ref)
         VALUES ($1, $2, 'prescription.issue', 'rx-old-1', $3)",
        &[now, &issuer, &patient],
    )
    .await;
    exec(
        &db,
        "INSERT INTO gateway_submissions (org_id, identifier, prescription_id, event_id,
             access_code, published, created_at)
         VALUES ($1, 'old-identifier', 'rx-old-1', $2, $3, 1, $4)",
        &[&issuer, &issued.envelope.event_id, &code, now],
    )
    .await;
    exec(
        &db,
        "INSERT INTO clinic_prescriptions (prescription_id, issuer_org, patient_ref, status,
             issued, updated_at)
         VALUES ('rx-old-1', $1, $2, 'issued', $3, $4)",
        &[&issuer, &patient, &old_json, now],
    )
    .await;
    exec(
        &db,
        "INSERT INTO clinic_alerts (alert_event_id, prescription_id, alert)
         VALUES ('alert-old-1', 'rx-old-1', $1)",
        &[alert_json.as_str()],
    )
    .await;
    let unkeyed = hex::encode(Sha256::digest(code.as_bytes()));
    exec(
        &db,
        "INSERT INTO pharmacy_prescriptions (prescription_id, issuer_org, patient_ref,
             access_code_sha256, status, issued, updated_at)
         VALUES ('rx-old-1', $1, $2, $3, 'issued', $4, $5)",
        &[&issuer, &patient, &unkeyed, &old_json, now],
    )
    .await;
    exec(
        &db,
        "INSERT INTO pharmacy_alerts (alert_event_id, prescription_id, alert)
         VALUES ('alert-old-1', 'rx-old-1', $1)",
        &[alert_json.as_str()],
    )
    .await;
    let before = counts(&db).await;

    // The services start on it: each applies its migrations (and the pharmacy replaces the
    // code in the clear by its keyed digest).
    let keys = CodeKeys::parse(&CodeKeys::generate_text("upgrade"), []).unwrap();
    let audit = AuditLog::new(db.clone()).await.unwrap();
    let submissions = Submissions::new(db.clone()).await.unwrap();
    let view = ClinicView::new(db.clone()).await.unwrap();
    let store = Store::new(db.clone(), Arc::new(keys.clone()))
        .await
        .unwrap();
    assert_eq!(counts(&db).await, before, "no row lost or added");

    // Each reads its old rows.
    assert_eq!(audit.for_patient(&patient).await.unwrap().len(), 1);
    let clinic = view.get(&issuer, "rx-old-1").await.unwrap().unwrap();
    assert_eq!(clinic.status, Status::Issued);
    assert_eq!(view.alerts("rx-old-1").await.unwrap().len(), 1);
    let fresh = SubmissionRow {
        prescription_id: "rx-new".to_owned(),
        event_id: "ev-new".to_owned(),
        access_code: "unused".to_owned(),
        published: false,
        request_sha256: Some("0".repeat(64)),
    };
    let replay = submissions
        .claim(&issuer, "old-identifier", &fresh)
        .await
        .unwrap();
    assert_eq!(
        replay.prescription_id, "rx-old-1",
        "a resubmission finds it"
    );
    assert!(replay.published);
    assert_eq!(
        replay.request_sha256, None,
        "accepted before digests existed"
    );
    let found = store.find_open_by_code(&code).await.unwrap();
    assert_eq!(found.len(), 1, "the patient's code still finds it");
    assert_eq!(found[0].alerts.len(), 1);
    assert!(
        found[0].issued.access_code.is_empty(),
        "the code is no longer kept in the clear"
    );

    // A restart on the upgraded database changes nothing.
    let _ = Store::new(db.clone(), Arc::new(keys)).await.unwrap();
    let _ = ClinicView::new(db.clone()).await.unwrap();
    assert_eq!(counts(&db).await, before);
}

#[tokio::test]
async fn an_old_sqlite_database_is_upgraded_in_place_and_loses_no_row() {
    upgrade_keeps_every_row(Backend::Sqlite).await;
}

#[tokio::test]
async fn an_old_postgres_database_is_upgraded_in_place_and_loses_no_row() {
    upgrade_keeps_every_row(Backend::Postgres).await;
}
