//! The policy semantics of `policy.proto`, executed literally on the specs
//! (tiers, policies and rules in order, every field tested as written),
//! and the compiled form ([`PolicyDb`] → [`EndpointRules`]) checked
//! against it: hand-written cases for each feature, and a bounded property
//! test with random sets, policies, tiers and incremental changes.
//!
//! The compiled rules restrict the endpoint's own side (source of egress,
//! destination of ingress) to its addresses, which is exact for the
//! packets an endpoint's classifiers see; the packets generated here
//! respect that.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use proptest::prelude::*;

use super::spec::*;
use super::*;

/// A packet as the rules see it: ICMP type and code in the ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pkt {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    sport: u16,
    dport: u16,
}

/// The policy state, as specs.
#[derive(Debug, Clone, Default)]
struct World {
    sets: BTreeMap<String, BTreeSet<IpNet>>,
    policies: BTreeMap<String, PolicySpec>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    allow: bool,
    rule: String,
    logged: Vec<String>,
}

impl World {
    fn apply(&mut self, b: &PolicyBatch) {
        for s in &b.set_ip_sets {
            self.sets.insert(s.name.clone(), s.members.clone());
        }
        for d in &b.update_ip_sets {
            let m = self.sets.get_mut(&d.name).unwrap();
            for n in &d.remove {
                m.remove(n);
            }
            m.extend(d.add.iter().copied());
        }
        for p in &b.set_policies {
            self.policies.insert(p.name.clone(), p.clone());
        }
        for p in &b.delete_policies {
            self.policies.remove(p);
        }
        for s in &b.delete_ip_sets {
            self.sets.remove(s);
        }
    }

    fn in_set(&self, set: &str, a: IpAddr) -> bool {
        self.sets[set].iter().any(|n| n.contains(a))
    }

    fn side(&self, s: &SideSpec, a: IpAddr, port: u16) -> bool {
        (s.nets.is_empty() || s.nets.iter().any(|n| n.contains(a)))
            && (s.ip_sets.is_empty() || s.ip_sets.iter().any(|n| self.in_set(n, a)))
            && !s.not_nets.iter().any(|n| n.contains(a))
            && !s.not_ip_sets.iter().any(|n| self.in_set(n, a))
            && (s.ports.is_empty() || s.ports.iter().any(|r| r.contains(port)))
            && !s.not_ports.iter().any(|r| r.contains(port))
    }

    fn matches(&self, r: &RuleSpec, p: &Pkt) -> bool {
        let icmp = |m: &IcmpSpec| m.matches(p.sport as u8, p.dport as u8);
        r.protocol.is_none_or(|x| x == p.proto)
            && r.not_protocol.is_none_or(|x| x != p.proto)
            && match r.ip_version {
                None => true,
                Some(IpVersion::V4) => p.src.is_ipv4(),
                Some(IpVersion::V6) => p.src.is_ipv6(),
            }
            && self.side(&r.source, p.src, p.sport)
            && self.side(&r.destination, p.dst, p.dport)
            && r.icmp.as_ref().is_none_or(icmp)
            && !r.not_icmp.as_ref().is_some_and(icmp)
    }

    /// The decision of `ep` in direction `dir` for `p`.
    fn decide(&self, ep: &EndpointPolicySpec, dir: Direction, p: &Pkt) -> Outcome {
        let mut logged = Vec::new();
        let done = |allow, rule: String, logged| Outcome {
            allow,
            rule,
            logged,
        };
        for tier in ep.tiers(dir) {
            if tier.policies.is_empty() {
                continue;
            }
            let mut passed = false;
            'tier: for pname in &tier.policies {
                let policy = &self.policies[pname];
                for (i, r) in policy.rules(dir).iter().enumerate() {
                    if !self.matches(r, p) {
                        continue;
                    }
                    let id = if r.id.is_empty() {
                        format!("{pname}/{}/{i}", dir.as_str())
                    } else {
                        r.id.clone()
                    };
                    match r.action {
                        Action::Allow => return done(true, id, logged),
                        Action::Deny => return done(false, id, logged),
                        Action::Log => logged.push(id),
                        Action::Pass => {
                            passed = true;
                            break 'tier;
                        }
                    }
                }
            }
            if !passed && tier.end_action == EndAction::Deny {
                return done(false, format!("{}/end-of-tier", tier.name), logged);
            }
        }
        let allow = ep.default_action(dir) == DefaultAction::Allow;
        done(allow, "default".into(), logged)
    }
}

