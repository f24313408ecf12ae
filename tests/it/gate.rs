//! The compatibility gate CI runs: a compatible change passes, a breaking one fails.

use std::path::{Path, PathBuf};

use hixbus_contracts::Catalog;
use hixbus_contracts::gate::{self, GateError, Verdict};
use hixbus_contracts::registry::RegisterError;
use hixbus_tests::{Backend, TestRegistry};

fn copy_schemas() -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
    let target =
        std::env::temp_dir().join(format!("hixbus-schemas-{}", uuid::Uuid::new_v4().simple()));
    for sub in ["common", "events"] {
        std::fs::create_dir_all(target.join(sub)).unwrap();
        for entry in std::fs::read_dir(source.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, target.join(sub).join(path.file_name().unwrap())).unwrap();
        }
    }
    std::fs::copy(source.join("catalog.toml"), target.join("catalog.toml")).unwrap();
    target
}

fn edit(dir: &Path, file: &str, from: &str, to: &str) {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{file} has no {from:?}");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

fn verdict<'a>(reports: &'a [gate::SubjectReport], subject: &str) -> &'a Verdict {
    &reports
        .iter()
        .find(|r| r.subject == subject)
        .unwrap()
        .verdict
}

const CONSENT_ID_FIELD: &str = r#"{"name": "consent_id", "type": "string"},"#;

#[tokio::test]
async fn an_empty_registry_reports_every_subject_as_new() {
    let registry = TestRegistry::fresh(Backend::Sqlite).await;
    let reports = gate::check(&registry.client, Catalog::embedded())
        .await
        .unwrap();
    assert_eq!(reports.len(), Catalog::embedded().entries().len());
    assert!(
        reports.iter().all(|r| r.verdict == Verdict::NewSubject),
        "{reports:?}"
    );
}

#[tokio::test]
async fn adding_an_optional_field_passes_and_removing_a_required_one_fails() {
    let registry = TestRegistry::fresh(Backend::Sqlite).await;
    gate::register(&registry.client, Catalog::embedded())
        .await
        .unwrap();
    assert_eq!(
        registry
            .client
            .compatibility_level(Some("consents-value"))
            .await
            .unwrap(),
        "FULL_TRANSITIVE",
        "register holds subjects to the catalog's level"
    );

    let added = copy_schemas();
    edit(
        &added,
        "events/ConsentChanged.avsc",
        CONSENT_ID_FIELD,
        r#"{"name": "consent_id", "type": "string"},
    {"name": "recorded_by", "type": ["null", "string"], "default": null},"#,
    );
    let reports = gate::check(&registry.client, &Catalog::load_dir(&added).unwrap())
        .await
        .unwrap();
    assert!(
        reports.iter().all(|r| r.verdict == Verdict::Compatible),
        "{reports:?}"
    );

    let removed = copy_schemas();
    edit(&removed, "events/ConsentChanged.avsc", CONSENT_ID_FIELD, "");
    let catalog = Catalog::load_dir(&removed).unwrap();
    let reports = gate::check(&registry.client, &catalog).await.unwrap();
    assert!(
        matches!(verdict(&reports, "consents-value"), Verdict::Incompatible(m) if m.iter().any(|m| m.contains("consent_id"))),
        "{reports:?}"
    );
    assert_eq!(verdict(&reports, "alerts-value"), &Verdict::Compatible);

    let refused = gate::register(&registry.client, &catalog).await;
    assert!(
        matches!(refused, Err(GateError::Register { ref subject, source: RegisterError::Incompatible(_) }) if subject == "consents-value"),
        "{refused:?}"
    );
}
