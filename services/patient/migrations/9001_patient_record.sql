-- The patient record service's tables (src/store.rs). Everything under "record" is rebuilt
-- from the topics; the accounts and enrolment codes are the service's own and are backed up.

-- One entry per thing that happened to a patient: a prescription, a dispensing, an alert, a lab
-- report (its latest version), a checkup, a claim (its latest version). `event` is the event
-- that made it, as JSON; `rank` orders the versions of one entry (a later one replaces it).
-- `at` is when it happened clinically (issued, collected, performed), in ms since the epoch.
CREATE TABLE record_entries (
    kind TEXT NOT NULL,
    entry_key TEXT NOT NULL,
    patient_ref TEXT NOT NULL,
    event_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    org_id TEXT NOT NULL,
    rank BIGINT NOT NULL,
    event TEXT NOT NULL,
    PRIMARY KEY (kind, entry_key)
);
CREATE INDEX record_entries_patient ON record_entries (patient_ref, at, kind, entry_key);

-- What later changed an entry without replacing it: a prescription's cancellation, an
-- insurer's decision on one claim version (update_key `decision:<version>`). They may arrive
-- before the entry (another topic), so they are kept on their own.
CREATE TABLE record_updates (
    kind TEXT NOT NULL,
    entry_key TEXT NOT NULL,
    update_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    rank BIGINT NOT NULL,
    event TEXT NOT NULL,
    PRIMARY KEY (kind, entry_key, update_key)
);

-- Which references are one patient's: an institution's local id linked to the cross-institution
-- reference (PatientLinked), and a reference the patient had before their insurance changed
-- (kind `previous`). The latest link of a local reference wins.
CREATE TABLE record_links (
    from_ref TEXT NOT NULL,
    kind TEXT NOT NULL,
    patient_ref TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (from_ref, kind)
);
CREATE INDEX record_links_patient ON record_links (patient_ref);

-- Who signs in as which patient: an OpenID Connect subject at an issuer, bound at enrolment.
CREATE TABLE patient_accounts (
    issuer TEXT NOT NULL,
    subject TEXT NOT NULL,
    patient_ref TEXT NOT NULL,
    enrolled_at TEXT NOT NULL,
    enrolled_by TEXT NOT NULL,
    PRIMARY KEY (issuer, subject)
);
CREATE INDEX patient_accounts_patient ON patient_accounts (patient_ref);

-- One-time enrolment codes an institution handed a patient: only their SHA-256 is kept.
CREATE TABLE enrolment_codes (
    code_sha256 TEXT PRIMARY KEY,
    patient_ref TEXT NOT NULL,
    issued_by TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