/// The compiled decision.
fn compiled(db: &mut PolicyDb, ep: &str, dir: Direction, p: &Pkt) -> Outcome {
    let rules = db.endpoint_rules(ep).unwrap();
    let rules = match dir {
        Direction::Ingress => &rules.ingress,
        Direction::Egress => &rules.egress,
    };
    let mut logged = Vec::new();
    let d = match (p.src, p.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let k = PacketKey4::v4(s, d, p.proto, p.sport, p.dport);
            rules.resolve(&k, rules.classifier().classify(&k), |r| logged.push(r))
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let k = PacketKey6::v6(s, d, p.proto, p.sport, p.dport);
            rules.resolve(&k, rules.classifier().classify(&k), |r| logged.push(r))
        }
        _ => unreachable!("one family"),
    };
    Outcome {
        allow: d.allow,
        rule: db.rule_name(d.rule).to_owned(),
        logged: logged
            .into_iter()
            .map(|r| db.rule_name(r).to_owned())
            .collect(),
    }
}

const OWN4: &str = "10.0.0.1";
const OWN6: &str = "fd00::1";

fn own(name: &str) -> Vec<IpAddr> {
    let _ = name;
    vec![OWN4.parse().unwrap(), OWN6.parse().unwrap()]
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn pkt(src: &str, dst: &str, proto: u8, sport: u16, dport: u16) -> Pkt {
    Pkt {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        proto,
        sport,
        dport,
    }
}

fn tier(name: &str, policies: &[&str], end: EndAction) -> TierSpec {
    TierSpec {
        name: name.into(),
        policies: policies.iter().map(|s| s.to_string()).collect(),
        end_action: end,
    }
}

fn endpoint(ingress: Vec<TierSpec>, egress: Vec<TierSpec>) -> EndpointPolicySpec {
    EndpointPolicySpec {
        interface: "ep".into(),
        ingress,
        egress,
        ingress_default: DefaultAction::Allow,
        egress_default: DefaultAction::Allow,
    }
}

fn rule(action: Action, id: &str) -> RuleSpec {
    RuleSpec {
        id: id.into(),
        ..RuleSpec::new(action)
    }
}

/// A database and the literal world, changed together.
struct Both {
    db: PolicyDb,
    world: World,
    ep: EndpointPolicySpec,
}

impl Both {
    fn new() -> Self {
        Both {
            db: PolicyDb::new(),
            world: World::default(),
            ep: endpoint(vec![], vec![]),
        }
    }

    fn apply(&mut self, b: PolicyBatch) -> BTreeSet<String> {
        self.db.validate(&b, |i| i == "ep").expect("a valid batch");
        self.world.apply(&b);
        if let Some(e) = b.set_endpoints.last() {
            self.ep = e.clone();
        }
        self.db.apply(b, own)
    }

    fn check(&mut self, dir: Direction, p: &Pkt) -> Outcome {
        let want = self.world.decide(&self.ep, dir, p);
        let got = compiled(&mut self.db, "ep", dir, p);
        assert_eq!(got, want, "{dir:?} {p:?}");
        got
    }
}

fn batch() -> PolicyBatch {
    PolicyBatch::default()
}

#[test]
fn defaults_without_tiers() {
    let mut b = Both::new();
    let mut ep = endpoint(vec![], vec![]);
    ep.egress_default = DefaultAction::Deny;
    b.apply(PolicyBatch {
        set_endpoints: vec![ep],
        ..batch()
    });
    let p = pkt("10.9.9.9", OWN4, 6, 1000, 80);
    assert!(b.check(Direction::Ingress, &p).allow);
    let out = b.check(Direction::Egress, &pkt(OWN4, "10.9.9.9", 6, 1000, 80));
    assert_eq!((out.allow, out.rule.as_str()), (false, "default"));
}

#[test]
fn tiers_pass_log_and_end_actions() {
    let mut b = Both::new();
    let mut log = rule(Action::Log, "log-all");
    log.protocol = Some(17);
    let mut pass_web = rule(Action::Pass, "pass-web");
    pass_web.protocol = Some(6);
    pass_web.destination.ports = vec![PortRange::exact(80)];
    let mut deny_10 = rule(Action::Deny, "deny-10");
    deny_10.source.nets = vec![net("10.0.0.0/8")];
    let mut allow_udp = rule(Action::Allow, "allow-udp");
    allow_udp.protocol = Some(17);
    let admin = PolicySpec {
        name: "admin".into(),
        ingress: vec![log, pass_web, deny_10],
        egress: vec![],
    };
    let app = PolicySpec {
        name: "app".into(),
        ingress: vec![allow_udp],
        egress: vec![],
    };
    b.apply(PolicyBatch {
        set_policies: vec![admin, app],
        set_endpoints: vec![endpoint(
            vec![
                tier("admin", &["admin"], EndAction::Pass),
                tier("empty", &[], EndAction::Deny),
                tier("app", &["app"], EndAction::Deny),
            ],
            vec![],
        )],
        ..batch()
    });
    // Passed by the first tier, allowed by nothing in the second: its end.
    let web = b.check(Direction::Ingress, &pkt("10.2.0.1", OWN4, 6, 999, 80));
    assert_eq!((web.allow, web.rule.as_str()), (false, "app/end-of-tier"));
    // Denied in the first tier.
    let ssh = b.check(Direction::Ingress, &pkt("10.2.0.1", OWN4, 6, 999, 22));
    assert_eq!(ssh.rule, "deny-10");
    // Logged, not denied (not from 10/8), allowed in the second tier.
    let udp = b.check(Direction::Ingress, &pkt("192.168.0.1", OWN4, 17, 5, 53));
    assert_eq!(udp.rule, "allow-udp");
    assert_eq!(udp.logged, ["log-all"]);
    // Logged, then denied by the first tier's rules.
    let udp10 = b.check(Direction::Ingress, &pkt("10.2.0.1", OWN4, 17, 5, 53));
    assert_eq!((udp10.allow, udp10.logged.len()), (false, 1));
    // Egress has no tier.
    assert!(
        b.check(Direction::Egress, &pkt(OWN4, "10.2.0.1", 6, 1, 2))
            .allow
    );
    // A tier that passes everything falls through to the default.
    let mut ep = b.ep.clone();
    ep.ingress = vec![tier("admin", &["admin"], EndAction::Pass)];
    ep.ingress_default = DefaultAction::Deny;
    b.apply(PolicyBatch {
        set_endpoints: vec![ep],
        ..batch()
    });
    let out = b.check(Direction::Ingress, &pkt("192.168.0.1", OWN4, 6, 1, 80));
    assert_eq!((out.allow, out.rule.as_str()), (false, "default"));
}

#[test]
fn negations_become_positive_sets() {
    let mut b = Both::new();
    let mut r = rule(Action::Allow, "block-except");
    r.protocol = Some(6);
    r.source.nets = vec![net("10.0.0.0/8"), net("fd00::/16")];
    r.source.not_nets = vec![net("10.1.0.0/16"), net("10.2.3.4")];
    r.source.not_ip_sets = vec!["bad".into()];
    r.destination.ports = vec![PortRange::new(80, 90).unwrap()];
    r.destination.not_ports = vec![PortRange::exact(85)];
    let mut not_udp = rule(Action::Allow, "not-udp");
    not_udp.not_protocol = Some(17);
    not_udp.source.nets = vec![net("192.168.0.0/16")];
    let mut icmp = rule(Action::Allow, "icmp-not-8-1");
    icmp.protocol = Some(1);
    icmp.not_icmp = Some(IcmpSpec {
        icmp_type: Some(8),
        code: Some(1),
    });
    b.apply(PolicyBatch {
        set_ip_sets: vec![IpSetSpec {
            name: "bad".into(),
            members: [net("10.3.0.0/24")].into(),
        }],
        set_policies: vec![PolicySpec {
            name: "p".into(),
            ingress: vec![r, not_udp, icmp],
            egress: vec![],
        }],
        set_endpoints: vec![endpoint(vec![tier("t", &["p"], EndAction::Deny)], vec![])],
        ..batch()
    });
    for (src, dport, allow) in [
        ("10.9.0.1", 80, true),
        ("10.9.0.1", 85, false),
        ("10.9.0.1", 91, false),
        ("10.1.0.1", 80, false),
        ("10.2.3.4", 80, false),
        ("10.2.3.5", 80, true),
        ("10.3.0.9", 80, false),
        ("11.0.0.1", 80, false),
    ] {
        let out = b.check(Direction::Ingress, &pkt(src, OWN4, 6, 1, dport));
        assert_eq!(out.allow, allow, "{src}:{dport}");
    }
    assert!(
        b.check(Direction::Ingress, &pkt("fd00::9", OWN6, 6, 1, 80))
            .allow
    );
    assert!(
        b.check(Direction::Ingress, &pkt("192.168.1.1", OWN4, 6, 1, 22))
            .allow
    );
    assert!(
        b.check(Direction::Ingress, &pkt("192.168.1.1", OWN4, 47, 0, 0))
            .allow
    );
    assert!(
        !b.check(Direction::Ingress, &pkt("192.168.1.1", OWN4, 17, 1, 22))
            .allow
    );
    assert!(
        b.check(Direction::Ingress, &pkt("1.1.1.1", OWN4, 1, 8, 0))
            .allow
    );
    assert!(
        !b.check(Direction::Ingress, &pkt("1.1.1.1", OWN4, 1, 8, 1))
            .allow
    );
    // The excluded set grows: only its rows change.
    let dirty = b.apply(PolicyBatch {
        update_ip_sets: vec![IpSetDelta {
            name: "bad".into(),
            add: vec![net("10.9.0.0/24")],
            remove: vec![net("10.3.0.0/24")],
        }],
        ..batch()
    });
    assert_eq!(dirty, BTreeSet::from(["ep".to_owned()]));
    assert!(
        !b.check(Direction::Ingress, &pkt("10.9.0.1", OWN4, 6, 1, 80))
            .allow
    );
    assert!(
        b.check(Direction::Ingress, &pkt("10.3.0.9", OWN4, 6, 1, 80))
            .allow
    );
}

#[test]
fn ip_set_members_come_and_go() {
    let mut b = Both::new();
    let mut r = rule(Action::Allow, "from-set");
    r.source.ip_sets = vec!["peers".into(), "more".into()];
    let set = |name: &str, m: &[&str]| IpSetSpec {
        name: name.into(),
        members: m.iter().map(|s| net(s)).collect(),
    };
    b.apply(PolicyBatch {
        set_ip_sets: vec![
            set("peers", &["10.0.0.5"]),
            set("more", &[]),
            set("unused", &[]),
        ],
        set_policies: vec![PolicySpec {
            name: "p".into(),
            ingress: vec![r],
            egress: vec![],
        }],
        set_endpoints: vec![endpoint(vec![tier("t", &["p"], EndAction::Deny)], vec![])],
        ..batch()
    });
    let from = |a: &str| pkt(a, OWN4, 17, 1, 1);
    assert!(b.check(Direction::Ingress, &from("10.0.0.5")).allow);
    assert!(!b.check(Direction::Ingress, &from("10.0.0.6")).allow);
    let before = b.db.endpoint_rules("ep").unwrap();
    let dirty = b.apply(PolicyBatch {
        set_ip_sets: vec![set("more", &["10.0.0.6"])],
        ..batch()
    });
    assert_eq!(dirty.len(), 1);
    assert!(b.check(Direction::Ingress, &from("10.0.0.6")).allow);
    // The published snapshot did not change under its holders.
    let k = PacketKey4::v4("10.0.0.6".parse().unwrap(), OWN4.parse().unwrap(), 17, 1, 1);
    assert!(!before.ingress.decide(&k).allow);
    // A set nobody uses changes nothing.
    let dirty = b.apply(PolicyBatch {
        set_ip_sets: vec![set("unused", &["10.0.0.7"])],
        ..batch()
    });
    assert!(dirty.is_empty());
    // Replacing the set removes old members.
    b.apply(PolicyBatch {
        set_ip_sets: vec![set("peers", &["10.0.0.8"])],
        ..batch()
    });
    assert!(!b.check(Direction::Ingress, &from("10.0.0.5")).allow);
    assert!(b.check(Direction::Ingress, &from("10.0.0.8")).allow);
}

#[test]
fn validation_is_whole_and_names_fields() {
    let mut db = PolicyDb::new();
    let mut r = rule(Action::Allow, "r");
    r.source.ip_sets = vec!["s".into()];
    let p = PolicySpec {
        name: "p".into(),
        ingress: vec![r],
        egress: vec![],
    };
    let exists = |i: &str| i == "ep";
    let err = db
        .validate(
            &PolicyBatch {
                set_policies: vec![p.clone()],
                ..batch()
            },
            exists,
        )
        .unwrap_err();
    assert_eq!(
        err,
        ApplyError::FailedPrecondition(
            "set_policies[0].ingress[0].source.ip_sets[0]: no IP set \"s\"".into()
        )
    );
    let err = db
        .validate(
            &PolicyBatch {
                update_ip_sets: vec![IpSetDelta {
                    name: "nope".into(),
                    add: vec![],
                    remove: vec![],
                }],
                ..batch()
            },
            exists,
        )
        .unwrap_err();
    assert!(matches!(err, ApplyError::NotFound(m) if m.starts_with("update_ip_sets[0].name")));
    let mut ep = endpoint(vec![tier("t", &["p"], EndAction::Deny)], vec![]);
    ep.interface = "gone".into();
    let err = db
        .validate(
            &PolicyBatch {
                set_endpoints: vec![ep],
                ..batch()
            },
            exists,
        )
        .unwrap_err();
    assert!(
        matches!(&err, ApplyError::FailedPrecondition(m) if m == "set_endpoints[0].interface: no interface \"gone\""),
        "{err:?}"
    );
    // The whole thing in one batch is fine.
    let good = PolicyBatch {
        set_ip_sets: vec![IpSetSpec {
            name: "s".into(),
            members: BTreeSet::new(),
        }],
        set_policies: vec![p],
        set_endpoints: vec![endpoint(vec![tier("t", &["p"], EndAction::Deny)], vec![])],
        ..batch()
    };
    db.validate(&good, exists).unwrap();
    db.apply(good, own);
    // Deleting what is in use is refused; deleting with the user is not.
    let err = db
        .validate(
            &PolicyBatch {
                delete_policies: vec!["p".into()],
                ..batch()
            },
            exists,
        )
        .unwrap_err();
    assert!(
        matches!(err, ApplyError::FailedPrecondition(m) if m.contains("attached to interface \"ep\""))
    );
    let err = db
        .validate(
            &PolicyBatch {
                delete_ip_sets: vec!["s".into()],
                ..batch()
            },
            exists,
        )
        .unwrap_err();
    assert!(matches!(err, ApplyError::FailedPrecondition(m) if m.contains("used by policy \"p\"")));
    let detach = PolicyBatch {
        set_endpoints: vec![endpoint(vec![], vec![])],
        delete_policies: vec!["p".into()],
        delete_ip_sets: vec!["s".into()],
        ..batch()
    };
    db.validate(&detach, exists).unwrap();
    db.apply(detach, own);
    let state = db.state(None);
    assert!(state.policies.is_empty() && state.ip_sets.is_empty());
    assert_eq!(state.endpoints.len(), 1);
    // Duplicates within a list.
    let dup = PolicyBatch {
        delete_policies: vec![],
        set_ip_sets: vec![
            IpSetSpec {
                name: "a".into(),
                members: BTreeSet::new(),
            },
            IpSetSpec {
                name: "a".into(),
                members: BTreeSet::new(),
            },
        ],
        ..batch()
    };
    assert!(
        matches!(db.validate(&dup, exists), Err(ApplyError::Invalid(m)) if m.starts_with("set_ip_sets[1]"))
    );
}

#[test]
fn state_reports_what_was_set_and_what_one_interface_uses() {
    let mut b = Both::new();
    let mut r = rule(Action::Allow, "r");
    r.source.ip_sets = vec!["s1".into()];
    r.protocol = Some(6);
    r.destination.ports = vec![PortRange::new(80, 81).unwrap()];
    let p1 = PolicySpec {
        name: "p1".into(),
        ingress: vec![r],
        egress: vec![],
    };
    let p2 = PolicySpec {
        name: "p2".into(),
        ..PolicySpec::default()
    };
    let sets = vec![
        IpSetSpec {
            name: "s1".into(),
            members: [net("10.0.0.5"), net("10.1.0.0/16")].into(),
        },
        IpSetSpec {
            name: "s2".into(),
            members: BTreeSet::new(),
        },
    ];
    let ep = endpoint(vec![tier("t", &["p1"], EndAction::Deny)], vec![]);
    b.apply(PolicyBatch {
        set_ip_sets: sets.clone(),
        set_policies: vec![p1.clone(), p2],
        set_endpoints: vec![ep.clone()],
        ..batch()
    });
    let all = b.db.state(None);
    assert_eq!(all.ip_sets, sets);
    assert_eq!(all.policies.len(), 2);
    let one = b.db.state(Some("ep"));
    assert_eq!(one.ip_sets, sets[..1]);
    assert_eq!(one.policies, [p1]);
    assert_eq!(one.endpoints, [ep]);
    assert!(b.db.state(Some("other")).endpoints.is_empty());
}

// ------------------------------------------------------------ property test

const SETS: [&str; 3] = ["s0", "s1", "s2"];
const POLICIES: [&str; 4] = ["p0", "p1", "p2", "p3"];

fn any_net() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        4 => (0u8..8, prop::sample::select(vec![29u8, 30, 31, 32, 32, 32])).prop_map(|(h, len)| {
            IpNet::new(IpAddr::from([10, 0, 0, h]), len).unwrap()
        }),
        1 => Just(net("0.0.0.0/0")),
        2 => (0u8..8, prop::sample::select(vec![125u8, 127, 128])).prop_map(|(h, len)| {
            IpNet::new(format!("fd00::{h}").parse().unwrap(), len).unwrap()
        }),
    ]
}

