//! The `.avsc` files are the source of truth; these tests fail when the Rust types drift from them.

use std::collections::BTreeSet;
use std::path::Path;

use hixbus_contracts::catalog::EMBEDDED_SOURCES;
use hixbus_contracts::{Catalog, Event};
use serde_json::Value;

/// Drops what does not change the bytes on the wire or how they are read into our types:
/// documentation, defaults and aliases (defaults are checked by the registry's compatibility
/// rules, where they matter).
fn wire_shape(mut json: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for key in ["doc", "default", "aliases"] {
                    map.remove(key);
                }
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut json);
    json
}

#[test]
fn every_rust_event_type_matches_its_avsc_file() {
    let catalog = Catalog::embedded();
    for name in Event::NAMES {
        let entry = catalog.entry(name).expect("catalog entry");
        let from_file = serde_json::to_value(&entry.schema).unwrap();
        let derived = serde_json::to_value(Event::derived_schema(name).unwrap()).unwrap();
        assert_eq!(
            wire_shape(derived),
            wire_shape(from_file),
            "{name}: the Rust struct and schemas/events/{name}.avsc disagree"
        );
    }
}

#[test]
fn the_binary_embeds_every_schema_file_on_disk() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
    let mut on_disk = BTreeSet::new();
    for sub in ["common", "events"] {
        for entry in std::fs::read_dir(root.join(sub)).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if name.ends_with(".avsc") {
                on_disk.insert(format!("{sub}/{name}"));
            }
        }
    }
    on_disk.insert("catalog.toml".to_owned());
    let embedded: BTreeSet<String> = EMBEDDED_SOURCES
        .iter()
        .map(|(p, _)| (*p).to_owned())
        .collect();
    assert_eq!(embedded, on_disk, "update EMBEDDED_SOURCES in catalog.rs");

    for (path, text) in EMBEDDED_SOURCES {
        assert_eq!(
            std::fs::read_to_string(root.join(path)).unwrap(),
            *text,
            "{path} changed on disk; rebuild"
        );
    }
}

#[test]
fn loading_the_directory_gives_the_embedded_catalog() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
    let from_disk = Catalog::load_dir(&root).unwrap();
    let embedded = Catalog::embedded();
    assert_eq!(from_disk.entries().len(), embedded.entries().len());
    for (a, b) in from_disk.entries().iter().zip(embedded.entries()) {
        assert_eq!(
            (&a.name, &a.subject, &a.schema_json),
            (&b.name, &b.subject, &b.schema_json)
        );
    }
}

#[test]
fn topics_and_subjects_follow_the_documented_strategy() {
    let catalog = Catalog::embedded();
    for entry in catalog.entries() {
        let shared_topic = catalog
            .entries()
            .iter()
            .filter(|e| e.topic == entry.topic)
            .count()
            > 1;
        let expected = if entry.is_per_recipient() {
            // One subject for every insurer's (or project's) topic (RecordNameStrategy).
            entry.full_name.clone()
        } else if shared_topic {
            format!("{}-{}", entry.topic, entry.full_name)
        } else {
            format!("{}-value", entry.topic)
        };
        assert_eq!(entry.subject, expected, "{}", entry.name);
    }
    assert_eq!(
        catalog.topics(),
        [
            "prescriptions",
            "dispensations",
            "lab-results",
            "checkups",
            "claims",
            "claim-adjudications",
            "consents",
            "alerts",
            "patient-links",
            "audit",
            "research-releases"
        ]
    );
}
