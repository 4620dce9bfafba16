//! The NetworkPolicy compiler: from the datastore's objects and this
//! node's endpoints to the [`DesiredPolicy`] that enforces Kubernetes
//! NetworkPolicy (`networking.k8s.io/v1`) on them. Pure and IO-free.
//!
//! # Semantics
//!
//! - A policy selects the pods of its namespace that its `podSelector`
//!   matches. Its `policyTypes` default to `Ingress`, plus `Egress` when it
//!   has egress rules; rules of a direction it does not list are ignored.
//! - A pod selected by a policy of a direction is isolated in that
//!   direction: its endpoint gets tier [`TIER`] with every such policy and
//!   end action DENY, so only what some rule allows passes. A pod selected
//!   by none keeps no tier there, and the endpoint default ALLOW. The
//!   dataplane evaluates egress at the source endpoint and ingress at the
//!   destination endpoint, so a connection needs both.
//! - A rule allows traffic from (to) any of its peers on any of its ports;
//!   no peers means any address, no ports means any protocol and port.
//! - A pod peer is the pods its selectors match: `podSelector` alone in the
//!   policy's namespace, `namespaceSelector` in the namespaces it matches
//!   (with the pods `podSelector` matches, or all). They become IP sets of
//!   the pods' addresses, shared by every rule with the same selector pair.
//!   An `ipBlock` is its CIDR minus its exceptions, and like Calico's it
//!   matches pod addresses as well as others.
//! - A port is a protocol (default TCP) and a number, a range
//!   (`endPort`), or a name. A name means, for each pod, the number of the
//!   container port of that name and protocol: for ingress, on the
//!   destination, which is the selected pod itself; for egress, on the
//!   destination pod. Pods are grouped by the number their name resolves
//!   to, and each group becomes a rule (port = that number, destination in
//!   an IP set of the group's pods): a named port never matches an address
//!   that is not a pod's, nor a pod without that port.
//! - A pod contributes its addresses to IP sets unless it uses the host's
//!   network, has none, or has terminated (`Succeeded`/`Failed`, whose
//!   addresses may belong to another pod by now). A pod with endpoints on
//!   this node has their addresses; any other pod those of its status.
//! - An endpoint whose pod is not in the datastore denies both ways.
//!
//! What the API server would refuse (an unknown selector operator, a
//! malformed CIDR, `endPort` without a numeric port, an unknown protocol)
//! allows nothing: such a peer or port matches nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use caracal_proto::dataplane as pb;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::{NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;

use super::selector::{Labels, Selector};
use super::{parse_net, DesiredPolicy, TIER};
use crate::agent::datastore::{Kind, Object, Objects};
use crate::agent::endpoints::{Endpoint, Endpoints};

/// The label the API server gives every namespace, with its name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// IP protocol numbers (IANA).
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const SCTP: u8 = 132;

/// The protocol number of a Kubernetes protocol name (TCP when absent);
/// `None` for one Kubernetes does not define.
pub fn protocol_number(name: Option<&str>) -> Option<u8> {
    match name {
        None | Some("TCP") => Some(TCP),
        Some("UDP") => Some(UDP),
        Some("SCTP") => Some(SCTP),
        Some(_) => None,
    }
}

/// The policy name of NetworkPolicy `namespace/name`.
pub fn policy_name(namespace: &str, name: &str) -> String {
    format!("knp.{namespace}.{name}")
}

/// Policy for every endpoint in `endpoints`, from the NetworkPolicies,
/// pods and namespaces in `objects`.
pub fn calculate(objects: &Objects, endpoints: &Endpoints) -> DesiredPolicy {
    let cluster = Cluster::new(objects, endpoints);
    let mut sets = IpSets::new(&cluster);
    let mut policies = BTreeMap::new();
    // Per namespace: each policy's name, selector and directions.
    let mut selecting: BTreeMap<&str, Vec<Attachment>> = BTreeMap::new();
    for object in objects.of_kind(Kind::NetworkPolicy) {
        let Object::NetworkPolicy(np) = object else {
            continue;
        };
        let namespace = objects_namespace(object);
        let name = np.metadata.name.as_deref().unwrap_or_default();
        let spec = np.spec.clone().unwrap_or_default();
        let (policy, attachment) = compile_policy(namespace, name, &spec, &mut sets);
        policies.insert(policy.name.clone(), Arc::new(policy));
        selecting.entry(namespace).or_default().extend(attachment);
    }
    let endpoints = endpoints
        .values()
        .map(|ep| {
            let labels = cluster.pod_labels(&ep.namespace, &ep.pod);
            let attachments = selecting.get(ep.namespace.as_str()).into_iter().flatten();
            let policy = endpoint_policy(ep, labels, attachments);
            (ep.dataplane_interface.clone(), policy)
        })
        .collect();
    DesiredPolicy {
        ip_sets: sets.into_sets(),
        policies,
        endpoints,
    }
}

