//! The compiler against a reference: random namespaces, pods (labels,
//! addresses, named ports, some on other nodes, some on the host's
//! network, some terminated or without addresses) and NetworkPolicies
//! (selectors with every operator, ipBlocks with exceptions, numeric,
//! ranged and named ports, every form of policyTypes), and random
//! connections between pods and outside addresses.
//!
//! The reference evaluates NetworkPolicy on the objects themselves, as
//! the Kubernetes documentation states it, sharing no code with the
//! compiler; the other side runs the compiled state through the
//! [interpreter](super::interpret) of the dataplane's model. They must
//! agree on every connection. A second property checks that the diff
//! between two calculations, applied as the dataplane applies a batch,
//! turns the first into the second; a third that the incremental
//! calculator, led through a random sequence of changes, gives at every
//! step what the calculation from scratch gives.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use caracal_proto::dataplane as pb;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Namespace, Pod, PodIP, PodSpec, PodStatus,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use proptest::prelude::*;

use super::interpret::{Direction, Interpreter, Packet};
use super::{calculate, diff, DesiredPolicy, PolicyCalculator};
use crate::agent::datastore::objects::StoredKind;
use crate::agent::datastore::{Object, Objects};
use crate::agent::endpoints::{dataplane_interface_name, Endpoint, Endpoints, InterfaceKind};

type Labels = BTreeMap<String, String>;

const NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// Namespaces pods and policies live in; the last has no Namespace object.
const NAMESPACES: [&str; 3] = ["a", "b", "c"];
/// Addresses outside the pods (the last is some pod's, when there are
/// four: seen from outside, it is that pod).
const OUTSIDE: [&str; 6] = [
    "192.0.2.7",
    "10.65.0.200",
    "198.51.100.1",
    "fd00::99",
    "2001:db8::1",
    "10.65.0.4",
];
const CIDRS: [&str; 8] = [
    "10.65.0.0/16",
    "10.65.0.0/29",
    "10.65.0.4/30",
    "0.0.0.0/0",
    "192.0.2.0/24",
    "fd00::/64",
    "::/0",
    "10.65.0.3/32",
];
const EXCEPTS: [&str; 5] = [
    "10.65.0.2/32",
    "10.65.0.4/31",
    "192.0.2.0/25",
    "fd00::3/128",
    "10.65.0.0/30",
];
const PORTS: [u16; 5] = [53, 80, 81, 82, 83];

// ------------------------------------------------------------- the world

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// An endpoint on this node.
    Local,
    /// Another node: addresses in its status.
    Remote,
    HostNetwork,
    Terminated,
    /// No address yet.
    Pending,
}

#[derive(Debug, Clone)]
struct PodGen {
    namespace: usize,
    labels: Labels,
    placement: Placement,
    dual_stack: bool,
    /// (name, protocol, number)
    ports: Vec<(&'static str, &'static str, i32)>,
}

#[derive(Debug, Clone)]
struct World {
    namespaces: Vec<Labels>,
    pods: Vec<PodGen>,
    policies: Vec<NetworkPolicy>,
}

#[derive(Debug, Clone, Copy)]
enum Who {
    Pod(usize),
    Outside(usize),
}

#[derive(Debug, Clone, Copy)]
struct Query {
    src: Who,
    dst: usize,
    /// Over IPv6 (where both ends have an address of it).
    v6: bool,
    protocol: u8,
    port: u16,
}

impl PodGen {
    fn name(i: usize) -> String {
        format!("p{i}")
    }

    /// The pod's addresses, whether or not policy may see them.
    fn addresses(&self, i: usize) -> Vec<IpAddr> {
        let n = u8::try_from(i + 1).unwrap();
        match self.placement {
            Placement::Pending => vec![],
            Placement::HostNetwork => vec![IpAddr::from([192, 168, 0, n])],
            _ => {
                let mut ips = vec![IpAddr::from([10, 65, 0, n])];
                if self.dual_stack {
                    ips.push(format!("fd00::{n}").parse().unwrap());
                }
                ips
            }
        }
    }

    /// Whether policy sees the pod as one.
    fn live(&self) -> bool {
        matches!(self.placement, Placement::Local | Placement::Remote)
    }
}

