//! Compilation of one endpoint direction's tiers, policies and rules into
//! classifier rules: pure functions from specs to segments of [`Compiled`]
//! rules, which [`PolicyDb`](super::PolicyDb) places in the direction's
//! [`RuleSet`](super::RuleSet) and keeps there for as long as they do not
//! change.
//!
//! # Layout
//!
//! A direction is a list of segments in evaluation order ([`layout`]):
//! each tier's policies in order (a segment each, its rules in order),
//! then one slot that ends the tier (a catch-all DENY if the tier's end
//! action is DENY, nothing for PASS), and last the catch-all endpoint
//! default. Each segment takes consecutive priorities from a base the
//! database chooses, with gaps between segments. A PASS rule resumes
//! after its tier's end slot, so the next tier follows; a tier with no
//! policy is left out, end action included. Falling through every tier
//! (PASS) reaches the endpoint default, as Calico's profiles follow its
//! tiers.
//!
//! # Rules
//!
//! A classifier rule is one protocol (or any), one source and one
//! destination address match, one source and one destination port range.
//! A policy rule becomes several, at consecutive priorities with the same
//! meaning, so first-match order is kept:
//!
//! - ports: `ports` minus `not_ports`, as disjoint ranges, source ×
//!   destination; ICMP type and code ride in the port fields, `icmp`
//!   minus `not_icmp` as at most four (type, code) range pairs;
//! - addresses: each side's "nets AND sets AND NOT nets AND NOT sets" is
//!   one positive set of prefixes ([`AddrExpr`]): computed here when it
//!   names no IP set, else a derived IP set the database keeps up to date
//!   as the named sets change (a member change touches only its rows);
//!   the endpoint's own side (the source of egress, the destination of
//!   ingress) is also restricted to the endpoint's addresses, which is
//!   exact (sources are checked against the endpoint, and an endpoint
//!   receives what is addressed to it) and keeps the cross product of two
//!   sets small;
//! - `not_protocol` without `protocol` has no positive form the classifier
//!   can hold (255 protocols); a guard rule just before the rule's own
//!   matches the excluded protocol and skips the rule
//!   ([`RuleKind::Skip`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::addrset::AddrSet;
use super::enforce::{RuleKind, RuleMeta, RuleName, DEFAULT_RULE};
use super::rule::{IpNet, PortRange, Priority};
use super::spec::{
    DefaultAction, Direction, EndAction, EndpointPolicySpec, IcmpSpec, IpVersion, PolicySpec,
    RuleSpec, SideSpec, TierSpec,
};
use super::Action;

/// Most classifier rules one policy rule may compile to.
pub const MAX_EXPANSION: usize = 4096;

/// "nets AND any of sets AND NOT not_nets AND NOT any of not_sets", within
/// `within`: one rule side's addresses as a positive set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct AddrExpr {
    /// `None`: no constraint.
    pub nets: Option<AddrSet>,
    /// Sorted, unique; empty: no constraint.
    pub sets: Vec<String>,
    pub not_nets: AddrSet,
    pub not_sets: Vec<String>,
    /// The family (IP version) and, on the endpoint's own side, its
    /// addresses.
    pub within: AddrSet,
}

impl AddrExpr {
    /// The addresses, with `members` giving each named set's.
    pub fn eval<'a>(&self, members: impl Fn(&str) -> Option<&'a AddrSet>) -> AddrSet {
        let mut s = match &self.nets {
            Some(n) => n.intersect(&self.within),
            None => self.within.clone(),
        };
        if !self.sets.is_empty() {
            let any = self
                .sets
                .iter()
                .filter_map(|n| members(n))
                .fold(AddrSet::empty(), |acc, m| acc.union(m));
            s = s.intersect(&any);
        }
        s = s.difference(&self.not_nets);
        for n in &self.not_sets {
            if let Some(m) = members(n) {
                s = s.difference(m);
            }
        }
        s
    }

    /// Every set the expression names.
    pub fn set_names(&self) -> impl Iterator<Item = &str> {
        self.sets.iter().chain(&self.not_sets).map(String::as_str)
    }
}

