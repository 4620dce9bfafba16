//! `caracalctl show policy NAMESPACE/POD` and `caracalctl show flows`:
//! the policy one pod's interface runs (its tiers, their policies and
//! rules, the sizes of the IP sets they use), and the dataplane's flow
//! table with the verdict and deciding rule of each flow.
//!
//! As in [`crate::view`], the API's answers become plain views first;
//! `--json` prints the views, the text is rendered from them.

use std::fmt::Write as _;

use caracal_proto::dataplane as pb;
use serde::Serialize;

use crate::table::{Align, Cell, Table};

/// The dataplane interface of `NAMESPACE/POD` (or `POD`, in namespace
/// `default`; `NAMESPACE/POD/IFNAME` for a pod's other interfaces): the
/// agent's naming, `<namespace>/<pod>` for `eth0`.
pub fn interface_of(pod: &str) -> String {
    if pod.contains('/') {
        pod.to_owned()
    } else {
        format!("default/{pod}")
    }
}

// ---------------------------------------------------------------- policy

/// `show policy --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyView {
    pub interface: String,
    /// The policy generation the dataplane enforces.
    pub generation: u64,
    pub ingress: DirectionView,
    pub egress: DirectionView,
    pub ip_sets: Vec<IpSetView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirectionView {
    /// What happens without any tier: `allow` or `deny`.
    pub default: String,
    pub tiers: Vec<TierView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TierView {
    pub name: String,
    /// When no rule of the tier decides: `deny` or `pass`.
    pub end_action: String,
    pub policies: Vec<PolicyRulesView>,
}

/// One policy's rules for one direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyRulesView {
    pub name: String,
    /// False when the dataplane did not report the policy.
    pub found: bool,
    pub rules: Vec<RuleView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleView {
    pub id: String,
    pub action: String,
    /// `tcp`, `udp`, `!icmp`, `any`...
    pub protocol: String,
    /// The conditions on the source, one per line; empty for any.
    pub source: Vec<String>,
    pub destination: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IpSetView {
    pub name: String,
    pub members: usize,
}

fn action(code: i32) -> String {
    match pb::Action::try_from(code) {
        Ok(pb::Action::Allow) => "allow".into(),
        Ok(pb::Action::Deny) => "deny".into(),
        Ok(pb::Action::Log) => "log".into(),
        Ok(pb::Action::Pass) => "pass".into(),
        Ok(pb::Action::Unspecified) => "unspecified".into(),
        Err(_) => format!("action {code}"),
    }
}

fn protocol_name(p: u32) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        n => format!("proto {n}"),
    }
}

fn ports(ranges: &[pb::PortRange]) -> String {
    let each: Vec<String> = ranges
        .iter()
        .map(|r| match r.last {
            0 => r.first.to_string(),
            last if last == r.first => r.first.to_string(),
            last => format!("{}-{last}", r.first),
        })
        .collect();
    each.join(",")
}

fn icmp(m: &pb::IcmpMatch) -> String {
    match (m.r#type, m.code) {
        (Some(t), Some(c)) => format!("type {t} code {c}"),
        (Some(t), None) => format!("type {t}"),
        _ => "any type".into(),
    }
}

/// The conditions of one side of a rule, one per line.
fn side(m: Option<&pb::EndpointMatch>, sizes: &[IpSetView]) -> Vec<String> {
    let Some(m) = m else { return Vec::new() };
    let set = |name: &String| match sizes.iter().find(|s| &s.name == name) {
        Some(s) => format!("{name} ({})", s.members),
        None => name.clone(),
    };
    let mut lines = Vec::new();
    lines.extend(m.nets.iter().map(|n| format!("net {n}")));
    lines.extend(m.not_nets.iter().map(|n| format!("not net {n}")));
    lines.extend(m.ip_sets.iter().map(|s| format!("set {}", set(s))));
    lines.extend(m.not_ip_sets.iter().map(|s| format!("not set {}", set(s))));
    if !m.ports.is_empty() {
        lines.push(format!("port {}", ports(&m.ports)));
    }
    if !m.not_ports.is_empty() {
        lines.push(format!("not port {}", ports(&m.not_ports)));
    }
    lines
}

