//! The registry's REST API, checked as raw HTTP so the status codes, content types and JSON
//! shapes are exactly what a Confluent client in any language would receive.

use hixbus_tests::{TestRegistry, schema_body};
use serde_json::{Value, json};

use crate::on_both_backends;

const V1: &str = r#"{"type":"record","name":"Patient","namespace":"t","fields":[{"name":"id","type":"string"},{"name":"name","type":"string"}]}"#;
/// V1 plus an optional field with a default: compatible in every direction.
const V2: &str = r#"{"type":"record","name":"Patient","namespace":"t","fields":[{"name":"id","type":"string"},{"name":"name","type":"string"},{"name":"email","type":["null","string"],"default":null}]}"#;
/// V2 without the required `name`: old readers cannot read it (FORWARD fails).
const V3_DROPS_NAME: &str = r#"{"type":"record","name":"Patient","namespace":"t","fields":[{"name":"id","type":"string"},{"name":"email","type":["null","string"],"default":null}]}"#;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

async fn register(registry: &TestRegistry, subject: &str, schema: &str) -> i64 {
    let r = registry
        .call(
            "POST",
            &format!("/subjects/{subject}/versions"),
            Some(&schema_body(schema)),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.content_type, CONTENT_TYPE);
    let id = r.body["id"].as_i64().expect("id");
    assert_eq!(r.body, json!({ "id": id }), "register answers only the id");
    id
}

fn same_schema(a: &str, b: &str) -> bool {
    let a = apache_avro::Schema::parse_str(a).unwrap();
    let b = apache_avro::Schema::parse_str(b).unwrap();
    serde_json::to_value(&a).unwrap() == serde_json::to_value(&b).unwrap()
}

async fn registering_is_idempotent_and_ids_are_global(registry: &TestRegistry) {
    let id1 = register(registry, "patients-value", V1).await;
    // The same schema with other whitespace and key order is the same schema.
    let reordered = r#"{ "namespace": "t", "name": "Patient", "type": "record",
        "fields": [ {"type": "string", "name": "id"}, {"name": "name", "type": "string"} ] }"#;
    assert_eq!(register(registry, "patients-value", reordered).await, id1);
    assert_eq!(
        registry
            .call("GET", "/subjects/patients-value/versions", None)
            .await
            .body,
        json!([1])
    );

    // Ids are global: another subject with the same schema gets the same id.
    assert_eq!(register(registry, "archive-value", V1).await, id1);
    let id2 = register(registry, "patients-value", V2).await;
    assert_ne!(id2, id1);
    assert_eq!(
        registry
            .call("GET", "/subjects/patients-value/versions", None)
            .await
            .body,
        json!([1, 2])
    );
    assert_eq!(
        registry.call("GET", "/subjects", None).await.body,
        json!(["archive-value", "patients-value"])
    );

    let latest = registry
        .call("GET", "/subjects/patients-value/versions/latest", None)
        .await;
    assert_eq!(latest.status, 200);
    assert_eq!(latest.content_type, CONTENT_TYPE);
    let keys: Vec<&String> = latest.body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["subject", "version", "id", "schema"]);
    assert_eq!(
        (
            &latest.body["subject"],
            &latest.body["version"],
            &latest.body["id"]
        ),
        (&json!("patients-value"), &json!(2), &json!(id2))
    );
    assert!(same_schema(latest.body["schema"].as_str().unwrap(), V2));

    let by_id = registry
        .call("GET", &format!("/schemas/ids/{id1}"), None)
        .await;
    assert_eq!(
        by_id.body.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["schema"]
    );
    assert!(same_schema(by_id.body["schema"].as_str().unwrap(), V1));
    // The bare-schema resources return the schema itself as the JSON document.
    let raw = registry
        .call("GET", &format!("/schemas/ids/{id1}/schema"), None)
        .await;
    assert!(same_schema(&raw.body.to_string(), V1));
    let raw_version = registry
        .call("GET", "/subjects/patients-value/versions/1/schema", None)
        .await;
    assert_eq!(raw_version.body, raw.body);

    assert_eq!(
        registry
            .call("GET", &format!("/schemas/ids/{id1}/versions"), None)
            .await
            .body,
        json!([{"subject": "archive-value", "version": 1}, {"subject": "patients-value", "version": 1}])
    );
    assert_eq!(
        registry
            .call("GET", &format!("/schemas/ids/{id1}/subjects"), None)
            .await
            .body,
        json!(["archive-value", "patients-value"])
    );
    assert_eq!(
        registry.call("GET", "/schemas/types", None).await.body,
        json!(["AVRO"])
    );
}

