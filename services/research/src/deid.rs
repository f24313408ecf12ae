//! De-identification, one value at a time: keyed pseudonyms, per-subject date shifts, age
//! bands and regions at each level of generalization. Pure functions of the project's key and
//! the value, so a release made again is the same release.

use hixbus_contracts::Date;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::projects::ProjectKey;

/// Hex characters of a pseudonym: 96 bits, so two subjects of a national-scale project
/// collide with negligible probability.
const PSEUDONYM_HEX: usize = 24;
/// The largest date shift, in days either way.
pub const MAX_SHIFT_DAYS: i32 = 182;

fn mac(key: &ProjectKey, domain: &str, value: &str) -> [u8; 32] {
    // HMAC accepts keys of any length; the keys file refuses short ones.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key.secret())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    m.update(domain.as_bytes());
    m.update(&[0]);
    m.update(value.as_bytes());
    m.finalize().into_bytes().into()
}

/// The pseudonym of `value` (a patient reference, an organization id, an item) in the
/// project whose key is `key`: the same within the project, unrelated across projects and
/// after a key rotation, and not reversible without the key. `domain` keeps a patient's
/// pseudonym from equalling an item's.
pub fn pseudonym(key: &ProjectKey, domain: &str, value: &str) -> String {
    let digest = mac(key, domain, value);
    let mut out = hex::encode(digest);
    out.truncate(PSEUDONYM_HEX);
    out
}

/// The subject's date shift in the project: from −182 to +182 days, never 0, the same for
/// every item of the subject, so intervals between their items hold.
pub fn shift_days(key: &ProjectKey, patient_ref: &str) -> i32 {
    let digest = mac(key, "shift", patient_ref);
    let n = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    let span = (2 * MAX_SHIFT_DAYS) as u32; // 364 values: ±1..=182
    let magnitude = (n % (span / 2)) as i32 + 1;
    if n & (1 << 31) == 0 {
        magnitude
    } else {
        -magnitude
    }
}

/// Completed years of age on `on` for someone born on `birth`; `None` for a birth date after
/// `on` or unreadable dates.
pub fn age(birth: Date, on: Date) -> Option<u32> {
    let (b, o) = (birth.to_naive_date()?, on.to_naive_date()?);
    o.years_since(b)
}

/// Widths of the age bands at each level of generalization; past the last level, `*`.
pub const AGE_BAND_WIDTHS: [u32; 3] = [5, 10, 20];

/// The age band of `age` at `level` (0: five years, 1: ten, 2: twenty, 3 and up: `*`).
/// Everyone 90 and over shares one band at every level: very old ages are rare enough to
/// identify.
pub fn age_band(age: Option<u32>, level: usize) -> String {
    let Some(width) = AGE_BAND_WIDTHS.get(level) else {
        return "*".to_owned();
    };
    match age {
        None => "unknown".to_owned(),
        Some(a) if a >= 90 => "90+".to_owned(),
        Some(a) => {
            let from = a / width * width;
            format!("{from}-{}", (from + width - 1).min(89))
        }
    }
}

/// The prefectures, by the two-digit number that begins a medical-institution code
/// (都道府県番号), with the region (地方) each belongs to.
const PREFECTURES: [(&str, &str); 47] = [
    ("北海道", "北海道"),
    ("青森県", "東北"),
    ("岩手県", "東北"),
    ("宮城県", "東北"),
    ("秋田県", "東北"),
    ("山形県", "東北"),
    ("福島県", "東北"),
    ("茨城県", "関東"),
    ("栃木県", "関東"),
    ("群馬県", "関東"),
    ("埼玉県", "関東"),
    ("千葉県", "関東"),
    ("東京都", "関東"),
    ("神奈川県", "関東"),
    ("新潟県", "中部"),
    ("富山県", "中部"),
    ("石川県", "中部"),
    ("福井県", "中部"),
    ("山梨県", "中部"),
    ("長野県", "中部"),
    ("岐阜県", "中部"),
    ("静岡県", "中部"),
    ("愛知県", "中部"),
    ("三重県", "近畿"),
    ("滋賀県", "近畿"),
    ("京都府", "近畿"),
    ("大阪府", "近畿"),
    ("兵庫県", "近畿"),
    ("奈良県", "近畿"),
    ("和歌山県", "近畿"),
    ("鳥取県", "中国"),
    ("島根県", "中国"),
    ("岡山県", "中国"),
    ("広島県", "中国"),
    ("山口県", "中国"),
    ("徳島県", "四国"),
    ("香川県", "四国"),
    ("愛媛県", "四国"),
    ("高知県", "四国"),
    ("福岡県", "九州・沖縄"),
    ("佐賀県", "九州・沖縄"),
    ("長崎県", "九州・沖縄"),
    ("熊本県", "九州・沖縄"),
    ("大分県", "九州・沖縄"),
    ("宮崎県", "九州・沖縄"),
    ("鹿児島県", "九州・沖縄"),
    ("沖縄県", "九州・沖縄"),
];

