-- Event ids whose effect a consumer committed (see src/idempotency.rs).
CREATE TABLE IF NOT EXISTS bus_processed_events (
    consumer TEXT NOT NULL,
    event_id TEXT NOT NULL,
    processed_at TEXT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
