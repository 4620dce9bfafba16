//! Bench of policy lookup in a big cluster against a small one: the
//! classifier of one local endpoint must cost the same whatever the
//! number of pods and NetworkPolicies elsewhere (issue 4).
//!
//! A seeded generator builds a cluster as real ones look: 10 000 pods
//! over 50 namespaces (two of them `kube-system` with CoreDNS and
//! `monitoring` with Prometheus) and 100 nodes, 200 apps of 3–150 pods
//! labelled `app`, `tier`, `team` and `version`, with named container
//! ports (`http` being 8000 or 8080 depending on the app), addresses from
//! a /24 of 10.65.0.0/16 per node; and 1 000 NetworkPolicies
//! (`networking.k8s.io/v1`): per app, ingress from the apps that call it,
//! egress to the apps it calls (and to the internet for some), ingress
//! from its team's front and back ends (`matchExpressions`), and a canary
//! policy with port ranges; per namespace, default deny, allow from the
//! same namespace, allow Prometheus on `metrics` and allow DNS.
//!
//! The agent's compiler ([`calculate`]) turns it into IP sets, policies
//! and attachments for the endpoints of this node (the ~100 pods on node
//! 0); the batch the agent would send to an empty dataplane
//! ([`policy::diff`] from nothing) goes through the dataplane's Policy API
//! conversion ([`batch_from_proto`]) into a [`PolicyDb`], validated and
//! applied as the engine does, and every dirty endpoint's rules are
//! published.
//!
//! The busy endpoint is a pod of a back end that a dozen apps call: seven
//! policies select it, and its rules name IP sets of up to hundreds of
//! pods. The small cluster keeps that pod and the same seven policies
//! (plus three others, ten in all) among 100 pods: the busy endpoint's
//! peers and some of the rest. For each cluster and direction the bench
//! draws keys from traffic the endpoint sees (90 % allowed, 10 % denied,
//! as decided by its own rules; peers, other pods and outside addresses,
//! on its ports, ephemeral source ports) and measures TSC cycles per
//! lookup with [`DirectionRules::classify_batch`] over batches of 256, as
//! the graph's policy node calls it. It also prints the compile time of
//! the whole cluster, its IP sets and their members, rules and classifier
//! rows per local endpoint, the time (and resident memory) of loading an
//! empty dataplane (the agent's batch from nothing, converted, validated,
//! applied and published), and the cost of one pod's label change:
//! calculate, diff, convert, apply and publish — from scratch
//! ([`calculate`]) and through the agent's incremental calculator
//! ([`PolicyCalculator`], whose result is cloned as the agent clones it),
//! which also takes a NetworkPolicy added and removed and a namespace's
//! labels changed.
//!
//! Run: `cargo bench -p caracal-perf --bench cluster_policy`;
//! `CARACAL_BENCH_QUICK=1` for a short run. The table comes first, then
//! criterion's groups `cluster_policy/{ingress,egress}/{big,small}`.
//! No figure is asserted: only that both clusters compile, load, and
//! decide as the policies say on a few known connections.

use caracal_dataplane::worker::cycles as tsc;
use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use caracal_control::agent::datastore::objects::StoredKind;
use caracal_control::agent::datastore::{Object, Objects};
use caracal_control::agent::endpoints::{
    dataplane_interface_name, Endpoint, Endpoints, InterfaceKind,
};
use caracal_control::agent::policy::{self, calculate, parse_net, DesiredPolicy, PolicyCalculator};
use caracal_dataplane::api::policy::batch_from_proto;
use caracal_dataplane::policy::spec::PolicyBatch;
use caracal_dataplane::policy::{DirectionRules, EndpointRules, Hit, PacketKey4, PolicyDb};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
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

/// Keys per lookup call, as the graph's vectors.
const BATCH: usize = 256;
const PODS: usize = 10_000;
const NAMESPACES: usize = 50;
const APPS_PER_NAMESPACE: usize = 4;
const APPS: usize = NAMESPACES * APPS_PER_NAMESPACE;
const TEAMS: usize = 10;
const NODES: usize = 100;
/// Pods in the small cluster.
const SMALL_PODS: usize = 100;
/// The node this agent runs on: its pods are the local endpoints.
const LOCAL_NODE: usize = 0;
/// The busy endpoint's app: a back end (`APPS_PER_NAMESPACE * 2 + 1`,
/// tier by index) in namespace 2, with a dozen callers forced on it.
const BUSY_APP: usize = 9;
const EXTRA_BUSY_CALLERS: usize = 12;
/// The busy endpoint's pod.
const BUSY_POD: usize = 0;
/// Apps of the system namespaces.
const COREDNS: usize = 0;
const PROMETHEUS: usize = APPS_PER_NAMESPACE;
const NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// Where load balancers and nodes live: ingress from outside the pods.
const LB_NET: &str = "10.64.0.0/14";
const POD_NET: &str = "10.65.0.0/16";
/// Share of allowed keys in the traffic, percent.
const ALLOWED_PERCENT: usize = 90;

// ------------------------------------------------------------ randomness

/// wyrand: a small seeded generator, so the cluster is the same on every
/// run (no extra dependency).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0) * u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn percent(&mut self, p: usize) -> bool {
        self.below(100) < p
    }
}

// ------------------------------------------------------------- the world

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tier {
    Frontend,
    Backend,
    Worker,
    Db,
    Cache,
    Dns,
    Monitoring,
}

impl Tier {
    fn as_str(self) -> &'static str {
        match self {
            Tier::Frontend => "frontend",
            Tier::Backend => "backend",
            Tier::Worker => "worker",
            Tier::Db => "db",
            Tier::Cache => "cache",
            Tier::Dns => "dns",
            Tier::Monitoring => "monitoring",
        }
    }
}

#[derive(Debug)]
struct App {
    name: String,
    namespace: usize,
    tier: Tier,
    /// Number of the named port `http`.
    http: u16,
    /// Apps it calls.
    callees: Vec<usize>,
    /// Egress to the internet on 443.
    external: bool,
}

impl App {
    /// Container ports: (name, protocol, number).
    fn ports(&self) -> Vec<(&'static str, &'static str, u16)> {
        match self.tier {
            Tier::Frontend => vec![("http", "TCP", self.http), ("metrics", "TCP", 9090)],
            Tier::Backend => vec![
                ("grpc", "TCP", 50051),
                ("http", "TCP", self.http),
                ("metrics", "TCP", 9090),
            ],
            Tier::Worker => vec![("metrics", "TCP", 9090)],
            Tier::Db => vec![("postgres", "TCP", 5432), ("metrics", "TCP", 9187)],
            Tier::Cache => vec![("redis", "TCP", 6379), ("metrics", "TCP", 9121)],
            Tier::Dns => vec![
                ("dns", "UDP", 53),
                ("dns-tcp", "TCP", 53),
                ("metrics", "TCP", 9153),
            ],
            Tier::Monitoring => vec![("web", "TCP", 9090)],
        }
    }

