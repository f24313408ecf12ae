-- The gateway's tables as they were before versioned migrations (IF NOT EXISTS: databases
-- created then already have them).

-- One row per (organization, prescription identifier): a resubmission gets the same
-- prescription (see src/store.rs).
CREATE TABLE IF NOT EXISTS gateway_submissions (
    org_id TEXT NOT NULL,
    identifier TEXT NOT NULL,
    prescription_id TEXT NOT NULL UNIQUE,
    event_id TEXT NOT NULL,
    access_code TEXT NOT NULL,
    published BIGINT NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    PRIMARY KEY (org_id, identifier)
);

-- The clinic view (see src/view.rs).
CREATE TABLE IF NOT EXISTS clinic_prescriptions (
    prescription_id TEXT PRIMARY KEY,
    issuer_org TEXT NOT NULL,
    patient_ref TEXT NOT NULL,
    status TEXT NOT NULL,
    claimed_by TEXT,
    cancelled TEXT,
    dispensed TEXT,
    issued TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS clinic_prescriptions_by_issuer ON clinic_prescriptions (issuer_org);

-- One row per prescription an alert involves: both prescribers and both pharmacies see it.
CREATE TABLE IF NOT EXISTS clinic_alerts (
    alert_event_id TEXT NOT NULL,
    prescription_id TEXT NOT NULL,
    alert TEXT NOT NULL,
    PRIMARY KEY (alert_event_id, prescription_id)
);
