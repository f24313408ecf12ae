-- The reference insurer's tables (src/store.rs).

-- What the exchange told this insurer about its members' prescriptions (ClaimEvidence).
CREATE TABLE adjudication_evidence (
    prescription_id TEXT PRIMARY KEY,
    stage TEXT NOT NULL,
    patient_ref TEXT NOT NULL,
    evidence TEXT NOT NULL
);

-- One decision per claim version (the claim's event id), filed before it is sent: a redelivered
-- or replayed claim finds it and sends that decision again (same event id), never a second one.
-- A decision filed and not sent is sent when the claim comes again, as it must: its offset was
-- not committed.
CREATE TABLE adjudications (
    claim_event_id TEXT PRIMARY KEY,
    provider_org TEXT NOT NULL,
    claim_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    prescription_id TEXT,
    fingerprint TEXT NOT NULL,
    outcome TEXT NOT NULL,
    patient_ref TEXT NOT NULL,
    decided_at TEXT NOT NULL,
    decision TEXT NOT NULL
);
CREATE INDEX adjudications_claim ON adjudications (provider_org, claim_id, version);
CREATE INDEX adjudications_prescription ON adjudications (prescription_id);
CREATE INDEX adjudications_fingerprint ON adjudications (fingerprint);