impl World {
    fn ns_labels(&self, ns: usize) -> Labels {
        let mut labels = if ns < NAMESPACES.len() - 1 {
            self.namespaces[ns].clone()
        } else {
            Labels::new()
        };
        labels.insert(NAME_LABEL.into(), NAMESPACES[ns].into());
        labels
    }

    fn objects(&self) -> Objects {
        let mut objects: Vec<Object> = Vec::new();
        for (i, labels) in self
            .namespaces
            .iter()
            .enumerate()
            .take(NAMESPACES.len() - 1)
        {
            let ns = Namespace {
                metadata: ObjectMeta {
                    name: Some(NAMESPACES[i].into()),
                    labels: Some(labels.clone()),
                    ..Default::default()
                },
                ..Default::default()
            };
            objects.push(ns.into_object());
        }
        for (i, p) in self.pods.iter().enumerate() {
            let status_ips = match p.placement {
                Placement::Local | Placement::Pending => vec![],
                _ => p.addresses(i),
            };
            let pod = Pod {
                metadata: ObjectMeta {
                    name: Some(PodGen::name(i)),
                    namespace: Some(NAMESPACES[p.namespace].into()),
                    labels: Some(p.labels.clone()),
                    ..Default::default()
                },
                spec: Some(PodSpec {
                    host_network: Some(p.placement == Placement::HostNetwork),
                    containers: vec![Container {
                        name: "c".into(),
                        ports: Some(
                            p.ports
                                .iter()
                                .map(|&(name, protocol, n)| ContainerPort {
                                    name: Some(name.into()),
                                    protocol: Some(protocol.into()),
                                    container_port: n,
                                    ..Default::default()
                                })
                                .collect(),
                        ),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                status: Some(PodStatus {
                    phase: Some(
                        if p.placement == Placement::Terminated {
                            "Failed"
                        } else {
                            "Running"
                        }
                        .into(),
                    ),
                    pod_ips: Some(
                        status_ips
                            .iter()
                            .map(|ip| PodIP { ip: ip.to_string() })
                            .collect(),
                    ),
                    ..Default::default()
                }),
            };
            objects.push(pod.into_object());
        }
        for np in &self.policies {
            objects.push(np.clone().into_object());
        }
        Objects::from_objects(objects)
    }

    fn endpoints(&self) -> Endpoints {
        let mut map = BTreeMap::new();
        for (i, p) in self.pods.iter().enumerate() {
            if p.placement != Placement::Local {
                continue;
            }
            let ns = NAMESPACES[p.namespace];
            let name = PodGen::name(i);
            let ep = Endpoint {
                container_id: format!("c{i}"),
                ifname: "eth0".into(),
                netns: format!("/var/run/netns/{ns}_{name}"),
                namespace: ns.into(),
                pod: name.clone(),
                pod_uid: String::new(),
                ips: p.addresses(i).into_iter().map(IpNet::from).collect(),
                interface_kind: InterfaceKind::Tap,
                socket_path: None,
                memif: None,
                dataplane_interface: dataplane_interface_name(ns, &name, "eth0"),
                mtu: 1500,
            };
            map.insert(ep.key(), ep);
        }
        Arc::new(map)
    }

    fn interface(&self, pod: usize) -> Option<String> {
        let p = &self.pods[pod];
        (p.placement == Placement::Local)
            .then(|| dataplane_interface_name(NAMESPACES[p.namespace], &PodGen::name(pod), "eth0"))
    }

    /// The packet of a query, if its ends have addresses of one family.
    fn packet(&self, q: &Query) -> Option<Packet> {
        let family = |ip: &IpAddr| ip.is_ipv6() == q.v6;
        let dst = self.pods[q.dst].addresses(q.dst).into_iter().find(family)?;
        let candidates: Vec<IpAddr> = match q.src {
            Who::Pod(i) => self.pods[i].addresses(i),
            Who::Outside(i) => vec![OUTSIDE[i].parse().unwrap()],
        };
        let src = candidates.into_iter().find(family)?;
        Some(Packet {
            src,
            dst,
            protocol: q.protocol,
            src_port: 40000,
            dst_port: q.port,
        })
    }
}

// ------------------------------------------------------------ reference

fn selects(selector: Option<&LabelSelector>, labels: &Labels) -> bool {
    let Some(s) = selector else { return true };
    let labels_ok = s
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = s.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            op => panic!("operator {op}"),
        }
    });
    labels_ok && exprs_ok
}

fn in_cidr(cidr: &str, ip: IpAddr) -> bool {
    cidr.parse::<IpNet>().unwrap().contains(&ip)
}

fn protocol_of(name: Option<&str>) -> u8 {
    match name.unwrap_or("TCP") {
        "TCP" => 6,
        "UDP" => 17,
        "SCTP" => 132,
        other => panic!("protocol {other}"),
    }
}

/// What the reference knows of the other end of a connection.
struct End<'w> {
    ip: IpAddr,
    /// The live pod with that address.
    pod: Option<(usize, &'w PodGen)>,
}

impl World {
    fn end(&self, ip: IpAddr) -> End<'_> {
        let pod = self
            .pods
            .iter()
            .enumerate()
            .find(|(i, p)| p.live() && p.addresses(*i).contains(&ip));
        End { ip, pod }
    }