fn rule_view(r: &pb::Rule, sizes: &[IpSetView]) -> RuleView {
    let mut protocol = Vec::new();
    if let Some(p) = r.protocol {
        protocol.push(protocol_name(p));
    }
    if let Some(p) = r.not_protocol {
        protocol.push(format!("!{}", protocol_name(p)));
    }
    if r.ip_version != 0 {
        protocol.push(format!("ipv{}", r.ip_version));
    }
    if let Some(m) = &r.icmp {
        protocol.push(icmp(m));
    }
    if let Some(m) = &r.not_icmp {
        protocol.push(format!("not {}", icmp(m)));
    }
    RuleView {
        id: r.id.clone(),
        action: action(r.action),
        protocol: if protocol.is_empty() {
            "any".into()
        } else {
            protocol.join(" ")
        },
        source: side(r.source.as_ref(), sizes),
        destination: side(r.destination.as_ref(), sizes),
    }
}

impl PolicyView {
    /// The view of `interface` in `state` (a `GetPolicyState` answer for
    /// it); `None` if the dataplane has no attachment for it.
    pub fn new(interface: &str, state: &pb::PolicyState) -> Option<Self> {
        let ep = state.endpoints.iter().find(|e| e.interface == interface)?;
        let ip_sets: Vec<IpSetView> = state
            .ip_sets
            .iter()
            .map(|s| IpSetView {
                name: s.name.clone(),
                members: s.members.len(),
            })
            .collect();
        Some(PolicyView {
            interface: interface.to_owned(),
            generation: state.generation,
            ingress: DirectionView::new(state, &ep.ingress, ep.ingress_default, true, &ip_sets),
            egress: DirectionView::new(state, &ep.egress, ep.egress_default, false, &ip_sets),
            ip_sets,
        })
    }
}

impl DirectionView {
    fn new(
        state: &pb::PolicyState,
        tiers: &[pb::Tier],
        default: i32,
        ingress: bool,
        sizes: &[IpSetView],
    ) -> Self {
        let policy = |name: &String| {
            let spec = state.policies.iter().find(|p| &p.name == name);
            let rules = match spec {
                Some(p) if ingress => &p.ingress[..],
                Some(p) => &p.egress[..],
                None => &[],
            };
            PolicyRulesView {
                name: name.clone(),
                found: spec.is_some(),
                rules: rules.iter().map(|r| rule_view(r, sizes)).collect(),
            }
        };
        DirectionView {
            default: action(default),
            tiers: tiers
                .iter()
                .map(|t| TierView {
                    name: t.name.clone(),
                    end_action: action(t.end_action),
                    policies: t.policies.iter().map(policy).collect(),
                })
                .collect(),
        }
    }
}

/// Indents every line of `text`.
fn indented(text: &str, by: &str) -> String {
    text.lines().fold(String::new(), |mut out, line| {
        let _ = writeln!(out, "{by}{line}");
        out
    })
}