async fn lookup_finds_versions_and_reports_what_is_missing(registry: &TestRegistry) {
    let id1 = register(registry, "lookup-value", V1).await;
    register(registry, "lookup-value", V2).await;
    let found = registry
        .call("POST", "/subjects/lookup-value", Some(&schema_body(V1)))
        .await;
    assert_eq!(found.status, 200);
    assert_eq!(
        (&found.body["version"], &found.body["id"]),
        (&json!(1), &json!(id1))
    );

    let missing = registry
        .call(
            "POST",
            "/subjects/lookup-value",
            Some(&schema_body(V3_DROPS_NAME)),
        )
        .await;
    assert_eq!((missing.status, missing.error_code()), (404, Some(40403)));
    let no_subject = registry
        .call("POST", "/subjects/nobody", Some(&schema_body(V1)))
        .await;
    assert_eq!(
        (no_subject.status, no_subject.error_code()),
        (404, Some(40401))
    );
    assert_eq!(
        no_subject.body["message"],
        json!("Subject 'nobody' not found.")
    );
    assert_eq!(no_subject.content_type, CONTENT_TYPE);
}

async fn compatibility_is_enforced_by_avro_resolution(registry: &TestRegistry) {
    let set = registry
        .call(
            "PUT",
            "/config/compat-value",
            Some(r#"{"compatibility":"FULL_TRANSITIVE"}"#),
        )
        .await;
    assert_eq!(
        (set.status, &set.body),
        (200, &json!({"compatibility": "FULL_TRANSITIVE"}))
    );
    register(registry, "compat-value", V1).await;

    let ok = registry
        .call(
            "POST",
            "/compatibility/subjects/compat-value/versions/latest",
            Some(&schema_body(V2)),
        )
        .await;
    assert_eq!(
        (ok.status, &ok.body),
        (200, &json!({"is_compatible": true}))
    );
    register(registry, "compat-value", V2).await;

    let verbose = registry
        .call(
            "POST",
            "/compatibility/subjects/compat-value/versions/latest?verbose=true",
            Some(&schema_body(V3_DROPS_NAME)),
        )
        .await;
    assert_eq!(verbose.body["is_compatible"], json!(false));
    let messages = verbose.body["messages"].as_array().unwrap();
    assert!(
        messages
            .iter()
            .any(|m| m.as_str().unwrap().contains("FORWARD")),
        "{messages:?}"
    );

    let refused = registry
        .call(
            "POST",
            "/subjects/compat-value/versions",
            Some(&schema_body(V3_DROPS_NAME)),
        )
        .await;
    assert_eq!((refused.status, refused.error_code()), (409, Some(409)));
    assert!(
        refused.body["message"]
            .as_str()
            .unwrap()
            .contains("incompatible")
    );
    assert_eq!(
        registry
            .call("GET", "/subjects/compat-value/versions", None)
            .await
            .body,
        json!([1, 2]),
        "a refused schema is not stored"
    );

    // Under NONE anything goes.
    registry
        .call(
            "PUT",
            "/config/compat-value",
            Some(r#"{"compatibility":"none"}"#),
        )
        .await;
    register(registry, "compat-value", V3_DROPS_NAME).await;
}

async fn deletes_follow_confluent_soft_then_permanent_rules(registry: &TestRegistry) {
    let id1 = register(registry, "del-value", V1).await;
    register(registry, "del-value", V2).await;

    let not_soft = registry
        .call(
            "DELETE",
            "/subjects/del-value/versions/1?permanent=true",
            None,
        )
        .await;
    assert_eq!((not_soft.status, not_soft.error_code()), (404, Some(40407)));
    let soft = registry
        .call("DELETE", "/subjects/del-value/versions/1", None)
        .await;
    assert_eq!((soft.status, &soft.body), (200, &json!(1)));
    let again = registry
        .call("DELETE", "/subjects/del-value/versions/1", None)
        .await;
    assert_eq!(again.error_code(), Some(40406));
    assert_eq!(
        registry
            .call("GET", "/subjects/del-value/versions", None)
            .await
            .body,
        json!([2])
    );
    assert_eq!(
        registry
            .call("GET", "/subjects/del-value/versions?deleted=true", None)
            .await
            .body,
        json!([1, 2])
    );
    let gone = registry
        .call("GET", "/subjects/del-value/versions/1", None)
        .await;
    assert_eq!((gone.status, gone.error_code()), (404, Some(40402)));
    // Consumers must still decode old records: ids of soft-deleted versions stay readable.
    assert_eq!(
        registry
            .call("GET", &format!("/schemas/ids/{id1}?deleted=true"), None)
            .await
            .status,
        200
    );

    let subject_not_soft = registry
        .call("DELETE", "/subjects/del-value?permanent=true", None)
        .await;
    assert_eq!(subject_not_soft.error_code(), Some(40405));
    let soft_subject = registry.call("DELETE", "/subjects/del-value", None).await;
    assert_eq!(soft_subject.body, json!([2]));
    assert_eq!(
        registry
            .call("DELETE", "/subjects/del-value", None)
            .await
            .error_code(),
        Some(40404)
    );
    assert_eq!(
        registry.call("GET", "/subjects", None).await.body,
        json!([])
    );
    assert_eq!(
        registry
            .call("GET", "/subjects?deleted=true", None)
            .await
            .body,
        json!(["del-value"])
    );
    let hard = registry
        .call("DELETE", "/subjects/del-value?permanent=true", None)
        .await;
    assert_eq!(hard.body, json!([1, 2]));
    let unknown = registry
        .call("GET", &format!("/schemas/ids/{id1}"), None)
        .await;
    assert_eq!((unknown.status, unknown.error_code()), (404, Some(40403)));

    // Ids are stable: the same schema registered again gets its old id back.
    assert_eq!(register(registry, "del-value", V1).await, id1);
    assert_eq!(
        registry
            .call("GET", "/subjects/del-value/versions", None)
            .await
            .body,
        json!([1])
    );
}

async fn bad_input_gets_a_confluent_error_and_stores_nothing(registry: &TestRegistry) {
    register(registry, "good-value", V1).await;
    let cases: [(&str, &str, Option<&str>, u16, i64); 10] = [
        (
            "POST",
            "/subjects/bad-value/versions",
            Some("{not json"),
            400,
            400,
        ),
        (
            "POST",
            "/subjects/bad-value/versions",
            Some(r#"{"schema":"{\"type\":\"recordd\"}"}"#),
            422,
            42201,
        ),
        (
            "POST",
            "/subjects/bad-value/versions",
            Some(r#"{"schema":"not avro at all"}"#),
            422,
            42201,
        ),
        (
            "POST",
            "/subjects/bad-value/versions",
            Some(r#"{"schemaType":"AVRO"}"#),
            422,
            42201,
        ),
        (
            "POST",
            "/subjects/bad-value/versions",
            Some(r#"{"schema":"syntax = \"proto3\";","schemaType":"PROTOBUF"}"#),
            422,
            42201,
        ),
        (
            "POST",
            "/subjects/bad-value/versions",
            Some(
                r#"{"schema":"\"string\"","references":[{"name":"x","subject":"y","version":1}]}"#,
            ),
            422,
            42201,
        ),
        (
            "GET",
            "/subjects/good-value/versions/zero",
            None,
            422,
            42202,
        ),
        (
            "GET",
            "/subjects/good-value/versions/2147483648",
            None,
            422,
            42202,
        ),
        (
            "GET",
            "/subjects/unknown-value/versions/1",
            None,
            404,
            40401,
        ),
        (
            "PUT",
            "/config",
            Some(r#"{"compatibility":"SIDEWAYS"}"#),
            422,
            42203,
        ),
    ];
    for (method, path, body, status, code) in cases {
        let r = registry.call(method, path, body).await;
        assert_eq!(
            (r.status, r.error_code()),
            (status, Some(code)),
            "{method} {path} {body:?}: {r:?}"
        );
        assert_eq!(r.content_type, CONTENT_TYPE, "{method} {path}");
        assert!(
            !r.body["message"].as_str().unwrap_or_default().is_empty(),
            "{method} {path}: a reason"
        );
    }

    let control_char = registry
        .call(
            "POST",
            "/subjects/bad%07value/versions",
            Some(&schema_body(V1)),
        )
        .await;
    assert_eq!(control_char.error_code(), Some(42208));

    // An oversized body (the limit is 1 MiB) is refused before it is parsed.
    let huge = format!(r#"{{"schema":"{}"}}"#, "x".repeat(2 * 1024 * 1024));
    let too_large = registry
        .call("POST", "/subjects/bad-value/versions", Some(&huge))
        .await;
    assert_eq!((too_large.status, too_large.error_code()), (413, Some(413)));

    let nowhere = registry.call("GET", "/no/such/resource", None).await;
    assert_eq!((nowhere.status, nowhere.error_code()), (404, Some(404)));
    let wrong_method = registry.call("PATCH", "/subjects", None).await;
    assert_eq!(
        (wrong_method.status, wrong_method.error_code()),
        (405, Some(405))
    );

    assert_eq!(
        registry
            .call("GET", "/subjects?deleted=true", None)
            .await
            .body,
        json!(["good-value"]),
        "nothing from the bad requests was stored"
    );
}

async fn compatibility_config_resources(registry: &TestRegistry) {
    let global = registry.call("GET", "/config", None).await;
    assert_eq!(global.body, json!({"compatibilityLevel": "BACKWARD"}));
    let unset = registry.call("GET", "/config/cfg-value", None).await;
    assert_eq!((unset.status, unset.error_code()), (404, Some(40408)));
    let fallback = registry
        .call("GET", "/config/cfg-value?defaultToGlobal=true", None)
        .await;
    assert_eq!(fallback.body, json!({"compatibilityLevel": "BACKWARD"}));

    registry
        .call("PUT", "/config", Some(r#"{"compatibility":"FORWARD"}"#))
        .await;
    registry
        .call(
            "PUT",
            "/config/cfg-value",
            Some(r#"{"compatibility":"FULL"}"#),
        )
        .await;
    assert_eq!(
        registry.call("GET", "/config", None).await.body,
        json!({"compatibilityLevel": "FORWARD"})
    );
    assert_eq!(
        registry.call("GET", "/config/cfg-value", None).await.body,
        json!({"compatibilityLevel": "FULL"})
    );
    let deleted = registry.call("DELETE", "/config/cfg-value", None).await;
    assert_eq!(deleted.body, json!({"compatibilityLevel": "FULL"}));
    assert_eq!(
        registry
            .call("GET", "/config/cfg-value", None)
            .await
            .error_code(),
        Some(40408)
    );
    assert_eq!(
        registry.call("GET", "/", None).await.body,
        Value::Object(Default::default())
    );
}

/// `/mode` as Confluent has it: a registry frozen READONLY refuses every change and still
/// answers reads; one in IMPORT takes schemas with the ids and versions they had in the
/// registry they come from, and new registrations continue after them.
async fn modes_freeze_a_registry_and_import_keeps_ids_and_versions(registry: &TestRegistry) {
    assert_eq!(
        registry.call("GET", "/mode", None).await.body,
        json!({"mode": "READWRITE"})
    );
    let unset = registry.call("GET", "/mode/frozen-value", None).await;
    assert_eq!((unset.status, unset.error_code()), (404, Some(40409)));
    let invalid = registry
        .call("PUT", "/mode", Some(r#"{"mode":"SOMETIMES"}"#))
        .await;
    assert_eq!((invalid.status, invalid.error_code()), (422, Some(42204)));

    // A schema id is only for imports.
    let with_id = registry
        .call(
            "POST",
            "/subjects/frozen-value/versions",
            Some(&json!({"schema": V1, "id": 77}).to_string()),
        )
        .await;
    assert_eq!((with_id.status, with_id.error_code()), (422, Some(42205)));
    let id = register(registry, "frozen-value", V1).await;

    // READONLY for one subject: its changes are refused, its reads and other subjects go on.
    let frozen = registry
        .call("PUT", "/mode/frozen-value", Some(r#"{"mode":"READONLY"}"#))
        .await;
    assert_eq!(frozen.body, json!({"mode": "READONLY"}));
    for (method, path, body) in [
        (
            "POST",
            "/subjects/frozen-value/versions",
            Some(schema_body(V2)),
        ),
        ("DELETE", "/subjects/frozen-value/versions/1", None),
        ("DELETE", "/subjects/frozen-value", None),
    ] {
        let refused = registry.call(method, path, body.as_deref()).await;
        assert_eq!(
            (refused.status, refused.error_code()),
            (422, Some(42205)),
            "{method} {path}: {refused:?}"
        );
    }
    let read = registry
        .call("GET", "/subjects/frozen-value/versions/latest", None)
        .await;
    assert_eq!((read.status, read.body["id"].as_i64()), (200, Some(id)));
    register(registry, "other-value", V1).await;
    let versions = registry
        .call("GET", "/subjects/frozen-value/versions", None)
        .await;
    assert_eq!(versions.body, json!([1]), "nothing was added or deleted");
    let removed = registry.call("DELETE", "/mode/frozen-value", None).await;
    assert_eq!(removed.body, json!({"mode": "READONLY"}));
    register(registry, "frozen-value", V2).await;

    // IMPORT: refused over existing subjects unless forced; a new subject in IMPORT takes the
    // ids and versions given.
    let occupied = registry
        .call("PUT", "/mode", Some(r#"{"mode":"IMPORT"}"#))
        .await;
    assert_eq!((occupied.status, occupied.error_code()), (422, Some(42205)));
    let importing = registry
        .call("PUT", "/mode/imported-value", Some(r#"{"mode":"IMPORT"}"#))
        .await;
    assert_eq!(importing.body, json!({"mode": "IMPORT"}));
    let import = async |schema: &str, id: i64, version: i64| {
        registry
            .call(
                "POST",
                "/subjects/imported-value/versions",
                Some(&json!({"schema": schema, "id": id, "version": version}).to_string()),
            )
            .await
    };
    let first = import(V1_OTHER, 100, 3).await;
    assert_eq!(
        (first.status, first.body.clone()),
        (200, json!({"id": 100}))
    );
    // Imported as it was: not checked against the history (V3 breaks FORWARD of V1).
    let second = import(V3_DROPS_NAME, 101, 7).await;
    assert_eq!(second.body, json!({"id": 101}), "{second:?}");
    // The same again is idempotent; an id taken by another schema is refused.
    assert_eq!(import(V1_OTHER, 100, 3).await.status, 200);
    let taken = import(V2_OTHER, 100, 8).await;
    assert_eq!((taken.status, taken.error_code()), (422, Some(42205)));
    let without_id = registry
        .call(
            "POST",
            "/subjects/imported-value/versions",
            Some(&schema_body(V2_OTHER)),
        )
        .await;
    assert_eq!(
        (without_id.status, without_id.error_code()),
        (422, Some(42205))
    );
    let versions = registry
        .call("GET", "/subjects/imported-value/versions", None)
        .await;
    assert_eq!(versions.body, json!([3, 7]));
    let by_id = registry
        .call("GET", "/schemas/ids/101/versions", None)
        .await;
    assert_eq!(
        by_id.body,
        json!([{"subject": "imported-value", "version": 7}])
    );

    // Back to READWRITE: new schemas get ids after the imported ones, versions after theirs.
    registry
        .call(
            "PUT",
            "/mode/imported-value",
            Some(r#"{"mode":"READWRITE"}"#),
        )
        .await;
    registry
        .call(
            "PUT",
            "/config/imported-value",
            Some(r#"{"compatibility":"NONE"}"#),
        )
        .await;
    let next = register(registry, "imported-value", V2_OTHER).await;
    assert_eq!(next, 102);
    let latest = registry
        .call("GET", "/subjects/imported-value/versions/latest", None)
        .await;
    assert_eq!(latest.body["version"], 8);
}

/// Schemas of another record, so their ids are not the ones registered above.
const V1_OTHER: &str = r#"{"type":"record","name":"Imported","namespace":"t","fields":[{"name":"id","type":"string"}]}"#;
const V2_OTHER: &str = r#"{"type":"record","name":"Imported","namespace":"t","fields":[{"name":"id","type":"string"},{"name":"n","type":"int","default":0}]}"#;

const ADDRESS_V1: &str = r#"{"type":"record","name":"Address","namespace":"com.example","fields":[{"name":"street","type":"string"}]}"#;
/// V1 plus an optional field: BACKWARD-compatible.
const ADDRESS_V2: &str = r#"{"type":"record","name":"Address","namespace":"com.example","fields":[{"name":"street","type":"string"},{"name":"city","type":["null","string"],"default":null}]}"#;
/// `street` becomes a number: no earlier reader of addresses can read it.
const ADDRESS_NUMBERED: &str = r#"{"type":"record","name":"Address","namespace":"com.example","fields":[{"name":"street","type":"int"}]}"#;
/// Uses `com.example.Address` by name only: it resolves through a reference.
const PERSON: &str = r#"{"type":"record","name":"Person","namespace":"com.example","fields":[{"name":"name","type":"string"},{"name":"home","type":"com.example.Address"}]}"#;

fn with_references(schema: &str, references: Value) -> String {
    json!({ "schema": schema, "references": references }).to_string()
}

fn address_ref(version: i64) -> Value {
    json!([{ "name": "com.example.Address", "subject": "address", "version": version }])
}

/// Confluent's schema references: a schema names a type another subject's version defines; the
/// registry resolves it on registration, lookup and compatibility (on the whole shape, not only
/// the name), returns the references with the schema, and refuses to delete what is referenced.
async fn references_resolve_and_referenced_versions_cannot_be_deleted(registry: &TestRegistry) {
    let address = register(registry, "address", ADDRESS_V1).await;

    // Without its reference the type is unknown; a reference to nothing is refused, not stored.
    for (body, why) in [
        (schema_body(PERSON), "Address"),
        (
            with_references(
                PERSON,
                json!([{ "name": "com.example.Address", "subject": "address", "version": 9 }]),
            ),
            "no version 9",
        ),
        (
            with_references(
                PERSON,
                json!([{ "name": "com.example.Address", "subject": "nowhere", "version": 1 }]),
            ),
            "nowhere",
        ),
        (
            with_references(
                PERSON,
                json!([{ "name": "", "subject": "address", "version": 1 }]),
            ),
            "full name",
        ),
    ] {
        let r = registry
            .call("POST", "/subjects/person-value/versions", Some(&body))
            .await;
        assert_eq!(
            (r.status, r.body["error_code"].as_i64()),
            (422, Some(42201)),
            "{body}: {r:?}"
        );
        assert!(r.body["message"].as_str().unwrap().contains(why), "{r:?}");
    }
    assert_eq!(
        registry
            .call("GET", "/subjects/person-value/versions", None)
            .await
            .status,
        404
    );

    let body = with_references(PERSON, address_ref(1));
    let r = registry
        .call("POST", "/subjects/person-value/versions", Some(&body))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let person = r.body["id"].as_i64().unwrap();
    assert_ne!(person, address);
    // Idempotent; `-1` pins the latest version, which is the same reference.
    let again = with_references(PERSON, address_ref(-1));
    let r = registry
        .call("POST", "/subjects/person-value/versions", Some(&again))
        .await;
    assert_eq!(r.body["id"].as_i64(), Some(person), "{r:?}");

    // Read back with its references, by version and by id; found by lookup with them.
    let version = registry
        .call("GET", "/subjects/person-value/versions/1", None)
        .await;
    assert_eq!(version.body["references"], address_ref(1));
    assert!(same_schema_with(
        version.body["schema"].as_str().unwrap(),
        PERSON,
        &[ADDRESS_V1]
    ));
    let by_id = registry
        .call("GET", &format!("/schemas/ids/{person}"), None)
        .await;
    assert_eq!(by_id.body["references"], address_ref(1), "{by_id:?}");
    let plain = registry
        .call("GET", &format!("/schemas/ids/{address}"), None)
        .await;
    assert!(
        plain.body.get("references").is_none(),
        "no references, no field: {plain:?}"
    );
    let found = registry
        .call("POST", "/subjects/person-value", Some(&body))
        .await;
    assert_eq!(
        (found.status, found.body["id"].as_i64()),
        (200, Some(person))
    );
    let referrers = registry
        .call("GET", "/subjects/address/versions/1/referencedby", None)
        .await;
    assert_eq!(referrers.body, json!([person]));

    // A new Address version: Person over it is another schema (another id), a new version.
    let address2 = register(registry, "address", ADDRESS_V2).await;
    let r = registry
        .call(
            "POST",
            "/subjects/person-value/versions",
            Some(&with_references(PERSON, address_ref(2))),
        )
        .await;
    let person2 = r.body["id"].as_i64().expect("id");
    assert!(person2 > address2, "{r:?}");
    assert_eq!(
        registry
            .call("GET", "/subjects/person-value/versions", None)
            .await
            .body,
        json!([1, 2])
    );

    // Compatibility sees through the reference: the same Person text over an Address whose
    // street is a number cannot read what person-value holds.
    registry
        .call(
            "PUT",
            "/config/address",
            Some(r#"{"compatibility":"NONE"}"#),
        )
        .await;
    register(registry, "address", ADDRESS_NUMBERED).await;
    let r = registry
        .call(
            "POST",
            "/subjects/person-value/versions",
            Some(&with_references(PERSON, address_ref(3))),
        )
        .await;
    assert_eq!(r.status, 409, "{r:?}");
    assert!(
        r.body["message"].as_str().unwrap().contains("'home'"),
        "{r:?}"
    );
    let check = registry
        .call(
            "POST",
            "/compatibility/subjects/person-value/versions/latest?verbose=true",
            Some(&with_references(PERSON, address_ref(3))),
        )
        .await;
    assert_eq!(check.body["is_compatible"], false, "{check:?}");

    // A referenced version cannot go, softly or at all, nor can its subject; nothing changes.
    for path in ["/subjects/address/versions/1", "/subjects/address"] {
        let r = registry.call("DELETE", path, None).await;
        assert_eq!(
            (r.status, r.body["error_code"].as_i64()),
            (422, Some(42206)),
            "{path}: {r:?}"
        );
        assert!(
            r.body["message"]
                .as_str()
                .unwrap()
                .contains("subject=address,version=1"),
            "{r:?}"
        );
    }
    assert_eq!(
        registry
            .call("GET", "/subjects/address/versions", None)
            .await
            .body,
        json!([1, 2, 3])
    );
    // Version 3 is referenced by nothing registered (the 409 stored nothing).
    assert_eq!(
        registry
            .call("DELETE", "/subjects/address/versions/3", None)
            .await
            .status,
        200
    );

    // Once person-value is soft-deleted, Address may be soft-deleted; but readers of the
    // soft-deleted Person schemas (still readable by id) need Address, so it stays until they go.
    assert_eq!(
        registry
            .call("DELETE", "/subjects/person-value", None)
            .await
            .status,
        200
    );
    assert_eq!(
        registry
            .call("GET", "/subjects/address/versions/1/referencedby", None)
            .await
            .body,
        json!([])
    );
    assert_eq!(
        registry
            .call("DELETE", "/subjects/address", None)
            .await
            .status,
        200
    );
    let r = registry
        .call("DELETE", "/subjects/address?permanent=true", None)
        .await;
    assert_eq!(r.body["error_code"].as_i64(), Some(42206), "{r:?}");
    assert_eq!(
        registry
            .call("GET", &format!("/schemas/ids/{person}"), None)
            .await
            .body["references"],
        address_ref(1)
    );
    assert_eq!(
        registry
            .call("DELETE", "/subjects/person-value?permanent=true", None)
            .await
            .status,
        200
    );
    assert_eq!(
        registry
            .call("DELETE", "/subjects/address?permanent=true", None)
            .await
            .status,
        200
    );
}

/// Whether `text` (which uses referenced types by name) is `expected` over `referenced`.
fn same_schema_with(text: &str, expected: &str, referenced: &[&str]) -> bool {
    let (a, _) = apache_avro::Schema::parse_str_with_list(text, referenced).unwrap();
    let (b, _) = apache_avro::Schema::parse_str_with_list(expected, referenced).unwrap();
    serde_json::to_value(&a).unwrap() == serde_json::to_value(&b).unwrap()
}

on_both_backends!(
    registering_is_idempotent_and_ids_are_global,
    lookup_finds_versions_and_reports_what_is_missing,
    compatibility_is_enforced_by_avro_resolution,
    deletes_follow_confluent_soft_then_permanent_rules,
    bad_input_gets_a_confluent_error_and_stores_nothing,
    compatibility_config_resources,
    modes_freeze_a_registry_and_import_keeps_ids_and_versions,
    references_resolve_and_referenced_versions_cannot_be_deleted,
);

/// `hixbus registry import` copies another registry (here a hixbus one on SQLite, speaking the
/// same REST API as Confluent's) into a fresh one on PostgreSQL with every id and version as it
/// was, and Confluent's Python client reads the result; a second import over it is refused.
#[tokio::test]
async fn a_registry_is_imported_with_its_ids_and_confluents_client_reads_it() {
    let source = TestRegistry::fresh(hixbus_tests::Backend::Sqlite).await;
    let first = register(&source, "imported-value", V1).await;
    // An id the target would not hand out in the same order: the subject that took id 2 goes.
    let gone = register(&source, "gone-value", V1_OTHER).await;
    let latest = register(&source, "imported-value", V2).await;
    assert!(gone < latest);
    source.call("DELETE", "/subjects/gone-value", None).await;
    source
        .call("DELETE", "/subjects/gone-value?permanent=true", None)
        .await;
    source
        .call(
            "PUT",
            "/config/imported-value",
            Some(r#"{"compatibility":"FULL"}"#),
        )
        .await;
    // A schema with a reference comes along with it, under its id.
    register(&source, "address", ADDRESS_V1).await;
    let person = source
        .call(
            "POST",
            "/subjects/person-value/versions",
            Some(&with_references(PERSON, address_ref(1))),
        )
        .await
        .body["id"]
        .as_i64()
        .expect("id");

    let target = TestRegistry::fresh(hixbus_tests::Backend::Postgres).await;
    let (from, to) = (source.url.clone(), target.url.clone());
    let import = move || {
        std::process::Command::new(hixbus_tests::hixbus_bin())
            .args(["registry", "import", "--from", &from, "--to", &to])
            .env("HIXBUS_LOG", "error")
            .output()
            .unwrap()
    };
    let run = tokio::task::spawn_blocking(import.clone()).await.unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("imported 4 schema versions"), "{stdout}");
    let imported = target
        .call("GET", &format!("/schemas/ids/{person}"), None)
        .await;
    assert_eq!(imported.body["references"], address_ref(1), "{imported:?}");
    assert!(
        stdout.contains("1 subject compatibility levels"),
        "{stdout}"
    );
    assert_eq!(
        target.call("GET", "/mode", None).await.body,
        json!({"mode": "READWRITE"})
    );

    let expected = json!({
        "subject": "imported-value",
        "version": 2,
        "id": latest,
        "first_id": first,
        "schema": V2,
        "compatibility": "FULL",
        "next_schema": V2_WITH_PHONE,
        "next_id": person + 1,
    });
    let dir = tempfile::tempdir().unwrap();
    let expected_path = dir.path().join("expected.json");
    std::fs::write(&expected_path, expected.to_string()).unwrap();
    hixbus_tests::python_check(
        "registry_import_check.py",
        &[target.url.as_ref(), expected_path.as_ref()],
    )
    .await;

    // The target now has schemas of its own: importing over them needs --force.
    let again = tokio::task::spawn_blocking(import).await.unwrap();
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("Cannot import since found existing subjects"),
        "{stderr}"
    );
    assert_eq!(
        target.call("GET", "/mode", None).await.body,
        json!({"mode": "READWRITE"}),
        "a refused import leaves the target writable"
    );
}

/// V2 plus another optional field: FULL-compatible with V2.
const V2_WITH_PHONE: &str = r#"{"type":"record","name":"Patient","namespace":"t","fields":[{"name":"id","type":"string"},{"name":"name","type":"string"},{"name":"email","type":["null","string"],"default":null},{"name":"phone","type":["null","string"],"default":null}]}"#;

/// Confluent's Python client registers a schema with a reference (also normalized), reads it
/// back, serializes and deserializes records through it, asks where its id is used, freezes and
/// unfreezes its subject, and is refused deleting what it references
/// (tests/python/registry_references_check.py).
#[tokio::test]
async fn confluents_client_registers_and_reads_schemas_with_references() {
    let registry = TestRegistry::fresh(hixbus_tests::Backend::Postgres).await;
    hixbus_tests::python_check("registry_references_check.py", &[registry.url.as_ref()]).await;
}

/// A Confluent registry's backup (its `_schemas` topic dumped with keys, as Confluent's backup
/// procedure does) is imported: live versions with their ids, versions and references; levels;
/// soft-deleted and permanently deleted versions left out.
#[tokio::test]
async fn a_confluent_schemas_backup_is_imported_with_ids_references_and_levels() {
    let record = |subject: &str,
                  version: i64,
                  id: i64,
                  schema: &str,
                  refs: Value,
                  deleted: bool| {
        let key = json!({"keytype": "SCHEMA", "subject": subject, "version": version, "magic": 1});
        let mut value = json!({"subject": subject, "version": version, "id": id, "schema": schema, "deleted": deleted});
        if refs != json!([]) {
            value["references"] = refs;
        }
        format!("{key}\t{value}")
    };
    let log = [
        r#"{"keytype":"NOOP","magic":0}	null"#.to_owned(),
        r#"{"keytype":"CONFIG","subject":null,"magic":0}	{"compatibilityLevel":"FULL"}"#.to_owned(),
        record("address", 1, 21, ADDRESS_V1, json!([]), false),
        record("person-value", 1, 40, PERSON, address_ref(1), false),
        record("gone-value", 1, 30, V1_OTHER, json!([]), false),
        record("address", 2, 22, ADDRESS_V2, json!([]), false),
        r#"{"keytype":"CONFIG","subject":"address","magic":0}	{"compatibilityLevel":"NONE"}"#.to_owned(),
        // address v2 soft-deleted, gone-value permanently deleted.
        r#"{"keytype":"DELETE_SUBJECT","subject":"address","magic":0}	{"subject":"address","version":2}"#.to_owned(),
        record("address", 2, 22, ADDRESS_V2, json!([]), true),
        r#"{"keytype":"SCHEMA","subject":"gone-value","version":1,"magic":1}	null"#.to_owned(),
    ]
    .join("\n");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("schemas.log");
    std::fs::write(&path, log).unwrap();

    let target = TestRegistry::fresh(hixbus_tests::Backend::Sqlite).await;
    let to = target.url.clone();
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new(hixbus_tests::hixbus_bin())
            .args(["registry", "import", "--to", &to, "--from-schemas-log"])
            .arg(&path)
            .env("HIXBUS_LOG", "error")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("imported 2 schema versions"), "{stdout}");

    assert_eq!(
        target.call("GET", "/subjects", None).await.body,
        json!(["address", "person-value"])
    );
    let person = target
        .call("GET", "/subjects/person-value/versions/1", None)
        .await;
    assert_eq!(
        (person.body["id"].as_i64(), &person.body["references"]),
        (Some(40), &address_ref(1))
    );
    assert_eq!(
        target.call("GET", "/schemas/ids/21", None).await.status,
        200
    );
    assert_eq!(
        target.call("GET", "/schemas/ids/22", None).await.status,
        404
    );
    assert_eq!(
        target.call("GET", "/config", None).await.body["compatibilityLevel"],
        "FULL"
    );
    assert_eq!(
        target.call("GET", "/config/address", None).await.body["compatibilityLevel"],
        "NONE"
    );
    // New registrations follow the imported ids.
    assert_eq!(register(&target, "other-value", V2_OTHER).await, 41);
}