/// One side of a compiled rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Side {
    Any,
    /// Static prefixes (empty: matches nothing).
    Nets(Vec<IpNet>),
    /// A derived IP set.
    Set(AddrExpr),
}

/// One classifier rule before it gets an id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Compiled {
    pub src: Side,
    pub dst: Side,
    pub sport: PortRange,
    pub dport: PortRange,
    pub proto: Option<u8>,
    pub meta: RuleMeta,
}

impl Compiled {
    pub fn action(&self) -> Action {
        match self.meta.kind {
            RuleKind::Allow => Action::Allow,
            RuleKind::Deny => Action::Deny,
            RuleKind::Log => Action::Log,
            RuleKind::Pass | RuleKind::Skip => Action::Pass,
        }
    }
}

/// What compilation needs to know besides the specs.
pub(super) struct Env<'a> {
    pub dir: Direction,
    /// The endpoint's addresses.
    pub own: &'a AddrSet,
    /// Interns a rule identifier.
    pub name: &'a mut dyn FnMut(&str) -> RuleName,
}

fn has_addresses(s: &SideSpec) -> bool {
    !(s.nets.is_empty()
        && s.not_nets.is_empty()
        && s.ip_sets.is_empty()
        && s.not_ip_sets.is_empty())
}

fn sorted(names: &[String]) -> Vec<String> {
    let mut v = names.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}

fn side(spec: &SideSpec, within: AddrSet) -> Side {
    let expr = AddrExpr {
        nets: (!spec.nets.is_empty()).then(|| AddrSet::from_nets(spec.nets.iter().copied())),
        sets: sorted(&spec.ip_sets),
        not_nets: AddrSet::from_nets(spec.not_nets.iter().copied()),
        not_sets: sorted(&spec.not_ip_sets),
        within,
    };
    if expr.sets.is_empty() && expr.not_sets.is_empty() {
        let s = expr.eval(|_| None);
        if s.is_universe() {
            Side::Any
        } else {
            Side::Nets(s.nets().collect())
        }
    } else {
        Side::Set(expr)
    }
}

/// Sorted disjoint ranges covering `ranges`.
fn merge(ranges: impl IntoIterator<Item = PortRange>) -> Vec<PortRange> {
    let mut v: Vec<PortRange> = ranges.into_iter().collect();
    v.sort_unstable_by_key(|r| (r.lo, r.hi));
    let mut out: Vec<PortRange> = Vec::with_capacity(v.len());
    for r in v {
        match out.last_mut() {
            Some(l) if u32::from(r.lo) <= u32::from(l.hi) + 1 => l.hi = l.hi.max(r.hi),
            _ => out.push(r),
        }
    }
    out
}

/// `from` minus `holes`, both sorted and disjoint.
fn subtract_ranges(from: &[PortRange], holes: &[PortRange]) -> Vec<PortRange> {
    let mut out = Vec::new();
    for r in from {
        let (mut lo, hi) = (u32::from(r.lo), u32::from(r.hi));
        for h in holes {
            let (hl, hh) = (u32::from(h.lo), u32::from(h.hi));
            if hh < lo || hl > hi {
                continue;
            }
            if hl > lo {
                out.push(PortRange {
                    lo: lo as u16,
                    hi: (hl - 1) as u16,
                });
            }
            lo = hh + 1;
        }
        if lo <= hi {
            out.push(PortRange {
                lo: lo as u16,
                hi: hi as u16,
            });
        }
    }
    out
}

/// A side's ports: `ports` (all if none) minus `not_ports`.
pub(super) fn port_ranges(side: &SideSpec) -> Vec<PortRange> {
    let base = if side.ports.is_empty() {
        vec![PortRange::ANY]
    } else {
        merge(side.ports.iter().copied())
    };
    subtract_ranges(&base, &merge(side.not_ports.iter().copied()))
}

