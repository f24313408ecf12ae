-- Consents (src/consent.rs): the latest decision on each consent, from the `consents` topic and
-- from the patient's own API calls (applied at once, then again when consumed: the same row).
CREATE TABLE record_consents (
    consent_id TEXT PRIMARY KEY,
    patient_ref TEXT NOT NULL,
    at BIGINT NOT NULL,
    event TEXT NOT NULL
);
CREATE INDEX record_consents_patient ON record_consents (patient_ref);

-- Emergency access an institution declared without consent, with its reason; the patient sees
-- each one first in their access list.
CREATE TABLE break_glass (
    id TEXT PRIMARY KEY,
    patient_ref TEXT NOT NULL,
    org_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    until_ms BIGINT NOT NULL
);
CREATE INDEX break_glass_patient ON break_glass (patient_ref);
