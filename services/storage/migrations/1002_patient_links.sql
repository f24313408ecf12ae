-- Which patient each organization's local ids are (see src/links.rs): the newest link of each
-- local id, as the service that keeps this database learned or published it.
CREATE TABLE patient_links (
    org_id TEXT NOT NULL,
    local_id TEXT NOT NULL,
    patient_ref TEXT NOT NULL,
    -- When the link was made (unix ms): a link older than the one kept never replaces it.
    linked_ms BIGINT NOT NULL,
    PRIMARY KEY (org_id, local_id)
);
