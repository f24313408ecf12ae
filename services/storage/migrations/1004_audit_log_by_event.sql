-- The shipper marks each shipped row by its id: without this index every batch it ships was a
-- scan of the whole audit log, which only ever grows.
CREATE INDEX IF NOT EXISTS audit_log_by_event ON audit_log (event_id);