    /// How callers name the port they reach it on.
    fn service_port(&self) -> NetworkPolicyPort {
        match self.tier {
            Tier::Backend => named_port("grpc", "TCP"),
            Tier::Db => number_port(5432, "TCP"),
            Tier::Cache => number_port(6379, "TCP"),
            Tier::Dns => named_port("dns", "UDP"),
            Tier::Monitoring => named_port("web", "TCP"),
            Tier::Frontend | Tier::Worker => named_port("http", "TCP"),
        }
    }
}

#[derive(Debug, Clone)]
struct PodGen {
    name: String,
    app: usize,
    node: usize,
    ip: Ipv4Addr,
    version: &'static str,
}

/// The whole cluster: namespaces, apps, pods and policies, and which of
/// them a [`Scenario`] takes.
#[derive(Debug)]
struct World {
    apps: Vec<App>,
    pods: Vec<PodGen>,
    policies: Vec<NetworkPolicy>,
}

fn namespace_name(n: usize) -> String {
    match n {
        0 => "kube-system".into(),
        1 => "monitoring".into(),
        _ => format!("team{}-ns{n:02}", team(n)),
    }
}

fn team(namespace: usize) -> usize {
    namespace % TEAMS
}

fn team_label(namespace: usize) -> String {
    if namespace < 2 {
        "platform".into()
    } else {
        format!("team{}", team(namespace))
    }
}

fn env_label(namespace: usize) -> &'static str {
    match namespace % 3 {
        0 => "staging",
        _ => "prod",
    }
}

impl World {
    fn generate(seed: u64) -> World {
        let mut rng = Rng(seed);
        let mut apps: Vec<App> = (0..APPS)
            .map(|a| {
                let namespace = a / APPS_PER_NAMESPACE;
                let (name, tier) = match a {
                    COREDNS => ("coredns".to_owned(), Tier::Dns),
                    PROMETHEUS => ("prometheus".to_owned(), Tier::Monitoring),
                    _ => {
                        let tier = match a % 4 {
                            0 => Tier::Frontend,
                            1 => Tier::Backend,
                            2 => Tier::Worker,
                            // A database in even namespaces, a cache in odd.
                            _ => [Tier::Db, Tier::Cache][namespace % 2],
                        };
                        (format!("app-{a:03}"), tier)
                    }
                };
                App {
                    name,
                    namespace,
                    tier,
                    // `http` is 8000 in every third app.
                    http: [8000, 8080, 8080][a % 3],
                    callees: Vec::new(),
                    external: rng.percent(30),
                }
            })
            .collect();

        // Who calls whom: front ends call back ends of their team, back
        // ends a store of their namespace and another back end anywhere,
        // workers a back end and a store.
        let of_tier = |apps: &[App], f: &dyn Fn(&App) -> bool| -> Vec<usize> {
            (0..APPS).filter(|&a| f(&apps[a])).collect()
        };
        let backends = of_tier(&apps, &|x| x.tier == Tier::Backend);
        let stores = of_tier(&apps, &|x| matches!(x.tier, Tier::Db | Tier::Cache));
        for a in 2 * APPS_PER_NAMESPACE..APPS {
            let ns = apps[a].namespace;
            let team_backends: Vec<usize> = backends
                .iter()
                .copied()
                .filter(|&b| team(apps[b].namespace) == team(ns) && b != a)
                .collect();
            let own_store = stores.iter().copied().find(|&s| apps[s].namespace == ns);
            let mut callees = Vec::new();
            match apps[a].tier {
                Tier::Frontend => {
                    callees.push(*rng.pick(&team_backends));
                    callees.push(*rng.pick(&team_backends));
                }
                Tier::Backend => {
                    callees.extend(own_store);
                    callees.push(*rng.pick(&backends));
                }
                _ => {
                    callees.push(*rng.pick(&backends));
                    callees.extend(own_store);
                }
            }
            callees.retain(|&c| c != a);
            callees.sort_unstable();
            callees.dedup();
            apps[a].callees = callees;
        }
        for _ in 0..EXTRA_BUSY_CALLERS {
            let caller = 2 * APPS_PER_NAMESPACE + rng.below(APPS - 2 * APPS_PER_NAMESPACE);
            if caller != BUSY_APP && !apps[caller].callees.contains(&BUSY_APP) {
                apps[caller].callees.push(BUSY_APP);
            }
        }

        // Pods: apps of 1..50 weight units (≈ 3..150 pods), spread over
        // the nodes, each node's addresses from its own /24.
        let mut weights: Vec<usize> = (0..APPS)
            .map(|_| {
                let k = rng.below(8);
                1 + k * k
            })
            .collect();
        weights[BUSY_APP] = 50;
        let total: usize = weights.iter().sum();
        let mut next_host = [1u8; NODES];
        let pods = (0..PODS)
            .map(|i| {
                let (app, node) = if i == BUSY_POD {
                    (BUSY_APP, LOCAL_NODE)
                } else {
                    let mut w = rng.below(total);
                    let app = weights
                        .iter()
                        .position(|&x| {
                            let hit = w < x;
                            w = w.saturating_sub(x);
                            hit
                        })
                        .expect("weights cover the total");
                    (app, rng.below(NODES))
                };
                let host = next_host[node];
                next_host[node] = host.checked_add(1).expect("a node's /24 is full");
                let version = match rng.below(100) {
                    _ if i == BUSY_POD => "v1",
                    0..=89 => "v1",
                    90..=96 => "v2",
                    _ => "canary",
                };
                PodGen {
                    name: format!("{}-{i:05}", apps[app].name),
                    app,
                    node,
                    ip: Ipv4Addr::new(10, 65, node as u8, host),
                    version,
                }
            })
            .collect();

        let mut world = World {
            apps,
            pods,
            policies: Vec::new(),
        };
        world.policies = (0..APPS)
            .flat_map(|a| world.app_policies(a))
            .chain((0..NAMESPACES).flat_map(namespace_policies))
            .collect();
        world
    }

