//! Conversions of the Policy service's messages (`policy.proto`) to and
//! from the policy model ([`crate::policy::spec`]).
//!
//! As in [`convert`](super::convert), every rejection is `invalid_argument`
//! and starts with the path of the offending field in the request
//! (`set_policies[0].ingress[2].destination.ports[0]: ...`). What needs the
//! dataplane's state (does the set, policy or interface exist?) is checked
//! by the policy database, with the same kind of path.

use std::fmt;

use caracal_proto::dataplane as pb;
use tonic::Status;

use super::convert::{invalid, object_name};
use crate::model::FlowEntry;
use crate::policy::log::LogEntry;
use crate::policy::spec::{
    proto, DefaultAction, EndAction, EndpointPolicySpec, IcmpSpec, IpSetDelta, IpSetSpec,
    IpVersion, PolicyBatch, PolicySpec, PolicyStateSpec, RuleSpec, SideSpec, TierSpec,
};
use crate::policy::{Action, IpNet, PortRange};

/// An address or prefix (host bits are cleared).
fn net(field: impl fmt::Display, text: &str) -> Result<IpNet, Status> {
    text.parse::<IpNet>().map_err(|e| invalid(field, e))
}

fn nets(field: &str, list: &[String]) -> Result<Vec<IpNet>, Status> {
    list.iter()
        .enumerate()
        .map(|(i, t)| net(format_args!("{field}[{i}]"), t))
        .collect()
}

fn names(field: &str, list: Vec<String>) -> Result<Vec<String>, Status> {
    list.into_iter()
        .enumerate()
        .map(|(i, n)| object_name(format_args!("{field}[{i}]"), n))
        .collect()
}

fn ip_set(field: &str, s: pb::IpSet) -> Result<IpSetSpec, Status> {
    let name = object_name(format_args!("{field}.name"), s.name)?;
    let members = nets(&format!("{field}.members"), &s.members)?;
    Ok(IpSetSpec {
        name,
        members: members.into_iter().collect(),
    })
}

fn ip_set_delta(field: &str, d: pb::IpSetDelta) -> Result<IpSetDelta, Status> {
    Ok(IpSetDelta {
        name: object_name(format_args!("{field}.name"), d.name)?,
        add: nets(&format!("{field}.add"), &d.add)?,
        remove: nets(&format!("{field}.remove"), &d.remove)?,
    })
}

fn port_ranges(field: &str, list: &[pb::PortRange]) -> Result<Vec<PortRange>, Status> {
    list.iter()
        .enumerate()
        .map(|(i, r)| {
            let f = format!("{field}[{i}]");
            let first = u16::try_from(r.first)
                .map_err(|_| invalid(&f, format_args!("first {} is above 65535", r.first)))?;
            let last = match r.last {
                0 => first,
                n => u16::try_from(n)
                    .map_err(|_| invalid(&f, format_args!("last {n} is above 65535")))?,
            };
            PortRange::new(first, last)
                .map_err(|_| invalid(&f, format_args!("last {last} is below first {first}")))
        })
        .collect()
}

fn side(field: &str, m: Option<pb::EndpointMatch>) -> Result<SideSpec, Status> {
    let m = m.unwrap_or_default();
    Ok(SideSpec {
        nets: nets(&format!("{field}.nets"), &m.nets)?,
        not_nets: nets(&format!("{field}.not_nets"), &m.not_nets)?,
        ip_sets: names(&format!("{field}.ip_sets"), m.ip_sets)?,
        not_ip_sets: names(&format!("{field}.not_ip_sets"), m.not_ip_sets)?,
        ports: port_ranges(&format!("{field}.ports"), &m.ports)?,
        not_ports: port_ranges(&format!("{field}.not_ports"), &m.not_ports)?,
    })
}

fn byte(field: impl fmt::Display, v: u32) -> Result<u8, Status> {
    u8::try_from(v).map_err(|_| invalid(field, format_args!("{v} is above 255")))
}