    fn policy_types(spec: &NetworkPolicySpec) -> (bool, bool) {
        match spec.policy_types.as_deref() {
            Some(t) if !t.is_empty() => (
                t.contains(&"Ingress".to_owned()),
                t.contains(&"Egress".to_owned()),
            ),
            _ => (true, spec.egress.as_ref().is_some_and(|e| !e.is_empty())),
        }
    }

    fn peer_matches(&self, policy_ns: &str, peer: &NetworkPolicyPeer, end: &End<'_>) -> bool {
        if let Some(block) = &peer.ip_block {
            return in_cidr(&block.cidr, end.ip)
                && !block.except.iter().flatten().any(|e| in_cidr(e, end.ip));
        }
        let Some((_, pod)) = end.pod else {
            return false;
        };
        let ns_ok = match &peer.namespace_selector {
            None => NAMESPACES[pod.namespace] == policy_ns,
            Some(s) => selects(Some(s), &self.ns_labels(pod.namespace)),
        };
        ns_ok && selects(peer.pod_selector.as_ref(), &pod.labels)
    }

    /// Whether a `ports` entry lets `protocol`/`port` to `target` through.
    fn port_matches(
        p: &NetworkPolicyPort,
        protocol: u8,
        port: u16,
        target: Option<&PodGen>,
    ) -> bool {
        let proto = protocol_of(p.protocol.as_deref());
        if proto != protocol {
            return false;
        }
        match &p.port {
            None => true,
            Some(IntOrString::Int(n)) => {
                let end = p.end_port.unwrap_or(*n);
                (*n..=end).contains(&i32::from(port))
            }
            Some(IntOrString::String(name)) => target.is_some_and(|t| {
                t.ports.iter().any(|&(n, pr, number)| {
                    n == name && protocol_of(Some(pr)) == proto && number == i32::from(port)
                })
            }),
        }
    }

    /// Whether the policies of pod `subject` let a connection through in
    /// `direction`: `peer` is the other end, `target` the destination pod.
    fn direction_allows(
        &self,
        subject: usize,
        direction: Direction,
        peer: &End<'_>,
        target: Option<&PodGen>,
        protocol: u8,
        port: u16,
    ) -> bool {
        let pod = &self.pods[subject];
        let ns = NAMESPACES[pod.namespace];
        let mut isolated = false;
        for np in &self.policies {
            if np.metadata.namespace.as_deref() != Some(ns) {
                continue;
            }
            let spec = np.spec.clone().unwrap_or_default();
            if !selects(
                Some(&spec.pod_selector.clone().unwrap_or_default()),
                &pod.labels,
            ) {
                continue;
            }
            let (ingress, egress) = Self::policy_types(&spec);
            let rules: Vec<RuleGen> = match direction {
                Direction::Ingress if ingress => spec
                    .ingress
                    .iter()
                    .flatten()
                    .map(|r| (r.from.clone(), r.ports.clone()))
                    .collect(),
                Direction::Egress if egress => spec
                    .egress
                    .iter()
                    .flatten()
                    .map(|r| (r.to.clone(), r.ports.clone()))
                    .collect(),
                _ => continue,
            };
            isolated = true;
            for (peers, ports) in rules {
                let peers = peers.unwrap_or_default();
                let ports = ports.unwrap_or_default();
                let peer_ok =
                    peers.is_empty() || peers.iter().any(|p| self.peer_matches(ns, p, peer));
                let port_ok = ports.is_empty()
                    || ports
                        .iter()
                        .any(|p| Self::port_matches(p, protocol, port, target));
                if peer_ok && port_ok {
                    return true;
                }
            }
        }
        !isolated
    }