    /// The peer "pods of app `app`" as a policy in `namespace` names it.
    fn app_peer(&self, namespace: usize, app: usize) -> NetworkPolicyPeer {
        let a = &self.apps[app];
        let pods = Some(labels(&[("app", &a.name)]));
        if a.namespace == namespace {
            NetworkPolicyPeer {
                pod_selector: pods,
                ..Default::default()
            }
        } else {
            NetworkPolicyPeer {
                namespace_selector: Some(labels(&[(NAME_LABEL, &namespace_name(a.namespace))])),
                pod_selector: pods,
                ..Default::default()
            }
        }
    }

    fn callers(&self, app: usize) -> Vec<usize> {
        (0..APPS)
            .filter(|&c| self.apps[c].callees.contains(&app))
            .collect()
    }

    /// The four policies of one app.
    fn app_policies(&self, a: usize) -> Vec<NetworkPolicy> {
        let app = &self.apps[a];
        let ns = app.namespace;
        let this = labels(&[("app", &app.name)]);

        // Ingress from the callers, two per rule, on the service port.
        let mut ingress: Vec<NetworkPolicyIngressRule> = self
            .callers(a)
            .chunks(2)
            .map(|callers| NetworkPolicyIngressRule {
                from: Some(callers.iter().map(|&c| self.app_peer(ns, c)).collect()),
                ports: Some(vec![app.service_port()]),
            })
            .collect();
        match app.tier {
            Tier::Frontend => ingress.push(NetworkPolicyIngressRule {
                from: Some(vec![ip_block(LB_NET, &[POD_NET])]),
                ports: Some(vec![named_port("http", "TCP")]),
            }),
            Tier::Dns => ingress.push(NetworkPolicyIngressRule {
                from: Some(vec![NetworkPolicyPeer {
                    namespace_selector: Some(LabelSelector::default()),
                    ..Default::default()
                }]),
                ports: Some(vec![named_port("dns", "UDP"), named_port("dns-tcp", "TCP")]),
            }),
            _ if ingress.is_empty() => ingress.push(NetworkPolicyIngressRule {
                from: Some(vec![NetworkPolicyPeer {
                    pod_selector: Some(expressions(&[("tier", "In", &["frontend", "backend"])])),
                    ..Default::default()
                }]),
                ports: Some(vec![app.service_port()]),
            }),
            _ => {}
        }

        // Egress to the callees on their service ports, and for some to
        // the internet.
        let mut egress: Vec<NetworkPolicyEgressRule> = app
            .callees
            .iter()
            .map(|&c| NetworkPolicyEgressRule {
                to: Some(vec![self.app_peer(ns, c)]),
                ports: Some(vec![self.apps[c].service_port()]),
            })
            .collect();
        match app.tier {
            Tier::Monitoring => egress.push(NetworkPolicyEgressRule {
                to: Some(vec![NetworkPolicyPeer {
                    namespace_selector: Some(LabelSelector::default()),
                    ..Default::default()
                }]),
                ports: Some(vec![named_port("metrics", "TCP")]),
            }),
            Tier::Dns => egress.push(NetworkPolicyEgressRule {
                to: Some(vec![ip_block("0.0.0.0/0", &[])]),
                ports: Some(vec![number_port(53, "UDP"), number_port(53, "TCP")]),
            }),
            _ => {}
        }
        if app.external {
            egress.push(NetworkPolicyEgressRule {
                to: Some(vec![ip_block(
                    "0.0.0.0/0",
                    &["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"],
                )]),
                ports: Some(vec![number_port(443, "TCP")]),
            });
        }

        let stable = LabelSelector {
            match_expressions: Some(vec![requirement("version", "NotIn", &["canary"])]),
            ..this.clone()
        };
        let canary = expressions(&[
            ("app", "In", &[app.name.as_str()]),
            ("version", "In", &["canary"]),
        ]);
        vec![
            network_policy(
                ns,
                &format!("{}-ingress", app.name),
                NetworkPolicySpec {
                    pod_selector: Some(this.clone()),
                    policy_types: Some(vec!["Ingress".into()]),
                    ingress: Some(ingress),
                    ..Default::default()
                },
            ),
            network_policy(
                ns,
                &format!("{}-egress", app.name),
                NetworkPolicySpec {
                    pod_selector: Some(this),
                    policy_types: Some(vec!["Egress".into()]),
                    egress: Some(egress),
                    ..Default::default()
                },
            ),
            // The team's front and back ends, anywhere, on internal TLS.
            network_policy(
                ns,
                &format!("{}-team", app.name),
                NetworkPolicySpec {
                    pod_selector: Some(stable),
                    ingress: Some(vec![NetworkPolicyIngressRule {
                        from: Some(vec![NetworkPolicyPeer {
                            namespace_selector: Some(labels(&[("team", &team_label(ns))])),
                            pod_selector: Some(expressions(&[(
                                "tier",
                                "In",
                                &["frontend", "backend"],
                            )])),
                            ..Default::default()
                        }]),
                        ports: Some(vec![number_port(8443, "TCP")]),
                    }]),
                    ..Default::default()
                },
            ),
            // Canaries: tested from staging, may reach node ports.
            network_policy(
                ns,
                &format!("{}-canary", app.name),
                NetworkPolicySpec {
                    pod_selector: Some(canary),
                    policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
                    ingress: Some(vec![NetworkPolicyIngressRule {
                        from: Some(vec![NetworkPolicyPeer {
                            namespace_selector: Some(expressions(&[("env", "In", &["staging"])])),
                            ..Default::default()
                        }]),
                        ports: Some(vec![named_port("http", "TCP")]),
                    }]),
                    egress: Some(vec![NetworkPolicyEgressRule {
                        to: Some(vec![ip_block(LB_NET, &[POD_NET])]),
                        ports: Some(vec![NetworkPolicyPort {
                            protocol: Some("TCP".into()),
                            port: Some(IntOrString::Int(30000)),
                            end_port: Some(32767),
                        }]),
                    }]),
                },
            ),
        ]
    }

