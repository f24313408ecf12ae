-- The consent book (src/book.rs): the latest decision on each consent, from the `consents` topic
-- (and, in the patient service, from the patient's own API calls, applied at once and again when
-- consumed: the same row). Every service that shows one institution another's data keeps one.
CREATE TABLE IF NOT EXISTS consent_decisions (
    consent_id TEXT PRIMARY KEY,
    patient_ref TEXT NOT NULL,
    -- When the decision was made (unix ms): an older decision never replaces a newer one.
    at BIGINT NOT NULL,
    -- The ConsentChanged event as JSON.
    event TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS consent_decisions_patient ON consent_decisions (patient_ref);