fn icmp(field: &str, m: Option<pb::IcmpMatch>) -> Result<Option<IcmpSpec>, Status> {
    let Some(m) = m else { return Ok(None) };
    let icmp_type = m
        .r#type
        .map(|t| byte(format_args!("{field}.type"), t))
        .transpose()?;
    let code = m
        .code
        .map(|c| byte(format_args!("{field}.code"), c))
        .transpose()?;
    if code.is_some() && icmp_type.is_none() {
        return Err(invalid(format_args!("{field}.code"), "a code needs a type"));
    }
    let spec = IcmpSpec { icmp_type, code };
    // An empty match is no match at all.
    Ok((spec != IcmpSpec::default()).then_some(spec))
}

fn action(field: impl fmt::Display, code: i32) -> Result<Action, Status> {
    match pb::Action::try_from(code) {
        Ok(pb::Action::Allow) => Ok(Action::Allow),
        Ok(pb::Action::Deny) => Ok(Action::Deny),
        Ok(pb::Action::Log) => Ok(Action::Log),
        Ok(pb::Action::Pass) => Ok(Action::Pass),
        _ => Err(invalid(field, "must be ALLOW, DENY, LOG or PASS")),
    }
}

fn rule(field: &str, r: pb::Rule) -> Result<RuleSpec, Status> {
    let action = action(format_args!("{field}.action"), r.action)?;
    let protocol = r
        .protocol
        .map(|p| byte(format_args!("{field}.protocol"), p))
        .transpose()?;
    let not_protocol = r
        .not_protocol
        .map(|p| byte(format_args!("{field}.not_protocol"), p))
        .transpose()?;
    let ip_version = match r.ip_version {
        0 => None,
        4 => Some(IpVersion::V4),
        6 => Some(IpVersion::V6),
        v => {
            return Err(invalid(
                format_args!("{field}.ip_version"),
                format_args!("{v}: must be 0, 4 or 6"),
            ))
        }
    };
    let source = side(&format!("{field}.source"), r.source)?;
    let destination = side(&format!("{field}.destination"), r.destination)?;
    for (name, s) in [("source", &source), ("destination", &destination)] {
        for (list, ranges) in [("ports", &s.ports), ("not_ports", &s.not_ports)] {
            if !ranges.is_empty() && !protocol.is_some_and(proto::has_ports) {
                return Err(invalid(
                    format_args!("{field}.{name}.{list}"),
                    "ports need protocol TCP (6), UDP (17) or SCTP (132)",
                ));
            }
        }
    }
    let icmp_match = icmp(&format!("{field}.icmp"), r.icmp)?;
    let not_icmp = icmp(&format!("{field}.not_icmp"), r.not_icmp)?;
    for (name, m) in [("icmp", &icmp_match), ("not_icmp", &not_icmp)] {
        if m.is_some() && !protocol.is_some_and(proto::is_icmp) {
            return Err(invalid(
                format_args!("{field}.{name}"),
                "needs protocol ICMP (1) or ICMPv6 (58)",
            ));
        }
    }
    if r.id.chars().any(char::is_control) {
        return Err(invalid(
            format_args!("{field}.id"),
            format_args!("{:?} contains control characters", r.id),
        ));
    }
    Ok(RuleSpec {
        action,
        protocol,
        not_protocol,
        ip_version,
        source,
        destination,
        icmp: icmp_match,
        not_icmp,
        id: r.id,
    })
}

fn policy(field: &str, p: pb::PolicySpec) -> Result<PolicySpec, Status> {
    let name = object_name(format_args!("{field}.name"), p.name)?;
    let rules = |dir: &str, list: Vec<pb::Rule>| -> Result<Vec<RuleSpec>, Status> {
        list.into_iter()
            .enumerate()
            .map(|(i, r)| rule(&format!("{field}.{dir}[{i}]"), r))
            .collect()
    };
    Ok(PolicySpec {
        ingress: rules("ingress", p.ingress)?,
        egress: rules("egress", p.egress)?,
        name,
    })
}