    fn namespace_object(&self, n: usize) -> Object {
        let name = namespace_name(n);
        Namespace {
            metadata: ObjectMeta {
                labels: Some(
                    [
                        (NAME_LABEL, name.as_str()),
                        ("team", &team_label(n)),
                        ("env", env_label(n)),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
                ),
                name: Some(name),
                ..Default::default()
            },
            ..Default::default()
        }
        .into_object()
    }

    fn pod_labels(&self, i: usize) -> BTreeMap<String, String> {
        let p = &self.pods[i];
        let app = &self.apps[p.app];
        let mut labels: BTreeMap<String, String> = [
            ("app", app.name.as_str()),
            ("tier", app.tier.as_str()),
            ("team", &team_label(app.namespace)),
            ("version", p.version),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        if p.app == COREDNS {
            labels.insert("k8s-app".into(), "kube-dns".into());
        }
        labels
    }

    fn pod_object(&self, i: usize, labels: BTreeMap<String, String>) -> Object {
        let p = &self.pods[i];
        let app = &self.apps[p.app];
        Pod {
            metadata: ObjectMeta {
                name: Some(p.name.clone()),
                namespace: Some(namespace_name(app.namespace)),
                labels: Some(labels),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some(format!("node-{:03}", p.node)),
                containers: vec![Container {
                    name: "main".into(),
                    ports: Some(
                        app.ports()
                            .into_iter()
                            .map(|(name, protocol, n)| ContainerPort {
                                name: Some(name.into()),
                                protocol: Some(protocol.into()),
                                container_port: i32::from(n),
                                ..Default::default()
                            })
                            .collect(),
                    ),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some(p.ip.to_string()),
                pod_ips: Some(vec![PodIP {
                    ip: p.ip.to_string(),
                }]),
                ..Default::default()
            }),
        }
        .into_object()
    }

    fn interface(&self, i: usize) -> String {
        let p = &self.pods[i];
        dataplane_interface_name(&namespace_name(self.apps[p.app].namespace), &p.name, "eth0")
    }

    fn endpoint(&self, i: usize) -> Endpoint {
        let p = &self.pods[i];
        let namespace = namespace_name(self.apps[p.app].namespace);
        Endpoint {
            container_id: format!("{i:064x}"),
            ifname: "eth0".into(),
            netns: format!("/var/run/netns/cni-{i:08x}"),
            namespace,
            pod: p.name.clone(),
            pod_uid: String::new(),
            ips: vec![parse_net(&p.ip.to_string()).expect("an address")],
            interface_kind: InterfaceKind::Tap,
            socket_path: None,
            memif: None,
            dataplane_interface: self.interface(i),
            mtu: 1500,
        }
    }

    /// The policies that select the busy pod (all in its namespace).
    fn busy_policies(&self) -> Vec<usize> {
        let ns = namespace_name(self.apps[BUSY_APP].namespace);
        let labels = self.pod_labels(BUSY_POD);
        (0..self.policies.len())
            .filter(|&i| {
                let np = &self.policies[i];
                np.metadata.namespace.as_deref() == Some(&ns)
                    && selects(
                        np.spec.as_ref().and_then(|s| s.pod_selector.as_ref()),
                        &labels,
                    )
            })
            .collect()
    }

    /// Apps the busy pod's policies name as peers.
    fn busy_peers(&self) -> Vec<usize> {
        let mut peers = self.callers(BUSY_APP);
        peers.extend(&self.apps[BUSY_APP].callees);
        peers.extend([COREDNS, PROMETHEUS]);
        peers.sort_unstable();
        peers.dedup();
        peers
    }
}

/// Whether `selector` selects `labels` (for choosing the small cluster's
/// policies; the compiler has its own).
fn selects(selector: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    let Some(s) = selector else { return true };
    s.match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v))
        && s.match_expressions.iter().flatten().all(|e| {
            let values = e.values.as_deref().unwrap_or_default();
            let v = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => v.is_some_and(|v| values.contains(v)),
                "NotIn" => v.is_none_or(|v| !values.contains(v)),
                "Exists" => v.is_some(),
                _ => v.is_none(),
            }
        })
}

/// The four policies of one namespace.
fn namespace_policies(n: usize) -> Vec<NetworkPolicy> {
    let all = || Some(LabelSelector::default());
    vec![
        network_policy(
            n,
            "default-deny",
            NetworkPolicySpec {
                pod_selector: all(),
                policy_types: Some(vec!["Ingress".into()]),
                ..Default::default()
            },
        ),
        network_policy(
            n,
            "allow-same-namespace",
            NetworkPolicySpec {
                pod_selector: all(),
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from: Some(vec![NetworkPolicyPeer {
                        pod_selector: all(),
                        ..Default::default()
                    }]),
                    ports: None,
                }]),
                ..Default::default()
            },
        ),
        network_policy(
            n,
            "allow-monitoring",
            NetworkPolicySpec {
                pod_selector: all(),
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from: Some(vec![NetworkPolicyPeer {
                        namespace_selector: Some(labels(&[(NAME_LABEL, "monitoring")])),
                        pod_selector: Some(labels(&[("app", "prometheus")])),
                        ..Default::default()
                    }]),
                    ports: Some(vec![named_port("metrics", "TCP")]),
                }]),
                ..Default::default()
            },
        ),
        network_policy(
            n,
            "allow-dns",
            NetworkPolicySpec {
                pod_selector: all(),
                policy_types: Some(vec!["Egress".into()]),
                egress: Some(vec![NetworkPolicyEgressRule {
                    to: Some(vec![NetworkPolicyPeer {
                        namespace_selector: Some(labels(&[(NAME_LABEL, "kube-system")])),
                        pod_selector: Some(labels(&[("k8s-app", "kube-dns")])),
                        ..Default::default()
                    }]),
                    ports: Some(vec![number_port(53, "UDP"), number_port(53, "TCP")]),
                }]),
                ..Default::default()
            },
        ),
    ]
}

fn network_policy(namespace: usize, name: &str, spec: NetworkPolicySpec) -> NetworkPolicy {
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace_name(namespace)),
            ..Default::default()
        },
        spec: Some(spec),
    }
}

fn labels(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(
            pairs
                .iter()
                .map(|&(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        ),
        ..Default::default()
    }
}

fn requirement(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: key.into(),
        operator: operator.into(),
        values: Some(values.iter().map(|&v| v.to_owned()).collect()),
    }
}

fn expressions(list: &[(&str, &str, &[&str])]) -> LabelSelector {
    LabelSelector {
        match_expressions: Some(
            list.iter()
                .map(|&(k, op, values)| requirement(k, op, values))
                .collect(),
        ),
        ..Default::default()
    }
}

fn ip_block(cidr: &str, except: &[&str]) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: cidr.into(),
            except: (!except.is_empty()).then(|| except.iter().map(|&e| e.to_owned()).collect()),
        }),
        ..Default::default()
    }
}

fn named_port(name: &str, protocol: &str) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.into()),
        port: Some(IntOrString::String(name.into())),
        end_port: None,
    }
}

fn number_port(n: u16, protocol: &str) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.into()),
        port: Some(IntOrString::Int(i32::from(n))),
        end_port: None,
    }
}

// ------------------------------------------------------------- scenarios

