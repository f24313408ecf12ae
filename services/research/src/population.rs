//! A seeded population for tests, benchmarks and demos: realistic prescriptions, dispensings,
//! lab results and specific health checkups for any number of fictional patients, the same for
//! the same seed.
//!
//! Realistic where it matters to the export: ages skewed old as Japan's patients are (half
//! over 60), patients spread over the prefectures by population, several institutions per
//! prefecture with real-format medical-institution codes, common drugs by their HOT9 codes,
//! and lab and checkup values drawn around the means of the Japanese population (HbA1c,
//! fasting glucose, LDL cholesterol, creatinine; BMI, waist, blood pressure) rising with age.
//! No one in it exists.

use hixbus_contracts::{
    AdministrativeSex, CodedConcept, Coverage, Date, Envelope, Event, InstitutionRef, Observation,
    Timestamp, samples,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const HOT9: &str = "urn:oid:1.2.392.200119.4.403.1";
const JLAC10: &str = "urn:oid:1.2.392.200119.4.504";
const CHECKUP: &str = "urn:oid:1.2.392.200119.6.1005";

/// Common prescriptions (HOT9 code, name).
const DRUGS: [(&str, &str); 8] = [
    ("1149019F1ZZZ", "ロキソプロフェンナトリウム錠60mg"),
    ("2171022F1ZZZ", "アムロジピン錠5mg"),
    ("3969007F1ZZZ", "メトホルミン塩酸塩錠250mg"),
    ("2189017F1ZZZ", "ロスバスタチン錠2.5mg"),
    ("2329023F1ZZZ", "ファモチジン錠20mg"),
    ("2239001F1ZZZ", "カルボシステイン錠250mg"),
    ("1124007F1ZZZ", "ブロチゾラム錠0.25mg"),
    ("3399007H1ZZZ", "アスピリン腸溶錠100mg"),
];

/// Lab tests: JLAC10 code, name, unit, mean at 40, rise per decade after 40, spread.
const LAB_TESTS: [(&str, &str, &str, f64, f64, f64); 4] = [
    ("3D046000001920402", "HbA1c(NGSP)", "%", 5.6, 0.15, 0.6),
    ("3D010000001926101", "空腹時血糖", "mg/dL", 98.0, 3.0, 14.0),
    (
        "3F077000002327101",
        "LDLコレステロール",
        "mg/dL",
        120.0,
        2.0,
        28.0,
    ),
    (
        "3C015000002327101",
        "クレアチニン",
        "mg/dL",
        0.78,
        0.04,
        0.18,
    ),
];

/// Checkup items: code, name, unit, mean at 40, rise per decade, spread.
const CHECKUP_ITEMS: [(&str, &str, &str, f64, f64, f64); 4] = [
    ("9N011000000000001", "BMI", "kg/m2", 23.0, 0.2, 3.2),
    ("9N016160100000001", "腹囲", "cm", 83.0, 1.0, 8.5),
    ("9A751000000000001", "収縮期血圧", "mmHg", 122.0, 5.0, 15.0),
    ("9A761000000000001", "拡張期血圧", "mmHg", 76.0, 1.5, 10.0),
];

/// Prefecture numbers with their share of the population, in per mille (the rest of the 47
/// share what is left evenly).
const BIG_PREFECTURES: [(u8, u32); 10] = [
    (13, 112),
    (14, 74),
    (27, 70),
    (23, 60),
    (11, 59),
    (12, 50),
    (28, 43),
    (1, 41),
    (40, 41),
    (22, 29),
];

/// The first day of the period the population's events fall in (2025-04-01).
const FIRST_DAY: i32 = 20_179;
/// How many days the period spans.
const DAYS: i32 = 365;

/// One fictional patient.
#[derive(Debug, Clone, PartialEq)]
pub struct Patient {
    pub patient_ref: String,
    pub birth_date: Date,
    pub sex: AdministrativeSex,
    pub prefecture: u8,
    /// What a person who knows them could know: their insurance number.
    pub insurance_number: String,
}

/// A population's patients and their events, in the order they happened per patient.
#[derive(Debug, Clone)]
pub struct Population {
    pub patients: Vec<Patient>,
    pub events: Vec<Event>,
}

fn pick_prefecture(rng: &mut StdRng) -> u8 {
    let mut roll = rng.random_range(0..1000u32);
    for (p, share) in BIG_PREFECTURES {
        if roll < share {
            return p;
        }
        roll -= share;
    }
    // The other 37 prefectures share the remaining 42 %.
    let others: Vec<u8> = (1..=47)
        .filter(|p| !BIG_PREFECTURES.iter().any(|(b, _)| b == p))
        .collect();
    others[rng.random_range(0..others.len())]
}

/// Age in years: a quarter under 40, a quarter 40–59, half 60 and over, a few over 90.
fn pick_age(rng: &mut StdRng) -> u32 {
    match rng.random_range(0..100u32) {
        0..25 => rng.random_range(5..40),
        25..50 => rng.random_range(40..60),
        50..97 => rng.random_range(60..90),
        _ => rng.random_range(90..101),
    }
}

/// A value around `mean` (rising `per_decade` after 40) with a roughly normal spread.
fn draw(rng: &mut StdRng, age: u32, mean: f64, per_decade: f64, spread: f64) -> f64 {
    let centre = mean + per_decade * (f64::from(age.max(40)) - 40.0) / 10.0;
    // The sum of four uniforms is close enough to normal for test data.
    let z: f64 = (0..4).map(|_| rng.random_range(-1.0..1.0)).sum::<f64>() * 0.866;
    ((centre + z * spread) * 100.0).round() / 100.0
}

/// Institution `n` (0–3) of prefecture `p`: a clinic or hospital with a real-format code.
fn institution(p: u8, n: u32) -> InstitutionRef {
    InstitutionRef {
        org_id: format!("inst-{p:02}-{n}"),
        institution_code: Some(format!("{p:02}1{:07}", 1000 + n)),
        name: Some(format!("医療機関 {p:02}-{n}")),
    }
}

fn envelope(producer: &str, patient: &str, day: i32, seq: u32) -> Envelope {
    Envelope {
        event_id: uuid::Uuid::new_v4().to_string(),
        occurred_at: Timestamp::from_unix_millis(
            i64::from(day) * 86_400_000 + 9 * 3_600_000 + i64::from(seq) * 60_000,
        ),
        producer_org: producer.to_owned(),
        patient_ref: patient.to_owned(),
        correlation_id: None,
        causation_id: None,
    }
}

fn observation(code: &str, system: &str, name: &str, unit: &str, value: f64) -> Observation {
    let mut o = samples::lab_result_reported("x").results[0].clone();
    o.code = CodedConcept::new(system, code, Some(name));
    o.value_numeric = Some(value);
    o.value_coded = None;
    o.value_text = None;
    o.unit = Some(unit.to_owned());
    o.reference_range = None;
    o.other_codes = Vec::new();
    o
}

impl Population {
    /// `patients` fictional patients and their events, the same for the same `seed`.
    pub fn generate(seed: u64, patients: usize) -> Population {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut out = Population {
            patients: Vec::with_capacity(patients),
            events: Vec::new(),
        };
        for n in 0..patients {
            let number = format!("{:08}", 10_000_000 + n);
            let patient_ref = format!("jp-insured:39{:06}:{}:{number}:00", n % 997, n % 89);
            let age = pick_age(&mut rng);
            let prefecture = pick_prefecture(&mut rng);
            let day = FIRST_DAY + rng.random_range(0..DAYS - 30);
            let birth_date = Date::from_days_since_epoch(
                day - i32::try_from(age).unwrap_or(0) * 365 - rng.random_range(0..365),
            );
            let home = rng.random_range(0..4u32);
            // Slightly more women, as among Japan's patients (more of them are old).
            let sex = if rng.random_bool(0.53) {
                AdministrativeSex::Female
            } else {
                AdministrativeSex::Male
            };
            let patient = Patient {
                patient_ref: patient_ref.clone(),
                birth_date,
                sex,
                prefecture,
                insurance_number: number,
            };
            out.events
                .extend(patient_events(&mut rng, &patient, age, home, day));
            out.patients.push(patient);
        }
        out
    }
}

fn patient_events(
    rng: &mut StdRng,
    p: &Patient,
    age: u32,
    home: u32,
    first_day: i32,
) -> Vec<Event> {
    let mut events = Vec::new();
    let inst = institution(p.prefecture, home);
    let mut seq = 0;
    // Prescriptions (the older, the more), each usually dispensed.
    let prescriptions = 1 + usize::from(age >= 60) + usize::from(rng.random_bool(0.3));
    for r in 0..prescriptions {
        let day = first_day + i32::try_from(r).unwrap_or(0) * 14;
        let mut rx = samples::prescription_issued(&p.patient_ref, 1 + rng.random_range(0..3));
        rx.envelope = envelope(&inst.org_id, &p.patient_ref, day, seq);
        seq += 1;
        rx.prescription_id = format!("rx-{}", rx.envelope.event_id);
        rx.issuer = inst.clone();
        rx.issued_on = Date::from_days_since_epoch(day);
        rx.expires_on = Some(Date::from_days_since_epoch(day + 3));
        for line in &mut rx.lines {
            let (code, name) = DRUGS[rng.random_range(0..DRUGS.len())];
            line.drug = CodedConcept::new(HOT9, code, Some(name));
            line.days_supply = Some([7, 14, 28, 30][rng.random_range(0..4)]);
        }
        rx.coverage = Some(Coverage {
            insurer_number: format!("39{:06}", 0),
            number: p.insurance_number.clone(),
            birth_date: Some(p.birth_date),
            sex: Some(p.sex),
            ..samples::coverage()
        });
        if rng.random_bool(0.85) {
            let mut d = samples::prescription_dispensed(&p.patient_ref);
            d.envelope = envelope("pharmacy-pop", &p.patient_ref, day, seq);
            seq += 1;
            d.prescription_id = rx.prescription_id.clone();
            d.issuer_org = inst.org_id.clone();
            d.pharmacy = InstitutionRef {
                org_id: format!("pharmacy-{:02}", p.prefecture),
                institution_code: Some(format!("{:02}4{:07}", p.prefecture, 1)),
                name: Some("薬局".to_owned()),
            };
            d.lines.truncate(1);
            if let (Some(line), Some(rx_line)) = (d.lines.first_mut(), rx.lines.first()) {
                line.drug = rx_line.drug.clone();
                line.days_supply = rx_line.days_supply;
            }
            events.push(Event::from(rx));
            events.push(Event::from(d));
        } else {
            events.push(Event::from(rx));
        }
    }
    // Lab results for most adults.
    if age >= 20 && rng.random_bool(0.8) {
        let day = first_day + 7;
        let mut lab = samples::lab_result_reported(&p.patient_ref);
        lab.envelope = envelope("lab-pop", &p.patient_ref, day, seq);
        seq += 1;
        lab.report_id = format!("lab-{}", lab.envelope.event_id);
        lab.ordering = Some(inst.clone());
        lab.specimen.collected_at = Timestamp::from_unix_millis(i64::from(day) * 86_400_000);
        lab.results = Vec::new();
        for (code, name, unit, mean, rise, spread) in LAB_TESTS {
            if rng.random_bool(0.75) {
                let value = draw(rng, age, mean, rise, spread);
                lab.results
                    .push(observation(code, JLAC10, name, unit, value));
            }
        }
        if !lab.results.is_empty() {
            events.push(Event::from(lab));
        }
    }
    // Specific health checkups (特定健診) for 40–74.
    if (40..75).contains(&age) && rng.random_bool(0.5) {
        let day = first_day + 21;
        let mut c = samples::checkup_completed(&p.patient_ref);
        c.envelope = envelope(&inst.org_id, &p.patient_ref, day, seq);
        c.checkup_id = format!("chk-{}", c.envelope.event_id);
        c.performed_by = inst;
        c.performed_on = Date::from_days_since_epoch(day);
        c.items = CHECKUP_ITEMS
            .iter()
            .map(|(code, name, unit, mean, rise, spread)| {
                observation(
                    code,
                    CHECKUP,
                    name,
                    unit,
                    draw(rng, age, *mean, *rise, *spread),
                )
            })
            .collect();
        events.push(Event::from(c));
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_people_and_their_ages_skew_old() {
        let a = Population::generate(7, 500);
        let b = Population::generate(7, 500);
        assert_eq!(a.patients, b.patients);
        assert_eq!(a.events.len(), b.events.len());
        let old = a
            .patients
            .iter()
            .filter(|p| p.birth_date.days_since_epoch() < FIRST_DAY - 60 * 365)
            .count();
        assert!((200..330).contains(&old), "{old} of 500 over 60");
        let tokyo = a.patients.iter().filter(|p| p.prefecture == 13).count();
        assert!((30..90).contains(&tokyo), "{tokyo} of 500 in Tokyo");
        let kinds: std::collections::BTreeSet<&str> = a.events.iter().map(Event::name).collect();
        assert_eq!(kinds.len(), 4, "{kinds:?}");
    }
}