/// NetworkPolicy `namespace/name`: its policy, and which endpoints it
/// attaches to (none for an invalid pod selector).
pub(super) fn compile_policy(
    namespace: &str,
    name: &str,
    spec: &NetworkPolicySpec,
    sets: &mut impl SetRegistry,
) -> (pb::PolicySpec, Option<Attachment>) {
    let name = policy_name(namespace, name);
    let (ingress, egress) = policy_types(spec);
    let selector = Selector::new(&spec.pod_selector.clone().unwrap_or_default()).ok();
    let own = PodScope {
        namespaces: Namespaces::Named(namespace.to_owned()),
        pods: selector.clone(),
    };
    let compiler = |direction| RuleCompiler {
        policy: &name,
        namespace,
        own: &own,
        direction,
    };
    let mut policy = pb::PolicySpec {
        name: name.clone(),
        ..Default::default()
    };
    // The rules of a direction the policy does not apply to are ignored.
    if ingress {
        let c = compiler(Direction::Ingress);
        for (i, r) in spec.ingress.iter().flatten().enumerate() {
            let rules = c.rule(i, r.from.as_deref(), r.ports.as_deref(), sets);
            policy.ingress.extend(rules);
        }
    }
    if egress {
        let c = compiler(Direction::Egress);
        for (i, r) in spec.egress.iter().flatten().enumerate() {
            let rules = c.rule(i, r.to.as_deref(), r.ports.as_deref(), sets);
            policy.egress.extend(rules);
        }
    }
    let attachment = selector.map(|selector| Attachment {
        policy: name,
        selector,
        ingress,
        egress,
    });
    (policy, attachment)
}

/// The namespace of a namespaced object, borrowed from it.
fn objects_namespace(object: &Object) -> &str {
    object.metadata().namespace.as_deref().unwrap_or("default")
}

/// Whether the policy applies to ingress and to egress.
fn policy_types(spec: &NetworkPolicySpec) -> (bool, bool) {
    match spec.policy_types.as_deref() {
        None | Some([]) => (true, spec.egress.as_ref().is_some_and(|e| !e.is_empty())),
        Some(types) => (
            types.iter().any(|t| t == "Ingress"),
            types.iter().any(|t| t == "Egress"),
        ),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// A policy as the endpoints see it.
#[derive(Debug)]
pub(super) struct Attachment {
    policy: String,
    selector: Selector,
    ingress: bool,
    egress: bool,
}

/// The attachment of endpoint `ep`, whose pod has `labels` (`None`: not
/// in the datastore), from the attachments of its namespace's policies in
/// policy name order.
pub(super) fn endpoint_policy<'a>(
    ep: &Endpoint,
    labels: Option<&Labels>,
    attachments: impl Iterator<Item = &'a Attachment>,
) -> pb::EndpointPolicy {
    let interface = ep.dataplane_interface.clone();
    let Some(labels) = labels else {
        // Not a pod the agent knows: nothing in or out.
        return pb::EndpointPolicy {
            interface,
            ingress: Vec::new(),
            egress: Vec::new(),
            ingress_default: pb::Action::Deny as i32,
            egress_default: pb::Action::Deny as i32,
        };
    };
    let mut ingress = Vec::new();
    let mut egress = Vec::new();
    for a in attachments {
        if a.selector.matches(labels) {
            if a.ingress {
                ingress.push(a.policy.clone());
            }
            if a.egress {
                egress.push(a.policy.clone());
            }
        }
    }
    let tier = |policies: Vec<String>| -> Vec<pb::Tier> {
        if policies.is_empty() {
            return Vec::new();
        }
        vec![pb::Tier {
            name: TIER.to_owned(),
            policies,
            end_action: pb::Action::Deny as i32,
        }]
    };
    pb::EndpointPolicy {
        interface,
        ingress: tier(ingress),
        egress: tier(egress),
        ingress_default: pb::Action::Allow as i32,
        egress_default: pb::Action::Allow as i32,
    }
}

// ------------------------------------------------------------ the cluster

/// A pod that has addresses policy can see.
#[derive(Debug)]
struct LivePod<'a> {
    namespace: &'a str,
    labels: &'a Labels,
    addresses: BTreeSet<IpNet>,
    pod: &'a Pod,
}