/// One cluster as the agent of node [`LOCAL_NODE`] sees it.
struct Scenario {
    name: &'static str,
    /// Its pods, as indices into [`World::pods`].
    pods: Vec<usize>,
    /// How many NetworkPolicies it has.
    policies: usize,
    objects: Vec<Object>,
    endpoints: Endpoints,
    /// Each local interface's own addresses.
    addresses: BTreeMap<String, Vec<IpAddr>>,
}

impl Scenario {
    fn new(world: &World, name: &'static str, pods: Vec<usize>, policies: Vec<usize>) -> Self {
        let mut objects: Vec<Object> = (0..NAMESPACES).map(|n| world.namespace_object(n)).collect();
        objects.extend(
            pods.iter()
                .map(|&i| world.pod_object(i, world.pod_labels(i))),
        );
        objects.extend(
            policies
                .iter()
                .map(|&i| world.policies[i].clone().into_object()),
        );
        let local: Vec<usize> = pods
            .iter()
            .copied()
            .filter(|&i| world.pods[i].node == LOCAL_NODE)
            .collect();
        let endpoints = Arc::new(
            local
                .iter()
                .map(|&i| {
                    let ep = world.endpoint(i);
                    (ep.key(), ep)
                })
                .collect(),
        );
        let addresses = local
            .iter()
            .map(|&i| (world.interface(i), vec![IpAddr::V4(world.pods[i].ip)]))
            .collect();
        Scenario {
            name,
            pods,
            policies: policies.len(),
            objects,
            endpoints,
            addresses,
        }
    }

    fn big(world: &World) -> Self {
        Scenario::new(
            world,
            "10k pods / 1k policies",
            (0..PODS).collect(),
            (0..world.policies.len()).collect(),
        )
    }

    /// The busy pod and its policies (plus a neighbour's to make ten);
    /// pods: a few of each peer app, a few of its namespace, the rest at
    /// random, 100 in all.
    fn small(world: &World, rng: &mut Rng) -> Self {
        let mut policies = world.busy_policies();
        let ns = namespace_name(world.apps[BUSY_APP].namespace);
        let neighbour = &world.apps[BUSY_APP - 1].name;
        policies.extend((0..world.policies.len()).filter(|&i| {
            let m = &world.policies[i].metadata;
            m.namespace.as_deref() == Some(&ns)
                && m.name
                    .as_deref()
                    .is_some_and(|n| n.starts_with(neighbour.as_str()) && !n.ends_with("canary"))
        }));
        let mut pods = BTreeSet::from([BUSY_POD]);
        for app in world.busy_peers() {
            pods.extend((0..PODS).filter(|&i| world.pods[i].app == app).take(2));
        }
        let busy_ns = world.apps[BUSY_APP].namespace;
        pods.extend(
            (0..PODS)
                .filter(|&i| world.apps[world.pods[i].app].namespace == busy_ns)
                .take(10),
        );
        while pods.len() < SMALL_PODS {
            pods.insert(rng.below(PODS));
        }
        Scenario::new(
            world,
            "100 pods / 10 policies",
            pods.into_iter().collect(),
            policies,
        )
    }

    fn objects(&self) -> Objects {
        Objects::from_objects(self.objects.iter().cloned())
    }

    /// A dataplane policy database that runs `desired`, loaded as the
    /// agent loads an empty dataplane (one Apply batch from nothing).
    fn load(&self, desired: &DesiredPolicy) -> PolicyDb {
        let mut db = PolicyDb::new();
        let batch = policy::diff(&DesiredPolicy::default(), desired);
        self.apply(
            &mut db,
            batch_from_proto(batch).expect("the API accepts the agent's batch"),
        );
        db
    }

    /// One Apply batch (converted by the API), validated, applied and
    /// published as the engine does; returns how many endpoints it
    /// changed.
    fn apply(&self, db: &mut PolicyDb, batch: PolicyBatch) -> usize {
        db.validate(&batch, |i| self.addresses.contains_key(i))
            .expect("the database accepts the agent's batch");
        let dirty = db.apply(batch, |i| {
            self.addresses.get(i).cloned().unwrap_or_default()
        });
        for name in &dirty {
            black_box(db.endpoint_rules(name).expect("just compiled"));
        }
        dirty.len()
    }
}

// ---------------------------------------------------------------- timing

/// The shortest of `runs` runs of `f`, and the last result.
fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut out = None;
    for _ in 0..runs {
        let t = Instant::now();
        let r = f();
        best = best.min(t.elapsed());
        out = Some(r);
    }
    (best, out.expect("at least one run"))
}

/// TSC cycles per lookup over `keys` in batches of [`BATCH`]: the best of
/// five rounds of `time / 5` (the round the other tenants of a shared
/// machine disturbed least).
fn cycles_per_lookup(rules: &DirectionRules, keys: &[PacketKey4], time: Duration) -> f64 {
    const ROUNDS: u32 = 5;
    let mut out = [None::<Hit>; BATCH];
    let mut pass = || {
        for chunk in keys.chunks_exact(BATCH) {
            rules.classify_batch(black_box(chunk), &mut out);
            black_box(&out);
        }
    };
    pass(); // warm up
    let per_pass = keys.len() / BATCH * BATCH;
    let mut best = f64::MAX;
    for _ in 0..ROUNDS {
        let (t0, c0) = (Instant::now(), tsc());
        let mut n = 0usize;
        while t0.elapsed() < time / ROUNDS {
            pass();
            n += per_pass;
        }
        best = best.min((tsc() - c0) as f64 / n as f64);
    }
    best
}

/// Resident memory of this process, bytes (Linux; 0 elsewhere).
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(0)
}

// --------------------------------------------------------------- traffic

#[derive(Debug, Clone, Copy)]
enum Way {
    Ingress,
    Egress,
}