fn tier(field: &str, t: pb::Tier) -> Result<TierSpec, Status> {
    let name = object_name(format_args!("{field}.name"), t.name)?;
    let policies = names(&format!("{field}.policies"), t.policies)?;
    let end_action = match pb::Action::try_from(t.end_action) {
        Ok(pb::Action::Deny) => EndAction::Deny,
        Ok(pb::Action::Pass) => EndAction::Pass,
        _ => {
            return Err(invalid(
                format_args!("{field}.end_action"),
                "must be DENY or PASS",
            ))
        }
    };
    Ok(TierSpec {
        name,
        policies,
        end_action,
    })
}

fn default_action(field: impl fmt::Display, code: i32) -> Result<DefaultAction, Status> {
    match pb::Action::try_from(code) {
        Ok(pb::Action::Allow) => Ok(DefaultAction::Allow),
        Ok(pb::Action::Deny) => Ok(DefaultAction::Deny),
        _ => Err(invalid(field, "must be ALLOW or DENY")),
    }
}

fn endpoint(field: &str, e: pb::EndpointPolicy) -> Result<EndpointPolicySpec, Status> {
    let interface = object_name(format_args!("{field}.interface"), e.interface)?;
    let tiers = |dir: &str, list: Vec<pb::Tier>| -> Result<Vec<TierSpec>, Status> {
        list.into_iter()
            .enumerate()
            .map(|(i, t)| tier(&format!("{field}.{dir}[{i}]"), t))
            .collect()
    };
    Ok(EndpointPolicySpec {
        interface,
        ingress: tiers("ingress", e.ingress)?,
        egress: tiers("egress", e.egress)?,
        ingress_default: default_action(
            format_args!("{field}.ingress_default"),
            e.ingress_default,
        )?,
        egress_default: default_action(format_args!("{field}.egress_default"), e.egress_default)?,
    })
}

/// An `Apply` request.
pub fn batch_from_proto(b: pb::PolicyBatch) -> Result<PolicyBatch, Status> {
    fn each<T, U>(
        list: &str,
        items: Vec<T>,
        f: impl Fn(&str, T) -> Result<U, Status>,
    ) -> Result<Vec<U>, Status> {
        items
            .into_iter()
            .enumerate()
            .map(|(i, x)| f(&format!("{list}[{i}]"), x))
            .collect()
    }
    Ok(PolicyBatch {
        set_ip_sets: each("set_ip_sets", b.set_ip_sets, ip_set)?,
        update_ip_sets: each("update_ip_sets", b.update_ip_sets, ip_set_delta)?,
        set_policies: each("set_policies", b.set_policies, policy)?,
        set_endpoints: each("set_endpoints", b.set_endpoints, endpoint)?,
        delete_policies: names("delete_policies", b.delete_policies)?,
        delete_ip_sets: names("delete_ip_sets", b.delete_ip_sets)?,
    })
}

/// `SetIpSet`: fields named as in the request (`name`, `members[0]`).
pub fn set_ip_set_from_proto(s: pb::IpSet) -> Result<PolicyBatch, Status> {
    let name = object_name("name", s.name)?;
    let members = nets("members", &s.members)?;
    Ok(PolicyBatch {
        set_ip_sets: vec![IpSetSpec {
            name,
            members: members.into_iter().collect(),
        }],
        ..PolicyBatch::default()
    })
}

/// `UpdateIpSet`.
pub fn update_ip_set_from_proto(d: pb::IpSetDelta) -> Result<PolicyBatch, Status> {
    let delta = IpSetDelta {
        name: object_name("name", d.name)?,
        add: nets("add", &d.add)?,
        remove: nets("remove", &d.remove)?,
    };
    Ok(PolicyBatch {
        update_ip_sets: vec![delta],
        ..PolicyBatch::default()
    })
}

/// `SetPolicy`: fields named from the policy (`ingress[0].action`).
pub fn set_policy_from_proto(p: pb::PolicySpec) -> Result<PolicyBatch, Status> {
    let spec = policy("", p).map_err(strip_leading_dot)?;
    Ok(PolicyBatch {
        set_policies: vec![spec],
        ..PolicyBatch::default()
    })
}

/// `SetEndpointPolicy`.
pub fn set_endpoint_from_proto(e: pb::EndpointPolicy) -> Result<PolicyBatch, Status> {
    let spec = endpoint("", e).map_err(strip_leading_dot)?;
    Ok(PolicyBatch {
        set_endpoints: vec![spec],
        ..PolicyBatch::default()
    })
}