/// The number of `pod`'s container port named `name` for `protocol`.
pub(super) fn named_port(pod: &Pod, name: &str, protocol: u8) -> Option<u16> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| {
            p.name.as_deref() == Some(name)
                && protocol_number(p.protocol.as_deref()) == Some(protocol)
        })
        .and_then(|p| u16::try_from(p.container_port).ok())
        .filter(|&n| n != 0)
}

/// The snapshot indexed for the compiler.
#[derive(Debug)]
struct Cluster<'a> {
    /// Labels of every namespace a namespace object or a pod names.
    namespaces: BTreeMap<&'a str, Labels>,
    /// Labels of every pod, by namespace and name.
    pods: BTreeMap<(&'a str, &'a str), &'a Labels>,
    live: Vec<LivePod<'a>>,
}

/// Labels of a pod without any.
pub(super) static NO_LABELS: Labels = Labels::new();

impl<'a> Cluster<'a> {
    fn new(objects: &'a Objects, endpoints: &'a Endpoints) -> Self {
        let mut local: BTreeMap<(&str, &str), BTreeSet<IpNet>> = BTreeMap::new();
        for ep in endpoints.values() {
            local
                .entry((ep.namespace.as_str(), ep.pod.as_str()))
                .or_default()
                .extend(ep.ips.iter().map(IpNet::trunc));
        }
        let mut namespaces = BTreeMap::new();
        for object in objects.of_kind(Kind::Namespace) {
            let name = object.metadata().name.as_deref().unwrap_or_default();
            namespaces.insert(
                name,
                namespace_labels(name, object.metadata().labels.as_ref()),
            );
        }
        let mut pods = BTreeMap::new();
        let mut live = Vec::new();
        for object in objects.of_kind(Kind::Pod) {
            let Object::Pod(pod) = object else { continue };
            let namespace = objects_namespace(object);
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            let labels = pod.metadata.labels.as_ref().unwrap_or(&NO_LABELS);
            namespaces
                .entry(namespace)
                .or_insert_with(|| namespace_labels(namespace, None));
            pods.insert((namespace, name), labels);
            let addresses = pod_addresses(pod, local.get(&(namespace, name)));
            if !addresses.is_empty() {
                live.push(LivePod {
                    namespace,
                    labels,
                    addresses,
                    pod,
                });
            }
        }
        Cluster {
            namespaces,
            pods,
            live,
        }
    }

    fn pod_labels(&self, namespace: &str, name: &str) -> Option<&'a Labels> {
        self.pods.get(&(namespace, name)).copied()
    }

    /// The live pods `scope` selects.
    fn select<'s>(&'s self, scope: &'s PodScope) -> impl Iterator<Item = &'s LivePod<'a>> + 's {
        self.live
            .iter()
            .filter(move |p| scope.matches(p.namespace, || &self.namespaces[p.namespace], p.labels))
    }
}

/// A namespace's labels, with the one the API server adds.
pub(super) fn namespace_labels(name: &str, labels: Option<&Labels>) -> Labels {
    let mut all = labels.cloned().unwrap_or_default();
    all.insert(NAMESPACE_NAME_LABEL.to_owned(), name.to_owned());
    all
}

/// The addresses policy sees for `pod`: those of its endpoints on this
/// node if it has any, else those of its status.
pub(super) fn pod_addresses(pod: &Pod, local: Option<&BTreeSet<IpNet>>) -> BTreeSet<IpNet> {
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    let status = pod.status.as_ref();
    let terminated = matches!(
        status.and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    if host_network || terminated {
        return BTreeSet::new();
    }
    if let Some(local) = local.filter(|l| !l.is_empty()) {
        return local.clone();
    }
    let Some(status) = status else {
        return BTreeSet::new();
    };
    status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.as_str())
        .chain(status.pod_ip.as_deref())
        .filter_map(parse_net)
        .collect()
}

// --------------------------------------------------------------- IP sets

/// Which namespaces a peer's pods are in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub(super) enum Namespaces {
    /// The policy's own.
    Named(String),
    /// Those a namespace selector matches (`None`: an invalid one, none).
    Selected(Option<Selector>),
}