/// Keys of traffic the busy endpoint sees in one direction:
/// [`ALLOWED_PERCENT`] % allowed by its rules, the rest denied. Half the
/// other ends are pods of its peer apps, a third other pods of the
/// cluster, the rest outside addresses; ports are the ones the endpoint
/// (ingress) or its peers (egress) serve, sometimes another.
fn traffic(
    world: &World,
    s: &Scenario,
    rules: &DirectionRules,
    way: Way,
    rng: &mut Rng,
    len: usize,
) -> (Vec<PacketKey4>, f64) {
    let busy = u32::from(world.pods[BUSY_POD].ip);
    let peers = world.busy_peers();
    let peer_pods: Vec<usize> = s
        .pods
        .iter()
        .copied()
        .filter(|&i| peers.contains(&world.pods[i].app) && i != BUSY_POD)
        .collect();
    let candidate = |rng: &mut Rng| -> PacketKey4 {
        let (other, ports) = match rng.below(6) {
            0..=2 => {
                let p = *rng.pick(&peer_pods);
                (
                    u32::from(world.pods[p].ip),
                    world.apps[world.pods[p].app].ports(),
                )
            }
            3 | 4 => {
                let p = *rng.pick(&s.pods);
                (
                    u32::from(world.pods[p].ip),
                    world.apps[world.pods[p].app].ports(),
                )
            }
            _ => {
                // The load balancers' net, or the internet.
                let base = if rng.percent(50) {
                    u32::from(Ipv4Addr::new(10, 64, 0, 0))
                } else {
                    u32::from(Ipv4Addr::new(198, 51, 100, 0))
                };
                let ports = vec![("https", "TCP", 443), ("http", "TCP", 8080)];
                (base + rng.below(256) as u32, ports)
            }
        };
        let ports = match way {
            Way::Ingress => world.apps[BUSY_APP].ports(),
            Way::Egress => ports,
        };
        let (_, protocol, mut port) = *rng.pick(&ports);
        if rng.percent(10) {
            port = *rng.pick(&[22, 443, 3306, 8443, 30080]);
        }
        let proto = if protocol == "UDP" { 17 } else { 6 };
        let ephemeral = 32768 + rng.below(28232) as u16;
        match way {
            Way::Ingress => PacketKey4::new(other, busy, proto, ephemeral, port),
            Way::Egress => PacketKey4::new(busy, other, proto, ephemeral, port),
        }
    };
    let (mut allowed, mut denied) = (Vec::new(), Vec::new());
    let mut out = [None::<Hit>; BATCH];
    for _ in 0..64 {
        let keys: Vec<PacketKey4> = (0..BATCH).map(|_| candidate(rng)).collect();
        rules.classify_batch(&keys, &mut out);
        for (k, hit) in keys.iter().zip(out) {
            if rules.resolve(k, hit, |_| {}).allow {
                allowed.push(*k);
            } else {
                denied.push(*k);
            }
        }
    }
    assert!(
        !allowed.is_empty() && !denied.is_empty(),
        "{}: {way:?} traffic has allowed and denied connections",
        s.name
    );
    let share = allowed.len() as f64 / (allowed.len() + denied.len()) as f64;
    let keys = (0..len)
        .map(|_| {
            if rng.percent(ALLOWED_PERCENT) {
                *rng.pick(&allowed)
            } else {
                *rng.pick(&denied)
            }
        })
        .collect();
    (keys, share)
}

// ------------------------------------------------------------- the bench

/// What one scenario's measurements print.
struct Measured {
    sets: usize,
    members: usize,
    calculate: Duration,
    apply: Duration,
    resident: u64,
    local: usize,
    /// Rules (policy.proto) and classifier rows per local endpoint, both
    /// directions: (min, mean, max).
    rules: (usize, f64, usize),
    rows: (usize, f64, usize),
    classifier_bytes: usize,
    busy: Arc<EndpointRules>,
    busy_policies: (usize, usize),
    busy_rules: (usize, usize),
    desired: DesiredPolicy,
}

fn spread(values: impl Iterator<Item = usize>) -> (usize, f64, usize) {
    let v: Vec<usize> = values.collect();
    let min = v.iter().copied().min().unwrap_or(0);
    let max = v.iter().copied().max().unwrap_or(0);
    (
        min,
        v.iter().sum::<usize>() as f64 / v.len().max(1) as f64,
        max,
    )
}

fn measure(world: &World, s: &Scenario, runs: usize) -> Measured {
    let objects = s.objects();
    let (calculate_time, desired) = best_of(runs, || calculate(&objects, &s.endpoints));
    let sets = desired.ip_sets.len();
    let members = desired.ip_sets.values().map(BTreeSet::len).sum();

    let before = resident_bytes();
    let mut db = s.load(&desired);
    let resident = resident_bytes().saturating_sub(before);
    let (apply, _) = best_of(runs, || s.load(&desired));

    let attachment_rules = |iface: &str, way: Way| -> (usize, usize) {
        let ep = &desired.endpoints[iface];
        let tiers = match way {
            Way::Ingress => &ep.ingress,
            Way::Egress => &ep.egress,
        };
        let names = tiers.iter().flat_map(|t| &t.policies);
        let rules = names
            .clone()
            .map(|p| {
                let p = &desired.policies[p];
                match way {
                    Way::Ingress => p.ingress.len(),
                    Way::Egress => p.egress.len(),
                }
            })
            .sum();
        (names.count(), rules)
    };
    let interfaces: Vec<&String> = s.addresses.keys().collect();
    let rules = spread(
        interfaces
            .iter()
            .map(|i| attachment_rules(i, Way::Ingress).1 + attachment_rules(i, Way::Egress).1),
    );
    let compiled: Vec<_> = interfaces
        .iter()
        .map(|i| {
            db.endpoint_rules(i)
                .expect("every local endpoint is attached")
        })
        .collect();
    let stats = |r: &EndpointRules| {
        [
            r.ingress.classifier().stats(),
            r.egress.classifier().stats(),
        ]
    };
    let rows = spread(
        compiled
            .iter()
            .map(|r| stats(r).iter().map(|s| s.rows4 + s.rows6).sum::<usize>()),
    );
    let classifier_bytes = compiled
        .iter()
        .flat_map(|r| stats(r))
        .map(|s| s.memory_bytes)
        .sum();
    let busy_iface = world.interface(BUSY_POD);
    let busy = db.endpoint_rules(&busy_iface).expect("busy endpoint");
    let (pin, rin) = attachment_rules(&busy_iface, Way::Ingress);
    let (pout, rout) = attachment_rules(&busy_iface, Way::Egress);
    Measured {
        sets,
        members,
        calculate: calculate_time,
        apply,
        resident,
        local: interfaces.len(),
        rules,
        rows,
        classifier_bytes,
        busy,
        busy_policies: (pin, pout),
        busy_rules: (rin, rout),
        desired,
    }
}

