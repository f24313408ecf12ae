-- What the insurer delivery knows of each prescription (src/delivery.rs): the insurer its
-- Coverage names (NULL: none on the exchange), how far it got, and the evidence already
-- delivered, so a dispensing's evidence carries the prescribed lines too.
CREATE TABLE insurer_prescriptions (
    prescription_id TEXT PRIMARY KEY,
    insurer_org TEXT,
    stage TEXT NOT NULL,
    patient_ref TEXT NOT NULL,
    evidence TEXT
);

-- When a dispensing claim was first seen before its prescription's dispensing: it waits a
-- bounded time for that, then goes to the insurer anyway (which returns it if nothing came).
CREATE TABLE insurer_claim_waits (
    event_id TEXT PRIMARY KEY,
    first_seen_ms BIGINT NOT NULL
);
