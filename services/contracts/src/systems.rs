//! Code system URIs as every hixbus event writes them, whatever the sender called them (HL7 v2
//! `JC10`, JP-CLINS' JLAC10 code system URLs…): consumers compare codes by these alone.

/// JLAC10 (臨床検査項目分類コード, 17 characters), by its OID.
pub const JLAC10: &str = "urn:oid:1.2.392.200119.4.504";
pub const LOINC: &str = "http://loinc.org";
pub const SNOMED_CT: &str = "http://snomed.info/sct";
pub const UCUM: &str = "http://unitsofmeasure.org";