/// Checks the busy endpoint decides a few connections as its policies
/// say (whatever the cluster's size).
fn check_busy(world: &World, s: &Scenario, busy: &EndpointRules) {
    let ip = u32::from(world.pods[BUSY_POD].ip);
    let pod_of = |f: &dyn Fn(usize) -> bool| -> u32 {
        let i = *s
            .pods
            .iter()
            .find(|&&i| i != BUSY_POD && f(i))
            .expect("the scenario has such a pod");
        u32::from(world.pods[i].ip)
    };
    let busy_ns = world.apps[BUSY_APP].namespace;
    let neighbour = pod_of(&|i| world.apps[world.pods[i].app].namespace == busy_ns);
    let caller = pod_of(&|i| world.callers(BUSY_APP).contains(&world.pods[i].app));
    let dns = pod_of(&|i| world.pods[i].app == COREDNS);
    let outsider = pod_of(&|i| {
        let a = &world.apps[world.pods[i].app];
        team(a.namespace) != team(busy_ns)
            && a.namespace > 1
            && !a.callees.contains(&BUSY_APP)
            && !world.apps[BUSY_APP].callees.contains(&world.pods[i].app)
    });
    let cases = [
        (
            &busy.ingress,
            PacketKey4::new(neighbour, ip, 6, 40000, 22),
            true,
        ),
        (
            &busy.ingress,
            PacketKey4::new(caller, ip, 6, 40000, 50051),
            true,
        ),
        (
            &busy.ingress,
            PacketKey4::new(outsider, ip, 6, 40000, 50051),
            false,
        ),
        (&busy.egress, PacketKey4::new(ip, dns, 17, 40000, 53), true),
        (
            &busy.egress,
            PacketKey4::new(ip, outsider, 6, 40000, 50051),
            false,
        ),
    ];
    for (i, (rules, key, allow)) in cases.iter().enumerate() {
        assert_eq!(rules.decide(key).allow, *allow, "{}: case {i}", s.name);
    }
}

struct Opts {
    quick: bool,
}

impl Opts {
    fn from_env() -> Self {
        let quick = std::env::var("CARACAL_BENCH_QUICK").is_ok_and(|v| v != "0" && !v.is_empty());
        Opts { quick }
    }

    fn runs(&self) -> usize {
        if self.quick {
            1
        } else {
            3
        }
    }

    fn lookup_time(&self) -> Duration {
        Duration::from_millis(if self.quick { 100 } else { 1000 })
    }
}

fn bench(c: &mut Criterion) {
    let opts = Opts::from_env();
    let world = World::generate(0x0ca7_aca1);
    let mut rng = Rng(0x5eed);
    let big = Scenario::big(&world);
    let small = Scenario::small(&world, &mut rng);
    assert_eq!(small.pods.len(), SMALL_PODS);

    let scenarios = [&big, &small];
    let measured: Vec<Measured> = scenarios
        .iter()
        .map(|s| measure(&world, s, opts.runs()))
        .collect();
    for (s, m) in scenarios.iter().zip(&measured) {
        check_busy(&world, s, &m.busy);
    }

    println!(
        "cluster policy: the agent's compiler, the dataplane's policy database, one core{}",
        if opts.quick { " (quick run)" } else { "" }
    );
    println!(
        "{:<23} {:>5} {:>5} {:>6} {:>7} {:>8} {:>8} {:>7} {:>5} {:>17} {:>20} {:>8}",
        "cluster",
        "pods",
        "pols",
        "ipsets",
        "members",
        "calc ms",
        "apply ms",
        "RSS MiB",
        "local",
        "rules/ep min/avg/max",
        "rows/ep min/avg/max",
        "cls KiB"
    );
    for (s, m) in scenarios.iter().zip(&measured) {
        println!(
            "{:<23} {:>5} {:>5} {:>6} {:>7} {:>8.1} {:>8.1} {:>7.1} {:>5} {:>5}/{:>5.1}/{:>5} {:>6}/{:>6.0}/{:>6} {:>8.0}",
            s.name,
            s.pods.len(),
            s.policies,
            m.sets,
            m.members,
            m.calculate.as_secs_f64() * 1e3,
            m.apply.as_secs_f64() * 1e3,
            m.resident as f64 / (1 << 20) as f64,
            m.local,
            m.rules.0,
            m.rules.1,
            m.rules.2,
            m.rows.0,
            m.rows.1,
            m.rows.2,
            m.classifier_bytes as f64 / 1024.0,
        );
    }

    // Lookups of the busy endpoint.
    println!(
        "busy endpoint {} (batches of {BATCH}, {ALLOWED_PERCENT} % allowed; cyc = TSC cycles/lookup, best of 5 rounds)",
        world.interface(BUSY_POD)
    );
    println!(
        "{:<23} {:<7} {:>4} {:>5} {:>6} {:>6} {:>7} {:>9} {:>7}",
        "cluster", "dir", "pols", "rules", "rows", "tables", "KiB", "allowed*", "cyc"
    );
    let mut lookups = Vec::new();
    for (s, m) in scenarios.iter().zip(&measured) {
        for way in [Way::Ingress, Way::Egress] {
            let (rules, pols, nrules) = match way {
                Way::Ingress => (&m.busy.ingress, m.busy_policies.0, m.busy_rules.0),
                Way::Egress => (&m.busy.egress, m.busy_policies.1, m.busy_rules.1),
            };
            let (keys, share) = traffic(&world, s, rules, way, &mut rng, 64 * BATCH);
            let cyc = cycles_per_lookup(rules, &keys, opts.lookup_time());
            let st = rules.classifier().stats();
            let dir = match way {
                Way::Ingress => "ingress",
                Way::Egress => "egress",
            };
            println!(
                "{:<23} {:<7} {:>4} {:>5} {:>6} {:>6} {:>7.1} {:>8.0}% {:>7.1}",
                s.name,
                dir,
                pols,
                nrules,
                st.rows4 + st.rows6,
                st.tables4 + st.tables6,
                st.memory_bytes as f64 / 1024.0,
                share * 100.0,
                cyc
            );
            let size = if std::ptr::eq(*s, &big) {
                "big"
            } else {
                "small"
            };
            lookups.push((format!("{dir}/{size}"), rules.clone(), keys));
        }
    }
    println!("  * of the candidate connections its rules allow; the keys measured are {ALLOWED_PERCENT} % allowed");

    incremental(&world, &big, &measured[0], &opts);

    let mut g = c.benchmark_group("cluster_policy");
    g.throughput(Throughput::Elements(BATCH as u64));
    for (name, rules, keys) in &lookups {
        let mut out = [None::<Hit>; BATCH];
        let mut at = 0;
        g.bench_function(name.as_str(), |b| {
            b.iter(|| {
                rules.classify_batch(black_box(&keys[at..at + BATCH]), &mut out);
                at = (at + BATCH) % keys.len();
                black_box(&out);
            })
        });
    }
    g.finish();
}

