-- The audit log is also an outbox (src/audit.rs): each row that names a patient is published to
-- the `audit` topic once, under its own id, as that patient's access trail. Rows written before
-- this version have no id and stay local (the trail starts here).
ALTER TABLE audit_log ADD COLUMN event_id TEXT;
ALTER TABLE audit_log ADD COLUMN shipped INTEGER NOT NULL DEFAULT 1;
CREATE INDEX audit_log_to_ship ON audit_log (shipped, at);
