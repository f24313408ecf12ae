-- Dead letters an operator put back on their source topic from the console: one row each, so a
-- second redrive of the same letter is refused instead of publishing it twice.
CREATE TABLE IF NOT EXISTS ops_redrives (
    dead_letter TEXT PRIMARY KEY,
    redriven_by TEXT NOT NULL,
    redriven_at BIGINT NOT NULL,
    -- NULL while the publish is under way; a claim left NULL for a minute (the service
    -- stopped mid-redrive) may be taken again.
    redriven_to TEXT
);
