-- The pharmacy read model as it was before versioned migrations (IF NOT EXISTS: databases
-- created then already have it). See src/store.rs.
CREATE TABLE IF NOT EXISTS pharmacy_prescriptions (
    prescription_id TEXT PRIMARY KEY,
    issuer_org TEXT NOT NULL,
    patient_ref TEXT NOT NULL,
    target_pharmacy TEXT,
    holder TEXT,
    access_code_sha256 TEXT NOT NULL,
    status TEXT NOT NULL,
    dispensed_by TEXT,
    expires_on BIGINT,
    issued TEXT NOT NULL,
    dispensed TEXT,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS pharmacy_prescriptions_by_holder ON pharmacy_prescriptions (holder);
CREATE INDEX IF NOT EXISTS pharmacy_prescriptions_by_code ON pharmacy_prescriptions (access_code_sha256);

-- One row per prescription an alert involves: both prescribers and both pharmacies see it.
CREATE TABLE IF NOT EXISTS pharmacy_alerts (
    alert_event_id TEXT NOT NULL,
    prescription_id TEXT NOT NULL,
    alert TEXT NOT NULL,
    PRIMARY KEY (alert_event_id, prescription_id)
);
CREATE INDEX IF NOT EXISTS pharmacy_alerts_by_prescription ON pharmacy_alerts (prescription_id);