fn nets(max: usize) -> impl Strategy<Value = Vec<IpNet>> {
    prop::collection::vec(any_net(), 0..=max)
}

fn set_names(max: usize) -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(prop::sample::select(SETS.to_vec()), 0..=max)
        .prop_map(|v| v.into_iter().map(String::from).collect())
}

const PORTS: [u16; 6] = [0, 53, 80, 81, 443, 65535];

fn ranges(max: usize) -> impl Strategy<Value = Vec<PortRange>> {
    prop::collection::vec(
        (prop::sample::select(PORTS.to_vec()), 0u16..3)
            .prop_map(|(lo, w)| PortRange::new(lo, lo.saturating_add(w)).unwrap()),
        0..=max,
    )
}

fn side(ports: bool) -> impl Strategy<Value = SideSpec> {
    let addr = (nets(2), nets(1), set_names(2), set_names(1));
    let ports = if ports {
        (ranges(2), ranges(1)).boxed()
    } else {
        Just((vec![], vec![])).boxed()
    };
    prop_oneof![
        2 => Just((SideSpec::default(), (vec![], vec![]))),
        3 => (addr, ports.clone()).prop_map(|((nets, not_nets, ip_sets, not_ip_sets), p)| {
            (
                SideSpec {
                    nets,
                    not_nets,
                    ip_sets,
                    not_ip_sets,
                    ..SideSpec::default()
                },
                p,
            )
        }),
        1 => ports.prop_map(|p| (SideSpec::default(), p)),
    ]
    .prop_map(|(mut s, (ports, not_ports))| {
        s.ports = ports;
        s.not_ports = not_ports;
        s
    })
}

