-- What the export knows of each patient from their prescriptions' insurance data: birth date
-- (ages) and sex, either possibly unknown. Replaces research_birth_dates.
CREATE TABLE IF NOT EXISTS research_patients (
    patient_ref TEXT PRIMARY KEY,
    birth_date INTEGER,
    sex TEXT
);
INSERT INTO research_patients (patient_ref, birth_date)
    SELECT patient_ref, birth_date FROM research_birth_dates WHERE true
    ON CONFLICT (patient_ref) DO NOTHING;
DROP TABLE research_birth_dates;
