//! The price and fee tables a dispensing is priced with, and the pricing rules of Japan's
//! dispensing fee schedule that matter for a claim. Tables are data (`infra/tariffs/`), loaded
//! at start; the defaults are built in so a service runs with no files, and a deployment drops
//! the full official list in with the `tariffs` setting (docs/claims.md).

use std::collections::HashMap;
use std::path::Path;

use hixbus_contracts::CodedConcept;
use serde::Deserialize;

/// HOT9 (the code the e-prescription examples use) and YJ: the codes a price is found by.
pub const HOT9: &str = "urn:oid:1.2.392.200119.4.403.1";
pub const YJ: &str = "urn:oid:1.2.392.100495.20.1.73";
/// The code system of the fee lines a dispensing claim carries (fee table codes).
pub const FEE_SYSTEM: &str = "urn:hixbus:dispensing-fee";

const DRUG_PRICES: &str = include_str!("../../../infra/tariffs/drug-prices.csv");
const DISPENSING_FEES: &str = include_str!("../../../infra/tariffs/dispensing-fees.toml");

/// The most rows a price table may have (the official list has about 20,000).
const MAX_DRUGS: usize = 200_000;

#[derive(Debug, thiserror::Error)]
pub enum TariffError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("drug price table line {line}: {reason}")]
    Price { line: u64, reason: String },
    #[error("drug price table has no `# revision:` comment")]
    NoRevision,
    #[error("drug price table has more than {MAX_DRUGS} rows")]
    TooLarge,
    #[error("dispensing fee table: {0}")]
    Fees(#[from] toml::de::Error),
    #[error("dispensing fee table: {0}")]
    FeeRule(String),
}

/// One listed drug.
#[derive(Debug, Clone, PartialEq)]
pub struct DrugPrice {
    pub yj_code: String,
    pub hot9: Option<String>,
    pub name: String,
    pub unit: String,
    /// Yen per unit, in hundredths of a yen (prices are listed to the sen).
    pub price_sen: i64,
}

impl DrugPrice {
    /// The price in yen, as listed.
    pub fn price_yen(&self) -> f64 {
        self.price_sen as f64 / 100.0
    }

    /// The drug fee in yen of `quantity` of this drug: with days of supply (an internal
    /// medicine), one day's quantity priced by [`drug_points`] times the days; without, the
    /// whole quantity priced at once. The claims service bills with it and the insurer checks
    /// with it, so the two cannot disagree on the rule.
    pub fn amount_jpy(&self, quantity: f64, days_supply: Option<i32>) -> i64 {
        let points = match days_supply.filter(|days| *days > 0) {
            Some(days) => {
                let per_day = quantity / f64::from(days);
                drug_points((self.price_sen as f64 * per_day).round() as i64) * i64::from(days)
            }
            None => drug_points((self.price_sen as f64 * quantity).round() as i64),
        };
        points * 10
    }
}

/// A fee of the fee table, in points (点; one point is 10 yen).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fee {
    pub code: String,
    pub name: String,
    pub points: i64,
    #[serde(default)]
    pub max_lines: Option<usize>,
}

impl Fee {
    pub fn concept(&self) -> CodedConcept {
        CodedConcept::new(FEE_SYSTEM, &self.code, Some(&self.name))
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagementFee {
    pub up_to_days: i32,
    #[serde(flatten)]
    pub fee: Fee,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fees {
    pub revision: String,
    pub basic: Fee,
    pub guidance: Fee,
    pub internal_preparation: Fee,
    pub external_preparation: Fee,
    pub management_max_lines: usize,
    pub management: Vec<ManagementFee>,
}

impl Fees {
    /// 調剤管理料 for a line of `days` days of supply.
    pub fn management_for(&self, days: i32) -> Option<&Fee> {
        self.management
            .iter()
            .find(|m| days <= m.up_to_days)
            .map(|m| &m.fee)
    }
}

/// The tables one claim is priced with.
#[derive(Debug, Clone)]
pub struct Tariff {
    pub price_revision: String,
    pub fees: Fees,
    by_code: HashMap<(String, String), usize>,
    drugs: Vec<DrugPrice>,
}

impl Tariff {
    /// The built-in tables (`infra/tariffs/`).
    pub fn embedded() -> Result<Self, TariffError> {
        Self::parse(DRUG_PRICES, DISPENSING_FEES)
    }

    /// The tables in `dir` (`drug-prices.csv`, `dispensing-fees.toml`).
    pub fn load(dir: &Path) -> Result<Self, TariffError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| TariffError::Io {
                path: path.display().to_string(),
                source,
            })
        };
        Self::parse(&read("drug-prices.csv")?, &read("dispensing-fees.toml")?)
    }

