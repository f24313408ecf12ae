-- The last cursor handed out per insurer (src/feed.rs). Appends take the insurer's row in turn
-- (the row lock is held to commit), so numbers are handed out and committed in order without
-- two appends computing the same one; seeded from the entries already there.
CREATE TABLE insurer_feed_counters (
    insurer_org TEXT PRIMARY KEY,
    last_seq BIGINT NOT NULL
);
INSERT INTO insurer_feed_counters (insurer_org, last_seq)
    SELECT insurer_org, MAX(seq) FROM insurer_feed GROUP BY insurer_org;
