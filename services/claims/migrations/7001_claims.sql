-- The claims service's tables (src/store.rs).

-- Prescriptions as issued (the event, JSON), so a dispensing can be priced: the Coverage and
-- the prescribed lines.
CREATE TABLE claim_prescriptions (
    prescription_id TEXT PRIMARY KEY,
    event TEXT NOT NULL
);

-- Every version of every claim a provider made (or the service made for it from a dispensing).
-- status: pending (being published), submitted, unpriced (a dispensing that could not be
-- priced; problem says why).
CREATE TABLE claims (
    provider_org TEXT NOT NULL,
    claim_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    status TEXT NOT NULL,
    patient_ref TEXT NOT NULL,
    insurer_org TEXT,
    submitted_at TEXT NOT NULL,
    event TEXT,
    problem TEXT,
    PRIMARY KEY (provider_org, claim_id, version)
);
CREATE UNIQUE INDEX claims_event ON claims (event_id);
CREATE INDEX claims_recent ON claims (provider_org, submitted_at);

-- The insurers' decisions, one per claim version.
CREATE TABLE claim_decisions (
    provider_org TEXT NOT NULL,
    claim_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    decided_at TEXT NOT NULL,
    event TEXT NOT NULL,
    PRIMARY KEY (provider_org, claim_id, version)
);
