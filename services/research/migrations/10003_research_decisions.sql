-- A release's decision (its records, manifest, subjects and item outcomes), kept before anything
-- of it is published: a release taken up again after a failure publishes exactly this, instead
-- of deciding again on consents and data that changed meanwhile, which could mix two plans
-- under one release id and break k (src/release.rs). Deleted once the release is finished.
CREATE TABLE IF NOT EXISTS research_decisions (
    release_id TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    decided_ms BIGINT NOT NULL,
    decision TEXT NOT NULL
);