fn icmp_match() -> impl Strategy<Value = Option<IcmpSpec>> {
    prop_oneof![
        2 => Just(None),
        1 => (prop::option::of(prop::sample::select(vec![0u8, 3, 8])), prop::option::of(0u8..2))
            .prop_map(|(t, c)| Some(IcmpSpec { icmp_type: t, code: t.and(c) })),
    ]
}

fn any_rule() -> impl Strategy<Value = RuleSpec> {
    let action = prop::sample::select(vec![
        Action::Allow,
        Action::Allow,
        Action::Deny,
        Action::Deny,
        Action::Log,
        Action::Pass,
    ]);
    let proto = prop::option::of(prop::sample::select(vec![6u8, 17, 1, 58]));
    let not_proto = prop::option::weighted(0.2, prop::sample::select(vec![6u8, 17, 1]));
    let version = prop::option::weighted(
        0.3,
        prop::sample::select(vec![IpVersion::V4, IpVersion::V6]),
    );
    (action, proto, not_proto, version, 0u8..3).prop_flat_map(
        |(action, protocol, not_protocol, ip_version, id)| {
            let ports = protocol.is_some_and(proto::has_ports);
            let icmp = protocol.is_some_and(proto::is_icmp);
            let icmps = if icmp {
                (icmp_match(), icmp_match()).boxed()
            } else {
                Just((None, None)).boxed()
            };
            (side(ports), side(ports), icmps).prop_map(move |(source, destination, (i, ni))| {
                RuleSpec {
                    action,
                    protocol,
                    not_protocol,
                    ip_version,
                    source,
                    destination,
                    icmp: i,
                    not_icmp: ni,
                    // Some rules share an id, some have none.
                    id: if id == 0 {
                        String::new()
                    } else {
                        format!("id{id}")
                    },
                }
            })
        },
    )
}