    fn reference(&self, q: &Query, packet: &Packet) -> bool {
        let src = self.end(packet.src);
        let dst = self.end(packet.dst);
        let dst_pod = dst.pod.map(|(_, p)| p);
        let egress = match src.pod {
            Some((i, p)) if p.placement == Placement::Local => {
                self.direction_allows(i, Direction::Egress, &dst, dst_pod, q.protocol, q.port)
            }
            _ => true,
        };
        let ingress = match dst.pod {
            Some((i, p)) if p.placement == Placement::Local => {
                self.direction_allows(i, Direction::Ingress, &src, dst_pod, q.protocol, q.port)
            }
            _ => true,
        };
        egress && ingress
    }

    fn compiled(&self, state: &pb::PolicyState, packet: &Packet) -> bool {
        let dp = Interpreter::new(state);
        // The interface a packet comes in on is the endpoint's that has
        // its source address.
        let src_iface = self
            .end(packet.src)
            .pod
            .and_then(|(i, _)| self.interface(i));
        let dst_iface = self
            .end(packet.dst)
            .pod
            .and_then(|(i, _)| self.interface(i));
        src_iface.is_none_or(|i| dp.allows(&i, Direction::Egress, packet))
            && dst_iface.is_none_or(|i| dp.allows(&i, Direction::Ingress, packet))
    }
}

// ------------------------------------------------------------ strategies

fn labels_from(
    keys: &'static [&'static str],
    values: &'static [&'static str],
) -> impl Strategy<Value = Labels> {
    proptest::collection::btree_map(
        proptest::sample::select(keys).prop_map(str::to_owned),
        proptest::sample::select(values).prop_map(str::to_owned),
        0..3,
    )
}

const POD_KEYS: [&str; 3] = ["app", "tier", "env"];
const NS_KEYS: [&str; 3] = ["team", "env", NAME_LABEL];
const VALUES: [&str; 5] = ["x", "y", "a", "b", "c"];

fn selector(keys: &'static [&'static str]) -> impl Strategy<Value = LabelSelector> {
    let values = &VALUES[..3];
    let expr = (
        proptest::sample::select(keys),
        0..4usize,
        proptest::collection::btree_set(proptest::sample::select(values), 1..3),
    )
        .prop_map(|(key, op, values)| {
            let (operator, values) = match op {
                0 => ("In", Some(values)),
                1 => ("NotIn", Some(values)),
                2 => ("Exists", None),
                _ => ("DoesNotExist", None),
            };
            LabelSelectorRequirement {
                key: key.into(),
                operator: operator.into(),
                values: values.map(|v| v.into_iter().map(str::to_owned).collect()),
            }
        });
    let match_labels = proptest::collection::btree_map(
        proptest::sample::select(keys).prop_map(str::to_owned),
        proptest::sample::select(values).prop_map(str::to_owned),
        1..2,
    );
    (
        proptest::option::weighted(0.4, match_labels),
        proptest::option::weighted(0.5, proptest::collection::vec(expr, 0..3)),
    )
        .prop_map(|(match_labels, match_expressions)| LabelSelector {
            match_labels,
            match_expressions,
        })
}

fn peer() -> impl Strategy<Value = NetworkPolicyPeer> {
    prop_oneof![
        selector(&POD_KEYS).prop_map(|s| NetworkPolicyPeer {
            pod_selector: Some(s),
            ..Default::default()
        }),
        selector(&NS_KEYS).prop_map(|s| NetworkPolicyPeer {
            namespace_selector: Some(s),
            ..Default::default()
        }),
        (selector(&NS_KEYS), selector(&POD_KEYS)).prop_map(|(n, p)| NetworkPolicyPeer {
            namespace_selector: Some(n),
            pod_selector: Some(p),
            ..Default::default()
        }),
        (
            proptest::sample::select(&CIDRS[..]),
            proptest::option::of(proptest::sample::subsequence(&EXCEPTS[..], 0..3)),
        )
            .prop_map(|(cidr, except)| NetworkPolicyPeer {
                ip_block: Some(IPBlock {
                    cidr: cidr.into(),
                    except: except.map(|e| e.into_iter().map(str::to_owned).collect()),
                }),
                ..Default::default()
            }),
    ]
}