/// One pod of a caller of the busy app, on another node, relabelled to
/// another app and back: the agent recalculates everything, diffs, and
/// the dataplane applies the batch (IP set deltas) and republishes the
/// endpoints it touched. Then the same through the incremental
/// calculator, and two more changes through it: a NetworkPolicy that
/// lets one more app call the busy one, added and removed; and the
/// `team` label of the busy app's namespace changed and changed back.
fn incremental(world: &World, s: &Scenario, m: &Measured, opts: &Opts) {
    let callers = world.callers(BUSY_APP);
    let pod = (0..PODS)
        .find(|&i| {
            callers.contains(&world.pods[i].app)
                && world.pods[i].node != LOCAL_NODE
                && world.apps[world.pods[i].app].namespace != world.apps[BUSY_APP].namespace
        })
        .expect("a remote caller pod");
    let object = s
        .objects
        .iter()
        .position(|o| o.metadata().name.as_deref() == Some(world.pods[pod].name.as_str()))
        .expect("the pod's object");
    let mut relabelled = world.pod_labels(pod);
    relabelled.insert("app".into(), world.apps[BUSY_APP + 1].name.clone());
    let mut objects = s.objects.clone();
    objects[object] = world.pod_object(pod, relabelled);
    let relabel = [Objects::from_objects(objects), s.objects()];

    let what = format!("one pod relabelled ({})", s.name);
    let mut from_scratch = |objects: &Objects| calculate(objects, &s.endpoints);
    apply_changes(&what, s, m, &relabel, opts, &mut from_scratch);

    let mut calculator = PolicyCalculator::new();
    let t = Instant::now();
    let first = calculator.update(&s.objects(), &s.endpoints).clone();
    let first_time = t.elapsed();
    assert_eq!(first, m.desired, "the incremental calculator calculates");
    let (clone_time, _) = best_of(opts.runs(), || first.clone());
    println!(
        "incremental calculator, first update ({}): {:.1} ms; the agent's copy of its result: {:.2} ms (in each update below)",
        s.name,
        first_time.as_secs_f64() * 1e3,
        clone_time.as_secs_f64() * 1e3,
    );
    let mut through = |objects: &Objects| {
        let new = calculator.update(objects, &s.endpoints).clone();
        debug_assert_eq!(new, calculate(objects, &s.endpoints));
        new
    };
    let what = "incremental: one pod relabelled".to_owned();
    apply_changes(&what, s, m, &relabel, opts, &mut through);

    // One more caller of the busy app, allowed by a policy of its own.
    let busy = &world.apps[BUSY_APP];
    let caller = (2 * APPS_PER_NAMESPACE..APPS)
        .find(|&a| {
            !callers.contains(&a) && a != BUSY_APP && world.apps[a].namespace != busy.namespace
        })
        .expect("an app that does not call the busy one");
    let extra = network_policy(
        busy.namespace,
        &format!("{}-extra-caller", busy.name),
        NetworkPolicySpec {
            pod_selector: Some(labels(&[("app", &busy.name)])),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![world.app_peer(busy.namespace, caller)]),
                ports: Some(vec![busy.service_port()]),
            }]),
            ..Default::default()
        },
    );
    let mut objects = s.objects.clone();
    objects.push(extra.into_object());
    let added = [Objects::from_objects(objects), s.objects()];
    let what = "incremental: a NetworkPolicy added/removed".to_owned();
    apply_changes(&what, s, m, &added, opts, &mut through);

    // The busy namespace moves to another team, and back.
    let namespace = s
        .objects
        .iter()
        .position(|o| {
            o.metadata().name.as_deref() == Some(namespace_name(busy.namespace).as_str())
                && o.metadata().namespace.is_none()
        })
        .expect("the busy namespace's object");
    let mut objects = s.objects.clone();
    let Object::Namespace(ns) = &objects[namespace] else {
        unreachable!("a namespace")
    };
    let mut ns = (**ns).clone();
    ns.metadata
        .labels
        .get_or_insert_default()
        .insert("team".into(), team_label(busy.namespace + 1));
    objects[namespace] = ns.into_object();
    let moved = [Objects::from_objects(objects), s.objects()];
    let what = "incremental: a namespace relabelled".to_owned();
    apply_changes(&what, s, m, &moved, opts, &mut through);
    assert_eq!(
        calculator.update(&s.objects(), &s.endpoints),
        &m.desired,
        "back where it started"
    );
}

/// Goes from `m.desired` to each of `versions` in turn (and round again),
/// `calculate` giving the policy of each; prints the best time of each
/// step: calculate, diff, convert/apply/publish.
fn apply_changes(
    what: &str,
    s: &Scenario,
    m: &Measured,
    versions: &[Objects; 2],
    opts: &Opts,
    calculate: &mut dyn FnMut(&Objects) -> DesiredPolicy,
) {
    let mut db = s.load(&m.desired);
    let mut old = m.desired.clone();
    let mut times = [Duration::MAX; 4];
    let (mut deltas, mut members, mut dirty, mut policies) = (0, 0, 0, 0);
    for round in 0..2 * opts.runs().max(2) {
        let objects = &versions[round % 2];
        let t = Instant::now();
        let new = calculate(objects);
        let calc = t.elapsed();
        let t = Instant::now();
        let batch = policy::diff(&old, &new);
        let diffed = t.elapsed();
        deltas = batch.update_ip_sets.len() + batch.set_ip_sets.len() + batch.delete_ip_sets.len();
        members = batch
            .update_ip_sets
            .iter()
            .map(|d| d.add.len() + d.remove.len())
            .sum::<usize>()
            + batch
                .set_ip_sets
                .iter()
                .map(|s| s.members.len())
                .sum::<usize>();
        policies = batch.set_policies.len() + batch.delete_policies.len();
        let t = Instant::now();
        dirty = s.apply(&mut db, batch_from_proto(batch).expect("a valid batch"));
        let applied = t.elapsed();
        for (best, d) in times
            .iter_mut()
            .zip([calc, diffed, applied, calc + diffed + applied])
        {
            *best = (*best).min(d);
        }
        old = new;
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{what}: calculate {:.2} ms + diff {:.2} ms + convert/apply/publish {:.3} ms = {:.2} ms; \
         batch: {deltas} IP sets, {members} members, {policies} policies, {dirty} endpoints republished",
        ms(times[0]),
        ms(times[1]),
        ms(times[2]),
        ms(times[3]),
    );
}

fn config() -> Criterion {
    if Opts::from_env().quick {
        Criterion::default()
            .warm_up_time(Duration::from_millis(200))
            .measurement_time(Duration::from_millis(500))
            .sample_size(20)
    } else {
        Criterion::default()
    }
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench
}
criterion_main!(benches);
