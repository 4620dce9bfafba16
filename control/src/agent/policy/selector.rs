//! Label selectors (`metav1.LabelSelector`) in a canonical form: one
//! sorted list of requirements, `matchLabels` entries turned into `In`
//! requirements with one value, so that two selectors which select the
//! same objects by construction (`app: web` and `app In (web)`, or the same
//! requirements in another order) are equal, and share an IP set.
//!
//! Matching follows `k8s.io/apimachinery/pkg/labels`: `In` needs the label
//! with one of the values, `NotIn` is true when the label is absent or has
//! none of them, `Exists` and `DoesNotExist` look at the key only, and an
//! empty selector selects everything.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::Serialize;

/// Labels of a pod or namespace.
pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// One requirement on one label key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    /// Empty for `Exists` and `DoesNotExist`; never empty otherwise.
    pub values: BTreeSet<String>,
}

impl Requirement {
    fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

/// A selector: every requirement must hold. Sorted and free of
/// duplicates, so equal selectors compare (and serialize) equal.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

/// A selector the API server would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSelector {
    #[error("matchExpressions[{index}].operator: unsupported value {operator:?}: expected In, NotIn, Exists or DoesNotExist")]
    Operator { index: usize, operator: String },
    #[error("matchExpressions[{index}].values: must be non-empty for {operator}")]
    NoValues {
        index: usize,
        operator: &'static str,
    },
    #[error("matchExpressions[{index}].values: must be empty for {operator}")]
    Values {
        index: usize,
        operator: &'static str,
    },
}

impl Selector {
    /// The selector that selects everything (`{}`).
    pub fn everything() -> Self {
        Selector::default()
    }

    /// The canonical form of `selector`.
    pub fn new(selector: &LabelSelector) -> Result<Self, InvalidSelector> {
        let mut requirements: Vec<Requirement> = selector
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| Requirement {
                key: k.clone(),
                operator: Operator::In,
                values: BTreeSet::from([v.clone()]),
            })
            .collect();
        for (index, e) in selector.match_expressions.iter().flatten().enumerate() {
            let (operator, name, needs_values) = match e.operator.as_str() {
                "In" => (Operator::In, "In", true),
                "NotIn" => (Operator::NotIn, "NotIn", true),
                "Exists" => (Operator::Exists, "Exists", false),
                "DoesNotExist" => (Operator::DoesNotExist, "DoesNotExist", false),
                other => {
                    return Err(InvalidSelector::Operator {
                        index,
                        operator: other.to_owned(),
                    })
                }
            };
            let values: BTreeSet<String> = e.values.iter().flatten().cloned().collect();
            match (needs_values, values.is_empty()) {
                (true, true) => {
                    return Err(InvalidSelector::NoValues {
                        index,
                        operator: name,
                    })
                }
                (false, false) => {
                    return Err(InvalidSelector::Values {
                        index,
                        operator: name,
                    })
                }
                _ => {}
            }
            requirements.push(Requirement {
                key: e.key.clone(),
                operator,
                values,
            });
        }
        requirements.sort();
        requirements.dedup();
        Ok(Selector { requirements })
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).into()).collect()),
        }
    }

    fn selector(match_labels: &[(&str, &str)], exprs: Vec<LabelSelectorRequirement>) -> Selector {
        Selector::new(&LabelSelector {
            match_labels: (!match_labels.is_empty()).then(|| labels(match_labels)),
            match_expressions: (!exprs.is_empty()).then_some(exprs),
        })
        .unwrap()
    }

    #[test]
    fn operators() {
        let web = labels(&[("app", "web"), ("tier", "front")]);
        let db = labels(&[("app", "db")]);
        let none = labels(&[]);
        let cases = [
            (expr("app", "In", &["web", "api"]), [true, false, false]),
            (expr("app", "NotIn", &["web"]), [false, true, true]),
            (expr("tier", "Exists", &[]), [true, false, false]),
            (expr("tier", "DoesNotExist", &[]), [false, true, true]),
        ];
        for (e, want) in cases {
            let s = selector(&[], vec![e.clone()]);
            let got = [s.matches(&web), s.matches(&db), s.matches(&none)];
            assert_eq!(got, want, "{e:?}");
        }
    }

    #[test]
    fn empty_selects_everything_and_requirements_are_anded() {
        assert!(selector(&[], vec![]).matches(&labels(&[])));
        assert!(selector(&[], vec![]).is_everything());
        let s = selector(&[("app", "web")], vec![expr("tier", "Exists", &[])]);
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "x")])));
        assert!(!s.matches(&labels(&[("app", "web")])));
    }

    #[test]
    fn equivalent_selectors_are_equal() {
        assert_eq!(
            selector(&[("app", "web")], vec![expr("x", "Exists", &[])]),
            selector(
                &[],
                vec![
                    expr("x", "Exists", &[]),
                    expr("app", "In", &["web"]),
                    expr("x", "Exists", &[]),
                ]
            ),
        );
        assert_eq!(
            selector(&[], vec![expr("a", "In", &["2", "1", "2"])]),
            selector(&[], vec![expr("a", "In", &["1", "2"])]),
        );
    }

    #[test]
    fn refuses_what_the_api_server_refuses() {
        let bad = |e| {
            Selector::new(&LabelSelector {
                match_expressions: Some(vec![e]),
                ..Default::default()
            })
            .unwrap_err()
            .to_string()
        };
        assert!(bad(expr("a", "Equals", &["x"])).contains("unsupported value \"Equals\""));
        assert!(bad(expr("a", "In", &[])).contains("non-empty for In"));
        assert!(bad(expr("a", "Exists", &["x"])).contains("empty for Exists"));
    }
}
