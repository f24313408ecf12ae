-- Proxy access (src/delegation.rs): a patient lets another person (a parent, a guardian, a carer)
-- read their record and manage their consents, until a date or until revoked. The invitation is
-- a one-time code (only its SHA-256 kept, cleared once accepted); accepting binds the proxy's own
-- sign-in.
CREATE TABLE delegations (
    id TEXT PRIMARY KEY,
    patient_ref TEXT NOT NULL,
    relationship TEXT NOT NULL,
    code_sha256 TEXT UNIQUE,
    code_expires_at BIGINT NOT NULL,
    proxy_issuer TEXT,
    proxy_subject TEXT,
    created_at BIGINT NOT NULL,
    accepted_at BIGINT,
    until_ms BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX delegations_patient ON delegations (patient_ref);
CREATE INDEX delegations_proxy ON delegations (proxy_issuer, proxy_subject);