fn any_policy(name: &'static str) -> impl Strategy<Value = PolicySpec> {
    (
        prop::collection::vec(any_rule(), 0..4),
        prop::collection::vec(any_rule(), 0..4),
    )
        .prop_map(move |(ingress, egress)| PolicySpec {
            name: name.into(),
            ingress,
            egress,
        })
}

fn any_tiers() -> impl Strategy<Value = Vec<TierSpec>> {
    prop::collection::vec(
        (
            prop::collection::vec(prop::sample::select(POLICIES.to_vec()), 0..3),
            any::<bool>(),
            0u8..2,
        )
            .prop_map(|(ps, deny, n)| TierSpec {
                name: format!("tier{n}"),
                policies: ps.into_iter().map(String::from).collect(),
                end_action: if deny {
                    EndAction::Deny
                } else {
                    EndAction::Pass
                },
            }),
        0..3,
    )
}

fn any_endpoint() -> impl Strategy<Value = EndpointPolicySpec> {
    (any_tiers(), any_tiers(), any::<bool>(), any::<bool>()).prop_map(|(i, e, ia, ea)| {
        EndpointPolicySpec {
            interface: "ep".into(),
            ingress: i,
            egress: e,
            ingress_default: if ia {
                DefaultAction::Allow
            } else {
                DefaultAction::Deny
            },
            egress_default: if ea {
                DefaultAction::Allow
            } else {
                DefaultAction::Deny
            },
        }
    })
}