/// `DeletePolicy` / `DeleteIpSet`: the name.
pub fn delete_name(name: String) -> Result<String, Status> {
    object_name("name", name)
}

/// A message path built from an empty prefix starts with a dot.
fn strip_leading_dot(s: Status) -> Status {
    match s.message().strip_prefix('.') {
        Some(m) => Status::new(s.code(), m.to_owned()),
        None => s,
    }
}

/// Database errors on single-object calls name the batch field
/// (`set_policies[0].ingress[1]...`): say it as the request does.
pub fn strip_batch_field(s: Status, list: &str) -> Status {
    let prefix = format!("{list}[0]");
    match s.message().strip_prefix(&prefix) {
        Some(rest) => Status::new(s.code(), rest.trim_start_matches('.').to_owned()),
        None => s,
    }
}

// ------------------------------------------------------------ answers

fn port_ranges_to_proto(r: &[PortRange]) -> Vec<pb::PortRange> {
    r.iter()
        .map(|r| pb::PortRange {
            first: u32::from(r.lo),
            last: u32::from(r.hi),
        })
        .collect()
}

fn side_to_proto(s: &SideSpec) -> Option<pb::EndpointMatch> {
    if s.is_any() {
        return None;
    }
    let strs = |n: &[IpNet]| n.iter().map(ToString::to_string).collect();
    Some(pb::EndpointMatch {
        nets: strs(&s.nets),
        not_nets: strs(&s.not_nets),
        ip_sets: s.ip_sets.clone(),
        not_ip_sets: s.not_ip_sets.clone(),
        ports: port_ranges_to_proto(&s.ports),
        not_ports: port_ranges_to_proto(&s.not_ports),
    })
}

fn action_to_proto(a: Action) -> pb::Action {
    match a {
        Action::Allow => pb::Action::Allow,
        Action::Deny => pb::Action::Deny,
        Action::Log => pb::Action::Log,
        Action::Pass => pb::Action::Pass,
    }
}

fn icmp_to_proto(m: Option<IcmpSpec>) -> Option<pb::IcmpMatch> {
    m.map(|m| pb::IcmpMatch {
        r#type: m.icmp_type.map(u32::from),
        code: m.code.map(u32::from),
    })
}

fn rule_to_proto(r: &RuleSpec) -> pb::Rule {
    pb::Rule {
        action: action_to_proto(r.action) as i32,
        protocol: r.protocol.map(u32::from),
        not_protocol: r.not_protocol.map(u32::from),
        ip_version: match r.ip_version {
            None => 0,
            Some(IpVersion::V4) => 4,
            Some(IpVersion::V6) => 6,
        },
        source: side_to_proto(&r.source),
        destination: side_to_proto(&r.destination),
        icmp: icmp_to_proto(r.icmp),
        not_icmp: icmp_to_proto(r.not_icmp),
        id: r.id.clone(),
    }
}

fn default_to_proto(a: DefaultAction) -> i32 {
    match a {
        DefaultAction::Allow => pb::Action::Allow as i32,
        DefaultAction::Deny => pb::Action::Deny as i32,
    }
}

fn tier_to_proto(t: &TierSpec) -> pb::Tier {
    pb::Tier {
        name: t.name.clone(),
        policies: t.policies.clone(),
        end_action: match t.end_action {
            EndAction::Deny => pb::Action::Deny,
            EndAction::Pass => pb::Action::Pass,
        } as i32,
    }
}

/// A `GetPolicyState` answer.
pub fn state_to_proto(s: PolicyStateSpec) -> pb::PolicyState {
    pb::PolicyState {
        generation: s.generation,
        ip_sets: s
            .ip_sets
            .iter()
            .map(|set| pb::IpSet {
                name: set.name.clone(),
                members: set.members.iter().map(ToString::to_string).collect(),
            })
            .collect(),
        policies: s
            .policies
            .iter()
            .map(|p| pb::PolicySpec {
                name: p.name.clone(),
                ingress: p.ingress.iter().map(rule_to_proto).collect(),
                egress: p.egress.iter().map(rule_to_proto).collect(),
            })
            .collect(),
        endpoints: s
            .endpoints
            .iter()
            .map(|e| pb::EndpointPolicy {
                interface: e.interface.clone(),
                ingress: e.ingress.iter().map(tier_to_proto).collect(),
                egress: e.egress.iter().map(tier_to_proto).collect(),
                ingress_default: default_to_proto(e.ingress_default),
                egress_default: default_to_proto(e.egress_default),
            })
            .collect(),
    }
}

