-- The ordering clinic's results inbox (see src/results.rs).

-- One row per report (a laboratory's report id), as its newest version reads.
CREATE TABLE lab_reports (
    report_key TEXT PRIMARY KEY,
    ordering_org TEXT NOT NULL,
    patient_ref TEXT NOT NULL,
    status TEXT NOT NULL,
    current_event_id TEXT NOT NULL,
    -- When the newest version was reported (unix ms): versions are applied in this order.
    reported_at BIGINT NOT NULL,
    -- The newest version's critical results (JSON), NULL when it has none.
    critical TEXT,
    -- Who acknowledged the newest version's critical results and when (JSON); a new version
    -- must be acknowledged again.
    acknowledged TEXT,
    report TEXT NOT NULL
);
CREATE INDEX lab_reports_by_orderer ON lab_reports (ordering_org, reported_at);

-- Every version of every report, superseded ones included: the clinic sees what changed.
CREATE TABLE lab_report_versions (
    event_id TEXT PRIMARY KEY,
    report_key TEXT NOT NULL,
    reported_at BIGINT NOT NULL,
    status TEXT NOT NULL,
    report TEXT NOT NULL
);
CREATE INDEX lab_report_versions_by_report ON lab_report_versions (report_key, reported_at);