/// A selector pair: pods in some namespaces (`None`: an invalid pod
/// selector, no pod).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub(super) struct PodScope {
    pub(super) namespaces: Namespaces,
    pub(super) pods: Option<Selector>,
}

impl PodScope {
    /// Every pod in the cluster.
    fn all() -> Self {
        PodScope {
            namespaces: Namespaces::Selected(Some(Selector::everything())),
            pods: Some(Selector::everything()),
        }
    }

    /// Whether the scope selects a pod of namespace `namespace` with
    /// `labels`; `namespace_labels` gives the namespace's labels, looked
    /// up only for a namespace selector.
    pub(super) fn matches<'l>(
        &self,
        namespace: &str,
        namespace_labels: impl FnOnce() -> &'l Labels,
        labels: &Labels,
    ) -> bool {
        let Some(pods) = &self.pods else {
            return false;
        };
        self.namespace_matches(namespace, namespace_labels) && pods.matches(labels)
    }

    /// Whether the scope selects pods of namespace `namespace` at all.
    pub(super) fn namespace_matches<'l>(
        &self,
        namespace: &str,
        namespace_labels: impl FnOnce() -> &'l Labels,
    ) -> bool {
        match &self.namespaces {
            Namespaces::Named(n) => n == namespace,
            Namespaces::Selected(None) => false,
            Namespaces::Selected(Some(s)) => s.matches(namespace_labels()),
        }
    }

    /// `sel:<hash>`: see the module `policy`.
    pub(super) fn set_name(&self) -> String {
        let canonical = serde_json::to_vec(self).expect("a scope serializes");
        let digest = ring::digest::digest(&ring::digest::SHA256, &canonical);
        let hex: String = digest.as_ref()[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("sel:{hex}")
    }
}

/// Where the rule compiler gets the IP sets its rules name: each call
/// makes sure the set exists (with its members) and returns its name.
pub(super) trait SetRegistry {
    /// The set of the pods `scope` selects.
    fn pods(&mut self, scope: &PodScope) -> String;

    /// The sets of the pods `scope` selects, by the number their port
    /// `name`/`protocol` has; pods without it are in none.
    fn named_port(&mut self, scope: &PodScope, protocol: u8, name: &str) -> BTreeMap<u16, String>;
}

/// The name of the group of a named port's set: see the module `policy`.
pub(super) fn named_port_set(base: &str, protocol: u8, name: &str, number: u16) -> String {
    let proto = match protocol {
        TCP => "tcp",
        UDP => "udp",
        SCTP => "sctp",
        _ => unreachable!("named ports are for TCP, UDP and SCTP"),
    };
    format!("{base}:{proto}:{name}:{number}")
}

/// The IP sets the compiled rules use, filled on first use.
#[derive(Debug)]
struct IpSets<'c> {
    cluster: &'c Cluster<'c>,
    sets: BTreeMap<String, BTreeSet<IpNet>>,
}

impl<'c> IpSets<'c> {
    fn new(cluster: &'c Cluster<'c>) -> Self {
        IpSets {
            cluster,
            sets: BTreeMap::new(),
        }
    }

    fn into_sets(self) -> BTreeMap<String, BTreeSet<IpNet>> {
        self.sets
    }
}

impl SetRegistry for IpSets<'_> {
    fn pods(&mut self, scope: &PodScope) -> String {
        let name = scope.set_name();
        if !self.sets.contains_key(&name) {
            let members = self
                .cluster
                .select(scope)
                .flat_map(|p| p.addresses.iter().copied())
                .collect();
            self.sets.insert(name.clone(), members);
        }
        name
    }

    fn named_port(&mut self, scope: &PodScope, protocol: u8, name: &str) -> BTreeMap<u16, String> {
        let base = scope.set_name();
        let mut groups: BTreeMap<u16, BTreeSet<IpNet>> = BTreeMap::new();
        for pod in self.cluster.select(scope) {
            if let Some(n) = named_port(pod.pod, name, protocol) {
                groups.entry(n).or_default().extend(pod.addresses.iter());
            }
        }
        groups
            .into_iter()
            .map(|(n, members)| {
                let set = named_port_set(&base, protocol, name, n);
                self.sets.insert(set.clone(), members);
                (n, set)
            })
            .collect()
    }
}

// ----------------------------------------------------------------- rules

