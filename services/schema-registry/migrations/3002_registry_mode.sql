-- The registry's mode, globally (subject '') and per subject: READWRITE, READONLY or IMPORT
-- (see src/service.rs). No row: READWRITE.
CREATE TABLE IF NOT EXISTS registry_mode (
        subject TEXT PRIMARY KEY,
        mode TEXT NOT NULL
    );