/// The prefecture number (1–47) a ten-digit medical-institution or pharmacy code begins with.
pub fn prefecture_of(institution_code: Option<&str>) -> Option<u8> {
    let code = institution_code?;
    if code.len() != 10 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u8 = code[..2].parse().ok()?;
    (1..=47).contains(&n).then_some(n)
}

/// The region of prefecture `n` at `level` (0: the prefecture, 1: its 地方, 2 and up: `*`).
pub fn region(prefecture: Option<u8>, level: usize) -> String {
    if level >= 2 {
        return "*".to_owned();
    }
    match prefecture.and_then(|n| PREFECTURES.get(usize::from(n) - 1)) {
        None => "unknown".to_owned(),
        Some((name, area)) => (if level == 0 { name } else { area }).to_string(),
    }
}

/// How many levels each quasi-identifier has before `*`.
pub fn levels(quasi_identifier: &str) -> usize {
    match quasi_identifier {
        "age_band" => AGE_BAND_WIDTHS.len(),
        "region" => 2,
        // As recorded, or nothing; an institution's pseudonym, or nothing.
        _ => 1,
    }
}

/// How a quasi-identifier was generalized at `level`, as the manifest says it.
pub fn describe_level(quasi_identifier: &str, level: usize) -> String {
    let what = match (quasi_identifier, level) {
        ("age_band", l) if l < AGE_BAND_WIDTHS.len() => format!("{}-year", AGE_BAND_WIDTHS[l]),
        ("region", 0) => "prefecture".to_owned(),
        ("region", 1) => "地方".to_owned(),
        ("institution", 0) => "pseudonym".to_owned(),
        ("sex", 0) => "as recorded".to_owned(),
        _ => "*".to_owned(),
    };
    format!("{quasi_identifier}={what}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> ProjectKey {
        ProjectKey::new("k", vec![byte; 32])
    }

    #[test]
    fn pseudonyms_hold_within_a_project_and_differ_across_projects_and_keys() {
        let a = pseudonym(&key(1), "patient", "jp-insured:1");
        assert_eq!(a, pseudonym(&key(1), "patient", "jp-insured:1"));
        assert_eq!(a.len(), PSEUDONYM_HEX);
        assert_ne!(a, pseudonym(&key(2), "patient", "jp-insured:1"));
        assert_ne!(a, pseudonym(&key(1), "org", "jp-insured:1"));
        assert_ne!(a, pseudonym(&key(1), "patient", "jp-insured:2"));
        assert!(!a.contains("jp-insured"));
    }

    #[test]
    fn a_shift_is_stable_never_zero_and_within_half_a_year() {
        let mut seen = std::collections::BTreeSet::new();
        for n in 0..2000 {
            let s = shift_days(&key(3), &format!("pt-{n}"));
            assert!(s != 0 && s.abs() <= MAX_SHIFT_DAYS, "{s}");
            assert_eq!(s, shift_days(&key(3), &format!("pt-{n}")));
            seen.insert(s);
        }
        assert!(seen.len() > 300, "spread over the range: {}", seen.len());
        assert!(seen.iter().any(|s| *s < 0) && seen.iter().any(|s| *s > 0));
    }

    #[test]
    fn ages_and_regions_generalize_level_by_level() {
        let birth = Date::from_ymd(1961, 7, 15).unwrap();
        let on = Date::from_ymd(2026, 7, 14).unwrap();
        assert_eq!(age(birth, on), Some(64));
        let bands: Vec<String> = (0..4).map(|l| age_band(Some(64), l)).collect();
        assert_eq!(bands, ["60-64", "60-69", "60-79", "*"]);
        assert_eq!(age_band(Some(97), 0), "90+");
        assert_eq!(age_band(Some(85), 2), "80-89");
        assert_eq!(age_band(None, 1), "unknown");
        let tokyo = prefecture_of(Some("1310000001"));
        assert_eq!(tokyo, Some(13));
        assert_eq!(region(tokyo, 0), "東京都");
        assert_eq!(region(tokyo, 1), "関東");
        assert_eq!(region(tokyo, 2), "*");
        assert_eq!(region(prefecture_of(Some("4710000001")), 1), "九州・沖縄");
        assert_eq!(prefecture_of(Some("RCV")), None);
        assert_eq!(prefecture_of(Some("9910000001")), None);
        assert_eq!(region(None, 0), "unknown");
    }
}