fn port() -> impl Strategy<Value = NetworkPolicyPort> {
    let protocol = proptest::option::of(proptest::sample::select(&["TCP", "UDP", "SCTP"][..]));
    let number = prop_oneof![
        1 => Just((None, None)),
        2 => (proptest::sample::select(&PORTS[..3]), proptest::option::of(0..3i32)).prop_map(
            |(n, span)| (
                Some(IntOrString::Int(i32::from(n))),
                span.map(|s| i32::from(n) + s)
            )
        ),
        2 => proptest::sample::select(&["http", "dns", "http", "dns", "nope"][..])
            .prop_map(|n| (Some(IntOrString::String(n.into())), None)),
    ];
    (protocol, number).prop_map(|(protocol, (port, end_port))| NetworkPolicyPort {
        protocol: protocol.map(str::to_owned),
        port,
        end_port,
    })
}

type RuleGen = (
    Option<Vec<NetworkPolicyPeer>>,
    Option<Vec<NetworkPolicyPort>>,
);

/// A list that is mostly there and not empty: absent and empty lists
/// mean "everything" in a rule, which says little when it is common.
fn mostly<T: std::fmt::Debug + Clone>(
    item: impl Strategy<Value = T>,
    len: std::ops::Range<usize>,
) -> impl Strategy<Value = Option<Vec<T>>> {
    prop_oneof![
        1 => Just(None),
        1 => Just(Some(Vec::new())),
        6 => proptest::collection::vec(item, len).prop_map(Some),
    ]
}

fn rules() -> impl Strategy<Value = Option<Vec<RuleGen>>> {
    mostly((mostly(peer(), 1..3), mostly(port(), 1..3)), 1..4)
}

fn policy(index: usize) -> impl Strategy<Value = NetworkPolicy> {
    let types = prop_oneof![
        Just(None),
        Just(Some(vec![])),
        Just(Some(vec!["Ingress"])),
        Just(Some(vec!["Egress"])),
        Just(Some(vec!["Ingress", "Egress"])),
    ];
    (
        0..NAMESPACES.len(),
        selector(&POD_KEYS),
        types,
        rules(),
        rules(),
    )
        .prop_map(
            move |(ns, pod_selector, types, ingress, egress)| NetworkPolicy {
                metadata: ObjectMeta {
                    name: Some(format!("np{index}")),
                    namespace: Some(NAMESPACES[ns].into()),
                    ..Default::default()
                },
                spec: Some(NetworkPolicySpec {
                    pod_selector: Some(pod_selector),
                    policy_types: types.map(|t| t.into_iter().map(str::to_owned).collect()),
                    ingress: ingress.map(|rules| {
                        rules
                            .into_iter()
                            .map(|(from, ports)| NetworkPolicyIngressRule { from, ports })
                            .collect()
                    }),
                    egress: egress.map(|rules| {
                        rules
                            .into_iter()
                            .map(|(to, ports)| NetworkPolicyEgressRule { to, ports })
                            .collect()
                    }),
                }),
            },
        )
}

fn pod() -> impl Strategy<Value = PodGen> {
    let placement = prop_oneof![
        6 => Just(Placement::Local),
        2 => Just(Placement::Remote),
        1 => Just(Placement::HostNetwork),
        1 => Just(Placement::Terminated),
        1 => Just(Placement::Pending),
    ];
    let named = |name: &'static str| {
        proptest::option::of((
            Just(name),
            proptest::sample::select(&["TCP", "UDP"][..]),
            proptest::sample::select(&[53, 80, 81][..]),
        ))
    };
    (
        0..NAMESPACES.len(),
        labels_from(&POD_KEYS, &VALUES[..3]),
        placement,
        proptest::bool::weighted(0.3),
        named("http"),
        named("dns"),
    )
        .prop_map(
            |(namespace, labels, placement, dual_stack, http, dns)| PodGen {
                namespace,
                labels,
                placement,
                dual_stack,
                ports: http.into_iter().chain(dns).collect(),
            },
        )
}

fn world() -> impl Strategy<Value = World> {
    (
        proptest::collection::vec(labels_from(&NS_KEYS[..2], &VALUES[..2]), 2),
        proptest::collection::vec(pod(), 1..8),
        (0..5usize).prop_flat_map(|n| (0..n).map(policy).collect::<Vec<_>>()),
    )
        .prop_map(|(namespaces, pods, policies)| World {
            namespaces,
            pods,
            policies,
        })
}