/// One side of a rule: where a peer is.
#[derive(Debug, Clone)]
enum Peer {
    /// No peers listed: anywhere.
    Any,
    /// The pods of some selector pairs (every pod peer of a rule, merged).
    Pods(Vec<PodScope>),
    /// A CIDR and its exceptions.
    Block { net: IpNet, except: Vec<IpNet> },
}

/// The ports of one rule, by protocol.
#[derive(Debug, Default)]
struct ProtocolPorts {
    /// Some entry has no port: every port.
    all: bool,
    ranges: BTreeSet<(u16, u16)>,
    names: BTreeSet<String>,
}

/// What a rule's `ports` allow.
#[derive(Debug)]
enum Ports {
    /// No ports listed: every protocol, every port.
    Any,
    ByProtocol(BTreeMap<u8, ProtocolPorts>),
}

struct RuleCompiler<'p> {
    policy: &'p str,
    namespace: &'p str,
    /// The pods the policy selects.
    own: &'p PodScope,
    direction: Direction,
}

impl RuleCompiler<'_> {
    /// The dataplane rules of NetworkPolicy rule `index`.
    fn rule<S: SetRegistry>(
        &self,
        index: usize,
        peers: Option<&[NetworkPolicyPeer]>,
        ports: Option<&[NetworkPolicyPort]>,
        sets: &mut S,
    ) -> Vec<pb::Rule> {
        let id = format!("{}/{}/{index}", self.policy, self.direction.as_str());
        let peers = self.peers(peers.unwrap_or_default());
        let ports = compile_ports(ports.unwrap_or_default());
        let mut rules = Vec::new();
        for peer in &peers {
            let by_protocol = match &ports {
                Ports::Any => {
                    rules.push(self.emit(&id, None, peer, Vec::new(), Vec::new(), sets));
                    continue;
                }
                Ports::ByProtocol(p) => p,
            };
            for (&protocol, p) in by_protocol {
                let protocol_rule = |ports, named_sets, sets: &mut S| {
                    self.emit(&id, Some(protocol), peer, ports, named_sets, sets)
                };
                if p.all {
                    rules.push(protocol_rule(Vec::new(), Vec::new(), sets));
                    continue;
                }
                if !p.ranges.is_empty() {
                    let ranges = p.ranges.iter().map(|&r| port_range(r)).collect();
                    rules.push(protocol_rule(ranges, Vec::new(), sets));
                }
                if p.names.is_empty() {
                    continue;
                }
                // Named ports resolve on the destination: the policy's own
                // pods for ingress; for egress the peer's pods, or any pod
                // for a peer that is not a selector.
                let targets = match (self.direction, peer) {
                    (Direction::Ingress, _) => vec![self.own.clone()],
                    (Direction::Egress, Peer::Pods(scopes)) => scopes.clone(),
                    (Direction::Egress, Peer::Any | Peer::Block { .. }) => vec![PodScope::all()],
                };
                let mut groups: BTreeMap<u16, BTreeSet<String>> = BTreeMap::new();
                for target in &targets {
                    for name in &p.names {
                        for (n, set) in sets.named_port(target, protocol, name) {
                            groups.entry(n).or_default().insert(set);
                        }
                    }
                }
                for (n, group) in groups {
                    let port = vec![port_range((n, n))];
                    rules.push(protocol_rule(port, group.into_iter().collect(), sets));
                }
            }
        }
        rules
    }

    /// An ALLOW rule between `peer` and the endpoint itself. `ports` and
    /// `named_sets` (the groups of a named port) restrict the destination:
    /// the endpoint for ingress, the peer for egress — where the groups,
    /// subsets of a pod peer's pods, stand for the peer's own sets.
    fn emit(
        &self,
        id: &str,
        protocol: Option<u8>,
        peer: &Peer,
        ports: Vec<pb::PortRange>,
        named_sets: Vec<String>,
        sets: &mut impl SetRegistry,
    ) -> pb::Rule {
        let mut peer_side = match peer {
            Peer::Any => pb::EndpointMatch::default(),
            Peer::Pods(_) if self.direction == Direction::Egress && !named_sets.is_empty() => {
                pb::EndpointMatch::default()
            }
            Peer::Pods(scopes) => pb::EndpointMatch {
                ip_sets: scopes.iter().map(|s| sets.pods(s)).collect(),
                ..Default::default()
            },
            Peer::Block { net, except } => pb::EndpointMatch {
                nets: vec![net.to_string()],
                not_nets: except.iter().map(ToString::to_string).collect(),
                ..Default::default()
            },
        };
        let (source, destination) = match self.direction {
            Direction::Ingress => {
                let own_side = pb::EndpointMatch {
                    ip_sets: named_sets,
                    ports,
                    ..Default::default()
                };
                (peer_side, own_side)
            }
            Direction::Egress => {
                peer_side.ip_sets.extend(named_sets);
                peer_side.ports = ports;
                (pb::EndpointMatch::default(), peer_side)
            }
        };
        let some = |m: pb::EndpointMatch| (m != pb::EndpointMatch::default()).then_some(m);
        pb::Rule {
            action: pb::Action::Allow as i32,
            protocol: protocol.map(u32::from),
            source: some(source),
            destination: some(destination),
            id: id.to_owned(),
            ..Default::default()
        }
    }

    /// A rule's peers: no peers is anywhere; the pod peers are merged into
    /// one (their sets are alternatives of one match); a malformed peer is
    /// left out. All malformed is no peer at all, so nothing.
    fn peers(&self, peers: &[NetworkPolicyPeer]) -> Vec<Peer> {
        if peers.is_empty() {
            return vec![Peer::Any];
        }
        let mut scopes = BTreeSet::new();
        let mut blocks = Vec::new();
        for peer in peers {
            match (&peer.ip_block, &peer.namespace_selector, &peer.pod_selector) {
                (Some(block), None, None) => {
                    let Some(net) = block.cidr.parse::<IpNet>().ok().map(|n| n.trunc()) else {
                        continue;
                    };
                    let except: Option<Vec<IpNet>> = block
                        .except
                        .iter()
                        .flatten()
                        .map(|e| e.parse::<IpNet>().ok().map(|n| n.trunc()))
                        .collect();
                    if let Some(except) = except {
                        blocks.push(Peer::Block { net, except });
                    }
                }
                (None, None, None) | (Some(_), _, _) => {}
                (None, namespaces, pods) => {
                    let pods = match pods {
                        Some(s) => Selector::new(s).ok(),
                        None => Some(Selector::everything()),
                    };
                    let namespaces = match namespaces {
                        Some(s) => Namespaces::Selected(Selector::new(s).ok()),
                        None => Namespaces::Named(self.namespace.to_owned()),
                    };
                    scopes.insert(PodScope { namespaces, pods });
                }
            }
        }
        let mut out = Vec::new();
        if !scopes.is_empty() {
            out.push(Peer::Pods(scopes.into_iter().collect()));
        }
        out.extend(blocks);
        out
    }
}

