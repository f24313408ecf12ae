//! Compatibility between a proposed schema and a subject's history, by Avro resolution rules.

use apache_avro::Schema;
use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};

use crate::domain::CompatibilityLevel;

/// Checks `proposed` against `history` (oldest first) under `level`; returns one message per
/// violation, empty when compatible.
pub fn check(
    level: CompatibilityLevel,
    proposed: &Schema,
    history: &[(i64, Schema)],
) -> Vec<String> {
    let against: &[(i64, Schema)] = if level.is_transitive() {
        history
    } else {
        history.last().map(std::slice::from_ref).unwrap_or_default()
    };
    let mut messages = Vec::new();
    for (version, existing) in against {
        if level.checks_backward()
            && let Some(why) = can_read(existing, proposed)
        {
            messages.push(format!(
                "the new schema cannot read data written with version {version} (BACKWARD): {why}"
            ));
        }
        if level.checks_forward()
            && let Some(why) = can_read(proposed, existing)
        {
            messages.push(format!(
                "version {version} cannot read data written with the new schema (FORWARD): {why}"
            ));
        }
    }
    messages
}

/// `None` when every datum written with `writer` resolves with `reader`.
fn can_read(writer: &Schema, reader: &Schema) -> Option<String> {
    match SchemaCompatibility::can_read(writer, reader) {
        Ok(Compatibility::Full) => None,
        // Confluent treats "some values would fail" (an enum symbol or union branch the reader
        // lacks) as incompatible; a registry that let it through would break consumers later.
        Ok(Compatibility::Partial) => Some(
            "only partially compatible: some enum symbols or union branches of the writer are unknown to the reader"
                .to_owned(),
        ),
        Err(e) => Some(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fields: &str) -> Schema {
        Schema::parse_str(&format!(
            r#"{{"type":"record","name":"Patient","fields":[{fields}]}}"#
        ))
        .unwrap()
    }

    const ID: &str = r#"{"name":"id","type":"string"}"#;
    const NAME_REQUIRED: &str = r#"{"name":"name","type":"string"}"#;
    const NAME_OPTIONAL: &str = r#"{"name":"name","type":["null","string"],"default":null}"#;

    #[test]
    fn adding_an_optional_field_with_a_default_is_fully_compatible() {
        let v1 = record(ID);
        let v2 = record(&format!("{ID},{NAME_OPTIONAL}"));
        for level in [
            CompatibilityLevel::Backward,
            CompatibilityLevel::Forward,
            CompatibilityLevel::FullTransitive,
        ] {
            assert!(check(level, &v2, &[(1, v1.clone())]).is_empty(), "{level}");
        }
    }

    #[test]
    fn adding_a_required_field_breaks_backward_but_not_forward() {
        let v1 = record(ID);
        let v2 = record(&format!("{ID},{NAME_REQUIRED}"));
        assert_eq!(
            check(CompatibilityLevel::Backward, &v2, &[(1, v1.clone())]).len(),
            1
        );
        assert!(check(CompatibilityLevel::Forward, &v2, &[(1, v1)]).is_empty());
    }

    #[test]
    fn removing_a_required_field_breaks_forward() {
        let v1 = record(&format!("{ID},{NAME_REQUIRED}"));
        let v2 = record(ID);
        assert!(check(CompatibilityLevel::Backward, &v2, &[(1, v1.clone())]).is_empty());
        let messages = check(CompatibilityLevel::Full, &v2, &[(1, v1)]);
        assert_eq!(messages.len(), 1);
        assert!(messages[0].contains("FORWARD"), "{messages:?}");
    }

    #[test]
    fn transitive_levels_check_every_version_and_others_only_the_latest() {
        let v1 = record(&format!("{ID},{NAME_REQUIRED}"));
        let v2 = record(&format!("{ID},{NAME_OPTIONAL}"));
        // v3 turns the field back into an incompatible type with v1 only.
        let v3 = record(&format!(
            r#"{ID},{{"name":"name","type":["null","int"],"default":null}}"#
        ));
        let history = [(1, v1), (2, v2)];
        let latest_only = check(CompatibilityLevel::Forward, &v3, &history);
        let all = check(CompatibilityLevel::ForwardTransitive, &v3, &history);
        assert!(all.len() > latest_only.len(), "{latest_only:?} vs {all:?}");
    }

    #[test]
    fn a_new_enum_symbol_is_backward_but_not_forward_compatible_without_a_default() {
        let e1 = Schema::parse_str(r#"{"type":"enum","name":"E","symbols":["A","B"]}"#).unwrap();
        let e2 =
            Schema::parse_str(r#"{"type":"enum","name":"E","symbols":["A","B","C"]}"#).unwrap();
        assert!(check(CompatibilityLevel::Backward, &e2, &[(1, e1.clone())]).is_empty());
        assert!(!check(CompatibilityLevel::Forward, &e2, &[(1, e1)]).is_empty());
    }

    #[test]
    fn none_accepts_anything() {
        let v1 = record(ID);
        let other = Schema::parse_str(r#""int""#).unwrap();
        assert!(check(CompatibilityLevel::None, &other, &[(1, v1)]).is_empty());
    }
}