/// `icmp` minus `not_icmp` as (type, code) range pairs.
pub(super) fn icmp_pairs(
    icmp: Option<IcmpSpec>,
    not: Option<IcmpSpec>,
) -> Vec<(PortRange, PortRange)> {
    let exact = |v: u8| PortRange::exact(v.into());
    let byte = PortRange::new(0, 255).expect("valid");
    let base = match icmp.unwrap_or_default() {
        IcmpSpec {
            icmp_type: None, ..
        } => (byte, byte),
        IcmpSpec {
            icmp_type: Some(t),
            code: None,
        } => (exact(t), byte),
        IcmpSpec {
            icmp_type: Some(t),
            code: Some(c),
        } => (exact(t), exact(c)),
    };
    let Some(not) = not else {
        return vec![base];
    };
    let minus = |r: PortRange, v: u8| subtract_ranges(&[r], &[exact(v)]);
    let (types, codes) = base;
    match not {
        IcmpSpec {
            icmp_type: None, ..
        } => Vec::new(),
        IcmpSpec {
            icmp_type: Some(t),
            code: None,
        } => minus(types, t).into_iter().map(|ty| (ty, codes)).collect(),
        IcmpSpec {
            icmp_type: Some(t),
            code: Some(c),
        } => {
            if !types.contains(t.into()) || !codes.contains(c.into()) {
                return vec![base];
            }
            let mut out: Vec<_> = minus(types, t).into_iter().map(|ty| (ty, codes)).collect();
            out.extend(minus(codes, c).into_iter().map(|co| (exact(t), co)));
            out
        }
    }
}

/// The (source, destination) port pairs of a rule.
fn port_pairs(rule: &RuleSpec) -> Vec<(PortRange, PortRange)> {
    if rule.icmp.is_some() || rule.not_icmp.is_some() {
        return icmp_pairs(rule.icmp, rule.not_icmp);
    }
    let d = port_ranges(&rule.destination);
    port_ranges(&rule.source)
        .into_iter()
        .flat_map(|s| d.iter().map(move |&d| (s, d)))
        .collect()
}

/// How many classifier rules `rule` compiles to, for validation.
pub(super) fn expansion(rule: &RuleSpec) -> usize {
    let guard = usize::from(rule.protocol.is_none() && rule.not_protocol.is_some());
    let icmp = rule.icmp.is_some() || rule.not_icmp.is_some();
    let pairs = if icmp {
        icmp_pairs(rule.icmp, rule.not_icmp).len()
    } else {
        port_ranges(&rule.source)
            .len()
            .saturating_mul(port_ranges(&rule.destination).len())
    };
    pairs + guard
}

/// The identifier a rule is reported by.
pub(super) fn rule_id(policy: &str, dir: Direction, index: usize, rule: &RuleSpec) -> String {
    if rule.id.is_empty() {
        format!("{policy}/{}/{index}", dir.as_str())
    } else {
        rule.id.clone()
    }
}