    pub fn parse(prices: &str, fees: &str) -> Result<Self, TariffError> {
        let price_revision = prices
            .lines()
            .filter_map(|l| l.strip_prefix('#'))
            .find_map(|l| l.trim().strip_prefix("revision:"))
            .map(|r| r.trim().to_owned())
            .ok_or(TariffError::NoRevision)?;
        let mut reader = csv::ReaderBuilder::new()
            .comment(Some(b'#'))
            .trim(csv::Trim::All)
            .from_reader(prices.as_bytes());
        let mut drugs = Vec::new();
        let mut by_code = HashMap::new();
        for record in reader.records() {
            let record = record.map_err(|e| TariffError::Price {
                line: e.position().map_or(0, |p| p.line()),
                reason: e.to_string(),
            })?;
            let line = record.position().map_or(0, |p| p.line());
            if drugs.len() >= MAX_DRUGS {
                return Err(TariffError::TooLarge);
            }
            let field = |i: usize| record.get(i).unwrap_or_default().to_owned();
            let price_sen = parse_sen(&field(4)).ok_or_else(|| TariffError::Price {
                line,
                reason: format!("price {:?} is not a yen amount like 10.10", field(4)),
            })?;
            let drug = DrugPrice {
                yj_code: field(0),
                hot9: Some(field(1)).filter(|c| !c.is_empty()),
                name: field(2),
                unit: field(3),
                price_sen,
            };
            if drug.yj_code.len() != 12 || drug.unit.is_empty() {
                return Err(TariffError::Price {
                    line,
                    reason: "a row needs a 12-character YJ code and a unit".to_owned(),
                });
            }
            let index = drugs.len();
            by_code.insert((YJ.to_owned(), drug.yj_code.clone()), index);
            if let Some(hot9) = &drug.hot9 {
                by_code.insert((HOT9.to_owned(), hot9.clone()), index);
            }
            drugs.push(drug);
        }
        let fees: Fees = toml::from_str(fees)?;
        if fees.management.is_empty()
            || fees
                .management
                .windows(2)
                .any(|w| w[0].up_to_days >= w[1].up_to_days)
        {
            return Err(TariffError::FeeRule(
                "management fees must be listed by increasing up_to_days".to_owned(),
            ));
        }
        Ok(Self {
            price_revision,
            fees,
            by_code,
            drugs,
        })
    }

    /// The price of `drug` (by its code system and code).
    pub fn price(&self, drug: &CodedConcept) -> Option<&DrugPrice> {
        self.by_code
            .get(&(drug.system.clone(), drug.code.clone()))
            .map(|&i| &self.drugs[i])
    }

    /// The first of `codes` the table lists.
    pub fn price_any<'a>(
        &self,
        codes: impl IntoIterator<Item = &'a CodedConcept>,
    ) -> Option<&DrugPrice> {
        codes.into_iter().find_map(|c| self.price(c))
    }

    /// Names the tables on a claim: `prices <revision>, fees <revision>`.
    pub fn label(&self) -> String {
        format!(
            "prices {}, fees {}",
            self.price_revision, self.fees.revision
        )
    }

    pub fn len(&self) -> usize {
        self.drugs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.drugs.is_empty()
    }
}

/// "10.10" → 1010 sen; at most two decimals, not negative.
fn parse_sen(text: &str) -> Option<i64> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() || frac.len() > 2 || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let frac: i64 = format!("{frac:0<2}").parse().ok()?;
    whole.checked_mul(100)?.checked_add(frac)
}

/// The drug fee (薬剤料) in points of one unit of account — one day of an internal medicine,
/// or the whole of an external one — costing `sen` hundredths of a yen: 1 point up to 15 yen,
/// then 1 point more for every 10 yen or part of 10 yen beyond (the fee schedule's rule, which
/// equals dividing by 10 and rounding half down).
pub fn drug_points(sen: i64) -> i64 {
    if sen <= 1500 {
        1
    } else {
        1 + (sen - 1500 + 999) / 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_tables_load_and_find_drugs_by_either_code() {
        let tariff = Tariff::embedded().unwrap();
        assert_eq!(tariff.price_revision, "demo-2024-04-01");
        assert_eq!(tariff.fees.revision, "2024-06-01");
        let by_hot9 = tariff
            .price(&CodedConcept::new(HOT9, "103831601", None))
            .unwrap();
        let by_yj = tariff
            .price(&CodedConcept::new(YJ, "2233002F1280", None))
            .unwrap();
        assert_eq!(by_hot9, by_yj);
        assert_eq!(by_hot9.price_sen, 1010);
        assert_eq!(by_hot9.unit, "錠");
        assert!(
            tariff
                .price(&CodedConcept::new(YJ, "0000000X0000", None))
                .is_none()
        );
        assert_eq!(tariff.fees.management_for(7).unwrap().points, 4);
        assert_eq!(tariff.fees.management_for(8).unwrap().points, 28);
        assert_eq!(tariff.fees.management_for(90).unwrap().points, 60);
    }

    #[test]
    fn drug_points_follow_the_fifteen_yen_rule() {
        assert_eq!(drug_points(1), 1);
        assert_eq!(drug_points(1500), 1);
        assert_eq!(drug_points(1501), 2);
        assert_eq!(drug_points(2500), 2);
        assert_eq!(drug_points(2501), 3);
        assert_eq!(drug_points(3030), 3);
        assert_eq!(drug_points(27_800), 28);
    }

    #[test]
    fn a_bad_row_is_refused_with_its_line() {
        let bad = "# revision: x\nyj_code,hot9,name,unit,price_yen\n2233002F1280,,A,錠,ten\n";
        let error = Tariff::parse(bad, DISPENSING_FEES).unwrap_err().to_string();
        assert!(error.contains("line 3"), "{error}");
        assert!(matches!(
            Tariff::parse("yj_code,hot9,name,unit,price_yen\n", DISPENSING_FEES),
            Err(TariffError::NoRevision)
        ));
        assert_eq!(parse_sen("10.1"), Some(1010));
        assert_eq!(parse_sen("-1"), None);
        assert_eq!(parse_sen("1.234"), None);
    }
}
