-- The dispensing event a pharmacy began publishing (status 'dispensing'), so that one whose
-- publication a crash interrupted is published again, unchanged, instead of holding the
-- prescription in 'dispensing' forever. Cleared when the dispensing is recorded or given back.
ALTER TABLE pharmacy_prescriptions ADD COLUMN dispensing_event TEXT;
