-- The research export's tables (src/store.rs). Items wait here, still identifying, until a
-- release takes them; once released or suppressed only their status stays (the item itself is
-- cleared), so a replay of the topics never releases an item twice.
CREATE TABLE IF NOT EXISTS research_items (
    project TEXT NOT NULL,
    -- The source event's id and the item's place in it.
    item_key TEXT NOT NULL,
    patient_ref TEXT NOT NULL,
    received_ms BIGINT NOT NULL,
    -- pending, releasing, released, suppressed, opted_out
    status TEXT NOT NULL,
    release_id TEXT,
    claimed_ms BIGINT,
    -- The item (src/items.rs) as JSON; '{}' once released, suppressed or withdrawn.
    item TEXT NOT NULL,
    PRIMARY KEY (project, item_key)
);
CREATE INDEX IF NOT EXISTS research_items_waiting ON research_items (project, status, received_ms);
CREATE INDEX IF NOT EXISTS research_items_patient ON research_items (patient_ref);

-- Birth dates from prescriptions' insurance data: ages of items whose own event has none.
CREATE TABLE IF NOT EXISTS research_birth_dates (
    patient_ref TEXT PRIMARY KEY,
    birth_date INTEGER NOT NULL
);

-- Every release's manifest, as published.
CREATE TABLE IF NOT EXISTS research_releases (
    release_id TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    manifest TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS research_releases_project ON research_releases (project, at_ms);
