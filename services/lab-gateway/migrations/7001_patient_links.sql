-- Which patient each organization's local ids are (see src/identity.rs): the newest link of
-- each local id.
CREATE TABLE patient_links (
    org_id TEXT NOT NULL,
    local_id TEXT NOT NULL,
    patient_ref TEXT NOT NULL,
    linked_at TEXT NOT NULL,
    PRIMARY KEY (org_id, local_id)
);
