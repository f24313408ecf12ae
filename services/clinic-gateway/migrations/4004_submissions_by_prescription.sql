-- Marking a submission published finds it by its prescription id, once per prescription: without
-- this index that was a scan of every submission the gateway ever took, growing with each one.
CREATE UNIQUE INDEX IF NOT EXISTS gateway_submissions_by_prescription
    ON gateway_submissions (prescription_id);