fn queries() -> impl Strategy<Value = Vec<Query>> {
    let who = prop_oneof![
        3 => (0..8usize).prop_map(Who::Pod),
        1 => (0..OUTSIDE.len()).prop_map(Who::Outside),
    ];
    proptest::collection::vec(
        (
            who,
            0..8usize,
            proptest::bool::weighted(0.25),
            prop_oneof![4 => Just(6u8), 2 => Just(17), 1 => Just(132), 1 => Just(1)],
            proptest::sample::select(&PORTS[..4]),
        )
            .prop_map(|(src, dst, v6, protocol, port)| Query {
                src,
                dst,
                v6,
                protocol,
                port,
            }),
        1..24,
    )
}

// -------------------------------------------------------------- batches

/// What a dataplane does with a batch.
fn apply(state: &mut DesiredPolicy, batch: &pb::PolicyBatch) {
    let net = |m: &String| super::parse_net(m).unwrap();
    for set in &batch.set_ip_sets {
        state
            .ip_sets
            .insert(set.name.clone(), set.members.iter().map(net).collect());
    }
    for delta in &batch.update_ip_sets {
        let set = state
            .ip_sets
            .get_mut(&delta.name)
            .expect("delta of a set that exists");
        for m in &delta.remove {
            assert!(set.remove(&net(m)), "removing {m}, not a member");
        }
        for m in &delta.add {
            assert!(set.insert(net(m)), "adding {m}, a member already");
        }
    }
    for p in &batch.set_policies {
        state.policies.insert(p.name.clone(), Arc::new(p.clone()));
    }
    for e in &batch.set_endpoints {
        state.endpoints.insert(e.interface.clone(), e.clone());
    }
    for p in &batch.delete_policies {
        assert!(state.policies.remove(p).is_some());
    }
    for s in &batch.delete_ip_sets {
        assert!(state.ip_sets.remove(s).is_some());
    }
}

/// Every name the attachments and rules use exists, and every IP set is
/// used.
fn references_resolve(state: &DesiredPolicy) {
    for ep in state.endpoints.values() {
        for tier in ep.ingress.iter().chain(&ep.egress) {
            for p in &tier.policies {
                assert!(state.policies.contains_key(p), "{}: {p}", ep.interface);
            }
        }
    }
    let mut used = std::collections::BTreeSet::new();
    for p in state.policies.values() {
        for rule in p.ingress.iter().chain(&p.egress) {
            for m in rule.source.iter().chain(&rule.destination) {
                for s in m.ip_sets.iter().chain(&m.not_ip_sets) {
                    assert!(state.ip_sets.contains_key(s), "{}: {s}", rule.id);
                    used.insert(s);
                }
            }
        }
    }
    let unused: Vec<_> = state.ip_sets.keys().filter(|s| !used.contains(s)).collect();
    assert!(unused.is_empty(), "unused IP sets {unused:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn the_compiled_model_agrees_with_the_reference(w in world(), qs in queries()) {
        let desired = calculate(&w.objects(), &w.endpoints());
        references_resolve(&desired);
        let state = desired.to_state();
        let n = w.pods.len();
        for q in qs {
            let src = match q.src {
                Who::Pod(i) => Who::Pod(i % n),
                outside => outside,
            };
            let q = Query { src, dst: q.dst % n, ..q };
            let Some(packet) = w.packet(&q) else { continue };
            let want = w.reference(&q, &packet);
            let got = w.compiled(&state, &packet);
            prop_assert_eq!(got, want, "{:?} {:?}\ncompiled: {:#?}", q, packet, desired);
        }
    }

}

proptest! {
    // Two calculations a case, and the first property has covered them.
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn a_diff_applied_turns_one_calculation_into_the_next(a in world(), b in world()) {
        let old = calculate(&a.objects(), &a.endpoints());
        let new = calculate(&b.objects(), &b.endpoints());
        let batch = diff(&old, &new);
        let mut state = old.clone();
        apply(&mut state, &batch);
        // Attachments of interfaces that go are the interfaces' to drop.
        state.endpoints.retain(|k, _| new.endpoints.contains_key(k));
        prop_assert_eq!(&state, &new);
        references_resolve(&state);
        prop_assert!(super::diff::is_empty(&diff(&new, &new)));
        prop_assert_eq!(calculate(&b.objects(), &b.endpoints()), new);
    }
}

