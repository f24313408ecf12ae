-- Every patient's access trail (src/trail.rs): the `audit` topic, one hash chain per partition.
-- Entry n of a chain stores the hash of entry n-1 and its own, SHA-256 over that previous hash,
-- its number and the entry's canonical JSON, so `hixbus audit verify` finds the first entry that
-- was altered, removed or reordered.
CREATE TABLE audit_trail (
    chain INTEGER NOT NULL,
    seq BIGINT NOT NULL,
    event_id TEXT NOT NULL UNIQUE,
    patient_ref TEXT NOT NULL,
    at BIGINT NOT NULL,
    entry TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (chain, seq)
);
CREATE INDEX audit_trail_patient ON audit_trail (patient_ref, at);
