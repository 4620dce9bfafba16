//! A small interpreter of the dataplane's policy model, written from the
//! header of `policy.proto` and nothing else, for the tests: it says what
//! a dataplane that follows the API would do with one packet at one
//! endpoint, so the compiler's output can be checked for its meaning
//! rather than its shape.
//!
//! Where the header is silent, the interpreter takes the reading the
//! agent relies on, and says so: an interface with no attachment drops
//! everything (fail closed); a tier with no policy is skipped; when every
//! tier passes, the endpoint's default for the direction applies; a rule
//! with a port criterion never matches a protocol without ports.

use std::collections::BTreeMap;
use std::net::IpAddr;

use caracal_proto::dataplane as pb;
use ipnet::IpNet;

use super::parse_net;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Traffic to the endpoint.
    Ingress,
    /// Traffic from the endpoint.
    Egress,
}

/// The first packet of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
}

/// A policy state, indexed.
#[derive(Debug)]
pub struct Interpreter<'s> {
    ip_sets: BTreeMap<&'s str, Vec<IpNet>>,
    policies: BTreeMap<&'s str, &'s pb::PolicySpec>,
    endpoints: BTreeMap<&'s str, &'s pb::EndpointPolicy>,
}

fn action(code: i32) -> pb::Action {
    pb::Action::try_from(code).unwrap_or_else(|_| panic!("unknown action {code}"))
}

/// Protocols whose rules may match ports.
fn has_ports(protocol: u8) -> bool {
    matches!(protocol, 6 | 17 | 132)
}

impl<'s> Interpreter<'s> {
    pub fn new(state: &'s pb::PolicyState) -> Self {
        Interpreter {
            ip_sets: state
                .ip_sets
                .iter()
                .map(|s| {
                    let members = s
                        .members
                        .iter()
                        .map(|m| parse_net(m).unwrap_or_else(|| panic!("member {m:?}")))
                        .collect();
                    (s.name.as_str(), members)
                })
                .collect(),
            policies: state
                .policies
                .iter()
                .map(|p| (p.name.as_str(), p))
                .collect(),
            endpoints: state
                .endpoints
                .iter()
                .map(|e| (e.interface.as_str(), e))
                .collect(),
        }
    }

    /// Whether `interface` lets `packet` through in `direction`.
    pub fn allows(&self, interface: &str, direction: Direction, packet: &Packet) -> bool {
        let Some(ep) = self.endpoints.get(interface) else {
            return false;
        };
        let (tiers, default) = match direction {
            Direction::Ingress => (&ep.ingress, ep.ingress_default),
            Direction::Egress => (&ep.egress, ep.egress_default),
        };
        'tiers: for tier in tiers {
            if tier.policies.is_empty() {
                continue;
            }
            for name in &tier.policies {
                let policy = self
                    .policies
                    .get(name.as_str())
                    .unwrap_or_else(|| panic!("{interface}: no policy {name:?}"));
                let rules = match direction {
                    Direction::Ingress => &policy.ingress,
                    Direction::Egress => &policy.egress,
                };
                for rule in rules {
                    if !self.matches(rule, packet) {
                        continue;
                    }
                    match action(rule.action) {
                        pb::Action::Allow => return true,
                        pb::Action::Deny => return false,
                        pb::Action::Log => {}
                        pb::Action::Pass => continue 'tiers,
                        pb::Action::Unspecified => panic!("rule {} has no action", rule.id),
                    }
                }
            }
            match action(tier.end_action) {
                pb::Action::Deny => return false,
                pb::Action::Pass => {}
                other => panic!("tier {} ends with {other:?}", tier.name),
            }
        }
        match action(default) {
            pb::Action::Allow => true,
            pb::Action::Deny => false,
            other => panic!("{interface}: default {other:?}"),
        }
    }

    fn matches(&self, rule: &pb::Rule, p: &Packet) -> bool {
        let protocol = u32::from(p.protocol);
        let version = match p.src {
            IpAddr::V4(_) => 4,
            IpAddr::V6(_) => 6,
        };
        assert!(
            rule.icmp.is_none() && rule.not_icmp.is_none(),
            "ICMP matches are not interpreted"
        );
        rule.protocol.is_none_or(|r| r == protocol)
            && rule.not_protocol.is_none_or(|r| r != protocol)
            && (rule.ip_version == 0 || rule.ip_version == version)
            && rule
                .source
                .as_ref()
                .is_none_or(|m| self.side(m, p.protocol, p.src, p.src_port))
            && rule
                .destination
                .as_ref()
                .is_none_or(|m| self.side(m, p.protocol, p.dst, p.dst_port))
    }

    fn side(&self, m: &pb::EndpointMatch, protocol: u8, ip: IpAddr, port: u16) -> bool {
        let net = |n: &String| parse_net(n).unwrap_or_else(|| panic!("net {n:?}"));
        let in_set = |s: &String| {
            self.ip_sets
                .get(s.as_str())
                .unwrap_or_else(|| panic!("no IP set {s:?}"))
                .iter()
                .any(|n| n.contains(&ip))
        };
        let in_range = |r: &pb::PortRange| {
            let last = if r.last == 0 { r.first } else { r.last };
            (r.first..=last).contains(&u32::from(port))
        };
        if (!m.ports.is_empty() || !m.not_ports.is_empty()) && !has_ports(protocol) {
            return false;
        }
        (m.nets.is_empty() || m.nets.iter().any(|n| net(n).contains(&ip)))
            && !m.not_nets.iter().any(|n| net(n).contains(&ip))
            && (m.ip_sets.is_empty() || m.ip_sets.iter().any(in_set))
            && !m.not_ip_sets.iter().any(in_set)
            && (m.ports.is_empty() || m.ports.iter().any(in_range))
            && !m.not_ports.iter().any(in_range)
    }
}
