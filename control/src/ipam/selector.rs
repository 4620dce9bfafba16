//! The node selectors of IP pools: the subset of Calico's selector
//! language that pools use in practice.
//!
//! Supported, with Calico's meaning:
//!
//! - `""` and `all()`: every node; `!all()`: no node (a pool used only
//!   when a pod or namespace names it, since named pools ignore the
//!   selector, as in Calico);
//! - `key == 'value'`, `key != 'value'` (true when the label is absent),
//!   `has(key)`, with single or double quotes;
//! - terms joined by `&&`.
//!
//! Anything else (`||`, `!` before a term, `in`, parentheses, ...) is
//! rejected when the pool is configured, never guessed at.

use std::collections::BTreeMap;
use std::fmt;

/// A parsed node selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeSelector {
    /// Matches when every term does (`all()` is the empty conjunction).
    All(Vec<Term>),
    /// `!all()`.
    Nothing,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    Equal(String, String),
    NotEqual(String, String),
    Has(String),
}

/// Why a selector was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorError {
    pub selector: String,
    pub reason: String,
}

impl fmt::Display for SelectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unsupported node selector {:?}: {} (supported: all(), !all(), k == 'v', \
             k != 'v', has(k), joined by &&)",
            self.selector, self.reason
        )
    }
}

impl NodeSelector {
    pub fn parse(selector: &str) -> Result<NodeSelector, SelectorError> {
        let fail = |reason: String| SelectorError {
            selector: selector.to_owned(),
            reason,
        };
        let trimmed = selector.trim();
        if trimmed == "!all()" {
            return Ok(NodeSelector::Nothing);
        }
        if trimmed.is_empty() {
            return Ok(NodeSelector::All(Vec::new()));
        }
        let mut terms = Vec::new();
        for part in trimmed.split("&&") {
            let part = part.trim();
            if part == "all()" {
                continue;
            }
            terms.push(parse_term(part).map_err(fail)?);
        }
        Ok(NodeSelector::All(terms))
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            NodeSelector::Nothing => false,
            NodeSelector::All(terms) => terms.iter().all(|t| match t {
                Term::Equal(k, v) => labels.get(k) == Some(v),
                Term::NotEqual(k, v) => labels.get(k) != Some(v),
                Term::Has(k) => labels.contains_key(k),
            }),
        }
    }
}

fn parse_term(term: &str) -> Result<Term, String> {
    if term.is_empty() {
        return Err("empty term".into());
    }
    if let Some(inner) = term.strip_prefix("has(").and_then(|t| t.strip_suffix(')')) {
        return Ok(Term::Has(label_key(inner.trim())?.to_owned()));
    }
    // The operator is the first one in the term; the quoted value may
    // itself contain "==" or "!=".
    let op_at = |op: &'static str| term.find(op).map(|i| (i, op));
    let Some((at, op)) = [op_at("=="), op_at("!=")].into_iter().flatten().min() else {
        return Err(format!("cannot parse {term:?}"));
    };
    let key = label_key(term[..at].trim())?.to_owned();
    let value = quoted(term[at + op.len()..].trim())?.to_owned();
    Ok(if op == "==" {
        Term::Equal(key, value)
    } else {
        Term::NotEqual(key, value)
    })
}

/// A label key: DNS-prefix and name characters only, so that operators and
/// brackets of unsupported syntax never pass as part of a key.
fn label_key(key: &str) -> Result<&str, String> {
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/');
    if !key.is_empty() && key.chars().all(valid) {
        Ok(key)
    } else {
        Err(format!("invalid label key {key:?}"))
    }
}

fn quoted(value: &str) -> Result<&str, String> {
    for q in ['\'', '"'] {
        if let Some(inner) = value.strip_prefix(q).and_then(|v| v.strip_suffix(q)) {
            if value.len() >= 2 && !inner.contains(q) {
                return Ok(inner);
            }
        }
    }
    Err(format!("expected a quoted value, got {value:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn all_and_empty_match_everything() {
        for s in ["", "  ", "all()", " all() "] {
            let sel = NodeSelector::parse(s).unwrap();
            assert!(sel.matches(&labels(&[])), "{s:?}");
        }
        assert!(!NodeSelector::parse("!all()").unwrap().matches(&labels(&[])));
    }

    #[test]
    fn equality_inequality_and_has() {
        let sel = NodeSelector::parse(
            "zone == 'east' && has(caracal.io/ipam) && rack != \"r2\" && all()",
        )
        .unwrap();
        assert_eq!(
            sel,
            NodeSelector::All(vec![
                Term::Equal("zone".into(), "east".into()),
                Term::Has("caracal.io/ipam".into()),
                Term::NotEqual("rack".into(), "r2".into()),
            ])
        );
        assert!(sel.matches(&labels(&[("zone", "east"), ("caracal.io/ipam", "")])));
        assert!(sel.matches(&labels(&[
            ("zone", "east"),
            ("caracal.io/ipam", ""),
            ("rack", "r1")
        ])));
        assert!(!sel.matches(&labels(&[
            ("zone", "east"),
            ("caracal.io/ipam", ""),
            ("rack", "r2")
        ])));
        assert!(!sel.matches(&labels(&[("zone", "west"), ("caracal.io/ipam", "")])));
        assert!(!sel.matches(&labels(&[("zone", "east")])));
        let sel = NodeSelector::parse("a != 'x==y'").unwrap();
        assert_eq!(
            sel,
            NodeSelector::All(vec![Term::NotEqual("a".into(), "x==y".into())])
        );
    }

    #[test]
    fn unsupported_syntax_is_rejected() {
        for s in [
            "a == 'b' || c == 'd'",
            "!has(a)",
            "a in {'b'}",
            "(a == 'b')",
            "a == b",
            "a == 'b",
            "a == 'b' && ",
            "has()",
            "a =='b'c'",
            "a ~= 'b'",
        ] {
            let err = NodeSelector::parse(s).unwrap_err();
            assert_eq!(err.selector, s);
            assert!(
                err.to_string().contains("unsupported node selector"),
                "{err}"
            );
        }
    }
}
