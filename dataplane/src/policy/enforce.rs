//! What the workers hold of an endpoint's policy: per direction, the
//! compiled [`Classifier`] and, per classifier rule, what its match means
//! ([`RuleMeta`]), immutable and shared through the table snapshots.
//!
//! A direction's rules always end with a catch-all rule (the endpoint's
//! default), so every packet gets a decision. The first match of a packet
//! usually decides ([`RuleKind::Allow`] or [`RuleKind::Deny`]); the other
//! kinds resume the lookup past a priority with
//! [`Classifier::classify_after`]: [`RuleKind::Log`] past itself,
//! [`RuleKind::Pass`] past the end of its tier, and [`RuleKind::Skip`]
//! (the guard of a rule with `not_protocol`) past the rule it guards.
//! Those loops run on the slow path only: first packets and re-evaluated
//! flows.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use super::{Classifier, Family, Hit, PacketKey, Priority};

/// Interned rule identifier ([`PolicyDb::rule_name`](super::PolicyDb::rule_name)):
/// what a flow records as the rule that decided it.
pub type RuleName = u32;

/// The name id of "no rule: the endpoint's default" (and of the decision
/// of an endpoint without policy).
pub const DEFAULT_RULE: RuleName = 0;

/// What a matching classifier rule means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleKind {
    Allow,
    Deny,
    /// Record the packet and go on after this rule.
    Log,
    /// Go on with the next tier.
    Pass,
    /// Not a match after all (the packet has the rule's `not_protocol`): go
    /// on after the rule.
    Skip,
}

/// One classifier rule's meaning, indexed by its [`RuleId`](super::RuleId).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuleMeta {
    pub kind: RuleKind,
    pub name: RuleName,
    /// For `Log`, `Pass` and `Skip`: the priority to resume after.
    pub resume: Priority,
}

/// The result of evaluating one direction for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allow: bool,
    /// The rule that decided.
    pub rule: RuleName,
}

/// One direction of one endpoint.
#[derive(Clone)]
pub struct DirectionRules {
    pub(super) classifier: Classifier,
    pub(super) meta: Arc<[RuleMeta]>,
    /// Identifiers of the LOG rules, for their log lines.
    pub(super) log_names: Arc<BTreeMap<RuleName, Arc<str>>>,
}

impl DirectionRules {
    /// First matches of a batch of keys (see [`Classifier::classify_batch`]).
    #[inline]
    pub fn classify_batch<A: Family>(&self, keys: &[PacketKey<A>], out: &mut [Option<Hit>]) {
        self.classifier.classify_batch(keys, out);
    }

    /// The decision for `key` whose first match is `first`; `log` is
    /// called with every LOG rule the packet matches on the way.
    pub fn resolve<A: Family>(
        &self,
        key: &PacketKey<A>,
        first: Option<Hit>,
        mut log: impl FnMut(RuleName),
    ) -> Decision {
        let mut hit = first;
        loop {
            let Some(h) = hit else {
                // Unreachable with a catch-all default; deny if it were.
                return Decision {
                    allow: false,
                    rule: DEFAULT_RULE,
                };
            };
            let m = self.meta[h.rule.0 as usize];
            match m.kind {
                RuleKind::Allow => {
                    return Decision {
                        allow: true,
                        rule: m.name,
                    }
                }
                RuleKind::Deny => {
                    return Decision {
                        allow: false,
                        rule: m.name,
                    }
                }
                RuleKind::Log => log(m.name),
                RuleKind::Pass | RuleKind::Skip => {}
            }
            hit = self.classifier.classify_after(key, m.resume);
        }
    }

    /// The decision for one key.
    pub fn decide<A: Family>(&self, key: &PacketKey<A>) -> Decision {
        self.resolve(key, self.classifier.classify(key), |_| {})
    }

    pub fn classifier(&self) -> &Classifier {
        &self.classifier
    }

    /// The identifier of a LOG rule of this direction.
    pub fn log_name(&self, rule: RuleName) -> &str {
        self.log_names.get(&rule).map_or("?", |s| s)
    }

    /// The identifier of a LOG rule, shared (no allocation: for the
    /// packet path's log records).
    pub fn log_name_shared(&self, rule: RuleName) -> Arc<str> {
        static UNKNOWN: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from("?"));
        self.log_names.get(&rule).unwrap_or(&UNKNOWN).clone()
    }
}

impl fmt::Debug for DirectionRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectionRules")
            .field("classifier", &self.classifier)
            .field("rules", &self.meta.len())
            .finish()
    }
}

/// Both directions of one endpoint: an immutable snapshot.
#[derive(Debug, Clone)]
pub struct EndpointRules {
    pub ingress: DirectionRules,
    pub egress: DirectionRules,
}
