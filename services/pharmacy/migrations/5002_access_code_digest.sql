-- Access codes are looked up by their keyed digest (HMAC, see hixbus_access::codes), which the
-- event carries; the unkeyed SHA-256 column is no longer written ('' in new rows) or read.
ALTER TABLE pharmacy_prescriptions ADD COLUMN access_code_digest TEXT;
CREATE INDEX IF NOT EXISTS pharmacy_prescriptions_by_code_digest
    ON pharmacy_prescriptions (access_code_digest);