#[derive(Debug, Clone)]
enum Change {
    Set(usize, Vec<IpNet>),
    Delta(usize, Vec<IpNet>, Vec<IpNet>),
    Policy(PolicySpec),
    Endpoint(EndpointPolicySpec),
}

fn any_change() -> impl Strategy<Value = Change> {
    prop_oneof![
        2 => (0..SETS.len(), nets(3)).prop_map(|(i, n)| Change::Set(i, n)),
        3 => (0..SETS.len(), nets(2), nets(2)).prop_map(|(i, a, r)| Change::Delta(i, a, r)),
        2 => prop::sample::select(POLICIES.to_vec()).prop_flat_map(any_policy).prop_map(Change::Policy),
        1 => any_endpoint().prop_map(Change::Endpoint),
    ]
}

fn any_packet() -> impl Strategy<Value = (Pkt, Direction)> {
    let v4 = (0u8..10).prop_map(|h| IpAddr::from([10, 0, 0, h]));
    let v6 =
        (0u16..10).prop_map(|h| IpAddr::from(std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, h)));
    let proto = prop::sample::select(vec![6u8, 17, 1, 58, 132, 47]);
    let port = prop::sample::select(vec![0u16, 1, 8, 53, 80, 81, 82, 443, 65535]);
    (
        any::<bool>(),
        v4,
        v6,
        proto,
        port.clone(),
        port,
        any::<bool>(),
    )
        .prop_map(|(six, a4, a6, proto, sport, dport, ingress)| {
            let (own, peer) = if six {
                (OWN6.parse().unwrap(), a6)
            } else {
                (OWN4.parse().unwrap(), a4)
            };
            let (src, dst, dir) = if ingress {
                (peer, own, Direction::Ingress)
            } else {
                (own, peer, Direction::Egress)
            };
            // ICMP type and code are bytes.
            let (sport, dport) = if matches!(proto, 1 | 58) {
                (sport % 9, dport % 2)
            } else {
                (sport, dport)
            };
            (
                Pkt {
                    src,
                    dst,
                    proto,
                    sport,
                    dport,
                },
                dir,
            )
        })
}

