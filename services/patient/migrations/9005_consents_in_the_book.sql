-- Consents now live in the consent book every enforcing service keeps (hixbus-consent,
-- migration 2001, run before this one): the decisions kept here before move there.
INSERT INTO consent_decisions (consent_id, patient_ref, at, event)
    SELECT consent_id, patient_ref, at, event FROM record_consents WHERE true
    ON CONFLICT (consent_id) DO NOTHING;
DROP TABLE record_consents;
