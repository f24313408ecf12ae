-- Each insurer's feed (see src/feed.rs): its entries in the order they were recorded, numbered
-- from 1 per insurer; the number is the cursor a reader resumes from.
CREATE TABLE insurer_feed (
    insurer_org TEXT NOT NULL,
    seq BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    patient_ref TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (insurer_org, seq)
);
CREATE UNIQUE INDEX insurer_feed_once ON insurer_feed (insurer_org, event_id);