/// A `ListFlows` entry.
pub fn flow_to_proto(f: FlowEntry) -> pb::Flow {
    pb::Flow {
        protocol: f.protocol,
        src: f.src,
        dst: f.dst,
        state: f.state,
        verdict: match f.allowed {
            Some(true) => "allow".into(),
            Some(false) => "deny".into(),
            None => String::new(),
        },
        rule: f.rule,
        packets_orig: f.packets[0],
        bytes_orig: f.bytes[0],
        packets_reply: f.packets[1],
        bytes_reply: f.bytes[1],
        idle_ms: f.idle_ms,
        expires_ms: f.expires_ms,
    }
}

/// A `ListPolicyLog` record.
pub fn log_to_proto(e: &LogEntry) -> pb::PolicyLogRecord {
    let r = &e.record;
    pb::PolicyLogRecord {
        unix_ms: e
            .time
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        interface: r.interface.as_deref().unwrap_or("").to_owned(),
        direction: if r.ingress { "ingress" } else { "egress" }.into(),
        rule: r.rule.to_string(),
        protocol: u32::from(r.proto),
        src: std::net::SocketAddr::new(r.src, r.sport).to_string(),
        dst: std::net::SocketAddr::new(r.dst, r.dport).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn assert_invalid<T: fmt::Debug>(r: Result<T, Status>, message: &str) {
        let s = r.unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
        assert!(
            s.message().starts_with(message),
            "{:?} vs {message:?}",
            s.message()
        );
    }

    fn allow_rule() -> pb::Rule {
        pb::Rule {
            action: pb::Action::Allow as i32,
            id: "r".into(),
            ..Default::default()
        }
    }

    fn batch_with_rule(r: pb::Rule) -> pb::PolicyBatch {
        pb::PolicyBatch {
            set_policies: vec![pb::PolicySpec {
                name: "p".into(),
                ingress: vec![allow_rule(), r],
                egress: vec![],
            }],
            ..Default::default()
        }
    }

    #[test]
    fn rules_round_trip() {
        let r = pb::Rule {
            action: pb::Action::Deny as i32,
            protocol: Some(6),
            not_protocol: None,
            ip_version: 4,
            source: Some(pb::EndpointMatch {
                nets: vec!["10.0.0.0/8".into()],
                not_nets: vec!["10.1.0.0/16".into()],
                ip_sets: vec!["a".into()],
                not_ip_sets: vec!["b".into()],
                ports: vec![pb::PortRange { first: 1, last: 1 }],
                not_ports: vec![],
            }),
            destination: Some(pb::EndpointMatch {
                ports: vec![pb::PortRange {
                    first: 80,
                    last: 90,
                }],
                ..Default::default()
            }),
            icmp: None,
            not_icmp: None,
            id: "x".into(),
        };
        let spec = rule("r", r.clone()).unwrap();
        assert_eq!(rule_to_proto(&spec), r);
        let icmp_rule = pb::Rule {
            action: pb::Action::Allow as i32,
            protocol: Some(1),
            icmp: Some(pb::IcmpMatch {
                r#type: Some(8),
                code: None,
            }),
            not_icmp: Some(pb::IcmpMatch {
                r#type: Some(8),
                code: Some(1),
            }),
            ..Default::default()
        };
        assert_eq!(
            rule_to_proto(&rule("r", icmp_rule.clone()).unwrap()),
            icmp_rule
        );
    }

    #[test]
    fn rejections_name_the_field() {
        let mut r = allow_rule();
        r.action = 0;
        assert_invalid(
            batch_from_proto(batch_with_rule(r)),
            "set_policies[0].ingress[1].action: must be ALLOW",
        );
        let mut r = allow_rule();
        r.destination = Some(pb::EndpointMatch {
            ports: vec![pb::PortRange { first: 80, last: 0 }],
            ..Default::default()
        });
        assert_invalid(
            batch_from_proto(batch_with_rule(r.clone())),
            "set_policies[0].ingress[1].destination.ports: ports need protocol",
        );
        r.protocol = Some(6);
        r.destination.as_mut().unwrap().ports[0] = pb::PortRange {
            first: 90,
            last: 80,
        };
        assert_invalid(
            batch_from_proto(batch_with_rule(r.clone())),
            "set_policies[0].ingress[1].destination.ports[0]: last 80 is below first 90",
        );
        r.destination.as_mut().unwrap().ports[0].first = 70_000;
        assert_invalid(
            batch_from_proto(batch_with_rule(r)),
            "set_policies[0].ingress[1].destination.ports[0]: first 70000",
        );
        let mut r = allow_rule();
        r.source = Some(pb::EndpointMatch {
            nets: vec!["10.0.0.0/33".into()],
            ..Default::default()
        });
        assert_invalid(
            batch_from_proto(batch_with_rule(r)),
            "set_policies[0].ingress[1].source.nets[0]: ",
        );
        let mut r = allow_rule();
        r.icmp = Some(pb::IcmpMatch {
            r#type: None,
            code: Some(1),
        });
        r.protocol = Some(1);
        assert_invalid(
            batch_from_proto(batch_with_rule(r.clone())),
            "set_policies[0].ingress[1].icmp.code: a code needs a type",
        );
        r.icmp.as_mut().unwrap().r#type = Some(3);
        r.protocol = Some(17);
        assert_invalid(
            batch_from_proto(batch_with_rule(r)),
            "set_policies[0].ingress[1].icmp: needs protocol ICMP",
        );
        let mut r = allow_rule();
        r.ip_version = 5;
        assert_invalid(
            batch_from_proto(batch_with_rule(r)),
            "set_policies[0].ingress[1].ip_version: 5",
        );
        let mut r = allow_rule();
        r.protocol = Some(256);
        assert_invalid(
            batch_from_proto(batch_with_rule(r)),
            "set_policies[0].ingress[1].protocol: 256 is above 255",
        );

        let ep = pb::EndpointPolicy {
            interface: "i".into(),
            ingress: vec![pb::Tier {
                name: "t".into(),
                policies: vec!["p".into()],
                end_action: pb::Action::Allow as i32,
            }],
            egress: vec![],
            ingress_default: pb::Action::Allow as i32,
            egress_default: pb::Action::Unspecified as i32,
        };
        let b = pb::PolicyBatch {
            set_endpoints: vec![ep.clone()],
            ..Default::default()
        };
        assert_invalid(
            batch_from_proto(b),
            "set_endpoints[0].ingress[0].end_action: must be DENY or PASS",
        );
        let mut ep = ep;
        ep.ingress[0].end_action = pb::Action::Pass as i32;
        assert_invalid(
            set_endpoint_from_proto(ep),
            "egress_default: must be ALLOW or DENY",
        );
        assert_invalid(
            set_ip_set_from_proto(pb::IpSet {
                name: "s".into(),
                members: vec!["10.0.0.1".into(), "bogus".into()],
            }),
            "members[1]: ",
        );
        assert_invalid(
            set_policy_from_proto(pb::PolicySpec {
                name: String::new(),
                ..Default::default()
            }),
            "name: must not be empty",
        );
    }

    #[test]
    fn flows_say_allow_or_deny() {
        let f = FlowEntry {
            protocol: "tcp".into(),
            src: "10.0.0.1:5".into(),
            dst: "10.0.0.2:80".into(),
            state: "ESTABLISHED".into(),
            allowed: Some(false),
            rule: "default".into(),
            packets: [1, 2],
            bytes: [3, 4],
            idle_ms: 5,
            expires_ms: 6,
        };
        let p = flow_to_proto(f);
        assert_eq!(
            (p.verdict.as_str(), p.packets_reply, p.bytes_orig),
            ("deny", 2, 3)
        );
    }
}