/// One policy rule's classifier rules, starting at priority `first`; a
/// PASS resumes after `tier_end` (patched by the caller).
fn compile_rule(rule: &RuleSpec, name: RuleName, env: &Env<'_>, first: u32) -> Vec<Compiled> {
    if let (Some(p), Some(np)) = (rule.protocol, rule.not_protocol) {
        if p == np {
            return Vec::new();
        }
    }
    let pairs = port_pairs(rule);
    if pairs.is_empty() {
        return Vec::new();
    }
    let family = match rule.ip_version {
        None => AddrSet::universe(),
        Some(IpVersion::V4) => AddrSet::family(false),
        Some(IpVersion::V6) => AddrSet::family(true),
    };
    let within = |spec: &SideSpec, own_side: bool| {
        if own_side && has_addresses(spec) {
            family.intersect(env.own)
        } else {
            family.clone()
        }
    };
    let src = side(
        &rule.source,
        within(&rule.source, env.dir == Direction::Egress),
    );
    let dst = side(
        &rule.destination,
        within(&rule.destination, env.dir == Direction::Ingress),
    );
    let guard = rule.protocol.is_none() && rule.not_protocol.is_some();
    let last = first + u32::from(guard) + pairs.len() as u32 - 1;
    let kind = match rule.action {
        Action::Allow => RuleKind::Allow,
        Action::Deny => RuleKind::Deny,
        Action::Log => RuleKind::Log,
        Action::Pass => RuleKind::Pass,
    };
    let mut out = Vec::with_capacity(pairs.len() + usize::from(guard));
    if guard {
        out.push(Compiled {
            src: Side::Any,
            dst: Side::Any,
            sport: PortRange::ANY,
            dport: PortRange::ANY,
            proto: rule.not_protocol,
            meta: RuleMeta {
                kind: RuleKind::Skip,
                name,
                resume: Priority(last),
            },
        });
    }
    for (i, (sport, dport)) in pairs.into_iter().enumerate() {
        let prio = first + u32::from(guard) + i as u32;
        out.push(Compiled {
            src: src.clone(),
            dst: dst.clone(),
            sport,
            dport,
            proto: rule.protocol,
            meta: RuleMeta {
                kind,
                name,
                // Log: after itself; Pass: patched to the tier's end.
                resume: Priority(prio),
            },
        });
    }
    out
}

fn catch_all(kind: RuleKind, name: RuleName) -> Compiled {
    Compiled {
        src: Side::Any,
        dst: Side::Any,
        sport: PortRange::ANY,
        dport: PortRange::ANY,
        proto: None,
        meta: RuleMeta {
            kind,
            name,
            resume: Priority(0),
        },
    }
}

/// What a stretch of one direction's rules comes from: one policy's
/// rules in one tier, the slot that ends a tier, or the endpoint default.
/// A direction is a list of segments in evaluation order, each at
/// consecutive priorities of its own; see [`layout`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum SegmentKey {
    Policy { tier: String, policy: String },
    TierEnd { tier: String },
    Default,
}

/// A [`SegmentKey`] borrowed from the specs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum KeyRef<'a> {
    Policy { tier: &'a str, policy: &'a str },
    TierEnd { tier: &'a str },
    Default,
}

impl SegmentKey {
    pub fn as_ref(&self) -> KeyRef<'_> {
        match self {
            SegmentKey::Policy { tier, policy } => KeyRef::Policy { tier, policy },
            SegmentKey::TierEnd { tier } => KeyRef::TierEnd { tier },
            SegmentKey::Default => KeyRef::Default,
        }
    }
}

impl KeyRef<'_> {
    pub fn to_key(self) -> SegmentKey {
        match self {
            KeyRef::Policy { tier, policy } => SegmentKey::Policy {
                tier: tier.to_owned(),
                policy: policy.to_owned(),
            },
            KeyRef::TierEnd { tier } => SegmentKey::TierEnd {
                tier: tier.to_owned(),
            },
            KeyRef::Default => SegmentKey::Default,
        }
    }
}

/// One segment of a direction, in evaluation order: what it comes from,
/// and for a policy's segment the policy (compiled rules are kept for as
/// long as their policy is the same object).
#[derive(Debug, Clone)]
pub(super) struct Planned<'a> {
    pub key: KeyRef<'a>,
    pub policy: Option<&'a Arc<PolicySpec>>,
    pub tier: Option<&'a TierSpec>,
}