fn port_range((first, last): (u16, u16)) -> pb::PortRange {
    pb::PortRange {
        first: u32::from(first),
        last: if last == first { 0 } else { u32::from(last) },
    }
}

/// A rule's ports by protocol; malformed entries are left out (so a rule
/// whose entries are all malformed allows nothing).
fn compile_ports(ports: &[NetworkPolicyPort]) -> Ports {
    if ports.is_empty() {
        return Ports::Any;
    }
    let mut by_protocol: BTreeMap<u8, ProtocolPorts> = BTreeMap::new();
    for p in ports {
        let Some(protocol) = protocol_number(p.protocol.as_deref()) else {
            continue;
        };
        let number = |n: i32| u16::try_from(n).ok().filter(|&n| n != 0);
        let port = match &p.port {
            Some(IntOrString::String(s)) => match s.parse::<i32>() {
                Ok(n) => Some(IntOrString::Int(n)),
                Err(_) => Some(IntOrString::String(s.clone())),
            },
            other => other.clone(),
        };
        match (port, p.end_port) {
            (None, None) => by_protocol.entry(protocol).or_default().all = true,
            (Some(IntOrString::Int(n)), end) => {
                let Some(first) = number(n) else { continue };
                let Some(last) = end.map_or(Some(first), number) else {
                    continue;
                };
                if last >= first {
                    let entry = by_protocol.entry(protocol).or_default();
                    entry.ranges.insert((first, last));
                }
            }
            (Some(IntOrString::String(name)), None) => {
                let entry = by_protocol.entry(protocol).or_default();
                entry.names.insert(name);
            }
            // endPort without a numeric port.
            (_, Some(_)) => {}
        }
    }
    Ports::ByProtocol(by_protocol)
}

#[cfg(test)]
mod tests;