fn initial() -> impl Strategy<Value = PolicyBatch> {
    (
        prop::collection::vec(nets(3), SETS.len()),
        any_policy("p0"),
        any_policy("p1"),
        any_policy("p2"),
        any_policy("p3"),
        any_endpoint(),
    )
        .prop_map(|(sets, p0, p1, p2, p3, ep)| PolicyBatch {
            set_ip_sets: sets
                .into_iter()
                .enumerate()
                .map(|(i, m)| IpSetSpec {
                    name: SETS[i].into(),
                    members: m.into_iter().collect(),
                })
                .collect(),
            set_policies: vec![p0, p1, p2, p3],
            set_endpoints: vec![ep],
            ..PolicyBatch::default()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn compiled_policy_matches_the_literal_semantics(
        first in initial(),
        changes in prop::collection::vec(any_change(), 0..6),
        packets in prop::collection::vec(any_packet(), 40),
    ) {
        let mut b = Both::new();
        b.apply(first);
        for p in &packets {
            b.check(p.1, &p.0);
        }
        for c in changes {
            b.apply(c.batch());
            for p in &packets {
                b.check(p.1, &p.0);
            }
        }
    }

    /// The incremental compile (segments kept in place, only changed
    /// policies compiled again) gives the very rules, in the same order,
    /// that a fresh database compiles from the resulting state.
    #[test]
    fn incremental_compile_equals_a_fresh_one(
        first in initial(),
        changes in prop::collection::vec(any_change(), 1..10),
    ) {
        let mut b = Both::new();
        b.apply(first);
        for c in changes {
            b.apply(c.batch());
            let mut fresh = PolicyDb::new();
            let all = PolicyBatch {
                set_ip_sets: b.world.sets.iter().map(|(name, members)| IpSetSpec {
                    name: name.clone(),
                    members: members.clone(),
                }).collect(),
                set_policies: b.world.policies.values().cloned().collect(),
                set_endpoints: vec![b.ep.clone()],
                ..batch()
            };
            fresh.validate(&all, |i| i == "ep").expect("a valid state");
            fresh.apply(all, own);
            for dir in Direction::BOTH {
                prop_assert_eq!(
                    b.db.evaluation_order("ep", dir),
                    fresh.evaluation_order("ep", dir),
                    "{:?}", dir
                );
            }
        }
    }
}

impl Change {
    fn batch(self) -> PolicyBatch {
        match self {
            Change::Set(i, n) => PolicyBatch {
                set_ip_sets: vec![IpSetSpec {
                    name: SETS[i].into(),
                    members: n.into_iter().collect(),
                }],
                ..batch()
            },
            Change::Delta(i, add, remove) => PolicyBatch {
                update_ip_sets: vec![IpSetDelta {
                    name: SETS[i].into(),
                    add,
                    remove,
                }],
                ..batch()
            },
            Change::Policy(p) => PolicyBatch {
                set_policies: vec![p],
                ..batch()
            },
            Change::Endpoint(e) => PolicyBatch {
                set_endpoints: vec![e],
                ..batch()
            },
        }
    }
}