pub fn policy_text(v: &PolicyView) -> String {
    let mut out = format!(
        "Interface {} (policy generation {})\n",
        v.interface, v.generation
    );
    for (name, d) in [("Ingress", &v.ingress), ("Egress", &v.egress)] {
        out.push('\n');
        if d.tiers.is_empty() {
            let _ = writeln!(out, "{name}: no tier, default {}", d.default);
            continue;
        }
        let _ = writeln!(out, "{name}:");
        for t in &d.tiers {
            let _ = writeln!(out, "  tier {} (end action {})", t.name, t.end_action);
            for p in &t.policies {
                if !p.found {
                    let _ = writeln!(out, "    policy {} (not in the dataplane)", p.name);
                    continue;
                }
                if p.rules.is_empty() {
                    let _ = writeln!(out, "    policy {}: no rule", p.name);
                    continue;
                }
                let _ = writeln!(out, "    policy {}", p.name);
                let mut rules = Table::new(&[
                    ("Action", Align::Left),
                    ("Protocol", Align::Left),
                    ("Source", Align::Left),
                    ("Destination", Align::Left),
                    ("Rule", Align::Left),
                ]);
                for r in &p.rules {
                    let any = |lines: &Vec<String>| -> Cell {
                        if lines.is_empty() {
                            "any".into()
                        } else {
                            lines.clone().into()
                        }
                    };
                    rules.row(vec![
                        r.action.as_str().into(),
                        r.protocol.as_str().into(),
                        any(&r.source),
                        any(&r.destination),
                        r.id.as_str().into(),
                    ]);
                }
                out.push_str(&indented(&rules.to_string(), "      "));
            }
        }
    }
    if !v.ip_sets.is_empty() {
        out.push_str("\nIP sets\n");
        let mut sets = Table::new(&[("Name", Align::Left), ("Members", Align::Right)]);
        for s in &v.ip_sets {
            sets.row(vec![s.name.as_str().into(), s.members.to_string().into()]);
        }
        out.push_str(&indented(&sets.to_string(), "  "));
    }
    out
}

// ------------------------------------------------------------ policy log

/// `show policy-log --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyLogView {
    pub records: Vec<PolicyLogRecordView>,
    /// Records the dataplane's workers could not queue.
    pub lost: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyLogRecordView {
    /// Milliseconds since the Unix epoch.
    pub unix_ms: u64,
    pub interface: String,
    pub direction: String,
    pub rule: String,
    pub protocol: String,
    pub src: String,
    pub dst: String,
}

impl From<pb::ListPolicyLogResponse> for PolicyLogView {
    fn from(r: pb::ListPolicyLogResponse) -> Self {
        PolicyLogView {
            records: r
                .records
                .into_iter()
                .map(|l| PolicyLogRecordView {
                    unix_ms: l.unix_ms,
                    interface: l.interface,
                    direction: l.direction,
                    rule: l.rule,
                    protocol: protocol_name(l.protocol),
                    src: l.src,
                    dst: l.dst,
                })
                .collect(),
            lost: r.lost,
        }
    }
}

/// The log as a table (UTC times of day), and the lost count if any.
pub fn policy_log_text(view: &PolicyLogView) -> String {
    let mut t = Table::new(&[
        ("Time (UTC)", Align::Left),
        ("Interface", Align::Left),
        ("Dir", Align::Left),
        ("Rule", Align::Left),
        ("Proto", Align::Left),
        ("Source", Align::Left),
        ("Destination", Align::Left),
    ]);
    for r in &view.records {
        let ms = r.unix_ms % 86_400_000;
        let time = format!(
            "{:02}:{:02}:{:02}.{:03}",
            ms / 3_600_000,
            ms / 60_000 % 60,
            ms / 1000 % 60,
            ms % 1000
        );
        t.row(vec![
            time.into(),
            r.interface.as_str().into(),
            r.direction.as_str().into(),
            r.rule.as_str().into(),
            r.protocol.as_str().into(),
            r.src.as_str().into(),
            r.dst.as_str().into(),
        ]);
    }
    let mut out = t.to_string();
    if view.lost > 0 {
        out += &format!("{} records lost (the queue was full)\n", view.lost);
    }
    out
}

// ----------------------------------------------------------------- flows

/// `show flows --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowsView {
    pub flows: Vec<FlowView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowView {
    pub protocol: String,
    pub src: String,
    pub dst: String,
    pub state: String,
    pub verdict: String,
    /// The id of the rule that decided, or `default`.
    pub rule: String,
    pub packets_orig: u64,
    pub bytes_orig: u64,
    pub packets_reply: u64,
    pub bytes_reply: u64,
    pub idle_ms: u32,
    pub expires_ms: u32,
}