// ------------------------------------------------------------ increments

/// Which of two worlds each part of a mix comes from.
#[derive(Debug, Clone)]
struct Mix {
    namespaces: Vec<bool>,
    pods: Vec<bool>,
    policies: Vec<bool>,
    /// Pods and policies kept (of the longer list).
    pods_len: usize,
    policies_len: usize,
}

impl World {
    /// `self` with some of `other`'s parts, as `mix` says: a change of a
    /// few namespace labels, pods (labels, addresses, ports, placement —
    /// which moves endpoints) and policies, with pods and policies added
    /// or removed at the end.
    fn mixed(&self, other: &World, mix: &Mix) -> World {
        let pick = |i: usize, flags: &[bool], len_a: usize, len_b: usize| -> Option<bool> {
            let from_other = flags.get(i).copied().unwrap_or(false);
            match (i < len_a, i < len_b) {
                (true, true) => Some(from_other),
                (true, false) => Some(false),
                (false, true) => Some(true),
                (false, false) => None,
            }
        };
        let namespaces = (0..self.namespaces.len())
            .map(|i| {
                if mix.namespaces.get(i).copied().unwrap_or(false) {
                    other.namespaces[i].clone()
                } else {
                    self.namespaces[i].clone()
                }
            })
            .collect();
        let pods_len = mix.pods_len.clamp(1, self.pods.len().max(other.pods.len()));
        let pods = (0..pods_len)
            .filter_map(|i| {
                let from_other = pick(i, &mix.pods, self.pods.len(), other.pods.len())?;
                Some(
                    if from_other {
                        &other.pods[i]
                    } else {
                        &self.pods[i]
                    }
                    .clone(),
                )
            })
            .collect();
        let policies_len = mix
            .policies_len
            .min(self.policies.len().max(other.policies.len()));
        let policies = (0..policies_len)
            .filter_map(|i| {
                let from_other = pick(i, &mix.policies, self.policies.len(), other.policies.len())?;
                Some(
                    if from_other {
                        &other.policies[i]
                    } else {
                        &self.policies[i]
                    }
                    .clone(),
                )
            })
            .collect();
        World {
            namespaces,
            pods,
            policies,
        }
    }
}

fn mix() -> impl Strategy<Value = Mix> {
    let flags = |n| proptest::collection::vec(proptest::bool::weighted(0.2), n);
    (flags(2), flags(8), flags(5), 1..9usize, 0..6usize).prop_map(
        |(namespaces, pods, policies, pods_len, policies_len)| Mix {
            namespaces,
            pods,
            policies,
            pods_len,
            policies_len,
        },
    )
}

/// `objects` sharing what it can with `before`, as the store's snapshots
/// do: the same map for an unchanged kind, the same object for an
/// unchanged one.
fn shared(before: &Objects, objects: Objects) -> Objects {
    let reused = objects.iter().map(|o| match before.get(&o.key()) {
        Some(old) if old == o => old.clone(),
        _ => o.clone(),
    });
    let fresh = Objects::from_objects(reused);
    if fresh == *before {
        before.clone()
    } else {
        fresh
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn the_incremental_calculator_follows_the_calculation(
        first in world(),
        steps in proptest::collection::vec((world(), mix()), 1..6),
    ) {
        let mut calculator = PolicyCalculator::new();
        let mut objects = first.objects();
        let mut endpoints = first.endpoints();
        prop_assert_eq!(calculator.update(&objects, &endpoints), &calculate(&objects, &endpoints));
        let mut world = first;
        for (other, mix) in steps {
            world = world.mixed(&other, &mix);
            objects = shared(&objects, world.objects());
            let fresh = world.endpoints();
            if fresh != endpoints {
                endpoints = fresh;
            }
            let want = calculate(&objects, &endpoints);
            prop_assert_eq!(calculator.update(&objects, &endpoints), &want, "{:#?}", world);
        }
        // Back to nothing: nothing is left behind.
        let empty = Objects::default();
        prop_assert_eq!(calculator.update(&empty, &endpoints), &calculate(&empty, &endpoints));
    }
}
