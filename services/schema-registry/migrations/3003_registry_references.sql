-- Schema references (Confluent's `references`): schema `schema_id` uses the type `name` defined by
-- version `version` of `subject`, in the order the client gave them (see src/store.rs).
CREATE TABLE IF NOT EXISTS registry_references (
        schema_id BIGINT NOT NULL REFERENCES registry_schemas (id),
        position BIGINT NOT NULL,
        name TEXT NOT NULL,
        subject TEXT NOT NULL,
        version BIGINT NOT NULL,
        PRIMARY KEY (schema_id, position)
    );
-- Deleting a version asks what references it.
CREATE INDEX IF NOT EXISTS registry_references_target ON registry_references (subject, version);
