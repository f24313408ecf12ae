-- The audit trail every service keeps (see src/audit.rs). IF NOT EXISTS: databases created
-- before versioned migrations already have it.
CREATE TABLE IF NOT EXISTS audit_log (
    at TEXT NOT NULL,
    org_id TEXT NOT NULL,
    action TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    patient_ref TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_by_patient ON audit_log (patient_ref);
