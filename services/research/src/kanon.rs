//! Making a batch k-anonymous before anything of it leaves: every combination of
//! quasi-identifier values in a release is shared by at least k distinct subjects.
//!
//! Full-domain generalization with suppression: each quasi-identifier has a few levels (age in
//! 5-, 10-, 20-year bands, then `*`; region as prefecture, 地方, then `*`; institution as its
//! pseudonym, then `*`). Every combination of levels is tried; items whose combination is still
//! shared by fewer than k subjects are suppressed; the combination chosen generalizes least
//! (fewest levels in all), then suppresses least, and suppresses no more than the project
//! allows. If none does, the batch is held: nothing of it is released, not even the part that
//! would have been safe on its own (a partial release would tell which part was rare).

use std::collections::{HashMap, HashSet};

use crate::deid;

/// What the check needs to know of one item.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Who the item is about (any stable id of the subject within the batch).
    pub subject: String,
    pub age: Option<u32>,
    /// As the insurance data say (`female`, `male`…); `None` when unknown.
    pub sex: Option<String>,
    pub prefecture: Option<u8>,
    /// The institution's pseudonym.
    pub institution: String,
}

/// The value of `quasi_identifier` for `row` at `level`.
pub fn value(row: &Row, quasi_identifier: &str, level: usize) -> String {
    match quasi_identifier {
        "age_band" => deid::age_band(row.age, level),
        "region" => deid::region(row.prefecture, level),
        "sex" if level == 0 => row.sex.clone().unwrap_or_else(|| "unknown".to_owned()),
        "sex" => "*".to_owned(),
        _ if level == 0 => row.institution.clone(),
        _ => "*".to_owned(),
    }
}

/// How a batch is released.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The level of each quasi-identifier, in the project's order.
    pub levels: Vec<usize>,
    /// Per row: released (true) or suppressed.
    pub kept: Vec<bool>,
    pub suppressed: usize,
    /// The fewest distinct subjects sharing one combination among the rows kept; `None` when
    /// none are.
    pub k_achieved: Option<usize>,
}

/// Every combination of levels, as vectors in the order of `quasi_identifiers`.
fn lattice(quasi_identifiers: &[String]) -> Vec<Vec<usize>> {
    let mut nodes = vec![Vec::new()];
    for q in quasi_identifiers {
        let mut next = Vec::new();
        for node in &nodes {
            for level in 0..=deid::levels(q) {
                let mut n: Vec<usize> = node.clone();
                n.push(level);
                next.push(n);
            }
        }
        nodes = next;
    }
    nodes
}

/// The rows kept and the smallest class at `levels`.
fn evaluate(rows: &[Row], quasi_identifiers: &[String], levels: &[usize], k: usize) -> Plan {
    let keys: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            quasi_identifiers
                .iter()
                .zip(levels)
                .map(|(q, l)| value(r, q, *l))
                .collect()
        })
        .collect();
    let mut subjects: HashMap<&[String], HashSet<&str>> = HashMap::new();
    for (key, row) in keys.iter().zip(rows) {
        subjects
            .entry(key.as_slice())
            .or_default()
            .insert(row.subject.as_str());
    }
    let kept: Vec<bool> = keys
        .iter()
        .map(|key| subjects[key.as_slice()].len() >= k)
        .collect();
    let k_achieved = subjects
        .values()
        .map(HashSet::len)
        .filter(|n| *n >= k)
        .min();
    Plan {
        levels: levels.to_vec(),
        suppressed: kept.iter().filter(|k| !**k).count(),
        kept,
        k_achieved,
    }
}