impl From<pb::Flow> for FlowView {
    fn from(f: pb::Flow) -> Self {
        FlowView {
            protocol: f.protocol,
            src: f.src,
            dst: f.dst,
            state: f.state,
            verdict: f.verdict,
            rule: f.rule,
            packets_orig: f.packets_orig,
            bytes_orig: f.bytes_orig,
            packets_reply: f.packets_reply,
            bytes_reply: f.bytes_reply,
            idle_ms: f.idle_ms,
            expires_ms: f.expires_ms,
        }
    }
}

/// Milliseconds as seconds with one decimal.
fn seconds(ms: u32) -> String {
    format!("{}.{}s", ms / 1000, ms % 1000 / 100)
}

pub fn flows_table(flows: &[FlowView]) -> Table {
    let mut t = Table::new(&[
        ("Proto", Align::Left),
        ("Source", Align::Left),
        ("Destination", Align::Left),
        ("State", Align::Left),
        ("Verdict", Align::Left),
        ("Rule", Align::Left),
        ("Packets", Align::Right),
        ("Bytes", Align::Right),
        ("Idle", Align::Right),
        ("Expires", Align::Right),
    ]);
    for f in flows {
        t.row(vec![
            f.protocol.as_str().into(),
            f.src.as_str().into(),
            f.dst.as_str().into(),
            f.state.as_str().into(),
            f.verdict.as_str().into(),
            f.rule.as_str().into(),
            format!("{}/{}", f.packets_orig, f.packets_reply).into(),
            format!("{}/{}", f.bytes_orig, f.bytes_reply).into(),
            seconds(f.idle_ms).into(),
            seconds(f.expires_ms).into(),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> pb::PolicyState {
        pb::PolicyState {
            generation: 7,
            ip_sets: vec![pb::IpSet {
                name: "sel:abc".into(),
                members: vec!["10.65.0.2".into(), "10.65.0.3".into()],
            }],
            policies: vec![pb::PolicySpec {
                name: "knp.prod.web".into(),
                ingress: vec![
                    pb::Rule {
                        action: pb::Action::Allow as i32,
                        protocol: Some(6),
                        source: Some(pb::EndpointMatch {
                            ip_sets: vec!["sel:abc".into()],
                            ..Default::default()
                        }),
                        destination: Some(pb::EndpointMatch {
                            ports: vec![
                                pb::PortRange { first: 80, last: 0 },
                                pb::PortRange {
                                    first: 8000,
                                    last: 8010,
                                },
                            ],
                            ..Default::default()
                        }),
                        id: "knp.prod.web/ingress/0".into(),
                        ..Default::default()
                    },
                    pb::Rule {
                        action: pb::Action::Allow as i32,
                        source: Some(pb::EndpointMatch {
                            nets: vec!["192.0.2.0/24".into()],
                            not_nets: vec!["192.0.2.1/32".into()],
                            ..Default::default()
                        }),
                        id: "knp.prod.web/ingress/1".into(),
                        ..Default::default()
                    },
                ],
                egress: vec![],
            }],
            endpoints: vec![pb::EndpointPolicy {
                interface: "prod/web".into(),
                ingress: vec![pb::Tier {
                    name: "default".into(),
                    policies: vec!["knp.prod.web".into(), "knp.prod.gone".into()],
                    end_action: pb::Action::Deny as i32,
                }],
                egress: vec![],
                ingress_default: pb::Action::Allow as i32,
                egress_default: pb::Action::Allow as i32,
            }],
        }
    }

    #[test]
    fn pods_name_their_interface() {
        assert_eq!(interface_of("prod/web"), "prod/web");
        assert_eq!(interface_of("web"), "default/web");
        assert_eq!(interface_of("prod/web/net1"), "prod/web/net1");
    }

    #[test]
    fn policy_text_shows_tiers_policies_rules_and_set_sizes() {
        let view = PolicyView::new("prod/web", &state()).unwrap();
        assert_eq!(
            policy_text(&view),
            "Interface prod/web (policy generation 7)\n\
             \n\
             Ingress:\n\
             \x20 tier default (end action deny)\n\
             \x20   policy knp.prod.web\n\
             \x20     Action  Protocol  Source                Destination        Rule\n\
             \x20     allow   tcp       set sel:abc (2)       port 80,8000-8010  knp.prod.web/ingress/0\n\
             \x20     allow   any       net 192.0.2.0/24      any                knp.prod.web/ingress/1\n\
             \x20                       not net 192.0.2.1/32\n\
             \x20   policy knp.prod.gone (not in the dataplane)\n\
             \n\
             Egress: no tier, default allow\n\
             \n\
             IP sets\n\
             \x20 Name     Members\n\
             \x20 sel:abc        2\n"
        );
    }

    #[test]
    fn policy_json_is_the_view() {
        let view = PolicyView::new("prod/web", &state()).unwrap();
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(
            json["ingress"]["tiers"][0]["policies"][0]["rules"][0]["protocol"],
            "tcp"
        );
        assert_eq!(json["egress"]["default"], "allow");
        assert_eq!(json["ip_sets"][0]["members"], 2);
    }

    #[test]
    fn no_attachment_no_view() {
        assert!(PolicyView::new("prod/other", &state()).is_none());
    }

    #[test]
    fn rules_show_every_condition() {
        let rule = pb::Rule {
            action: pb::Action::Deny as i32,
            not_protocol: Some(1),
            ip_version: 6,
            destination: Some(pb::EndpointMatch {
                not_ip_sets: vec!["x".into()],
                not_ports: vec![pb::PortRange {
                    first: 22,
                    last: 22,
                }],
                ..Default::default()
            }),
            not_icmp: Some(pb::IcmpMatch {
                r#type: Some(8),
                code: None,
            }),
            id: "r".into(),
            ..Default::default()
        };
        let view = rule_view(&rule, &[]);
        assert_eq!(view.action, "deny");
        assert_eq!(view.protocol, "!icmp ipv6 not type 8");
        assert_eq!(view.destination, ["not set x", "not port 22"]);
        assert!(view.source.is_empty());
    }

    #[test]
    fn policy_log_shows_time_rule_and_lost_records() {
        let view = PolicyLogView::from(pb::ListPolicyLogResponse {
            records: vec![pb::PolicyLogRecord {
                // 2026-11-26 13:04:05.678 UTC
                unix_ms: 1_795_698_245_678,
                interface: "x/a".into(),
                direction: "ingress".into(),
                rule: "knp.x.log/ingress/0".into(),
                protocol: 17,
                src: "10.65.0.1:4000".into(),
                dst: "10.65.0.2:53".into(),
            }],
            lost: 3,
        });
        assert_eq!(view.records[0].protocol, "udp");
        let text = policy_log_text(&view);
        for want in [
            "13:04:05.678",
            "x/a",
            "ingress",
            "knp.x.log/ingress/0",
            "10.65.0.2:53",
        ] {
            assert!(text.contains(want), "{want:?} missing from\n{text}");
        }
        assert!(
            text.ends_with("3 records lost (the queue was full)\n"),
            "{text}"
        );
    }

    #[test]
    fn flows_table_has_both_directions_counters() {
        let flows = [FlowView::from(pb::Flow {
            protocol: "tcp".into(),
            src: "10.65.0.2:34567".into(),
            dst: "10.65.0.1:80".into(),
            state: "ESTABLISHED".into(),
            verdict: "allow".into(),
            rule: "knp.prod.web/ingress/0".into(),
            packets_orig: 12,
            bytes_orig: 1500,
            packets_reply: 10,
            bytes_reply: 9000,
            idle_ms: 1250,
            expires_ms: 431_999,
        })];
        assert_eq!(
            flows_table(&flows).to_string(),
            "Proto  Source           Destination   State        Verdict  Rule                    Packets      Bytes  Idle  Expires\n\
             tcp    10.65.0.2:34567  10.65.0.1:80  ESTABLISHED  allow    knp.prod.web/ingress/0    12/10  1500/9000  1.2s   431.9s\n"
        );
    }
}
