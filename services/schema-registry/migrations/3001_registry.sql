-- Schemas, subject versions and compatibility settings (see src/store.rs).
CREATE TABLE IF NOT EXISTS registry_schemas (
        id BIGINT PRIMARY KEY,
        fingerprint TEXT NOT NULL UNIQUE,
        schema_type TEXT NOT NULL,
        schema_text TEXT NOT NULL
    );
CREATE TABLE IF NOT EXISTS registry_versions (
        subject TEXT NOT NULL,
        version BIGINT NOT NULL,
        schema_id BIGINT NOT NULL REFERENCES registry_schemas (id),
        deleted BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (subject, version)
    );
-- A schema is live at most once per subject; this is what makes concurrent registration of
-- the same schema idempotent across replicas.
CREATE UNIQUE INDEX IF NOT EXISTS registry_versions_live_schema
        ON registry_versions (subject, schema_id) WHERE deleted = 0;
CREATE INDEX IF NOT EXISTS registry_versions_by_schema ON registry_versions (schema_id);
CREATE TABLE IF NOT EXISTS registry_config (
        subject TEXT PRIMARY KEY,
        compatibility TEXT NOT NULL
    );
