//! Network policy: Kubernetes NetworkPolicies (`networking.k8s.io/v1`)
//! compiled into the dataplane's policy model (`policy.proto`: IP sets,
//! policies of ordered rules, per-endpoint tiers), and the minimal batch
//! that takes the dataplane from one compiled state to the next. Pure and
//! IO-free.
//!
//! - [`selector`]: label selectors in canonical form.
//! - [`compile`]: [`calculate`], objects and endpoints to [`DesiredPolicy`].
//! - [`incremental`]: [`PolicyCalculator`], the same kept up to date from
//!   one snapshot to the next at the cost of what changed.
//! - [`diff`](mod@diff): [`diff()`], two [`DesiredPolicy`]s to one
//!   [`pb::PolicyBatch`].
//!
//! # Names
//!
//! - Policy: `knp.<namespace>.<name>` (a namespace has no dots, so the
//!   name is unambiguous). Its rules carry the id
//!   `knp.<namespace>.<name>/ingress/<i>` (or `/egress/<i>`), `i` being the
//!   index of the NetworkPolicy rule they come from; one NetworkPolicy
//!   rule may compile to several dataplane rules, all with its id.
//! - Tier: [`TIER`] (`default`, where Calico puts Kubernetes policies too),
//!   end action DENY; endpoint defaults ALLOW.
//! - IP set of the pods a (namespaces, pods) selector pair selects:
//!   `sel:<hash>`, the hash being the first 96 bits of the SHA-256 of the
//!   pair's canonical JSON, in hex. The subset of those pods whose named
//!   port `<name>`/`<protocol>` is port `<n>`: `sel:<hash>:<proto>:<name>:<n>`.

pub mod compile;
pub mod diff;
pub mod incremental;
pub mod selector;

#[cfg(test)]
mod interpret;
#[cfg(test)]
mod proptests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use caracal_proto::dataplane as pb;
use ipnet::IpNet;

pub use compile::calculate;
pub use diff::diff;
pub use incremental::PolicyCalculator;

/// The tier Kubernetes NetworkPolicies live in.
pub const TIER: &str = "default";

/// The policy state the agent wants the dataplane to run, or (read back)
/// the one it runs, in canonical form: two values are equal exactly when
/// the dataplane would enforce the same thing.
// Not `Eq`: prost messages are only `PartialEq`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DesiredPolicy {
    /// IP sets by name: addresses (host prefixes) and CIDRs.
    pub ip_sets: BTreeMap<String, BTreeSet<IpNet>>,
    /// Policies by name; shared, so that the agent's copies of one state
    /// (the calculation's, the sync's) cost a pointer per policy and
    /// compare by pointer where they share a policy.
    pub policies: BTreeMap<String, Arc<pb::PolicySpec>>,
    /// Attachments by dataplane interface name.
    pub endpoints: BTreeMap<String, pb::EndpointPolicy>,
}

impl DesiredPolicy {
    /// What the dataplane reports (`GetPolicyState`), in canonical form.
    /// An IP set with a member that cannot be read is left out: the agent
    /// then sends the whole set again if it wants it.
    pub fn from_state(state: pb::PolicyState) -> Self {
        let ip_sets = state
            .ip_sets
            .into_iter()
            .filter_map(|set| {
                let members = set
                    .members
                    .iter()
                    .map(|m| parse_net(m))
                    .collect::<Option<BTreeSet<_>>>()?;
                Some((set.name, members))
            })
            .collect();
        let policies = state
            .policies
            .into_iter()
            .map(|mut p| {
                p.ingress
                    .iter_mut()
                    .chain(&mut p.egress)
                    .for_each(canonical_rule);
                (p.name.clone(), Arc::new(p))
            })
            .collect();
        let endpoints = state
            .endpoints
            .into_iter()
            .map(|e| (e.interface.clone(), e))
            .collect();
        DesiredPolicy {
            ip_sets,
            policies,
            endpoints,
        }
    }

    /// The whole state as the API describes it.
    pub fn to_state(&self) -> pb::PolicyState {
        pb::PolicyState {
            generation: 0,
            ip_sets: self
                .ip_sets
                .iter()
                .map(|(name, members)| ip_set(name, members))
                .collect(),
            policies: self.policies.values().map(|p| (**p).clone()).collect(),
            endpoints: self.endpoints.values().cloned().collect(),
        }
    }
}

/// An IP set message.
pub fn ip_set(name: &str, members: &BTreeSet<IpNet>) -> pb::IpSet {
    pb::IpSet {
        name: name.to_owned(),
        members: members.iter().map(ToString::to_string).collect(),
    }
}

/// An address or CIDR as the API writes it ("10.65.0.5" or
/// "10.0.0.0/8"), host bits cleared.
pub fn parse_net(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
        .map(|n| n.trunc())
}

/// Rewrites a rule the dataplane reports into the form the agent writes:
/// CIDRs in `ipnet`'s spelling, a one-port range with `last` 0, and empty
/// sub-messages absent. What cannot be read stays as it is (and so never
/// equals a rule the agent wants).
fn canonical_rule(rule: &mut pb::Rule) {
    for side in [&mut rule.source, &mut rule.destination] {
        if let Some(m) = side {
            for net in m.nets.iter_mut().chain(&mut m.not_nets) {
                if let Some(parsed) = parse_net(net) {
                    *net = parsed.to_string();
                }
            }
            for r in m.ports.iter_mut().chain(&mut m.not_ports) {
                if r.last == r.first {
                    r.last = 0;
                }
            }
        }
        if side.as_ref() == Some(&pb::EndpointMatch::default()) {
            *side = None;
        }
    }
    for icmp in [&mut rule.icmp, &mut rule.not_icmp] {
        if icmp.as_ref() == Some(&pb::IcmpMatch::default()) {
            *icmp = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reported_spellings_compare_equal() {
        let wanted = pb::Rule {
            action: pb::Action::Allow as i32,
            protocol: Some(6),
            source: Some(pb::EndpointMatch {
                nets: vec!["10.0.0.0/8".into(), "10.65.0.5/32".into()],
                ..Default::default()
            }),
            destination: Some(pb::EndpointMatch {
                ports: vec![pb::PortRange { first: 80, last: 0 }],
                ..Default::default()
            }),
            id: "knp.a.b/ingress/0".into(),
            ..Default::default()
        };
        let mut reported = wanted.clone();
        let src = reported.source.as_mut().unwrap();
        src.nets = vec!["10.0.0.0/8".into(), "10.65.0.5".into()];
        reported.destination.as_mut().unwrap().ports[0].last = 80;
        reported.icmp = Some(pb::IcmpMatch::default());
        let state = pb::PolicyState {
            generation: 3,
            ip_sets: vec![
                pb::IpSet {
                    name: "ok".into(),
                    members: vec!["10.65.0.1".into(), "fd00::1/128".into()],
                },
                pb::IpSet {
                    name: "odd".into(),
                    members: vec!["bogus".into()],
                },
            ],
            policies: vec![pb::PolicySpec {
                name: "p".into(),
                ingress: vec![reported],
                egress: vec![],
            }],
            endpoints: vec![],
        };
        let read = DesiredPolicy::from_state(state);
        assert_eq!(read.policies["p"].ingress, [wanted]);
        assert_eq!(
            read.ip_sets.keys().collect::<Vec<_>>(),
            ["ok"],
            "unreadable sets are resent whole"
        );
        assert_eq!(DesiredPolicy::from_state(read.to_state()), read);
    }
}
