//! What counts as a problem: the same ingredient twice, the same therapeutic class twice (for
//! the classes where that is a duplication), or a contraindicated combination, between medication
//! lines whose days overlap.

use std::collections::{BTreeMap, HashMap};

use hixbus_contracts::{AlertKind, AlertSeverity, CodedConcept, MedicationLine};
use serde::Deserialize;

/// The rule tables built into this binary (`data/`).
pub const INGREDIENTS: &str = include_str!("../data/ingredients.toml");
pub const RULES: &str = include_str!("../data/rules.toml");

const HOT9: &str = "urn:oid:1.2.392.200119.4.403.1";
const YJ: &str = "urn:oid:1.2.392.100495.20.1.73";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IngredientEntry {
    key: String,
    #[serde(default)]
    class: Option<String>,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    hot9: Vec<String>,
    #[serde(default)]
    yj_prefixes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IngredientsFile {
    ingredient: Vec<IngredientEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DuplicateClass {
    class: String,
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Contraindication {
    a: String,
    b: String,
    source: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    duplicate_classes: Vec<DuplicateClass>,
    contraindicated: Vec<Contraindication>,
}

/// What a line contains, as far as the rules can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recognized {
    pub ingredient: String,
    pub class: Option<String>,
}

/// A problem between two lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: AlertKind,
    pub severity: AlertSeverity,
    pub message: String,
    pub rule_source: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("rule tables: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("rules.toml names the unknown ingredient {0:?}")]
    UnknownIngredient(String),
}

/// The loaded tables.
#[derive(Debug)]
pub struct Rules {
    by_hot9: HashMap<String, usize>,
    by_yj: HashMap<String, usize>,
    names: Vec<(String, usize)>,
    ingredients: Vec<IngredientEntry>,
    duplicate_classes: BTreeMap<String, String>,
    contraindicated: HashMap<(String, String), String>,
}

impl Rules {
    pub fn embedded() -> Result<Self, RulesError> {
        Self::parse(INGREDIENTS, RULES)
    }

    pub fn parse(ingredients: &str, rules: &str) -> Result<Self, RulesError> {
        let ingredients: IngredientsFile = toml::from_str(ingredients)?;
        let rules: RulesFile = toml::from_str(rules)?;
        let mut by_hot9 = HashMap::new();
        let mut by_yj = HashMap::new();
        let mut names = Vec::new();
        for (i, entry) in ingredients.ingredient.iter().enumerate() {
            by_hot9.extend(entry.hot9.iter().map(|c| (c.clone(), i)));
            by_yj.extend(entry.yj_prefixes.iter().map(|c| (c.clone(), i)));
            names.extend(entry.names.iter().map(|n| (n.clone(), i)));
        }
        // Longest names first, so "硝酸イソソルビド" wins over a shorter name it contains.
        names.sort_by_key(|(n, _)| std::cmp::Reverse(n.chars().count()));
        let known = |key: &str| ingredients.ingredient.iter().any(|e| e.key == key);
        let mut contraindicated = HashMap::new();
        for c in rules.contraindicated {
            for key in [&c.a, &c.b] {
                if !known(key) {
                    return Err(RulesError::UnknownIngredient(key.clone()));
                }
            }
            contraindicated.insert((c.a.clone(), c.b.clone()), c.source.clone());
            contraindicated.insert((c.b, c.a), c.source);
        }
        Ok(Self {
            by_hot9,
            by_yj,
            names,
            ingredients: ingredients.ingredient,
            duplicate_classes: rules
                .duplicate_classes
                .into_iter()
                .map(|d| (d.class, d.name))
                .collect(),
            contraindicated,
        })
    }

    /// The ingredient and class of a line, or `None` when nothing identifies it.
    pub fn recognize(&self, line: &MedicationLine) -> Option<Recognized> {
        self.recognize_codes(std::iter::once(&line.drug).chain(&line.other_codes))
    }

    /// The same from a drug's codes alone (a dispensed substitute, say).
    pub fn recognize_codes<'a>(
        &self,
        codes: impl IntoIterator<Item = &'a CodedConcept>,
    ) -> Option<Recognized> {
        let codes: Vec<&CodedConcept> = codes.into_iter().collect();
        let entry = |i: usize| {
            let e = &self.ingredients[i];
            Recognized {
                ingredient: e.key.clone(),
                class: e.class.clone(),
            }
        };
        if let Some(i) = codes
            .iter()
            .filter(|c| c.system == HOT9)
            .find_map(|c| self.by_hot9.get(&c.code))
        {
            return Some(entry(*i));
        }
        let yj = codes.iter().find(|c| c.system == YJ && c.code.len() >= 7);
        if let Some(i) = yj.and_then(|c| self.by_yj.get(&c.code[..7])) {
            return Some(entry(*i));
        }
        let text: String = codes
            .iter()
            .filter_map(|c| c.display.as_deref())
            .collect::<Vec<_>>()
            .join(" ");
        if let Some((_, i)) = self
            .names
            .iter()
            .find(|(name, _)| text.contains(name.as_str()))
        {
            return Some(entry(*i));
        }
        yj.filter(|c| c.code.is_ascii()).map(|c| Recognized {
            ingredient: format!("yj:{}", &c.code[..7]),
            class: Some(c.code[..3].to_owned()),
        })
    }

    /// The problem between two lines taken at the same time, if any (the worst one).
    pub fn check(&self, new: &Recognized, existing: &Recognized, name: &str) -> Option<Finding> {
        if let Some(source) = self
            .contraindicated
            .get(&(new.ingredient.clone(), existing.ingredient.clone()))
        {
            return Some(Finding {
                kind: AlertKind::ContraindicatedCombination,
                severity: AlertSeverity::Contraindicated,
                message: format!(
                    "併用禁忌: {} と {} (contraindicated combination)",
                    new.ingredient, existing.ingredient
                ),
                rule_source: source.clone(),
            });
        }
        if new.ingredient == existing.ingredient {
            return Some(Finding {
                kind: AlertKind::DuplicateIngredient,
                severity: AlertSeverity::High,
                message: format!(
                    "同一成分の重複: {name} ({}) が他の処方と重複しています (duplicate ingredient)",
                    new.ingredient
                ),
                rule_source: format!(
                    "duplicate-ingredient: {} (docs/medication-safety.md)",
                    new.ingredient
                ),
            });
        }
        let class = new
            .class
            .as_ref()
            .filter(|c| existing.class.as_ref() == Some(*c))?;
        let class_name = self.duplicate_classes.get(class)?;
        Some(Finding {
            kind: AlertKind::DuplicateTherapeuticClass,
            severity: AlertSeverity::Warning,
            message: format!(
                "同効薬の重複: {class_name} ({} と {}) (duplicate therapeutic class {class})",
                new.ingredient, existing.ingredient
            ),
            rule_source: format!(
                "duplicate-class: {class} {class_name} (docs/medication-safety.md)"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hixbus_contracts::Quantity;

    fn line(system: &str, code: &str, display: &str) -> MedicationLine {
        MedicationLine {
            line_no: 1,
            rp_group: None,
            drug: CodedConcept::new(system, code, Some(display)),
            other_codes: vec![],
            dose_per_administration: None,
            dose_per_day: None,
            route: None,
            timing_text: "1日3回毎食後".to_owned(),
            timing_code: None,
            days_supply: Some(7),
            quantity: Quantity {
                value: 21.0,
                unit: "錠".to_owned(),
                unit_system: None,
                unit_code: None,
            },
            generic_substitution_allowed: true,
            instructions: None,
        }
    }

    fn rules() -> Rules {
        Rules::embedded().unwrap()
    }

    fn recognize(l: &MedicationLine) -> Recognized {
        rules().recognize(l).expect("recognized")
    }

    #[test]
    fn lines_are_recognized_by_hot9_yj_or_name() {
        let by_hot9 = recognize(&line(HOT9, "107602401", "ロキソニン錠６０ｍｇ"));
        assert_eq!(by_hot9.ingredient, "loxoprofen");
        let by_yj = recognize(&line(YJ, "1149019F1560", "?"));
        assert_eq!(by_yj.ingredient, "loxoprofen");
        let generic = recognize(&line("local", "x", "ロキソプロフェンNa錠60mg「サワイ」"));
        assert_eq!(generic.ingredient, "loxoprofen");
        let unknown_yj = recognize(&line(YJ, "3999999F1000", "?"));
        assert_eq!(unknown_yj.ingredient, "yj:3999999");
        assert_eq!(unknown_yj.class.as_deref(), Some("399"));
        assert!(rules().recognize(&line("local", "x", "なにか")).is_none());
    }

    #[test]
    fn the_worst_problem_wins_and_unrelated_drugs_pass() {
        let r = rules();
        let loxo = recognize(&line(HOT9, "107602401", "ロキソニン"));
        let diclo = recognize(&line(HOT9, "100795402", "ボルタレン"));
        let famo = recognize(&line(HOT9, "106238001", "ガスター"));
        let amlo = recognize(&line(HOT9, "111436601", "アムロジピン"));
        assert_eq!(
            r.check(&loxo, &loxo, "ロキソニン").unwrap().kind,
            AlertKind::DuplicateIngredient
        );
        let class = r.check(&loxo, &diclo, "ロキソニン").unwrap();
        assert_eq!(class.kind, AlertKind::DuplicateTherapeuticClass);
        assert!(class.message.contains("解熱鎮痛消炎剤"));
        assert!(r.check(&famo, &amlo, "ガスター").is_none());
        // Two drugs of a class not listed as a duplication class (217) pass.
        let nicorandil = recognize(&line("local", "x", "シグマート錠5mg"));
        assert!(r.check(&amlo, &nicorandil, "アムロジピン").is_none());

        let sildenafil = recognize(&line("local", "x", "シルデナフィル錠20mgRE「JG」"));
        let contraindicated = r.check(&nicorandil, &sildenafil, "シグマート").unwrap();
        assert_eq!(contraindicated.severity, AlertSeverity::Contraindicated);
        assert!(contraindicated.rule_source.contains("併用禁忌"));
    }

    #[test]
    fn the_longest_name_wins() {
        let isdn = recognize(&line("local", "x", "硝酸イソソルビド徐放錠20mg"));
        assert_eq!(isdn.ingredient, "isosorbide-dinitrate");
    }

    #[test]
    fn a_contraindication_naming_an_unknown_ingredient_is_refused() {
        let rules = RULES.replace("b = \"itraconazole\"", "b = \"itraconazol\"");
        assert!(matches!(
            Rules::parse(INGREDIENTS, &rules),
            Err(RulesError::UnknownIngredient(_))
        ));
    }
}