/// The plan for `rows`, or `None`: the batch cannot be made k-anonymous while suppressing at
/// most `max_suppressed_percent` of it, and is held.
pub fn plan(
    rows: &[Row],
    quasi_identifiers: &[String],
    k: usize,
    max_suppressed_percent: u32,
) -> Option<Plan> {
    if rows.is_empty() {
        return None;
    }
    let allowed = rows.len() * max_suppressed_percent as usize / 100;
    lattice(quasi_identifiers)
        .into_iter()
        .map(|levels| evaluate(rows, quasi_identifiers, &levels, k))
        .filter(|p| p.suppressed <= allowed && p.k_achieved.is_some())
        .min_by_key(|p| {
            (
                p.levels.iter().sum::<usize>(),
                p.suppressed,
                p.levels.clone(),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(subject: usize, age: u32, prefecture: u8) -> Row {
        Row {
            subject: format!("s{subject}"),
            age: Some(age),
            sex: None,
            prefecture: Some(prefecture),
            institution: format!("i{}", subject % 3),
        }
    }

    fn qis() -> Vec<String> {
        vec!["age_band".to_owned(), "region".to_owned()]
    }

    /// Independent of `evaluate`: the distinct subjects of each released combination.
    fn smallest_class(rows: &[Row], plan: &Plan) -> usize {
        let mut classes: HashMap<(String, String), HashSet<String>> = HashMap::new();
        for (r, kept) in rows.iter().zip(&plan.kept) {
            if *kept {
                let key = (
                    deid::age_band(r.age, plan.levels[0]),
                    deid::region(r.prefecture, plan.levels[1]),
                );
                classes.entry(key).or_default().insert(r.subject.clone());
            }
        }
        classes.values().map(HashSet::len).min().unwrap_or(0)
    }

    #[test]
    fn a_batch_that_is_already_k_anonymous_is_released_as_it_is() {
        let rows: Vec<Row> = (0..50).map(|s| row(s, 41 + (s % 3) as u32, 13)).collect();
        let plan = plan(&rows, &qis(), 5, 10).unwrap();
        assert_eq!(plan.levels, [0, 0]);
        assert_eq!(plan.suppressed, 0);
        assert!(smallest_class(&rows, &plan) >= 5);
    }

    #[test]
    fn rare_combinations_are_generalized_then_suppressed_and_every_class_has_k_subjects() {
        // 40 subjects in their forties in Tokyo, a few in neighbouring prefectures, one
        // 95-year-old in Okinawa.
        let mut rows: Vec<Row> = (0..40).map(|s| row(s, 40 + (s % 10) as u32, 13)).collect();
        rows.extend((40..46).map(|s| row(s, 45, 11 + (s % 3) as u8)));
        rows.push(row(46, 95, 47));
        let plan = plan(&rows, &qis(), 5, 10).unwrap();
        // Prefectures would leave the two from Saitama and Chiba alone: regions (地方) do not.
        assert_eq!(plan.levels, [0, 1], "{plan:?}");
        assert!(smallest_class(&rows, &plan) >= 5, "{plan:?}");
        assert_eq!(plan.k_achieved, Some(smallest_class(&rows, &plan)));
        // The Okinawan could not be hidden among others: suppressed.
        assert!(!plan.kept[46]);
        assert_eq!(plan.suppressed, 1);
        assert!(plan.suppressed <= rows.len() / 10);
    }

    #[test]
    fn a_batch_that_cannot_be_made_k_anonymous_within_the_limit_is_held() {
        // Four subjects with three items each: never five subjects in one class, whatever is
        // generalized (items are not subjects).
        let rows: Vec<Row> = (0..12).map(|n| row(n % 4, 40, 13)).collect();
        assert_eq!(plan(&rows, &qis(), 5, 10), None);
        // Ten subjects, each alone in an unknown institution class, with institution as a
        // quasi-identifier that may go to `*`: fine once it does.
        let rows: Vec<Row> = (0..10).map(|s| row(s, 40, 13)).collect();
        let with_institution = vec![
            "age_band".to_owned(),
            "region".to_owned(),
            "institution".to_owned(),
        ];
        let p = plan(&rows, &with_institution, 5, 0).unwrap();
        assert_eq!(p.levels, [0, 0, 1]);
    }
}
