-- A resubmission must be the same request: the digest of the normalized submission it was
-- first accepted with. NULL for rows accepted before this column existed (their replays are
-- answered as before).
ALTER TABLE gateway_submissions ADD COLUMN request_sha256 TEXT;