/// The segments of one direction of an endpoint, in evaluation order:
/// each tier that has policies gives its policies' segments then its end
/// slot, and the endpoint default comes last (with the action it
/// compiles to). Every policy the tiers name must be in `policies`.
pub(super) fn layout<'a>(
    ep: &'a EndpointPolicySpec,
    dir: Direction,
    policies: &'a BTreeMap<String, Arc<PolicySpec>>,
) -> (Vec<Planned<'a>>, DefaultAction) {
    let mut out = Vec::new();
    for tier in ep.tiers(dir) {
        if tier.policies.is_empty() {
            continue;
        }
        for pname in &tier.policies {
            out.push(Planned {
                key: KeyRef::Policy {
                    tier: &tier.name,
                    policy: pname,
                },
                policy: Some(&policies[pname]),
                tier: Some(tier),
            });
        }
        out.push(Planned {
            key: KeyRef::TierEnd { tier: &tier.name },
            policy: None,
            tier: Some(tier),
        });
    }
    out.push(Planned {
        key: KeyRef::Default,
        policy: None,
        tier: None,
    });
    (out, ep.default_action(dir))
}

/// The rules of one policy in one direction, at priorities from 0 on
/// (relative to its segment): `Log` and `Skip` resume at a relative
/// priority, `Pass` at the end of the tier (which the database resolves).
pub(super) fn compile_policy(name: &str, policy: &PolicySpec, env: &mut Env<'_>) -> Vec<Compiled> {
    let dir = env.dir;
    let mut out = Vec::new();
    for (i, rule) in policy.rules(dir).iter().enumerate() {
        let rule_name = (env.name)(&rule_id(name, dir, i, rule));
        let first = out.len() as u32;
        out.extend(compile_rule(rule, rule_name, env, first));
    }
    out
}

/// The rule of a tier's end slot: a catch-all DENY, or none for PASS.
pub(super) fn compile_tier_end(tier: &TierSpec, env: &mut Env<'_>) -> Vec<Compiled> {
    match tier.end_action {
        EndAction::Deny => {
            let name = (env.name)(&format!("{}/end-of-tier", tier.name));
            vec![catch_all(RuleKind::Deny, name)]
        }
        EndAction::Pass => Vec::new(),
    }
}

/// The catch-all rule of the endpoint default.
pub(super) fn compile_default(action: DefaultAction) -> Vec<Compiled> {
    let kind = match action {
        DefaultAction::Allow => RuleKind::Allow,
        DefaultAction::Deny => RuleKind::Deny,
    };
    vec![catch_all(kind, DEFAULT_RULE)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(lo: u16, hi: u16) -> PortRange {
        PortRange::new(lo, hi).unwrap()
    }

    #[test]
    fn port_ranges_subtract_and_merge() {
        let side = SideSpec {
            ports: vec![r(80, 90), r(85, 100), r(8080, 8080)],
            not_ports: vec![r(88, 88), r(100, 200)],
            ..SideSpec::default()
        };
        assert_eq!(port_ranges(&side), [r(80, 87), r(89, 99), r(8080, 8080)]);
        let not_only = SideSpec {
            not_ports: vec![r(0, 0), r(65535, 65535)],
            ..SideSpec::default()
        };
        assert_eq!(port_ranges(&not_only), [r(1, 65534)]);
        let nothing = SideSpec {
            ports: vec![r(5, 5)],
            not_ports: vec![r(0, 10)],
            ..SideSpec::default()
        };
        assert!(port_ranges(&nothing).is_empty());
    }

    #[test]
    fn icmp_minus_not_icmp() {
        let t = |t, c| IcmpSpec {
            icmp_type: t,
            code: c,
        };
        assert_eq!(icmp_pairs(None, None), [(r(0, 255), r(0, 255))]);
        assert_eq!(
            icmp_pairs(Some(t(Some(3), None)), Some(t(Some(3), Some(4)))),
            [(r(3, 3), r(0, 3)), (r(3, 3), r(5, 255))]
        );
        assert_eq!(
            icmp_pairs(None, Some(t(Some(8), None))),
            [(r(0, 7), r(0, 255)), (r(9, 255), r(0, 255))]
        );
        assert!(icmp_pairs(Some(t(Some(8), Some(0))), Some(t(Some(8), None))).is_empty());
        assert!(icmp_pairs(None, Some(t(None, None))).is_empty());
    }
}
